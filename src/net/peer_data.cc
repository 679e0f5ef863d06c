// PeerNode, data side: where new versions go (placement), how their chunks get there (a
// push along a chain of holders, or a pull by a holder that missed it), and fetching a
// chunk this pod lacks.
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <cerrno>
#include <cmath>
#include <map>
#include <set>

#include "cluster/repair.h"
#include "common/pb_ids.h"
#include "meta/op_validation.h"
#include "net/peer.h"

namespace wormhole {
namespace {

constexpr auto kChunkDeadline = std::chrono::seconds(30);
// How many versions the held-version pull tries per tick, and how soon it retries one.
constexpr size_t kHeldPerTick = 8;
constexpr int64_t kHeldRetryMs = 2000;
// Async copies waiting for the push thread, at most (beyond, holders pull).
constexpr size_t kMaxPushQueue = 10000;
// Read-ahead requests waiting for a worker, at most: this many bytes of chunks (64 with
// 4 MiB chunks, 4096 with 64 KiB ones), never fewer than 64 chunks.
constexpr uint64_t kMaxPrefetchQueueBytes = 256 << 20;
// Sync mode: how long a close waits for the holders to acknowledge the version's op (a
// holder that lacks many ops needs several batches). A holder that does not answer is
// given up at once; past the deadline the version is listed as under-replicated.
constexpr int64_t kDeliverDeadlineMs = 10000;
// Between delivery rounds to holders that answered without having the op yet.
constexpr int64_t kDeliverRetryMs = 50;
// A push may take 10 s plus the time to send its bytes at 8 MB/s: a slower peer is dropped
// (and passed over until it answers again), so a close waits seconds for a stuck peer,
// not minutes.
constexpr int64_t kPushBaseDeadlineMs = 10000;
constexpr uint64_t kPushSlowestBytesPerS = 8 << 20;
// A holder forwarding along the chain ends its stream this long before its own deadline.
constexpr int64_t kForwardMarginMs = 2000;
// How often the held-version worker looks for versions due for a pull.
constexpr auto kHoldTick = std::chrono::milliseconds(200);
// How often incomplete versions are looked for (PeerNode::complete_versions).
constexpr auto kCompleteEvery = std::chrono::seconds(2);

// Bounds on what one push may announce.
constexpr int kMaxExpectedChunks = 1 << 20;

// One outgoing PushChunks stream: to the first holder of a chain (writer) or to the next
// one (a holder forwarding). Not thread-safe.
// The deadline of a push of `bytes`.
std::chrono::system_clock::time_point push_deadline(uint64_t bytes) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(kPushBaseDeadlineMs + bytes * 1000 / kPushSlowestBytesPerS);
}

class PushStream {
 public:
  PushStream(pb::Peer::Stub& stub, const pb::ChunkPiece& head, std::chrono::system_clock::time_point deadline) {
    ctx_.set_deadline(deadline);
    writer_ = stub.PushChunks(&ctx_, &reply_);
    ok_ = writer_->Write(head);
  }
  bool write(const pb::ChunkPiece& piece) { return ok_ = ok_ && writer_->Write(piece); }
  // Ends the stream; the pods of the chain that stored everything (empty on failure).
  // *unreachable: the first pod could not be reached or was too slow (transport failure).
  std::vector<uint64_t> finish(std::string* error, bool* unreachable = nullptr) {
    if (ok_) writer_->WritesDone();
    grpc::Status st = writer_->Finish();
    if (!st.ok()) {
      *error = st.error_message();
      if (unreachable)
        *unreachable = st.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      return {};
    }
    if (!reply_.error().empty()) *error = reply_.error();
    return {reply_.stored_on().begin(), reply_.stored_on().end()};
  }

 private:
  grpc::ClientContext ctx_;
  pb::PushReply reply_;
  std::unique_ptr<grpc::ClientWriter<pb::ChunkPiece>> writer_;
  bool ok_ = false;
};

class ChunkStream;
// Streams that ended, for the fetch that started them (which may have returned already:
// the losers of a race end later, on gRPC's threads).
struct ChunkRace {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<ChunkStream>> finished;
  bool closed = false;  // the fetch returned: streams ending later just go away
};

// One ReadChunk call: collects the pieces of a chunk in order. Owns itself until gRPC says
// it is done (then it is handed to the race). Pieces arrive on gRPC's threads, one at a time.
class ChunkStream final : public grpc::ClientReadReactor<pb::ChunkPiece> {
 public:
  static std::shared_ptr<ChunkStream> start(pb::Peer::Stub& stub, std::string peer_name, pb::ChunkRequest req,
                                            uint64_t max_bytes, std::chrono::system_clock::time_point deadline,
                                            std::shared_ptr<ChunkRace> race) {
    std::shared_ptr<ChunkStream> s(new ChunkStream(std::move(peer_name), std::move(req), max_bytes, std::move(race)));
    s->self_ = s;
    s->ctx_.set_deadline(deadline);
    stub.async()->ReadChunk(&s->ctx_, &s->req_, s.get());
    s->StartRead(&s->piece_);
    s->StartCall();
    return s;
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    if (piece_.offset() != req_.offset() + data_.size() || data_.size() + piece_.data().size() > max_bytes_ ||
        (!piece_.table().empty() && (!data_.empty() || !table_.empty() || piece_.table().size() > max_table_bytes_))) {
      ctx_.TryCancel();  // out of order, too long, a second or huge table: not a chunk of ours
      return;
    }
    if (!piece_.table().empty()) table_ = piece_.table();
    data_ += piece_.data();
    received_.store(data_.size(), std::memory_order_relaxed);
    last_ = piece_.last();
    StartRead(&piece_);
  }
  void OnDone(const grpc::Status& status) override {
    ok_ = status.ok() && last_;
    code_ = status.error_code();
    std::shared_ptr<ChunkStream> me = std::move(self_);
    {
      std::lock_guard lock(race_->mu);
      if (!race_->closed) {
        race_->finished.push_back(me);  // the fetch takes it from here
        race_->cv.notify_one();
      }
    }
    // `me` may be the last owner: this object ends with this call, after its last use.
  }
  // Read after the stream is in the race (OnDone ran): no more writes to these.
  bool complete() const { return ok_; }
  grpc::StatusCode code() const { return code_; }
  const std::string& data() const { return data_; }
  const std::string& table() const { return table_; }
  const std::string& peer_name() const { return peer_name_; }
  // Bytes received so far: any thread, while the stream runs.
  uint64_t received() const { return received_.load(std::memory_order_relaxed); }
  void cancel() { ctx_.TryCancel(); }

