// Namespace: the file-system operations of one pod (mkdir, rename, setattr, ...) on top of
// Meta. Each method checks POSIX preconditions, builds one op and applies it with the same
// Meta::apply remote ops go through. Errors are returned as positive errno values; a store
// that cannot be read is EIO, never taken for an absent entry or an empty directory.
// Thread-safe: reads run concurrently, changes are serialized.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "meta/meta.h"
#include "store/buffered_kv.h"

namespace wormhole {

// What FUSE needs to know about an inode.
struct Attr {
  uint64_t ino = 0;
  Gid id;
  pb::FileType type = pb::FILE_TYPE_UNSPECIFIED;
  uint32_t mode = 0;  // S_IF* | permission bits
  uint32_t nlink = 0;
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;
  int64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0;
  uint64_t rdev = 0;  // device number of a device node (st_rdev), else 0
  Gid version;
};

struct ListItem {
  std::string name;
  uint64_t ino = 0;
  uint32_t mode = 0;
};

// A deleted entry waiting in the trash.
struct TrashItem {
  Gid entry;
  std::string name;
  std::string from;       // the path of the directory it was deleted from ("" if gone too)
  Hlc deleted_at;
  pb::FileType type = pb::FILE_TYPE_UNSPECIFIED;
  uint64_t size = 0;
};

struct NamespaceStats {
  uint64_t files = 0;        // regular files
  uint64_t directories = 0;
  uint64_t logical_bytes = 0;  // sum of file sizes
  uint64_t move_log_entries = 0;
  uint64_t op_log_entries = 0;  // ops kept for pods that may still lack them
};

class Namespace {
 public:
  using WallClock = std::function<int64_t()>;  // nanoseconds since the epoch
  Namespace(KvStore& kv, uint64_t pod_id, WallClock wall_ns, std::function<bool(Gid)> in_use);
  bool init(std::string* error);

  int getattr(uint64_t ino, Attr* attr);
  int lookup(uint64_t parent, std::string_view name, Attr* attr);
  // Creates a regular file, directory, symlink (target), fifo, socket, or character or
  // block device (rdev: its device number; ignored for other types). Who may create a
  // device node is the caller's check (the FUSE adapter: root only, as the kernel).
  int make(uint64_t parent, std::string_view name, pb::FileType type, uint32_t mode, uint32_t uid,
           uint32_t gid, std::string_view target, Attr* attr, uint64_t rdev = 0);
  int link(uint64_t ino, uint64_t new_parent, std::string_view new_name, Attr* attr);
  int unlink(uint64_t parent, std::string_view name);
  int rmdir(uint64_t parent, std::string_view name);
  // flags: RENAME_NOREPLACE, RENAME_EXCHANGE or 0.
  int rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
             unsigned flags);
  // Changes the attributes named in `change.mask` (inode field ignored).
  int setattr(uint64_t ino, const pb::SetAttr& change, Attr* attr);
  int readlink(uint64_t ino, std::string* target);
  // Entries of directory `ino` in name order, and the FUSE number of its parent.
  int list(uint64_t ino, std::vector<ListItem>* items, uint64_t* parent_ino);
  // flags: XATTR_CREATE / XATTR_REPLACE or 0.
  int setxattr(uint64_t ino, std::string_view name, std::string_view value, int flags);
  int getxattr(uint64_t ino, std::string_view name, std::string* value);
  int listxattr(uint64_t ino, std::vector<std::string>* names);
  int removexattr(uint64_t ino, std::string_view name);

  // Commits a new content version of `inode` held by `holders` (empty: this pod alone);
  // durable on return when `sync`. `chunks`: the whole list, by increasing index, all below
  // `chunk_spans` (the chunk spans of `size`; unknown: UINT64_MAX). When `base_version` is
  // the current version, the op carries only what changed over it (CommitVersion.delta).
  int commit(Gid inode, Gid base_version, uint64_t size, const std::vector<pb::ChunkRef>& chunks,
             int64_t mtime_ns, const std::vector<uint64_t>& holders, bool sync, Gid* new_version,
             uint64_t chunk_spans = UINT64_MAX);
  bool get_version(Gid version, pb::VersionRecord* rec);
  // See Meta::get_recent_version.
  bool get_recent_version(Gid version, pb::VersionRecord* rec);
  // The current version of a regular file (empty id and record for a never-written file).
  int current_version(Gid inode, Gid* version, pb::VersionRecord* rec);
  bool gid_of(uint64_t ino, Gid* g);

