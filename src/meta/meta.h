// Meta: the replicated namespace of one pod as a deterministic state machine.
//
// Every change, local or remote, is a pb::Op applied by apply(); one op is one atomic
// KvStore batch, so a crash never leaves half an op. Tree changes are Kleppmann moves
// with an undo/redo log; attributes are last-writer-wins registers; file content is a
// chain of versions. Meta does no I/O but through KvStore and never reads a clock: the
// caller passes wall time. Not thread-safe: the owner (Namespace) serializes all calls.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/ids.h"
#include "meta/ino_cache.h"
#include "store/kv.h"
#include "proto/wormhole.pb.h"

namespace wormhole {

// Bits of pb::SetAttr::mask.
enum AttrMask : uint32_t {
  kAttrMode = 1u << 0,
  kAttrUid = 1u << 1,
  kAttrGid = 1u << 2,
  kAttrAtime = 1u << 3,
  kAttrMtime = 1u << 4,
  kAttrCtime = 1u << 5,
};

// An id derived from another id and a purpose (or a name): SHA-256 of both, top bit of the
// pod half set so it never equals a pod-minted id. The same on every pod.
Gid derived_id(Gid from, std::string_view purpose);

// The name under which a second entry of one name shows (concurrent creates of one name on
// two pods, a rename over a file that a concurrent write kept): "stem.conflict-<tag>.ext",
// the tag from the entry id, the same on every pod. The entry with the smallest id keeps
// the name itself. Nothing is hidden, and no op is needed to decide it.
std::string duplicate_name(std::string_view name, Gid entry);
// The name a removed directory that still holds entries shows under in lost+found.
std::string lost_name(std::string_view name, Gid entry);
inline constexpr std::string_view kLostFoundName = "lost+found";
// The name and tag of a duplicate_name(); false if `shown` is not one.
bool parse_duplicate_name(std::string_view shown, std::string* name, std::string* tag);

// One visible directory entry.
struct DirItem {
  std::string name;
  Gid entry;
  Gid inode;
};

class Meta {
 public:
  // `in_use(inode)` tells whether a local handle still uses an inode, so that an unlinked
  // but open file is purged only once it is closed.
  Meta(KvStore& kv, uint64_t pod_id, std::function<bool(Gid)> in_use);

  // Creates the root and trash on an empty store, loads counters. False + *error on failure.
  bool init(uint64_t wall_ms, std::string* error);

  uint64_t pod_id() const { return pod_id_; }

  // Mints a new global id for an object created by this pod.
  Gid new_gid() { return Gid{pod_id_, ++gid_seq_}; }

  // Returns an empty local op stamped now: next HLC tick and next sequence number.
  pb::Op new_local_op(uint64_t wall_ms);

  // Applies `op` (local or remote) atomically. Ops already applied (same origin, seq not
  // newer) are ignored, so duplicates are harmless. With `sync`, durable on return.
  // On a failed write nothing changed (in the store and in memory). An op that is not
  // in_order is refused (not ok, nothing changed). Any content is safe to apply: actions
  // that break the tree's rules (see do_move) change nothing; but only ops that passed
  // validate_op (meta/op_validation.h) keep the namespace meaningful.
  KvStatus apply(const pb::Op& op, bool sync);
  // Whether `op` may be applied next (or is a duplicate): a non-zero origin, the next
  // sequence number of its origin, and a stamp after that origin's previous op. Else false
  // and *why.
  bool in_order(const pb::Op& op, std::string* why) const;

  // What the last apply() changed, for caches outside Meta (the kernel's names and
  // attributes, open files): every (directory, name) an entry left or arrived at — the
  // op's own moves, moves undone and redone around it, conflict siblings, voided deletes —,
  // every inode whose record changed, and every file whose current version changed.
  // Duplicates possible. Valid until the next apply().
  struct NameChange {
    Gid parent;
    std::string name;
    // Not empty: the name shown is duplicate_name(name, duplicate_of), computed by whoever
    // needs it (a hash per name; only remote ops' changes are read).
    Gid duplicate_of;
    std::string shown() const { return duplicate_of.empty() ? name : duplicate_name(name, duplicate_of); }
  };
  struct Changes {
    std::vector<NameChange> names;
    std::vector<Gid> inodes;
    std::vector<Gid> contents;
  };
  const Changes& last_changes() const { return changes_; }

  // Declares a pod of the network. Until a member's ops have been seen, nothing newer than
  // nothing can be trimmed: a late op from it could still come.
  void add_member(uint64_t pod);
  // How many pods the network has (from the configuration): the move log is not trimmed
  // before every one of them is known, since a late op could come from any.
  void set_expected_members(size_t count) { expected_members_ = count; }