 private:
  ChunkStream(std::string peer_name, pb::ChunkRequest req, uint64_t max_bytes, std::shared_ptr<ChunkRace> race)
      : peer_name_(std::move(peer_name)),
        req_(std::move(req)),
        max_bytes_(max_bytes),
        max_table_bytes_((req_.chunk_size() / ChunkStore::kBlockBytes + 1) * ChunkStore::kHashBytes),
        race_(std::move(race)) {}
  const std::string peer_name_;
  grpc::ClientContext ctx_;
  const pb::ChunkRequest req_;
  const uint64_t max_bytes_;
  const uint64_t max_table_bytes_;
  const std::shared_ptr<ChunkRace> race_;
  std::shared_ptr<ChunkStream> self_;  // until OnDone
  pb::ChunkPiece piece_;
  std::string data_, table_;
  bool last_ = false, ok_ = false;
  std::atomic<uint64_t> received_{0};
  grpc::StatusCode code_ = grpc::StatusCode::UNKNOWN;
};

// A worker's wait: takes the next job of `queue` into *job; false once `stop` is set.
template <class Job>
bool next_job(std::mutex& mu, std::condition_variable& cv, std::deque<Job>& queue, const std::atomic<bool>& stop,
              Job* job) {
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return stop || !queue.empty(); });
  if (stop) return false;
  *job = std::move(queue.front());
  queue.pop_front();
  return true;
}

}  // namespace

nlohmann::json PeerNode::transfer() {
  return {{"pushed_bytes", pushed_bytes_.load()},
          {"received_bytes", received_bytes_.load()},
          {"fetched_bytes", fetched_bytes_.load()},
          {"served_bytes", served_bytes_.load()},
          {"op_bytes_sent", op_bytes_sent_.load()}};
}

PeerNode::Peer* PeerNode::peer_by_id(uint64_t id) {
  for (auto& p : peers())
    if (p->id == id) return p.get();
  return nullptr;
}

