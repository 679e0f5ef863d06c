// Configuration: the declarative TOML file of a network (DESIGN.md §7) parsed and
// validated in full before anything starts. Plain values, thread-compatible.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace wormhole {

struct Reactions {
  // Each one of: continue, throttle, read-only, lower-redundancy, stop.
  std::string favorable = "continue";
  std::string mitigated = "continue";
  std::string grave = "read-only";
  uint64_t throttle_rate_bytes = 10ull << 20;  // per second, the pace of writes under "throttle"
};

struct NetworkConfig {
  std::string name;
  uint32_t redundancy = 2;          // copies per version; 0 means "all" storage pods
  std::string join = "open";        // open | token | approval
  std::string token;                // required when join = "token"
  uint64_t max_storage_bytes = 0;   // 0 = unlimited
  // Admin identities, "NAME:PUBLIC_KEY" (base64 Ed25519, `wormhole admin key create`):
  // with any listed, approvals, drain and forget must be signed by one of them.
  std::vector<std::string> admins;
  // Pod-to-pod traffic over mutual TLS with the network CA (docs/architecture.md, Security).
  bool tls = true;
  // SHA-256 of the network CA's certificate (hex), as `wormhole network init` prints it: a
  // pod without a certificate checks the CA it is shown against it. Empty: a join token's
  // fingerprint, or trust on first use (logged).
  std::string ca_fingerprint;
  std::string replication_mode = "async";  // async | sync (see README: Consistency model)
  uint64_t replication_delay_ms = 0;
  // How far ahead of this pod's clock a peer's op stamps may be; ops beyond are rejected
  // (and come again later, when this clock has caught up).
  uint64_t max_clock_skew_ms = 10 * 60 * 1000;
  std::string conflict = "keep-both";     // keep-both | last-write-wins
  // Deleted entries stay in the trash (`wormhole trash`) at least this long, then are
  // purged once every member has seen the delete (causal stability).
  uint64_t trash_retention_ms = 24ull * 3600 * 1000;
  // [network.failure]: a pod silent this long is suspect, then down (DESIGN.md §6); down
  // for repair_delay, it is lost and its copies are re-created on other pods.
  uint64_t suspect_after_ms = 3000;
  uint64_t down_after_ms = 10000;
  uint64_t repair_delay_s = 600;
  uint64_t repair_rate_bytes = 64ull << 20;  // per second
  uint64_t rebalance_rate_bytes = 32ull << 20;  // per second: copies to a joining pod
  Reactions reactions;
  uint64_t chunk_size = 4ull << 20;
};

struct Affinity {
  double redundant = 1.0, new_files = 1.0, hot = 1.0, cold = 1.0;
};

struct PodConfig {
  std::string name;
  std::string role = "storage";     // storage | client
  std::string listen;               // host:port for pod-to-pod traffic
  std::vector<std::string> peers;   // addresses of members to join through
  std::string mountpoint;           // absolute (relative paths resolve against the file)
  std::string storage;              // absolute storage directory
  uint64_t storage_limit_bytes = 0; // 0 = the whole file system
  uint64_t cache_bytes = 1ull << 30;  // chunks of versions other pods hold, kept after reads
  std::string cache_policy = "auto";  // auto | stream | copy
  uint64_t stream_above_bytes = 64ull << 20;
  Affinity affinity;
  std::vector<std::string> labels;
  std::string disconnect = "continue";  // continue | read-only | freeze
  uint64_t disconnect_timeout_ms = 60000;  // freeze: how long a change waits for the network
  // Besides root and the daemon's user, the members of this group may use the control
  // socket; empty = nobody else. Its id is looked up on the pod's machine when it starts.
  std::string control_group;
  uint64_t gc_grace_s = 600;        // unreferenced chunks younger than this are kept
  uint64_t gc_interval_s = 300;
};

struct RuleConfig {
  std::string path;                 // glob on the path inside the network, e.g. "/photos/**"
  std::optional<uint32_t> redundancy;  // 0 = all
  std::vector<std::string> pin;     // pods that keep a local copy
  bool no_cache = false;
  bool read_only = false;
  std::optional<std::string> conflict;
};

// The id of group `name` on this machine (getgrnam_r). False + *why when there is none.
bool lookup_group(const std::string& name, uint32_t* gid, std::string* why);

struct Config {
  std::string file;  // absolute path of the file it was read from
  NetworkConfig network;
  std::vector<PodConfig> pods;
  std::vector<RuleConfig> rules;

  // The pod named `name`; with an empty name, the only pod. nullptr + *error otherwise.
  const PodConfig* find_pod(const std::string& name, std::string* error) const;
};

// Reads and validates `path`. On error returns nullopt and sets *error to
// "<file>:<line>:<column>: <key>: <what is wrong>".
std::optional<Config> load_config(const std::string& path, std::string* error);

// Parses "4MiB", "10GB", "512" (bytes) into bytes; false on bad syntax.
bool parse_size(const std::string& text, uint64_t* bytes);
// The longest duration a configuration may give: 100 years. Durations are used as
// nanoseconds in signed 64-bit clocks (292 years at most) and as signed seconds; anything
// longer would overflow there, and is surely a typo.
inline constexpr uint64_t kMaxDurationMs = 36500ull * 86400 * 1000;
// Parses "30s", "10m", "2h", "1d", "250ms" into milliseconds. False on bad syntax, and on a
// duration longer than kMaxDurationMs (then *too_large, if given, is set).
bool parse_duration_ms(const std::string& text, uint64_t* ms, bool* too_large = nullptr);

}  // namespace wormhole
