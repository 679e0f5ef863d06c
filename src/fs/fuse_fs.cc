#define FUSE_USE_VERSION 312
#include "fs/fuse_fs.h"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <linux/fs.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <thread>
#include <utility>
#include <filesystem>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace wormhole {
namespace {

// An open regular file handle (fi->fh).
struct FileHandle {
  std::shared_ptr<OpenFile> file;
  uint32_t opener_uid = 0;
  // Wrote, truncated or allocated through this handle: its close commits the file's
  // pending writes. A close of a handle that did not (a reader on the writer's pod) must
  // not turn another handle's unfinished writes into a version others see. Atomic: writes
  // on one handle arrive on several FUSE threads at once (TSan saw the plain bool race).
  std::atomic<bool> wrote{false};
};

// An open directory handle: a snapshot of the listing taken at opendir, so offsets stay
// stable while the directory changes (bounded by the directory's size).
struct DirHandle {
  std::vector<ListItem> items;
  uint64_t self_ino = 0, parent_ino = 1;
};

struct Context {
  Vfs* vfs;
  FuseOptions opts;
  // Handles the kernel holds. When the daemon stops with files still open, their unflushed
  // writes are committed and the handles freed (the kernel will never release them).
  std::mutex handles_mu;
  std::unordered_set<FileHandle*> files;
  std::unordered_set<DirHandle*> dirs;
  // FUSE_HANDLE_KILLPRIV_V2 (see KillPrivV2 below): the INIT request's unique while it is
  // answered (0: none seen yet), and whether our reply turned it on.
  std::atomic<uint64_t> init_unique{0};
  std::atomic<bool> init_offers_killpriv_v2{false};
  std::atomic<bool> killpriv_v2{false};
};

Context& ctx(fuse_req_t req) { return *static_cast<Context*>(fuse_req_userdata(req)); }
Vfs& vfs(fuse_req_t req) { return *ctx(req).vfs; }
Namespace& ns(fuse_req_t req) { return ctx(req).vfs->ns(); }
// Whether a change may go ahead now (WriteGate): 0 or the errno to answer.
int admit_change(fuse_req_t req) { return ctx(req).opts.gate ? ctx(req).opts.gate->admit_change() : 0; }

int64_t to_ns(const timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

void to_stat(const Attr& a, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = a.ino;
  st->st_mode = a.mode;
  st->st_nlink = a.nlink;
  st->st_uid = a.uid;
  st->st_gid = a.gid;
  st->st_size = static_cast<off_t>(a.size);
  st->st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st->st_blksize = 128 * 1024;  // larger than 4 KiB so tools read and write in big pieces
  st->st_atim.tv_sec = a.atime_ns / 1000000000;
  st->st_atim.tv_nsec = a.atime_ns % 1000000000;
  st->st_mtim.tv_sec = a.mtime_ns / 1000000000;
  st->st_mtim.tv_nsec = a.mtime_ns % 1000000000;
  st->st_ctim.tv_sec = a.ctime_ns / 1000000000;
  st->st_ctim.tv_nsec = a.ctime_ns % 1000000000;
  st->st_rdev = static_cast<dev_t>(a.rdev);
}

void reply_entry(fuse_req_t req, const Attr& a) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = a.ino;
  e.generation = 1;
  to_stat(a, &e.attr);
  e.attr_timeout = ctx(req).opts.attr_timeout_s;
  e.entry_timeout = ctx(req).opts.entry_timeout_s;
  fuse_reply_entry(req, &e);
}

void reply_attr(fuse_req_t req, const Attr& a) {
  struct stat st;
  to_stat(a, &st);
  fuse_reply_attr(req, &st, ctx(req).opts.attr_timeout_s);
}

FileHandle* handle(fuse_file_info* fi) { return reinterpret_cast<FileHandle*>(fi->fh); }

// FUSE_HANDLE_KILLPRIV_V2. Without it the kernel asks for security.capability (a GETXATTR
// round trip) before writes, to know whether a write must drop privileges; with it the file
// system drops set-user/group-ID bits itself, told by the kernel when (a flag on WRITE,
// SETATTR of the size, OPEN and CREATE with O_TRUNC: the caller lacks CAP_FSETID), and the
// kernel marks the mount SB_NOSEC so that a write to a file already found clean asks
// nothing. The kernel offers it since 5.11; libfuse 3.14 (Debian 12) has no capability bit
// for it and does not pass those flags on. So /dev/fuse is read and written through
// libfuse's custom-io hooks: the INIT reply gets the flag when the kernel offered it, and
// each request's kill flag is kept for the thread that read it (libfuse's loop handles a
// request on the thread that read it, before reading the next).
namespace killpriv {

thread_local bool t_kill_suidgid = false;  // the request this thread is handling asks for it

ssize_t read_request(int fd, void* buf, size_t len, void* userdata) {
  const ssize_t n = ::read(fd, buf, len);
  t_kill_suidgid = false;
  if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
  auto* context = static_cast<Context*>(userdata);
  fuse_in_header in;
  std::memcpy(&in, buf, sizeof in);
  const char* body = static_cast<const char*>(buf) + sizeof in;
  const size_t body_len = static_cast<size_t>(n) - sizeof in;
  // Reads a u32 at `offset` of the body, 0 when the body is shorter (an older kernel).
  auto u32_at = [&](size_t offset) {
    uint32_t v = 0;
    if (body_len >= offset + sizeof v) std::memcpy(&v, body + offset, sizeof v);
    return v;
  };
  switch (in.opcode) {
    case FUSE_INIT:
      context->init_offers_killpriv_v2 = (u32_at(offsetof(fuse_init_in, flags)) & FUSE_HANDLE_KILLPRIV_V2) != 0;
      context->init_unique = in.unique;
      break;
    case FUSE_WRITE:
      t_kill_suidgid = u32_at(offsetof(fuse_write_in, write_flags)) & FUSE_WRITE_KILL_SUIDGID;
      break;
    case FUSE_SETATTR:
      t_kill_suidgid = u32_at(offsetof(fuse_setattr_in, valid)) & FATTR_KILL_SUIDGID;
      break;
    case FUSE_OPEN:
      t_kill_suidgid = u32_at(offsetof(fuse_open_in, open_flags)) & FUSE_OPEN_KILL_SUIDGID;
      break;
    case FUSE_CREATE:
      t_kill_suidgid = u32_at(offsetof(fuse_create_in, open_flags)) & FUSE_OPEN_KILL_SUIDGID;
      break;
    default:
      break;
  }
  return n;
}

ssize_t write_reply(int fd, iovec* iov, int count, void* userdata) {
  auto* context = static_cast<Context*>(userdata);
  const uint64_t init_unique = context->init_unique.load();
  if (init_unique != 0 && count >= 2 && iov[0].iov_len >= sizeof(fuse_out_header) &&
      iov[1].iov_len >= offsetof(fuse_init_out, flags) + sizeof(uint32_t)) {
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    if (out.unique == init_unique && out.error == 0) {
      context->init_unique = 0;  // answered once; a later request may reuse the number
      if (context->init_offers_killpriv_v2) {
        // A copy of libfuse's INIT reply with v2 in place of v1 (the kernel would keep
        // asking for security.capability under v1).
        std::vector<char> reply(static_cast<const char*>(iov[1].iov_base),
                                static_cast<const char*>(iov[1].iov_base) + iov[1].iov_len);
        uint32_t flags;
        std::memcpy(&flags, reply.data() + offsetof(fuse_init_out, flags), sizeof flags);
        flags = (flags & ~static_cast<uint32_t>(FUSE_HANDLE_KILLPRIV)) | FUSE_HANDLE_KILLPRIV_V2;
        std::memcpy(reply.data() + offsetof(fuse_init_out, flags), &flags, sizeof flags);
        std::vector<iovec> copy(iov, iov + count);
        copy[1].iov_base = reply.data();
        const ssize_t n = ::writev(fd, copy.data(), count);
        const int saved_errno = errno;  // libfuse reads it after we return
        if (n >= 0) context->killpriv_v2 = true;
        errno = saved_errno;
        return n;
      }
    }
  }
  return ::writev(fd, iov, count);
}

// Whether the request being handled must drop set-user/group-ID bits. Under v2 the kernel
// says so; otherwise (an older kernel, libfuse's v1) an unprivileged caller stands in for
// "lacks CAP_FSETID".
bool kill_requested(fuse_req_t req, const Context& context) {
  return context.killpriv_v2 ? t_kill_suidgid : fuse_req_ctx(req)->uid != 0;
}

}  // namespace killpriv

void wh_init(void* userdata, fuse_conn_info* conn) {
  const Context& context = *static_cast<Context*>(userdata);
  // The kernel caches written pages and sends them in large writes; safe only when every
  // change to a file goes through this mount (see FuseOptions::writeback_cache).
  if (context.opts.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  else
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO) conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  // POSIX and flock locks stay local to this pod: the kernel handles them when the file
  // system does not implement lock requests.
  conn->want &= ~FUSE_CAP_POSIX_LOCKS;
  conn->want &= ~FUSE_CAP_FLOCK_LOCKS;
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
}

void wh_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Attr a;
  if (int err = ns(req).lookup(parent, name, &a)) {
    if (err == ENOENT) {
      // A negative entry lets the kernel cache "does not exist" (we make every change).
      fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      e.entry_timeout = ctx(req).opts.entry_timeout_s;
      fuse_reply_entry(req, &e);
      return;
    }
    fuse_reply_err(req, err);
    return;
  }
  vfs(req).overlay(&a);
  reply_entry(req, a);
}

