#include "daemon/control.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

namespace wormhole {
namespace {

constexpr size_t kMaxRequestBytes = 64 * 1024;
constexpr int kIoTimeoutMs = 5000;
constexpr size_t kMaxPeerGroups = 65536;       // NGROUPS_MAX
constexpr size_t kMaxProcStatusBytes = 1 << 20;  // /proc/<pid>/status with 65536 groups fits
constexpr size_t kMaxWarnedUsers = 256;

bool fill_addr(const std::string& path, sockaddr_un* addr, std::string* error) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path) {
    *error = "socket path too long: " + path;
    return false;
  }
  std::memcpy(addr->sun_path, path.c_str(), path.size());
  return true;
}

// Reads one line (bounded) with a timeout.
bool read_line(int fd, std::string* line) {
  line->clear();
  char buf[4096];
  while (line->size() < kMaxRequestBytes) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kIoTimeoutMs) <= 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return !line->empty();
    line->append(buf, static_cast<size_t>(n));
    auto nl = line->find('\n');
    if (nl != std::string::npos) {
      line->resize(nl);
      return true;
    }
  }
  return false;
}

bool write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// A reply line. Strings the handler put in (file names, paths) may be any bytes: invalid
// UTF-8 is replaced rather than thrown on (an exception here would end the daemon).
std::string reply_line(const nlohmann::json& reply) {
  return reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// The supplementary groups of process `pid` from the "Groups:" line of /proc/<pid>/status
// (read bounded), provided its effective uid is still `uid`. Only for kernels without
// SO_PEERGROUPS (before 4.13): the process may have changed since it connected.
std::vector<gid_t> proc_groups(pid_t pid, uid_t uid) {
  std::vector<gid_t> out;
  const std::string path = "/proc/" + std::to_string(pid) + "/status";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  std::string text;
  char buf[8192];
  ssize_t n;
  while (text.size() < kMaxProcStatusBytes && (n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  auto field = [&](const char* name) -> std::string {
    const std::string key = std::string("\n") + name;
    size_t at = text.find(key);
    if (at == std::string::npos) return "";
    size_t end = text.find('\n', at + key.size());
    if (end == std::string::npos) return "";  // cut by the bound: unusable
    return text.substr(at + key.size(), end - at - key.size());
  };
  // "Uid:\treal\teffective\tsaved\tfs"
  const std::string uids = field("Uid:");
  char* p = nullptr;
  std::strtoul(uids.c_str(), &p, 10);
  if (p == uids.c_str() || std::strtoul(p, nullptr, 10) != uid) return out;
  const std::string groups = field("Groups:");
  const char* s = groups.c_str();
  while (out.size() < kMaxPeerGroups) {
    char* e = nullptr;
    unsigned long g = std::strtoul(s, &e, 10);
    if (e == s) break;
    out.push_back(static_cast<gid_t>(g));
    s = e;
  }
  return out;
}

struct PeerCred {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::vector<gid_t> groups;
};

// The credentials of the process at the other end of `fd`, as they were when it connected.
bool peer_credentials(int fd, PeerCred* out) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) return false;
  out->uid = cred.uid;
  out->gid = cred.gid;
  out->pid = cred.pid;
#ifdef SO_PEERGROUPS
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 3; attempt++) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      out->groups = std::move(groups);
      return true;
    }
    // ERANGE: glen is the size needed (the peer has many groups).
    if (errno != ERANGE || glen / sizeof(gid_t) <= groups.size() || glen / sizeof(gid_t) > kMaxPeerGroups) break;
    groups.resize(glen / sizeof(gid_t));
  }
#endif
  out->groups = proc_groups(out->pid, out->uid);
  return true;
}

std::string refusal(const ControlAccess& access) {
  std::string msg = "permission denied (EACCES): the control socket of pod " + access.pod + " accepts root";
  if (access.group)
    return msg + ", the daemon's user and members of group " + access.group_name + " (pod.control_group)";
  return msg + " and the daemon's user only (pod.control_group can admit a group)";
}

std::string user_name(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw;
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found) return found->pw_name;
  return "uid " + std::to_string(uid);
}

std::string group_name(gid_t gid) {
  std::vector<char> buf(65536);
  struct group gr;
  struct group* found = nullptr;
  if (::getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) == 0 && found) return found->gr_name;
  return "gid " + std::to_string(gid);
}

// Why connect() said EACCES, from what the socket file says (the daemon's pod is not known
// here: only the socket).
std::string connect_refusal(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return "permission denied (EACCES): cannot reach the control socket " + path +
           " (its directory is not searchable by this user)";
  std::string msg = "permission denied (EACCES): the control socket " + path + " accepts root, the daemon's user (" +
                    user_name(st.st_uid) + ")";
  if (st.st_mode & S_IWGRP) return msg + " and members of group " + group_name(st.st_gid) + " (pod.control_group)";
  return msg + " only (pod.control_group can admit a group)";
}

}  // namespace

