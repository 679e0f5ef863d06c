// The control socket: a local Unix socket in the storage directory over which the CLI
// asks the daemon things. One JSON request line, one JSON reply line, then close.
// The socket is created mode 0600: only the daemon's user (and root) may talk to it.
#pragma once
#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include <nlohmann/json_fwd.hpp>

namespace wormhole {

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
  ControlServer(std::string path, Handler handler);
  ~ControlServer();  // stops the thread and removes the socket
  // Binds and starts serving on a thread. False + *error on failure.
  bool start(std::string* error);

 private:
  void serve();
  std::string path_;
  Handler handler_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Sends `request` to the daemon at `path`; fills *reply. False + *error on failure.
bool control_request(const std::string& path, const nlohmann::json& request, nlohmann::json* reply,
                     std::string* error);

}  // namespace wormhole
