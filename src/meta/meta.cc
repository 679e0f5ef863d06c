#include "meta/meta.h"

#include <algorithm>
#include <set>
#include <cassert>
#include <ctime>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "common/invariant.h"
#include "common/pb_ids.h"
#include "meta/keys.h"

namespace wormhole {

namespace {

// Keys that belong to this pod alone (counters, open-but-unlinked inodes): never in a
// snapshot, never replaced by one.
bool pod_local_key(std::string_view k) { return !k.empty() && (k[0] == 'S' || k[0] == 'R'); }

// Converts a dense chunk list (protocol 2 and stored records of that time: one entry per
// chunk span, holes as empty hashes) into the sparse form: stored chunks with their index.
void sparse_from_dense(const google::protobuf::RepeatedPtrField<pb::ChunkRef>& dense,
                       google::protobuf::RepeatedPtrField<pb::ChunkRef>* sparse) {
  uint64_t index = 0;
  for (const pb::ChunkRef& c : dense) {
    if (!c.sha256().empty()) {
      pb::ChunkRef* out = sparse->Add();
      *out = c;
      out->set_index(index);
    }
    ++index;
  }
}

// A version record as current code reads it, whatever the format it was stored in.
bool parse_version(std::string_view bytes, pb::VersionRecord* rec) {
  if (!rec->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  if (rec->dense_chunks_size() > 0 && rec->chunks_size() == 0) {
    sparse_from_dense(rec->dense_chunks(), rec->mutable_chunks());
    rec->clear_dense_chunks();
  }
  return true;
}

}  // namespace
namespace {

// Depth bound for ancestor walks: a path deeper than this is treated as a cycle. Linux
// paths are at most 4096 bytes, so no legitimate tree is anywhere near it.
constexpr int kMaxDepth = 1 << 16;

}  // namespace

Gid derived_id(Gid from, std::string_view purpose) {
  std::string key;
  keys::put_gid(key, from);
  key.append(purpose);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), md, &len, EVP_sha256(), nullptr);
  const std::string_view digest(reinterpret_cast<char*>(md), len);
  return Gid{keys::get_u64(digest, 0) | (1ULL << 63), keys::get_u64(digest, 8)};
}

std::string duplicate_name(std::string_view name, Gid entry) {
  // 12 hex digits of a hash of the entry id: the same on every pod, short enough to read.
  char tag[16];
  std::snprintf(tag, sizeof tag, "%012llx",
                static_cast<unsigned long long>(derived_id(entry, "duplicate").seq & 0xffffffffffffULL));
  std::string stem(name), ext;
  const size_t dot = stem.rfind('.');
  if (dot != std::string::npos && dot > 0) {
    ext = stem.substr(dot);
    stem.resize(dot);
  }
  const std::string middle = std::string(".conflict-") + tag;
  if (stem.size() + middle.size() + ext.size() > 255) {
    if (ext.size() > 64) ext.clear();  // keep the tag whatever happens
    stem.resize(255 - middle.size() - ext.size());
  }
  return stem + middle + ext;
}

std::string lost_name(std::string_view name, Gid entry) {
  char tag[16];
  std::snprintf(tag, sizeof tag, "%012llx",
                static_cast<unsigned long long>(derived_id(entry, "lost").seq & 0xffffffffffffULL));
  std::string out(name.substr(0, 255 - 13));
  return out + "." + tag;
}

bool parse_duplicate_name(std::string_view shown, std::string* name, std::string* tag) {
  for (size_t at = shown.rfind(".conflict-"); at != std::string_view::npos && at > 0;
       at = shown.rfind(".conflict-", at - 1)) {
    const size_t tag_at = at + 10;
    if (shown.size() < tag_at + 12) continue;
    const std::string_view t = shown.substr(tag_at, 12);
    if (t.find_first_not_of("0123456789abcdef") != std::string_view::npos) continue;
    const std::string_view rest = shown.substr(tag_at + 12);
    if (!rest.empty() && rest[0] != '.') continue;
    *name = std::string(shown.substr(0, at)) + std::string(rest);
    *tag = std::string(t);
    return true;
  }
  return false;
}

namespace {

// "report.conflict-b-20261127-181502.txt" for "report.txt" written on pod b.
std::string conflict_name(const pb::Conflict& how, int64_t mtime_ns) {
  std::string name = how.name().empty() ? std::string("unlinked") : how.name();
  std::string ext;
  const size_t dot = name.rfind('.');
  if (dot != std::string::npos && dot > 0) {
    ext = name.substr(dot);
    name.resize(dot);
  }
  const time_t secs = static_cast<time_t>(mtime_ns / 1000000000);
  struct tm tm = {};
  if (!gmtime_r(&secs, &tm)) tm = {};  // a time beyond the calendar: the epoch's date
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  std::string out = name + ".conflict-" + (how.writer().empty() ? "pod" : how.writer()) + "-" + stamp + ext;
  if (out.size() > 255) out = out.substr(out.size() - 255);  // keep the distinguishing end
  return out;
}

// Last-writer-wins: if `ts` is newer than the register's stamp, takes it and returns true.
bool lww(pb::Hlc* stamp, const Hlc& ts) {
  if (!(ts > from_pb(*stamp))) return false;
  to_pb(ts, stamp);
  return true;
}

std::string encode_progress(uint64_t seq, const Hlc& h) {
  std::string v;
  keys::put_u64(v, seq);
  keys::put_u64(v, h.wall_ms);
  keys::put_u64(v, h.counter);
  keys::put_u64(v, h.pod);
  return v;
}

}  // namespace

Meta::Meta(KvStore& kv, uint64_t pod_id, std::function<bool(Gid)> in_use)
    : kv_(kv), pod_id_(pod_id), in_use_(std::move(in_use)), clock_(pod_id) {
  assert(pod_id != 0 && "pod id 0 is reserved for well-known ids");
}

bool Meta::init(uint64_t wall_ms, std::string* error) {
  std::string v;
  if (kv_.get(keys::state("installing_snapshot"), &v)) {
    // A snapshot install was cut by a crash: drop the half copy, start as an empty pod (it
    // will ask for a snapshot again).
    KvBatch batch;
    const bool listed = kv_.scan("", "\xff", false, [&](std::string_view k, std::string_view) {
      if (!pod_local_key(k)) batch.emplace_back(std::string(k), std::nullopt);
      return true;
    });
    batch.emplace_back(keys::state("installing_snapshot"), std::nullopt);
    if (!listed || !kv_.write(batch, true).ok) {
      *error = "cannot drop a snapshot whose install was cut";
      return false;
    }
  }
  if (kv_.get(keys::state("gid_seq"), &v) && v.size() == 8) gid_seq_ = keys::get_u64(v, 0);
  if (kv_.get(keys::state("next_ino"), &v) && v.size() == 8) next_ino_ = keys::get_u64(v, 0);
  if (!load_state()) {
    *error = "cannot read the metadata store (progress or move log)";
    return false;
  }
  // Inodes that were unlinked while open when the previous daemon stopped: nobody can
  // use them any more.
  {
    KvTxn txn(kv_);
    std::vector<Gid> orphans;
    const bool ok =
        kv_.scan(keys::kOrphanPrefix, prefix_end(keys::kOrphanPrefix), false, [&](std::string_view k, std::string_view) {
          if (k.size() == 17) orphans.push_back(keys::get_gid(k, 1));
          return true;
        });
    if (!ok) {
      *error = "cannot read the metadata store (orphan list)";
      return false;
    }
    for (Gid g : orphans) purge_inode(txn, g);
    txn.commit(false);
  }
  if (!kv_.get(keys::inode(kRootId), &v)) return create_roots(wall_ms, error);
  if (!kv_.get(keys::inode(kLostFoundId), &v)) {  // a store made before lost+found existed
    KvTxn txn(kv_);
    pb::InodeRecord lf;
    lf.set_type(pb::DIRECTORY);
    lf.set_mode(0755);
    const int64_t now_ns = static_cast<int64_t>(wall_ms) * 1000000;
    lf.set_atime_ns(now_ns);
    lf.set_mtime_ns(now_ns);
    lf.set_ctime_ns(now_ns);
    lf.set_nlink(2);
    assign_local_ino(txn, kLostFoundId, &lf);
    write_inode(txn, kLostFoundId, lf);
    save_counters(txn);
    if (!txn.commit(true).ok) {
      *error = "cannot initialise metadata (lost+found)";
      return false;
    }
  }
  return true;
}

bool Meta::load_state() {
  progress_.clear();
  const bool progress_ok = kv_.scan(keys::kProgressPrefix, prefix_end(keys::kProgressPrefix), false,
           [&](std::string_view k, std::string_view val) {
             if (k.size() != 9 || val.size() != 32) return true;
             Progress p;
             p.seq = keys::get_u64(val, 0);
             p.hlc = Hlc{keys::get_u64(val, 8), static_cast<uint32_t>(keys::get_u64(val, 16)),
                         keys::get_u64(val, 24)};
             progress_[keys::get_u64(k, 1)] = p;
             clock_.observe(p.hlc);
             return true;
           });
  local_seq_ = progress_[pod_id_].seq;
  newest_logged_ = Hlc{};
  const bool log_ok =
      kv_.scan(keys::kMoveLogPrefix, prefix_end(keys::kMoveLogPrefix), true, [&](std::string_view k, std::string_view) {
        uint32_t index = 0;
        keys::parse_movelog(k, &newest_logged_, &index);
        return false;
      });
  trim_cursor_.clear();
  movelog_floor_.clear();
  op_log_trimmed_.clear();
  return progress_ok && log_ok;
}

bool Meta::create_roots(uint64_t wall_ms, std::string* error) {
  KvTxn txn(kv_);
  for (Gid g : {kRootId, kTrashId, kLostFoundId}) {
    pb::InodeRecord root;
    root.set_type(pb::DIRECTORY);
    root.set_mode(0755);
    int64_t now_ns = static_cast<int64_t>(wall_ms) * 1000000;
    root.set_atime_ns(now_ns);
    root.set_mtime_ns(now_ns);
    root.set_ctime_ns(now_ns);
    root.set_nlink(2);
    root.set_local_ino(g == kRootId ? 1 : 0);
    if (g == kLostFoundId) assign_local_ino(txn, g, &root);
    write_inode(txn, g, root);
  }
  std::string gid;
  keys::put_gid(gid, kRootId);
  txn.put(keys::ino(1), gid);
  save_counters(txn);
  KvStatus st = txn.commit(true);
  if (!st.ok) {
    *error = "cannot initialise metadata: " + st.message;
    return false;
  }
  return true;
}