bool control_peer_allowed(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, uid_t daemon_uid,
                          std::optional<gid_t> group) {
  if (uid == 0 || uid == daemon_uid) return true;
  if (!group) return false;
  return gid == *group || std::find(groups.begin(), groups.end(), *group) != groups.end();
}

ControlServer::ControlServer(std::string path, Handler handler, ControlAccess access)
    : path_(std::move(path)), handler_(std::move(handler)), access_(std::move(access)), daemon_uid_(::geteuid()) {}

ControlServer::~ControlServer() { stop(); }

void ControlServer::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
    fd_ = -1;
  }
}

bool ControlServer::start(std::string* error) {
  sockaddr_un addr;
  if (!fill_addr(path_, &addr, error)) return false;
  ::unlink(path_.c_str());  // left by a crashed daemon; the storage lock proves we own it
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = "cannot listen on " + path_ + ": " + std::strerror(errno);
    return false;
  }
  // Mode and group are set before listen(): nobody can connect before then.
  if (::chmod(path_.c_str(), 0600) != 0) {
    *error = "cannot set the mode of " + path_ + ": " + std::strerror(errno);
    return false;
  }
  if (access_.group) {
    if (::chown(path_.c_str(), static_cast<uid_t>(-1), *access_.group) != 0) {
      *error = "cannot give the control socket " + path_ + " to group " + access_.group_name +
               " (pod.control_group): " + std::strerror(errno) + " (the daemon must run as root or as a member of it)";
      return false;
    }
    if (::chmod(path_.c_str(), 0660) != 0) {
      *error = "cannot set the mode of " + path_ + ": " + std::strerror(errno);
      return false;
    }
  }
  if (::listen(fd_, 16) != 0) {
    *error = "cannot listen on " + path_ + ": " + std::strerror(errno);
    return false;
  }
  thread_ = std::thread([this] { serve(); });
  return true;
}

void ControlServer::serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;  // wake up regularly to notice stop_
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    serve_one(c);
    ::close(c);
  }
}

void ControlServer::serve_one(int c) {
  // A client that does not read its reply does not hold the socket up for long.
  timeval tv{kIoTimeoutMs / 1000, 0};
  ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  PeerCred peer;
  const bool known = peer_credentials(c, &peer);
  // The request is read even from a refused peer: closing with its bytes unread would
  // reset the connection, and it might not see the reply.
  std::string line;
  const bool got = read_line(c, &line);
  nlohmann::json reply;
  if (!known || !control_peer_allowed(peer.uid, peer.gid, peer.groups, daemon_uid_, access_.group)) {
    if (!known) {
      spdlog::warn("control socket of pod {}: refused a connection whose credentials are unknown", access_.pod);
    } else if (warned_.size() < kMaxWarnedUsers && warned_.insert(peer.uid).second) {
      spdlog::warn("control socket of pod {}: refused uid {} (gid {}, pid {}): not root, not the daemon's user{}{}",
                   access_.pod, peer.uid, peer.gid, peer.pid,
                   access_.group ? ", not in group " : "", access_.group ? access_.group_name : "");
    }
    reply = {{"error", refusal(access_)}, {"errno", EACCES}};
  } else if (!got) {
    reply = {{"error", "no request"}};
  } else {
    auto req = nlohmann::json::parse(line, nullptr, false);
    if (req.is_discarded() || !req.is_object()) {
      spdlog::warn("control socket: rejected a malformed request");
      reply = {{"error", "malformed request"}};
    } else {
      try {
        reply = handler_(req);
      } catch (const std::exception& e) {
        reply = {{"error", e.what()}};
      } catch (...) {
        reply = {{"error", "internal error"}};
      }
    }
  }
  write_all(c, reply_line(reply));
}

bool control_request(const std::string& path, const nlohmann::json& request, nlohmann::json* reply,
                     std::string* error) {
  sockaddr_un addr;
  if (!fill_addr(path, &addr, error)) return false;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    if (err == EACCES) {
      *error = connect_refusal(path);
      *reply = {{"error", *error}, {"errno", EACCES}};
      return false;
    }
    *error = "cannot reach the daemon at " + path + ": " + std::strerror(err) + " (is the pod running?)";
    return false;
  }
  std::string out;
  try {
    out = request.dump() + "\n";
  } catch (const nlohmann::json::exception&) {  // a string argument that is not UTF-8
    ::close(fd);
    *error = "the request is not valid UTF-8";
    return false;
  }
  std::string line;
  bool ok = write_all(fd, out) && read_line(fd, &line);
  ::close(fd);
  if (!ok) {
    *error = "no answer from the daemon at " + path;
    return false;
  }
  *reply = nlohmann::json::parse(line, nullptr, false);
  if (reply->is_discarded()) {
    *error = "malformed answer from the daemon";
    return false;
  }
  if (reply->is_object() && reply->contains("error")) {
    const nlohmann::json& e = (*reply)["error"];
    *error = e.is_string() ? e.get<std::string>() : e.dump();
    return false;
  }
  return true;
}

}  // namespace wormhole
