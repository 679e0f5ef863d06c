// Replicator: spreads metadata ops between the pods of a network. Pure logic: no I/O, no
// clock; it returns the messages to send and the caller (the network layer, or the
// simulation) carries them, in any order, possibly twice, possibly never.
//
//  * push: ops committed locally stream to every peer (publish_local), from a cursor per
//    peer that the caller rewinds to what the peer acknowledged once its pushes are all
//    answered or lost (push_settled), so a lost push is sent again at once rather than left
//    to anti-entropy; a full batch means more is due, and the caller pushes again without
//    waiting for an answer (pipelined: the caller keeps a bounded window of batches in
//    flight per peer, and names the peers whose window is full as `busy`: flow control);
//  * pull (anti-entropy): a pod sends its per-origin progress (sync_request); the peer
//    answers with the ops it lacks, from its op log, a bounded batch at a time; an answer
//    that was a full batch makes the asker ask again at once (take_pull_again), so a pod
//    back from a restart or a partition catches up back-to-back;
//  * incoming ops wait in a bounded buffer until they are deliverable: the previous op of
//    their origin and every op they depend on (Op.deps) applied. Delivery is causal, so an
//    op never names an object this pod has not heard of; the order among concurrent ops
//    does not matter (Meta's apply gives the same result in any order).
//  * what every member has applied is learnt from their progress, so the op log keeps
//    exactly what some pod may still ask for (everyone_has).
//
// Not thread-safe: the owner serializes calls.
#pragma once
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "meta/namespace.h"
#include "meta/op_validation.h"

namespace wormhole {

class Replicator {
 public:
  // Ops kept waiting for their dependencies, at most, and their bytes; beyond, newer ones
  // are dropped and come back through anti-entropy.
  static constexpr size_t kMaxWaitingOps = 100000;
  static constexpr size_t kMaxWaitingBytes = 256 << 20;
  // Origins (pods whose ops this pod applies or holds), at most: ops of further origins
  // are dropped, so no peer can grow the per-origin state without bound.
  static constexpr size_t kMaxOrigins = kMaxPods;
  // Ops sent in answer to one sync request, at most.
  static constexpr size_t kMaxBatchOps = kMaxOpsPerBatch;

  struct Outgoing {
    uint64_t to;
    pb::PeerMessage message;
  };

  // `members`: every pod of the network known so far, this one included.
  Replicator(Namespace& ns, std::vector<uint64_t> members);
  // A member whose id was learnt later (pods learn each other's ids when they first talk).
  void add_member(uint64_t pod);
  // A member gone for good (`wormhole forget`, or drained): no longer waited for, so that
  // stability (and with it trimming and the trash purge) goes on without it.
  void remove_member(uint64_t pod);
  const std::vector<uint64_t>& peers() const { return peers_; }

  // Messages carrying this pod's ops each peer has not been sent yet (at most one batch
  // per peer), as far as they are durable: call Namespace::make_durable() first (a group
  // commit, best outside the caller's locks). Peers in `unreachable` get nothing; their
  // cursor goes back to what they acknowledged. Peers in `busy` (their window of pushes in
  // flight is full) get nothing either; their cursor stays after what was sent them.
  std::vector<Outgoing> publish_local(const std::vector<uint64_t>& unreachable = {},
                                      const std::vector<uint64_t>& busy = {});
  // Every push to `peer` so far was answered (its acknowledgement received) or lost: the
  // next one starts after what the peer acknowledged, so nothing lost is skipped. Call it
  // only when none is in flight any more: a push still on its way is not acknowledged yet,
  // and would be sent a second time.
  void push_settled(uint64_t peer);
  // A peer whose message carried a full batch of ops (it may have more for this pod), at
  // most one (they would all send the same ops; the ops' origin preferred): the caller asks
  // it again (sync_request) without waiting for its timer. Cleared by the call.
  std::vector<uint64_t> take_pull_again();
  // How incoming ops are validated (validate_peer_message): how far ahead of this pod's
  // clock a peer's stamps may be, and the network's chunk size.
  void set_limits(uint64_t max_skew_ms, uint64_t chunk_size_bytes);
  // Handles a message from `from` at wall time `now_ms`; returns the answers. A message
  // that fails validation is rejected whole (nothing of it is used, nothing answered) and
  // *rejected (if given) says why; the caller logs it with the peer's name. A peer's
  // progress report counts only for that peer and up to what this pod has applied
  // itself (see note_peer_progress).
  std::vector<Outgoing> receive(uint64_t from, const pb::PeerMessage& message, uint64_t now_ms,
                                std::string* rejected = nullptr);
  // Forgets the ops waiting for delivery and the peers' reports: a snapshot replaced the
  // namespace under it.
  void reset();
  // A sync request for `peer` (the caller picks peers and timing).
  Outgoing sync_request(uint64_t peer);
  // The ops `peer` lacks as far as this pod knows (up to one batch): what a writer sends a
  // holder when it must know the holder has its latest op (replication.mode = "sync").
  // The peer answers a message with ops by its progress.
  Outgoing catch_up(uint64_t peer);
  // Highest op of `origin` that `peer` reported applied.
  uint64_t peer_has(uint64_t peer, uint64_t origin) const;

