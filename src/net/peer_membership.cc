// PeerNode, membership side: joining a network through any member (network.join policy),
// the replicated member list, and snapshots for a pod that lacks ops no longer kept.
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <thread>

#include "meta/op_validation.h"
#include "security/admin_auth.h"
#include "net/peer.h"

namespace wormhole {
namespace {

constexpr auto kJoinDeadline = std::chrono::seconds(5);
// A new pod catches up before it mounts, for at most this long (then it mounts anyway and
// goes on catching up in the background).
constexpr auto kInitialCatchUp = std::chrono::seconds(60);
// Caught up, how long a new pod waits at most for every member to answer it before mounting.
constexpr auto kMembersAnswer = std::chrono::seconds(5);
constexpr auto kSnapshotDeadline = std::chrono::minutes(30);
// A snapshot piece carries at most this many keys or bytes.
constexpr size_t kSnapshotPieceKeys = 4096, kSnapshotPieceBytes = 1 << 20;
// A join token longer than this is not one (it is compared, never stored).
constexpr size_t kMaxTokenBytes = 4096;
// Longest key a snapshot may carry: the longest record key (a directory entry: prefix,
// parent id, a 255-byte name, NUL, entry id) with room to spare.
constexpr size_t kMaxSnapshotKeyBytes = 1024;

// Whether `k` is the key of a record a snapshot carries (meta/keys.h: every replicated
// kind; a pod's own counters and open files are not sent, and ignored if they were).
bool snapshot_key(const std::string& k) {
  return !k.empty() && k.size() <= kMaxSnapshotKeyBytes && std::string_view("IEDAVXLTMOPNSR").find(k[0]) != std::string_view::npos;
}

}  // namespace

pb::Member PeerNode::self_member() const {
  pb::Member m;
  m.set_pod_id(pod_id_);
  m.set_name(self_.name);
  m.set_address(self_.listen);
  m.set_role(self_.role);
  m.set_ca(config_.network.tls && tls_.is_ca());
  m.set_key_fingerprint(own_key_fingerprint_);
  return m;
}

bool PeerNode::member_change_authorized(const pb::Member& m, bool forgotten) const {
  if (config_.network.admins.empty()) return true;
  const pb::AdminAuthorization& a = m.authorization();
  // The pod that took the command checked the signature's age; here only whose it is and
  // what it signs (an op may arrive long after: a pod back from a partition).
  auto signed_for = [&](const char* action) {
    return check_admin(config_.network.admins, config_.network.name, action, m.name(), a.time_ms(), a.time_ms(),
                       a.admin(), a.signature())
        .empty();
  };
  // A drain's signature justifies the drained pod's own leave only (its own op), not a
  // forget another pod records by copying it.
  if (forgotten)
    return signed_for("forget") || signed_for("forget-force") || (m.forgotten_by() == m.pod_id() && signed_for("drain"));
  return signed_for("drain");
}

void PeerNode::adopt_members() {
  for (pb::Member m : ns_.members()) {
    // Flags an admin did not sign are not acted on (logged once per pod): the record stays
    // as replicated, the same on every pod.
    for (const bool forgotten : {true, false}) {
      if (!(forgotten ? m.forgotten() : m.draining()) || member_change_authorized(m, forgotten)) continue;
      if (unauthorized_logged_.size() < kMaxPeers && unauthorized_logged_.insert(m.pod_id()).second)
        spdlog::error("pod {} is recorded as {} without an admin's signature (network.admins): ignored", m.name(),
                      forgotten ? "forgotten" : "draining");
      forgotten ? m.set_forgotten(false) : m.set_draining(false);
    }
    if (m.pod_id() == pod_id_) {
      self_draining_ = m.draining();
      if (m.forgotten() && !self_left_.exchange(true))
        spdlog::warn("this pod has left the network (drained or forgotten): stop it; its storage directory can go");
      continue;
    }
    if (m.name() == self_.name) continue;
    if (m.forgotten()) {
      std::lock_guard lock(mu_);
      for (auto& p : peers())
        if (p->id == m.pod_id() && !p->forgotten.exchange(true)) {
          replicator_.remove_member(m.pod_id());
          spdlog::info("pod {} was forgotten: no longer talked to or waited for", p->name);
        }
      continue;
    }
    if (m.address().empty()) continue;
    std::lock_guard lock(mu_);
    bool known = false;
    for (auto& p : peers()) known |= p->name == m.name();
    if (!known) spdlog::info("pod {} ({}) is a member: talking to it", m.name(), m.address());
    if (Peer* p = add_peer_locked(m.name(), m.address(), m.role() == "storage", m.pod_id());
        p && p->id == m.pod_id() && p->draining.exchange(m.draining()) != m.draining())
      spdlog::info("pod {} {}", m.name(),
                   m.draining() ? "is draining: its copies move to other pods" : "is no longer draining");
  }
}

grpc::Status PeerNode::handle_join(grpc::ServerContext* ctx, const pb::JoinRequest& req, pb::JoinReply* reply) {
  // What a joining pod says of itself is its name, id, address and role; whether it is
  // draining, forgotten or the CA pod is not its to say (a join recording "ca" would send
  // other newcomers to it).
  pb::Member m = req.pod();
  m.clear_forgotten();
  m.clear_draining();
  m.clear_ca();
  m.clear_authorization();
  m.clear_key_fingerprint();
  m.clear_forgotten_by();
  auto refuse = [&](const std::string& why) {
    spdlog::warn("refused pod \"{}\" ({}) joining: {}", m.name(), m.address(), why);
    reply->set_accepted(false);
    reply->set_reason(why);
    return grpc::Status::OK;
  };
  std::string invalid;
  if (!validate_member(m, &invalid) || m.address().empty() || req.token().size() > kMaxTokenBytes) {
    // Not echoed as given: the name and address may be anything.
    spdlog::warn("refused a join of pod id {:016x}: {}", m.pod_id(), invalid.empty() ? "no address, or a token too long" : invalid);
    reply->set_accepted(false);
    reply->set_reason("incomplete or invalid pod description");
    return grpc::Status::OK;
  }
  if (m.name() == self_.name || m.pod_id() == pod_id_) return refuse("that is this pod's name or identity");
  // One identity, one name: neither may be taken over (the id is no secret: it is in every
  // member list and certificate).
  std::optional<pb::Member> existing;  // this id's record
  for (const pb::Member& known : ns_.members()) {
    if (known.pod_id() == m.pod_id()) existing = known;
    else if (known.name() == m.name() && !known.forgotten())
      return refuse("the name \"" + m.name() + "\" belongs to another pod");
  }
  if (existing && existing->name() != m.name())
    return refuse("that pod id belongs to pod \"" + existing->name() + "\"");
  {
    std::lock_guard lock(mu_);
    for (auto& p : peers()) {
      if (p->name == m.name() && p->id != 0 && p->id != m.pod_id())
        return refuse("the name \"" + m.name() + "\" belongs to another pod");
      if (p->id == m.pod_id() && p->name != m.name()) return refuse("that pod id belongs to another pod");
    }
  }
  const std::string& policy = config_.network.join;
  if (config_.network.tls) {
    // A pod without a certificate asks for one (the policy decides); a pod with one is a
    // member already (the CA signed it): its certificate must be the pod it describes.
    if (!req.csr().empty()) {
      if (req.csr().size() > certs::kMaxPemBytes) return refuse("a certificate request too large");
      if (!tls_.is_ca() && ca_address().empty())  // not a refusal: this member is still catching up
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "this pod does not hold the network CA and knows of none yet: ask again");
      if (std::string why = certify_join(req, existing ? &*existing : nullptr, reply, &m); !why.empty()) {
        if (!reply->pending()) return refuse(why);
        reply->set_accepted(false);
        reply->set_reason(why);
        return grpc::Status::OK;
      }
    } else {
      // A member with its certificate joining again (a restart with peers): its certificate
      // must be the pod it describes. Not yet in this pod's member list is fine (its Member
      // op may be on its way): the CA certified it.
      certs::Identity who;
      if (std::string why = caller_identity(ctx, &who); !why.empty()) return refuse(why);
      if (who.network != config_.network.name || who.pod_name != m.name() || who.pod_id != m.pod_id())
        return refuse("the request describes another pod than its certificate");
      if (existing && existing->forgotten() && member_change_authorized(*existing, true))
        return refuse("this pod was forgotten: its identity can never come back");
      m.set_key_fingerprint(who.key_fingerprint);
    }
  } else if (policy == "token" && (config_.network.token.empty() || req.token() != config_.network.token)) {
    // Without TLS only network.token is checked (wh1- tokens need the CA): none set, none fits.
    return refuse("wrong join token");
  } else if (policy == "approval") {
    return refuse("network.join = \"approval\" needs network.tls: add the pod to the [[pod]] list instead");
  }
  // Recorded as an op: every member learns of the new pod, now or when it comes back. A
  // member joining again keeps what it is (draining, the CA, an admin's signature): only its
  // description is updated, and only when it changed.
  pb::Member record = existing ? *existing : m;
  record.set_name(m.name());
  record.set_address(m.address());
  record.set_role(m.role());
  if (!m.key_fingerprint().empty()) record.set_key_fingerprint(m.key_fingerprint());
  if (!existing || record.SerializeAsString() != existing->SerializeAsString())
    if (int err = ns_.record_member(record))
      return refuse(std::string("cannot record the member: ") + std::strerror(err));
  {
    std::lock_guard lock(mu_);
    add_peer_locked(m.name(), m.address(), m.role() == "storage", m.pod_id());
  }
  spdlog::info("pod {} ({}) joined the network through this pod", m.name(), m.address());
  reply->set_accepted(true);
  *reply->add_members() = self_member();
  for (auto& p : peers()) {
    if (p->id == 0) continue;
    pb::Member* out = reply->add_members();
    out->set_pod_id(p->id);
    out->set_name(p->name);
    out->set_address(p->address);
    out->set_role(p->storage ? "storage" : "client");
  }
  return grpc::Status::OK;
}