void wh_forget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
void wh_forget_multi(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }

void wh_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Attr a;
  if (int err = vfs(req).getattr(ino, &a)) return (void)fuse_reply_err(req, err);
  reply_attr(req, a);
}

// Libfuse leaves clearing set-user-ID and set-group-ID bits to the file system (the kernel's
// HANDLE_KILLPRIV): a write or truncate by an unprivileged user, and any change of owner,
// clear them as on a local file system.
int kill_privileges(fuse_req_t req, fuse_ino_t ino) {
  Attr a;
  if (int err = ns(req).getattr(ino, &a)) return err;
  if (a.type != pb::REGULAR) return 0;
  uint32_t mode = a.mode & 07777;
  uint32_t cleared = mode & ~static_cast<uint32_t>(S_ISUID);
  if (mode & S_IXGRP) cleared &= ~static_cast<uint32_t>(S_ISGID);  // without group-exec it is a lock flag
  if (cleared == mode) return 0;
  pb::SetAttr change;
  change.set_mask(kAttrMode);
  change.set_mode(cleared);
  return ns(req).setattr(ino, change, &a);
}

void wh_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* st, int to_set, fuse_file_info* fi) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  Attr a;
  if (int err = ns(req).getattr(ino, &a)) return (void)fuse_reply_err(req, err);
  // Times reported by the kernel's write-back cache: the time of the writes it flushes
  // belongs to the version being written (not a separate attribute change), and at
  // eviction it reports times we usually hold already. Neither needs an op.
  const int kTimesOnly = FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_CTIME;
  const int64_t mtime_ns = to_ns(st->st_mtim);
  if ((to_set & FUSE_SET_ATTR_MTIME) && !(to_set & ~kTimesOnly) &&
      ((fi && fi->fh && handle(fi)->file->set_pending_mtime(mtime_ns)) || mtime_ns == a.mtime_ns)) {
    vfs(req).overlay(&a);  // nothing changed in the namespace since `a` was read
    return reply_attr(req, a);
  }
  // Under v2 the kernel flags the truncations that drop privileges; under v1 (libfuse's
  // default) an unprivileged caller's truncation does.
  const bool kill_for_truncate = ctx(req).killpriv_v2 ? killpriv::t_kill_suidgid
                                                      : (to_set & FUSE_SET_ATTR_SIZE) && fuse_req_ctx(req)->uid != 0;
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (a.type == pb::DIRECTORY) return (void)fuse_reply_err(req, EISDIR);
    if (a.type != pb::REGULAR) return (void)fuse_reply_err(req, EINVAL);
    if (fi && fi->fh) handle(fi)->wrote = true;
    int err = fi && fi->fh ? handle(fi)->file->truncate(static_cast<uint64_t>(st->st_size), Vfs::now_ns())
                           : vfs(req).truncate(a.id, static_cast<uint64_t>(st->st_size));
    if (err) return (void)fuse_reply_err(req, err);
  }
  pb::SetAttr change;
  uint32_t mask = 0;
  const int64_t now = Vfs::now_ns();
  if (to_set & FUSE_SET_ATTR_MODE) {
    mask |= kAttrMode;
    change.set_mode(st->st_mode & 07777);
  }
  if (to_set & FUSE_SET_ATTR_UID) {
    mask |= kAttrUid;
    change.set_uid(st->st_uid);
  }
  if (to_set & FUSE_SET_ATTR_GID) {
    mask |= kAttrGid;
    change.set_gid(st->st_gid);
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
    mask |= kAttrAtime;
    change.set_atime_ns((to_set & FUSE_SET_ATTR_ATIME_NOW) ? now : to_ns(st->st_atim));
  }
  if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
    mask |= kAttrMtime;
    change.set_mtime_ns((to_set & FUSE_SET_ATTR_MTIME_NOW) ? now : mtime_ns);
  }
  if (mask) {
    change.set_mask(mask);
    if (int err = ns(req).setattr(ino, change, &a)) return (void)fuse_reply_err(req, err);
  }
  const bool owner_changed = to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID);
  if ((owner_changed && !(to_set & FUSE_SET_ATTR_MODE)) || kill_for_truncate)
    if (int err = kill_privileges(req, ino)) return (void)fuse_reply_err(req, err);
  if (int err = vfs(req).getattr(ino, &a)) return (void)fuse_reply_err(req, err);
  reply_attr(req, a);
}

