#include "net/peer_node.h"
#include "net/op_packing.h"

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <cstring>
#include <sys/statvfs.h>

#include "common/invariant.h"
#include "common/pb_ids.h"
#include "meta/op_validation.h"
#include "net/peer.h"

namespace wormhole {
namespace {

constexpr auto kPushEvery = std::chrono::milliseconds(50);
constexpr auto kSyncEvery = std::chrono::milliseconds(1000);
// The deadline of one exchange (ops, heartbeats) is two thirds of the silence after which a
// peer is suspect (at least 2 s, so at least 1.3 s): a peer that answers within its failure
// threshold is never cut off by a deadline shorter than that threshold, and a hung one holds
// the sender's round for less than the threshold. A network configured with longer failure
// times (a slow link, a sanitizer build under test) gets longer deadlines with them.
std::chrono::milliseconds exchange_deadline(const NetworkConfig& network) {
  return std::chrono::milliseconds(network.suspect_after_ms * 2 / 3);
}
constexpr int kMaxReconnectBackoffMs = 2000;
// Received op batches waiting to be applied or being applied, at most (each is at most
// kMaxOpsPerBatch ops and one message): beyond, a sender is told to send again later.
constexpr int kMaxQueuedOpBatches = 4;
// Read-ahead workers: enough fetches in flight to keep every holder's link busy — four with
// 4 MiB chunks (with the reading thread, five chunks in flight: two or more per holder of a
// file with two copies, so none idles between its chunks; measured on shaped links, two
// workers left a 200 Mbit/s holder idle a third of the time), up to 16 with small chunks
// (a 64 KiB fetch is mostly round trip).
int prefetch_threads(uint64_t chunk_size) {
  return static_cast<int>(std::clamp<uint64_t>((16ull << 20) / std::max<uint64_t>(chunk_size, 1), 2, 16));
}
// Versions whose chunks wait to be fetched, at most.
constexpr size_t kMaxHeldQueue = 100000;
// A version learnt from another pod is pulled by its holders only after this long: its
// writer pushes it meanwhile (async mode), or has pushed it already (sync mode).
constexpr int64_t kPullAfterMs = 3000;

int64_t now_ms() { return steady_now_ms(); }

// Wall time, for the clock-skew bound of incoming ops.
uint64_t wall_now_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

std::string hex_id(uint64_t id) {
  char hex[20];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(id));
  return hex;
}

}  // namespace

class PeerNode::Service final : public pb::Peer::Service {
 public:
  explicit Service(PeerNode& node) : node_(node) {}