bool Meta::snapshot(KvStore& kv, const std::function<bool(std::string_view, std::string_view)>& visit) const {
  // One scan is one store iterator: a consistent view even while ops are applied.
  return kv.scan("", "\xff", false, [&](std::string_view k, std::string_view v) { return pod_local_key(k) || visit(k, v); });
}

bool Meta::install_snapshot(const std::function<int(SnapshotBatch*)>& next, uint64_t wall_ms, std::string* error) {
  for (auto& [pod, p] : progress_)
    if (p.seq != 0) {
      *error = "this pod has applied ops already; a snapshot only starts an empty pod";
      return false;
    }
  constexpr size_t kBatchKeys = 4096;  // bounds the memory of one write
  auto wipe = [&] {
    ino_cache_.clear();  // inode numbers become those of the snapshot
    KvBatch batch;
    const bool listed = kv_.scan("", "\xff", false, [&](std::string_view k, std::string_view) {
      if (!pod_local_key(k)) batch.emplace_back(std::string(k), std::nullopt);
      return true;
    });
    if (!listed) return false;
    for (size_t i = 0; i < batch.size(); i += kBatchKeys) {
      KvBatch part(batch.begin() + static_cast<ptrdiff_t>(i),
                   batch.begin() + static_cast<ptrdiff_t>(std::min(batch.size(), i + kBatchKeys)));
      if (!kv_.write(part, false).ok) return false;
    }
    return true;
  };
  // A snapshot is installed in many writes: a marker, durable before the first and
  // removed (durably) after the last, tells init() that an install was cut by a crash, so
  // that the pod starts empty again instead of with half a copy (whose progress records
  // would claim ops it lacks).
  const std::string marker = keys::state("installing_snapshot");
  if (!kv_.write(KvBatch{{marker, std::string("1")}}, true).ok) {
    *error = "cannot write to the metadata store";
    return false;
  }
  bool ok = wipe();
  SnapshotBatch pairs;
  for (int more = ok ? next(&pairs) : 0; ok && more != 0; more = next(&pairs)) {
    if (more < 0) {
      *error = "the snapshot was cut";
      ok = false;
      break;
    }
    KvBatch batch;
    for (auto& [k, v] : pairs)
      if (!pod_local_key(k)) batch.emplace_back(std::move(k), std::move(v));
    pairs.clear();
    KvStatus st = kv_.write(batch, false);
    if (!st.ok) {
      *error = "writing the snapshot: " + st.message;
      ok = false;
    }
  }
  std::string root;
  if (ok && !kv_.get(keys::inode(kRootId), &root)) {
    *error = "the snapshot has no root";
    ok = false;
  }
  // This pod's inode numbers are those of the snapshot: continue after the highest.
  if (ok && !kv_.scan(std::string("N"), prefix_end("N"), true, [&](std::string_view k, std::string_view) {
        if (k.size() == 9) next_ino_ = std::max(next_ino_, keys::get_u64(k, 1) + 1);
        return false;
      })) {
    *error = "cannot read the installed snapshot";
    ok = false;
  }
  if (!ok) {
    if (error->empty()) *error = "the snapshot could not be read";
    // Back to an empty pod; the marker goes only once that is durable. Otherwise it stays
    // (the next start drops the half copy) and this process applies nothing more: its
    // progress in memory is still empty (nothing of the half copy is claimed to peers),
    // and ops of its own written over the half copy would be dropped with it at the next
    // start (numbered again from 1: peers would take them for ones they have).
    std::string reset_error;
    const bool reset = wipe() && create_roots(wall_ms, &reset_error) &&
                       kv_.write(KvBatch{{marker, std::nullopt}}, true).ok && load_state();
    if (!reset) {
      half_installed_ = true;
      *error += "; and the half copy could not be removed (" +
                (reset_error.empty() ? std::string("the metadata store failed") : reset_error) +
                "): this pod applies nothing until it is started again";
    }
    return false;
  }
  ino_cache_.clear();  // nothing read during the install stays
  KvTxn txn(kv_);
  save_counters(txn);
  txn.del(marker);
  if (!txn.commit(true).ok) {  // synced: everything written before it is durable too
    *error = "saving counters";
    return false;
  }
  if (!load_state()) {
    *error = "cannot read the installed snapshot";
    return false;
  }
  return true;
}

pb::Op Meta::new_local_op(uint64_t wall_ms) {
  pb::Op op;
  to_pb(clock_.tick(wall_ms), op.mutable_hlc());
  op.set_origin(pod_id_);
  op.set_seq(local_seq_ + 1);
  for (auto& [pod, p] : progress_)
    if (pod != pod_id_ && p.seq > 0) (*op.mutable_deps())[pod] = p.seq;
  return op;
}

void Meta::add_member(uint64_t pod) { progress_.try_emplace(pod); }

std::map<uint64_t, Hlc> Meta::applied_stamps() const {
  std::map<uint64_t, Hlc> out;
  for (auto& [pod, p] : progress_) out[pod] = p.hlc;
  return out;
}

std::map<uint64_t, uint64_t> Meta::applied() const {
  std::map<uint64_t, uint64_t> out;
  for (auto& [pod, p] : progress_) out[pod] = p.seq;
  return out;
}

std::vector<pb::Op> Meta::ops_after(uint64_t origin, uint64_t after, size_t limit) {
  std::vector<pb::Op> ops;
  if (limit == 0) return ops;
  const std::string start = keys::oplog(origin, after + 1);
  const std::string prefix = keys::oplog(origin, 0).substr(0, 9);
  // A failed scan leaves a shorter run of consecutive ops: still a correct answer, and the
  // asker asks again for the rest.
  (void)kv_.scan(start, prefix_end(prefix), false, [&](std::string_view, std::string_view v) {
    pb::Op op;
    if (!op.ParseFromArray(v.data(), static_cast<int>(v.size()))) return true;
    if (op.seq() != after + ops.size() + 1) return false;  // trimmed: a gap, stop
    ops.push_back(std::move(op));
    return ops.size() < limit;
  });
  return ops;
}

void Meta::trim_op_log(const std::map<uint64_t, uint64_t>& everyone_has, size_t max_entries) {
  KvTxn txn(kv_);
  size_t removed = 0;
  std::map<uint64_t, uint64_t> trimmed = op_log_trimmed_;
  for (auto& [origin, seq] : everyone_has) {
    // Ops up to op_log_trimmed_[origin] are gone already: the scan starts after them, not
    // over their tombstones (which stay until compaction).
    uint64_t& done = trimmed[origin];
    if (seq <= done) continue;
    // Every key visited is one to drop, so a scan that fails part-way drops less: harmless.
    const bool ok = kv_.scan(keys::oplog(origin, done + 1), keys::oplog(origin, seq + 1), false,
                             [&](std::string_view k, std::string_view) {
                               txn.del(std::string(k));
                               done = keys::get_u64(k, 9);
                               return ++removed < max_entries;
                             });
    if (removed >= max_entries) break;
    if (ok) done = seq;  // scanned to the end: nothing of this origin up to seq is left
  }
  // An origin is at most a member: this map stays as small as the progress map.
  if (txn.commit(false).ok) op_log_trimmed_ = std::move(trimmed);
}

void Meta::apply_member(KvTxn& txn, const Hlc& ts, const pb::Member& m) {
  if (m.pod_id() == 0) return;
  pb::MemberRecord rec;
  std::string v;
  const bool known = txn.get(keys::member(m.pod_id()), &v) && rec.ParseFromString(v);
  const pb::Member before = rec.member();
  pb::Member merged = before;
  if (!known || ts > from_pb(rec.hlc())) {  // the description: last writer wins
    merged = m;
    to_pb(ts, rec.mutable_hlc());
  }
  // Forgotten is final whatever the order (a pod recording itself concurrently must not
  // bring it back): an "or" of all ops. What justified it — the authorization and the
  // origin of the newest forget op — stays with the record, so a later op that is not a
  // forget (the pod recording itself, a join applied before the forget) cannot drop it.
  const bool newest_forget = m.forgotten() && (!rec.has_forget_hlc() || ts > from_pb(rec.forget_hlc()));
  if (newest_forget) to_pb(ts, rec.mutable_forget_hlc());
  if (m.forgotten() || (known && before.forgotten())) {
    merged.set_forgotten(true);
    *merged.mutable_authorization() = newest_forget ? m.authorization() : before.authorization();
    merged.set_forgotten_by(newest_forget ? ts.pod : before.forgotten_by());
  } else {
    merged.set_forgotten_by(0);  // never taken from an op
  }
  *rec.mutable_member() = std::move(merged);
  txn.put(keys::member(m.pod_id()), rec.SerializeAsString());
}

std::vector<pb::Member> Meta::members() {
  std::vector<pb::Member> out;
  // Members are only ever added, and this list is read again every second: a failed read
  // (logged by the store) misses some for one round.
  (void)kv_.scan(keys::kMemberPrefix, prefix_end(keys::kMemberPrefix), false, [&](std::string_view, std::string_view v) {
    pb::MemberRecord rec;
    if (rec.ParseFromArray(v.data(), static_cast<int>(v.size()))) out.push_back(rec.member());
    return true;
  });
  return out;
}

void Meta::save_counters(KvTxn& txn) {
  // Counted as saved now: a failed commit leaves them unsaved but no lower than on disk, so
  // the next op that changes them writes them (higher) again.
  saved_gid_seq_ = gid_seq_;
  saved_next_ino_ = next_ino_;
  std::string v;
  keys::put_u64(v, gid_seq_);
  txn.put(keys::state("gid_seq"), v);
  v.clear();
  keys::put_u64(v, next_ino_);
  txn.put(keys::state("next_ino"), v);
}

bool Meta::read_inode(KvTxn& txn, Gid g, pb::InodeRecord* rec) {
  std::string v;
  return txn.get(keys::inode(g), &v) && rec->ParseFromString(v);
}

