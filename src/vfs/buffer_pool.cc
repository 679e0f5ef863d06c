#include "vfs/buffer_pool.h"

#include <cstring>

namespace wormhole {

void BufferPool::reserve_full(ByteBuffer& buf) {
  if (buf.capacity() >= buffer_bytes_) return;
  ByteBuffer fresh;
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      fresh = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (fresh.capacity() < buffer_bytes_) fresh.reserve(buffer_bytes_);
  fresh.resize(buf.size());
  if (!buf.empty()) std::memcpy(fresh.data(), buf.data(), buf.size());
  buf = std::move(fresh);
}

void BufferPool::give_back(ByteBuffer&& buf) {
  if (buf.capacity() < buffer_bytes_) return;
  buf.clear();
  std::lock_guard lock(mu_);
  if (idle_.size() < max_buffers_) idle_.push_back(std::move(buf));
}

}  // namespace wormhole