  // Drops move-log entries no late op can precede any more, and purges trashed entries
  // whose delete is stable and older than `retention_ms` at `now_ms`, with their inodes
  // when nothing else names them (and no handle uses them). `stable`: per origin, the
  // stamp up to which every member has applied that origin's ops and this pod has every
  // op the members made before (Replicator::stable_stamps); on a pod alone, ignored
  // (everything is stable). See meta.cc for the rules. Returns the number of log entries
  // and trash entries removed; visits at most `max_entries` of each.
  size_t trim(size_t max_entries, const std::map<uint64_t, Hlc>& stable, uint64_t now_ms, uint64_t retention_ms);
  // The stamp of the newest op applied, per origin.
  std::map<uint64_t, Hlc> applied_stamps() const;

  // Drops op-log entries that every pod has: `everyone_has[origin]` = the highest
  // sequence of that origin that all members have applied.
  void trim_op_log(const std::map<uint64_t, uint64_t>& everyone_has, size_t max_entries);

  // Newest sequence applied per origin.
  std::map<uint64_t, uint64_t> applied() const;
  // Ops of `origin` with seq > after, in order, at most `limit` (from the op log).
  std::vector<pb::Op> ops_after(uint64_t origin, uint64_t after, size_t limit);

  // The replicated member list: pods recorded when they joined.
  std::vector<pb::Member> members();

  // What apply() keeps in memory beside the store (progress, clocks, counters, cursors).
  // Saved before writes that may still fail as a whole (a held batch, see BufferedKv) and
  // put back if they do, so memory and store agree again.
  struct MemoryState;
  MemoryState memory_state() const;
  void restore_memory_state(const MemoryState& state);

  // ---- snapshots (a new pod that lacks ops the others no longer keep) -------------------
  // Visits a consistent copy of the replicated state (everything but this pod's counters
  // and local bookkeeping), in key order, until `visit` returns false. False when the store
  // failed: what was visited is then not the whole state and must not be installed.
  bool snapshot(KvStore& kv, const std::function<bool(std::string_view key, std::string_view value)>& visit) const;
  // Replaces this pod's state by a snapshot read through `next`: it fills a batch of pairs
  // and returns 1, or returns 0 at the complete end, -1 when the copy was cut. Only for a
  // pod that applied no op yet. False + *error if the snapshot could not be read or
  // written: the pod is then empty again — or, if even that failed, every later apply
  // fails until a restart drops the half copy (its marker stays).
  using SnapshotBatch = std::vector<std::pair<std::string, std::string>>;
  bool install_snapshot(const std::function<int(SnapshotBatch*)>& next, uint64_t wall_ms, std::string* error);
  uint64_t local_seq() const { return local_seq_; }

  // Purges inode `g` if it is unreachable and no longer in use (called when a handle closes).
  void purge_if_unused(Gid g);

  // ---- reads ------------------------------------------------------------------------------
  // Reads that scan the store report a failed scan (KvStore::scan) as EIO or false, never
  // as "absent" or "empty".
  bool get_inode(Gid g, pb::InodeRecord* rec);
  bool get_version(Gid g, pb::VersionRecord* rec);
  // Also a version superseded lately (kept until the op that superseded it is stable).
  bool get_recent_version(Gid g, pb::VersionRecord* rec);
  bool get_entry(Gid g, pb::EntryRecord* rec);
  // Versions recorded incomplete (a delta over a base this pod lacked: reads of them are
  // EIO), at most `max`, with their records. Entries whose version is gone or whole
  // since are dropped from the index on the way.
  std::vector<std::pair<Gid, pb::VersionRecord>> incomplete_versions(size_t max);
  // Replaces the chunk list of incomplete version `g` with `whole` (its full list, from a
  // peer, already validated) if `g` is still incomplete and `size` matches its size. True
  // if it did; the file's content changed then (last_changes().contents).
  bool complete_version(Gid g, uint64_t size, const google::protobuf::RepeatedPtrField<pb::ChunkRef>& whole);
  bool gid_of_ino(uint64_t ino, Gid* g);
  // The visible entry `name` in directory `dir` (deterministic when several exist): 0 and
  // *item, ENOENT, or EIO when the store failed.
  int lookup(Gid dir, std::string_view name, DirItem* item);
  // All visible entries of `dir`, in name order: 0, or EIO (and no items).
  int list(Gid dir, std::vector<DirItem>* items);
  // Directories in the trash that still hold live entries (made there by ops that had not
  // seen the rmdir): what "lost+found" shows, each as "name.<tag>" (the tag from its id).
  // At most `limit`, of the first 10,000 removed directories. 0 or EIO.
  int lost_directories(size_t limit, std::vector<DirItem>* items);
  // Every entry of `dir`, duplicates of one name included (list() shows one per name).
  // False when the store failed part-way.
  bool for_each_entry_in(Gid dir, const std::function<void(std::string_view name, Gid entry, Gid inode)>& visit);
  // 0 when directory `dir` has no entry, ENOTEMPTY, or EIO when that cannot be read.
  int check_dir_empty(Gid dir);
  // The entries of `inode` that are not in the trash (at most `limit`), with their edges.
  // False when the store failed (*out is then incomplete).
  bool live_entries(Gid inode, std::vector<std::pair<Gid, pb::EntryRecord>>* out, size_t limit = 1024);
  // A live entry of `inode` (its directory and name); false if it has none or on a failed read.
  bool live_entry(Gid inode, Gid* parent, std::string* name);
  // Path of an inode (first entry found), for log lines; "?" parts when unknown.
  std::string path_of(Gid inode);
  // Is `ancestor` an ancestor of (or equal to) directory `dir`?
  bool is_ancestor(Gid ancestor, Gid dir);
  bool get_xattr(Gid inode, std::string_view name, std::string* value);
  // Names of the xattrs of `inode`; false when the store failed (*names incomplete).
  bool list_xattrs(Gid inode, std::vector<std::string>* names);
  // Number of records of one kind (a key prefix of meta/keys.h) in `kv`, for status.
  static size_t count_keys(KvStore& kv, std::string_view prefix);
  const Hlc& last_hlc() const { return clock_.last(); }

