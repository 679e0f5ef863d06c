#include "meta/namespace.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <linux/fs.h>
#include <mutex>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "common/invariant.h"
#include "common/pb_ids.h"
#include "meta/op_validation.h"
#include "meta/keys.h"

namespace wormhole {
namespace {

// Trim the move log after this many local ops (and on the daemon's timer).
constexpr uint64_t kTrimEveryOps = 4096;


int check_name(std::string_view name) {
  if (name.empty()) return ENOENT;
  if (name.size() > kMaxNameBytes) return ENAMETOOLONG;
  if (name == "." || name == "..") return EEXIST;
  return 0;
}

pb::Move* add_move(pb::Op& op, Gid entry, Gid parent, std::string_view name, Gid inode) {
  pb::Move* m = op.add_actions()->mutable_move();
  to_pb(entry, m->mutable_entry());
  to_pb(parent, m->mutable_parent());
  m->set_name(std::string(name));
  to_pb(inode, m->mutable_inode());
  return m;
}

// POSIX times a namespace change implies: a directory's mtime and ctime when an entry is
// added or removed, an inode's ctime when it is linked, unlinked or renamed. They travel
// in the op as last-writer-wins updates, separate from the move itself, so that undoing and
// redoing moves never disturbs them.
void add_times(pb::Op& op, Gid inode, uint32_t mask, int64_t now_ns) {
  pb::SetAttr* a = op.add_actions()->mutable_set_attr();
  to_pb(inode, a->mutable_inode());
  a->set_mask(mask);
  if (mask & kAttrMtime) a->set_mtime_ns(now_ns);
  if (mask & kAttrCtime) a->set_ctime_ns(now_ns);
}
constexpr uint32_t kDirChanged = kAttrMtime | kAttrCtime;

}  // namespace

uint32_t make_mode(pb::FileType type, uint32_t perm) {
  uint32_t fmt = S_IFREG;
  switch (type) {
    case pb::DIRECTORY: fmt = S_IFDIR; break;
    case pb::SYMLINK: fmt = S_IFLNK; break;
    case pb::FIFO: fmt = S_IFIFO; break;
    case pb::SOCKET: fmt = S_IFSOCK; break;
    case pb::CHAR_DEVICE: fmt = S_IFCHR; break;
    case pb::BLOCK_DEVICE: fmt = S_IFBLK; break;
    default: break;
  }
  return fmt | (perm & 07777);
}

Namespace::Namespace(KvStore& kv, uint64_t pod_id, WallClock wall_ns, std::function<bool(Gid)> in_use)
    : buffered_(kv), kv_(buffered_), meta_(buffered_, pod_id, std::move(in_use)), wall_ns_(std::move(wall_ns)) {}

bool Namespace::init(std::string* error) {
  {
    std::unique_lock lock(mu_);
    if (!meta_.init(static_cast<uint64_t>(wall_ns_() / 1000000), error)) return false;
  }
  // What survived the last stop may not be on disk yet (a kill -9 leaves the log in the
  // page cache): make it durable before telling anyone about it.
  if (make_durable() != 0) {
    *error = "cannot sync the metadata log";
    return false;
  }
  return true;
}

size_t Namespace::trim_locked() {
  return meta_.trim(kTrimEveryOps * 4, stable_, static_cast<uint64_t>(wall_ns_() / 1000000), trash_retention_ms_);
}

void Namespace::set_stable(std::map<uint64_t, Hlc> stable) {
  std::unique_lock lock(mu_);
  stable_ = std::move(stable);
}

void Namespace::set_trash_retention_ms(uint64_t ms) {
  std::unique_lock lock(mu_);
  trash_retention_ms_ = ms;
}

int Namespace::make_durable() { return sync_log(true); }

int Namespace::make_received_durable() { return sync_log(false); }

int Namespace::sync_log(bool own_ops) {
  std::map<uint64_t, uint64_t> target;
  std::map<uint64_t, Hlc> target_hlc;
  {
    std::shared_lock lock(mu_);
    target = meta_.applied();
    target_hlc = meta_.applied_stamps();
  }
  // The newest op this pod made when the ops of `target` were applied.
  uint64_t own_made = target.count(meta_.pod_id()) ? target[meta_.pod_id()] : 0;
  if (!own_ops) {
    target.erase(meta_.pod_id());
    target_hlc.erase(meta_.pod_id());
  }
  auto already_durable = [&] {
    std::lock_guard lock(durable_mu_);
    bool done = true;
    for (auto& [origin, seq] : target) done &= durable_[origin] >= seq;
    if (done) claim_stamps_locked(own_made, target_hlc);
    return done;
  };
  if (already_durable()) return 0;
  // Group commits of own ops run one at a time: the chunks of `target` may have been taken
  // by a commit still syncing them (before_log_sync_ hands each pending chunk to one
  // commit), and this one must not report them durable before that one is done. After the
  // wait, that commit has usually covered `target` already. Received-only syncs do not
  // wait here (an acknowledgement never waits for this pod's chunk writes).
  std::unique_lock<std::mutex> own_sync;
  if (own_ops) {
    own_sync = std::unique_lock(own_sync_mu_);
    if (already_durable()) return 0;
    // Everything applied by now is covered by this commit (its chunks were put before its
    // op was applied, so they are pending): the callers that queued behind the last one
    // share this one instead of each running its own.
    std::shared_lock lock(mu_);
    target = meta_.applied();
    target_hlc = meta_.applied_stamps();
    own_made = target.count(meta_.pod_id()) ? target[meta_.pod_id()] : 0;
  }
  // This pod's ops name chunks this pod wrote: those are made durable first. Ops of other
  // pods do not wait for that (their chunks arrive by push or pull, and a holder that lost
  // one after a power loss fetches it again).
  if (own_ops && before_log_sync_) {
    if (int err = before_log_sync_()) return err;
  }
  KvStatus st = kv_.sync();  // covers every write that returned before it, so all of `target`
  if (!st.ok) return st.no_space ? ENOSPC : EIO;
  std::lock_guard lock(durable_mu_);
  for (auto& [origin, seq] : target) durable_[origin] = std::max(durable_[origin], seq);
  claim_stamps_locked(own_made, target_hlc);
  return 0;
}

void Namespace::claim_stamps_locked(uint64_t own_made, const std::map<uint64_t, Hlc>& durable_hlc) {
  // Peers count an op stable once every member claims it and they have every op each
  // member made before its claim (the member's durable own ops, as reported). So an op may
  // be claimed only once the ops this pod made before applying it are durable, and so
  // reported: else a delta this pod made over the version that op superseded could still
  // be waiting for this pod's group commit when a peer, counting the op stable, trims the
  // delta's base (the multi-mount test saw such a delta arrive without its base: EIO).
  // Received ops made durable while own ops wait are claimed at the next full group commit.
  if (durable_[meta_.pod_id()] < own_made) return;
  for (auto& [origin, hlc] : durable_hlc) durable_hlc_[origin] = std::max(durable_hlc_[origin], hlc);
}

std::map<uint64_t, Hlc> Namespace::durable_stamps() {
  std::lock_guard lock(durable_mu_);
  return durable_hlc_;
}

std::map<uint64_t, Hlc> Namespace::applied_stamps() {
  std::shared_lock lock(mu_);
  return meta_.applied_stamps();
}

std::map<uint64_t, uint64_t> Namespace::durable_applied() {
  std::lock_guard lock(durable_mu_);
  return durable_;
}

int Namespace::submit(pb::Op& op, bool sync) {
  KvStatus st = meta_.apply(op, sync);
  if (!st.ok) return st.no_space ? ENOSPC : EIO;
  if (++ops_since_trim_ >= kTrimEveryOps) {
    ops_since_trim_ = 0;
    trim_locked();
  }
  return 0;
}

int Namespace::fill_attr(Gid g, Attr* attr) {
  pb::InodeRecord rec;
  if (!meta_.get_inode(g, &rec)) return ENOENT;
  attr->ino = rec.local_ino();
  attr->id = g;
  attr->type = rec.type();
  attr->mode = make_mode(rec.type(), rec.mode());
  attr->nlink = rec.nlink();
  attr->uid = rec.uid();
  attr->gid = rec.gid();
  attr->size = rec.size();
  attr->atime_ns = rec.atime_ns();
  attr->mtime_ns = rec.mtime_ns();
  attr->ctime_ns = rec.ctime_ns();
  attr->rdev = rec.rdev();
  attr->version = from_pb(rec.version());
  return 0;
}

int Namespace::resolve_dir(uint64_t ino, Gid* g) {
  if (!meta_.gid_of_ino(ino, g)) return ENOENT;
  pb::InodeRecord rec;
  if (!meta_.get_inode(*g, &rec)) return ENOENT;
  if (rec.type() != pb::DIRECTORY) return ENOTDIR;
  // A removed directory, unless something still lives in it (lost+found shows it).
  if (rec.nlink() == 0 && meta_.check_dir_empty(*g) != ENOTEMPTY) return ENOENT;
  return 0;
}

int Namespace::resolve_dir_to_change(uint64_t ino, Gid* g) {
  if (int err = resolve_dir(ino, g)) return err;
  if (*g == kLostFoundId) return EPERM;  // a view: nothing is made in it
  // A removed directory shown in lost+found is for taking things out of: what a pod puts in
  // it after seeing its removal would not hold its purge back (stability covers only what
  // was made without seeing it), and could vanish with it (the simulation found that).
  pb::InodeRecord rec;
  if (meta_.get_inode(*g, &rec) && rec.nlink() == 0 && *g != kRootId) return ENOENT;
  return 0;
}

int Namespace::lookup_in(Gid dir, std::string_view name, DirItem* item) {
  if (dir == kLostFoundId) {
    std::vector<DirItem> lost;
    if (int err = meta_.lost_directories(SIZE_MAX, &lost)) return err;
    for (auto& d : lost)
      if (d.name == name) {
        *item = d;
        return 0;
      }
    return ENOENT;
  }
  const int err = meta_.lookup(dir, name, item);
  if (err != ENOENT || dir != kRootId || name != kLostFoundName) return err;
  std::vector<DirItem> lost;
  if (int e = meta_.lost_directories(1, &lost)) return e;
  if (lost.empty()) return ENOENT;
  *item = DirItem{std::string(kLostFoundName), kLostFoundId, kLostFoundId};
  return 0;
}

bool Namespace::gid_of(uint64_t ino, Gid* g) {
  std::shared_lock lock(mu_);
  return meta_.gid_of_ino(ino, g);
}

int Namespace::getattr(uint64_t ino, Attr* attr) {
  std::shared_lock lock(mu_);
  Gid g;
  if (!meta_.gid_of_ino(ino, &g)) return ENOENT;
  return fill_attr(g, attr);
}

int Namespace::lookup(uint64_t parent, std::string_view name, Attr* attr) {
  if (name.size() > kMaxNameBytes) return ENAMETOOLONG;
  std::shared_lock lock(mu_);
  Gid dir;
  if (int err = resolve_dir(parent, &dir)) return err;
  DirItem item;
  if (int err = lookup_in(dir, name, &item)) return err;
  return fill_attr(item.inode, attr);
}

int Namespace::make(uint64_t parent, std::string_view name, pb::FileType type, uint32_t mode, uint32_t uid,
                    uint32_t gid, std::string_view target, Attr* attr, uint64_t rdev) {
  if (int err = check_name(name)) return err;
  if (!pb::FileType_IsValid(type) || type == pb::FILE_TYPE_UNSPECIFIED) return EINVAL;
  if (type == pb::SYMLINK && (target.empty() || target.size() >= 4096)) return target.empty() ? ENOENT : ENAMETOOLONG;
  std::unique_lock lock(mu_);
  Gid dir;
  if (int err = resolve_dir_to_change(parent, &dir)) return err;
  DirItem existing;
  if (int err = lookup_in(dir, name, &existing); err != ENOENT) return err == 0 ? EEXIST : err;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  // A directory is its own entry (it can have only one); other inodes get a separate entry
  // so that hard links are simply more entries. A directory's id comes from its parent and
  // name: the same directory made on two pods at once is then one directory.
  Gid inode = type == pb::DIRECTORY ? derived_id(dir, name) : meta_.new_gid();
  if (type == pb::DIRECTORY) {
    pb::EntryRecord e;
    if (meta_.get_entry(inode, &e) && from_pb(e.parent()) != kTrashId) {
      inode = meta_.new_gid();  // that directory was renamed and still lives: a new one
    } else {
      // Made again where it was removed: it must come back without its old xattrs.
      std::vector<std::string> old_xattrs;
      if (!meta_.list_xattrs(inode, &old_xattrs)) return EIO;
      for (auto& x : old_xattrs) {
        pb::SetXattr* rm = op.add_actions()->mutable_set_xattr();
        to_pb(inode, rm->mutable_inode());
        rm->set_name(x);
        rm->set_remove(true);
      }
    }
  }
  const Gid entry = type == pb::DIRECTORY ? inode : meta_.new_gid();
  pb::Move* m = add_move(op, entry, dir, name, inode);
  pb::NewInode* n = m->mutable_new_inode();
  to_pb(inode, n->mutable_inode());
  n->set_type(type);
  n->set_mode(type == pb::SYMLINK ? 0777 : (mode & 07777));
  n->set_uid(uid);
  n->set_gid(gid);
  n->set_symlink_target(std::string(target));
  if (type == pb::CHAR_DEVICE || type == pb::BLOCK_DEVICE) n->set_rdev(rdev);
  const int64_t now = wall_ns_();
  n->set_time_ns(now);
  add_times(op, dir, kDirChanged, now);
  if (int err = submit(op, false)) return err;
  return fill_attr(inode, attr);
}

int Namespace::link(uint64_t ino, uint64_t new_parent, std::string_view new_name, Attr* attr) {
  if (int err = check_name(new_name)) return err;
  std::unique_lock lock(mu_);
  Gid inode, dir;
  if (!meta_.gid_of_ino(ino, &inode)) return ENOENT;
  if (int err = resolve_dir_to_change(new_parent, &dir)) return err;
  pb::InodeRecord rec;
  if (!meta_.get_inode(inode, &rec) || rec.nlink() == 0) return ENOENT;
  if (rec.type() == pb::DIRECTORY) return EPERM;
  DirItem existing;
  if (int err = lookup_in(dir, new_name, &existing); err != ENOENT) return err == 0 ? EEXIST : err;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  add_move(op, meta_.new_gid(), dir, new_name, inode);
  const int64_t now = wall_ns_();
  add_times(op, dir, kDirChanged, now);
  add_times(op, inode, kAttrCtime, now);
  if (int err = submit(op, false)) return err;
  return fill_attr(inode, attr);
}

int Namespace::unlink(uint64_t parent, std::string_view name) {
  if (name.size() > kMaxNameBytes) return ENAMETOOLONG;
  std::unique_lock lock(mu_);
  Gid dir;
  if (int err = resolve_dir(parent, &dir)) return err;
  DirItem item;
  if (int err = meta_.lookup(dir, name, &item)) return err;
  pb::InodeRecord rec;
  if (meta_.get_inode(item.inode, &rec) && rec.type() == pb::DIRECTORY) return EISDIR;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  add_move(op, item.entry, kTrashId, name, item.inode);
  const int64_t now = wall_ns_();
  add_times(op, dir, kDirChanged, now);
  add_times(op, item.inode, kAttrCtime, now);
  return submit(op, false);
}

int Namespace::list_trash(size_t limit, std::vector<TrashItem>* items) {
  constexpr size_t kMaxLooked = 100000;  // bounds the work of one listing
  std::shared_lock lock(mu_);
  items->clear();
  size_t looked = 0;
  const bool ok = meta_.for_each_entry_in(kTrashId, [&](std::string_view name, Gid entry, Gid inode) {
    if (++looked > kMaxLooked) return;
    TrashItem t;
    t.entry = entry;
    t.name = std::string(name);
    pb::EntryRecord e;
    if (meta_.get_entry(entry, &e)) {
      t.deleted_at = from_pb(e.trashed_at());
      const Gid from = from_pb(e.trashed_from());
      if (!from.empty() && meta_.is_ancestor(kRootId, from)) t.from = meta_.path_of(from);
    }
    pb::InodeRecord rec;
    if (meta_.get_inode(inode, &rec)) {
      t.type = rec.type();
      t.size = rec.size();
    }
    items->push_back(std::move(t));
  });
  if (!ok) return EIO;
  std::sort(items->begin(), items->end(), [](const TrashItem& a, const TrashItem& b) {
    return b.deleted_at < a.deleted_at || (a.deleted_at == b.deleted_at && a.entry < b.entry);
  });
  if (items->size() > limit) items->resize(limit);
  return 0;
}

int Namespace::restore(Gid entry, std::string* path) {
  std::unique_lock lock(mu_);
  pb::EntryRecord e;
  if (!meta_.get_entry(entry, &e) || from_pb(e.parent()) != kTrashId) return ENOENT;
  Gid dir = from_pb(e.trashed_from());
  if (dir.empty() || !meta_.is_ancestor(kRootId, dir)) dir = kRootId;  // its directory is gone too
  std::string name = e.name();
  DirItem taken;
  for (int n = 1; meta_.lookup(dir, name, &taken) == 0; ++n) {
    if (n > 1000) return EEXIST;
    name = e.name() + ".restored-" + std::to_string(n);
    if (name.size() > kMaxNameBytes) return ENAMETOOLONG;
  }
  const Gid inode = from_pb(e.inode());
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  add_move(op, entry, dir, name, inode);
  const int64_t now = wall_ns_();
  add_times(op, dir, kDirChanged, now);
  add_times(op, inode, kAttrCtime, now);
  if (int err = submit(op, false)) return err;
  pb::EntryRecord now_at;
  if (!meta_.get_entry(entry, &now_at) || from_pb(now_at.parent()) == kTrashId) return EINVAL;  // a cycle: skipped
  *path = (dir == kRootId ? "" : meta_.path_of(dir)) + "/" + name;
  return 0;
}

int Namespace::rmdir(uint64_t parent, std::string_view name) {
  if (name == ".") return EINVAL;
  if (name == "..") return ENOTEMPTY;
  if (name.size() > kMaxNameBytes) return ENAMETOOLONG;
  std::unique_lock lock(mu_);
  Gid dir;
  if (int err = resolve_dir(parent, &dir)) return err;
  DirItem item;
  if (int err = meta_.lookup(dir, name, &item)) return err;
  pb::InodeRecord rec;
  if (!meta_.get_inode(item.inode, &rec)) return ENOENT;
  if (rec.type() != pb::DIRECTORY) return ENOTDIR;
  if (int err = meta_.check_dir_empty(item.inode)) return err;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  add_move(op, item.entry, kTrashId, name, item.inode);
  add_times(op, dir, kDirChanged, wall_ns_());
  return submit(op, false);
}

int Namespace::rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
                      unsigned flags) {
  if (int err = check_name(name)) return err == EEXIST ? EBUSY : err;
  if (int err = check_name(new_name)) return err == EEXIST ? EBUSY : err;
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return EINVAL;
  if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) return EINVAL;
  std::unique_lock lock(mu_);
  Gid src_dir, dst_dir;
  // Out of lost+found is how a removed directory's survivors are put back.
  if (int err = resolve_dir(parent, &src_dir)) return err;
  if (int err = resolve_dir_to_change(new_parent, &dst_dir)) return err;
  DirItem src, dst;
  if (int err = lookup_in(src_dir, name, &src)) return err;
  if (src.entry == kLostFoundId) return EPERM;
  if (src_dir == kLostFoundId && (flags & RENAME_EXCHANGE)) return EPERM;
  const int dst_err = lookup_in(dst_dir, new_name, &dst);
  if (dst_err == 0 && dst.entry == kLostFoundId) return EPERM;
  if (dst_err != 0 && dst_err != ENOENT) return dst_err;
  const bool dst_exists = dst_err == 0;
  pb::InodeRecord src_rec, dst_rec;
  if (!meta_.get_inode(src.inode, &src_rec)) return ENOENT;
  const bool src_is_dir = src_rec.type() == pb::DIRECTORY;
  // A directory cannot move below itself.
  if (src_is_dir && meta_.is_ancestor(src.inode, dst_dir)) return EINVAL;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  if (flags & RENAME_EXCHANGE) {
    if (!dst_exists) return ENOENT;
    if (!meta_.get_inode(dst.inode, &dst_rec)) return ENOENT;
    if (dst_rec.type() == pb::DIRECTORY && meta_.is_ancestor(dst.inode, src_dir)) return EINVAL;
    if (src.entry == dst.entry) return 0;
    add_move(op, src.entry, dst_dir, new_name, src.inode);
    add_move(op, dst.entry, src_dir, name, dst.inode);
    const int64_t now = wall_ns_();
    add_times(op, src_dir, kDirChanged, now);
    if (dst_dir != src_dir) add_times(op, dst_dir, kDirChanged, now);
    add_times(op, src.inode, kAttrCtime, now);
    add_times(op, dst.inode, kAttrCtime, now);
    return submit(op, false);
  }
  if (dst_exists) {
    if (flags & RENAME_NOREPLACE) return EEXIST;
    if (dst.inode == src.inode) return 0;  // POSIX: two links to one file, nothing to do
    if (!meta_.get_inode(dst.inode, &dst_rec)) return ENOENT;
    const bool dst_is_dir = dst_rec.type() == pb::DIRECTORY;
    if (src_is_dir && !dst_is_dir) return ENOTDIR;
    if (!src_is_dir && dst_is_dir) return EISDIR;
    if (dst_is_dir)
      if (int err = meta_.check_dir_empty(dst.inode)) return err;
    add_move(op, dst.entry, kTrashId, new_name, dst.inode);
    add_times(op, dst.inode, kAttrCtime, wall_ns_());
  }
  add_move(op, src.entry, dst_dir, new_name, src.inode);
  const int64_t now = wall_ns_();
  if (src_dir != kLostFoundId) add_times(op, src_dir, kDirChanged, now);
  if (dst_dir != src_dir) add_times(op, dst_dir, kDirChanged, now);
  add_times(op, src.inode, kAttrCtime, now);
  return submit(op, false);
}

