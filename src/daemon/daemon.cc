#include "daemon/daemon.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "chunks/chunk_store.h"
#include "daemon/control.h"
#include "daemon/storage_dir.h"
#include "fs/fuse_fs.h"
#include "meta/namespace.h"
#include "net/peer_node.h"
#include "security/admin_auth.h"
#include "store/rocks_kv.h"
#include "vfs/vfs.h"

namespace wormhole {
namespace {
uint64_t wall_clock_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}
}  // namespace

std::string control_socket_path(const PodConfig& pod) { return pod.storage + "/control.sock"; }

namespace {

// Runs periodic work (move-log trimming, chunk garbage collection) until stopped.
class Timers {
 public:
  // `alone`: the pod has no peers, so every op it applied is had by every member.
  Timers(Vfs& vfs, const PodConfig& pod, bool alone) : vfs_(vfs), pod_(pod), alone_(alone) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Timers() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void loop() {
    auto next_gc = std::chrono::steady_clock::now() + std::chrono::seconds(pod_.gc_interval_s);
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::seconds(1));
      if (stop_) break;
      lock.unlock();
      vfs_.ns().trim();
      if (alone_) {
        // A pod alone has no push loop to group-commit its ops: at most a second of them
        // is exposed to a power loss, as ext4's own commit interval exposes its files.
        if (int err = vfs_.ns().make_durable()) spdlog::error("cannot make metadata durable: {}", std::strerror(err));
        vfs_.ns().trim_op_log(vfs_.ns().applied());  // else PeerNode trims it
      }
      if (std::chrono::steady_clock::now() >= next_gc) {
        uint64_t removed = vfs_.collect_garbage(static_cast<int64_t>(pod_.gc_grace_s), pod_.cache_bytes);
        if (removed) spdlog::info("garbage collection removed {} chunks", removed);
        next_gc = std::chrono::steady_clock::now() + std::chrono::seconds(pod_.gc_interval_s);
      }
      lock.lock();
    }
  }
  Vfs& vfs_;
  const PodConfig& pod_;
  const bool alone_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Under-replicated versions `wormhole status --json` lists, at most (all are counted).
constexpr size_t kStatusListedVersions = 100;

// Answers `wormhole where`: the version of a file, its size, and which pods hold it.
nlohmann::json where(Namespace& ns, ChunkStore& chunks, PeerNode* node, const PodConfig& pod, const std::string& path) {
  uint64_t ino = 1;
  Attr attr;
  if (ns.getattr(ino, &attr) != 0) return {{"error", "no root"}};
  size_t start = 0;
  for (int depth = 0; depth < 4096 && start < path.size(); ++depth) {  // bounded by PATH_MAX
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string name = path.substr(start, end - start);
    start = end + 1;
    if (name.empty() || name == ".") continue;
    if (int err = ns.lookup(ino, name, &attr)) return {{"error", path + ": " + std::strerror(err)}};
    ino = attr.ino;
  }
  nlohmann::json reply{{"path", path.empty() ? "/" : path}, {"size", attr.size}};
  if (attr.type != pb::REGULAR) return reply;
  reply["version"] = attr.version.str();
  pb::VersionRecord rec;
  if (attr.version.empty() || !ns.get_version(attr.version, &rec)) return reply;
  // Chunk files, each once: after small writes a file can back two pieces of a span.
  size_t stored = 0, inline_chunks = 0, present = 0;
  std::set<std::string> seen;
  for (auto& c : rec.chunks()) {
    if (c.sha256().empty()) continue;
    if (!c.inline_data().empty()) {
      inline_chunks++;
      continue;
    }
    if (!seen.insert(c.sha256()).second) continue;
    stored++;
    present += chunks.contains(c.sha256());
  }
  reply["chunks"] = stored;
  reply["inline_chunks"] = inline_chunks;
  reply["chunks_here"] = present;
  nlohmann::json holders = nlohmann::json::array();
  for (uint64_t h : rec.holders())
    holders.push_back(node ? node->describe(h) : nlohmann::json{{"name", pod.name}, {"state", "alive"}, {"self", true}});
  reply["holders"] = holders;
  // Copies against the redundancy, as far as this pod knows (docs: "Under-replication").
  if (node) reply["replication"] = node->replication_of(attr.version, rec);
  return reply;
}

