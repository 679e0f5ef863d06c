#include "config/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <vector>

#include <grp.h>
#include <unistd.h>

#define TOML_EXCEPTIONS 0
#include <toml++/toml.h>

namespace wormhole {
namespace {

struct ConfigError {
  std::string message;
};

// Reads one table, remembering which keys were consumed so unknown keys are reported.
class TableReader {
 public:
  TableReader(const std::string& file, const toml::table& table, std::string prefix)
      : file_(file), table_(table), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const toml::node* node, const std::string& key, const std::string& what) const {
    std::ostringstream os;
    const auto& src = node ? node->source() : table_.source();
    os << file_ << ":" << src.begin.line << ":" << src.begin.column << ": " << qualified(key) << ": " << what;
    throw ConfigError{os.str()};
  }
  std::string qualified(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

  const toml::node* get(const std::string& key) {
    seen_.insert(key);
    return table_.get(key);
  }

  void str(const std::string& key, std::string* out, std::initializer_list<const char*> allowed = {},
           bool required = false) {
    const toml::node* n = get(key);
    if (!n) {
      if (required) fail(nullptr, key, "missing (required)");
      return;
    }
    auto v = n->value<std::string>();
    if (!n->is_string() || !v) fail(n, key, "expected a string");
    if (allowed.size()) {
      bool ok = false;
      std::string list;
      for (const char* a : allowed) {
        ok |= *v == a;
        list += std::string(list.empty() ? "" : ", ") + "\"" + a + "\"";
      }
      if (!ok) fail(n, key, "\"" + *v + "\" is not one of " + list);
    }
    *out = *v;
  }

  void boolean(const std::string& key, bool* out) {
    const toml::node* n = get(key);
    if (!n) return;
    if (!n->is_boolean()) fail(n, key, "expected true or false");
    *out = *n->value<bool>();
  }

  void number(const std::string& key, double* out, double lo, double hi) {
    const toml::node* n = get(key);
    if (!n) return;
    if (!n->is_number()) fail(n, key, "expected a number");
    double v = *n->value<double>();
    if (!(v >= lo && v <= hi)) fail(n, key, "must be between " + fmt(lo) + " and " + fmt(hi));
    *out = v;
  }

  void integer(const std::string& key, uint64_t* out, uint64_t lo, uint64_t hi) {
    const toml::node* n = get(key);
    if (!n) return;
    if (!n->is_integer()) fail(n, key, "expected an integer");
    int64_t v = *n->value<int64_t>();
    if (v < 0 || static_cast<uint64_t>(v) < lo || static_cast<uint64_t>(v) > hi)
      fail(n, key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    *out = static_cast<uint64_t>(v);
  }

  // A size: an integer number of bytes or a string such as "4MiB".
  void size(const std::string& key, uint64_t* out, uint64_t lo, uint64_t hi) {
    const toml::node* n = get(key);
    if (!n) return;
    uint64_t v = 0;
    if (n->is_integer() && *n->value<int64_t>() >= 0) {
      v = static_cast<uint64_t>(*n->value<int64_t>());
    } else if (!n->is_string() || !parse_size(*n->value<std::string>(), &v)) {
      fail(n, key, "expected a size such as 4096, \"4MiB\" or \"10GB\"");
    }
    if (v < lo || v > hi) fail(n, key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " bytes");
    *out = v;
  }

  // A duration: a string such as "30s", "10m"; stored in the unit of `unit_ms`.
  void duration(const std::string& key, uint64_t* out, uint64_t unit_ms) {
    const toml::node* n = get(key);
    if (!n) return;
    uint64_t ms = 0;
    bool too_large = false;
    if (!n->is_string() || !parse_duration_ms(*n->value<std::string>(), &ms, &too_large)) {
      if (too_large) fail(n, key, "too long: at most " + std::to_string(kMaxDurationMs / 86400000) + "d (100 years)");
      fail(n, key, "expected a duration such as \"250ms\", \"30s\", \"10m\", \"2h\"");
    }
    *out = ms / unit_ms;
  }

  void strings(const std::string& key, std::vector<std::string>* out) {
    const toml::node* n = get(key);
    if (!n) return;
    const toml::array* arr = n->as_array();
    if (!arr) fail(n, key, "expected an array of strings");
    out->clear();
    for (const toml::node& item : *arr) {
      if (!item.is_string()) fail(&item, key, "expected an array of strings");
      out->push_back(*item.value<std::string>());
    }
  }

  const toml::table* table(const std::string& key) {
    const toml::node* n = get(key);
    if (!n) return nullptr;
    if (!n->is_table()) fail(n, key, "expected a table");
    return n->as_table();
  }

  void reject_unknown() const {
    for (auto& [k, v] : table_) {
      std::string key(k.str());
      if (!seen_.count(key)) fail(&v, key, "unknown key");
    }
  }

 private:
  static std::string fmt(double d) {
    std::ostringstream os;
    os << d;
    return os.str();
  }
  const std::string& file_;
  const toml::table& table_;
  std::string prefix_;
  std::set<std::string> seen_;
};

const char* kReactions[] = {"continue", "throttle", "read-only", "lower-redundancy", "stop"};

std::string resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty()) return p;
  std::filesystem::path path(p);
  if (path.is_absolute()) return path.lexically_normal().string();
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

void read_redundancy(TableReader& r, const std::string& key, std::optional<uint32_t>* out) {
  const toml::node* n = r.get(key);
  if (!n) return;
  if (n->is_string() && *n->value<std::string>() == "all") {
    *out = 0;
    return;
  }
  if (!n->is_integer() || *n->value<int64_t>() < 1 || *n->value<int64_t>() > 64)
    r.fail(n, key, "expected a number of copies from 1 to 64, or \"all\"");
  *out = static_cast<uint32_t>(*n->value<int64_t>());
}

void read_network(const std::string& file, const toml::table& t, NetworkConfig* net) {
  TableReader r(file, t, "network");
  r.str("name", &net->name, {}, true);
  if (net->name.empty() || net->name.size() > 64 ||
      net->name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != std::string::npos)
    r.fail(t.get("name"), "name", "use 1 to 64 letters, digits, '-', '_' or '.'");
  std::optional<uint32_t> red;
  read_redundancy(r, "redundancy", &red);
  if (red) net->redundancy = *red;
  r.str("join", &net->join, {"open", "token", "approval"});
  r.str("token", &net->token);
  // join = "token" takes the tokens `wormhole token create` makes, and network.token if set.
  r.size("max_storage", &net->max_storage_bytes, 0, UINT64_MAX);
  r.strings("admins", &net->admins);
  for (const std::string& a : net->admins) {
    const size_t colon = a.find(':');
    if (colon == 0 || colon == std::string::npos || a.size() - colon - 1 != 44)
      r.fail(t.get("admins"), "admins",
             "each admin is \"NAME:PUBLIC_KEY\" as `wormhole admin key create NAME` prints it, not \"" + a + "\"");
  }
  r.boolean("tls", &net->tls);
  r.str("ca_fingerprint", &net->ca_fingerprint);
  if (!net->ca_fingerprint.empty() &&
      (net->ca_fingerprint.size() != 64 || net->ca_fingerprint.find_first_not_of("0123456789abcdef") != std::string::npos))
    r.fail(t.get("ca_fingerprint"), "ca_fingerprint", "expected the 64 hex digits `wormhole network init` prints");
  r.str("conflict", &net->conflict, {"keep-both", "last-write-wins"});
  r.duration("trash_retention", &net->trash_retention_ms, 1);
  r.size("chunk_size", &net->chunk_size, 64 << 10, 64 << 20);
  r.duration("max_clock_skew", &net->max_clock_skew_ms, 1);
  // Below a second, ordinary clock drift (NTP keeps clocks within milliseconds, but not
  // always) would reject honest ops.
  if (net->max_clock_skew_ms < 1000) r.fail(t.get("max_clock_skew"), "max_clock_skew", "must be at least 1s");
  if (const toml::table* rep = r.table("replication")) {
    TableReader rr(file, *rep, "network.replication");
    rr.str("mode", &net->replication_mode, {"sync", "async"});
    rr.duration("delay", &net->replication_delay_ms, 1);
    rr.reject_unknown();
  }
  if (const toml::table* fail = r.table("failure")) {
    TableReader fr(file, *fail, "network.failure");
    fr.duration("suspect_after", &net->suspect_after_ms, 1);
    fr.duration("down_after", &net->down_after_ms, 1);
    fr.duration("repair_delay", &net->repair_delay_s, 1000);
    // Heartbeats go every second: a shorter silence is not a sign of anything.
    if (net->suspect_after_ms < 2000) fr.fail(fail->get("suspect_after"), "suspect_after", "must be at least 2s");
    if (net->down_after_ms <= net->suspect_after_ms)
      fr.fail(fail->get("down_after"), "down_after", "must be longer than suspect_after");
    if (net->repair_delay_s * 1000 < net->down_after_ms)
      fr.fail(fail->get("repair_delay"), "repair_delay", "must be at least down_after");
    fr.size("repair_rate", &net->repair_rate_bytes, 1, UINT64_MAX);
    fr.size("rebalance_rate", &net->rebalance_rate_bytes, 1, UINT64_MAX);
    fr.reject_unknown();
  }
  if (const toml::table* re = r.table("reactions")) {
    TableReader rr(file, *re, "network.reactions");
    auto one = [&](const char* key, std::string* out) {
      rr.str(key, out, {kReactions[0], kReactions[1], kReactions[2], kReactions[3], kReactions[4]});
    };
    one("favorable", &net->reactions.favorable);
    one("mitigated", &net->reactions.mitigated);
    one("grave", &net->reactions.grave);
    rr.size("throttle_rate", &net->reactions.throttle_rate_bytes, 4096, UINT64_MAX);
    rr.reject_unknown();
  }
  r.reject_unknown();
}


void read_pod(const std::string& file, const std::string& base_dir, const toml::table& t, size_t index,
              PodConfig* pod) {
  TableReader r(file, t, "pod[" + std::to_string(index) + "]");
  r.str("name", &pod->name, {}, true);
  if (pod->name.empty() || pod->name.size() > 64 ||
      pod->name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != std::string::npos)
    r.fail(t.get("name"), "name", "use 1 to 64 letters, digits, '-', '_' or '.'");
  r.str("role", &pod->role, {"storage", "client"});
  r.str("listen", &pod->listen);
  if (!pod->listen.empty() && pod->listen.rfind(':') == std::string::npos)
    r.fail(t.get("listen"), "listen", "expected host:port");
  r.strings("peers", &pod->peers);
  r.str("mountpoint", &pod->mountpoint, {}, true);
  r.str("storage", &pod->storage, {}, true);
  pod->mountpoint = resolve(base_dir, pod->mountpoint);
  pod->storage = resolve(base_dir, pod->storage);
  if (pod->mountpoint == pod->storage) r.fail(t.get("storage"), "storage", "must differ from mountpoint");
  r.size("storage_limit", &pod->storage_limit_bytes, 0, UINT64_MAX);
  r.strings("labels", &pod->labels);
  r.str("disconnect", &pod->disconnect, {"continue", "read-only", "freeze"});
  r.duration("disconnect_timeout", &pod->disconnect_timeout_ms, 1);
  r.str("control_group", &pod->control_group);
  // Looked up by the pod's own daemon (run_daemon), not here: every machine reads the whole
  // file, and a group that exists only on one pod's machine must not stop the others.
  if (!pod->control_group.empty() &&
      (pod->control_group.size() > 64 ||
       pod->control_group.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
           std::string::npos))
    r.fail(t.get("control_group"), "control_group", "not a group name");
  r.duration("gc_grace", &pod->gc_grace_s, 1000);
  r.duration("gc_interval", &pod->gc_interval_s, 1000);
  if (pod->gc_interval_s == 0) r.fail(t.get("gc_interval"), "gc_interval", "must be at least 1s");
  if (const toml::table* c = r.table("cache")) {
    TableReader cr(file, *c, r.qualified("cache"));
    cr.size("size", &pod->cache_bytes, 0, UINT64_MAX);
    cr.str("policy", &pod->cache_policy, {"auto", "stream", "copy"});
    cr.size("stream_above", &pod->stream_above_bytes, 0, UINT64_MAX);
    cr.reject_unknown();
  }
  if (const toml::table* a = r.table("affinity")) {
    TableReader ar(file, *a, r.qualified("affinity"));
    ar.number("redundant", &pod->affinity.redundant, 0, 1000);
    ar.number("new_files", &pod->affinity.new_files, 0, 1000);
    ar.number("hot", &pod->affinity.hot, 0, 1000);
    ar.number("cold", &pod->affinity.cold, 0, 1000);
    ar.reject_unknown();
  }
  r.reject_unknown();
}

void read_rule(const std::string& file, const toml::table& t, size_t index, RuleConfig* rule) {
  TableReader r(file, t, "rule[" + std::to_string(index) + "]");
  r.str("path", &rule->path, {}, true);
  if (rule->path.empty() || rule->path[0] != '/') r.fail(t.get("path"), "path", "must start with '/'");
  read_redundancy(r, "redundancy", &rule->redundancy);
  r.strings("pin", &rule->pin);
  r.boolean("no_cache", &rule->no_cache);
  r.boolean("read_only", &rule->read_only);
  std::string conflict;
  r.str("conflict", &conflict, {"keep-both", "last-write-wins"});
  if (!conflict.empty()) rule->conflict = conflict;
  r.reject_unknown();
}

}  // namespace

// The id of group `name` (getgrnam_r). False + *why when there is no such group.
bool lookup_group(const std::string& name, uint32_t* gid, std::string* why) {
  long hint = ::sysconf(_SC_GETGR_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? static_cast<size_t>(hint) : 16384);
  struct group gr;
  struct group* found = nullptr;
  int err;
  // ERANGE: a group with many members; the buffer grows, up to 16 MiB.
  while ((err = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found)) == ERANGE && buf.size() < (16u << 20))
    buf.resize(buf.size() * 2);
  if (err != 0) {
    *why = "cannot look up group \"" + name + "\": " + std::strerror(err);
    return false;
  }
  if (!found) {
    *why = "no group named \"" + name + "\" on this machine";
    return false;
  }
  *gid = static_cast<uint32_t>(found->gr_gid);
  return true;
}