int Namespace::setattr(uint64_t ino, const pb::SetAttr& change, Attr* attr) {
  std::unique_lock lock(mu_);
  Gid inode;
  if (!meta_.gid_of_ino(ino, &inode)) return ENOENT;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  pb::SetAttr* a = op.add_actions()->mutable_set_attr();
  *a = change;
  to_pb(inode, a->mutable_inode());
  if (!(a->mask() & kAttrCtime)) {  // every attribute change updates ctime
    a->set_ctime_ns(wall_ns_());
    a->set_mask(a->mask() | kAttrCtime);
  }
  if (int err = submit(op, false)) return err;
  return fill_attr(inode, attr);
}

int Namespace::readlink(uint64_t ino, std::string* target) {
  std::shared_lock lock(mu_);
  Gid g;
  pb::InodeRecord rec;
  if (!meta_.gid_of_ino(ino, &g) || !meta_.get_inode(g, &rec)) return ENOENT;
  if (rec.type() != pb::SYMLINK) return EINVAL;
  *target = rec.symlink_target();
  return 0;
}

int Namespace::list(uint64_t ino, std::vector<ListItem>* items, uint64_t* parent_ino) {
  std::shared_lock lock(mu_);
  Gid dir;
  if (int err = resolve_dir(ino, &dir)) return err;
  *parent_ino = 1;
  pb::EntryRecord e;
  pb::InodeRecord parent;
  if (dir != kRootId && meta_.get_entry(dir, &e) && meta_.get_inode(from_pb(e.parent()), &parent))
    *parent_ino = parent.local_ino();
  std::vector<DirItem> listed;
  if (dir == kLostFoundId) {
    if (int err = meta_.lost_directories(SIZE_MAX, &listed)) return err;
  } else if (int err = meta_.list(dir, &listed)) {
    return err;
  }
  if (dir == kRootId) {  // lost+found, while it holds something and the name is free
    DirItem item;
    if (lookup_in(kRootId, kLostFoundName, &item) == 0 && item.entry == kLostFoundId) listed.push_back(item);
  }
  for (auto& item : listed) {
    pb::InodeRecord rec;
    if (!meta_.get_inode(item.inode, &rec)) continue;
    items->push_back(ListItem{item.name, rec.local_ino(), make_mode(rec.type(), rec.mode())});
  }
  return 0;
}

