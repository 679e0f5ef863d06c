#include "replication/replicator.h"

#include <algorithm>
#include <cstring>
#include <spdlog/spdlog.h>

#include "common/pb_ids.h"

namespace wormhole {

Replicator::Replicator(Namespace& ns, std::vector<uint64_t> members) : ns_(ns), self_(ns.pod_id()) {
  for (uint64_t m : members) {
    ns_.add_member(m);
    if (m != self_) peers_.push_back(m);
  }
  std::sort(peers_.begin(), peers_.end());
  // Push cursors start at 0 (pushed_ empty): after a restart each peer's first
  // acknowledgement (or sync request) tells how far it is, and ops before it are skipped.
}

void Replicator::add_member(uint64_t pod) {
  if (pod == self_ || std::find(peers_.begin(), peers_.end(), pod) != peers_.end()) return;
  ns_.add_member(pod);
  peers_.insert(std::upper_bound(peers_.begin(), peers_.end(), pod), pod);
}

void Replicator::remove_member(uint64_t pod) {
  auto it = std::find(peers_.begin(), peers_.end(), pod);
  if (it == peers_.end()) return;
  peers_.erase(it);
  peer_applied_.erase(pod);
  peer_stamps_.erase(pod);
  peer_made_.erase(pod);
  pushed_.erase(pod);
  peer_advised_snapshot_.erase(pod);
  pull_again_.erase(std::remove(pull_again_.begin(), pull_again_.end(), pod), pull_again_.end());
}

void Replicator::set_limits(uint64_t max_skew_ms, uint64_t chunk_size_bytes) {
  limits_.max_skew_ms = max_skew_ms;
  limits_.chunk_size_bytes = chunk_size_bytes;
}

void Replicator::reset() {
  waiting_.clear();
  waiting_count_ = 0;
  waiting_bytes_ = 0;
  refused_seq_.clear();
  peer_applied_.clear();
  peer_stamps_.clear();
  peer_made_.clear();
  stable_.clear();
  changed_ = {};
  snapshot_source_ = 0;
  pushed_.clear();
  peer_advised_snapshot_.clear();
  pull_again_.clear();
  for (uint64_t peer : peers_) ns_.add_member(peer);  // the snapshot's progress lacks them maybe
}

pb::Progress Replicator::progress_message() {
  // Only what survives a power loss: peers trim their op logs by it, and a sync-mode writer
  // counts it as a durable copy of its op.
  pb::Progress p;
  for (auto& [origin, seq] : ns_.durable_applied()) (*p.mutable_applied())[origin] = seq;
  for (auto& [origin, hlc] : ns_.durable_stamps()) to_pb(hlc, &(*p.mutable_applied_hlc())[origin]);
  return p;
}

void Replicator::note_peer_progress(uint64_t peer, const pb::Progress& p) {
  auto& known = peer_applied_[peer];
  const std::map<uint64_t, uint64_t> mine = ns_.applied();
  for (auto& [origin, seq] : p.applied()) {
    auto it = mine.find(origin);
    if (it == mine.end()) continue;
    uint64_t& k = known[origin];
    k = std::max(k, std::min(seq, it->second));
  }
  // What the peer says it made itself, unclamped: stability waits until this pod has those
  // ops (a peer overstating it only delays stability).
  auto own = p.applied().find(peer);
  if (own != p.applied().end()) peer_made_[peer] = std::max(peer_made_[peer], own->second);
  auto& stamps = peer_stamps_[peer];
  for (auto& [origin, hlc] : p.applied_hlc()) stamps[origin] = std::max(stamps[origin], from_pb(hlc));
}

std::map<uint64_t, Hlc> Replicator::stable_stamps() {
  // Stable: applied by every member, and every op a member made before it reported is
  // applied here (so any op still to come here was made after its maker applied the op:
  // it saw it). Monotonic: once stable, an op stays stable, so the last result is kept
  // while some member's report is missing or ahead of what this pod has.
  const std::map<uint64_t, Hlc> mine = ns_.applied_stamps();
  const std::map<uint64_t, uint64_t> mine_seq = ns_.applied();
  for (uint64_t peer : peers_) {
    auto made = peer_made_.find(peer);
    if (made == peer_made_.end() || !peer_stamps_.count(peer)) return stable_;
    auto have = mine_seq.find(peer);
    if ((have == mine_seq.end() ? 0 : have->second) < made->second) return stable_;
  }
  for (auto& [origin, hlc] : mine) {
    Hlc h = hlc;
    for (uint64_t peer : peers_) {
      const auto& stamps = peer_stamps_[peer];
      auto it = stamps.find(origin);
      h = std::min(h, it == stamps.end() ? Hlc{} : it->second);
    }
    Hlc& kept = stable_[origin];
    kept = std::max(kept, h);
  }
  return stable_;
}

void Replicator::hold_back(std::vector<pb::Op>& ops) const {
  if (cutoff_wall_ms_ == UINT64_MAX) return;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].origin() == self_ && ops[i].hlc().wall_ms() > cutoff_wall_ms_) {
      ops.resize(i);  // later ops of this origin must not go before it
      return;
    }
  }
}