  grpc::Status Exchange(grpc::ServerContext* ctx, const pb::Envelope* req, pb::EnvelopeReply* reply) override {
    const std::string why =
        node_.check_caller(ctx, req->protocol_version(), req->network(), req->chunk_size(), req->from_pod_name(),
                           req->from_pod_id());
    if (!why.empty()) {
      spdlog::warn("refused a request from {}: {}", ctx->peer(), why);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why);
    }
    reply->set_pod_name(node_.self_.name);
    reply->set_pod_id(node_.pod_id_);
    *reply->mutable_space() = node_.my_space();
    for (auto& p : node_.peers())
      if (p->name == req->from_pod_name()) {
        p->used_bytes = req->space().used_bytes();
        p->free_bytes = req->space().free_bytes();
      }
    // Flow control: messages with ops wait for the node's lock to be applied, each holding
    // its batch in memory. A pod that sends faster than this one applies finds the queue
    // full and is told to come back (its push cursor rewinds, nothing is lost): memory stays
    // bounded whatever a peer sends.
    const bool carries_ops =
        req->body().has_ops() && (req->body().ops().ops_size() > 0 || !req->body().ops().packed_ops().empty());
    if (carries_ops && node_.op_batches_queued_.fetch_add(1) >= kMaxQueuedOpBatches) {
      node_.op_batches_queued_.fetch_sub(1);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "busy applying ops: send again later");
    }
    std::vector<Replicator::Outgoing> out;
    std::string rejected;
    {
      // Unpacked only once admitted: at most kMaxQueuedOpBatches unpacked batches exist.
      pb::PeerMessage unpacked;
      const bool packed = carries_ops && !req->body().ops().packed_ops().empty();
      if (packed) {
        unpacked = req->body();
        if (!unpack_ops(unpacked.mutable_ops(), kMaxMessageBytes, &rejected)) rejected = "ops: " + rejected;
      }
      if (rejected.empty()) {
        std::lock_guard lock(node_.mu_);
        out = node_.replicator_.receive(req->from_pod_id(), packed ? unpacked : req->body(), wall_now_ms(), &rejected);
      }
    }
    if (carries_ops) node_.op_batches_queued_.fetch_sub(1);
    if (!rejected.empty()) {
      spdlog::warn("rejected a message from pod {} ({}): {}", req->from_pod_name(), ctx->peer(), rejected);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "rejected: " + rejected);
    }
    node_.forget_changed();
    for (auto& o : out)
      if (o.to == req->from_pod_id()) {
        pb::PeerMessage* m = reply->add_replies();
        *m = std::move(o.message);
        if (m->has_ops()) pack_ops(m->mutable_ops());
      }
    return grpc::Status::OK;
  }

  grpc::Status ReadChunk(grpc::ServerContext* ctx, const pb::ChunkRequest* req,
                         grpc::ServerWriter<pb::ChunkPiece>* writer) override {
    // Chunks are served to members only, as Exchange is (what a member may read is not
    // restricted further: every member may read every file).
    const std::string why =
        node_.check_caller(ctx, req->protocol_version(), req->network(), req->chunk_size(), req->from_pod_name(),
                           req->from_pod_id());
    if (!why.empty()) {
      spdlog::warn("refused a chunk request from {}: {}", ctx->peer(), why);
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, why);
    }
    const uint64_t chunk_size = node_.config_.network.chunk_size;
    if (req->sha256().size() != ChunkStore::kHashBytes || req->offset() > chunk_size || req->length() > chunk_size) {
      spdlog::warn("refused a chunk request from pod {}: malformed", req->from_pod_name());
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed chunk request");
    }
    if (!node_.chunks_.contains(req->sha256())) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such chunk here");
    std::string table;
    if (req->with_table()) {
      const int err = node_.chunks_.table_of(req->sha256(), &table);
      if (err == ENOTSUP)
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "a legacy chunk: no block table, fetch it whole");
      if (err != 0) return grpc::Status(grpc::StatusCode::NOT_FOUND, "chunk unreadable here");
    }
    const uint64_t end = req->length() == 0 ? UINT64_MAX : req->offset() + req->length();  // both bounded: no overflow
    std::string buf(kPieceBytes, '\0');
    for (uint64_t offset = req->offset();;) {  // bounded: the chunk is finite, reads advance
      const size_t want = static_cast<size_t>(std::min<uint64_t>(kPieceBytes, end - offset));
      const ssize_t n = node_.chunks_.read(req->sha256(), offset, want, buf.data());
      if (n < 0)  // corrupt or vanished here: the asker tries another pod
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "chunk unreadable here");
      pb::ChunkPiece piece;
      piece.set_sha256(req->sha256());
      piece.set_offset(offset);
      piece.set_data(buf.data(), static_cast<size_t>(n));
      if (!table.empty()) {  // in the first piece only
        piece.set_table(std::move(table));
        table.clear();
      }
      offset += static_cast<uint64_t>(n);
      piece.set_last(static_cast<size_t>(n) < want || offset >= end);
      if (!writer->Write(piece)) return grpc::Status(grpc::StatusCode::CANCELLED, "the reader went away");
      node_.served_bytes_ += static_cast<uint64_t>(n);
      if (piece.last()) return grpc::Status::OK;
    }
  }

  grpc::Status PushChunks(grpc::ServerContext* ctx, grpc::ServerReader<pb::ChunkPiece>* reader,
                          pb::PushReply* reply) override {
    return node_.receive_push(ctx, reader, reply);
  }

  grpc::Status Join(grpc::ServerContext* ctx, const pb::JoinRequest* req, pb::JoinReply* reply) override {
    if (req->protocol_version() != kProtocolVersion || req->network() != node_.config_.network.name) {
      // Named only once validated (it is echoed and logged).
      const std::string why =
          req->protocol_version() != kProtocolVersion
              ? "protocol version " + std::to_string(req->protocol_version()) + ", this pod speaks " +
                    std::to_string(kProtocolVersion)
          : valid_pod_name(req->network())
              ? "network \"" + req->network() + "\", this pod is in \"" + node_.config_.network.name + "\""
              : std::string("an invalid network name");
      spdlog::warn("refused a join from {}: {}", ctx->peer(), why);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why);
    }
    if (std::string why = node_.check_chunk_size(req->chunk_size()); !why.empty()) {
      spdlog::warn("refused a join from {}: {}", ctx->peer(), why);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why);
    }
    return node_.handle_join(ctx, *req, reply);
  }

  grpc::Status Snapshot(grpc::ServerContext* ctx, const pb::SnapshotRequest* req,
                        grpc::ServerWriter<pb::SnapshotPiece>* writer) override {
    return node_.serve_snapshot(ctx, *req, writer);
  }

  grpc::Status GetVersions(grpc::ServerContext* ctx, const pb::VersionsRequest* req,
                           pb::VersionsReply* reply) override {
    const std::string why = node_.check_caller(ctx, req->protocol_version(), req->network(), req->chunk_size(),
                                               req->from_pod_name(), req->from_pod_id());
    if (!why.empty()) {
      spdlog::warn("refused a version request from {}: {}", ctx->peer(), why);
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, why);
    }
    if (static_cast<size_t>(req->versions_size()) > kMaxVersionsPerRequest)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too many versions asked for");
    size_t bytes = 0;
    for (const pb::Gid& id : req->versions()) {
      pb::VersionRecord rec;
      if (!node_.ns_.get_recent_version(from_pb(id), &rec) || rec.incomplete()) continue;
      // Bounded by the message size: what does not fit is asked for again (a version too
      // large for one message fails the call; the asker's read stays EIO, logged).
      bytes += rec.ByteSizeLong();
      if (bytes > kMaxMessageBytes / 2 && reply->versions_size() > 0) break;
      pb::VersionsReply::Whole* w = reply->add_versions();
      *w->mutable_version() = id;
      w->set_size(rec.size());
      *w->mutable_chunks() = rec.chunks();
    }
    return grpc::Status::OK;
  }

  grpc::Status ConfirmHolding(grpc::ServerContext* ctx, const pb::ConfirmHoldingRequest* req,
                              pb::ConfirmHoldingReply* reply) override {
    const std::string why = node_.check_caller(ctx, req->protocol_version(), req->network(), req->chunk_size(),
                                               req->from_pod_name(), req->from_pod_id());
    if (!why.empty()) {
      spdlog::warn("refused a holding confirmation request from {}: {}", ctx->peer(), why);
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, why);
    }
    return node_.serve_confirm_holding(*req, reply);
  }

 private:
  PeerNode& node_;
};

