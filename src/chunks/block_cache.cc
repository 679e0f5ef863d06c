#include "chunks/block_cache.h"

#include <algorithm>
#include <cstring>

namespace wormhole {

std::string BlockCache::key_of(const std::string& sha256, uint64_t block) {
  std::string key = sha256;
  key.append(reinterpret_cast<const char*>(&block), sizeof block);
  return key;
}

ssize_t BlockCache::read(const std::string& sha256, uint64_t block, size_t offset, size_t len, char* out) {
  std::lock_guard lock(mu_);
  auto it = blocks_.find(key_of(sha256, block));
  if (it == blocks_.end()) return -1;
  lru_.splice(lru_.begin(), lru_, it->second.second);
  const std::string& data = it->second.first;
  if (offset >= data.size()) return 0;
  const size_t n = std::min(len, data.size() - offset);
  std::memcpy(out, data.data() + offset, n);
  return static_cast<ssize_t>(n);
}

void BlockCache::insert(const std::string& sha256, uint64_t block, std::string data) {
  if (data.size() > max_bytes_) return;
  std::string key = key_of(sha256, block);
  std::lock_guard lock(mu_);
  auto it = blocks_.find(key);
  if (it != blocks_.end()) {
    bytes_ -= it->second.first.size();
    lru_.erase(it->second.second);
    blocks_.erase(it);
  }
  bytes_ += data.size();
  lru_.push_front(key);
  blocks_.emplace(std::move(key), std::make_pair(std::move(data), lru_.begin()));
  while (bytes_ > max_bytes_) {  // bounded: each step removes a block
    auto last = blocks_.find(lru_.back());
    bytes_ -= last->second.first.size();
    blocks_.erase(last);
    lru_.pop_back();
  }
}

size_t BlockCache::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

size_t BlockCache::blocks() const {
  std::lock_guard lock(mu_);
  return blocks_.size();
}

}  // namespace wormhole