void Meta::write_inode(KvTxn& txn, Gid g, const pb::InodeRecord& rec) {
  txn.put(keys::inode(g), rec.SerializeAsString());
  changes_.inodes.push_back(g);
}

bool Meta::read_edge(KvTxn& txn, Gid entry, Edge* edge) {
  std::string v;
  pb::EntryRecord rec;
  if (!txn.get(keys::entry(entry), &v) || !rec.ParseFromString(v)) return false;
  edge->parent = from_pb(rec.parent());
  edge->name = rec.name();
  edge->inode = from_pb(rec.inode());
  edge->trashed_from = from_pb(rec.trashed_from());
  edge->trashed_at = from_pb(rec.trashed_at());
  return true;
}

Meta::Edge Meta::trash_edge(const Edge& from, const Hlc& ts) {
  if (from.parent == kTrashId) return from;
  return Edge{kTrashId, from.name, from.inode, from.parent, ts};
}

bool Meta::in_order(const pb::Op& op, std::string* why) const {
  if (op.origin() == 0) {
    *why = "origin 0";
    return false;
  }
  auto it = progress_.find(op.origin());
  const Progress prog = it == progress_.end() ? Progress{} : it->second;
  if (op.seq() <= prog.seq) return true;  // a duplicate: apply ignores it
  // Ops of one origin are applied in sequence order; the network layer holds back gaps.
  if (op.seq() != prog.seq + 1) {
    *why = "op " + std::to_string(op.seq()) + " of pod " + Gid{op.origin(), 0}.str() + " after op " +
           std::to_string(prog.seq);
    return false;
  }
  // Stamps of one origin grow: trim relies on it (no late op precedes the newest applied
  // from every pod), and so does the order of the move log.
  if (prog.seq > 0 && !(from_pb(op.hlc()) > prog.hlc)) {
    *why = "op " + std::to_string(op.seq()) + " stamped " + from_pb(op.hlc()).str() + ", not after its origin's previous op (" +
           prog.hlc.str() + ")";
    return false;
  }
  return true;
}

KvStatus Meta::apply(const pb::Op& op, bool sync) {
  changes_ = Changes{};
  in_view_before_.clear();
  reborn_.clear();
  if (half_installed_) return KvStatus{false, false, "a snapshot install could not be undone: start the pod again"};
  std::string why;
  if (!in_order(op, &why)) return KvStatus{false, false, "refused: " + why};
  const uint64_t origin = op.origin();
  auto& prog = progress_[origin];
  if (op.seq() <= prog.seq) return {};  // duplicate: already applied

  // Snapshot the in-memory state so that a failed write leaves nothing changed.
  const Progress saved_prog = prog;
  const Hlc saved_newest_logged = newest_logged_;
  const uint64_t saved_ino = next_ino_, saved_local_seq = local_seq_;
  const Hlc op_ts = from_pb(op.hlc());
  const HlcClock saved_clock = clock_;
  clock_.observe(op_ts);

  auto restore = [&] {
    prog = saved_prog;
    next_ino_ = saved_ino;
    local_seq_ = saved_local_seq;
    clock_ = saved_clock;
    newest_logged_ = saved_newest_logged;
  };
  // The undo/redo below must see every logged move it concerns: applying an op around a
  // log read in part would give this pod another tree than every other pod's. So a failed
  // read fails the op, which changes nothing, like a failed write.
  bool read_ok = true;

  KvTxn txn(kv_);
  // Kleppmann: undo every logged move newer than this op (newest first), apply the op,
  // then redo the undone moves oldest first, each recomputing its old edge and cycle check.
  // Undone, newest first: every logged move newer than this op; and, for a new version of a
  // file that has logged deletes, the moves of that file's entries from its oldest logged
  // delete on, so that redo decides those deletes again with the new content (a delete
  // that did not see the file's current content is void: see do_move). A file's entry
  // never is an ancestor of anything, so no other move depends on where it is: its own
  // moves are all that must be redone. Only for an op without moves (as commits are made),
  // so that the redone moves stay in timestamp order around the op.
  std::map<std::string, pb::MoveLogRecord, std::greater<>> undo;
  auto parse = [](std::string_view v, pb::MoveLogRecord* rec) {
    return rec->ParseFromArray(v.data(), static_cast<int>(v.size()));
  };
  if (!(op_ts > newest_logged_)) {
    read_ok &= kv_.scan(keys::movelog(op_ts, 0), prefix_end(keys::kMoveLogPrefix), true,
             [&](std::string_view k, std::string_view v) {
               pb::MoveLogRecord rec;
               if (parse(v, &rec)) undo.emplace(std::string(k), std::move(rec));
               return true;
             });
  }
  const bool has_move =
      std::any_of(op.actions().begin(), op.actions().end(), [](const pb::Action& a) { return a.has_move(); });
  std::set<Gid> redecided;  // files whose deletes are decided again
  std::string oldest_delete;
  for (const pb::Action& a : op.actions()) {
    if (!a.has_commit() || has_move) continue;
    const std::string prefix = keys::trash_move_prefix(from_pb(a.commit().inode()));
    read_ok &= kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view) {
      const std::string logged = std::string(keys::kMoveLogPrefix) + std::string(k.substr(prefix.size()));
      if (oldest_delete.empty() || logged < oldest_delete) oldest_delete = logged;
      redecided.insert(from_pb(a.commit().inode()));
      return false;  // the first is the oldest
    });
  }
  if (read_ok && !redecided.empty()) {
    read_ok &= kv_.scan(oldest_delete, prefix_end(keys::kMoveLogPrefix), false, [&](std::string_view k, std::string_view v) {
      pb::MoveLogRecord rec;
      if (parse(v, &rec) && redecided.count(from_pb(rec.move().inode()))) undo.emplace(std::string(k), std::move(rec));
      return true;
    });
  }
  if (!read_ok) {
    restore();
    return KvStatus{false, false, "reading the move log failed"};
  }
  std::vector<std::pair<std::string, pb::MoveLogRecord>> undone(undo.begin(), undo.end());
  for (auto& [key, rec] : undone) undo_move(txn, rec);

  for (int i = 0; i < op.actions_size(); ++i) {
    const pb::Action& a = op.actions(i);
    const uint32_t index = static_cast<uint32_t>(i);
    // Actions of one op share its stamp; the move log orders them by (stamp, index).
    const Hlc& ts = op_ts;
    switch (a.kind_case()) {
      case pb::Action::kMove:
        do_move(txn, ts, index, a.move(), op.seq(), op.deps());
        if (ts > newest_logged_) newest_logged_ = ts;
        break;
      case pb::Action::kSetAttr: apply_set_attr(txn, ts, a.set_attr()); break;
      case pb::Action::kSetXattr: apply_set_xattr(txn, ts, a.set_xattr()); break;
      case pb::Action::kCommit: apply_commit(txn, ts, a.commit(), op); break;
      case pb::Action::kMember: apply_member(txn, ts, a.member()); break;
      case pb::Action::kHold: apply_hold(txn, a.hold()); break;
      case pb::Action::KIND_NOT_SET: break;
    }
  }

  for (auto it = undone.rbegin(); it != undone.rend(); ++it) {
    Hlc ts;
    uint32_t index = 0;
    keys::parse_movelog(it->first, &ts, &index);
    do_move(txn, ts, index, it->second.move(), it->second.op_seq(), it->second.op_deps());
  }
  renumber_reborn(txn);
  in_view_before_.clear();
  reborn_.clear();

  prog.seq = op.seq();
  if (op_ts > prog.hlc) prog.hlc = op_ts;
  txn.put(keys::progress(origin), encode_progress(prog.seq, prog.hlc));
  txn.put(keys::oplog(origin, op.seq()), op.SerializeAsString());
  if (origin == pod_id_) local_seq_ = op.seq();
  // Most remote ops mint no id and make no inode: their counters are not written again.
  const bool counters_changed = gid_seq_ != saved_gid_seq_ || next_ino_ != saved_next_ino_;
  if (counters_changed) save_counters(txn);
  KvStatus st = txn.commit(sync);
  if (!st.ok) {
    restore();
    saved_gid_seq_ = saved_next_ino_ = UINT64_MAX;  // not on disk: the next op writes them
  }
  return st;
}

// A new inode record: every attribute stamped `ts`, and a new local inode number.
pb::InodeRecord Meta::new_inode_record(KvTxn& txn, Gid g, pb::FileType type, uint32_t mode, uint32_t uid, uint32_t gid,
                                       int64_t time_ns, const Hlc& ts) {
  pb::InodeRecord rec;
  rec.set_type(type);
  rec.set_mode(mode & 07777);
  rec.set_uid(uid);
  rec.set_gid(gid);
  rec.set_atime_ns(time_ns);
  rec.set_mtime_ns(time_ns);
  rec.set_ctime_ns(time_ns);
  rec.set_nlink(0);
  for (pb::Hlc* h : {rec.mutable_mode_hlc(), rec.mutable_uid_hlc(), rec.mutable_gid_hlc(), rec.mutable_atime_hlc(),
                     rec.mutable_mtime_hlc(), rec.mutable_ctime_hlc(), rec.mutable_content_hlc()})
    to_pb(ts, h);
  assign_local_ino(txn, g, &rec);
  return rec;
}

void Meta::renumber_reborn(KvTxn& txn) {
  for (auto& [g, entry] : reborn_) {
    Edge e;
    pb::InodeRecord rec;
    if (!read_edge(txn, entry, &e) || e.parent == kTrashId || !read_inode(txn, g, &rec)) continue;
    assign_local_ino(txn, g, &rec);
    txn.del(keys::orphan(g));
    write_inode(txn, g, rec);
  }
}

// Gives `rec` (inode `g`) a new FUSE inode number, forgetting its previous one.
void Meta::assign_local_ino(KvTxn& txn, Gid g, pb::InodeRecord* rec) {
  if (rec->local_ino() != 0) {
    ino_cache_.forget(rec->local_ino());
    txn.del(keys::ino(rec->local_ino()));
  }
  rec->set_local_ino(next_ino_);
  std::string gid;
  keys::put_gid(gid, g);
  txn.put(keys::ino(next_ino_), gid);
  next_ino_++;
}

