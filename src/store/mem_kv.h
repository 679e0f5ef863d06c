// In-memory KvStore: an ordered map behind a mutex. Used by the deterministic simulation
// (many pods in one process) and unit tests; a full implementation, not a mock. It keeps
// what was synced apart from what was only written, so that a simulated power loss
// (lose_unsynced) drops exactly the writes a real disk could lose.
// Thread-safe.
#pragma once
#include <map>
#include <mutex>

#include "store/kv.h"

namespace wormhole {

class MemKv : public KvStore {
 public:
  bool get(std::string_view key, std::string* value) override;
  void scan(std::string_view start, std::string_view end, bool reverse,
            const std::function<bool(std::string_view, std::string_view)>& visit) override;
  KvStatus write(const KvBatch& batch, bool sync) override;
  KvStatus sync() override;
  // A power loss: every write not synced since is gone.
  void lose_unsynced();

 private:
  using Map = std::map<std::string, std::string, std::less<>>;
  static void apply(Map& m, const KvBatch& batch);
  std::mutex mu_;
  Map data_;                     // what reads see
  Map durable_;                  // what a power loss keeps
  std::vector<KvBatch> unsynced_;  // written since the last sync, in order
};

}  // namespace wormhole