void wh_readlink(fuse_req_t req, fuse_ino_t ino) {
  std::string target;
  if (int err = ns(req).readlink(ino, &target)) return (void)fuse_reply_err(req, err);
  fuse_reply_readlink(req, target.c_str());
}

void make_node(fuse_req_t req, fuse_ino_t parent, const char* name, pb::FileType type, mode_t mode,
               const char* target, dev_t rdev = 0) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  const fuse_ctx* c = fuse_req_ctx(req);
  Attr a;
  if (int err = ns(req).make(parent, name, type, mode, c->uid, c->gid, target ? target : "", &a, rdev))
    return (void)fuse_reply_err(req, err);
  reply_entry(req, a);
}

void wh_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  pb::FileType type;
  if (S_ISREG(mode)) type = pb::REGULAR;
  else if (S_ISFIFO(mode)) type = pb::FIFO;
  else if (S_ISSOCK(mode)) type = pb::SOCKET;
  else if (S_ISCHR(mode)) type = pb::CHAR_DEVICE;
  else if (S_ISBLK(mode)) type = pb::BLOCK_DEVICE;
  else return (void)fuse_reply_err(req, EINVAL);  // as mknod(2) for an unknown type
  // Device nodes are stored (with their number) and never opened: the mount is nodev, and
  // open of anything but a regular file is refused (open_handle). Creating one needs
  // CAP_MKNOD, which the kernel checks in the caller's namespace before asking us; FUSE
  // reports the caller's uid as the daemon sees it, and only its root may, as on ext4.
  if ((type == pb::CHAR_DEVICE || type == pb::BLOCK_DEVICE) && fuse_req_ctx(req)->uid != 0)
    return (void)fuse_reply_err(req, EPERM);
  make_node(req, parent, name, type, mode, nullptr,
            type == pb::CHAR_DEVICE || type == pb::BLOCK_DEVICE ? rdev : 0);
}