int Namespace::setxattr(uint64_t ino, std::string_view name, std::string_view value, int flags) {
  if (name.empty() || name.size() > 255) return name.empty() ? EINVAL : ERANGE;
  if (value.size() > kMaxXattrValueBytes) return E2BIG;
  std::unique_lock lock(mu_);
  Gid inode;
  if (!meta_.gid_of_ino(ino, &inode)) return ENOENT;
  std::string cur;
  const bool exists = meta_.get_xattr(inode, name, &cur);
  if ((flags & XATTR_CREATE) && exists) return EEXIST;
  if ((flags & XATTR_REPLACE) && !exists) return ENODATA;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  pb::SetXattr* x = op.add_actions()->mutable_set_xattr();
  to_pb(inode, x->mutable_inode());
  x->set_name(std::string(name));
  x->set_value(std::string(value));
  return submit(op, false);
}

int Namespace::getxattr(uint64_t ino, std::string_view name, std::string* value) {
  std::shared_lock lock(mu_);
  Gid inode;
  if (!meta_.gid_of_ino(ino, &inode)) return ENOENT;
  return meta_.get_xattr(inode, name, value) ? 0 : ENODATA;
}

int Namespace::listxattr(uint64_t ino, std::vector<std::string>* names) {
  std::shared_lock lock(mu_);
  Gid inode;
  if (!meta_.gid_of_ino(ino, &inode)) return ENOENT;
  return meta_.list_xattrs(inode, names) ? 0 : EIO;
}

