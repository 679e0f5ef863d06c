// The `wormhole` binary: runs a pod (`run`) and talks to running pods (`status`, `gc`,
// `config`). Every subcommand has --help.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "config/config.h"
#include "daemon/control.h"
#include "cli/status_view.h"
#include "daemon/daemon.h"
#include "daemon/storage_dir.h"
#include "security/admin_auth.h"
#include "security/certs.h"
#include "security/tls_files.h"

using namespace wormhole;

namespace {


// Loads the config and picks the pod, printing the error. nullptr on failure.
const PodConfig* pick(const std::string& file, const std::string& pod_name, std::optional<Config>* cfg) {
  std::string error;
  *cfg = load_config(file, &error);
  if (!*cfg) {
    std::cerr << "wormhole: " << error << "\n";
    return nullptr;
  }
  const PodConfig* pod = (*cfg)->find_pod(pod_name, &error);
  if (!pod) std::cerr << "wormhole: " << error << "\n";
  return pod;
}

int ask(const std::string& file, const std::string& pod_name, const nlohmann::json& req, nlohmann::json* reply) {
  std::optional<Config> cfg;
  const PodConfig* pod = pick(file, pod_name, &cfg);
  if (!pod) return 2;
  std::string error;
  if (!control_request(control_socket_path(*pod), req, reply, &error)) {
    std::cerr << "wormhole: pod " << pod->name << ": " << error << "\n";
    return 1;
  }
  return 0;
}

// ask(), and a reply that reports an error is printed and exits 1.
int ask_ok(const std::string& file, const std::string& pod_name, const nlohmann::json& req, nlohmann::json* reply) {
  if (int rc = ask(file, pod_name, req, reply)) return rc;
  if (!reply->contains("error")) return 0;
  std::cerr << "wormhole: " << (*reply)["error"].get<std::string>() << "\n";
  return 1;
}

// Signs an admin action into `req` (admin, time_ms, signature) with the key in `key_file`
// (PEM, `wormhole admin key create`); `admin` defaults to the file's name before
// ".admin.key". Without a key file the request goes unsigned (refused where network.admins
// lists any). Returns 0 or the exit code after printing why.
int sign_admin_request(const std::string& file, const std::string& key_file, std::string admin,
                       const std::string& action, nlohmann::json* req) {
  if (key_file.empty()) return 0;
  std::optional<Config> cfg;
  std::string error;
  cfg = load_config(file, &error);
  if (!cfg) {
    std::cerr << "wormhole: " << error << "\n";
    return 2;
  }
  std::ifstream in(key_file);
  std::stringstream pem;
  pem << in.rdbuf();
  if (!in) {
    std::cerr << "wormhole: cannot read the admin key " << key_file << "\n";
    return 2;
  }
  if (admin.empty()) {
    admin = std::filesystem::path(key_file).filename().string();
    if (const size_t dot = admin.find(".admin.key"); dot != std::string::npos) admin.resize(dot);
  }
  const uint64_t now = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  std::string signature;
  // The same target the pod checks (daemon.cc): the pod, and for an approval the key.
  std::string target = req->value("pod", "");
  if (!req->value("key", "").empty()) target += " key " + req->value("key", "");
  if (!certs::sign_message(pem.str(), admin_statement(cfg->network.name, action, target, now), &signature,
                           &error)) {
    std::cerr << "wormhole: " << key_file << ": " << error << "\n";
    return 2;
  }
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : signature) {
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 15]);
  }
  (*req)["admin"] = admin;
  (*req)["time_ms"] = now;
  (*req)["signature"] = hex;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Wormhole: one folder over the disks of many machines."};
  app.require_subcommand(1);
  std::string config_file = "wormhole.toml", pod_name;
  bool json = false;

  auto add_common = [&](CLI::App* sub) {
    sub->add_option("-c,--config", config_file, "network configuration file (TOML)")->capture_default_str();
    sub->add_option("-p,--pod", pod_name, "which [[pod]] of the file (needed when it declares several)");
  };

  CLI::App* run = app.add_subcommand("run", "run a pod: mount the network and serve it until Ctrl-C/SIGTERM");
  add_common(run);
  std::string log_level = "info";
  run->add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  std::string join_token;
  run->add_option("--token", join_token,
                  "join token (`wormhole token create` on the CA pod) for this pod's first certificate; "
                  "default network.token")
      ->envname("WORMHOLE_JOIN_TOKEN");

  CLI::App* status = app.add_subcommand("status", "show the state of a running pod");
  add_common(status);
  status->add_flag("--json", json, "machine-readable output");
  bool watch = false;
  status->add_flag("--watch", watch,
                   "refresh every second until Ctrl-C: the whole status and a repair progress bar on a terminal, "
                   "one line per second otherwise");

  CLI::App* where = app.add_subcommand("where", "show a file's version, size and which pods hold it");
  add_common(where);
  std::string where_path;
  where->add_option("path", where_path, "a path under the pod's mountpoint")->required();
  where->add_flag("--json", json, "machine-readable output");

  CLI::App* gc = app.add_subcommand("gc", "collect unreferenced chunks on a running pod now");
  add_common(gc);
  std::string grace;
  gc->add_option("--grace", grace, "keep chunks younger than this (e.g. 0s, 10m); default: the pod's gc_grace");
  gc->add_flag("--json", json, "machine-readable output");

  CLI::App* trash = app.add_subcommand("trash", "list deleted files and directories still in the trash");
  add_common(trash);
  trash->add_flag("--json", json, "machine-readable output");
  size_t trash_limit = 1000;
  trash->add_option("--limit", trash_limit, "show at most this many (newest first)")->capture_default_str();
  CLI::App* restore = trash->add_subcommand("restore", "put a deleted entry back where it was deleted from");
  add_common(restore);
  std::string restore_id;
  restore->add_option("id", restore_id, "its id, as `wormhole trash` shows it")->required();

  CLI::App* forget = app.add_subcommand("forget", "remove a pod that is gone for good from the network");
  add_common(forget);
  std::string forget_pod;
  forget->add_option("pod", forget_pod, "the pod's name (it must be down; it can never come back)")->required();
  bool forget_force = false;
  forget->add_flag("--force", forget_force, "forget a pod that is not down (it must never come back)");
  CLI::App* drain = app.add_subcommand("drain", "move a pod's copies to the others; it leaves the network when done");
  add_common(drain);
  std::string drain_pod;
  drain->add_option("pod", drain_pod, "the pod's name")->required();
  drain->add_flag("--json", json, "machine-readable output");

  std::string admin_key, admin_name;
  auto add_admin = [&](CLI::App* sub) {
    sub->add_option("--admin-key", admin_key, "sign with this admin key (needed when network.admins lists any)")
        ->envname("WORMHOLE_ADMIN_KEY");
    sub->add_option("--admin", admin_name, "the admin's name (default: the key file's name before .admin.key)");
  };
  add_admin(forget);
  add_admin(drain);

  CLI::App* network = app.add_subcommand("network", "the network's certificate authority");
  network->require_subcommand(1);
  CLI::App* net_init = network->add_subcommand(
      "init", "make the network CA in this pod's storage directory (the pod must be stopped) and print its "
              "fingerprint; the first start of the file's first pod does the same");
  add_common(net_init);

  CLI::App* token = app.add_subcommand("token", "join tokens (network.join = \"token\"), on the pod that holds the CA");
  token->require_subcommand(1);
  CLI::App* token_create = token->add_subcommand("create", "print a new join token");
  add_common(token_create);
  std::string token_ttl = "1h";
  uint32_t token_uses = 1;
  token_create->add_option("--ttl", token_ttl, "valid this long")->capture_default_str();
  token_create->add_option("--uses", token_uses, "for this many joins (0: unlimited)")->capture_default_str();
  add_admin(token_create);
  CLI::App* token_list = token->add_subcommand("list", "list the tokens this pod issued (never their secrets)");
  add_common(token_list);
  token_list->add_flag("--json", json, "machine-readable output");
  CLI::App* token_revoke = token->add_subcommand("revoke", "revoke a token");
  add_common(token_revoke);
  std::string token_id;
  token_revoke->add_option("id", token_id, "its id (as `token list` shows) or the token")->required();

  CLI::App* pending = app.add_subcommand("pending", "pods waiting to join (network.join = \"approval\")");
  add_common(pending);
  pending->add_flag("--json", json, "machine-readable output");
  std::string decide_pod;
  CLI::App* approve = app.add_subcommand("approve", "let a pending pod join (an admin's signature when admins are set)");
  add_common(approve);
  add_admin(approve);
  approve->add_option("pod", decide_pod, "the pod's name, as `wormhole pending` shows it")->required();
  std::string decide_key;
  approve->add_option("--key", decide_key,
                      "the start of the key fingerprint `wormhole pending` showed (refused if the pod now asks with "
                      "another key)");
  CLI::App* deny = app.add_subcommand("deny", "refuse a pending pod");
  add_common(deny);
  add_admin(deny);
  deny->add_option("pod", decide_pod, "the pod's name")->required();

  CLI::App* admin = app.add_subcommand("admin", "admin identities");
  admin->require_subcommand(1);
  CLI::App* admin_key_cmd = admin->add_subcommand("key", "admin keys");
  admin_key_cmd->require_subcommand(1);
  CLI::App* admin_key_create = admin_key_cmd->add_subcommand(
      "create", "make an admin key pair: the private key goes to a file (0600), the line for network.admins is printed");
  std::string admin_new_name, admin_out;
  admin_key_create->add_option("name", admin_new_name, "the admin's name")->required();
  admin_key_create->add_option("--out", admin_out, "private key file (default NAME.admin.key)");

  CLI::App* config = app.add_subcommand("config", "inspect a configuration file");
  config->require_subcommand(1);
  std::string check_file;
  CLI::App* check = config->add_subcommand("check", "validate a configuration file");
  check->add_option("file", check_file, "configuration file")->required();
  CLI::App* pods = config->add_subcommand("pods", "list the pods a configuration file declares");
  pods->add_option("file", check_file, "configuration file")->required();

  CLI11_PARSE(app, argc, argv);

  if (run->parsed()) {
    spdlog::set_level(spdlog::level::from_str(log_level));
    std::optional<Config> cfg;
    const PodConfig* pod = pick(config_file, pod_name, &cfg);
    if (!pod) return 2;
    return run_daemon(*cfg, *pod, join_token);
  }
  if (status->parsed() && watch) {
    // Bounded by Ctrl-C (or the pod going away): one status a second.
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    for (;;) {
      nlohmann::json r;
      if (int rc = ask(config_file, pod_name, {{"cmd", "status"}}, &r)) return rc;
      if (tty) {
        std::cout << "\033[H\033[2J";  // home, clear
        print_status(r, std::cout);
        std::cout << progress_bar(r.value("repair", nlohmann::json::object()), 50) << std::endl;
      } else {
        std::cout << watch_line(r) << std::endl;
      }
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
  if (status->parsed()) {
    nlohmann::json r;
    if (int rc = ask(config_file, pod_name, {{"cmd", "status"}}, &r)) return rc;
    if (json) {
      std::cout << r.dump(2) << "\n";
      return 0;
    }
    print_status(r, std::cout);
    return 0;
  }
  if (where->parsed()) {
    std::optional<Config> cfg;
    const PodConfig* pod = pick(config_file, pod_name, &cfg);
    if (!pod) return 2;
    std::error_code ec;
    const std::string abs = std::filesystem::absolute(where_path, ec).lexically_normal().string();
    const std::string& mnt = pod->mountpoint;
    if (abs != mnt && abs.rfind(mnt + "/", 0) != 0) {
      std::cerr << "wormhole: " << where_path << " is not under the mountpoint of pod " << pod->name << " (" << mnt
                << ")\n";
      return 2;
    }
    nlohmann::json r;
    if (int rc = ask(config_file, pod_name, {{"cmd", "where"}, {"path", abs.substr(mnt.size())}}, &r)) return rc;
    if (json) {
      std::cout << r.dump(2) << "\n";
      return 0;
    }
    std::cout << "path     " << r["path"].get<std::string>() << "\nsize     " << human_bytes(r["size"]) << "\n";
    if (r.contains("version")) std::cout << "version  " << r["version"].get<std::string>() << "\n";
    if (r.contains("chunks"))
      std::cout << "chunks   " << r["chunks"] << " (" << r["chunks_here"] << " on this pod), " << r["inline_chunks"]
                << " inline\n";
    for (auto& h : r.value("holders", nlohmann::json::array()))
      std::cout << "holder   " << h["name"].get<std::string>() << " (" << h["state"].get<std::string>() << ")\n";
    if (auto u = r.value("replication", nlohmann::json::object()); !u.empty())
      std::cout << "copies   " << u.value("copies", uint64_t{0}) << " of " << u.value("redundancy", uint64_t{0})
                << (u.value("under_replicated", false) ? " (under-replicated)" : "") << "\n";
    return 0;
  }
  if (net_init->parsed()) {
    std::optional<Config> cfg;
    const PodConfig* pod = pick(config_file, pod_name, &cfg);
    if (!pod) return 2;
    StorageDir storage(pod->storage);
    std::string error, fingerprint;
    if (!storage.lock(&error) ||
        !storage.load_identity(cfg->network.name, pod->name, cfg->network.chunk_size, &error)) {
      std::cerr << "wormhole: " << error << "\n";
      return 1;
    }
    TlsFiles tls(pod->storage);
    if (!tls.load(&error) || !tls.init_network(cfg->network.name, pod->name, storage.pod_id(), &fingerprint, &error)) {
      std::cerr << "wormhole: " << error << "\n";
      return 1;
    }
    std::cout << "network " << cfg->network.name << ": CA in " << tls.dir << " (pod " << pod->name << ")\n"
              << "fingerprint " << fingerprint << "\n"
              << "put it in the network file so that joining pods check it:\n  ca_fingerprint = \"" << fingerprint
              << "\"\n";
    return 0;
  }
  if (token_create->parsed()) {
    uint64_t ttl_ms = 0;
    if (!parse_duration_ms(token_ttl, &ttl_ms) || ttl_ms == 0) {
      std::cerr << "wormhole: --ttl: expected a duration such as 10m or 1h\n";
      return 2;
    }
    nlohmann::json r;
    nlohmann::json req{{"cmd", "token"}, {"action", "create"}, {"ttl_ms", ttl_ms}, {"uses", token_uses}};
    if (int rc = sign_admin_request(config_file, admin_key, admin_name, "token-create", &req)) return rc;
    if (int rc = ask_ok(config_file, pod_name, req, &r)) return rc;
    std::cout << r["token"].get<std::string>() << "\n";
    return 0;
  }
  if (token_list->parsed()) {
    nlohmann::json r;
    if (int rc = ask_ok(config_file, pod_name, {{"cmd", "token"}, {"action", "list"}}, &r)) return rc;
    if (json) {
      std::cout << r.dump() << "\n";
      return 0;
    }
    for (auto& t : r["tokens"]) std::cout << t["id"].get<std::string>() << "  " << t["state"].get<std::string>() << "  uses left " << t["uses_left"].dump() << "\n";
    return 0;
  }
  if (token_revoke->parsed()) {
    nlohmann::json r;
    if (int rc = ask_ok(config_file, pod_name, {{"cmd", "token"}, {"action", "revoke"}, {"id", token_id}}, &r)) return rc;
    std::cout << "revoked token " << r["revoked"].get<std::string>() << "\n";
    return 0;
  }
  if (pending->parsed()) {
    nlohmann::json r;
    if (int rc = ask_ok(config_file, pod_name, {{"cmd", "pending"}}, &r)) return rc;
    if (json) {
      std::cout << r.dump() << "\n";
      return 0;
    }
    if (r["pending"].empty()) std::cout << "no pod is waiting to join\n";
    for (auto& p : r["pending"])
      std::cout << p["pod"].get<std::string>() << "  " << p["address"].get<std::string>() << "  key "
                << p["key_fingerprint"].get<std::string>() << "  " << p["decision"].get<std::string>() << ", waiting "
                << p["waiting_s"] << " s\n";
    return 0;
  }
  if (approve->parsed() || deny->parsed()) {
    const std::string action = approve->parsed() ? "approve" : "deny";
    nlohmann::json req{{"cmd", action}, {"pod", decide_pod}}, r;
    if (!decide_key.empty()) req["key"] = decide_key;
    if (int rc = sign_admin_request(config_file, admin_key, admin_name, action, &req)) return rc;
    if (int rc = ask_ok(config_file, pod_name, req, &r)) return rc;
    std::cout << (approve->parsed() ? "approved " : "denied ") << decide_pod << "\n";
    return 0;
  }
  if (admin_key_create->parsed()) {
    std::string private_pem, public_b64, error;
    if (admin_new_name.empty() || admin_new_name.find_first_of(":\n ") != std::string::npos) {
      std::cerr << "wormhole: an admin name without ':', spaces or newlines\n";
      return 2;
    }
    if (admin_out.empty()) admin_out = admin_new_name + ".admin.key";
    if (!certs::create_admin_key(&private_pem, &public_b64, &error)) {
      std::cerr << "wormhole: " << error << "\n";
      return 1;
    }
    const int fd = ::open(admin_out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, private_pem.data(), private_pem.size()) != static_cast<ssize_t>(private_pem.size())) {
      std::cerr << "wormhole: cannot write " << admin_out << " (it must not exist yet): " << std::strerror(errno) << "\n";
      if (fd >= 0) ::close(fd);
      return 1;
    }
    ::close(fd);
    std::cout << "private key: " << admin_out << " (keep it secret; sign with --admin-key " << admin_out << ")\n"
              << "add to [network] admins:\n  \"" << admin_new_name << ":" << public_b64 << "\"\n";
    return 0;
  }
  if (forget->parsed()) {
    nlohmann::json r, req{{"cmd", "forget"}, {"pod", forget_pod}, {"force", forget_force}};
    if (int rc = sign_admin_request(config_file, admin_key, admin_name, forget_force ? "forget-force" : "forget", &req))
      return rc;
    if (int rc = ask_ok(config_file, pod_name, req, &r))
      return rc;
    std::cout << "forgot pod " << forget_pod << ": the others stop waiting for it\n";
    return 0;
  }
  if (drain->parsed()) {
    nlohmann::json r;
    nlohmann::json req{{"cmd", "drain"}, {"pod", drain_pod}};
    if (int rc = sign_admin_request(config_file, admin_key, admin_name, "drain", &req)) return rc;
    if (int rc = ask_ok(config_file, pod_name, req, &r)) return rc;
    if (json) {
      std::cout << r.dump(2) << "\n";
      return 0;
    }
    std::cout << "pod " << drain_pod << " is draining: its copies move to the other pods, then it leaves the network "
              << "(`wormhole status` shows the progress)\n";
    return 0;
  }
  if (restore->parsed()) {
    nlohmann::json r;
    if (int rc = ask_ok(config_file, pod_name, {{"cmd", "trash_restore"}, {"id", restore_id}}, &r)) return rc;
    std::cout << "restored as " << r["restored"].get<std::string>() << "\n";
    return 0;
  }
  if (trash->parsed()) {
    nlohmann::json r;
    if (int rc = ask_ok(config_file, pod_name, {{"cmd", "trash"}, {"limit", trash_limit}}, &r)) return rc;
    if (json) {
      std::cout << r.dump() << "\n";
      return 0;
    }
    std::cout << "kept at least " << r.value("retention_s", uint64_t{0}) << " s after the delete (network.trash_retention)\n";
    for (auto& t : r["trash"]) {
      const time_t secs = static_cast<time_t>(t.value("deleted_ms", uint64_t{0}) / 1000);
      char when[32];
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&secs));
      const std::string from = t.value("from", "");
      std::cout << t["id"].get<std::string>() << "  " << when << "  " << t.value("size", uint64_t{0}) << "  "
                << (from.empty() ? "(gone)" : from == "/" ? "" : from) << "/" << t["name"].get<std::string>() << "\n";
    }
    return 0;
  }
  if (gc->parsed()) {
    nlohmann::json req{{"cmd", "gc"}};
    if (!grace.empty()) {
      uint64_t ms = 0;
      if (!parse_duration_ms(grace, &ms)) {
        std::cerr << "wormhole: --grace: expected a duration such as 0s or 10m\n";
        return 2;
      }
      req["grace_s"] = ms / 1000;
    }
    nlohmann::json r;
    if (int rc = ask(config_file, pod_name, req, &r)) return rc;
    if (json)
      std::cout << r.dump() << "\n";
    else
      std::cout << "removed " << r["removed_chunks"] << " chunks\n";
    return 0;
  }
  if (check->parsed() || pods->parsed()) {
    std::string error;
    auto cfg = load_config(check_file, &error);
    if (!cfg) {
      std::cerr << "wormhole: " << error << "\n";
      return 2;
    }
    if (check->parsed()) {
      std::cout << cfg->file << ": ok (network " << cfg->network.name << ", " << cfg->pods.size() << " pods, "
                << cfg->rules.size() << " rules)\n";
    } else {
      for (auto& p : cfg->pods) std::cout << p.name << "\n";
    }
    return 0;
  }
  return 0;
}
