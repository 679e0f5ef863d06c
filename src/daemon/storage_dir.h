// StorageDir: the storage directory of a pod, locked for one daemon at a time, with the
// pod's persistent identity. Not thread-safe; used once at start-up.
#pragma once
#include <cstdint>
#include <string>

namespace wormhole {

class StorageDir {
 public:
  explicit StorageDir(std::string path) : path_(std::move(path)) {}
  ~StorageDir();

  // Creates the directory if needed and takes its exclusive lock. False + *error when
  // another daemon holds it.
  bool lock(std::string* error);
  // Loads the identity file, creating it with a new random pod id on first start. Refuses
  // a directory that belongs to another network or pod.
  // Also refuses a chunk size different from the one the stored data was cut with.
  bool load_identity(const std::string& network, const std::string& pod_name, uint64_t chunk_size,
                     std::string* error);

  uint64_t pod_id() const { return pod_id_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int lock_fd_ = -1;
  uint64_t pod_id_ = 0;
};

}  // namespace wormhole