int Namespace::removexattr(uint64_t ino, std::string_view name) {
  std::unique_lock lock(mu_);
  Gid inode;
  if (!meta_.gid_of_ino(ino, &inode)) return ENOENT;
  std::string cur;
  if (!meta_.get_xattr(inode, name, &cur)) return ENODATA;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  pb::SetXattr* x = op.add_actions()->mutable_set_xattr();
  to_pb(inode, x->mutable_inode());
  x->set_name(std::string(name));
  x->set_remove(true);
  return submit(op, false);
}

int Namespace::commit(Gid inode, Gid base_version, uint64_t size, const std::vector<pb::ChunkRef>& chunks,
                      int64_t mtime_ns, const std::vector<uint64_t>& holders, bool sync, Gid* new_version, uint64_t chunk_spans) {
  std::unique_lock lock(mu_);
  pb::InodeRecord rec;
  if (!meta_.get_inode(inode, &rec)) return ENOENT;
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  pb::CommitVersion* c = op.add_actions()->mutable_commit();
  const Gid v = meta_.new_gid();
  to_pb(inode, c->mutable_inode());
  to_pb(v, c->mutable_version());
  if (!base_version.empty()) to_pb(base_version, c->mutable_base_version());
  c->set_size(size);
  pb::VersionRecord base;
  if (chunk_spans != UINT64_MAX && !base_version.empty() && from_pb(rec.version()) == base_version &&
      meta_.get_version(base_version, &base) && !base.incomplete()) {
    // A delta over the current version (every pod has it until this op is stable): only the
    // chunks that changed travel and stay in the op log.
    c->set_delta(true);
    c->set_spans(chunk_spans);
    // The unit of change is the span: if any of its pieces differs from the base's, the
    // delta lists all of the span's pieces (they replace all of the base's there).
    auto same_piece = [](const pb::ChunkRef& a, const pb::ChunkRef& b) {
      return a.sha256() == b.sha256() && a.length() == b.length() && a.span_offset() == b.span_offset() &&
             a.file_offset() == b.file_offset() && a.inline_data() == b.inline_data();
    };
    auto old = base.chunks().begin();
    const auto old_end = base.chunks().end();
    for (auto ch = chunks.begin(); ch != chunks.end();) {
      const uint64_t index = ch->index();
      auto span_end = ch;
      while (span_end != chunks.end() && span_end->index() == index) ++span_end;
      for (; old != old_end && old->index() < index; ++old)
        if (old->index() < chunk_spans && (c->holes().empty() || c->holes(c->holes_size() - 1) != old->index()))
          c->add_holes(old->index());
      auto old_span = old;
      while (old != old_end && old->index() == index) ++old;
      bool same = old - old_span == span_end - ch;
      auto b = ch;
      for (auto a = old_span; same && a != old; ++a, ++b) same = same_piece(*a, *b);
      if (!same)
        for (auto p = ch; p != span_end; ++p) *c->add_chunks() = *p;
      ch = span_end;
    }
    for (; old != old_end; ++old)
      if (old->index() < chunk_spans && (c->holes().empty() || c->holes(c->holes_size() - 1) != old->index()))
        c->add_holes(old->index());
  } else {
    for (auto& ch : chunks) *c->add_chunks() = ch;
  }
  c->set_mtime_ns(mtime_ns);
  pb::Conflict* how = c->mutable_conflict();
  // The writer's view: the file's names (a delete of one it had in view and had not seen is
  // void), and where a losing version is kept (next to the first).
  std::vector<std::pair<Gid, pb::EntryRecord>> in_view;
  // Every pod decides deletes of this file against this list: a partial one would void or
  // keep the wrong deletes.
  if (!meta_.live_entries(inode, &in_view)) return EIO;
  for (auto& [entry, edge] : in_view) to_pb(entry, c->add_live_entries());
  if (!in_view.empty()) {
    *how->mutable_parent() = in_view.front().second.parent();
    how->set_name(in_view.front().second.name());
  }
  how->set_writer(pod_name_);
  how->set_keep_both(keep_both_);
  how->set_mode(rec.mode());
  how->set_uid(rec.uid());
  how->set_gid(rec.gid());
  if (holders.empty()) c->add_holders(meta_.pod_id());
  for (uint64_t h : holders) c->add_holders(h);
  if (int err = submit(op, sync)) return err;
  *new_version = v;
  return 0;
}