PeerNode::PeerNode(const Config& config, const PodConfig& self, uint64_t pod_id, Namespace& ns, ChunkStore& chunks,
                   KernelCache& kernel)
    : config_(config),
      self_(self),
      pod_id_(pod_id),
      ns_(ns),
      chunks_(chunks),
      kernel_(kernel),
      replicator_(ns, {pod_id}),
      started_ms_(now_ms()),
      failure_times_{static_cast<int64_t>(config.network.suspect_after_ms),
                     static_cast<int64_t>(config.network.down_after_ms),
                     static_cast<int64_t>(config.network.repair_delay_s * 1000)},
      tls_(self.storage),
      join_token_(config.network.token) {
  std::lock_guard lock(mu_);
  replicator_.set_limits(config.network.max_clock_skew_ms, config.network.chunk_size);
  for (const PodConfig& p : config.pods)
    if (p.name != self.name && !p.listen.empty()) add_peer_locked(p.name, p.listen, p.role == "storage", 0);
  ns_.set_expected_members(config.pods.size());
}

std::shared_ptr<grpc::Channel> PeerNode::peer_channel(const std::string& address) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // A pod that comes back is talked to within seconds (gRPC's default backoff grows to
  // 2 minutes, meanwhile every call to it fails at once and it is passed over).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  // Every pod's certificate names kPodDnsName: who the peer is comes from its subject.
  if (config_.network.tls) args.SetSslTargetNameOverride(certs::kPodDnsName);
  return grpc::CreateCustomChannel(address, channel_credentials(), args);
}

PeerNode::PeerRange PeerNode::peers() const {
  return PeerRange{peer_slots_.data(), peer_slots_.data() + peer_count_.load(std::memory_order_acquire)};
}

PeerNode::Peer* PeerNode::add_peer_locked(const std::string& name, const std::string& address, bool storage,
                                          uint64_t id) {
  for (auto& p : peers())
    if (p->name == name) {
      if (p->id == 0 && id != 0) {
        p->id = id;
        replicator_.add_member(id);
      }
      return p.get();
    }
  const size_t n = peer_count_.load(std::memory_order_relaxed);
  if (n >= kMaxPeers) {
    spdlog::error("pod {} not added: a pod talks to at most {} others", name, kMaxPeers);
    return nullptr;
  }
  auto peer = std::make_unique<Peer>();
  peer->name = name;
  peer->address = address;
  peer->storage = storage;
  peer->stub = pb::Peer::NewStub(peer_channel(address));
  peer->id = id;
  if (id != 0) replicator_.add_member(id);
  peer_slots_[n] = std::move(peer);
  peer_count_.store(n + 1, std::memory_order_release);  // publishes the slot to readers
  ns_.set_expected_members(n + 2);  // every peer and this pod
  return peer_slots_[n].get();
}