  std::string path_of(Gid inode);
  // The trash, newest delete first, at most `limit` items (of the first 100,000 looked at).
  int list_trash(size_t limit, std::vector<TrashItem>* items);
  // Puts a trashed entry back where it was deleted from (or at the root when that
  // directory is gone), under its name or, when taken, "name.restored-N". A local op.
  // 0 or errno (ENOENT: not in the trash); *path: where it is now.
  int restore(Gid entry, std::string* path);
  // Trims the move log; on a network also pass what every member has applied so the op
  // log keeps what some pod still lacks (empty = this pod is alone: drop all of it).
  // Returns the number of move-log and trash entries removed.
  size_t trim();
  void trim_op_log(const std::map<uint64_t, uint64_t>& everyone_has);

  // ---- replication (see Replicator) ---------------------------------------------------------
  void add_member(uint64_t pod);
  // What a remote op changed that the kernel may have cached: entries (a directory's FUSE
  // number and a name) and inodes (FUSE numbers).
  struct Changed {
    std::vector<std::pair<uint64_t, std::string>> entries;
    std::vector<uint64_t> inodes;
    std::vector<Gid> contents;          // files whose current version changed
    std::vector<Gid> versions_to_hold;  // committed versions naming this pod as a holder
  };
  // Every stored version naming this pod as a holder (for a start-up check of its chunks).
  std::vector<Gid> versions_held();
  // Applies an op from another pod (its dependencies already applied). 0 or errno.
  // Appends to *changed (if given) what the kernel must forget.
  int apply_remote(const pb::Op& op, Changed* changed = nullptr);
  // See Meta::incomplete_versions.
  std::vector<std::pair<Gid, pb::VersionRecord>> incomplete_versions(size_t max);
  // See Meta::complete_version; appends to *changed the file (and its FUSE number) whose
  // content it changed.
  bool complete_version(Gid version, uint64_t size, const google::protobuf::RepeatedPtrField<pb::ChunkRef>& whole,
                        Changed* changed);
  // See Meta::in_order: whether `op` may be applied next (or is a duplicate).
  bool in_order(const pb::Op& op, std::string* why);

  // Remote ops applied as one store write (see BufferedKv): a received batch costs one
  // write, each key once. Holds the namespace's exclusive lock from construction to
  // commit(), so nothing sees a state that a failed commit takes back. Use it on one
  // thread, and call nothing else of the namespace meanwhile (its lock is held).
  class RemoteBatch {
   public:
    explicit RemoteBatch(Namespace& ns);
    ~RemoteBatch();  // commits if commit() was not called
    RemoteBatch(const RemoteBatch&) = delete;
    RemoteBatch& operator=(const RemoteBatch&) = delete;
    std::map<uint64_t, uint64_t> applied();
    bool in_order(const pb::Op& op, std::string* why);
    // As apply_remote. The op's writes are held until commit().
    int apply(const pb::Op& op, Changed* changed);
    // Writes what the batch applied as one batch and releases the lock: 0, or ENOSPC/EIO
    // when the write failed, and then none of the batch's ops is applied (memory is put
    // back as it was at the start; the ops come again by anti-entropy).
    int commit();

