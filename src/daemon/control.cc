#include "daemon/control.h"

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace wormhole {
namespace {

constexpr size_t kMaxRequestBytes = 64 * 1024;
constexpr int kIoTimeoutMs = 5000;

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

}  // namespace

ControlServer::ControlServer(std::string path, Handler handler) : path_(std::move(path)), handler_(std::move(handler)) {}

ControlServer::~ControlServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

bool ControlServer::start(std::string* error) {
  sockaddr_un addr;
  if (!fill_addr(path_, &addr, error)) return false;
  ::unlink(path_.c_str());  // left by a crashed daemon; the storage lock proves we own it
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0) {
    *error = "cannot listen on " + path_ + ": " + std::strerror(errno);
    return false;
  }
  ::chmod(path_.c_str(), 0600);
  thread_ = std::thread([this] { serve(); });
  return true;
}

void ControlServer::serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;  // wake up regularly to notice stop_
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    std::string line;
    nlohmann::json reply;
    if (!read_line(c, &line)) {
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
        }
      }
    }
    write_all(c, reply.dump() + "\n");
    ::close(c);
  }
}

bool control_request(const std::string& path, const nlohmann::json& request, nlohmann::json* reply,
                     std::string* error) {
  sockaddr_un addr;
  if (!fill_addr(path, &addr, error)) return false;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = "cannot reach the daemon at " + path + ": " + std::strerror(errno) + " (is the pod running?)";
    if (fd >= 0) ::close(fd);
    return false;
  }
  std::string line;
  bool ok = write_all(fd, request.dump() + "\n") && read_line(fd, &line);
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
  if (reply->contains("error")) {
    *error = (*reply)["error"].get<std::string>();
    return false;
  }
  return true;
}

}  // namespace wormhole