  std::vector<Gid> versions_held_by(uint64_t pod);
  // Visits current versions (each file's, conflict siblings' included) in id order, from
  // the first after `after` (empty: from the start), at most `max`; *next is the id to go
  // on after, or empty once the end was reached. False if the store failed part-way.
  bool scan_versions(Gid after, size_t max, const std::function<void(Gid, const pb::VersionRecord&)>& visit,
                     Gid* next);
  // How many holder claims and releases changed a version record so far (a trigger for
  // the repair worker: another pod's claim can make this pod's copy a surplus). Any thread.
  uint64_t hold_changes() const { return hold_changes_.load(std::memory_order_relaxed); }
  // Visits every inode record of `kv`; false when the store failed part-way.
  static bool for_each_inode(KvStore& kv, const std::function<void(Gid, const pb::InodeRecord&)>& visit);
  // Every chunk hash referenced by a stored version (for chunk garbage collection), with
  // whether this pod must keep it: it is a holder of the version, or its writer (a client
  // writer's copy feeds the holders' pulls), or the version names no holder (an old
  // record). The others are cache here. False when the store failed part-way: the hashes
  // visited are then not all the live ones. Reads `kv` (this Meta's store, or the store
  // under its buffer: Namespace scans that without its lock).
  bool for_each_chunk(KvStore& kv, const std::function<void(const std::string& sha256, bool held)>& visit) const;

 private:
  struct Edge {
    Gid parent;
    std::string name;
    Gid inode;
    // In the trash: where the entry was deleted from, and when (see pb::EntryRecord).
    Gid trashed_from{};
    Hlc trashed_at{};
  };
  struct Progress {
    uint64_t seq = 0;
    Hlc hlc;
  };

 public:
  struct MemoryState {
    HlcClock clock;
    uint64_t gid_seq = 0, next_ino = 0, local_seq = 0;
    Hlc newest_logged;
    std::map<uint64_t, Progress> progress;
    std::string trim_cursor, movelog_floor;
    std::map<uint64_t, uint64_t> op_log_trimmed;
    uint64_t saved_gid_seq = 0, saved_next_ino = 0;
  };