std::vector<PeerNode::Peer*> PeerNode::ranked_storage_peers(Gid key) {
  // Rendezvous hashing on (file, pod), highest first: adding a pod moves only the keys it
  // now wins, and keyed on the inode a file's versions stay on the same pods, so an edit
  // sends only the chunks it changed. The same order as the balance planner's
  // (cluster/repair.h: plan_balance): a version placed here is never moved by a balance.
  // Unweighted for that reason: free space as a weight would differ between pods' views and
  // drift with every write, and balance would chase it. (Capacity weights, labels and
  // affinities are a later step; a pod without room is passed over meanwhile.)
  std::vector<std::pair<uint64_t, Peer*>> scored;
  for (auto& p : peers()) {  // no lock: see Peer::id
    const uint64_t id = p->id;
    // A pod that did not answer its last exchange is passed over: a live pod holds the copy
    // now instead of a down one some day. So is a pod without room for a chunk.
    if (!p->storage || id == 0 || p->reported_down || p->forgotten || p->draining ||
        p->free_bytes < config_.network.chunk_size)
      continue;
    scored.emplace_back(rendezvous_hash(key, id), p.get());
  }
  std::sort(scored.begin(), scored.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<Peer*> ranked;
  for (auto& [score, p] : scored) ranked.push_back(p);
  return ranked;
}

std::vector<uint64_t> PeerNode::choose_holders(Gid inode) {
  std::vector<uint64_t> holders;
  if (self_.role == "storage" && !self_draining_ && my_space().free_bytes() >= config_.network.chunk_size)
    holders.push_back(pod_id_);
  std::vector<Peer*> ranked = ranked_storage_peers(inode);
  const size_t want = copies_wanted();
  for (Peer* p : ranked) {
    if (holders.size() >= want) break;
    holders.push_back(p->id);
  }
  note_placement(holders.size(), want);
  return holders;
}

size_t PeerNode::copies_wanted() {
  if (config_.network.redundancy > 0) return config_.network.redundancy;
  // "all": every storage pod, reachable or not, but a draining one (it is leaving).
  size_t storage_pods = self_.role == "storage" && !self_draining_;
  for (auto& p : peers()) storage_pods += p->storage && !p->forgotten && !p->draining;
  return storage_pods;
}

void PeerNode::note_placement(size_t found, size_t wanted) {
  if (found < wanted) ++placements_short_;
  // Logged when the shortfall appears, changes or ends: not for every file.
  const uint64_t state = found < wanted ? (uint64_t{found} << 32 | wanted) : 0;
  const uint64_t before = placement_state_.exchange(state);
  if (state == before) return;
  if (state != 0)
    spdlog::warn("placement: {} of {} wanted copies can be placed (not enough reachable storage pods with room); "
                 "new versions are under-replicated (`wormhole status`)",
                 found, wanted);
  else
    spdlog::info("placement: enough reachable storage pods with room again for {} copies", wanted);
}

void PeerNode::chunks_to_copy(const std::vector<pb::ChunkRef>& chunks, Gid base, std::vector<std::string>* send,
                              std::vector<std::string>* expected) {
  std::set<std::string> seen;
  for (const pb::ChunkRef& c : chunks)
    if (!c.sha256().empty() && c.inline_data().empty() && seen.insert(c.sha256()).second)
      expected->push_back(c.sha256());
  if (expected->empty()) return;  // inline content only: nothing to copy, no base to read
  // The holders of the base version have its chunks; a holder that does not (placement
  // changed) fetches them, as `expected` tells it. The base is superseded by the time an
  // async copy starts (committed() runs after the commit): it is still kept then. (Before
  // it was, every edit sent the whole file: 1.1 MB per SQLite commit to the second holder.)
  std::set<std::string> base_chunks;
  pb::VersionRecord base_rec;
  if (!base.empty() && ns_.get_recent_version(base, &base_rec))
    for (const pb::ChunkRef& c : base_rec.chunks()) base_chunks.insert(c.sha256());
  for (const std::string& sha : *expected)
    if (!base_chunks.count(sha)) send->push_back(sha);
}

std::vector<uint64_t> PeerNode::place(Gid inode, Gid base_version, const std::vector<pb::ChunkRef>& chunks) {
  std::vector<uint64_t> holders = choose_holders(inode);
  if (config_.network.replication_mode != "sync") return holders;  // committed() starts the copies
  std::vector<std::string> send, expected;
  chunks_to_copy(chunks, base_version, &send, &expected);
  if (expected.empty()) return holders;  // the content is inline: the version op carries it
  const bool self_holds = !holders.empty() && holders.front() == pod_id_;
  if (self_holds) {
    if (int err = chunks_.sync_chunks(expected)) {
      spdlog::error("{}: making the chunks durable here failed: {}", ns_.path_of(inode), std::strerror(err));
      holders.erase(holders.begin());
    }
  }
  std::vector<uint64_t> chain(holders.begin() + (holders.empty() || holders.front() != pod_id_ ? 0 : 1), holders.end());
  std::vector<uint64_t> result(holders.begin(), holders.end() - static_cast<ptrdiff_t>(chain.size()));
  std::set<uint64_t> stored, tried(chain.begin(), chain.end());
  if (!chain.empty())
    for (uint64_t id : push_chain(chain, send, expected, true)) stored.insert(id);
  // Holders the chain did not reach (behind one that failed) get a direct copy, all at
  // once; the pod that failed is down now (push_chain marked it) and is not waited for again.
  std::vector<uint64_t> retry;
  for (uint64_t id : chain)
    if (Peer* p = peer_by_id(id); p && !stored.count(id) && !p->reported_down) retry.push_back(id);
  for (uint64_t got : push_each(retry, send, expected)) stored.insert(got);
  for (uint64_t id : chain)
    if (stored.count(id)) result.push_back(id);
  // Still short: other reachable storage pods in rendezvous order, as many at once as
  // copies are missing. A new holder lacks the base version's chunks: it gets everything.
  const size_t want = copies_wanted();
  const std::vector<Peer*> ranked = ranked_storage_peers(inode);
  for (size_t next = 0; result.size() < want && next < ranked.size();) {  // bounded: `next` advances
    std::vector<uint64_t> batch;
    for (; next < ranked.size() && batch.size() < want - result.size(); ++next)
      if (tried.insert(ranked[next]->id).second) batch.push_back(ranked[next]->id);
    for (uint64_t got : push_each(batch, expected, expected)) result.push_back(got);
  }
  // Fewer copies than wanted: committed() logs it with the version and lists it.
  return result;
}

std::vector<uint64_t> PeerNode::push_each(const std::vector<uint64_t>& targets, const std::vector<std::string>& send,
                                          const std::vector<std::string>& expected) {
  std::vector<std::vector<uint64_t>> got(targets.size());
  std::vector<std::thread> others;  // at most redundancy - 1 (targets are distinct peers)
  for (size_t i = 1; i < targets.size(); ++i)
    others.emplace_back([&, i] { got[i] = push_chain({targets[i]}, send, expected, true); });
  if (!targets.empty()) got[0] = push_chain({targets[0]}, send, expected, true);
  for (std::thread& t : others) t.join();
  std::vector<uint64_t> stored;
  for (size_t i = 0; i < targets.size(); ++i)
    if (std::find(got[i].begin(), got[i].end(), targets[i]) != got[i].end()) stored.push_back(targets[i]);
  return stored;
}

void PeerNode::committed(Gid version, Gid base_version, const std::vector<pb::ChunkRef>& chunks,
                         const std::vector<uint64_t>& holders) {
  pb::VersionRecord rec;
  const bool known = ns_.get_version(version, &rec);  // its inode and op (a newer one may have replaced it)
  const Gid inode = known ? from_pb(rec.inode()) : Gid{};
  if (config_.network.replication_mode != "sync") {
    if (known) note_copies(version, inode, rec.op_seq(), holders, nullptr);
    PushJob job;
    for (uint64_t id : holders)
      if (id != pod_id_) job.chain.push_back(id);
    if (job.chain.empty()) return;
    chunks_to_copy(chunks, base_version, &job.send, &job.expected);
    if (job.expected.empty()) return;  // inline content: the op carries it
    std::lock_guard lock(push_mu_);
    if (push_queue_.size() < kMaxPushQueue) push_queue_.push_back(std::move(job));  // else holders pull
    push_cv_.notify_one();
    return;
  }
  // network.replication.delay holds the op back on purpose: nothing to wait for.
  if (config_.network.replication_delay_ms > 0) {
    if (known) note_copies(version, inode, rec.op_seq(), holders, nullptr);
    return;
  }
  // The op leaves only once durable here (Namespace::ops_after).
  std::vector<uint64_t> acked;
  if (int err = ns_.make_durable())
    spdlog::error("cannot make the new version of a file durable: {}", std::strerror(err));  // no copy is acknowledged
  else if (known)
    acked = deliver_ops_to(holders, rec.op_seq(), steady_now_ms() + kDeliverDeadlineMs);
  if (known) note_copies(version, inode, rec.op_seq(), holders, &acked);
}

std::vector<uint64_t> PeerNode::deliver_ops_to(const std::vector<uint64_t>& holders, uint64_t seq,
                                               int64_t deadline_ms) {
  std::vector<uint64_t> acked;
  std::vector<Peer*> pending;
  for (uint64_t id : holders) {
    if (id == pod_id_) {
      acked.push_back(id);  // durable here: the caller made it so
    } else if (Peer* peer = peer_by_id(id); peer && !peer->reported_down) {
      pending.push_back(peer);  // a pod whose last exchange failed is not waited for
    }
  }
  for (bool first = true; !pending.empty(); first = false) {  // bounded by deadline_ms
    if (!first) {
      if (steady_now_ms() + kDeliverRetryMs >= deadline_ms) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(kDeliverRetryMs));  // it is applying; ask again
    }
    std::vector<Outbound> batch;
    {
      std::lock_guard lock(mu_);  // no I/O under it: catch_up reads the op log
      for (Peer* peer : pending) {
        if (replicator_.peer_has(peer->id, pod_id_) >= seq) acked.push_back(peer->id);
        else batch.push_back(Outbound{peer, replicator_.catch_up(peer->id).message});
      }
    }
    pending.clear();
    if (batch.empty()) break;
    // Called in close, under the file's lock: kernel notifications wait for the loop.
    const std::vector<bool> answered = exchange_all(batch, false);
    // A holder that did not answer is down: it catches up by anti-entropy when back (and
    // review_under_replicated() then sees its acknowledgement). One that answered usually
    // acknowledged the op in that answer: no wait before looking.
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!answered[i]) continue;
      if (replicator_.peer_has(batch[i].peer->id, pod_id_) >= seq)
        acked.push_back(batch[i].peer->id);
      else
        pending.push_back(batch[i].peer);
    }
  }
  if (!pending.empty()) {  // answered, but did not have the op by the deadline: ask once more
    std::lock_guard lock(mu_);
    for (Peer* peer : pending)
      if (replicator_.peer_has(peer->id, pod_id_) >= seq) acked.push_back(peer->id);
  }
  return acked;
}

