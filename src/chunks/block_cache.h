// BlockCache: verified blocks of chunks this pod does not store, kept in memory for the
// random reads that fetched them (a pod reading a few blocks of a remote chunk neither
// fetches nor stores the whole chunk: docs/architecture.md, "Blocks inside chunks").
// Bounded by `max_bytes` (least recently used blocks go first) and thread-safe: one mutex,
// held only for map operations and copies of at most one block.
#pragma once
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

namespace wormhole {

class BlockCache {
 public:
  explicit BlockCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  // Copies up to `len` bytes at `offset` within block `block` of chunk `sha256` into `out`:
  // the byte count (short at the block's end), or -1 when the block is not cached.
  ssize_t read(const std::string& sha256, uint64_t block, size_t offset, size_t len, char* out);
  // Keeps a verified block (callers verify; this class does not). Replaces an equal key.
  void insert(const std::string& sha256, uint64_t block, std::string data);

  size_t bytes() const;
  size_t blocks() const;

 private:
  static std::string key_of(const std::string& sha256, uint64_t block);
  const size_t max_bytes_;
  mutable std::mutex mu_;
  size_t bytes_ = 0;
  std::list<std::string> lru_;  // keys, most recent first
  std::unordered_map<std::string, std::pair<std::string, std::list<std::string>::iterator>> blocks_;
};

}  // namespace wormhole
