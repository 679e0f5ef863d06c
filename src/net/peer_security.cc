// PeerNode, security side (network.tls; docs/architecture.md "Security"): this pod's
// certificate (made by the network CA it holds, or asked of the pod that holds it with a
// CSR), the credentials of every channel and of the server, the caller's identity taken
// from its certificate, and the join policy for pods that ask for a certificate: open,
// token (wh1- tokens issued by the CA pod, or network.token), approval (pending until an
// admin decides).
#include <grpc/grpc_security_constants.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <thread>
#include <utility>

#include "meta/op_validation.h"
#include "net/peer.h"

namespace wormhole {
namespace {

constexpr auto kCertJoinDeadline = std::chrono::seconds(5);
constexpr int kFetchChainTimeoutMs = 3000;
// A pod without a certificate asks for one this long at most (an approval can take a
// while: an admin must run `wormhole approve`), once a second.
constexpr int64_t kCertificateWaitMs = 15 * 60 * 1000;
constexpr uint64_t kDefaultTokenTtlMs = 3600 * 1000;
constexpr uint64_t kMaxTokenTtlMs = 365ull * 86400 * 1000;
constexpr uint64_t kMaxTokenUses = 1000000;

uint64_t wall_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

std::shared_ptr<grpc::ChannelCredentials> PeerNode::channel_credentials() const {
  // Before start() has the certificate, channels are placeholders: start() replaces them
  // before any thread uses them (and a TLS pod would refuse them anyway).
  if (!config_.network.tls || !tls_.ready()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = tls_.ca_cert;
  o.pem_private_key = tls_.key;
  o.pem_cert_chain = tls_.cert;
  return grpc::SslCredentials(o);
}

std::shared_ptr<grpc::ServerCredentials> PeerNode::server_credentials() const {
  if (!config_.network.tls) return grpc::InsecureServerCredentials();
  // Client certificates are verified when presented, and required by every handler but
  // Join (a pod asking for its first certificate has none): see check_caller.
  grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = tls_.ca_cert;
  o.pem_key_cert_pairs.push_back({tls_.key, tls_.cert + tls_.ca_cert});  // the chain shows the CA
  return grpc::SslServerCredentials(o);
}

std::string PeerNode::caller_identity(grpc::ServerContext* ctx, certs::Identity* who) {
  const std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  const std::vector<grpc::string_ref> pems =
      auth ? auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME) : std::vector<grpc::string_ref>{};
  if (pems.empty()) return "no certificate: only members, with the certificate the network CA gave them, are served";
  std::string error;
  if (!certs::read_cert(std::string(pems[0].data(), pems[0].size()), who, &error))
    return "an unreadable certificate: " + error;
  return "";
}

std::string PeerNode::check_caller(grpc::ServerContext* ctx, uint32_t version, const std::string& network,
                                   uint64_t chunk_size, const std::string& name, uint64_t id) {
  if (config_.network.tls) {
    certs::Identity who;
    if (std::string why = caller_identity(ctx, &who); !why.empty()) return why;
    if (who.network != config_.network.name) return "a certificate of another network";
    if (!valid_pod_name(name)) return "invalid pod name";
    if (who.pod_name != name || who.pod_id != id)
      return "the request says it is from pod \"" + name + "\" but its certificate is pod \"" +
             (valid_pod_name(who.pod_name) ? who.pod_name : "?") + "\"";
  }
  return check_sender(version, network, chunk_size, name, id);
}

std::string PeerNode::ca_address() {
  for (const pb::Member& m : ns_.members())
    if (m.ca() && !m.forgotten() && m.pod_id() != pod_id_) return m.address();
  return "";
}

bool PeerNode::prepare_tls(std::string* error) {
  if (!config_.network.tls) {
    spdlog::warn("network.tls = false: pod-to-pod traffic is in clear and any process that reaches {} is served",
                 self_.listen);
    return true;
  }
  if (!tls_.load(error)) return false;
  tokens_ = std::make_unique<JoinTokens>(tls_.dir + "/tokens.json");
  if (!tokens_->load(error)) return false;
  if (tls_.ready()) {
    std::string why;
    if (certs::key_matches_cert(tls_.key, tls_.cert) && certs::verify_cert(tls_.ca_cert, tls_.cert, &why)) {
      spdlog::info("TLS: network CA {}{}", certs::cert_fingerprint(tls_.ca_cert),
                   tls_.is_ca() ? " (held by this pod)" : "");
      return true;
    }
    spdlog::warn("this pod's certificate is not valid any more ({}): getting a new one", why);
    tls_.cert.clear();
  }
  // The first [[pod]] of the file makes the network's CA on its first start, unless the
  // file names a CA made elsewhere or the pod joins an existing network (peers).
  const bool first_pod = !config_.pods.empty() && config_.pods.front().name == self_.name && self_.peers.empty() &&
                         config_.network.ca_fingerprint.empty();
  if (tls_.is_ca() || (tls_.ca_cert.empty() && first_pod)) {
    std::string fingerprint;
    if (!tls_.init_network(config_.network.name, self_.name, pod_id_, &fingerprint, error)) return false;
    spdlog::info("TLS: this pod holds the CA of network \"{}\", fingerprint {} (other pods get their certificates "
                 "from it; put it in network.ca_fingerprint)",
                 config_.network.name, fingerprint);
    return true;
  }
  return obtain_certificate(error);
}

std::string PeerNode::trusted_ca_at(const std::string& address, std::string* error) {
  std::vector<std::string> chain;
  if (!certs::fetch_server_chain(address, kFetchChainTimeoutMs, &chain, error)) return "";
  std::string expected = config_.network.ca_fingerprint, id, secret, token_fingerprint;
  if (expected.empty() && JoinTokens::parse(join_token_, &id, &secret, &token_fingerprint)) expected = token_fingerprint;
  if (!tls_.ca_cert.empty()) expected = certs::cert_fingerprint(tls_.ca_cert);  // a CA already trusted here
  if (expected.empty()) {
    const std::string& ca = chain.back();
    if (tofu_logged_.size() < 64 && tofu_logged_.insert(certs::cert_fingerprint(ca)).second)
      spdlog::warn("TLS: trusting the network CA {} shown by {} on first use (set network.ca_fingerprint, or join "
                 "with a token, to check it)",
                 certs::cert_fingerprint(ca), address);
    return ca;
  }
  for (const std::string& pem : chain)
    if (certs::cert_fingerprint(pem) == expected) return pem;
  *error = address + " does not show the network CA " + expected.substr(0, 16) + "…: not this network, or not a pod";
  return "";
}

std::string PeerNode::join_with_csr(const std::string& address, const std::string& ca_cert, const std::string& csr,
                                    std::string* redirect, bool* retry) {
  *retry = true;
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ca_cert;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(certs::kPodDnsName);
  auto stub = pb::Peer::NewStub(grpc::CreateCustomChannel(address, grpc::SslCredentials(o), args));
  pb::JoinRequest req;
  req.set_protocol_version(kProtocolVersion);
  req.set_network(config_.network.name);
  req.set_chunk_size(config_.network.chunk_size);
  *req.mutable_pod() = self_member();
  req.set_token(join_token_);
  req.set_csr(csr);
  pb::JoinReply reply;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kCertJoinDeadline);
  const grpc::Status st = stub->Join(&ctx, req, &reply);
  if (!st.ok()) {
    // Another network, protocol or chunk size does not change by asking again.
    *retry = st.error_code() != grpc::StatusCode::FAILED_PRECONDITION;
    return address + ": " + st.error_message();
  }
  if (reply.pending()) return address + ": waiting for an admin's approval (`wormhole approve " + self_.name + "`)";
  if (!reply.accepted() && !reply.ca_address().empty()) {
    *redirect = reply.ca_address();
    return address + ": " + reply.reason();
  }
  if (!reply.accepted()) {
    *retry = false;
    return address + ": " + reply.reason();
  }
  // What comes back is checked as if it came from anyone: the CA we trusted, a certificate
  // of our key, signed by it, naming this pod.
  std::string why;
  certs::Identity who;
  if (certs::cert_fingerprint(reply.ca_certificate()) != certs::cert_fingerprint(ca_cert) ||
      !certs::key_matches_cert(tls_.key, reply.certificate()) ||
      !certs::verify_cert(ca_cert, reply.certificate(), &why) || !certs::read_cert(reply.certificate(), &who, &why) ||
      who.pod_id != pod_id_ || who.pod_name != self_.name || who.network != config_.network.name)
    return address + ": sent a certificate that is not this pod's (" + why + ")";
  std::string error;
  if (!tls_.save("ca.crt", ca_cert, &error) || !tls_.save("pod.crt", reply.certificate(), &error)) {
    *retry = false;
    return error;
  }
  tls_.ca_cert = ca_cert;
  tls_.cert = reply.certificate();
  std::string invalid;
  bool valid = reply.members_size() <= static_cast<int>(kMaxPeers) + 1;
  for (int i = 0; valid && i < reply.members_size(); ++i) valid = validate_member(reply.members(i), &invalid);
  if (valid) {
    std::lock_guard lock(mu_);
    for (const pb::Member& m : reply.members())
      if (m.pod_id() != pod_id_ && m.name() != self_.name && !m.address().empty())
        add_peer_locked(m.name(), m.address(), m.role() == "storage", m.pod_id());
  }
  certified_by_join_ = true;
  return "";
}

bool PeerNode::obtain_certificate(std::string* error) {
  std::string csr;
  if (!tls_.request(config_.network.name, self_.name, pod_id_, &csr, error)) return false;
  std::vector<std::string> addresses = self_.peers;
  for (const PodConfig& p : config_.pods)
    if (p.name != self_.name && !p.listen.empty()) addresses.push_back(p.listen);
  for (const pb::Member& m : ns_.members())
    if (m.pod_id() != pod_id_ && !m.forgotten() && !m.address().empty()) addresses.push_back(m.address());
  if (addresses.empty()) {
    *error = "no certificate and no pod to ask for one: list the network's pods ([[pod]] listen) or peers";
    return false;
  }
  certs::Identity me;
  std::string unused;
  certs::read_csr(csr, &me, &unused);
  // The key's fingerprint is what an admin compares with `wormhole pending` before approving.
  spdlog::info("TLS: asking the network CA for this pod's certificate (this pod's key {})", me.key_fingerprint);
  const int64_t deadline = steady_now_ms() + kCertificateWaitMs;
  std::string last;
  int64_t logged_ms = 0;
  bool said_pending = false;
  // One attempt at `address`: 1 got it, 0 ask again later, -1 refused for good. A member that
  // is not the CA pod names it (*redirect).
  auto attempt = [&](const std::string& address, std::string* redirect) {
    std::string why;
    const std::string ca = trusted_ca_at(address, &why);
    bool retry = true;
    if (!ca.empty()) {
      why = join_with_csr(address, ca, csr, redirect, &retry);
      if (why.empty()) {
        spdlog::info("TLS: got this pod's certificate through {} (network CA {})", address,
                     certs::cert_fingerprint(ca));
        return 1;
      }
    }
    if (!retry) {
      *error = "the network refused this pod a certificate: " + why;
      return -1;
    }
    if (why.find("approval") != std::string::npos && !std::exchange(said_pending, true))
      spdlog::warn("TLS: {}", why);
    last = why;
    return 0;
  };
  while (steady_now_ms() < deadline) {  // bounded by the deadline
    for (const std::string& address : addresses) {  // bounded: the list is fixed
      std::string redirect;
      int got = attempt(address, &redirect);
      if (got == 0 && !redirect.empty() && redirect != address) {
        std::string again;
        got = attempt(redirect, &again);  // one hop: the CA pod answers itself
      }
      if (got > 0) return true;
      if (got < 0) return false;
    }
    if (steady_now_ms() - logged_ms >= 30000) {
      logged_ms = steady_now_ms();
      spdlog::warn("TLS: no certificate yet ({}); asking again every second", last);
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  *error = "no certificate after " + std::to_string(kCertificateWaitMs / 60000) + " minutes: " + last;
  return false;
}

std::string PeerNode::certify_join(const pb::JoinRequest& req, const pb::Member* existing, pb::JoinReply* reply,
                                   pb::Member* described) {
  const pb::Member& m = *described;
  if (!tls_.is_ca()) {
    reply->set_ca_address(ca_address());
    return "this pod does not hold the network CA: ask the pod that does" +
           (reply->ca_address().empty() ? std::string(" (none known here)") : " (" + reply->ca_address() + ")");
  }
  certs::Identity who;
  std::string error;
  if (!certs::read_csr(req.csr(), &who, &error)) return "a malformed certificate request: " + error;
  if (who.network != config_.network.name) return "a certificate request for another network";
  if (who.pod_name != m.name() || who.pod_id != m.pod_id()) return "the certificate request names another pod";
  if (existing && existing->forgotten() && member_change_authorized(*existing, true))
    return "this pod was forgotten: its identity can never come back";
  // A member keeps its key for life (a renewal is for the same key): a request for a known
  // identity with another key is someone else taking it over. A pod that lost its key lost
  // its storage directory too, and joins again as a new pod.
  if (existing && !existing->key_fingerprint().empty() && existing->key_fingerprint() != who.key_fingerprint)
    return "pod \"" + m.name() + "\" is certified for another key: a new storage directory joins as a new pod";
  // A renewal (a member certified for this very key: its certificate expired) is that pod
  // again, not a newcomer: the join policy was passed when the key was first certified.
  const bool renewal = existing && !existing->key_fingerprint().empty();
  const std::string policy = renewal ? std::string("open") : config_.network.join;
  if (policy == "token") {
    std::string id, secret, fingerprint;
    if (JoinTokens::parse(req.token(), &id, &secret, &fingerprint)) {
      if (std::string why = tokens_->consume(req.token(), wall_ms()); !why.empty()) return why;
    } else if (config_.network.token.empty() || req.token() != config_.network.token) {
      return "wrong join token";
    }
  } else if (policy == "approval") {
    std::lock_guard lock(pending_mu_);
    auto it = pending_.find(m.name());
    if (it != pending_.end() && it->second.key_fingerprint == who.key_fingerprint &&
        it->second.member.pod_id() == m.pod_id()) {
      if (it->second.decision < 0) return "an admin denied this pod's join";
      if (it->second.decision > 0) {
        pending_.erase(it);
      } else {
        it->second.last_ms = steady_now_ms();
        reply->set_pending(true);
        return "waiting for an admin's approval";
      }
    } else {
      // A decided request is not replaced by one with another key (it would inherit the
      // decision's name): that key waits until the decision is used or the entry evicted.
      if (it != pending_.end() && it->second.decision != 0) return "another key already asked for this name";
      if (it == pending_.end() && pending_.size() >= kMaxPendingJoins) {
        auto oldest = pending_.begin();  // the one asked for least recently goes
        for (auto p = pending_.begin(); p != pending_.end(); ++p)
          if (p->second.last_ms < oldest->second.last_ms) oldest = p;
        pending_.erase(oldest);
      }
      PendingJoin& p = pending_[m.name()];  // a new key for the name replaces the old request
      p.member = m;
      p.key_fingerprint = who.key_fingerprint;
      p.first_ms = p.last_ms = steady_now_ms();
      p.decision = 0;
      spdlog::info("pod {} asks to join (key {}): `wormhole approve {}` or `wormhole deny {}`", m.name(),
                   who.key_fingerprint, m.name(), m.name());
      reply->set_pending(true);
      return "waiting for an admin's approval";
    }
  }
  std::string cert;
  if (!certs::sign_csr(tls_.ca_key, tls_.ca_cert, req.csr(), config_.network.name, -60, kPodCertValidSeconds, &cert,
                       &who, &error))
    return "cannot issue the certificate: " + error;
  reply->set_certificate(cert);
  reply->set_ca_certificate(tls_.ca_cert);
  described->set_key_fingerprint(who.key_fingerprint);
  spdlog::info("TLS: issued a certificate to pod {} ({:016x}, key {})", m.name(), m.pod_id(), who.key_fingerprint);
  return "";
}

nlohmann::json PeerNode::tokens(const nlohmann::json& request) {
  if (!config_.network.tls || !tokens_) return {{"error", "network.tls is off: join tokens need the network CA"}};
  if (!started_) return {{"error", "this pod is still starting: ask again when it is mounted"}};
  const std::string action = request.value("action", "list");
  if (action == "list") return {{"tokens", tokens_->list(wall_ms())}};
  if (action == "revoke") {
    std::string error;
    if (!tokens_->revoke(request.value("id", ""), &error)) return {{"error", error}};
    return {{"revoked", request.value("id", "")}};
  }
  if (action != "create") return {{"error", "unknown token action"}};
  if (!tls_.is_ca()) {
    const std::string ca = ca_address();
    return {{"error", "this pod does not hold the network CA: make tokens on the pod that does" +
                          (ca.empty() ? std::string() : " (" + ca + ")")}};
  }
  if (config_.network.join != "token")
    return {{"error", "network.join is \"" + config_.network.join + "\": tokens are for join = \"token\""}};
  const nlohmann::json ttl = request.value("ttl_ms", nlohmann::json(kDefaultTokenTtlMs));
  const nlohmann::json uses_json = request.value("uses", nlohmann::json(1));
  if (!ttl.is_number_unsigned() || ttl.get<uint64_t>() == 0 || ttl.get<uint64_t>() > kMaxTokenTtlMs)
    return {{"error", "--ttl: from 1 ms to 365 days"}};
  if (!uses_json.is_number_unsigned() || uses_json.get<uint64_t>() > kMaxTokenUses)
    return {{"error", "--uses: from 0 (unlimited) to 1000000"}};
  const uint64_t ttl_ms = ttl.get<uint64_t>();
  const uint32_t uses = static_cast<uint32_t>(uses_json.get<uint64_t>());
  std::string error;
  const std::string token = tokens_->create(ttl_ms, uses, certs::cert_fingerprint(tls_.ca_cert), wall_ms(), &error);
  if (token.empty()) return {{"error", error}};
  spdlog::info("issued a join token ({} uses, valid {} s)", uses == 0 ? "unlimited" : std::to_string(uses),
               ttl_ms / 1000);
  return {{"token", token}, {"expires_ms", wall_ms() + ttl_ms}, {"uses", uses}};
}

nlohmann::json PeerNode::pending_joins() {
  nlohmann::json out = nlohmann::json::array();
  std::lock_guard lock(pending_mu_);
  const int64_t now = steady_now_ms();
  for (const auto& [name, p] : pending_)
    out.push_back({{"pod", name},
                   {"pod_id", fmt::format("{:016x}", p.member.pod_id())},
                   {"address", p.member.address()},
                   {"role", p.member.role()},
                   {"key_fingerprint", p.key_fingerprint},
                   {"waiting_s", (now - p.first_ms) / 1000},
                   {"last_asked_s", (now - p.last_ms) / 1000},
                   {"decision", p.decision > 0 ? "approved" : p.decision < 0 ? "denied" : "pending"}});
  return out;
}

std::string PeerNode::decide_join(const std::string& name, bool approve, const std::string& key_prefix) {
  if (config_.network.join != "approval") return "network.join is \"" + config_.network.join + "\", not \"approval\"";
  std::lock_guard lock(pending_mu_);
  auto it = pending_.find(name);
  if (it == pending_.end())
    return "no pending join from a pod named \"" + name + "\" here (`wormhole pending` lists them; joins wait on the "
           "pod that holds the network CA)";
  // The key the admin saw in `wormhole pending`: another key asking under that name since
  // (someone else) is not what was approved.
  if (!key_prefix.empty() && it->second.key_fingerprint.compare(0, key_prefix.size(), key_prefix) != 0)
    return "pod \"" + name + "\" now asks with key " + it->second.key_fingerprint.substr(0, 16) + "…, not " +
           key_prefix + ": look at `wormhole pending` again";
  it->second.decision = approve ? 1 : -1;
  spdlog::info("an admin {} the join of pod {} (key {})", approve ? "approved" : "denied", name,
               it->second.key_fingerprint);
  return "";
}

}  // namespace wormhole