std::vector<Replicator::Outgoing> Replicator::publish_local(const std::vector<uint64_t>& unreachable,
                                                            const std::vector<uint64_t>& busy) {
  std::vector<Outgoing> out;
  // Peers usually stand at the same cursor: the op log is read once per distinct cursor
  // (at most one per peer).
  std::map<uint64_t, std::vector<uint64_t>> by_cursor;
  auto listed = [](const std::vector<uint64_t>& v, uint64_t peer) { return std::find(v.begin(), v.end(), peer) != v.end(); };
  const std::map<uint64_t, uint64_t> applied = ns_.applied();
  for (uint64_t peer : peers_) {
    uint64_t& cursor = pushed_[peer];
    if (listed(unreachable, peer)) {
      cursor = peer_has(peer, self_);  // what it has not acknowledged is sent again later
      continue;
    }
    if (listed(busy, peer)) continue;  // its pushes in flight stay counted as sent
    if (push_waits_for_snapshot(peer, applied)) continue;  // it will install a snapshot, or report first
    cursor = std::max(cursor, peer_has(peer, self_));
    by_cursor[cursor].push_back(peer);
  }
  for (auto& [cursor, peers] : by_cursor) {
    // Only durable ops of this pod leave it (ops_after): the caller makes them durable
    // first (Namespace::make_durable, one log sync for the batch), outside its locks.
    std::vector<pb::Op> ops = ns_.ops_after(self_, cursor, kMaxBatchOps);
    hold_back(ops);
    if (ops.empty()) continue;
    const uint64_t last = ops.back().seq();
    pb::PeerMessage msg;
    for (auto& op : ops) *msg.mutable_ops()->add_ops() = std::move(op);
    for (size_t i = 0; i < peers.size(); ++i) {
      pushed_[peers[i]] = last;
      out.push_back(Outgoing{peers[i], i + 1 == peers.size() ? std::move(msg) : msg});
    }
  }
  return out;
}

void Replicator::push_settled(uint64_t peer) {
  auto it = pushed_.find(peer);
  if (it != pushed_.end()) it->second = peer_has(peer, self_);
}

std::vector<uint64_t> Replicator::take_pull_again() { return std::exchange(pull_again_, {}); }

Replicator::Outgoing Replicator::sync_request(uint64_t peer) {
  pb::PeerMessage msg;
  *msg.mutable_sync_request() = progress_message();
  msg.mutable_sync_request()->set_accepts_snapshot(accepts_snapshot_ && ns_.empty_history());
  return Outgoing{peer, std::move(msg)};
}

uint64_t Replicator::ops_lacking(const google::protobuf::Map<uint64_t, uint64_t>& theirs) const {
  uint64_t lacking = 0;
  for (auto& [origin, seq] : ns_.applied()) {
    auto it = theirs.find(origin);
    const uint64_t have = it == theirs.end() ? 0 : it->second;
    if (seq > have) lacking += seq - have;
  }
  return lacking;
}

bool Replicator::push_waits_for_snapshot(uint64_t peer, const std::map<uint64_t, uint64_t>& applied) const {
  if (snapshot_faster_ops_ == 0) return false;
  auto it = peer_advised_snapshot_.find(peer);
  if (it != peer_advised_snapshot_.end()) return it->second;  // advised: it installs; else it replays
  // Not heard from yet: it may be a newcomer that every member will advise (the ops of all
  // origins count, not only this pod's: its few own ops pushed first would keep the
  // newcomer from installing). Until its first report, at most one round trip.
  uint64_t lacking = 0;
  for (auto& [origin, seq] : applied) {
    const uint64_t has = peer_has(peer, origin);
    if (seq > has) lacking += seq - has;
  }
  return lacking > snapshot_faster_ops_;
}