std::string PeerNode::pod_names(const std::vector<uint64_t>& ids) {
  std::string out;
  for (uint64_t id : ids) {
    if (!out.empty()) out += ", ";
    out += describe(id)["name"].get<std::string>();
  }
  return out;
}

void PeerNode::note_copies(Gid version, Gid inode, uint64_t seq, const std::vector<uint64_t>& holders,
                           const std::vector<uint64_t>* acked) {
  UnderReplicated u;
  u.version = version;
  u.inode = inode;
  u.op_seq = seq;
  u.wanted = copies_wanted();
  u.holders = holders;
  if (acked)
    for (uint64_t id : holders)
      if (std::find(acked->begin(), acked->end(), id) == acked->end()) u.without_op.push_back(id);
  const size_t copies = holders.size() - u.without_op.size();
  if (copies >= u.wanted) return;
  std::string missing;
  if (holders.size() < u.wanted)
    missing = fmt::format("no copy for {} more (not enough reachable storage pods)", u.wanted - holders.size());
  if (!u.without_op.empty())
    missing += fmt::format("{}op not acknowledged by {}", missing.empty() ? "" : "; ", pod_names(u.without_op));
  spdlog::warn("{}: version {} is under-replicated: {} of {} copies; {}", ns_.path_of(inode), version.str(), copies,
               u.wanted, missing);
  std::lock_guard lock(under_mu_);
  if (under_.size() >= kMaxUnderReplicated) {
    ++under_untracked_;
    return;
  }
  under_.push_back(std::move(u));
}

void PeerNode::review_under_replicated() {
  std::vector<UnderReplicated> entries;
  {
    std::lock_guard lock(under_mu_);
    entries.assign(under_.begin(), under_.end());
  }
  if (entries.empty()) return;
  std::set<Gid> drop;
  std::map<Gid, std::vector<uint64_t>> still_without;
  std::map<Gid, std::vector<uint64_t>> holders_now;  // repair copies claimed since (HoldVersion)
  pb::VersionRecord rec;
  for (const UnderReplicated& u : entries) {
    if (!ns_.get_version(u.version, &rec)) {
      drop.insert(u.version);  // replaced: the newer version counts
      continue;
    }
    std::vector<uint64_t>& h = holders_now[u.version];
    for (uint64_t id : rec.holders())
      if (std::find(h.begin(), h.end(), id) == h.end()) h.push_back(id);
  }
  {
    std::lock_guard lock(mu_);
    for (const UnderReplicated& u : entries) {
      if (drop.count(u.version) || u.without_op.empty()) continue;
      std::vector<uint64_t>& left = still_without[u.version];
      for (uint64_t id : u.without_op)
        if (replicator_.peer_has(id, pod_id_) < u.op_seq) left.push_back(id);
    }
  }
  for (const UnderReplicated& u : entries)
    if (!drop.count(u.version) && u.without_op.empty()) still_without[u.version];  // nothing left to acknowledge
  for (auto& [v, left] : still_without) {
    const UnderReplicated& u = *std::find_if(entries.begin(), entries.end(), [&](auto& e) { return e.version == v; });
    if (left.empty() && holders_now[v].size() >= u.wanted) {
      spdlog::info("{}: version {} has its {} copies now", ns_.path_of(u.inode), v.str(), u.wanted);
      drop.insert(v);
    }
  }
  std::lock_guard lock(under_mu_);
  for (auto it = under_.begin(); it != under_.end();) {
    if (drop.count(it->version)) {
      it = under_.erase(it);
      continue;
    }
    if (auto left = still_without.find(it->version); left != still_without.end()) it->without_op = left->second;
    if (auto h = holders_now.find(it->version); h != holders_now.end()) it->holders = h->second;
    ++it;
  }
}