void Meta::create_inode(KvTxn& txn, Gid entry, const pb::NewInode& n, const Hlc& ts) {
  const Gid g = from_pb(n.inode());
  pb::InodeRecord rec;
  if (read_inode(txn, g, &rec)) {
    // Created again: a directory made on two pods at once (one id per path, so they merge),
    // or made again where it was removed. Its attributes are last-writer-wins registers.
    if (lww(rec.mutable_mode_hlc(), ts)) rec.set_mode(n.mode() & 07777);
    if (lww(rec.mutable_uid_hlc(), ts)) rec.set_uid(n.uid());
    if (lww(rec.mutable_gid_hlc(), ts)) rec.set_gid(n.gid());
    if (lww(rec.mutable_atime_hlc(), ts)) rec.set_atime_ns(n.time_ns());
    if (lww(rec.mutable_mtime_hlc(), ts)) rec.set_mtime_ns(n.time_ns());
    if (lww(rec.mutable_ctime_hlc(), ts)) rec.set_ctime_ns(n.time_ns());
    lww(rec.mutable_content_hlc(), ts);  // the newest creation, whatever the arrival order
    // Back from the trash (or made again after its entry was purged): a new local inode
    // number, since the kernel may still hold the old one as deleted — decided once the op
    // is applied (renumber_reborn), against the entry's state before it. A create redone
    // after the undo that took its entry away (a remote op older than it arrived) is no
    // rebirth: renumbering it made every handle, cached dentry and pending kernel
    // notification of a live file point at a number that no longer existed (ENOENT on
    // getattr and ftruncate of an open file, and kernel caches never invalidated again).
    auto before = in_view_before_.find(entry);
    Edge e;
    const bool in_view = before != in_view_before_.end() ? before->second
                                                         : read_edge(txn, entry, &e) && e.parent != kTrashId;
    if (!in_view) reborn_.emplace(g, entry);
    write_inode(txn, g, rec);
    return;
  }
  rec = new_inode_record(txn, g, n.type(), n.mode(), n.uid(), n.gid(), n.time_ns(), ts);
  rec.set_symlink_target(n.symlink_target());
  rec.set_size(n.type() == pb::SYMLINK ? n.symlink_target().size() : 0);
  const bool device = n.type() == pb::CHAR_DEVICE || n.type() == pb::BLOCK_DEVICE;
  rec.set_rdev(device ? n.rdev() : 0);  // what a remote op says of another type is ignored
  write_inode(txn, g, rec);
}

bool Meta::would_cycle(KvTxn& txn, Gid entry, Gid new_parent) {
  Gid p = new_parent;
  for (int depth = 0; depth < kMaxDepth; ++depth) {
    if (p == entry) return true;
    if (p == kRootId || p == kTrashId) return false;
    Edge e;
    if (!read_edge(txn, p, &e)) {
      // A removed directory whose entry was purged (its record stays, see purge_trash) is
      // where a pod that has not purged it yet has it: in the trash, which ends the walk
      // there too. (The long simulation found the divergence of refusing it.) Unknown: refuse.
      pb::InodeRecord rec;
      return !read_inode(txn, p, &rec);
    }
    p = e.parent;
  }
  return true;
}

bool Meta::content_voids_delete(KvTxn& txn, Gid inode, Gid entry, uint64_t origin, uint64_t seq,
                                const google::protobuf::Map<uint64_t, uint64_t>& deps) {
  pb::InodeRecord rec;
  pb::VersionRecord v;
  if (seq == 0 || !read_inode(txn, inode, &rec) || !rec.has_version() ||
      !get_version_txn(txn, from_pb(rec.version()), &v) || v.op_seq() == 0)
    return false;
  // The writer did not have this entry in view: it wrote through another name (a hard
  // link) or through the handle of a file it had deleted (unlink, write, close).
  bool in_view = false;
  for (const pb::Gid& e : v.live_entries()) in_view |= from_pb(e) == entry;
  if (!in_view) return false;
  // In view and not seen by the delete: written concurrently with it, or after it where
  // the delete was void already. Seen by the delete: the delete stands.
  const uint64_t writer = v.hlc().pod();
  if (writer == origin) return v.op_seq() > seq;
  auto it = deps.find(writer);
  return (it == deps.end() ? 0 : it->second) < v.op_seq();
}

void Meta::do_move(KvTxn& txn, const Hlc& ts, uint32_t index, const pb::Move& m, uint64_t seq,
                   const google::protobuf::Map<uint64_t, uint64_t>& deps) {
  const Gid entry = from_pb(m.entry());
  const Gid parent = from_pb(m.parent());
  if (m.has_new_inode()) create_inode(txn, entry, m.new_inode(), ts);

  pb::MoveLogRecord log;
  *log.mutable_move() = m;
  Edge old;
  const bool had_old = read_edge(txn, entry, &old);
  if (had_old) {
    log.set_had_old(true);
    to_pb(old.parent, log.mutable_old()->mutable_parent());
    log.mutable_old()->set_name(old.name);
    to_pb(old.inode, log.mutable_old()->mutable_inode());
    if (old.parent == kTrashId) {  // undo puts it back into the trash as it was
      to_pb(old.trashed_from, log.mutable_old()->mutable_trashed_from());
      to_pb(old.trashed_at, log.mutable_old()->mutable_trashed_at());
    }
  }
  pb::InodeRecord parent_rec;
  const bool parent_is_dir =
      parent == kTrashId || (read_inode(txn, parent, &parent_rec) && parent_rec.type() == pb::DIRECTORY);
  // Only a directory can be an ancestor: a file's entry differs from its inode id, and
  // moving it can never make a cycle, so the ancestor walk is skipped.
  const bool is_dir_entry = entry == from_pb(m.inode());
  // That holds only if every directory is its own entry and only directories are: an entry
  // of another id pointing at a directory (a hard link to it) would escape the cycle
  // check. A peer's op may claim anything, so a move that breaks the rule changes
  // nothing, as one that would make a cycle. So does a move of the root or the trash
  // (where the ancestor walks stop), and one naming an inode this pod does not know
  // (causal delivery brings every inode an honest op names before the op).
  pb::InodeRecord target;
  const bool target_known = read_inode(txn, from_pb(m.inode()), &target);
  const bool well_formed = target_known && (target.type() == pb::DIRECTORY) == is_dir_entry &&
                           entry.pod != 0 && from_pb(m.inode()).pod != 0 && entry != parent;
  const std::string log_key = keys::movelog(ts, index);
  if (log_key < movelog_floor_) movelog_floor_ = log_key;  // a late op's entry: trim must see it
  // A delete (a file's entry into the trash) made without having seen the file's current
  // content is void: a modification concurrent with a delete keeps the file (DESIGN §4).
  // Decided again whenever the content changes (see apply), so every pod agrees.
  bool void_delete = false;
  if (parent == kTrashId) {
    // Kept whatever the state now: a redo decides again, in another state.
    log.set_op_seq(seq);  // trim keeps a delete until it is stable
    *log.mutable_op_deps() = deps;
    if (!is_dir_entry && well_formed) txn.put(keys::trash_move(from_pb(m.inode()), log_key), "");
    if (!is_dir_entry && well_formed && had_old && old.parent != kTrashId) {
      void_delete = content_voids_delete(txn, from_pb(m.inode()), entry, ts.pod, seq, deps);
    }
  }
  if (well_formed && parent_is_dir && !void_delete && !(is_dir_entry && would_cycle(txn, entry, parent))) {
    Edge next{parent, m.name(), from_pb(m.inode())};
    if (parent == kTrashId && had_old) {
      next = trash_edge(old, ts);
      next.name = m.name();
    } else if (parent == kTrashId) {
      next.trashed_at = ts;  // a new entry made in the trash: nowhere to restore it but the root
    }
    set_edge(txn, entry, had_old ? &old : nullptr, &next);
  }
  txn.put(log_key, log.SerializeAsString());
}

void Meta::undo_move(KvTxn& txn, const pb::MoveLogRecord& rec) {
  const Gid entry = from_pb(rec.move().entry());
  Edge cur;
  const bool has_cur = read_edge(txn, entry, &cur);
  Edge old;
  if (rec.had_old())
    old = Edge{from_pb(rec.old().parent()), rec.old().name(), from_pb(rec.old().inode()),
               from_pb(rec.old().trashed_from()), from_pb(rec.old().trashed_at())};
  set_edge(txn, entry, has_cur ? &cur : nullptr, rec.had_old() ? &old : nullptr);
}

