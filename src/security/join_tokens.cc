#include "security/join_tokens.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "security/certs.h"

namespace wormhole {
namespace {

constexpr size_t kIdHex = 8, kSecretHex = 32, kFingerprintHex = 64;
constexpr size_t kMaxFileBytes = 1 << 20;

bool is_hex(const std::string& s, size_t n) {
  return s.size() == n && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// Compares without an early exit (a secret's hash: timing says nothing useful, but it costs nothing).
bool same(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

bool JoinTokens::parse(const std::string& token, std::string* id, std::string* secret, std::string* ca_fingerprint) {
  if (token.size() != 4 + kIdHex + 1 + kSecretHex + 1 + kFingerprintHex || token.compare(0, 4, "wh1-") != 0)
    return false;
  *id = token.substr(4, kIdHex);
  *secret = token.substr(4 + kIdHex + 1, kSecretHex);
  *ca_fingerprint = token.substr(4 + kIdHex + 1 + kSecretHex + 1);
  return token[4 + kIdHex] == '-' && token[4 + kIdHex + 1 + kSecretHex] == '-' && is_hex(*id, kIdHex) &&
         is_hex(*secret, kSecretHex) && is_hex(*ca_fingerprint, kFingerprintHex);
}

bool JoinTokens::load(std::string* error) {
  std::lock_guard lock(mu_);
  tokens_.clear();
  std::ifstream in(path_);
  if (!in) return true;  // no token issued yet
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  auto doc = text.size() <= kMaxFileBytes ? nlohmann::json::parse(text, nullptr, false) : nlohmann::json();
  if (doc.is_discarded() || !doc.is_array() || doc.size() > kMaxTokens) {
    *error = path_ + ": malformed token list";
    return false;
  }
  for (const auto& t : doc) {
    if (!t.is_object()) {
      *error = path_ + ": malformed token list";
      return false;
    }
    Token k;
    try {  // a field of the wrong type throws
    k.id = t.value("id", "");
    k.secret_sha256 = t.value("secret_sha256", "");
    k.created_ms = t.value("created_ms", uint64_t{0});
    k.expires_ms = t.value("expires_ms", uint64_t{0});
    k.limited = t.value("limited", false);
    k.uses_left = t.value("uses_left", uint32_t{0});
    k.revoked = t.value("revoked", false);
    } catch (const nlohmann::json::exception&) {
      *error = path_ + ": malformed token entry";
      return false;
    }
    if (!is_hex(k.id, kIdHex) || !is_hex(k.secret_sha256, 64)) {
      *error = path_ + ": malformed token entry";
      return false;
    }
    tokens_.push_back(k);
  }
  return true;
}

bool JoinTokens::save_locked(std::string* error) {
  nlohmann::json doc = nlohmann::json::array();
  for (const Token& t : tokens_)
    doc.push_back({{"id", t.id}, {"secret_sha256", t.secret_sha256}, {"created_ms", t.created_ms},
                   {"expires_ms", t.expires_ms}, {"limited", t.limited}, {"uses_left", t.uses_left},
                   {"revoked", t.revoked}});
  const std::string text = doc.dump(1) + "\n", tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  ok = ok && ::rename(tmp.c_str(), path_.c_str()) == 0;
  if (!ok) *error = "cannot write " + path_ + ": " + std::strerror(errno);
  return ok;
}

void JoinTokens::prune_locked(uint64_t now_ms) {
  // Dead tokens (expired, used up or revoked) go first, oldest first, when the list is full.
  if (tokens_.size() < kMaxTokens) return;
  std::erase_if(tokens_, [&](const Token& t) { return t.revoked || t.expires_ms <= now_ms || (t.limited && t.uses_left == 0); });
  while (tokens_.size() >= kMaxTokens) tokens_.erase(tokens_.begin());
}

std::string JoinTokens::create(uint64_t ttl_ms, uint32_t uses, const std::string& ca_fingerprint, uint64_t now_ms,
                               std::string* error) {
  if (!is_hex(ca_fingerprint, kFingerprintHex)) {
    *error = "no network CA on this pod: tokens are made on the pod that holds it";
    return "";
  }
  std::lock_guard lock(mu_);
  prune_locked(now_ms);
  Token t;
  t.id = certs::random_hex(kIdHex / 2);
  const std::string secret = certs::random_hex(kSecretHex / 2);
  t.secret_sha256 = certs::sha256_hex(secret);
  t.created_ms = now_ms;
  t.expires_ms = now_ms + ttl_ms;
  t.limited = uses > 0;
  t.uses_left = uses;
  tokens_.push_back(t);
  if (!save_locked(error)) {
    tokens_.pop_back();
    return "";
  }
  return "wh1-" + t.id + "-" + secret + "-" + ca_fingerprint;
}

std::string JoinTokens::consume(const std::string& token, uint64_t now_ms) {
  std::string id, secret, fingerprint;
  if (!parse(token, &id, &secret, &fingerprint)) return "not a join token (wh1-…)";
  std::lock_guard lock(mu_);
  for (Token& t : tokens_) {
    if (t.id != id) continue;
    if (!same(t.secret_sha256, certs::sha256_hex(secret))) return "wrong join token";
    if (t.revoked) return "the join token " + id + " was revoked";
    if (t.expires_ms <= now_ms) return "the join token " + id + " has expired";
    if (t.limited && t.uses_left == 0) return "the join token " + id + " is used up";
    if (t.limited) {
      --t.uses_left;
      std::string error;
      if (!save_locked(&error)) {  // not counted, not accepted
        ++t.uses_left;
        return "cannot record the token's use: " + error;
      }
    }
    return "";
  }
  return "unknown join token (issued by another pod, or pruned)";
}

bool JoinTokens::revoke(const std::string& id_or_token, std::string* error) {
  std::string id = id_or_token, secret, fingerprint;
  if (id.size() > kIdHex) parse(id_or_token, &id, &secret, &fingerprint);
  std::lock_guard lock(mu_);
  for (Token& t : tokens_)
    if (t.id == id) {
      t.revoked = true;
      return save_locked(error);
    }
  *error = "no token " + id + " on this pod";
  return false;
}

nlohmann::json JoinTokens::list(uint64_t now_ms) const {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::array();
  for (const Token& t : tokens_)
    out.push_back({{"id", t.id},
                   {"created_ms", t.created_ms},
                   {"expires_ms", t.expires_ms},
                   {"uses_left", t.limited ? nlohmann::json(t.uses_left) : nlohmann::json("unlimited")},
                   {"state", t.revoked ? "revoked"
                             : t.expires_ms <= now_ms ? "expired"
                             : (t.limited && t.uses_left == 0) ? "used up"
                                                               : "valid"}});
  return out;
}

}  // namespace wormhole