nlohmann::json PeerNode::under_replication(size_t max_listed) {
  std::vector<UnderReplicated> listed;
  size_t count;
  uint64_t untracked;
  {
    std::lock_guard lock(under_mu_);
    count = under_.size();
    untracked = under_untracked_;
    for (size_t i = 0; i < under_.size() && i < max_listed; ++i) listed.push_back(under_[i]);
  }
  nlohmann::json versions = nlohmann::json::array();
  for (const UnderReplicated& u : listed) {
    nlohmann::json holders = nlohmann::json::array(), without = nlohmann::json::array();
    for (uint64_t id : u.holders) holders.push_back(describe(id)["name"]);
    for (uint64_t id : u.without_op) without.push_back(describe(id)["name"]);
    versions.push_back({{"path", ns_.path_of(u.inode)},
                        {"version", u.version.str()},
                        {"copies", u.holders.size() - u.without_op.size()},
                        {"wanted", u.wanted},
                        {"holders", holders},
                        {"without_op", without}});
  }
  return {{"redundancy", copies_wanted()},
          {"under_replicated", count + untracked},
          {"untracked", untracked},
          {"versions", versions},
          {"placements_short", placements_short_.load()}};
}

nlohmann::json PeerNode::replication_of(Gid version, const pb::VersionRecord& rec) {
  std::vector<uint64_t> without;
  {
    std::lock_guard lock(under_mu_);
    for (const UnderReplicated& u : under_)
      if (u.version == version) without = u.without_op;
  }
  const size_t wanted = copies_wanted();
  const size_t copies = static_cast<size_t>(rec.holders_size()) - std::min<size_t>(without.size(), rec.holders_size());
  nlohmann::json names = nlohmann::json::array();
  for (uint64_t id : without) names.push_back(describe(id)["name"]);
  return {{"redundancy", wanted}, {"copies", copies}, {"under_replicated", copies < wanted}, {"without_op", names}};
}

void PeerNode::push_loop() {
  PushJob job;
  while (next_job(push_mu_, push_cv_, push_queue_, stop_, &job))
    push_chain(job.chain, job.send, job.expected, false);  // a holder it misses pulls the chunks later
}

std::vector<uint64_t> PeerNode::push_chain(const std::vector<uint64_t>& chain, const std::vector<std::string>& send,
                                           const std::vector<std::string>& expected, bool durable) {
  assert(!chain.empty());
  Peer* first = peer_by_id(chain.front());
  if (!first) return {};
  pb::ChunkPiece head;
  pb::PushHeader* h = head.mutable_header();
  identify(h);
  for (size_t i = 1; i < chain.size(); ++i) h->add_chain(chain[i]);
  h->set_durable(durable);
  for (const std::string& sha : expected) h->add_expected(sha);
  PushStream stream(*first->stub, head, push_deadline(send.size() * config_.network.chunk_size));
  std::string buf(kPieceBytes, '\0');
  for (const std::string& sha : send) {
    for (uint64_t offset = 0;; offset += kPieceBytes) {
      const ssize_t n = chunks_.read(sha, offset, kPieceBytes, buf.data());
      if (n < 0) break;  // not here any more: the holder fetches it (it is expected)
      pb::ChunkPiece piece;
      piece.set_sha256(sha);
      piece.set_offset(offset);
      piece.set_data(buf.data(), static_cast<size_t>(n));
      piece.set_last(static_cast<size_t>(n) < kPieceBytes);
      if (!stream.write(piece)) break;
      pushed_bytes_ += static_cast<uint64_t>(n);
      if (piece.last()) break;
    }
  }
  std::string error;
  bool unreachable = false;
  std::vector<uint64_t> stored = stream.finish(&error, &unreachable);
  if (!error.empty()) spdlog::warn("copying chunks to pod {} failed: {}", first->name, error);
  // What the exchanges do too: a pod that failed is passed over (placement, sync close)
  // until it answers again; one that took the copy is reachable.
  if (unreachable) first->reported_down = true;
  else if (error.empty() && first->reported_down.exchange(false))
    spdlog::info("pod {} ({}) reachable", first->name, first->address);
  return stored;
}

