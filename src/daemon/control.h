// The control socket: a local Unix socket in the storage directory over which the CLI
// asks the daemon things. One JSON request line (at most 64 KiB), one JSON reply line,
// then close.
//
// Who may use it: root, the daemon's own user and, when the pod sets `control_group`, the
// members of that group. The socket file is mode 0600 (0660 and owned by the group when a
// group is set), so the kernel already turns others away at connect(); in addition every
// accepted connection's credentials (SO_PEERCRED, SO_PEERGROUPS) are checked with
// control_peer_allowed, and a refused peer gets one reply line
// {"error": "permission denied (EACCES): ...", "errno": 13}.
#pragma once
#include <atomic>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include <nlohmann/json_fwd.hpp>

namespace wormhole {

// Whether a process may use the control socket. Pure.
//   uid, gid: the peer's effective user and group ids (SO_PEERCRED);
//   groups: its supplementary group ids (any order, duplicates allowed);
//   daemon_uid: the daemon's effective user id;
//   group: the pod's control_group, if any.
// True exactly when uid is 0 (root), or uid == daemon_uid, or a group is set and it is gid
// or one of `groups`. Without a group, only root and the daemon's user are allowed.
bool control_peer_allowed(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, uid_t daemon_uid,
                          std::optional<gid_t> group);

// Who, besides root and the daemon's user, may use a pod's control socket.
struct ControlAccess {
  std::string pod;              // named in the refusal message
  std::optional<gid_t> group;   // pod.control_group's id; nullopt = nobody else
  std::string group_name;       // pod.control_group, for messages
};

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
  ControlServer(std::string path, Handler handler, ControlAccess access = {});
  ~ControlServer();  // stop()
  // Stops serving (the request being served finishes first) and removes the socket. Call
  // before anything the handler uses goes away. Idempotent.
  void stop();
  // Binds, sets the socket's mode and group, and starts serving on a thread. False +
  // *error on failure (e.g. the daemon may not give the socket to the group: it must be
  // root or a member).
  bool start(std::string* error);

 private:
  void serve();
  void serve_one(int fd);
  std::string path_;
  Handler handler_;
  ControlAccess access_;
  uid_t daemon_uid_;
  std::set<uid_t> warned_;  // refused users already logged (bounded); the serving thread's
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Sends `request` to the daemon at `path`; fills *reply. False + *error on failure; when
// the daemon answered with an error, *error is its message and *reply the whole answer.
// Permission refusals (by the kernel at connect or by the daemon) give an *error starting
// with "permission denied (EACCES)" and a *reply carrying "errno": 13.
bool control_request(const std::string& path, const nlohmann::json& request, nlohmann::json* reply,
                     std::string* error);

}  // namespace wormhole