void wh_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  make_node(req, parent, name, pb::DIRECTORY, mode, nullptr);
}

void wh_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  make_node(req, parent, name, pb::SYMLINK, 0777, link);
}

void wh_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  fuse_reply_err(req, ns(req).unlink(parent, name));
}

void wh_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  fuse_reply_err(req, ns(req).rmdir(parent, name));
}

void wh_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  fuse_reply_err(req, ns(req).rename(parent, name, newparent, newname, flags));
}

void wh_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  Attr a;
  if (int err = ns(req).link(ino, newparent, newname, &a)) return (void)fuse_reply_err(req, err);
  vfs(req).overlay(&a);
  reply_entry(req, a);
}

void forget_handle(fuse_req_t req, FileHandle* h) {
  std::lock_guard lock(ctx(req).handles_mu);
  ctx(req).files.erase(h);
}

// Opens a handle on regular file `a`. `created`: the file was just made by this request,
// so there is nothing to truncate (as the kernel drops O_TRUNC for a file it creates).
int open_handle(fuse_req_t req, const Attr& a, fuse_file_info* fi, bool created = false) {
  if (a.type == pb::DIRECTORY) return EISDIR;
  if (a.type != pb::REGULAR) return ENXIO;
  auto h = std::make_unique<FileHandle>();
  h->opener_uid = fuse_req_ctx(req)->uid;
  bool reloaded = false;
  if (int err = vfs(req).open(a.id, &h->file, &reloaded)) return err;
  // libfuse asks the kernel for atomic O_TRUNC: the truncation is ours to do, here.
  if (!created && (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
    h->wrote = true;
    // A truncating open drops privileges as a truncate does (the kernel leaves it to us);
    // first, so that an open failing there has changed nothing: a failed open must not
    // truncate the file (the release then commits nothing).
    int err = killpriv::kill_requested(req, ctx(req)) ? kill_privileges(req, a.ino) : 0;
    if (!err) err = h->file->truncate(0, Vfs::now_ns());
    if (err) {
      vfs(req).release(h->file, /*commit_writes=*/false);
      return err;
    }
  }
  {
    std::lock_guard lock(ctx(req).handles_mu);
    ctx(req).files.insert(h.get());
  }
  fi->fh = reinterpret_cast<uint64_t>(h.release());
  // Every change of this file's content on this pod passes through this mount, and a
  // version from another pod invalidates the kernel's pages when it arrives (KernelCache),
  // so they stay valid from one open to the next — unless this open is what found the
  // open file behind (the invalidation may still be on its way).
  fi->keep_cache = reloaded ? 0 : 1;
  // A reader's close has nothing to commit (wh_flush) unless the kernel's write-back cache
  // may send any file's pages through it; spare the kernel the FLUSH round trip. (The kernel
  // ignores this flag under the write-back cache anyway.)
  fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY && !ctx(req).opts.writeback_cache;
  return 0;
}

void wh_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
    if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  Attr a;
  if (int err = ns(req).getattr(ino, &a)) return (void)fuse_reply_err(req, err);
  if (int err = open_handle(req, a, fi)) return (void)fuse_reply_err(req, err);
  if (fuse_reply_open(req, fi) == -ENOENT) {  // interrupted: the kernel never saw the handle
    forget_handle(req, handle(fi));
    vfs(req).release(handle(fi)->file);
    delete handle(fi);
  }
}