grpc::Status PeerNode::receive_push(grpc::ServerContext* ctx, grpc::ServerReader<pb::ChunkPiece>* reader,
                                    pb::PushReply* reply) {
  pb::ChunkPiece piece;
  if (!reader->Read(&piece) || !piece.has_header())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a push starts with its header");
  const pb::PushHeader header = piece.header();
  const std::string why =
      check_caller(ctx, header.protocol_version(), header.network(), header.chunk_size(), header.from_pod_name(),
                   header.from_pod_id());
  if (!why.empty()) {
    spdlog::warn("refused a push from {}: {}", ctx->peer(), why);
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why);
  }
  // The chain names other pods, each once; every chunk is a SHA-256, each announced once.
  std::set<uint64_t> chain_pods{pod_id_, header.from_pod_id()};
  bool chain_ok = header.chain_size() <= static_cast<int>(peers().size());
  for (uint64_t id : header.chain()) chain_ok &= id != 0 && chain_pods.insert(id).second;
  std::set<std::string> announced;
  bool expected_ok = header.expected_size() <= kMaxExpectedChunks;
  for (int i = 0; expected_ok && i < header.expected_size(); ++i)
    expected_ok = header.expected(i).size() == ChunkStore::kHashBytes && announced.insert(header.expected(i)).second;
  if (!chain_ok || !expected_ok) {
    spdlog::warn("refused a push from pod {}: {}", header.from_pod_name(),
                 chain_ok ? "malformed list of chunks" : "malformed chain");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "push header out of bounds");
  }
  // The rest of the chain gets every piece as it arrives, so all holders receive at once.
  std::unique_ptr<PushStream> next;
  Peer* next_peer = header.chain_size() > 0 ? peer_by_id(header.chain(0)) : nullptr;
  if (next_peer) {
    pb::ChunkPiece head;
    *head.mutable_header() = header;
    head.mutable_header()->set_from_pod_name(self_.name);
    head.mutable_header()->set_from_pod_id(pod_id_);
    head.mutable_header()->mutable_chain()->erase(head.mutable_header()->mutable_chain()->begin());
    // Ends before this push's own deadline: a stuck pod further down the chain costs its
    // own copy, not the answer of this holder (which the writer would count as failed).
    const auto deadline = std::min(push_deadline(header.expected_size() * config_.network.chunk_size),
                                   ctx->deadline() - std::chrono::milliseconds(kForwardMarginMs));
    next = std::make_unique<PushStream>(*next_peer->stub, head, deadline);
  }
  std::string error;
  std::string chunk;  // the chunk being received
  while (reader->Read(&piece)) {
    received_bytes_ += piece.data().size();
    if (next) {
      if (next->write(piece)) {
        pushed_bytes_ += piece.data().size();
      } else {
        std::string why_next;
        next->finish(&why_next);
        spdlog::warn("forwarding chunks to pod {} failed: {}", next_peer->name, why_next);
        next.reset();
      }
    }
    if (!error.empty()) continue;  // drain; nothing more is stored
    // Only announced chunks, each once: what a push can make this pod store is bounded by
    // its header.
    if (piece.sha256().size() != ChunkStore::kHashBytes || piece.offset() != chunk.size() ||
        chunk.size() + piece.data().size() > config_.network.chunk_size || !announced.count(piece.sha256())) {
      error = "malformed chunk piece";
      spdlog::warn("push from pod {}: {}", header.from_pod_name(), error);
      continue;
    }
    chunk += piece.data();
    if (!piece.last()) continue;
    announced.erase(piece.sha256());
    if (int err = chunks_.put_expected(chunk.data(), chunk.size(), piece.sha256())) {
      error = err == EBADMSG ? "chunk " + ChunkStore::hex(piece.sha256()) + " arrived with wrong content"
                             : std::string("storing a chunk: ") + std::strerror(err);
      spdlog::error("push from pod {}: {}", header.from_pod_name(), error);
    }
    chunk.clear();
  }
  if (error.empty() && !chunk.empty()) error = "push ended inside a chunk";
  // Chunks the writer did not send (the base version's) are fetched: the copy is whole.
  std::vector<std::string> expected(header.expected().begin(), header.expected().end());
  for (const std::string& sha : expected) {
    if (!error.empty()) break;
    if (sha.size() != ChunkStore::kHashBytes) error = "malformed chunk id";
    // refresh(), not contains(): a chunk kept here as cache (not held) may be old, and GC's
    // list of held chunks may predate this version; made young, GC keeps it past the commit.
    else if (!chunks_.refresh(sha) && fetch(sha, {header.from_pod_id()}) != 0)
      error = "chunk " + ChunkStore::hex(sha) + " unavailable";
  }
  if (error.empty() && header.durable())
    if (int err = chunks_.sync_chunks(expected)) error = std::string("syncing chunks: ") + std::strerror(err);
  if (error.empty()) reply->add_stored_on(pod_id_);
  else reply->set_error(error);
  if (next) {
    std::string why_next;
    for (uint64_t id : next->finish(&why_next)) reply->add_stored_on(id);
    if (!why_next.empty()) spdlog::warn("forwarding chunks to pod {} failed: {}", next_peer->name, why_next);
  }
  return grpc::Status::OK;
}

void PeerNode::hold_loop() {
  std::unique_lock lock(hold_mu_);
  auto next_complete = std::chrono::steady_clock::now();
  while (!stop_) {
    lock.unlock();
    const bool more = fetch_held_versions();
    if (std::chrono::steady_clock::now() >= next_complete) {
      next_complete = std::chrono::steady_clock::now() + kCompleteEvery;
      complete_versions();
    }
    lock.lock();
    if (!more) hold_cv_.wait_for(lock, kHoldTick, [this] { return stop_.load(); });
  }
}

void PeerNode::complete_versions() {
  const auto incomplete = ns_.incomplete_versions(kMaxVersionsPerRequest);
  if (incomplete.empty()) return;
  std::map<Gid, uint64_t> wanted;  // version -> its size here
  pb::VersionsRequest req;
  identify(&req);
  for (auto& [g, rec] : incomplete) {
    wanted[g] = rec.size();
    to_pb(g, req.add_versions());
  }
  // The writer of a version (its id names it) knows it whole for sure; then the others.
  std::vector<Peer*> order;
  for (auto& p : peers())
    if (!p->forgotten && !p->reported_down && p->id != 0) order.push_back(p.get());
  std::stable_partition(order.begin(), order.end(), [&](Peer* p) {
    return std::any_of(wanted.begin(), wanted.end(), [&](auto& w) { return w.first.pod == p->id; });
  });
  OpLimits limits;
  limits.chunk_size_bytes = config_.network.chunk_size;
  Namespace::Changed changed;
  for (Peer* peer : order) {  // bounded: peers, each call by its deadline
    if (wanted.empty() || stop_) break;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    pb::VersionsReply reply;
    if (!peer->stub->GetVersions(&ctx, req, &reply).ok()) continue;
    for (const pb::VersionsReply::Whole& w : reply.versions()) {
      const Gid g = from_pb(w.version());
      auto it = wanted.find(g);
      std::string why;
      if (it == wanted.end()) continue;  // not asked for
      if (w.size() != it->second || !validate_chunk_list(w.size(), w.chunks(), limits, &why)) {
        spdlog::warn("pod {} sent an invalid chunk list for version {}: {}", peer->name, g.str(),
                     why.empty() ? "another size" : why);
        continue;
      }
      if (ns_.complete_version(g, w.size(), w.chunks(), &changed))
        spdlog::info("version {} (a delta over a version this pod lacked) was completed from pod {}", g.str(),
                     peer->name);
      wanted.erase(it);
    }
  }
  if (content_listener_ && !changed.contents.empty()) content_listener_(changed.contents);
  for (uint64_t ino : changed.inodes) kernel_.forget_inode(ino);
}