bool Replicator::deliverable(const pb::Op& op, const std::map<uint64_t, uint64_t>& applied) const {
  auto have = [&](uint64_t origin) {
    auto it = applied.find(origin);
    return it == applied.end() ? 0 : it->second;
  };
  if (op.seq() != have(op.origin()) + 1) return false;
  for (auto& [origin, seq] : op.deps())
    if (have(origin) < seq) return false;
  return true;
}

void Replicator::deliver_waiting(Namespace::RemoteBatch& batch) {
  // Keep applying while some waiting op became deliverable. Each pass applies at least one
  // op or stops, so the loop is bounded by the number of waiting ops.
  for (bool progressed = true; progressed && waiting_count_ > 0;) {
    progressed = false;
    auto applied = batch.applied();
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      auto& queue = it->second;
      // Drop what was applied meanwhile (duplicates).
      while (!queue.empty() && queue.begin()->first <= applied[it->first]) {
        waiting_bytes_ -= queue.begin()->second.ByteSizeLong();
        queue.erase(queue.begin());
        waiting_count_--;
      }
      while (!queue.empty() && deliverable(queue.begin()->second, applied)) {
        const pb::Op& op = queue.begin()->second;
        const size_t bytes = op.ByteSizeLong();
        std::string why;
        if (!batch.in_order(op, &why)) {
          // Its stamp does not follow its origin's previous op: a forged or broken history.
          // Dropped; the origin stalls here, whoever sends it again.
          if (std::exchange(refused_seq_[op.origin()], op.seq()) != op.seq())
            spdlog::warn("replication: op {} of pod {:016x} refused: {}", op.seq(), op.origin(), why);
          queue.erase(queue.begin());
          waiting_count_--;
          waiting_bytes_ -= bytes;
          continue;
        }
        if (batch.apply(op, &changed_) != 0) return;  // storage failure: retry on the next message
        applied[op.origin()] = op.seq();
        queue.erase(queue.begin());
        waiting_count_--;
        waiting_bytes_ -= bytes;
        progressed = true;
      }
      it = queue.empty() ? waiting_.erase(it) : std::next(it);
    }
  }
}

bool Replicator::origin_has_room(uint64_t origin, const std::map<uint64_t, uint64_t>& applied) const {
  if (applied.count(origin) || waiting_.count(origin)) return true;
  return applied.size() + waiting_.size() < kMaxOrigins;
}