// Whether the caller may open an existing file with `flags` (the kernel checks permissions
// on lookup and open, not on a create that finds the name taken).
bool may_open(const fuse_ctx* c, const Attr& a, int flags) {
  if (c->uid == 0) return true;
  unsigned bits = a.mode & 07;
  if (c->uid == a.uid) bits = (a.mode >> 6) & 07;
  else if (c->gid == a.gid) bits = (a.mode >> 3) & 07;
  const int acc = flags & O_ACCMODE;
  const unsigned want = (acc != O_WRONLY ? 4u : 0u) | (acc != O_RDONLY || (flags & O_TRUNC) ? 2u : 0u);
  return (bits & want) == want;
}

void wh_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  const fuse_ctx* c = fuse_req_ctx(req);
  Attr a;
  int made = ns(req).make(parent, name, pb::REGULAR, mode, c->uid, c->gid, "", &a);
  bool created = made == 0;
  if (made == EEXIST && !(fi->flags & O_EXCL)) {
    // The kernel believed the name free (a negative entry cached before another pod made
    // the file): open(O_CREAT) without O_EXCL opens the existing file, as POSIX says.
    if (int err = ns(req).lookup(parent, name, &a)) return (void)fuse_reply_err(req, err);
    vfs(req).overlay(&a);
    if (a.type == pb::DIRECTORY) return (void)fuse_reply_err(req, EISDIR);
    if (!may_open(c, a, fi->flags)) return (void)fuse_reply_err(req, EACCES);
    made = 0;
  }
  if (made) return (void)fuse_reply_err(req, made);
  if (int err = open_handle(req, a, fi, created)) return (void)fuse_reply_err(req, err);
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = a.ino;
  e.generation = 1;
  to_stat(a, &e.attr);
  e.attr_timeout = ctx(req).opts.attr_timeout_s;
  e.entry_timeout = ctx(req).opts.entry_timeout_s;
  if (fuse_reply_create(req, &e, fi) == -ENOENT) {
    forget_handle(req, handle(fi));
    vfs(req).release(handle(fi)->file);
    delete handle(fi);
  }
}

void wh_read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  // One buffer per FUSE thread, as large as the largest read the kernel sends.
  thread_local std::vector<char> buf;
  if (buf.size() < size) buf.resize(size);
  ssize_t n = handle(fi)->file->read(static_cast<uint64_t>(off), size, buf.data());
  if (n < 0) return (void)fuse_reply_err(req, static_cast<int>(-n));
  fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
}

void wh_write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off, fuse_file_info* fi) {
  if (WriteGate* gate = ctx(req).opts.gate)
    if (int err = gate->admit_write(size)) return (void)fuse_reply_err(req, err);
  handle(fi)->wrote = true;
  // Under v2 a write by a caller without CAP_FSETID drops set-user/group-ID bits, as on a
  // local file system (under v1 the kernel does it with a SETATTR of the mode).
  if (ctx(req).killpriv_v2 && killpriv::t_kill_suidgid)
    if (int err = kill_privileges(req, ino)) return (void)fuse_reply_err(req, err);
  if (int err = handle(fi)->file->write(static_cast<uint64_t>(off), data, size, Vfs::now_ns()))
    return (void)fuse_reply_err(req, err);
  fuse_reply_write(req, size);
}

void wh_flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // Called at every close(): commit the version so other processes and pods see it
  // (close-to-open), and report a full disk to the closing process. With the kernel's
  // write-back cache (a pod alone) its pages may arrive through any handle: always commit.
  FileHandle* h = handle(fi);
  if (!h->wrote && !ctx(req).opts.writeback_cache) return (void)fuse_reply_err(req, 0);
  fuse_reply_err(req, h->file->flush(false));
}

