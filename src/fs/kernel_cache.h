// KernelCache: tells the kernel to forget cached names and attributes that changed behind
// its back (ops applied from other pods). A no-op until the mount is live.
// Thread-safe; must not be called from inside a FUSE request handler.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>

struct fuse_session;

namespace wormhole {

class KernelCache {
 public:
  void attach(fuse_session* se);
  // After detach() returns no notification is in flight: the session may be destroyed.
  void detach();
  void forget_entry(uint64_t parent_ino, const std::string& name);
  void forget_inode(uint64_t ino);

 private:
  std::mutex mu_;
  fuse_session* session_ = nullptr;
};

}  // namespace wormhole