std::vector<Replicator::Outgoing> Replicator::receive(uint64_t from, const pb::PeerMessage& message, uint64_t now_ms,
                                                      std::string* rejected) {
  std::vector<Outgoing> out;
  if (std::find(peers_.begin(), peers_.end(), from) == peers_.end()) {
    spdlog::warn("replication: message from unknown pod {:016x} ignored", from);
    return out;
  }
  // Nothing of a message is used before all of it is known to be valid: one bad op
  // discredits the batch (and its progress report) it came in.
  limits_.now_ms = now_ms;
  std::string why;
  if (!validate_peer_message(message, limits_, &why)) {
    if (rejected) *rejected = why;
    return out;
  }
  if (message.has_sync_request()) {
    note_peer_progress(from, message.sync_request());
    const bool advise = message.sync_request().accepts_snapshot() && snapshot_faster_ops_ > 0 &&
                        ops_lacking(message.sync_request().applied()) > snapshot_faster_ops_;
    peer_advised_snapshot_[from] = advise;
    pb::PeerMessage reply;
    if (advise) {
      // A newcomer far behind: a snapshot is faster than the replay (set_snapshot_faster_ops).
      reply.mutable_ops()->set_snapshot_needed(true);
      reply.mutable_ops()->set_snapshot_optional(true);
      *reply.mutable_ops()->mutable_sender_progress() = progress_message();
      out.push_back(Outgoing{from, std::move(reply)});
      return out;
    }
    // Answer with what the peer lacks, origin by origin, up to one batch.
    add_missing_ops(message.sync_request().applied(), true, reply.mutable_ops());
    // This pod's ops in the answer need not be pushed again.
    uint64_t& cursor = pushed_[from];
    for (const pb::Op& op : reply.ops().ops())
      if (op.origin() == self_) cursor = std::max(cursor, op.seq());
    *reply.mutable_ops()->mutable_sender_progress() = progress_message();
    out.push_back(Outgoing{from, std::move(reply)});
    return out;
  }
  if (message.has_ops()) {
    if (message.ops().has_sender_progress()) note_peer_progress(from, message.ops().sender_progress());
    if (message.ops().snapshot_needed()) {
      // Optional advice to a pod that has applied something meanwhile (another member's
      // answer or push came first): it replays, as the adviser will see from its next
      // request.
      if (!message.ops().snapshot_optional() || ns_.empty_history()) snapshot_source_ = from;
      return out;  // nothing to apply: a snapshot replaces what this pod has
    }
    if (static_cast<size_t>(message.ops().ops_size()) >= kMaxBatchOps) {
      // One peer is asked again, not all: they would all send the same ops. The origin of
      // the ops is preferred, since its pushes skip what it gave in answers.
      const bool own = message.ops().ops(0).origin() == from;
      if (pull_again_.empty() || (own && pull_again_[0] != from)) pull_again_.assign(1, from);
    }
    // One store write for the whole message (see Namespace::RemoteBatch).
    Namespace::RemoteBatch batch(ns_);
    auto applied = batch.applied();
    for (const pb::Op& op : message.ops().ops()) {
      auto have = applied.find(op.origin());
      if (have != applied.end() && op.seq() <= have->second) continue;  // already have it
      // The usual case, in order with nothing waiting before it: applied at once, without
      // a copy into the waiting buffer.
      if (!waiting_.count(op.origin()) && origin_has_room(op.origin(), applied) && deliverable(op, applied)) {
        std::string why;
        if (!batch.in_order(op, &why)) {
          if (std::exchange(refused_seq_[op.origin()], op.seq()) != op.seq())
            spdlog::warn("replication: op {} of pod {:016x} refused: {}", op.seq(), op.origin(), why);
          continue;
        }
        if (batch.apply(op, &changed_) != 0) break;  // storage failure: sent again later
        applied[op.origin()] = op.seq();
        continue;
      }
      const size_t bytes = op.ByteSizeLong();
      // Beyond the bounds, anti-entropy brings the op again once there is room.
      if (waiting_count_ >= kMaxWaitingOps || waiting_bytes_ + bytes > kMaxWaitingBytes) break;
      if (!origin_has_room(op.origin(), applied)) continue;
      auto [at, added] = waiting_[op.origin()].emplace(op.seq(), op);
      if (added) {
        waiting_count_++;
        waiting_bytes_ += bytes;
      } else {
        // Copies of one op from honest pods are identical. One that differs is forged or
        // broken (say, with dependencies that never come): the latest copy replaces it, so
        // a bad copy holds its origin back only until a good one arrives.
        waiting_bytes_ = waiting_bytes_ - at->second.ByteSizeLong() + bytes;
        at->second = op;
      }
    }
    if (waiting_count_ > 0) deliver_waiting(batch);
    batch.commit();  // a failure is logged; the ops come again (anti-entropy)
    if (message.ops().ops_size() > 0) {
      // Acknowledge with what this pod has now, durably (one log sync for the whole batch).
      // An acknowledgement carries no ops, so it is never answered itself.
      if (int err = ns_.make_received_durable())
        spdlog::error("cannot make metadata durable: {}", std::strerror(err));
      pb::PeerMessage ack;
      *ack.mutable_ops()->mutable_sender_progress() = progress_message();
      out.push_back(Outgoing{from, std::move(ack)});
    }
  }
  return out;
}

