// In-memory KvStore: an ordered map behind a mutex. Used by the deterministic simulation
// (many pods in one process) and unit tests; a full implementation, not a mock. It keeps
// what was synced apart from what was only written, so that a simulated power loss
// (lose_unsynced) drops exactly the writes a real disk could lose.
// Thread-safe. Tests can make its scans fail (fail_scans_under) as a RocksDB iterator
// error would.
#pragma once
#include <map>
#include <mutex>
#include <optional>

#include "store/kv.h"

namespace wormhole {

class MemKv : public KvStore {
 public:
  bool get(std::string_view key, std::string* value) override;
  // A scan made to fail (fail_scans_under) visits at most the first key of the range and
  // returns false: an iterator that failed part-way.
  bool scan(std::string_view start, std::string_view end, bool reverse,
            const std::function<bool(std::string_view, std::string_view)>& visit) override;
  KvStatus write(const KvBatch& batch, bool sync) override;
  KvStatus sync() override;
  // A power loss: every write not synced since is gone.
  void lose_unsynced();

  // Error injection for tests: scans whose start key begins with `prefix` fail ("" = every
  // scan), as a RocksDB iterator error would, until stop_failing_scans().
  void fail_scans_under(std::string prefix);
  void stop_failing_scans();

 private:
  std::optional<std::string> fail_prefix_;  // guarded by mu_
  using Map = std::map<std::string, std::string, std::less<>>;
  static void apply(Map& m, const KvBatch& batch);
  std::mutex mu_;
  Map data_;                     // what reads see
  Map durable_;                  // what a power loss keeps
  std::vector<KvBatch> unsynced_;  // written since the last sync, in order
};

}  // namespace wormhole