   private:
    Namespace& ns_;
    std::unique_lock<std::shared_mutex> lock_;
    Meta::MemoryState start_;
  };
  void set_expected_members(size_t count);
  // Records `member` in the replicated member list (a local op). 0 or errno.
  int record_member(const pb::Member& member);
  // Records that this pod holds every chunk of each of `versions` (repair copies, durable
  // here), or with `release`, that it no longer counts as their holder (surplus copies its
  // keepers confirmed): one local op, at most kMaxActionsPerOp versions. 0 or errno.
  int claim_holder(const std::vector<Gid>& versions, bool release = false);
  // See Meta::hold_changes. Any thread, no lock.
  uint64_t hold_changes() const { return meta_.hold_changes(); }
  // See Meta::scan_versions.
  bool scan_versions(Gid after, size_t max, const std::function<void(Gid, const pb::VersionRecord&)>& visit,
                     Gid* next);
  std::vector<pb::Member> members();
  // See Meta::snapshot / Meta::install_snapshot. The copy is durable here before the first
  // visit; false if it could not be made durable or read whole (then it is incomplete).
  bool snapshot(const std::function<bool(std::string_view key, std::string_view value)>& visit);
  bool install_snapshot(const std::function<int(Meta::SnapshotBatch*)>& next, std::string* error);
  // Whether this pod has applied no op at all (a pod that never synced).
  bool empty_history();
  // How conflicting versions are resolved (network.conflict) and this pod's name, both
  // recorded in every version committed here.
  void set_conflict_policy(bool keep_both, std::string pod_name);
  std::map<uint64_t, uint64_t> applied();
  // Durability before visibility: what this pod has applied *durably*, per origin. Only
  // this is reported to peers (they trim their op logs by it, and a sync-mode writer counts
  // it as a durable copy), and only this pod's ops up to durable_applied()[self] are given
  // out: after a power loss the pod reuses the sequence numbers and ids of ops it lost, so
  // no peer may have seen them.
  std::map<uint64_t, uint64_t> durable_applied();
  // The stamps of the ops durable_applied() names that may be claimed for stability: those
  // applied when every op this pod had made was durable too (claim_stamps_locked).
  std::map<uint64_t, Hlc> durable_stamps();
  // The stamp of the newest op applied, per origin.
  std::map<uint64_t, Hlc> applied_stamps();
  // What is causally stable (Replicator::stable_stamps), for trim(): on a network nothing
  // is purged beyond it. Ignored on a pod alone.
  void set_stable(std::map<uint64_t, Hlc> stable);
  // How long a deleted entry stays in the trash (network.trash_retention) at least.
  void set_trash_retention_ms(uint64_t ms);
  // Group commit: makes every op applied so far durable with one log sync (outside the
  // namespace lock: FUSE threads go on meanwhile), then advances durable_applied().
  // 0 or errno.
  int make_durable();
  // The same for the ops applied from other pods only (an acknowledgement of a received
  // batch): this pod's own ops and its chunks are left to the next make_durable(), so a
  // receive never waits on this pod's chunk writes.
  int make_received_durable();
  // Runs before each group commit's log sync (the chunk store's own group commit: a
  // durable op never names content a power loss can take). Set once, before any thread
  // uses the namespace. A failure fails the group commit.
  void set_before_log_sync(std::function<int()> fn) { before_log_sync_ = std::move(fn); }
  // Ops of `origin` after `after`, in order, at most `limit`; this pod's own only as far as
  // they are durable.
  std::vector<pb::Op> ops_after(uint64_t origin, uint64_t after, size_t limit);
  uint64_t pod_id() const { return meta_.pod_id(); }
  void purge_if_unused(Gid inode);
  // Counts for `status`: a full scan of the committed store, without the namespace's lock.
  NamespaceStats stats();
  // Every chunk referenced by a stored version, and whether this pod must keep it (see
  // Meta::for_each_chunk), as committed (without the namespace's lock); false when the
  // store failed part-way (the chunks visited are then not all the live ones: garbage
  // collection must not run).
  bool for_each_chunk(const std::function<void(const std::string& sha256, bool held)>& visit);

 private:
  int resolve_dir(uint64_t ino, Gid* g);
  // resolve_dir() for a directory something is made in or moved into: EPERM for lost+found.
  int resolve_dir_to_change(uint64_t ino, Gid* g);
  // Meta::lookup with the lost+found view: "lost+found" at the root while removed
  // directories still hold entries, and those directories in it.
  int lookup_in(Gid dir, std::string_view name, DirItem* item);
  int fill_attr(Gid g, Attr* attr);
  int submit(pb::Op& op, bool sync);
  size_t trim_locked();

  int apply_remote_locked(const pb::Op& op, Changed* changed);

  std::shared_mutex mu_;
  BufferedKv buffered_;  // over the store given; holds a RemoteBatch's writes
  KvStore& kv_;          // = buffered_
  Meta meta_;
  int sync_log(bool own_ops);  // make_durable / make_received_durable
  // Adds `durable_hlc` (stamps of ops made durable, applied when this pod's newest own op
  // was `own_made`) to the stamps claimed for stability, if this pod's own ops up to
  // `own_made` are durable. Caller holds durable_mu_.
  void claim_stamps_locked(uint64_t own_made, const std::map<uint64_t, Hlc>& durable_hlc);
  std::function<int()> before_log_sync_;  // see set_before_log_sync
  // Held across the chunk sync and log sync of a group commit of own ops (see sync_log);
  // never taken with mu_ or durable_mu_ held (mu_ is taken shared under it).
  std::mutex own_sync_mu_;
  std::atomic<bool> installing_snapshot_{false};  // see for_each_chunk
  // Guards durable_. Never held across the log sync; taken after mu_ when both are held.
  std::mutex durable_mu_;
  std::map<uint64_t, uint64_t> durable_;  // see durable_applied()
  std::map<uint64_t, Hlc> durable_hlc_;   // see durable_stamps() and claim_stamps_locked()
  std::map<uint64_t, Hlc> stable_;        // see set_stable(); guarded by mu_
  uint64_t trash_retention_ms_ = 0;       // guarded by mu_
  bool keep_both_ = true;
  std::string pod_name_;
  WallClock wall_ns_;
  uint64_t ops_since_trim_ = 0;
};

// Maps an inode type and permission bits to st_mode.
uint32_t make_mode(pb::FileType type, uint32_t perm);

}  // namespace wormhole