bool PeerNode::fetch_held_versions() {
  for (size_t i = 0; i < kHeldPerTick && !stop_; ++i) {
    HeldVersion h;
    {
      std::lock_guard lock(hold_mu_);
      if (to_hold_.empty() || to_hold_.front().next_try_ms > steady_now_ms()) return false;
      h = to_hold_.front();
      to_hold_.pop_front();
    }
    pb::VersionRecord rec;
    if (!ns_.get_version(h.version, &rec)) continue;  // replaced by a newer version meanwhile
    bool complete = true;
    for (const pb::ChunkRef& c : rec.chunks()) {
      // refresh(): a cached chunk becomes young, so GC keeps it until it sees this pod hold it.
      if (c.sha256().empty() || !c.inline_data().empty() || chunks_.refresh(c.sha256())) continue;
      if (fetch(c.sha256(), {rec.holders().begin(), rec.holders().end()}) != 0) complete = false;
    }
    if (!complete) {
      h.next_try_ms = steady_now_ms() + kHeldRetryMs;
      std::lock_guard lock(hold_mu_);
      to_hold_.push_back(h);
    }
  }
  return !stop_;
}

int PeerNode::fetch(const std::string& sha256, const std::vector<uint64_t>& holders) {
  {
    std::unique_lock lock(fetch_mu_);
    // Another thread fetches it already (a read-ahead, or another reader): wait for it. The
    // wait is bounded by that fetch's deadlines.
    fetch_cv_.wait(lock, [&] { return !fetching_.count(sha256); });
    if (chunks_.contains(sha256)) return 0;
    fetching_.insert(sha256);
  }
  const int err = fetch_from_peers(sha256, holders);
  {
    std::lock_guard lock(fetch_mu_);
    fetching_.erase(sha256);
  }
  fetch_cv_.notify_all();
  return err;
}

void PeerNode::prefetch(const std::vector<std::string>& sha256s, const std::vector<uint64_t>& holders) {
  {
    std::lock_guard lock(fetch_mu_);
    for (const std::string& sha : sha256s) {
      if (prefetch_queue_.size() >= std::max<uint64_t>(64, kMaxPrefetchQueueBytes / config_.network.chunk_size)) break;
      if (!fetching_.count(sha)) prefetch_queue_.push_back(PrefetchJob{sha, holders});
    }
  }
  fetch_cv_.notify_all();
}

void PeerNode::prefetch_loop() {
  PrefetchJob job;
  while (next_job(fetch_mu_, fetch_cv_, prefetch_queue_, stop_, &job))
    if (!chunks_.contains(job.sha256)) fetch(job.sha256, job.holders);  // failure: the reader retries
}

int PeerNode::fetch_from_peers(const std::string& sha256, const std::vector<uint64_t>& holders) {
  pb::ChunkRequest req;
  req.set_sha256(sha256);  // the whole chunk: stored whole, verified whole
  return ask_peers(std::move(req), holders, config_.network.chunk_size,
                   [&](const std::string& peer, const std::string&, const std::string& data) {
                     const int err = chunks_.put_expected(data.data(), data.size(), sha256);
                     if (err == 0) {
                       fetched_bytes_ += data.size();
                       return 0;
                     }
                     if (err != EBADMSG) return err;  // this pod's storage failed (ENOSPC...)
                     spdlog::error("pod {} sent chunk {} with wrong content; ignored", peer, ChunkStore::hex(sha256));
                     return EAGAIN;
                   });
}

int PeerNode::fetch_blocks(const std::string& sha256, const std::vector<uint64_t>& holders, uint64_t first_block,
                           uint64_t count, std::string* data) {
  const uint64_t block = ChunkStore::kBlockBytes;
  pb::ChunkRequest req;
  req.set_sha256(sha256);
  req.set_offset(first_block * block);
  req.set_length(count * block);
  req.set_with_table(true);
  return ask_peers(std::move(req), holders, count * block,
                   [&](const std::string& peer, const std::string& table, const std::string& got) {
                     // The table must name the chunk and each block match its entry; an
                     // answer short of what was asked must end at the chunk's last block
                     // (else a pod could cut a chunk short undetected).
                     const uint64_t blocks = table.size() / ChunkStore::kHashBytes;
                     const uint64_t got_blocks = (got.size() + block - 1) / block;
                     const bool whole = got.size() == count * block || first_block + got_blocks == blocks;
                     if (!whole || !ChunkStore::verify_blocks(sha256, table, first_block, got.data(), got.size())) {
                       spdlog::error("pod {} sent blocks {}+{} of chunk {} that do not match its block table; ignored",
                                     peer, first_block, count, ChunkStore::hex(sha256));
                       return EAGAIN;
                     }
                     fetched_bytes_ += got.size() + table.size();
                     *data = got;
                     return 0;
                   });
}

