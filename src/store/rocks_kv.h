// KvStore on RocksDB: the per-pod metadata database. Thread-safe (RocksDB is).
#pragma once
#include <memory>
#include <string>

#include "store/kv.h"

namespace rocksdb {
class DB;
}

namespace wormhole {

class RocksKv : public KvStore {
 public:
  // Opens (creating if needed) the database in `dir`. Returns nullptr and sets *error
  // on failure.
  static std::unique_ptr<RocksKv> open(const std::string& dir, std::string* error);
  ~RocksKv() override;

  bool get(std::string_view key, std::string* value) override;
  bool scan(std::string_view start, std::string_view end, bool reverse,
            const std::function<bool(std::string_view, std::string_view)>& visit) override;
  KvStatus write(const KvBatch& batch, bool sync) override;
  KvStatus sync() override;

 private:
  explicit RocksKv(rocksdb::DB* db) : db_(db) {}
  rocksdb::DB* db_;
};

}  // namespace wormhole