void wh_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  FileHandle* h = handle(fi);
  forget_handle(req, h);
  int err = vfs(req).release(h->file, h->wrote || ctx(req).opts.writeback_cache);
  delete h;
  fuse_reply_err(req, err);
}

void wh_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  fuse_reply_err(req, handle(fi)->file->flush(true));
}

void wh_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto h = std::make_unique<DirHandle>();
  h->self_ino = ino;
  if (int err = ns(req).list(ino, &h->items, &h->parent_ino)) return (void)fuse_reply_err(req, err);
  {
    std::lock_guard lock(ctx(req).handles_mu);
    ctx(req).dirs.insert(h.get());
  }
  fi->fh = reinterpret_cast<uint64_t>(h.release());
  fi->cache_readdir = 0;
  fuse_reply_open(req, fi);
}

void readdir_common(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  DirHandle* h = reinterpret_cast<DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  const size_t total = h->items.size() + 2;
  for (size_t i = static_cast<size_t>(off); i < total; ++i) {
    std::string name;
    struct stat st;
    std::memset(&st, 0, sizeof st);
    Attr a;
    if (i < 2) {
      name = i == 0 ? "." : "..";
      st.st_ino = i == 0 ? h->self_ino : h->parent_ino;
      st.st_mode = S_IFDIR;
    } else {
      const ListItem& item = h->items[i - 2];
      name = item.name;
      st.st_ino = item.ino;
      st.st_mode = item.mode;
    }
    size_t n;
    if (plus) {
      fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      if (i >= 2) {
        if (vfs(req).getattr(st.st_ino, &a) != 0) continue;  // removed since opendir
        e.ino = a.ino;
        e.generation = 1;
        to_stat(a, &e.attr);
        e.attr_timeout = ctx(req).opts.attr_timeout_s;
        e.entry_timeout = ctx(req).opts.entry_timeout_s;
      } else {
        e.attr = st;  // "." and "..": the kernel does not take a lookup reference
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e, static_cast<off_t>(i + 1));
    } else {
      n = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st, static_cast<off_t>(i + 1));
    }
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void wh_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  readdir_common(req, ino, size, off, fi, false);
}
void wh_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  readdir_common(req, ino, size, off, fi, true);
}

void wh_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  {
    std::lock_guard lock(ctx(req).handles_mu);
    ctx(req).dirs.erase(reinterpret_cast<DirHandle*>(fi->fh));
  }
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void wh_fsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  // Namespace changes are ops in RocksDB's log: the group commit makes every op applied so
  // far durable (with the chunks this pod wrote before them).
  fuse_reply_err(req, ns(req).make_durable());
}

void wh_statfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs sv;
  if (::statvfs(ctx(req).opts.storage_dir.c_str(), &sv) != 0) return (void)fuse_reply_err(req, errno);
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

bool is_system_xattr(const char* name) { return std::strncmp(name, "system.", 7) == 0; }

void wh_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  if (is_system_xattr(name)) return (void)fuse_reply_err(req, EOPNOTSUPP);
  fuse_reply_err(req, ns(req).setxattr(ino, name, std::string_view(value, size), flags));
}

void wh_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (is_system_xattr(name)) return (void)fuse_reply_err(req, EOPNOTSUPP);
  std::string value;
  if (int err = ns(req).getxattr(ino, name, &value)) return (void)fuse_reply_err(req, err);
  if (size == 0) return (void)fuse_reply_xattr(req, value.size());
  if (size < value.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, value.data(), value.size());
}

void wh_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  std::vector<std::string> names;
  if (int err = ns(req).listxattr(ino, &names)) return (void)fuse_reply_err(req, err);
  std::string out;
  for (auto& n : names) {
    out += n;
    out.push_back('\0');
  }
  if (size == 0) return (void)fuse_reply_xattr(req, out.size());
  if (size < out.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, out.data(), out.size());
}

void wh_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  if (is_system_xattr(name)) return (void)fuse_reply_err(req, EOPNOTSUPP);
  fuse_reply_err(req, ns(req).removexattr(ino, name));
}