// Replaces the edge of `entry` and keeps the derived state (directory index, nlink) in
// step. It changes nothing that undo would not change back: times are not touched here
// (the op that makes a move carries last-writer-wins time updates as separate actions).
void Meta::set_edge(KvTxn& txn, Gid entry, const Edge* old_edge, const Edge* new_edge) {
  // nlink is derived state (live entries; 2 + subdirectories for a directory), and every
  // change of an edge passes here: taking away more links than an inode has means that
  // derivation is broken. That is asserted (fatal in tests and the simulation, where the
  // op sequence that broke it can be replayed); a production pod logs it and stops at 0
  // rather than wrap around to 4 billion links.
  auto links = [](uint32_t nlink, int sign, uint32_t step, Gid inode) -> uint32_t {
    if (sign > 0) return nlink + step;
    if (!WH_INVARIANT(nlink >= step, "nlink of " + inode.str() + " would go below 0")) return 0;
    return nlink - step;
  };
  auto adjust = [&](const Edge& e, int sign) {
    if (e.parent == kTrashId) return;  // entries in the trash are not links
    pb::InodeRecord rec;
    if (!read_inode(txn, e.inode, &rec)) return;
    const bool is_dir = rec.type() == pb::DIRECTORY;
    rec.set_nlink(links(rec.nlink(), sign, is_dir ? 2 : 1, e.inode));
    write_inode(txn, e.inode, rec);
    pb::InodeRecord parent;
    if (is_dir && read_inode(txn, e.parent, &parent)) {
      parent.set_nlink(links(parent.nlink(), sign, 1, e.parent));
      write_inode(txn, e.parent, parent);
    }
  };
  in_view_before_.try_emplace(entry, old_edge && old_edge->parent != kTrashId);
  // The name, and the name it shows under when it is a duplicate (see duplicate_name).
  if (old_edge) changes_.names.push_back({old_edge->parent, old_edge->name, Gid{}});
  if (old_edge) changes_.names.push_back({old_edge->parent, old_edge->name, entry});
  if (new_edge) changes_.names.push_back({new_edge->parent, new_edge->name, Gid{}});
  if (new_edge) changes_.names.push_back({new_edge->parent, new_edge->name, entry});
  // A directory is its own entry: keep the index of removed directories (lost+found).
  const bool dir_entry = (old_edge && old_edge->inode == entry) || (new_edge && new_edge->inode == entry);
  if (dir_entry && new_edge && new_edge->parent == kTrashId) txn.put(keys::trashed_dir(entry), "");
  if (dir_entry && old_edge && old_edge->parent == kTrashId && (!new_edge || new_edge->parent != kTrashId))
    txn.del(keys::trashed_dir(entry));
  // What lost+found shows changes when an entry leaves or arrives under a removed directory
  // or a removed directory leaves the trash.
  for (const Edge* e : {old_edge, new_edge}) {
    Edge parent_edge;
    if (e && e->parent != kTrashId && e->parent != kRootId && read_edge(txn, e->parent, &parent_edge) &&
        parent_edge.parent == kTrashId) {
      changes_.names.push_back({kRootId, std::string(kLostFoundName), Gid{}});
      changes_.names.push_back({kLostFoundId, lost_name(parent_edge.name, e->parent), Gid{}});
    }
  }
  if (dir_entry && old_edge && old_edge->parent == kTrashId) {
    changes_.names.push_back({kRootId, std::string(kLostFoundName), Gid{}});
    changes_.names.push_back({kLostFoundId, lost_name(old_edge->name, entry), Gid{}});
  }
  // A move keeps its entry's inode (only a new entry or a removal changes it): its link
  // key stays as it is, and is not written again (a write is a memtable insert).
  const bool same_inode = old_edge && new_edge && old_edge->inode == new_edge->inode;
  if (old_edge) {
    txn.del(keys::dirent(old_edge->parent, old_edge->name, entry));
    if (!same_inode) txn.del(keys::link(old_edge->inode, entry));
    adjust(*old_edge, -1);
  }
  if (new_edge) {
    std::string ino;
    keys::put_gid(ino, new_edge->inode);
    txn.put(keys::dirent(new_edge->parent, new_edge->name, entry), ino);
    if (!same_inode) txn.put(keys::link(new_edge->inode, entry), "");
    pb::EntryRecord rec;
    to_pb(new_edge->parent, rec.mutable_parent());
    rec.set_name(new_edge->name);
    to_pb(new_edge->inode, rec.mutable_inode());
    if (new_edge->parent == kTrashId) {
      if (!new_edge->trashed_from.empty()) to_pb(new_edge->trashed_from, rec.mutable_trashed_from());
      to_pb(new_edge->trashed_at, rec.mutable_trashed_at());
    }
    txn.put(keys::entry(entry), rec.SerializeAsString());
    adjust(*new_edge, +1);
  } else {
    txn.del(keys::entry(entry));
  }
}

void Meta::apply_set_attr(KvTxn& txn, const Hlc& ts, const pb::SetAttr& a) {
  const Gid g = from_pb(a.inode());
  pb::InodeRecord rec;
  if (!read_inode(txn, g, &rec)) return;
  const uint32_t mask = a.mask();
  if ((mask & kAttrMode) && lww(rec.mutable_mode_hlc(), ts)) rec.set_mode(a.mode() & 07777);
  if ((mask & kAttrUid) && lww(rec.mutable_uid_hlc(), ts)) rec.set_uid(a.uid());
  if ((mask & kAttrGid) && lww(rec.mutable_gid_hlc(), ts)) rec.set_gid(a.gid());
  if ((mask & kAttrAtime) && lww(rec.mutable_atime_hlc(), ts)) rec.set_atime_ns(a.atime_ns());
  if ((mask & kAttrMtime) && lww(rec.mutable_mtime_hlc(), ts)) rec.set_mtime_ns(a.mtime_ns());
  if ((mask & kAttrCtime) && lww(rec.mutable_ctime_hlc(), ts)) rec.set_ctime_ns(a.ctime_ns());
  write_inode(txn, g, rec);
}

void Meta::apply_set_xattr(KvTxn& txn, const Hlc& ts, const pb::SetXattr& x) {
  const Gid g = from_pb(x.inode());
  // An inode purged here already (its delete was stable) takes no xattr: pods that purge it
  // later drop the record with it, and a directory made again under the same id must not
  // find it on some pods only (the long simulation found that).
  pb::InodeRecord inode;
  if (!read_inode(txn, g, &inode)) return;
  const std::string key = keys::xattr(g, x.name());
  std::string v;
  pb::XattrRecord rec;
  if (txn.get(key, &v) && rec.ParseFromString(v) && !(ts > from_pb(rec.hlc()))) return;
  rec.set_value(x.remove() ? "" : x.value());
  rec.set_removed(x.remove());
  to_pb(ts, rec.mutable_hlc());
  txn.put(key, rec.SerializeAsString());
}

// Content versions. A version made on top of the current one replaces it. Two versions
// made from the same base on different pods are a conflict, resolved the same way on every
// pod whatever the arrival order: the one with the newer stamp becomes the file's content;
// the other becomes a sibling file "name.conflict-<writer>-<YYYYmmdd-HHMMSS>.ext" next to
// it (keep-both) or in the trash (last-write-wins), with ids derived from the version's id.
void Meta::apply_commit(KvTxn& txn, const Hlc& ts, const pb::CommitVersion& c, const pb::Op& op) {
  const Gid g = from_pb(c.inode());
  pb::InodeRecord rec;
  if (!read_inode(txn, g, &rec) || rec.type() != pb::REGULAR) return;  // only files have content
  const Gid current = from_pb(rec.version());
  const Gid incoming = from_pb(c.version());
  // A version is committed once (ops are applied once): an existing record of that id is
  // another file's (a forged or reused id), which this commit must not overwrite.
  pb::VersionRecord existing;
  if (incoming.empty() || get_version_txn(txn, incoming, &existing)) return;
  pb::VersionRecord v;
  *v.mutable_inode() = c.inode();
  *v.mutable_base_version() = c.base_version();
  v.set_size(c.size());
  if (c.delta()) {
    if (!resolve_delta(txn, c, v.mutable_chunks())) {
      // Never expected (the base is kept until the delta is stable): reads of it fail with
      // EIO and a log line naming the file (OpenFile::load), never garbage.
      v.set_incomplete(true);
      txn.put(keys::incomplete(incoming), "");  // fetched whole from a peer
    }
  } else if (c.dense_chunks_size() > 0 && c.chunks_size() == 0) {
    sparse_from_dense(c.dense_chunks(), v.mutable_chunks());  // an op from an old op log
  } else {
    *v.mutable_chunks() = c.chunks();
  }
  *v.mutable_holders() = c.holders();
  *v.mutable_conflict() = c.conflict();
  v.set_mtime_ns(c.mtime_ns());
  to_pb(ts, v.mutable_hlc());
  *v.mutable_live_entries() = c.live_entries();
  v.set_op_seq(op.seq());
  *v.mutable_op_deps() = op.deps();
  const Gid base = from_pb(c.base_version());
  const bool fast_forward = base == current;
  if (!base.empty() && !fast_forward) {
    // Built on a version that lost a conflict here and was kept as a sibling: that version
    // is superseded after all, as on the pods that never saw the conflict. Its sibling goes.
    pb::VersionRecord b;
    Edge e;
    const Gid sibling_entry = derived_id(base, "conflict-entry");
    if (get_version_txn(txn, base, &b) && from_pb(b.inode()) != g && read_edge(txn, sibling_entry, &e) &&
        e.parent != kTrashId) {
      Edge trashed = trash_edge(e, ts);
      set_edge(txn, sibling_entry, &e, &trashed);
    }
  }
  if (!fast_forward && !(ts > from_pb(rec.content_hlc()))) {
    keep_loser(txn, incoming, v);  // concurrent and older: kept aside, the file unchanged
    return;
  }
  if (!current.empty() && current != incoming) {
    pb::VersionRecord old;
    if (!fast_forward && get_version_txn(txn, current, &old)) {
      keep_loser(txn, current, old);  // concurrent and older: the current content moves aside
    } else {
      // Superseded: kept as the base of deltas still to come until this op is stable.
      std::string bytes;
      if (txn.get(keys::version(current), &bytes)) {
        txn.put(keys::superseded(current), bytes);
        txn.put(keys::superseded_at(ts, current), "");
      }
      txn.del(keys::version(current));
    }
  }
  txn.put(keys::version(incoming), v.SerializeAsString());
  changes_.contents.push_back(g);
  to_pb(incoming, rec.mutable_version());
  rec.set_size(c.size());
  to_pb(ts, rec.mutable_content_hlc());
  if (lww(rec.mutable_mtime_hlc(), ts)) rec.set_mtime_ns(c.mtime_ns());
  if (lww(rec.mutable_ctime_hlc(), ts)) rec.set_ctime_ns(c.mtime_ns());
  write_inode(txn, g, rec);
}

bool Meta::resolve_delta(KvTxn& txn, const pb::CommitVersion& c, google::protobuf::RepeatedPtrField<pb::ChunkRef>* out) {
  const Gid base = from_pb(c.base_version());
  pb::VersionRecord b;
  std::string bytes;
  if (base.empty() || !(get_version_txn(txn, base, &b) ||
                        (txn.get(keys::superseded(base), &bytes) && parse_version(bytes, &b))) ||
      b.incomplete())
    return false;
  // Merge two lists sorted by (index, span_offset), span by span: the delta's pieces of a
  // span replace all of the base's there (a delta lists a changed span whole), its holes
  // remove a span, and the new size drops what lies past its last span.
  const uint64_t spans = c.spans();
  auto hole = c.holes().begin();
  auto changed = c.chunks().begin();
  out->Clear();
  for (auto ref = b.chunks().begin(); ref != b.chunks().end();) {
    const uint64_t index = ref->index();
    while (changed != c.chunks().end() && changed->index() < index) *out->Add() = *changed++;
    while (hole != c.holes().end() && *hole < index) ++hole;
    const bool replaced = changed != c.chunks().end() && changed->index() == index;
    while (changed != c.chunks().end() && changed->index() == index) *out->Add() = *changed++;
    const bool dropped = replaced || (hole != c.holes().end() && *hole == index) || index >= spans;
    for (; ref != b.chunks().end() && ref->index() == index; ++ref)
      if (!dropped) *out->Add() = *ref;
  }
  while (changed != c.chunks().end()) *out->Add() = *changed++;
  return true;
}