PeerNode::~PeerNode() {
  {
    std::lock_guard lock(push_mu_);
    stop_ = true;
  }
  push_cv_.notify_all();
  {
    std::lock_guard lock(calls_mu_);  // so the loop does not miss it while waiting for answers
  }
  calls_cv_.notify_all();
  {
    std::lock_guard lock(fetch_mu_);  // so no prefetch worker misses the wake-up
  }
  fetch_cv_.notify_all();
  {
    std::lock_guard lock(hold_mu_);  // so the held-version worker does not miss it either
  }
  hold_cv_.notify_all();
  if (hold_thread_.joinable()) hold_thread_.join();
  if (repair_thread_.joinable()) repair_thread_.join();
  for (auto& t : prefetch_threads_) t.join();
  if (push_thread_.joinable()) push_thread_.join();
  if (thread_.joinable()) thread_.join();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

bool PeerNode::start(std::string* error) {
  if (!prepare_tls(error)) return false;
  if (config_.network.tls) {
    certs::Identity me;
    std::string unused;
    if (certs::read_cert(tls_.cert, &me, &unused)) own_key_fingerprint_ = me.key_fingerprint;
  }
  {
    // Channels made before the certificate was there (the configured pods) get it now.
    std::lock_guard lock(mu_);
    for (auto& p : peers()) p->stub = pb::Peer::NewStub(peer_channel(p->address));
  }
  service_ = std::make_unique<Service>(*this);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(self_.listen, server_credentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) {
    *error = "cannot listen on " + self_.listen + " (address in use?)";
    return false;
  }
  spdlog::info("listening for pods on {}", self_.listen);
  if (!self_.peers.empty() && !join_network(error)) return false;
  // Every pod is in the replicated member list, so that a pod that joined knows them all
  // when it restarts with only its own file (and its peers may be down).
  // Its record keeps what others recorded of it (a drain goes on across restarts, with its
  // admin's signature; a forgotten pod records nothing): only the description is this pod's.
  std::optional<pb::Member> recorded;
  for (const pb::Member& m : ns_.members())
    if (m.pod_id() == pod_id_) recorded = m;
  if (!recorded || !recorded->forgotten()) {
    const pb::Member self = self_member();
    pb::Member mine = recorded ? *recorded : self;
    mine.set_name(self.name());
    mine.set_address(self.address());
    mine.set_role(self.role());
    mine.set_ca(self.ca());
    if (!self.key_fingerprint().empty()) mine.set_key_fingerprint(self.key_fingerprint());
    if (!recorded || mine.SerializeAsString() != recorded->SerializeAsString())
      if (int err = ns_.record_member(mine)) spdlog::warn("cannot record this pod as a member: {}", err);
  }
  // Versions this pod holds whose chunks may have been missed (a stop before fetching).
  for (Gid v : ns_.versions_held()) to_hold_.push_back(HeldVersion{v, 0});
  thread_ = std::thread([this] { loop(); });
  hold_thread_ = std::thread([this] { hold_loop(); });
  repair_thread_ = std::thread([this] { repair_loop(); });
  if (config_.network.replication_mode == "async") push_thread_ = std::thread([this] { push_loop(); });
  for (int i = 0; i < prefetch_threads(config_.network.chunk_size); ++i)
    prefetch_threads_.emplace_back([this] { prefetch_loop(); });
  started_ = true;
  return true;
}

std::string PeerNode::check_chunk_size(uint64_t chunk_size) const {
  if (chunk_size == config_.network.chunk_size) return "";
  return "chunk size " + std::to_string(chunk_size) + " bytes, this pod uses " +
         std::to_string(config_.network.chunk_size) +
         ": every pod of a network must use the same network.chunk_size (one network file for all)";
}

std::string PeerNode::check_sender(uint32_t version, const std::string& network, uint64_t chunk_size,
                                   const std::string& name, uint64_t id) {
  if (version != kProtocolVersion)
    return "protocol version " + std::to_string(version) + ", this pod speaks " + std::to_string(kProtocolVersion);
  // Names are checked before they are echoed in a reason (and logged).
  if (network.size() > kMaxPodNameBytes || !valid_pod_name(network)) return "invalid network name";
  if (network != config_.network.name)
    return "network \"" + network + "\", this pod is in \"" + config_.network.name + "\"";
  if (std::string why = check_chunk_size(chunk_size); !why.empty()) return why;
  if (!valid_pod_name(name)) return "invalid pod name";
  if (id == 0 || id == pod_id_) return "invalid pod id";
  for (int attempt = 0; attempt < 2; ++attempt) {
    {
      std::lock_guard lock(mu_);
      for (auto& peer : peers()) {
        if (peer->name != name) continue;
        if (peer->forgotten) return "pod \"" + name + "\" was forgotten (wormhole forget): start it with an empty storage directory to join again";
        if (peer->id != 0 && peer->id != id)
          return "pod \"" + name + "\" presents another identity than before (another storage directory?)";
        if (peer->id == 0) {
          // First contact: the name is bound to the id it presents. Another pod must not
          // take a name before its owner is heard from: the replicated member list knows
          // the ids of pods that joined, and one id has one name.
          for (auto& other : peers())
            if (other->id == id) return "pod id " + hex_id(id) + " belongs to pod \"" + other->name + "\"";
          for (const pb::Member& m : ns_.members())
            if (m.name() == name && m.pod_id() != id)
              return "pod \"" + name + "\" is recorded as a member with another identity";
          peer->id = id;
          replicator_.add_member(id);
          spdlog::info("pod {} is {:016x}", name, id);
        }
        return "";
      }
    }
    adopt_members();  // it may have joined through another pod: the member list says
  }
  return "pod \"" + name + "\" is not a member of network \"" + config_.network.name + "\"";
}

bool PeerNode::exchange(Peer& peer, const pb::PeerMessage& message) {
  std::vector<Outbound> one;
  one.push_back(Outbound{&peer, message});
  return exchange_all(one)[0];
}

void PeerNode::prepare_exchange(const pb::PeerMessage& message, const pb::PodSpace& space, pb::Envelope* req,
                                grpc::ClientContext* ctx) {
  identify(req);
  *req->mutable_body() = message;
  if (message.has_ops()) {
    pack_ops(req->mutable_body()->mutable_ops());
    op_bytes_sent_ += req->body().ops().ByteSizeLong();
  }
  *req->mutable_space() = space;
  ctx->set_deadline(std::chrono::system_clock::now() + exchange_deadline(config_.network));
}

std::vector<bool> PeerNode::exchange_all(const std::vector<Outbound>& batch, bool forget) {
  // All calls are in flight at once: a round costs the slowest peer's round trip, not
  // the sum of them (what a sync-mode close waits for).
  struct Call {
    pb::Envelope req;
    pb::EnvelopeReply reply;
    grpc::ClientContext ctx;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls;
  std::mutex done_mu;
  std::condition_variable done_cv;
  size_t done = 0;
  const pb::PodSpace space = my_space();
  for (const Outbound& o : batch) {
    auto call = std::make_unique<Call>();
    prepare_exchange(o.message, space, &call->req, &call->ctx);
    Call* c = call.get();
    o.peer->stub->async()->Exchange(&c->ctx, &c->req, &c->reply, [c, &done_mu, &done_cv, &done](grpc::Status st) {
      c->status = std::move(st);
      std::lock_guard lock(done_mu);  // notify under the lock: the waiter's frame outlives it
      ++done;
      done_cv.notify_one();
    });
    calls.push_back(std::move(call));
  }
  {
    std::unique_lock lock(done_mu);
    done_cv.wait(lock, [&] { return done == calls.size(); });  // every call ends (deadline)
  }
  std::vector<bool> answered(batch.size(), false);
  for (size_t i = 0; i < batch.size(); ++i) answered[i] = handle_answer(*batch[i].peer, calls[i]->status, calls[i]->reply);
  if (forget) forget_changed();
  return answered;
}

bool PeerNode::handle_answer(Peer& peer, const grpc::Status& status, const pb::EnvelopeReply& reply,
                             bool use_replies) {
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    peer.last_ok_ms = now_ms();  // reachable, only busy: what was sent goes again later
    return false;
  }
  if (!status.ok()) {
    if (!peer.reported_down.exchange(true))
      spdlog::warn("pod {} ({}) unreachable: {}", peer.name, peer.address, status.error_message());
    return false;
  }
  if (peer.reported_down.exchange(false)) spdlog::info("pod {} ({}) reachable", peer.name, peer.address);
  peer.last_ok_ms = now_ms();
  peer.used_bytes = reply.space().used_bytes();
  peer.free_bytes = reply.space().free_bytes();
  const std::string why =
      reply.pod_name() == peer.name
          ? check_sender(kProtocolVersion, config_.network.name, config_.network.chunk_size, reply.pod_name(), reply.pod_id())
          : "answered as pod \"" + reply.pod_name() + "\"";
  if (!why.empty()) {
    spdlog::warn("ignoring the answer of {}: {}", peer.address, why);
    return false;
  }
  // An answer is one message per request kind at most (Replicator::receive); more is
  // not an honest answer.
  constexpr int kMaxReplies = 4;
  if (reply.replies_size() > kMaxReplies) {
    spdlog::warn("ignoring the answer of pod {}: {} messages", peer.name, reply.replies_size());
    return false;
  }
  if (!use_replies) return true;
  // Packed ops are unpacked before the node's lock is taken (decompression is CPU work).
  std::vector<pb::PeerMessage> messages;
  for (const pb::PeerMessage& m : reply.replies()) {
    if (!m.has_ops() || m.ops().packed_ops().empty()) continue;
    std::string why;
    messages.push_back(m);
    if (!unpack_ops(messages.back().mutable_ops(), kMaxMessageBytes, &why)) {
      spdlog::warn("rejected an answer of pod {} ({}): ops: {}", peer.name, peer.address, why);
      return true;
    }
  }
  std::lock_guard lock(mu_);
  size_t next_unpacked = 0;
  for (const pb::PeerMessage& m : reply.replies()) {
    const bool packed = m.has_ops() && !m.ops().packed_ops().empty();
    std::string rejected;
    replicator_.receive(peer.id, packed ? messages[next_unpacked++] : m, wall_now_ms(), &rejected);  // answers need no answer
    if (!rejected.empty()) spdlog::warn("rejected an answer of pod {} ({}): {}", peer.name, peer.address, rejected);
  }
  return true;
}

pb::PodSpace PeerNode::my_space() {
  pb::PodSpace space;
  space.set_used_bytes(chunks_.stats().bytes);
  struct statvfs sv;
  if (::statvfs(self_.storage.c_str(), &sv) == 0) {
    uint64_t free_bytes = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    if (self_.storage_limit_bytes > 0) {
      const uint64_t room = self_.storage_limit_bytes > space.used_bytes() ? self_.storage_limit_bytes - space.used_bytes() : 0;
      free_bytes = std::min(free_bytes, room);
    }
    space.set_free_bytes(free_bytes);
  }
  return space;
}

void PeerNode::forget_changed() {
  Namespace::Changed changed;
  {
    std::lock_guard lock(mu_);
    changed = replicator_.take_changed();
  }
  if (!changed.versions_to_hold.empty()) {
    std::lock_guard lock(hold_mu_);
    for (Gid v : changed.versions_to_hold)
      if (to_hold_.size() < kMaxHeldQueue) to_hold_.push_back(HeldVersion{v, now_ms() + kPullAfterMs});  // else: next start
  }
  // A batch of ops often touches one directory or file many times: tell each once.
  auto unique = [](auto& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  };
  unique(changed.entries);
  unique(changed.inodes);
  unique(changed.contents);
  // Open files first, so that the reads the kernel sends once it forgot its pages find the
  // new version.
  if (content_listener_ && !changed.contents.empty()) content_listener_(changed.contents);
  for (auto& [parent, name] : changed.entries) kernel_.forget_entry(parent, name);
  for (uint64_t ino : changed.inodes) kernel_.forget_inode(ino);
}

std::vector<bool> PeerNode::sync_round() {
  std::vector<Outbound> requests;
  {
    std::lock_guard lock(mu_);
    // Also to peers whose id is not known yet: the answer tells it.
    for (auto& peer : peers())
      if (!peer->forgotten) requests.push_back(Outbound{peer.get(), replicator_.sync_request(peer->id).message});
  }
  return exchange_all(requests);
}

// One exchange the loop started and did not wait for (see loop()). Owned by the loop
// thread; gRPC's callback only hands it back through answered_calls_.
struct PeerNode::LoopCall {
  enum Kind { kPush, kSync, kPull };
  Kind kind;
  Peer* peer;
  uint64_t installs_at_start;  // snapshot_installs_ when started: an answer from before an install is stale
  pb::Envelope req;
  pb::EnvelopeReply reply;
  grpc::ClientContext ctx;
  grpc::Status status;
};

void PeerNode::start_loop_call(LoopCall* call) {
  call->peer->stub->async()->Exchange(&call->ctx, &call->req, &call->reply, [this, call](grpc::Status st) {
    call->status = std::move(st);
    std::lock_guard lock(calls_mu_);  // notify under the lock: the loop may be leaving
    answered_calls_.push_back(call);
    calls_cv_.notify_one();
  });
}

void PeerNode::loop() {
  // Every exchange of the loop is started without waiting for its answer; answers are
  // handled as they come. So a slow or silent peer (a long link, a pod that hangs) holds
  // back no other — each call ends by its own deadline —, and pushes are pipelined: up to
  // kPushWindow batches in flight per peer, so a peer applies the next batch while the
  // answer to the last one travels back. Bounds: per peer, kPushWindow pushes, one sync
  // request and one repeated pull in flight at most.
  constexpr int kPushWindow = 2;
  struct Flight {
    int pushes = 0, syncs = 0, pulls = 0;
    bool push_lost = false;  // a push in flight was lost or refused: settle once none is left
    bool backlogged = false;  // its last push was a full batch: more is due as soon as there is room
  };
  std::map<Peer*, Flight> flight;
  // A peer whose last push was a full batch and that can take the next one now. The same
  // test decides whether to push at once and whether to wait: a peer that is down or has a
  // lost push is waited for (it is `busy` below), never polled in a loop.
  const auto backlog_room = [](const Peer& peer, const Flight& f) {
    return f.backlogged && !f.push_lost && f.pushes < kPushWindow && !peer.reported_down && !peer.forgotten;
  };
  std::map<LoopCall*, std::unique_ptr<LoopCall>> owned;
  const auto start = [&](Peer& peer, LoopCall::Kind kind, const pb::PeerMessage& message, const pb::PodSpace& space) {
    auto call = std::make_unique<LoopCall>();
    call->kind = kind;
    call->peer = &peer;
    call->installs_at_start = snapshot_installs_.load();
    prepare_exchange(message, space, &call->req, &call->ctx);
    LoopCall* c = call.get();
    owned.emplace(c, std::move(call));
    start_loop_call(c);
  };
  // Handles the answers that came (waiting for one at most `wait`). Whether one was the
  // answer to a sync request.
  const auto handle_answers = [&](std::chrono::milliseconds wait) {
    bool synced = false;
    std::vector<LoopCall*> done;
    {
      std::unique_lock lock(calls_mu_);
      calls_cv_.wait_for(lock, wait, [&] { return !answered_calls_.empty() || stop_; });
      done.swap(answered_calls_);
    }
    for (LoopCall* c : done) {
      // An answer to a request made before a snapshot was installed speaks of the state
      // the install replaced (its ops, its advice): only the peer's reachability is used.
      const bool stale = c->installs_at_start != snapshot_installs_.load();
      const bool answered = handle_answer(*c->peer, c->status, c->reply, !stale);
      Flight& f = flight[c->peer];
      if (c->kind == LoopCall::kPush) {
        --f.pushes;
        f.push_lost |= !answered;
        if (f.pushes == 0) {
          // Answered (acknowledged) or lost: either way the next push starts after what the
          // peer acknowledged, so a lost batch goes again at the next push (within
          // kPushEvery: a peer too busy to take it is not asked again at once), not by
          // anti-entropy.
          std::lock_guard lock(mu_);
          if (c->peer->id != 0) replicator_.push_settled(c->peer->id);
          if (f.push_lost) f.backlogged = false;
          f.push_lost = false;
        }
      } else if (c->kind == LoopCall::kSync) {
        --f.syncs;
        synced = true;
      } else {
        --f.pulls;
      }
      WH_INVARIANT(f.pushes >= 0 && f.syncs >= 0 && f.pulls >= 0, "loop exchange counts below zero");
      owned.erase(c);
    }
    if (!done.empty()) forget_changed();
    return synced;
  };

  auto next_sync = std::chrono::steady_clock::now();
  auto next_push = next_sync;
  while (!stop_) {
    // Pushes go out every kPushEvery, batching what was made meanwhile (a receiver's cost
    // is mostly per batch), and at once to a peer whose last push was a full batch as soon
    // as its window has room (back-to-back while it is behind).
    const auto now = std::chrono::steady_clock::now();
    bool backlogged = false;
    for (auto& [peer, f] : flight) backlogged |= backlog_room(*peer, f);
    const bool push_now = now >= next_push || backlogged;
    if (now >= next_push) next_push = now + kPushEvery;
    std::vector<Replicator::Outgoing> out;
    std::vector<std::pair<Peer*, pb::PeerMessage>> pulls;
    // The group commit before publish_local (which gives out only durable ops), outside the
    // node's lock, which a sync-mode close takes.
    if (push_now) {
      if (int err = ns_.make_durable()) spdlog::error("cannot make metadata durable: {}", std::strerror(err));
    }
    // This pod's space rides on every request; read (statvfs) only when one is started.
    std::optional<pb::PodSpace> space_read;
    const auto space = [&]() -> const pb::PodSpace& {
      if (!space_read) space_read = my_space();
      return *space_read;
    };
    {
      std::vector<uint64_t> unreachable;  // not pushed to until a sync round reaches them
      std::vector<uint64_t> busy;         // their window is full, or waits to be settled
      for (auto& peer : peers()) {
        if (peer->id == 0) continue;
        const Flight& f = flight[peer.get()];
        const bool down = peer->reported_down || peer->forgotten;
        if (f.pushes > 0 && (f.pushes >= kPushWindow || f.push_lost || down))
          busy.push_back(peer->id);
        else if (down)
          unreachable.push_back(peer->id);
      }
      std::lock_guard lock(mu_);
      if (push_now) {
        if (config_.network.replication_delay_ms > 0) {
          // network.replication.delay: ops wait this long before leaving the pod.
          const uint64_t wall_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                             std::chrono::system_clock::now().time_since_epoch())
                                                             .count());
          replicator_.set_publish_cutoff(wall_ms - config_.network.replication_delay_ms);
        }
        out = replicator_.publish_local(unreachable, busy);
        for (auto& peer : peers())
          if (peer->id != 0 && std::find(busy.begin(), busy.end(), peer->id) == busy.end())
            flight[peer.get()].backlogged = false;  // set again below if it got a full batch
      }
      // A peer had more for this pod than one batch (a restart, a partition): ask again now.
      for (uint64_t id : replicator_.take_pull_again())
        if (Peer* peer = peer_by_id(id); peer && !peer->forgotten && flight[peer].pulls == 0)
          pulls.emplace_back(peer, replicator_.sync_request(id).message);
    }
    for (auto& o : out) {
      Peer* peer = peer_by_id(o.to);
      if (!peer) {  // not a peer of this node (cannot be answered): sent again from its acknowledgement
        std::lock_guard lock(mu_);
        replicator_.push_settled(o.to);
        continue;
      }
      Flight& f = flight[peer];
      ++f.pushes;
      f.backlogged = static_cast<size_t>(o.message.ops().ops_size()) >= Replicator::kMaxBatchOps;
      start(*peer, LoopCall::kPush, o.message, space());
    }
    for (auto& [peer, message] : pulls) {
      ++flight[peer].pulls;
      start(*peer, LoopCall::kPull, message, space());
    }
    if (std::chrono::steady_clock::now() >= next_sync) {
      next_sync = std::chrono::steady_clock::now() + kSyncEvery;
      adopt_members();
      // A sync request to every peer (anti-entropy, heartbeat), also to peers whose id is
      // not known yet: the answer tells it. One in flight per peer: a silent peer is asked
      // again once its last request has timed out.
      std::vector<std::pair<Peer*, pb::PeerMessage>> syncs;
      {
        std::lock_guard lock(mu_);
        for (auto& peer : peers())
          if (!peer->forgotten && flight[peer.get()].syncs == 0)
            syncs.emplace_back(peer.get(), replicator_.sync_request(peer->id).message);
      }
      for (auto& [peer, message] : syncs) {
        ++flight[peer].syncs;
        start(*peer, LoopCall::kSync, message, space());
      }
      update_situation();
      act_on_snapshot_advice();
      std::map<uint64_t, uint64_t> everyone;
      std::map<uint64_t, Hlc> stable;
      {
        std::lock_guard lock(mu_);
        bool all_known = true;
        for (auto& peer : peers()) all_known &= peer->id != 0 || peer->forgotten;
        // A member whose id is unknown may have made anything: nothing is stable yet.
        if (all_known) {
          everyone = replicator_.everyone_has();
          stable = replicator_.stable_stamps();
        }
      }
      if (!everyone.empty()) ns_.trim_op_log(everyone);
      if (!stable.empty()) ns_.set_stable(std::move(stable));
      review_under_replicated();
    }
    bool more_due = false;  // a backlogged peer whose window has room
    for (auto& [peer, f] : flight) more_due |= backlog_room(*peer, f);
    const auto until_push = std::chrono::duration_cast<std::chrono::milliseconds>(next_push - std::chrono::steady_clock::now());
    // A peer's reachability, as the answers to this round tell it, counts now, not at the
    // next round. (Snapshot advice waits for the round: an install blocks this loop, and a
    // failing one is tried again once a round, not at every answer.)
    if (handle_answers(more_due ? std::chrono::milliseconds(0) : std::max(until_push, std::chrono::milliseconds(0))))
      update_situation();
  }
  // Stopping: every call still in flight is cancelled, and its callback waited for (it
  // names objects this thread owns).
  for (auto& [c, call] : owned) call->ctx.TryCancel();
  std::unique_lock lock(calls_mu_);
  calls_cv_.wait(lock, [&] { return answered_calls_.size() == owned.size(); });  // bounded: TryCancel, deadlines
  answered_calls_.clear();
}