void wh_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  Attr a;
  if (int err = ns(req).getattr(ino, &a)) return (void)fuse_reply_err(req, err);
  if (mask == F_OK) return (void)fuse_reply_err(req, 0);
  const fuse_ctx* c = fuse_req_ctx(req);
  if (c->uid == 0) {
    // root may do anything but execute a file nobody may execute
    const bool exec_ok = !(mask & X_OK) || a.type == pb::DIRECTORY || (a.mode & 0111);
    return (void)fuse_reply_err(req, exec_ok ? 0 : EACCES);
  }
  unsigned bits = a.mode & 07;
  if (c->uid == a.uid) bits = (a.mode >> 6) & 07;
  else if (c->gid == a.gid) bits = (a.mode >> 3) & 07;
  const unsigned want = ((mask & R_OK) ? 4 : 0) | ((mask & W_OK) ? 2 : 0) | ((mask & X_OK) ? 1 : 0);
  fuse_reply_err(req, (bits & want) == want ? 0 : EACCES);
}

void wh_fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  if (int err = admit_change(req)) return (void)fuse_reply_err(req, err);
  if (mode & ~FALLOC_FL_KEEP_SIZE) return (void)fuse_reply_err(req, EOPNOTSUPP);
  if (offset < 0 || length <= 0) return (void)fuse_reply_err(req, EINVAL);
  // Chunks are written only when data is, so space cannot be reserved; but a caller asking
  // for more room than the disk has must hear ENOSPC now, not later.
  struct statvfs sv;
  if (::statvfs(ctx(req).opts.storage_dir.c_str(), &sv) == 0) {
    const uint64_t avail = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    if (static_cast<uint64_t>(length) > avail) return (void)fuse_reply_err(req, ENOSPC);
  }
  if (!(mode & FALLOC_FL_KEEP_SIZE)) {
    Attr a;
    a.size = 0;
    handle(fi)->file->overlay(&a);
    const uint64_t end = static_cast<uint64_t>(offset) + static_cast<uint64_t>(length);
    if (end > a.size) {
      handle(fi)->wrote = true;
      if (int err = handle(fi)->file->truncate(end, Vfs::now_ns())) return (void)fuse_reply_err(req, err);
    }
  }
  fuse_reply_err(req, 0);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = wh_init;
  ops.lookup = wh_lookup;
  ops.forget = wh_forget;
  ops.forget_multi = wh_forget_multi;
  ops.getattr = wh_getattr;
  ops.setattr = wh_setattr;
  ops.readlink = wh_readlink;
  ops.mknod = wh_mknod;
  ops.mkdir = wh_mkdir;
  ops.unlink = wh_unlink;
  ops.rmdir = wh_rmdir;
  ops.symlink = wh_symlink;
  ops.rename = wh_rename;
  ops.link = wh_link;
  ops.open = wh_open;
  ops.read = wh_read;
  ops.write = wh_write;
  ops.flush = wh_flush;
  ops.release = wh_release;
  ops.fsync = wh_fsync;
  ops.opendir = wh_opendir;
  ops.readdir = wh_readdir;
  ops.readdirplus = wh_readdirplus;
  ops.releasedir = wh_releasedir;
  ops.fsyncdir = wh_fsyncdir;
  ops.statfs = wh_statfs;
  ops.setxattr = wh_setxattr;
  ops.getxattr = wh_getxattr;
  ops.listxattr = wh_listxattr;
  ops.removexattr = wh_removexattr;
  ops.access = wh_access;
  ops.create = wh_create;
  ops.fallocate = wh_fallocate;
  return ops;
}();

// Is `path` listed as a mount point in /proc/self/mountinfo?
bool is_mount_point(const std::string& path) {
  FILE* f = std::fopen("/proc/self/mountinfo", "r");
  if (!f) return false;
  char line[4096];
  bool found = false;
  while (!found && std::fgets(line, sizeof line, f)) {
    // Fields: id parent major:minor root mountpoint ... (spaces in paths are escaped as \040)
    char mp[4096];
    if (std::sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && path == mp) found = true;
  }
  std::fclose(f);
  return found;
}

}  // namespace