std::vector<std::pair<Gid, pb::VersionRecord>> Meta::incomplete_versions(size_t max) {
  std::vector<std::pair<Gid, pb::VersionRecord>> out;
  std::vector<std::string> stale;
  (void)kv_.scan(keys::kIncompletePrefix, "R", false, [&](std::string_view k, std::string_view) {
    if (k.size() != 17) {
      stale.emplace_back(k);
      return true;
    }
    const Gid g = keys::get_gid(k, 1);
    pb::VersionRecord rec;
    if (get_recent_version(g, &rec) && rec.incomplete())
      out.emplace_back(g, std::move(rec));
    else
      stale.emplace_back(k);  // purged, trimmed, or made whole
    return out.size() < max && stale.size() < max;
  });
  if (!stale.empty()) {
    KvTxn txn(kv_);
    for (const std::string& k : stale) txn.del(k);
    (void)txn.commit(false);  // a failed cleanup is redone by the next call
  }
  return out;
}

bool Meta::complete_version(Gid g, uint64_t size, const google::protobuf::RepeatedPtrField<pb::ChunkRef>& whole) {
  changes_ = Changes{};
  KvTxn txn(kv_);
  std::string bytes;
  std::string key = keys::version(g);
  if (!txn.get(key, &bytes)) {
    key = keys::superseded(g);
    if (!txn.get(key, &bytes)) return false;
  }
  pb::VersionRecord rec;
  if (!parse_version(bytes, &rec) || !rec.incomplete() || rec.size() != size) return false;
  *rec.mutable_chunks() = whole;
  rec.clear_incomplete();
  txn.put(key, rec.SerializeAsString());
  txn.del(keys::incomplete(g));
  if (!txn.commit(false).ok) return false;
  changes_.contents.push_back(from_pb(rec.inode()));
  return true;
}

bool Meta::get_version_txn(KvTxn& txn, Gid g, pb::VersionRecord* rec) {
  std::string v;
  return txn.get(keys::version(g), &v) && parse_version(v, rec);
}

void Meta::keep_loser(KvTxn& txn, Gid version, pb::VersionRecord loser) {
  const pb::Conflict& how = loser.conflict();
  const Gid inode = derived_id(version, "conflict-inode");
  const Gid entry = derived_id(version, "conflict-entry");
  pb::InodeRecord rec;
  if (read_inode(txn, inode, &rec)) return;  // already kept (an op seen twice cannot get here, but be safe)
  rec = new_inode_record(txn, inode, pb::REGULAR, how.mode() ? how.mode() : 0644, how.uid(), how.gid(),
                         loser.mtime_ns(), from_pb(loser.hlc()));
  rec.set_size(loser.size());
  to_pb(version, rec.mutable_version());
  write_inode(txn, inode, rec);
  to_pb(inode, loser.mutable_inode());
  txn.put(keys::version(version), loser.SerializeAsString());
  // A file entry cannot make a cycle and nobody else moves this new entry before it exists,
  // so placing it commutes with every move: no move-log entry is needed.
  const Gid parent = from_pb(how.parent());
  pb::InodeRecord parent_rec;
  const bool parent_ok = !parent.empty() && read_inode(txn, parent, &parent_rec) && parent_rec.type() == pb::DIRECTORY;
  Edge edge{parent_ok ? parent : kRootId, conflict_name(how, loser.mtime_ns()), inode};
  if (!how.keep_both() || !parent_ok) edge = trash_edge(edge, from_pb(loser.hlc()));  // restorable there
  set_edge(txn, entry, nullptr, &edge);
}

// Causal stability decides what may go (see docs/architecture.md, "Trimming"):
//  * a move may leave the log once no op that could be ordered before it can still come:
//    its stamp is below the horizon (the newest op applied from every member; ops of one
//    origin arrive in order) or its op is stable (every member applied it, and this pod has
//    every op each member made before that: any op still to come saw it);
//  * a delete of a file's entry stays until it is stable: a write that had not seen it could
//    still void it (the file's moves are then redone), and the file's moves from its oldest
//    logged delete on stay with it;
//  * an entry in the trash is purged, with its inode, versions and so its chunks, once its
//    delete is stable, no logged delete of the file remains and it is older than the
//    retention (`wormhole trash` lists it until then).
size_t Meta::trim(size_t max_entries, const std::map<uint64_t, Hlc>& stable_in, uint64_t now_ms,
                  uint64_t retention_ms) {
  const bool alone = progress_.size() == 1 && progress_.count(pod_id_);
  std::map<uint64_t, Hlc> stable = stable_in;
  if (alone) stable[pod_id_] = progress_[pod_id_].hlc;  // every op here is this pod's own
  if (stable != last_stable_) {
    trim_cursor_ = movelog_floor_;  // kept records may have become stable: look at them again
    last_stable_ = stable;
  }
  // No pod can still send an op older than the newest op applied from every known pod.
  Hlc horizon;
  bool have_horizon = progress_.size() >= expected_members_ && !progress_.empty();
  if (have_horizon) {
    bool first = true;
    for (auto& [pod, p] : progress_) {
      if (first || p.hlc < horizon) horizon = p.hlc;
      first = false;
    }
  }
  auto is_stable = [&](const Hlc& ts) {
    auto it = stable.find(ts.pod);
    return it != stable.end() && !(it->second < ts);
  };
  auto trimmable = [&](const Hlc& ts) { return (have_horizon && !(horizon < ts)) || is_stable(ts); };
  Hlc scan_end = have_horizon ? horizon : Hlc{};
  for (auto& [pod, h] : stable)
    if (scan_end < h) scan_end = h;

  KvTxn txn(kv_);
  size_t removed = 0, visited = 0;
  // The key of a file's oldest logged delete (T index), if it has one; the ones this pass
  // dropped already (still in the store until the batch commits) do not count.
  std::set<std::string> dropped_deletes;
  auto oldest_delete = [&](Gid inode, std::string* key) {
    const std::string prefix = keys::trash_move_prefix(inode);
    bool found = false;
    const bool ok = kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view) {
      if (dropped_deletes.count(std::string(k))) return true;
      *key = std::string(k);
      found = true;
      return false;
    });
    return ok ? found : true;  // unknown: as if it had one (the key then matches nothing)
  };
  const std::string end = keys::movelog(scan_end, 0xffffffff);
  const std::string start = std::max(std::string(keys::kMoveLogPrefix), trim_cursor_);
  const std::string saved_cursor = trim_cursor_;
  // A scan from the floor that drops a run of entries moves the floor past them: deleted
  // keys stay in the store as tombstones until compaction, and every later scan would step
  // over all of them again (a long create storm made that most of a receiving pod's CPU).
  bool floor_run = start <= std::max(std::string(keys::kMoveLogPrefix), movelog_floor_);
  std::string new_floor;
  const bool scanned = kv_.scan(start, end, false, [&](std::string_view k, std::string_view v) {
    pb::MoveLogRecord rec;
    if (!rec.ParseFromArray(v.data(), static_cast<int>(v.size()))) rec.Clear();  // unreadable: dropped
    const Hlc ts = keys::movelog_hlc(k);
    const Gid inode = from_pb(rec.move().inode());
    const bool file_entry = from_pb(rec.move().entry()) != inode;
    const bool is_delete = from_pb(rec.move().parent()) == kTrashId;
    bool drop = trimmable(ts);
    std::string oldest;
    if (drop && file_entry && !alone && oldest_delete(inode, &oldest)) {
      const std::string mine = keys::trash_move(inode, k);
      if (is_delete && mine == oldest)
        drop = is_stable(ts);  // its outcome is final only once stable
      else if (oldest < mine)
        drop = false;  // a write may still redo the file's moves from that delete on
    }
    if (!drop) {
      if (removed == 0 && visited == 0) trim_cursor_ = std::string(k);  // nothing before it is kept
      if (floor_run) new_floor = std::string(k);
      floor_run = false;
      return ++visited < max_entries;
    }
    if (floor_run) new_floor = std::string(k) + '\0';  // the key right after k
    if (is_delete && file_entry) {
      txn.del(keys::trash_move(inode, k));
      dropped_deletes.insert(keys::trash_move(inode, k));
    }
    txn.del(std::string(k));
    ++removed;
    return ++visited < max_entries;
  });
  if (!scanned) {  // nothing is dropped on a partial view; the next trim tries again
    trim_cursor_ = saved_cursor;
    return 0;
  }
  // Superseded versions whose superseding op is stable: no delta over them can come any more.
  // (Ordered by stamp; bounded by the newest stable stamp, and by max_entries.)
  size_t superseded_seen = 0;
  const bool superseded_scanned =
      kv_.scan(keys::kSupersededAtPrefix, keys::superseded_at(scan_end, Gid{UINT64_MAX, UINT64_MAX}), false,
               [&](std::string_view k, std::string_view) {
                 Hlc ts;
                 Gid version;
                 if (!keys::parse_superseded_at(k, &ts, &version)) {
                   txn.del(std::string(k));  // unreadable: nothing can use it
                 } else if (is_stable(ts)) {
                   txn.del(std::string(k));
                   txn.del(keys::superseded(version));
                   ++removed;
                 }
                 return ++superseded_seen < max_entries;
               });
  (void)superseded_scanned;  // a failed scan (logged) drops less; the next trim goes on
  if (removed > 0 && !txn.commit(false).ok) return 0;
  if (!new_floor.empty()) {
    movelog_floor_ = new_floor;  // nothing is below it any more
    trim_cursor_ = std::max(trim_cursor_, new_floor);
  }
  // The purge reads the log's delete index as just trimmed: a second batch.
  KvTxn purge_txn(kv_);
  // purge_trash moves its cursor and due time on; a purge whose write fails must look at
  // the same entries again, not skip them for a round (or a whole retention period).
  const std::string purge_cursor = purge_cursor_;
  const uint64_t purge_due_ms = purge_due_ms_;
  const size_t purged = purge_trash(purge_txn, max_entries, is_stable, now_ms, retention_ms);
  if (purged > 0 && !purge_txn.commit(false).ok) {
    purge_cursor_ = purge_cursor;
    purge_due_ms_ = purge_due_ms;
    return removed;
  }
  return removed + purged;
}