void Replicator::add_missing_ops(const google::protobuf::Map<uint64_t, uint64_t>& theirs, bool told,
                                 pb::OpBatch* batch) {
  std::map<uint64_t, uint64_t> have_here = ns_.applied();
  // This pod's own ops leave it only once durable (Namespace::ops_after): the ones not yet
  // durable are not "trimmed", they are simply not given yet.
  have_here[self_] = ns_.durable_applied()[self_];
  // The ops they lack, in stamp order across origins: a stamp is above the stamps of every
  // op its op depends on, so each prefix of this order is deliverable there. (Origin by
  // origin, a backlog of one origin could fill every answer with ops that wait for another
  // origin's ops the answer never reaches: the asker stalled, e.g. behind a lost pod whose
  // ops only relays have.) Each origin's log is read in slices, merged as it goes.
  struct Cursor {
    uint64_t origin;
    uint64_t read_to;  // the last seq read from the log
    std::vector<pb::Op> ops;
    size_t at = 0;
    bool exhausted = false;  // nothing more to read (the log's end, or held back)
  };
  auto read_slice = [&](Cursor& c) {
    c.ops = ns_.ops_after(c.origin, c.read_to, kMergeSliceOps);
    c.at = 0;
    c.exhausted = c.ops.size() < kMergeSliceOps;
    if (!c.ops.empty()) c.read_to = c.ops.back().seq();
  };
  auto hold = [&](Cursor& c) {
    if (c.origin != self_) return;
    const size_t before = c.ops.size();
    hold_back(c.ops);
    if (c.ops.size() < before) c.exhausted = true;  // later ops of this origin must not go before it
  };
  std::vector<Cursor> cursors;
  for (auto& [origin, seq] : have_here) {
    auto it = theirs.find(origin);
    const uint64_t have = it == theirs.end() ? 0 : it->second;
    if (have >= seq) continue;
    Cursor c{origin, have, {}, 0, false};
    read_slice(c);
    // The next op they need was trimmed (every member had it then; they joined later).
    // Only said when `theirs` is what they told (not what this pod believes they have),
    // and then alone: ops applied now would keep them from installing the snapshot.
    if (c.ops.empty() || c.ops.front().seq() != have + 1) {
      if (!told) continue;
      batch->clear_ops();
      batch->set_snapshot_needed(true);
      return;
    }
    hold(c);
    cursors.push_back(std::move(c));
  }
  // The cursor's next op, reading the next slice when the current one is used up.
  auto head = [&](Cursor& c) -> const pb::Op* {
    if (c.at >= c.ops.size()) {
      if (c.exhausted) return nullptr;
      read_slice(c);
      hold(c);
      if (c.ops.empty()) {
        c.exhausted = true;
        return nullptr;
      }
    }
    return &c.ops[c.at];
  };
  // Bounded: each pass moves one op into the batch, or finds every cursor exhausted.
  while (static_cast<size_t>(batch->ops_size()) < kMaxBatchOps) {
    Cursor* first = nullptr;
    for (Cursor& c : cursors) {
      const pb::Op* op = head(c);
      if (op && (!first || from_pb(op->hlc()) < from_pb(first->ops[first->at].hlc()))) first = &c;
    }
    if (!first) break;
    *batch->add_ops() = std::move(first->ops[first->at++]);
  }
}

Replicator::Outgoing Replicator::catch_up(uint64_t peer) {
  pb::PeerMessage msg;
  if (push_waits_for_snapshot(peer, ns_.applied())) {
    // A newcomer about to install a snapshot (or not heard from, far behind): ops would
    // keep it from installing. It is sent nothing; it acknowledges once it has the snapshot.
    *msg.mutable_ops()->mutable_sender_progress() = progress_message();
    return Outgoing{peer, std::move(msg)};
  }
  pb::Progress known;
  auto it = peer_applied_.find(peer);
  if (it != peer_applied_.end())
    for (auto& [origin, seq] : it->second) (*known.mutable_applied())[origin] = seq;
  add_missing_ops(known.applied(), false, msg.mutable_ops());
  *msg.mutable_ops()->mutable_sender_progress() = progress_message();
  return Outgoing{peer, std::move(msg)};
}

uint64_t Replicator::peer_has(uint64_t peer, uint64_t origin) const {
  auto it = peer_applied_.find(peer);
  if (it == peer_applied_.end()) return 0;
  auto o = it->second.find(origin);
  return o == it->second.end() ? 0 : o->second;
}

std::map<uint64_t, uint64_t> Replicator::everyone_has() const {
  std::map<uint64_t, uint64_t> result = ns_.applied();
  for (uint64_t peer : peers_) {
    auto it = peer_applied_.find(peer);
    for (auto& [origin, seq] : result) {
      uint64_t theirs = 0;
      if (it != peer_applied_.end()) {
        auto o = it->second.find(origin);
        if (o != it->second.end()) theirs = o->second;
      }
      seq = std::min(seq, theirs);
    }
  }
  return result;
}

}  // namespace wormhole
