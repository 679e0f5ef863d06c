// In-memory KvStore: an ordered map behind a mutex. Used by the deterministic simulation
// (many pods in one process) and unit tests; a full implementation, not a mock.
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

 private:
  std::mutex mu_;
  std::map<std::string, std::string, std::less<>> data_;
};

}  // namespace wormhole
