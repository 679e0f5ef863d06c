// BufferedKv: a KvStore over another one that can hold writes back in memory, so that the
// many small atomic writes of one received op batch reach the store as one write (one
// log record, each key written once: a directory's record or the progress record of the
// sending pod is rewritten by every op of a batch). Catch-up spent a third of its CPU in
// the store's per-write path before this.
//
// While holding, reads (get, scan) see the held writes merged over the store; release()
// writes them all as one atomic batch. Outside a hold it passes
// everything through. sync() covers what reached the store only: held writes become
// durable after their release (the namespace holds only inside its exclusive lock, so what
// it reports applied is never held when it syncs).
//
// Bounded: a hold keeps at most kMaxHeldBytes; a write beyond is refused (the op fails and
// is sent again later), never flushed in part, so a batch reaches the store whole or not.
//
// Thread-safe: an internal mutex guards the held writes; the store's own guarantees hold.
#pragma once
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "store/kv.h"

namespace wormhole {

class BufferedKv : public KvStore {
 public:
  static constexpr size_t kMaxHeldBytes = 64u << 20;

  explicit BufferedKv(KvStore& store) : store_(store) {}

  // Starts holding writes back. Requires: not holding.
  void hold();
  // Writes every held write as one batch (durable on return if any held write asked for
  // sync) and stops holding. On failure nothing held reached the store and it is dropped.
  KvStatus release();
  bool holding() const { return holding_.load(std::memory_order_acquire); }
  // The store under the buffer: reads there see what was released only, and need no lock
  // of the buffer's user (the store's own thread-safety holds).
  KvStore& committed() { return store_; }

  bool get(std::string_view key, std::string* value) override;
  [[nodiscard]] bool scan(std::string_view start, std::string_view end, bool reverse,
                          const std::function<bool(std::string_view key, std::string_view value)>& visit) override;
  KvStatus write(const KvBatch& batch, bool sync) override;
  KvStatus sync() override { return store_.sync(); }

 private:
  KvStore& store_;
  std::mutex mu_;
  // Set only under mu_; read without it so that reads outside a hold (every FUSE request's)
  // take no mutex. Held writes exist only while it is set.
  std::atomic<bool> holding_{false};
  bool sync_on_release_ = false;
  size_t held_bytes_ = 0;
  std::map<std::string, std::optional<std::string>, std::less<>> held_;  // nullopt: deleted
};

}  // namespace wormhole
