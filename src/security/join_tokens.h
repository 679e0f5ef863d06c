// JoinTokens: the join tokens a pod issued (`wormhole token create`), kept in tls/tokens.json
// of its storage directory. A token is "wh1-<id>-<secret>-<CA fingerprint>": the id names
// it (list, revoke), only the SHA-256 of the secret is stored, and the fingerprint lets the
// joining pod check, before it sends anything, that it talks to this network's CA. A token
// expires, has a number of uses, and can be revoked. Tokens are checked (and their uses
// counted) by the pod that issued them, which must hold the network CA to sign the joining
// pod's certificate: counting in one place makes `--uses 1` exact.
// Thread-safe.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace wormhole {

class JoinTokens {
 public:
  // At most this many tokens are kept (expired and used-up ones are dropped first).
  static constexpr size_t kMaxTokens = 1024;

  // `path`: the JSON file (created on the first token). Call load() before use.
  explicit JoinTokens(std::string path) : path_(std::move(path)) {}
  // Reads the file. False + *error if it exists and is malformed.
  bool load(std::string* error);
  // A new token valid `ttl_ms` from `now_ms` for `uses` joins (0: unlimited), persisted.
  // "" + *error on failure.
  std::string create(uint64_t ttl_ms, uint32_t uses, const std::string& ca_fingerprint, uint64_t now_ms,
                     std::string* error);
  // Checks `token` and counts a use (persisted before it returns). Returns "" or why not.
  std::string consume(const std::string& token, uint64_t now_ms);
  // Revokes the token with this id (or the full token). False if unknown.
  bool revoke(const std::string& id_or_token, std::string* error);
  // The tokens (id, created, expires, uses left, revoked), never their secrets.
  nlohmann::json list(uint64_t now_ms) const;

  // Splits a token; false if it is not of the form above. Pure.
  static bool parse(const std::string& token, std::string* id, std::string* secret, std::string* ca_fingerprint);

 private:
  struct Token {
    std::string id, secret_sha256;
    uint64_t created_ms = 0, expires_ms = 0;
    uint32_t uses_left = 0;  // with `limited`
    bool limited = false, revoked = false;
  };
  bool save_locked(std::string* error);
  void prune_locked(uint64_t now_ms);

  const std::string path_;
  mutable std::mutex mu_;
  std::vector<Token> tokens_;
};

}  // namespace wormhole