  // Snapshot when faster: a peer that asks with nothing applied (Progress.accepts_snapshot)
  // and lacks more than `ops` ops is answered "snapshot needed" instead of the first batch
  // of a long replay (copying a record costs a few µs, applying an op tens), and this pod's
  // pushes wait meanwhile: pushed ops would give the peer a history, and it could no longer
  // install (and sync-mode catch_up sends it nothing). Pushes also wait for a peer that has
  // not reported yet while it may lack more than `ops` ops (it may be such a newcomer; its
  // first report comes within a round trip). 0 turns it off.
  void set_snapshot_faster_ops(uint64_t ops) { snapshot_faster_ops_ = ops; }
  // Whether this pod's sync requests say it accepts a snapshot while it has applied nothing
  // (true by default; the caller turns it off after an install failed, so that a pod whose
  // installs fail replays instead of waiting for a snapshot forever).
  void set_accepts_snapshot(bool accepts) { accepts_snapshot_ = accepts; }

  // Holds back this pod's own ops stamped after `wall_ms` (network.replication.delay):
  // they are neither pushed nor given in answers yet. UINT64_MAX (the default) = no delay.
  void set_publish_cutoff(uint64_t wall_ms) { cutoff_wall_ms_ = wall_ms; }

  // Highest sequence per origin that every member is known to have applied.
  std::map<uint64_t, uint64_t> everyone_has() const;
  // Causal stability: per origin, the stamp up to which every op of that origin is stable —
  // every member reported it applied, and this pod has applied every op each member had
  // made when it reported (so every op still to come was made by a pod that had applied
  // it). What trimming and the trash purge wait for (Namespace::set_stable).
  std::map<uint64_t, Hlc> stable_stamps();
  size_t waiting() const { return waiting_count_; }
  // The peer that said this pod needs a snapshot (it lacks ops no longer kept), or 0;
  // cleared by the call.
  uint64_t take_snapshot_source() { return std::exchange(snapshot_source_, 0); }
  // What remote ops applied since the last call changed (for kernel cache invalidation).
  Namespace::Changed take_changed() { return std::exchange(changed_, {}); }

 private:
  pb::Progress progress_message();
  // Records what `peer` reports having applied, clamped per origin to what this pod has
  // applied: a peer can honestly be ahead, but everyone_has takes the minimum with this
  // pod anyway, and a claim beyond what exists (this pod's own ops above all) must not
  // make anyone trim or skip ops the peer lacks. Origins this pod never applied are not
  // recorded (bounded by this pod's origins).
  // Adds the ops a pod that applied `theirs` lacks, in stamp order across origins, up to
  // kMaxBatchOps; or only snapshot_needed when one was trimmed and `told` (their own report).
  void add_missing_ops(const google::protobuf::Map<uint64_t, uint64_t>& theirs, bool told, pb::OpBatch* batch);
  // Ops read from one origin's log at a time while merging an answer.
  static constexpr size_t kMergeSliceOps = 64;
  void note_peer_progress(uint64_t peer, const pb::Progress& p);
  bool deliverable(const pb::Op& op, const std::map<uint64_t, uint64_t>& applied) const;
  void deliver_waiting(Namespace::RemoteBatch& batch);
  // Whether an op of `origin` may be kept: a known origin, or room for one more.
  bool origin_has_room(uint64_t origin, const std::map<uint64_t, uint64_t>& applied) const;

  Namespace& ns_;
  const uint64_t self_;
  std::vector<uint64_t> peers_;
  // Per peer: this pod's ops up to here were sent to it and are not known lost (publish_local).
  std::map<uint64_t, uint64_t> pushed_;
  std::vector<uint64_t> pull_again_;  // see take_pull_again (one peer at most)
  uint64_t cutoff_wall_ms_ = UINT64_MAX;
  // Drops from `ops` this pod's own ops newer than the cutoff (and all after them).
  void hold_back(std::vector<pb::Op>& ops) const;
  // Ops received but not yet deliverable: origin -> seq -> op.
  std::map<uint64_t, std::map<uint64_t, pb::Op>> waiting_;
  size_t waiting_count_ = 0;
  size_t waiting_bytes_ = 0;
  OpLimits limits_;  // now_ms set per message
  // Last op refused at delivery, per origin (logged once, not at every resend).
  std::map<uint64_t, uint64_t> refused_seq_;
  // What each peer has told us it applied: peer -> origin -> seq.
  std::map<uint64_t, std::map<uint64_t, uint64_t>> peer_applied_;
  std::map<uint64_t, std::map<uint64_t, Hlc>> peer_stamps_;  // the same reports' stamps
  std::map<uint64_t, uint64_t> peer_made_;                   // a peer's own ops, as it reports them
  std::map<uint64_t, Hlc> stable_;                           // see stable_stamps()
  Namespace::Changed changed_;
  uint64_t snapshot_source_ = 0;
  uint64_t snapshot_faster_ops_ = 20000;
  bool accepts_snapshot_ = true;
  // Per peer: whether its last sync request was answered with the optional snapshot advice
  // (true) or not (false); absent: it never asked.
  std::map<uint64_t, bool> peer_advised_snapshot_;
  // Whether pushes to `peer` wait (see set_snapshot_faster_ops); `applied`: what this pod
  // has applied (Namespace::applied, read once by the caller).
  bool push_waits_for_snapshot(uint64_t peer, const std::map<uint64_t, uint64_t>& applied) const;
  // Ops a pod that applied `theirs` lacks, summed over the origins this pod has.
  uint64_t ops_lacking(const google::protobuf::Map<uint64_t, uint64_t>& theirs) const;
};

}  // namespace wormhole