bool Namespace::get_version(Gid version, pb::VersionRecord* rec) {
  std::shared_lock lock(mu_);
  return meta_.get_version(version, rec);
}

bool Namespace::get_recent_version(Gid version, pb::VersionRecord* rec) {
  std::shared_lock lock(mu_);
  return meta_.get_recent_version(version, rec);
}

int Namespace::current_version(Gid inode, Gid* version, pb::VersionRecord* rec) {
  std::shared_lock lock(mu_);
  pb::InodeRecord ir;
  if (!meta_.get_inode(inode, &ir)) return ENOENT;
  if (ir.type() != pb::REGULAR) return EINVAL;
  *version = from_pb(ir.version());
  rec->Clear();
  if (version->empty()) return 0;
  if (!meta_.get_version(*version, rec)) return EIO;
  return 0;
}

std::string Namespace::path_of(Gid inode) {
  std::shared_lock lock(mu_);
  return meta_.path_of(inode);
}

size_t Namespace::trim() {
  std::unique_lock lock(mu_);
  return trim_locked();
}

void Namespace::trim_op_log(const std::map<uint64_t, uint64_t>& everyone_has) {
  std::unique_lock lock(mu_);
  meta_.trim_op_log(everyone_has, kTrimEveryOps * 4);
}

int Namespace::record_member(const pb::Member& member) {
  std::unique_lock lock(mu_);
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  *op.add_actions()->mutable_member() = member;
  return submit(op, true);
}