size_t Meta::purge_trash(KvTxn& txn, size_t max_entries, const std::function<bool(const Hlc&)>& is_stable,
                         uint64_t now_ms, uint64_t retention_ms) {
  struct Candidate {
    Gid entry;
    Edge edge;
  };
  // Nothing can be due before the earliest delete seen in the last full round is old enough:
  // the trash is not looked at again until then (entries deleted since are younger).
  if (now_ms < purge_due_ms_) return 0;
  std::vector<Candidate> purge;
  const std::string prefix = keys::dir_prefix(kTrashId);
  // A bounded look at the trash each time, going round it.
  size_t visited = 0;
  std::string last;
  const bool from_start = purge_cursor_.empty();
  uint64_t due_ms = UINT64_MAX;  // earliest moment an entry seen becomes old enough
  bool unstable = false;         // an entry old enough waits for its delete to be stable
  const bool ok = kv_.scan(std::max(prefix, purge_cursor_), prefix_end(prefix), false,
                           [&](std::string_view k, std::string_view) {
    last = std::string(k);
    const Gid entry = keys::dirent_entry(k);
    Edge e;
    if (!read_edge(txn, entry, &e) || e.parent != kTrashId) return ++visited < max_entries;
    const bool old_enough = e.trashed_at.wall_ms <= now_ms && now_ms - e.trashed_at.wall_ms >= retention_ms;
    if (old_enough && is_stable(e.trashed_at))
      purge.push_back(Candidate{entry, e});
    else if (old_enough)
      unstable = true;
    else
      due_ms = std::min(due_ms, e.trashed_at.wall_ms + retention_ms);
    return ++visited < max_entries;
  });
  if (!ok) return 0;
  purge_cursor_ = visited >= max_entries ? last + '\0' : std::string();
  // A whole round seen (from the start to the end of the trash): wait until the earliest
  // entry is due (one deleted from now on is due no earlier than now + the retention); an
  // entry old enough but not stable yet is looked at again in a second.
  if (from_start && purge_cursor_.empty())
    purge_due_ms_ = unstable ? now_ms + 1000 : std::min(due_ms, now_ms + retention_ms);
  size_t removed = 0;
  // The directories a logged move took an entry out of (or put one into): a late op can
  // still undo and redo that move with another outcome (a write voids a delete made after
  // the rmdir, and the file is back in the removed directory; a cycle check refuses a
  // directory's move), so the directory's emptiness is not final yet. Read once per pass,
  // when a removed directory is a candidate.
  std::set<Gid> moved_through;
  bool log_read = false, log_ok = false;
  bool retry_soon = false;  // a candidate waits for log records that trim drops once stable
  auto logged_move_through = [&](Gid dir) {
    if (!log_read) {
      log_read = true;
      log_ok = kv_.scan(keys::kMoveLogPrefix, prefix_end(keys::kMoveLogPrefix), false,
                        [&](std::string_view, std::string_view v) {
                          pb::MoveLogRecord rec;
                          if (rec.ParseFromArray(v.data(), static_cast<int>(v.size()))) {
                            if (rec.had_old()) moved_through.insert(from_pb(rec.old().parent()));
                            moved_through.insert(from_pb(rec.move().parent()));
                          }
                          return true;
                        });
    }
    return !log_ok || moved_through.count(dir) > 0;  // unknown: as if there were one
  };
  for (auto& [entry, e] : purge) {
    pb::InodeRecord rec;
    const bool have_inode = read_inode(txn, e.inode, &rec);
    std::string oldest;
    const bool is_dir = have_inode && rec.type() == pb::DIRECTORY;
    if (!is_dir) {
      // A logged delete of the file remains: a write may still redo its moves.
      const std::string p = keys::trash_move_prefix(e.inode);
      bool logged = false;
      if (!kv_.scan(p, prefix_end(p), false, [&](std::string_view, std::string_view) {
            logged = true;
            return false;
          }) || logged) {
        retry_soon = true;
        continue;
      }
    } else {
      bool empty = true;
      const std::string p = keys::dir_prefix(e.inode);
      if (!kv_.scan(p, prefix_end(p), false, [&](std::string_view, std::string_view) {
            empty = false;
            return false;
          }) || !empty)
        continue;  // something was created in it meanwhile: kept
      if (logged_move_through(e.inode)) {  // something may still come back into it
        retry_soon = true;
        continue;
      }
    }
    set_edge(txn, entry, &e, nullptr);
    ++removed;
    // A directory's id derives from its parent and name: `mkdir` of that path makes it again,
    // and finds its old attributes and xattrs (last-writer-wins registers) whether or not a
    // pod purged it yet — so its inode record stays (a few hundred bytes per removed
    // directory, not its content: it is empty).
    if (is_dir) continue;
    if (!have_inode || rec.nlink() != 0) continue;
    bool other_entries = false;
    const std::string links = keys::link_prefix(e.inode);
    if (!kv_.scan(links, prefix_end(links), false, [&](std::string_view k, std::string_view) {
          other_entries = keys::link_entry(k) != entry;
          return !other_entries;
        }) || other_entries)
      continue;  // still named elsewhere (maybe in the trash too): the last one purges it
    if (in_use_ && in_use_(e.inode))
      txn.put(keys::orphan(e.inode), "");
    else
      purge_inode(txn, e.inode);
  }
  if (retry_soon) purge_due_ms_ = std::min(purge_due_ms_, now_ms + 1000);
  return removed;
}

void Meta::purge_inode(KvTxn& txn, Gid g) {
  pb::InodeRecord rec;
  if (!read_inode(txn, g, &rec)) return;
  if (rec.has_version()) txn.del(keys::version(from_pb(rec.version())));
  std::vector<std::string> xattrs;
  // A failed read leaves some xattr records behind: unreachable, they only take space.
  (void)list_xattrs(g, &xattrs);
  for (auto& name : xattrs) txn.del(keys::xattr(g, name));
  ino_cache_.forget(rec.local_ino());
  txn.del(keys::ino(rec.local_ino()));
  txn.del(keys::inode(g));
  txn.del(keys::orphan(g));
}

void Meta::purge_if_unused(Gid g) {
  std::string v;
  if (!kv_.get(keys::orphan(g), &v)) return;
  if (in_use_ && in_use_(g)) return;
  KvTxn txn(kv_);
  purge_inode(txn, g);
  txn.commit(false);
}

bool Meta::get_inode(Gid g, pb::InodeRecord* rec) {
  std::string v;
  return kv_.get(keys::inode(g), &v) && rec->ParseFromString(v);
}

bool Meta::get_version(Gid g, pb::VersionRecord* rec) {
  std::string v;
  return kv_.get(keys::version(g), &v) && parse_version(v, rec);
}

bool Meta::get_recent_version(Gid g, pb::VersionRecord* rec) {
  std::string v;
  return get_version(g, rec) || (kv_.get(keys::superseded(g), &v) && parse_version(v, rec));
}

bool Meta::get_entry(Gid g, pb::EntryRecord* rec) {
  std::string v;
  return kv_.get(keys::entry(g), &v) && rec->ParseFromString(v);
}

Meta::MemoryState Meta::memory_state() const {
  return MemoryState{clock_,          gid_seq_,        next_ino_,       local_seq_,    newest_logged_, progress_,
                     trim_cursor_,    movelog_floor_,  op_log_trimmed_, saved_gid_seq_, saved_next_ino_};
}

void Meta::restore_memory_state(const MemoryState& s) {
  clock_ = s.clock;
  gid_seq_ = s.gid_seq;
  next_ino_ = s.next_ino;
  local_seq_ = s.local_seq;
  newest_logged_ = s.newest_logged;
  progress_ = s.progress;
  trim_cursor_ = s.trim_cursor;
  movelog_floor_ = s.movelog_floor;
  op_log_trimmed_ = s.op_log_trimmed;
  saved_gid_seq_ = s.saved_gid_seq;
  saved_next_ino_ = s.saved_next_ino;
  // Numbers read while the writes were held may name inodes the store never got.
  ino_cache_.clear();
}

bool Meta::gid_of_ino(uint64_t ino, Gid* g) {
  if (ino_cache_.get(ino, g)) return true;
  std::string v;
  if (!kv_.get(keys::ino(ino), &v) || v.size() != 16) return false;
  *g = keys::get_gid(v, 0);
  ino_cache_.put(ino, *g);
  return true;
}

int Meta::lookup(Gid dir, std::string_view name, DirItem* item) {
  const std::string prefix = keys::dirent_prefix(dir, name);
  bool found = false;
  // Several entries may carry one name after concurrent creates on different pods; the one
  // with the smallest entry id is shown, the same choice on every pod.
  const bool ok = kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view v) {
    if (k.size() != prefix.size() + 16 || v.size() != 16) return true;
    item->name = std::string(name);
    item->entry = keys::get_gid(k, prefix.size());
    item->inode = keys::get_gid(v, 0);
    found = true;
    return false;
  });
  // A failed scan may have missed the entry with the smallest id: not even a found one is
  // the right answer then.
  if (!ok) return EIO;
  if (found) return 0;
  // A second entry of a name shows under duplicate_name().
  std::string real, tag;
  if (!parse_duplicate_name(name, &real, &tag)) return ENOENT;
  const std::string real_prefix = keys::dirent_prefix(dir, real);
  bool first = true;
  const bool dup_ok = kv_.scan(real_prefix, prefix_end(real_prefix), false, [&](std::string_view k, std::string_view v) {
    if (k.size() != real_prefix.size() + 16 || v.size() != 16) return true;
    if (std::exchange(first, false)) return true;  // the first keeps the plain name
    const Gid entry = keys::get_gid(k, real_prefix.size());
    if (duplicate_name(real, entry) != name) return true;
    item->name = std::string(name);
    item->entry = entry;
    item->inode = keys::get_gid(v, 0);
    found = true;
    return false;
  });
  if (!dup_ok) return EIO;
  return found ? 0 : ENOENT;
}