 private:
  bool read_inode(KvTxn& txn, Gid g, pb::InodeRecord* rec);
  void write_inode(KvTxn& txn, Gid g, const pb::InodeRecord& rec);
  bool read_edge(KvTxn& txn, Gid entry, Edge* edge);
  // Applies move `m` of an op (`seq`, `deps`: the op's sequence and dependencies).
  void do_move(KvTxn& txn, const Hlc& ts, uint32_t index, const pb::Move& m, uint64_t seq,
               const google::protobuf::Map<uint64_t, uint64_t>& deps);
  // Whether the current content of file `inode` voids the delete of `entry` by the op
  // (`origin`, `seq`, `deps`): the content's writer had the entry in view, and the delete
  // had not seen the content.
  bool content_voids_delete(KvTxn& txn, Gid inode, Gid entry, uint64_t origin, uint64_t seq,
                            const google::protobuf::Map<uint64_t, uint64_t>& deps);
  void undo_move(KvTxn& txn, const pb::MoveLogRecord& rec);
  // The edge of an entry moved into the trash from `from` (the trash remembers where it
  // was deleted from, and when; moved within the trash, the first delete's record stays).
  static Edge trash_edge(const Edge& from, const Hlc& ts);
  void set_edge(KvTxn& txn, Gid entry, const Edge* old_edge, const Edge* new_edge);
  bool would_cycle(KvTxn& txn, Gid entry, Gid new_parent);
  void create_inode(KvTxn& txn, Gid entry, const pb::NewInode& n, const Hlc& ts);
  pb::InodeRecord new_inode_record(KvTxn& txn, Gid g, pb::FileType type, uint32_t mode, uint32_t uid, uint32_t gid,
                                   int64_t time_ns, const Hlc& ts);
  void assign_local_ino(KvTxn& txn, Gid g, pb::InodeRecord* rec);
  // Gives a new local inode number to the inodes created again by this apply whose entry it
  // brought back into view (see create_inode).
  void renumber_reborn(KvTxn& txn);
  void apply_set_attr(KvTxn& txn, const Hlc& ts, const pb::SetAttr& a);
  void apply_set_xattr(KvTxn& txn, const Hlc& ts, const pb::SetXattr& x);
  void apply_commit(KvTxn& txn, const Hlc& ts, const pb::CommitVersion& c, const pb::Op& op);
  bool get_version_txn(KvTxn& txn, Gid g, pb::VersionRecord* rec);
  // The chunk list of delta commit `c` (CommitVersion.delta) over its base, current or
  // superseded. False when the base is not here (or its own list is unknown).
  bool resolve_delta(KvTxn& txn, const pb::CommitVersion& c, google::protobuf::RepeatedPtrField<pb::ChunkRef>* out);
  // Keeps a version that lost a conflict as a sibling file (see apply_commit).
  void keep_loser(KvTxn& txn, Gid version, pb::VersionRecord loser);
  void purge_inode(KvTxn& txn, Gid g);
  // The purge pass of trim() over the trash.
  size_t purge_trash(KvTxn& txn, size_t max_entries, const std::function<bool(const Hlc&)>& is_stable,
                     uint64_t now_ms, uint64_t retention_ms);
  void save_counters(KvTxn& txn);
  void apply_member(KvTxn& txn, const Hlc& ts, const pb::Member& m);
  // Adds the claiming pod to the version's holders, or removes the releasing one (each pod
  // changes only itself, in its own op order: claims and releases of different pods commute).
  void apply_hold(KvTxn& txn, const pb::HoldVersion& h);
  // Loads the in-memory state (progress, newest logged move) from the store; false when
  // the store could not be read.
  bool load_state();
  // Creates the root and the trash in an empty store.
  bool create_roots(uint64_t wall_ms, std::string* error);

  KvStore& kv_;
  InoCache ino_cache_;  // in front of the `ino` records
  uint64_t pod_id_;
  std::atomic<uint64_t> hold_changes_{0};
  std::function<bool(Gid)> in_use_;
  HlcClock clock_;
  bool half_installed_ = false;  // see install_snapshot: a failed install could not be undone
  uint64_t gid_seq_ = 0;  // last gid minted by this pod
  uint64_t next_ino_ = 2; // next FUSE inode number (1 is the root)
  uint64_t local_seq_ = 0;
  size_t expected_members_ = 1;
  // Stamp of the newest move-log entry: an op newer than it (the usual case) needs no
  // undo/redo, and no scan of the log.
  Hlc newest_logged_;
  std::map<uint64_t, Progress> progress_;  // per origin pod
  // Move-log key before which every entry is kept for good (see trim): where trim starts.
  std::string trim_cursor_;
  // Move-log key below which no entry exists (trim removed them all; an entry written below
  // lowers it): where a trim starts again when what is stable changes.
  std::string movelog_floor_;
  // Per origin: ops up to this sequence were removed from the op log (trim_op_log).
  std::map<uint64_t, uint64_t> op_log_trimmed_;
  // The counters as last written by save_counters (an op that changes neither skips it).
  uint64_t saved_gid_seq_ = UINT64_MAX, saved_next_ino_ = UINT64_MAX;
  std::map<uint64_t, Hlc> last_stable_;  // the stable stamps trim last saw
  std::string purge_cursor_;             // where the next look at the trash starts
  uint64_t purge_due_ms_ = 0;            // no trash entry can be purged before (wall ms)
  Changes changes_;  // of the last apply()
  // During one apply(): the entries whose edge it changed, each with whether it was in view
  // (named outside the trash) before the apply; and the inodes it created again (inode ->
  // entry). The undo and redo of moves around an op pass through states no one sees: only
  // the states before and after the apply tell whether an entry came back (see create_inode).
  std::map<Gid, bool> in_view_before_;
  std::map<Gid, Gid> reborn_;
};

}  // namespace wormhole