int Namespace::claim_holder(const std::vector<Gid>& versions, bool release) {
  if (versions.empty()) return 0;
  if (versions.size() > kMaxActionsPerOp) return EINVAL;
  std::unique_lock lock(mu_);
  pb::Op op = meta_.new_local_op(static_cast<uint64_t>(wall_ns_() / 1000000));
  for (Gid version : versions) {
    pb::HoldVersion* h = op.add_actions()->mutable_hold();
    to_pb(version, h->mutable_version());
    h->set_pod(meta_.pod_id());
    h->set_release(release);
  }
  return submit(op, false);
}

bool Namespace::scan_versions(Gid after, size_t max, const std::function<void(Gid, const pb::VersionRecord&)>& visit,
                              Gid* next) {
  std::shared_lock lock(mu_);
  return meta_.scan_versions(after, max, visit, next);
}

std::vector<pb::Member> Namespace::members() {
  std::shared_lock lock(mu_);
  return meta_.members();
}

bool Namespace::snapshot(const std::function<bool(std::string_view, std::string_view)>& visit) {
  // No lock: the store's iterator is a consistent view. What it shows must be durable
  // before anyone sees it (this pod's ops in it are given out): it was all written before
  // the iterator existed, which is before the first visit, so one log sync there covers it.
  bool synced = false, failed = false;
  // The committed store, not the buffer: a received batch being applied (held writes,
  // not yet written, not covered by the log sync, dropped if its write fails) must not
  // leave in a snapshot.
  const bool read_ok = meta_.snapshot(buffered_.committed(), [&](std::string_view k, std::string_view v) {
    if (!synced) {
      synced = true;
      if (!kv_.sync().ok) {
        spdlog::error("cannot sync the metadata log: no snapshot given");
        failed = true;
        return false;
      }
    }
    return visit(k, v);
  });
  return read_ok && !failed;
}