PodState PeerNode::state_of(const Peer& p) const {
  return pod_state(now_ms(), p.last_ok_ms, started_ms_, p.forgotten, failure_times_);
}

nlohmann::json PeerNode::describe(uint64_t id) {
  if (id == pod_id_) return {{"name", self_.name}, {"state", "alive"}, {"self", true}};
  for (auto& p : peers())
    if (p->id == id) return {{"name", p->name}, {"state", state_name(state_of(*p))}, {"self", false}};
  return {{"name", "unknown pod " + hex_id(id)}, {"state", "down"}, {"self", false}};
}

std::string PeerNode::known_pod_names() {
  std::string names = self_.name;
  for (auto& p : peers())
    if (!p->forgotten) names += ", " + p->name;
  return names;
}

std::string PeerNode::forget(const std::string& name, bool force, const pb::AdminAuthorization& auth) {
  if (!started_) return "this pod is still starting (joining or catching up): ask again when it is mounted";
  if (name == self_.name) return "a pod cannot forget itself";
  Peer* peer = nullptr;
  for (auto& p : peers())
    if (p->name == name) peer = p.get();
  if (!peer) return "no pod \"" + name + "\" in this network (pods: " + known_pod_names() + ")";
  if (peer->forgotten) return "";
  if (peer->id == 0) return "pod \"" + name + "\" was never heard from: its identity is unknown";
  if (const PodState st = state_of(*peer); !force && st != PodState::kDown && st != PodState::kLost)
    return "pod \"" + name + "\" is " + state_name(st) +
           ", not down: stop it first, or use --force (a forgotten pod can never come back)";
  pb::Member m;
  for (const pb::Member& known : ns_.members())
    if (known.pod_id() == peer->id) m = known;
  m.set_pod_id(peer->id);
  m.set_name(peer->name);
  if (m.address().empty()) m.set_address(peer->address);
  if (m.role().empty()) m.set_role(peer->storage ? "storage" : "client");
  m.set_forgotten(true);
  *m.mutable_authorization() = auth;
  if (int err = ns_.record_member(m)) return std::string("cannot record it: ") + std::strerror(err);
  adopt_members();  // takes effect here now, on the others when the op reaches them
  spdlog::warn("pod {} forgotten by request: its ops not seen by others are lost, its copies are gone", name);
  return "";
}

