#define FUSE_USE_VERSION 312
#include "fs/kernel_cache.h"

#include <fuse_lowlevel.h>

namespace wormhole {

void KernelCache::attach(fuse_session* se) {
  std::lock_guard lock(mu_);
  session_ = se;
}

void KernelCache::detach() {
  std::lock_guard lock(mu_);
  session_ = nullptr;
}

void KernelCache::forget_entry(uint64_t parent_ino, const std::string& name) {
  std::lock_guard lock(mu_);
  if (session_) fuse_lowlevel_notify_inval_entry(session_, parent_ino, name.c_str(), name.size());
}

void KernelCache::forget_inode(uint64_t ino) {
  // Attributes and cached pages: a new version from another pod replaces the content.
  std::lock_guard lock(mu_);
  if (session_) fuse_lowlevel_notify_inval_inode(session_, ino, 0, 0);
}

}  // namespace wormhole