bool Namespace::install_snapshot(const std::function<int(Meta::SnapshotBatch*)>& next, std::string* error) {
  {
    std::unique_lock lock(mu_);
    installing_snapshot_ = true;  // no chunk list for GC meanwhile (for_each_chunk)
    const bool installed = meta_.install_snapshot(next, static_cast<uint64_t>(wall_ns_() / 1000000), error);
    installing_snapshot_ = false;
    if (!installed) return false;
  }
  {
    std::lock_guard lock(durable_mu_);
    durable_.clear();  // the snapshot's progress replaces this pod's
    durable_hlc_.clear();
  }
  if (make_durable() != 0) {
    *error = "cannot sync the installed snapshot";
    return false;
  }
  return true;
}

bool Namespace::empty_history() {
  std::shared_lock lock(mu_);
  for (auto& [origin, seq] : meta_.applied())
    if (seq != 0) return false;
  return true;
}

void Namespace::add_member(uint64_t pod) {
  std::unique_lock lock(mu_);
  meta_.add_member(pod);
}

void Namespace::set_conflict_policy(bool keep_both, std::string pod_name) {
  std::unique_lock lock(mu_);
  keep_both_ = keep_both;
  pod_name_ = std::move(pod_name);
}

std::vector<Gid> Namespace::versions_held() {
  std::shared_lock lock(mu_);
  return meta_.versions_held_by(meta_.pod_id());
}

void Namespace::set_expected_members(size_t count) {
  std::unique_lock lock(mu_);
  meta_.set_expected_members(count);
}

bool Namespace::in_order(const pb::Op& op, std::string* why) {
  std::shared_lock lock(mu_);
  return meta_.in_order(op, why);
}

int Namespace::apply_remote(const pb::Op& op, Changed* changed) {
  std::unique_lock lock(mu_);
  return apply_remote_locked(op, changed);
}

Namespace::RemoteBatch::RemoteBatch(Namespace& ns) : ns_(ns), lock_(ns.mu_), start_(ns.meta_.memory_state()) {
  ns_.buffered_.hold();
}

Namespace::RemoteBatch::~RemoteBatch() {
  if (lock_.owns_lock()) (void)commit();
}

std::map<uint64_t, uint64_t> Namespace::RemoteBatch::applied() { return ns_.meta_.applied(); }

bool Namespace::RemoteBatch::in_order(const pb::Op& op, std::string* why) { return ns_.meta_.in_order(op, why); }

int Namespace::RemoteBatch::apply(const pb::Op& op, Changed* changed) {
  WH_INVARIANT(lock_.owns_lock(), "an op applied to a committed batch");
  return ns_.apply_remote_locked(op, changed);
}