std::string PeerNode::drain(const std::string& name, const pb::AdminAuthorization& auth) {
  if (!started_) return "this pod is still starting (joining or catching up): ask again when it is mounted";
  pb::Member m;
  bool found = false;
  for (const pb::Member& known : ns_.members())
    if (known.name() == name && !known.forgotten()) {
      m = known;
      found = true;
    }
  if (!found) return "no pod \"" + name + "\" in this network (pods: " + known_pod_names() + ")";
  if (m.role() != "storage") return "pod \"" + name + "\" is a client: it holds no copies to drain";
  if (m.draining()) return "";
  // The storage pods that stay must be able to hold every copy: at least the redundancy.
  size_t staying = m.pod_id() != pod_id_ && self_.role == "storage" && !self_draining_;
  for (auto& p : peers())
    if (p->id != m.pod_id() && p->storage && !p->forgotten && !p->draining && counts_as_copy(state_of(*p))) ++staying;
  const size_t wanted = copies_wanted();
  if (staying == 0) return "pod \"" + name + "\" is the last storage pod: nothing could take its copies";
  if (staying < wanted)
    return "draining pod \"" + name + "\" would leave " + std::to_string(staying) + " storage pods for " +
           std::to_string(wanted) + " copies per version (network.redundancy): add a pod first";
  m.set_draining(true);
  *m.mutable_authorization() = auth;
  if (int err = ns_.record_member(m)) return std::string("cannot record it: ") + std::strerror(err);
  adopt_members();  // takes effect here now, on the others when the op reaches them
  spdlog::warn("pod {} is draining by request: its copies move to the other pods, then it leaves", name);
  return "";
}

nlohmann::json PeerNode::status() {
  nlohmann::json out = nlohmann::json::array();
  const int64_t now = now_ms();
  for (auto& p : peers()) {  // peer fields are atomics: no lock needed
    const int64_t last = p->last_ok_ms;
    const uint64_t pid = p->id;
    out.push_back({{"name", p->name},
                   {"address", p->address},
                   {"id", pid ? hex_id(pid) : ""},
                   {"role", p->storage ? "storage" : "client"},
                   {"state", state_name(state_of(*p))},
                   {"draining", p->draining.load()},
                   {"last_contact_ms", last == 0 ? -1 : now - last},
                   {"used_bytes", p->used_bytes.load()},
                   {"free_bytes", p->free_bytes.load()}});
  }
  return out;
}

}  // namespace wormhole