ssize_t PeerNode::read_range(const std::string& sha256, const std::vector<uint64_t>& holders, uint64_t offset,
                             size_t len, char* out) {
  const uint64_t block = ChunkStore::kBlockBytes;
  if (len == 0) return 0;
  if (offset + len > config_.network.chunk_size) return -EINVAL;  // within one chunk: bounded
  // Blocks fetched earlier first, as far as they go.
  size_t done = 0;
  while (done < len) {  // bounded: each step copies a block's part or stops
    const uint64_t pos = offset + done;
    const ssize_t n = block_cache_.read(sha256, pos / block, pos % block, len - done, out + done);
    if (n < 0) break;
    done += static_cast<size_t>(n);
    if (pos % block + static_cast<uint64_t>(n) < block) return static_cast<ssize_t>(done);  // the chunk's end
  }
  if (done == len) return static_cast<ssize_t>(done);
  const uint64_t first = (offset + done) / block, last = (offset + len - 1) / block;
  std::string data;
  if (const int err = fetch_blocks(sha256, holders, first, last - first + 1, &data)) return -err;
  const uint64_t skip = offset + done - first * block;
  if (skip < data.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, data.size() - skip));
    std::memcpy(out + done, data.data() + skip, n);
    done += n;
  }
  for (uint64_t b = first, at = 0; at < data.size(); ++b, at += block)
    block_cache_.insert(sha256, b, data.substr(at, block));
  return static_cast<ssize_t>(done);
}

int PeerNode::ask_peers(pb::ChunkRequest req, const std::vector<uint64_t>& holders, uint64_t max_bytes,
                        const std::function<int(const std::string&, const std::string&, const std::string&)>& accept) {
  const std::string sha256 = req.sha256();
  identify(&req);
  // Who to ask, in order: the version's holders that answer, the least busy first (ties
  // rotated by the chunk's hash), so that the chunks of one file stream from all of them at
  // once and a read approaches the sum of their links; then any other pod that answers (it
  // may have a copy the holder list does not know of), then the silent ones.
  std::vector<Peer*> order, others, silent;
  for (uint64_t id : holders)
    if (Peer* p = id == pod_id_ ? nullptr : peer_by_id(id)) (p->reported_down ? silent : order).push_back(p);
  if (!order.empty() && !sha256.empty())
    std::rotate(order.begin(), order.begin() + static_cast<uint8_t>(sha256[0]) % order.size(), order.end());
  {
    // The counts change under other threads' fetches: sorted from one snapshot of them (a
    // comparator reading them live would not be a strict weak order).
    std::vector<std::pair<int, Peer*>> by_load;
    for (Peer* p : order) by_load.emplace_back(p->fetches_in_flight.load(), p);
    std::stable_sort(by_load.begin(), by_load.end(), [](auto& a, auto& b) { return a.first < b.first; });
    for (size_t i = 0; i < order.size(); ++i) order[i] = by_load[i].second;
  }
  for (auto& p : peers())
    if (std::find(holders.begin(), holders.end(), p->id.load()) == holders.end())
      (p->reported_down ? silent : others).push_back(p.get());
  order.insert(order.end(), others.begin(), others.end());
  order.insert(order.end(), silent.begin(), silent.end());

  auto race = std::make_shared<ChunkRace>();
  std::vector<std::shared_ptr<ChunkStream>> calls;
  std::vector<Peer*> asked;  // one in-flight count each, given back on return
  size_t next = 0, in_flight = 0;
  auto launch = [&] {
    Peer* peer = order[next++];
    peer->fetches_in_flight.fetch_add(1);
    asked.push_back(peer);
    calls.push_back(ChunkStream::start(*peer->stub, peer->name, req, max_bytes,
                                       std::chrono::system_clock::now() + kChunkDeadline, race));
    ++in_flight;
  };
  // A pod that sent nothing for this long is raced by the next one (a hung or dead pod):
  // a margin plus one piece at 5 MB/s. Judged on progress, not on the whole answer's time:
  // a holder busy serving this pod's other chunks on a slow link is slow, not stuck, and
  // asking a second holder for the same chunk would take that one's link from its own work.
  const auto stall = std::chrono::milliseconds(200 + kPieceBytes / 5000);
  uint64_t progress = 0;
  int result = EIO;
  if (!order.empty()) launch();
  while (in_flight > 0) {  // bounded: every call ends by its deadline
    std::shared_ptr<ChunkStream> done;
    {
      std::unique_lock lock(race->mu);
      if (race->cv.wait_for(lock, stall, [&] { return !race->finished.empty(); })) {
        done = std::move(race->finished.front());
        race->finished.pop_front();
      }
    }
    if (stop_) break;  // shutting down: the calls are cancelled below
    if (!done) {
      uint64_t now = 0;
      for (auto& call : calls) now += call->received();
      if (now == progress && next < order.size()) launch();  // stuck: ask another pod too
      progress = now;
      continue;
    }
    --in_flight;
    if (done->complete()) {
      const int err = accept(done->peer_name(), done->table(), done->data());
      if (err != EAGAIN) {
        result = err;
        break;
      }
    } else if (done->code() == grpc::StatusCode::FAILED_PRECONDITION && req.with_table()) {
      result = ENOTSUP;  // a legacy chunk: every pod would say so
      break;
    }
    if (next < order.size()) launch();
  }
  {
    std::lock_guard lock(race->mu);
    race->closed = true;
    race->finished.clear();
  }
  for (auto& call : calls) call->cancel();  // the losers, if any
  for (Peer* peer : asked) peer->fetches_in_flight.fetch_sub(1);
  return result;
}

}  // namespace wormhole