int Meta::list(Gid dir, std::vector<DirItem>* items) {
  items->clear();
  const std::string prefix = keys::dir_prefix(dir);
  std::string last_name;
  const bool ok = kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view v) {
    if (k.size() < prefix.size() + 17 || v.size() != 16) return true;
    std::string_view name = k.substr(prefix.size(), k.size() - prefix.size() - 17);
    const Gid entry = keys::get_gid(k, k.size() - 16);
    // A second entry of one name shows under duplicate_name(): nothing is hidden.
    const bool duplicate = !items->empty() && last_name == name;
    last_name = std::string(name);
    items->push_back(DirItem{duplicate ? duplicate_name(name, entry) : std::string(name), entry, keys::get_gid(v, 0)});
    return true;
  });
  if (!ok) {
    items->clear();
    return EIO;
  }
  return 0;
}

bool Meta::for_each_entry_in(Gid dir, const std::function<void(std::string_view, Gid, Gid)>& visit) {
  const std::string prefix = keys::dir_prefix(dir);
  return kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view v) {
    if (k.size() < prefix.size() + 17 || v.size() != 16) return true;
    visit(k.substr(prefix.size(), k.size() - prefix.size() - 17), keys::get_gid(k, k.size() - 16), keys::get_gid(v, 0));
    return true;
  });
}

int Meta::lost_directories(size_t limit, std::vector<DirItem>* items) {
  constexpr size_t kMaxLooked = 10000;  // bounds the work of one listing or lookup
  items->clear();
  std::vector<Gid> dirs;
  const std::string prefix(keys::kTrashedDirPrefix);
  const bool ok = kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view) {
    if (k.size() == 17) dirs.push_back(keys::get_gid(k, 1));
    return dirs.size() < kMaxLooked;
  });
  if (!ok) return EIO;
  for (Gid d : dirs) {
    if (items->size() >= limit) break;
    pb::EntryRecord e;
    if (!get_entry(d, &e) || from_pb(e.parent()) != kTrashId) continue;
    const int empty = check_dir_empty(d);
    if (empty == EIO) return EIO;
    if (empty == ENOTEMPTY) items->push_back(DirItem{lost_name(e.name(), d), d, d});
  }
  return 0;
}

int Meta::check_dir_empty(Gid dir) {
  bool empty = true;
  const std::string prefix = keys::dir_prefix(dir);
  const bool ok = kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view, std::string_view) {
    empty = false;
    return false;
  });
  // Seen an entry: not empty, whatever failed after. Seen none and failed: unknown, and
  // "empty" would let rmdir drop a directory that has entries.
  if (!empty) return ENOTEMPTY;
  return ok ? 0 : EIO;
}

bool Meta::live_entries(Gid inode, std::vector<std::pair<Gid, pb::EntryRecord>>* out, size_t limit) {
  out->clear();
  const std::string prefix = keys::link_prefix(inode);
  return kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view) {
    pb::EntryRecord e;
    if (k.size() == prefix.size() + 16) {
      const Gid entry = keys::get_gid(k, prefix.size());
      if (get_entry(entry, &e) && from_pb(e.parent()) != kTrashId) out->emplace_back(entry, std::move(e));
    }
    return out->size() < limit;
  });
}

bool Meta::live_entry(Gid inode, Gid* parent, std::string* name) {
  std::vector<std::pair<Gid, pb::EntryRecord>> live;
  if (!live_entries(inode, &live, 1) || live.empty()) return false;
  *parent = from_pb(live.front().second.parent());
  *name = live.front().second.name();
  return true;
}

std::string Meta::path_of(Gid inode) {
  if (inode == kRootId) return "/";
  // Any entry pointing at the inode will do (hard links have several).
  std::string path;
  Gid cur;
  const std::string prefix = keys::link_prefix(inode);
  const bool ok = kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view) {
    if (k.size() == prefix.size() + 16) cur = keys::get_gid(k, prefix.size());
    return false;
  });
  if (!ok && cur.empty()) return "(unreadable)";
  if (cur.empty()) return "(unlinked)";
  for (int depth = 0; depth < kMaxDepth && cur != kRootId; ++depth) {
    pb::EntryRecord e;
    if (!get_entry(cur, &e)) return "?" + path;
    path = "/" + e.name() + path;
    cur = from_pb(e.parent());
    if (cur == kTrashId) return "(deleted)" + path;
  }
  return path;
}

bool Meta::is_ancestor(Gid ancestor, Gid dir) {
  Gid p = dir;
  for (int depth = 0; depth < kMaxDepth; ++depth) {
    if (p == ancestor) return true;
    if (p == kRootId || p == kTrashId) return false;
    pb::EntryRecord e;
    if (!get_entry(p, &e)) return false;
    p = from_pb(e.parent());
  }
  return false;
}

bool Meta::get_xattr(Gid inode, std::string_view name, std::string* value) {
  std::string v;
  pb::XattrRecord rec;
  if (!kv_.get(keys::xattr(inode, name), &v) || !rec.ParseFromString(v) || rec.removed()) return false;
  *value = rec.value();
  return true;
}

bool Meta::list_xattrs(Gid inode, std::vector<std::string>* names) {
  names->clear();
  const std::string prefix = keys::xattr_prefix(inode);
  return kv_.scan(prefix, prefix_end(prefix), false, [&](std::string_view k, std::string_view v) {
    pb::XattrRecord rec;
    if (rec.ParseFromArray(v.data(), static_cast<int>(v.size())) && !rec.removed())
      names->emplace_back(k.substr(prefix.size()));
    return true;
  });
}

size_t Meta::count_keys(KvStore& kv, std::string_view prefix) {
  size_t n = 0;
  // For status only: a failed read (logged by the store) shows a smaller count.
  (void)kv.scan(prefix, prefix_end(prefix), false, [&](std::string_view, std::string_view) { return ++n, true; });
  return n;
}

void Meta::apply_hold(KvTxn& txn, const pb::HoldVersion& h) {
  const Gid g = from_pb(h.version());
  // The claim or release goes to the version's record wherever it is: current, or
  // superseded (a version superseded here may be current on a pod that applied concurrent
  // commits in another order, or come back here as a conflict sibling: its holders must be
  // the same).
  for (const std::string& key : {keys::version(g), keys::superseded(g)}) {
    std::string bytes;
    pb::VersionRecord v;
    if (!txn.get(key, &bytes) || !parse_version(bytes, &v)) continue;
    auto* holders = v.mutable_holders();
    const auto at = std::find(holders->begin(), holders->end(), h.pod());
    const bool held = at != holders->end();
    if (held != h.release()) continue;  // claimed twice, or released what it did not hold
    // The placed holders keep their order (the writer first); claims follow, sorted, so
    // that the list is the same on every pod whatever order claims and releases of
    // different pods arrive in.
    uint32_t placed = v.claims_only() ? 0 : v.placed_holders() == 0 ? static_cast<uint32_t>(holders->size())
                                                                    : v.placed_holders();
    placed = std::min<uint32_t>(placed, static_cast<uint32_t>(holders->size()));
    if (h.release()) {
      if (at - holders->begin() < static_cast<ptrdiff_t>(placed)) --placed;
      holders->erase(at);
    } else {
      holders->Add(h.pod());
    }
    std::sort(holders->begin() + placed, holders->end());
    v.set_placed_holders(placed);
    // placed_holders 0 reads "no claim yet, all placed": say it when it means "none placed".
    v.set_claims_only(placed == 0);
    txn.put(key, v.SerializeAsString());
    hold_changes_.fetch_add(1, std::memory_order_relaxed);
  }
}

bool Meta::scan_versions(Gid after, size_t max, const std::function<void(Gid, const pb::VersionRecord&)>& visit,
                         Gid* next) {
  std::string start = after.empty() ? std::string(keys::kVersionPrefix) : keys::version(after) + '\0';
  size_t seen = 0;
  Gid last;
  const bool ok = kv_.scan(start, prefix_end(keys::kVersionPrefix), false, [&](std::string_view k, std::string_view v) {
    if (seen >= max) return false;
    pb::VersionRecord rec;
    if (k.size() != 17 || !parse_version(v, &rec)) return true;
    last = keys::get_gid(k, 1);
    ++seen;
    visit(last, rec);
    return true;
  });
  *next = seen >= max ? last : Gid{};
  return ok;
}

std::vector<Gid> Meta::versions_held_by(uint64_t pod) {
  std::vector<Gid> out;
  // At start-up, to resume interrupted copies: a failed read (logged by the store) resumes
  // fewer of them, which a later start or a read of the file makes up for.
  (void)kv_.scan(keys::kVersionPrefix, prefix_end(keys::kVersionPrefix), false, [&](std::string_view k, std::string_view v) {
    pb::VersionRecord rec;
    if (k.size() == 17 && rec.ParseFromArray(v.data(), static_cast<int>(v.size())) &&
        std::find(rec.holders().begin(), rec.holders().end(), pod) != rec.holders().end())
      out.push_back(keys::get_gid(k, 1));
    return true;
  });
  return out;
}

bool Meta::for_each_inode(KvStore& kv, const std::function<void(Gid, const pb::InodeRecord&)>& visit) {
  return kv.scan(keys::kInodePrefix, prefix_end(keys::kInodePrefix), false, [&](std::string_view k, std::string_view v) {
    pb::InodeRecord rec;
    if (k.size() == 17 && rec.ParseFromArray(v.data(), static_cast<int>(v.size()))) visit(keys::get_gid(k, 1), rec);
    return true;
  });
}

bool Meta::for_each_chunk(KvStore& kv, const std::function<void(const std::string&, bool)>& visit) const {
  return kv.scan(keys::kVersionPrefix, prefix_end(keys::kVersionPrefix), false, [&](std::string_view k, std::string_view v) {
    pb::VersionRecord rec;
    if (!parse_version(v, &rec)) return true;
    const bool own = k.size() == 17 && keys::get_gid(k, 1).pod == pod_id_;
    const bool held = own || rec.holders().empty() ||
                      std::find(rec.holders().begin(), rec.holders().end(), pod_id_) != rec.holders().end();
    for (auto& c : rec.chunks())
      if (!c.sha256().empty() && c.inline_data().empty()) visit(c.sha256(), held);
    return true;
  });
}

}  // namespace wormhole