uint64_t free_bytes(const PodConfig& pod) {
  struct statvfs sv;
  if (::statvfs(pod.storage.c_str(), &sv) != 0) return 0;
  return static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
}

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int run_daemon(const Config& config, const PodConfig& pod, const std::string& join_token) {
  std::string error;
  StorageDir storage(pod.storage);
  if (!storage.lock(&error) || !storage.load_identity(config.network.name, pod.name, config.network.chunk_size, &error)) {
    spdlog::error("{}", error);
    return 1;
  }
  auto kv = RocksKv::open(pod.storage + "/meta", &error);
  if (!kv) {
    spdlog::error("cannot open metadata in {}/meta: {}", pod.storage, error);
    return 1;
  }
  ChunkStore chunks(pod.storage + "/chunks");
  if (!chunks.init(&error)) {
    spdlog::error("{}", error);
    return 1;
  }
  Vfs* vfs_ptr = nullptr;
  Namespace ns(*kv, storage.pod_id(), wall_ns, [&vfs_ptr](Gid g) { return vfs_ptr && vfs_ptr->in_use(g); });
  if (!ns.init(&error)) {
    spdlog::error("{}", error);
    return 1;
  }
  ns.set_before_log_sync([&chunks] { return chunks.sync_pending(); });
  ns.set_conflict_policy(config.network.conflict == "keep-both", pod.name);
  ns.set_trash_retention_ms(config.network.trash_retention_ms);
  Vfs vfs(ns, chunks, config.network.chunk_size);
  vfs_ptr = &vfs;
  KernelCache kernel_cache;
  // The situation's reaction and the disconnect strategy, carried out by the FUSE layer.
  WriteGate gate(config.network.reactions.throttle_rate_bytes, static_cast<int64_t>(pod.disconnect_timeout_ms));
  std::unique_ptr<PeerNode> node;
  if (config.pods.size() > 1 || !pod.peers.empty()) {
    if (pod.listen.empty()) {
      spdlog::error("pod {}: on a network of several pods, a pod needs a listen address", pod.name);
      return 1;
    }
    node = std::make_unique<PeerNode>(config, pod, storage.pod_id(), ns, chunks, kernel_cache);
    vfs.set_replication(node.get());
    node->set_content_listener([&vfs](const std::vector<Gid>& inodes) { vfs.note_new_versions(inodes); });
    node->set_gate(&gate);
    if (!join_token.empty()) node->set_join_token(join_token);
  }
  ns.trim();
  std::optional<gid_t> control_gid;
  if (!pod.control_group.empty()) {
    uint32_t gid = 0;
    std::string why;
    if (!lookup_group(pod.control_group, &gid, &why)) {
      spdlog::error("{}: pod {}: control_group: {}", config.file, pod.name, why);
      return 2;
    }
    control_gid = gid;
  }

  const auto started = std::chrono::steady_clock::now();
  std::atomic<bool> mounted{false};
  // Admin signatures already used (control thread only; bounded: 4,096, 10 minutes).
  std::deque<std::pair<uint64_t, std::string>> used_signatures;
  ControlServer control(control_socket_path(pod), [&](const nlohmann::json& req) {
    const std::string cmd = req.value("cmd", "");
    if (cmd == "status") {
      NamespaceStats s = ns.stats();
      ChunkStoreStats c = chunks.stats();
      char id[20];
      std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(storage.pod_id()));
      return nlohmann::json{
          {"network", config.network.name},
          {"pod", pod.name},
          {"pod_id", id},
          {"role", pod.role},
          {"pid", ::getpid()},
          {"mountpoint", pod.mountpoint},
          {"mounted", mounted.load()},
          {"storage", pod.storage},
          {"files", s.files},
          {"directories", s.directories},
          {"logical_bytes", s.logical_bytes},
          {"chunks", c.chunks},
          {"chunk_bytes", c.bytes},
          {"free_bytes", free_bytes(pod)},
          {"move_log_entries", s.move_log_entries},
          {"op_log_entries", s.op_log_entries},
          {"peers", node ? node->status() : nlohmann::json::array()},
          {"transfer", node ? node->transfer() : nlohmann::json::object()},
          {"replication", node ? node->under_replication(kStatusListedVersions) : nlohmann::json::object()},
          {"repair", node ? node->repair_status() : nlohmann::json::object()},
          {"situation", node ? node->situation_status() : nlohmann::json::object()},
          {"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
                           .count()}};
    }
    // Actions only admins may take, when network.admins lists any: the request carries the
    // admin's signature of the statement (security/admin_auth.h), checked here first.
    pb::AdminAuthorization authorization;  // carried in the drain / forget op
    const bool token_create = cmd == "token" && req.value("action", "") == "create";
    if (cmd == "forget" || cmd == "drain" || cmd == "approve" || cmd == "deny" || token_create) {
      std::string signature;  // hex in the request; bad digits make a signature that fails
      const std::string sig_hex = req.value("signature", "");
      auto digit = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0; };
      for (size_t i = 0; i + 1 < sig_hex.size() && i < 256; i += 2)
        signature.push_back(static_cast<char>(digit(sig_hex[i]) * 16 + digit(sig_hex[i + 1])));
      // What is signed names everything that changes the outcome: the action (a forced
      // forget is another action), the pod, and for an approval the key the admin saw.
      const std::string action = token_create                              ? "token-create"
                                 : cmd == "forget" && req.value("force", false) ? "forget-force"
                                                                             : cmd;
      std::string target = req.value("pod", "");
      if ((cmd == "approve" || cmd == "deny") && !req.value("key", "").empty()) target += " key " + req.value("key", "");
      const uint64_t now = wall_clock_ms();
      std::string why = check_admin(config.network.admins, config.network.name, action, target,
                                    req.value("time_ms", uint64_t{0}), now, req.value("admin", ""), signature);
      // A signature is good for one command: replayed within its 5 minutes, it is refused.
      if (why.empty() && !signature.empty()) {
        while (!used_signatures.empty() && (used_signatures.front().first + kAdminStatementMaxAgeMs * 2 < now ||
                                            used_signatures.size() > 4096))
          used_signatures.pop_front();
        for (const auto& [when, sig] : used_signatures)
          if (sig == signature) why = "refused: this signed request was used already (sign a new one)";
        if (why.empty()) used_signatures.emplace_back(now, signature);
      }
      if (!why.empty()) {
        spdlog::warn("control socket: {} {} {}", cmd, req.value("pod", ""), why);
        return nlohmann::json{{"error", why}};
      }
      authorization.set_admin(req.value("admin", ""));
      authorization.set_time_ms(req.value("time_ms", uint64_t{0}));
      authorization.set_signature(signature);
    }
    if (cmd == "token") {
      if (!node) return nlohmann::json{{"error", "this pod is alone in its network"}};
      return node->tokens(req);
    }
    if (cmd == "pending") {
      if (!node) return nlohmann::json{{"error", "this pod is alone in its network"}};
      return nlohmann::json{{"pending", node->pending_joins()}};
    }
    if (cmd == "approve" || cmd == "deny") {
      if (!node) return nlohmann::json{{"error", "this pod is alone in its network"}};
      const std::string why = node->decide_join(req.value("pod", ""), cmd == "approve", req.value("key", ""));
      if (!why.empty()) return nlohmann::json{{"error", why}};
      return nlohmann::json{{cmd == "approve" ? "approved" : "denied", req.value("pod", "")}};
    }
    if (cmd == "forget") {
      if (!node) return nlohmann::json{{"error", "this pod is alone in its network"}};
      const std::string why = node->forget(req.value("pod", ""), req.value("force", false), authorization);
      if (!why.empty()) return nlohmann::json{{"error", why}};
      return nlohmann::json{{"forgotten", req.value("pod", "")}};
    }
    if (cmd == "drain") {
      if (!node) return nlohmann::json{{"error", "this pod is alone in its network: nothing could take its copies"}};
      const std::string why = node->drain(req.value("pod", ""), authorization);
      if (!why.empty()) return nlohmann::json{{"error", why}};
      return nlohmann::json{{"draining", req.value("pod", "")}};
    }
    if (cmd == "trash") {
      std::vector<TrashItem> items;
      const size_t limit = std::min<size_t>(req.value("limit", size_t{1000}), 100000);
      if (int err = ns.list_trash(limit, &items)) return nlohmann::json{{"error", std::strerror(err)}};
      nlohmann::json out = nlohmann::json::array();
      for (auto& t : items)
        out.push_back({{"id", t.entry.str()},
                       {"name", t.name},
                       {"from", t.from},
                       {"deleted_ms", t.deleted_at.wall_ms},
                       {"type", pb::FileType_Name(t.type)},
                       {"size", t.size}});
      return nlohmann::json{{"trash", out}, {"retention_s", config.network.trash_retention_ms / 1000}};
    }
    if (cmd == "trash_restore") {
      Gid entry;
      if (!Gid::parse(req.value("id", ""), &entry)) return nlohmann::json{{"error", "expected an id from `wormhole trash`"}};
      std::string path;
      if (int err = ns.restore(entry, &path))
        return nlohmann::json{{"error", err == ENOENT ? std::string("not in the trash") : std::strerror(err)}};
      return nlohmann::json{{"restored", path}};
    }
    if (cmd == "where") return where(ns, chunks, node.get(), pod, req.value("path", ""));
    if (cmd == "gc") {
      int64_t grace = req.value("grace_s", static_cast<int64_t>(pod.gc_grace_s));
      ns.trim();
      return nlohmann::json{{"removed_chunks", vfs.collect_garbage(grace, pod.cache_bytes)}};
    }
    return nlohmann::json{{"error", "unknown command \"" + cmd + "\""}};
  }, ControlAccess{pod.name, control_gid, pod.control_group});
  if (!control.start(&error)) {
    spdlog::error("{}", error);
    return 1;
  }
  if (node && !node->start(&error)) {
    spdlog::error("{}", error);
    return 1;
  }
  auto timers = std::make_unique<Timers>(vfs, pod, node == nullptr);
  spdlog::info("pod {} of network {} starting (storage {})", pod.name, config.network.name, pod.storage);
  FuseOptions opts;
  opts.mountpoint = pod.mountpoint;
  opts.storage_dir = pod.storage;
  opts.on_mounted = [&mounted] { mounted = true; };
  opts.kernel_cache = &kernel_cache;
  opts.writeback_cache = node == nullptr;
  opts.gate = &gate;
  int rc = run_fuse(vfs, opts);
  // An orderly stop: nothing changes content or metadata any more once the timers and the
  // network are down; then everything is made durable and the chunk store marked clean.
  // The control socket goes first: its handler reads the peer node (a status asked during
  // the stop read it while it was destroyed; TSan saw it).
  control.stop();
  timers.reset();
  if (node) {
    vfs.set_replication(nullptr);
    node.reset();
  }
  if (int err = ns.make_durable()) spdlog::error("cannot make metadata durable at stop: {}", std::strerror(err));
  else chunks.mark_clean_shutdown();
  spdlog::info("pod {} stopped", pod.name);
  return rc;
}

}  // namespace wormhole