bool PeerNode::join_network(std::string* error) {
  std::string reasons;
  // A pod that got its certificate at this start joined then (the CA pod recorded it).
  bool joined = certified_by_join_;
  for (const std::string& address : self_.peers) {
    if (joined) break;
    auto stub = pb::Peer::NewStub(peer_channel(address));
    pb::JoinRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_network(config_.network.name);
    req.set_chunk_size(config_.network.chunk_size);
    *req.mutable_pod() = self_member();
    req.set_token(config_.network.token);
    pb::JoinReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kJoinDeadline);
    grpc::Status st = stub->Join(&ctx, req, &reply);
    if (!st.ok() || !reply.accepted()) {
      reasons += "\n  " + address + ": " + (st.ok() ? reply.reason() : st.error_message());
      continue;
    }
    std::string invalid;
    bool valid = reply.members_size() <= static_cast<int>(kMaxPeers) + 1;
    for (int i = 0; valid && i < reply.members_size(); ++i) valid = validate_member(reply.members(i), &invalid);
    if (!valid) {
      spdlog::warn("join through {}: ignoring its malformed member list ({})", address,
                   invalid.empty() ? "too many members" : invalid);
      reasons += "\n  " + address + ": malformed member list";
      continue;
    }
    std::lock_guard lock(mu_);
    for (const pb::Member& m : reply.members())
      if (m.pod_id() != pod_id_ && m.name() != self_.name)
        add_peer_locked(m.name(), m.address(), m.role() == "storage", m.pod_id());
    spdlog::info("joined network \"{}\" through {} ({} members)", config_.network.name, address, reply.members_size());
    joined = true;
    break;
  }
  const bool fresh = ns_.empty_history();
  if (!joined) {
    if (fresh) {
      *error = "could not join network \"" + config_.network.name + "\" through any of its peers:" + reasons;
      return false;
    }
    spdlog::warn("could not reach the peers to join through; going on with the known members:{}", reasons);
    return true;
  }
  if (!fresh) return true;
  // Catch up before mounting: sync rounds until one brings nothing new. Bounded by time.
  // Caught up, it also waits (a little) until every member answers it: a member that has not
  // learnt of this pod yet (its Member op is on its way) refuses its requests, and a read
  // right after the mount would find the holders of a file refusing it (EIO).
  const auto deadline = std::chrono::steady_clock::now() + kInitialCatchUp;
  std::optional<std::chrono::steady_clock::time_point> caught_up_at;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto before = ns_.applied();
    const std::vector<bool> answered = sync_round();
    if (const int snapshot = act_on_snapshot_advice()) {
      if (snapshot < 0) std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    const bool any = std::find(answered.begin(), answered.end(), true) != answered.end();
    const bool all = std::find(answered.begin(), answered.end(), false) == answered.end();
    if (any && ns_.applied() == before) {  // nothing new: caught up
      const auto now = std::chrono::steady_clock::now();
      if (!caught_up_at) caught_up_at = now;
      if (all || now - *caught_up_at >= kMembersAnswer) break;  // a member down: mount anyway
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return true;
}

int PeerNode::act_on_snapshot_advice() {
  uint64_t source;
  {
    std::lock_guard lock(mu_);
    source = replicator_.take_snapshot_source();
  }
  Peer* peer = source ? peer_by_id(source) : nullptr;
  if (!peer) return 0;
  if (ns_.empty_history()) {
    if (install_snapshot_from(*peer)) return 1;
    // Advice that was optional (snapshot when faster) is asked for no more: a pod whose
    // installs fail replays the ops instead. (Ops that were trimmed leave no choice: the
    // advice comes again, and the install is tried again.)
    std::lock_guard lock(mu_);
    replicator_.set_accepts_snapshot(false);
    return -1;
  }
  if (snapshot_refused_from_.insert(source).second) {  // said once per advising peer (bounded by the peers)
    spdlog::error("pod {} no longer keeps ops this pod lacks, and this pod has state of its own: it cannot catch "
                  "up; start it again with an empty storage directory",
                  peer->name);
  }
  return -1;
}

grpc::Status PeerNode::serve_snapshot(grpc::ServerContext* ctx, const pb::SnapshotRequest& req,
                                      grpc::ServerWriter<pb::SnapshotPiece>* writer) {
  const std::string why =
      check_caller(ctx, req.protocol_version(), req.network(), req.chunk_size(), req.from_pod_name(), req.from_pod_id());
  if (!why.empty()) {
    spdlog::warn("refused a snapshot to {}: {}", ctx->peer(), why);
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, why);
  }
  pb::SnapshotPiece piece;
  size_t bytes = 0, keys = 0;
  bool ok = true;
  const bool complete = ns_.snapshot([&](std::string_view k, std::string_view v) {
    piece.add_keys(k.data(), k.size());
    piece.add_values(v.data(), v.size());
    bytes += k.size() + v.size();
    ++keys;
    if (piece.keys_size() >= static_cast<int>(kSnapshotPieceKeys) || bytes >= kSnapshotPieceBytes) {
      // Cancellation is checked once per piece, not per key: on the sync API IsCancelled
      // polls the call's completion queue (~25 µs), which made a 300k-record snapshot
      // take 8 s of one core.
      ok = writer->Write(piece) && !ctx->IsCancelled();
      piece.Clear();
      bytes = 0;
    }
    return ok;
  });
  if (!ok) return grpc::Status(grpc::StatusCode::CANCELLED, "the receiver went away");
  if (!complete) {
    // No `last` piece: the receiver sees a cut snapshot and installs nothing.
    spdlog::error("a snapshot for pod {} failed: the metadata store could not be read or synced",
                  req.from_pod_name());
    return grpc::Status(grpc::StatusCode::INTERNAL, "the metadata store could not be read or synced");
  }
  piece.set_last(true);
  writer->Write(piece);
  spdlog::info("sent a snapshot of {} records to pod {}", keys, req.from_pod_name());
  return grpc::Status::OK;
}