int Namespace::RemoteBatch::commit() {
  if (!lock_.owns_lock()) return 0;
  KvStatus st = ns_.buffered_.release();
  if (!st.ok) {
    ns_.meta_.restore_memory_state(start_);
    spdlog::error("metadata store: a batch of received ops could not be written ({}); they come again",
                  st.message);
  }
  lock_.unlock();
  return st.ok ? 0 : st.no_space ? ENOSPC : EIO;
}

int Namespace::apply_remote_locked(const pb::Op& op, Changed* changed) {
  KvStatus st = meta_.apply(op, false);
  if (!st.ok) return st.no_space ? ENOSPC : EIO;
  if (!changed) return 0;
  for (const pb::Action& a : op.actions()) {
    if (!a.has_commit()) continue;
    const auto& holders = a.commit().holders();
    if (std::find(holders.begin(), holders.end(), meta_.pod_id()) != holders.end())
      changed->versions_to_hold.push_back(from_pb(a.commit().version()));
  }
  // Everything the op changed, not only its own actions: moves undone and redone around a
  // late op, conflict siblings, deletes a new version voided (Meta::last_changes).
  // The names of an op are mostly in one directory, named several times (an entry, its
  // duplicate name): each inode is read once.
  std::map<Gid, uint64_t> inos;
  auto ino_of = [&](Gid g) -> uint64_t {
    auto [it, added] = inos.emplace(g, 0);
    pb::InodeRecord rec;
    if (added && meta_.get_inode(g, &rec)) it->second = rec.local_ino();
    return it->second;
  };
  const Meta::Changes& c = meta_.last_changes();
  for (const Meta::NameChange& n : c.names)
    if (uint64_t ino = n.parent == kTrashId ? 0 : ino_of(n.parent)) changed->entries.emplace_back(ino, n.shown());
  for (Gid g : c.inodes)
    if (uint64_t ino = ino_of(g)) changed->inodes.push_back(ino);
  changed->contents.insert(changed->contents.end(), c.contents.begin(), c.contents.end());
  return 0;
}

std::vector<std::pair<Gid, pb::VersionRecord>> Namespace::incomplete_versions(size_t max) {
  std::unique_lock lock(mu_);  // drops stale index entries
  return meta_.incomplete_versions(max);
}

bool Namespace::complete_version(Gid version, uint64_t size,
                                 const google::protobuf::RepeatedPtrField<pb::ChunkRef>& whole, Changed* changed) {
  std::unique_lock lock(mu_);
  if (!meta_.complete_version(version, size, whole)) return false;
  for (Gid g : meta_.last_changes().contents) {
    changed->contents.push_back(g);
    pb::InodeRecord rec;
    if (meta_.get_inode(g, &rec) && rec.local_ino()) changed->inodes.push_back(rec.local_ino());
  }
  return true;
}

std::map<uint64_t, uint64_t> Namespace::applied() {
  std::shared_lock lock(mu_);
  return meta_.applied();
}

std::vector<pb::Op> Namespace::ops_after(uint64_t origin, uint64_t after, size_t limit) {
  std::shared_lock lock(mu_);
  std::vector<pb::Op> ops = meta_.ops_after(origin, after, limit);
  if (origin == meta_.pod_id()) {
    std::lock_guard durable_lock(durable_mu_);
    const uint64_t durable = durable_[origin];
    while (!ops.empty() && ops.back().seq() > durable) ops.pop_back();
  }
  return ops;
}

void Namespace::purge_if_unused(Gid inode) {
  std::unique_lock lock(mu_);
  meta_.purge_if_unused(inode);
}

NamespaceStats Namespace::stats() {
  // Counting is a full scan of the inode records (about a second per million files): for
  // `status`, never on a hot path, and without mu_ — the scans read the store under the
  // buffer, whose iterators are consistent views, so a status during a long catch-up or
  // on a big namespace stalls neither FUSE requests nor received batches (it did: the
  // shared lock held across the scan kept every batch waiting). Each count is of its own
  // moment. A failed read (logged by the store) shows smaller counts.
  NamespaceStats s;
  KvStore& committed = buffered_.committed();
  (void)Meta::for_each_inode(committed, [&](Gid g, const pb::InodeRecord& rec) {
    if (rec.nlink() == 0 || g == kTrashId) return;
    if (rec.type() == pb::REGULAR) {
      s.files++;
      s.logical_bytes += rec.size();
    } else if (rec.type() == pb::DIRECTORY) {
      s.directories++;
    }
  });
  s.move_log_entries = Meta::count_keys(committed, keys::kMoveLogPrefix);
  s.op_log_entries = Meta::count_keys(committed, keys::kOpLogPrefix);
  return s;
}

bool Namespace::for_each_chunk(const std::function<void(const std::string&, bool held)>& visit) {
  // A full scan of the version records (seconds for millions of files), so not under mu_:
  // the committed store's iterator is a consistent view. Holding the lock gave nothing
  // more — a version committed after the scan references chunks GC keeps by their age
  // (the grace period), whether it came during the scan or just after. Except during a
  // snapshot install, which writes in many steps: a half-installed store would make the
  // chunks of versions still to come look unreferenced, so no list then.
  if (installing_snapshot_.load()) return false;
  const bool whole = meta_.for_each_chunk(buffered_.committed(), visit);
  return whole && !installing_snapshot_.load();
}

}  // namespace wormhole