bool clean_stale_mount(const std::string& mountpoint) {
  // statfs always reaches the file system (stat may be answered from the kernel's cache),
  // so it tells a dead FUSE mount apart.
  struct statvfs sv;
  if (::statvfs(mountpoint.c_str(), &sv) == 0 || errno != ENOTCONN) return true;
  spdlog::warn("{} is a dead mount left by a crashed daemon; detaching it", mountpoint);
  if (::umount2(mountpoint.c_str(), MNT_DETACH) == 0) return true;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execlp("fusermount3", "fusermount3", "-u", "-z", mountpoint.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (pid > 0) ::waitpid(pid, &status, 0);
  return ::statvfs(mountpoint.c_str(), &sv) == 0;
}

// Makes a stop request end the FUSE loop in bounded time. libfuse 3.14's signal handler only
// sets the session's exit flag: the loop's main thread notices when a signal interrupts its
// wait, and a SIGTERM delivered to another thread (gRPC's, RocksDB's), or one that lands just
// before the wait starts, leaves it waiting for a FUSE request that may never come
// (libfuse issue 997; a CI run saw a daemon ignore SIGTERM for 30 s). This watcher polls the
// flag and, once it is set, interrupts the loop thread's wait with a signal whose handler
// does nothing, again every poll until the loop has returned.
class StopWatcher {
 public:
  explicit StopWatcher(fuse_session* se) : se_(se), loop_thread_(::pthread_self()) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = [](int) {};  // only interrupts; no SA_RESTART, so the wait returns EINTR
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(kWakeSignal, &sa, nullptr);
    thread_ = std::thread([this] { watch(); });
  }
  // Call once the loop has returned.
  ~StopWatcher() {
    {
      std::lock_guard lock(mu_);
      loop_returned_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  static constexpr int kWakeSignal = SIGUSR2;
  static constexpr int kPollMs = 100;

  void watch() {
    std::unique_lock lock(mu_);
    bool told = false;
    while (!cv_.wait_for(lock, std::chrono::milliseconds(kPollMs), [this] { return loop_returned_; })) {
      if (!fuse_session_exited(se_)) continue;
      if (!std::exchange(told, true)) spdlog::info("stop requested: ending the FUSE loop");
      ::pthread_kill(loop_thread_, kWakeSignal);  // the loop returns before the watcher ends
    }
  }

  fuse_session* se_;
  const pthread_t loop_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool loop_returned_ = false;
  std::thread thread_;
};

int run_fuse(Vfs& vfs, const FuseOptions& options) {
  Context context;
  context.vfs = &vfs;
  context.opts = options;
  if (!clean_stale_mount(options.mountpoint)) {
    spdlog::error("cannot clean the stale mount at {}", options.mountpoint);
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(options.mountpoint, ec);
  if (is_mount_point(options.mountpoint)) {
    spdlog::error("{} is already mounted (another daemon?); refusing to mount over it", options.mountpoint);
    return 1;
  }
  std::vector<std::string> argv_s = {"wormhole", "-o", "fsname=wormhole,subtype=wormhole"};
  // WORMHOLE_FUSE_DEBUG=1 makes libfuse log every request (for debugging only: slow).
  if (std::getenv("WORMHOLE_FUSE_DEBUG")) argv_s.push_back("-d");
  if (::geteuid() == 0) {
    // Shared mount for every user, with the kernel checking permissions against modes.
    argv_s.push_back("-o");
    argv_s.push_back("allow_other,default_permissions");
  } else {
    argv_s.push_back("-o");
    argv_s.push_back("default_permissions");
  }
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &kOps, sizeof kOps, &context);
  fuse_opt_free_args(&args);  // the session keeps what it needs
  if (!se) {
    spdlog::error("cannot create the FUSE session");
    return 1;
  }
  if (fuse_set_signal_handlers(se) != 0) {
    fuse_session_destroy(se);
    return 1;
  }
  if (fuse_session_mount(se, options.mountpoint.c_str()) != 0) {
    spdlog::error("cannot mount at {}", options.mountpoint);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return 1;
  }
  fuse_custom_io io;
  std::memset(&io, 0, sizeof io);
  io.read = killpriv::read_request;
  io.writev = killpriv::write_reply;
  // Without the hooks everything works as before, with v1 (a GETXATTR per write).
  if (int err = fuse_session_custom_io(se, &io, fuse_session_fd(se)); err != 0)
    spdlog::warn("cannot hook the FUSE device ({}): no FUSE_HANDLE_KILLPRIV_V2", std::strerror(-err));
  spdlog::info("mounted at {}", options.mountpoint);
  if (options.kernel_cache) options.kernel_cache->attach(se);
  if (options.on_mounted) options.on_mounted();
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 1);
  fuse_loop_cfg_set_max_threads(cfg, options.max_threads);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  int rc = 0;
  {
    StopWatcher watcher(se);
    rc = fuse_session_loop_mt(se, cfg);
  }
  fuse_loop_cfg_destroy(cfg);
  spdlog::info("FUSE loop ended; unmounting {}", options.mountpoint);
  if (options.kernel_cache) options.kernel_cache->detach();
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  // No request runs any more: commit what files still open had written, free the handles.
  for (FileHandle* h : context.files) {
    if (int err = vfs.release(h->file)) spdlog::error("flushing an open file at stop failed: {}", std::strerror(err));
    delete h;
  }
  for (DirHandle* h : context.dirs) delete h;
  spdlog::info("unmounted {}", options.mountpoint);
  return rc < 0 ? 1 : 0;
}

}  // namespace wormhole
