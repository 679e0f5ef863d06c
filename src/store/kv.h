// The persistence interface meta uses: an ordered key-value store with atomic batches.
// RocksKv (RocksDB, the real store) and MemKv (in-memory, for the deterministic
// simulation of many pods in one process) implement it.
#pragma once
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wormhole {

// One atomic group of writes: key -> value, or key -> nullopt for a delete.
using KvBatch = std::vector<std::pair<std::string, std::optional<std::string>>>;

// Result of a write. `no_space` is set when the disk is full (mapped to ENOSPC).
struct KvStatus {
  bool ok = true;
  bool no_space = false;
  std::string message;
};

// Thread-safe: get/scan may run concurrently with write.
class KvStore {
 public:
  virtual ~KvStore() = default;
  // Reads `key`; returns false when absent.
  virtual bool get(std::string_view key, std::string* value) = 0;
  // Visits keys in [start, end) in order (reverse = descending) until `visit` returns false.
  // Returns false when the store failed (an I/O error, corruption) before the range was
  // visited to its end or to the point where `visit` stopped: what was visited is then only
  // part of the range, and "not seen" must not be taken for "absent" (a directory with
  // entries would look empty). Callers report EIO. RocksKv's scan is one iterator, a
  // consistent view as of its start, which the scans made without the namespace's lock
  // rely on (status counts, GC's chunk list, snapshots); MemKv's copies slices and is not
  // (tests, where no such scan races writes).
  [[nodiscard]] virtual bool scan(std::string_view start, std::string_view end, bool reverse,
                                  const std::function<bool(std::string_view key, std::string_view value)>& visit) = 0;
  // Applies all of `batch` or none of it. With `sync`, durable on return.
  virtual KvStatus write(const KvBatch& batch, bool sync) = 0;
  // Makes every write that returned before the call durable (one log sync for all of them:
  // a group commit).
  virtual KvStatus sync() = 0;
};

// A read-your-writes view over a store, collecting writes into one batch. Reads are
// cached for the life of the transaction (an op reads the same records several times).
// Not thread-safe; the owner serializes use. Scans see only the underlying store.
class KvTxn {
 public:
  explicit KvTxn(KvStore& store) : store_(store) {}
  bool get(std::string_view key, std::string* value);
  void put(std::string key, std::string value);
  void del(std::string key);
  KvStatus commit(bool sync);
  KvStore& store() { return store_; }

 private:
  KvStore& store_;
  std::map<std::string, std::optional<std::string>, std::less<>> pending_;
  std::map<std::string, std::optional<std::string>, std::less<>> read_cache_;
};

// Smallest key greater than every key starting with `prefix`.
std::string prefix_end(std::string_view prefix);

}  // namespace wormhole
