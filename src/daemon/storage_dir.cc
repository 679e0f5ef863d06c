#include "daemon/storage_dir.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace wormhole {

StorageDir::~StorageDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool StorageDir::lock(std::string* error) {
  std::error_code ec;
  std::filesystem::create_directories(path_, ec);
  if (ec) {
    *error = "cannot create storage directory " + path_ + ": " + ec.message();
    return false;
  }
  const std::string lock_path = path_ + "/daemon.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    *error = "cannot open " + lock_path + ": " + std::strerror(errno);
    return false;
  }
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    ssize_t n = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
    std::string who = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "?";
    while (!who.empty() && (who.back() == '\n')) who.pop_back();
    *error = "storage directory " + path_ + " is already used by another wormhole daemon (pid " + who + ")";
    return false;
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) < 0) {
    *error = "cannot write " + lock_path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

bool StorageDir::load_identity(const std::string& network, const std::string& pod_name, uint64_t chunk_size,
                               std::string* error) {
  const std::string id_path = path_ + "/identity";
  std::ifstream in(id_path);
  if (in) {
    std::string line, net, pod, id, chunk;
    while (std::getline(in, line)) {
      auto eq = line.find('=');
      if (eq == std::string::npos) continue;
      std::string k = line.substr(0, eq), v = line.substr(eq + 1);
      if (k == "network") net = v;
      if (k == "pod") pod = v;
      if (k == "pod_id") id = v;
      if (k == "chunk_size") chunk = v;
    }
    if (net != network) {
      *error = "storage directory " + path_ + " belongs to network \"" + net + "\", not \"" + network + "\"";
      return false;
    }
    if (pod != pod_name) {
      *error = "storage directory " + path_ + " belongs to pod \"" + pod + "\", not \"" + pod_name + "\"";
      return false;
    }
    if (!chunk.empty() && std::strtoull(chunk.c_str(), nullptr, 10) != chunk_size) {
      *error = "storage directory " + path_ + " holds data cut in chunks of " + chunk +
               " bytes; network.chunk_size is " + std::to_string(chunk_size) + " (it cannot change)";
      return false;
    }
    pod_id_ = std::strtoull(id.c_str(), nullptr, 16);
    if (pod_id_ == 0) {
      *error = id_path + ": invalid pod_id";
      return false;
    }
    return true;
  }
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> dist(1, UINT64_MAX);
  pod_id_ = dist(rd);
  std::ostringstream os;
  os << "network=" << network << "\npod=" << pod_name << "\nchunk_size=" << chunk_size << "\npod_id=" << std::hex
     << pod_id_ << "\n";
  const std::string tmp = id_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << os.str();
    out.flush();
    if (!out) {
      *error = "cannot write " + tmp;
      return false;
    }
  }
  int fd = ::open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (::rename(tmp.c_str(), id_path.c_str()) != 0) {
    *error = "cannot write " + id_path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace wormhole