bool parse_size(const std::string& text, uint64_t* bytes) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) i++;
  if (i == 0) return false;
  double number = 0;
  try {
    number = std::stod(text.substr(0, i));
  } catch (...) {
    return false;
  }
  std::string unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(0, 1);
  static const std::pair<const char*, double> units[] = {
      {"", 1},          {"B", 1},           {"K", 1024},        {"KiB", 1024},      {"KB", 1e3},
      {"M", 1 << 20},   {"MiB", 1 << 20},   {"MB", 1e6},        {"G", 1 << 30},     {"GiB", 1 << 30},
      {"GB", 1e9},      {"T", 1ull << 40},  {"TiB", 1ull << 40}, {"TB", 1e12}};
  for (auto& [name, mult] : units) {
    if (unit == name) {
      double v = number * mult;
      if (v < 0 || v > 1.8e19) return false;
      *bytes = static_cast<uint64_t>(std::llround(v));
      return true;
    }
  }
  return false;
}

bool parse_duration_ms(const std::string& text, uint64_t* ms, bool* too_large) {
  if (too_large) *too_large = false;
  size_t i = 0;
  // Digits are accumulated saturating at one past the limit: a number of any length is
  // then "too large", never a wrapped-around small one.
  uint64_t n = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); i++)
    n = std::min<uint64_t>(n * 10 + static_cast<uint64_t>(text[i] - '0'), kMaxDurationMs + 1);
  if (i == 0) return false;
  const std::string unit = text.substr(i);
  static const std::pair<const char*, uint64_t> units[] = {
      {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  for (auto& [name, mult] : units) {
    if (unit == name) {
      if (n > kMaxDurationMs / mult) {  // n * mult would pass the limit (or overflow)
        if (too_large) *too_large = true;
        return false;
      }
      *ms = n * mult;
      return true;
    }
  }
  return false;
}

const PodConfig* Config::find_pod(const std::string& name, std::string* error) const {
  if (name.empty()) {
    if (pods.size() == 1) return &pods[0];
    *error = file + ": declares " + std::to_string(pods.size()) + " pods; choose one with --pod";
    return nullptr;
  }
  for (auto& p : pods)
    if (p.name == name) return &p;
  *error = file + ": no [[pod]] named \"" + name + "\"";
  return nullptr;
}

std::optional<Config> load_config(const std::string& path, std::string* error) {
  std::error_code ec;
  std::string abs = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (!std::filesystem::is_regular_file(abs, ec)) {
    *error = path + ": cannot read the configuration file";
    return std::nullopt;
  }
  toml::parse_result parsed = toml::parse_file(abs);
  if (!parsed) {
    const toml::parse_error& e = parsed.error();
    std::ostringstream os;
    os << abs << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
    *error = os.str();
    return std::nullopt;
  }
  const toml::table& root = parsed.table();
  const std::string base_dir = std::filesystem::path(abs).parent_path().string();
  Config cfg;
  cfg.file = abs;
  try {
    TableReader r(abs, root, "");
    const toml::table* net = r.table("network");
    if (!net) r.fail(nullptr, "network", "missing [network] section");
    read_network(abs, *net, &cfg.network);
    const toml::node* pods = r.get("pod");
    if (!pods || !pods->is_array_of_tables())
      r.fail(pods, "pod", "declare at least one pod as [[pod]]");
    size_t i = 0;
    std::set<std::string> names, mounts, storages;
    for (const toml::node& n : *pods->as_array()) {
      PodConfig pod;
      read_pod(abs, base_dir, *n.as_table(), i, &pod);
      TableReader pr(abs, *n.as_table(), "pod[" + std::to_string(i) + "]");
      if (!names.insert(pod.name).second) pr.fail(n.as_table()->get("name"), "name", "duplicate pod name");
      if (!mounts.insert(pod.mountpoint).second) pr.fail(n.as_table()->get("mountpoint"), "mountpoint", "used by two pods");
      if (!storages.insert(pod.storage).second) pr.fail(n.as_table()->get("storage"), "storage", "used by two pods");
      cfg.pods.push_back(std::move(pod));
      i++;
    }
    if (const toml::node* rules = r.get("rule")) {
      if (!rules->is_array_of_tables()) r.fail(rules, "rule", "declare rules as [[rule]]");
      size_t j = 0;
      for (const toml::node& n : *rules->as_array()) {
        RuleConfig rule;
        read_rule(abs, *n.as_table(), j++, &rule);
        cfg.rules.push_back(std::move(rule));
      }
    }
    r.reject_unknown();
    const uint32_t storage_pods = static_cast<uint32_t>(
        std::count_if(cfg.pods.begin(), cfg.pods.end(), [](const PodConfig& p) { return p.role == "storage"; }));
    if (storage_pods == 0) r.fail(pods, "pod", "at least one pod needs role = \"storage\"");
  } catch (const ConfigError& e) {
    *error = e.message;
    return std::nullopt;
  }
  return cfg;
}

}  // namespace wormhole