bool PeerNode::install_snapshot_from(Peer& peer) {
  pb::SnapshotRequest req;
  identify(&req);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kSnapshotDeadline);
  std::unique_ptr<grpc::ClientReader<pb::SnapshotPiece>> reader = peer.stub->Snapshot(&ctx, req);
  size_t records = 0;
  bool complete = false;
  std::string error;
  ++snapshot_installs_;  // answers to requests made before are stale from here (loop)
  const bool ok = ns_.install_snapshot(
      [&](Meta::SnapshotBatch* batch) {
        if (complete) return 0;
        pb::SnapshotPiece piece;
        if (!reader->Read(&piece) || piece.keys_size() != piece.values_size()) return -1;
        // A member's copy of its store, bounded as the member sends it; a piece that is not
        // is not from an honest member, and the copy is abandoned (the pod stays empty).
        bool valid = piece.keys_size() <= static_cast<int>(kSnapshotPieceKeys);
        for (int i = 0; valid && i < piece.keys_size(); ++i) valid = snapshot_key(piece.keys(i));
        if (!valid) {
          spdlog::warn("the snapshot from pod {} has a malformed piece: abandoned", peer.name);
          return -1;
        }
        for (int i = 0; i < piece.keys_size(); ++i) batch->emplace_back(piece.keys(i), piece.values(i));
        records += static_cast<size_t>(piece.keys_size());
        complete = piece.last();
        return 1;
      },
      &error);
  if (!complete) ctx.TryCancel();
  grpc::Status st = reader->Finish();
  if (!ok) {
    spdlog::error("installing a snapshot from pod {} failed: {}{}", peer.name, error,
                  st.ok() ? "" : " (" + st.error_message() + ")");
    return false;
  }
  {
    std::lock_guard lock(mu_);
    replicator_.reset();  // what it waited for is in the snapshot
  }
  spdlog::info("installed a snapshot of {} records from pod {}", records, peer.name);
  return true;
}

}  // namespace wormhole
