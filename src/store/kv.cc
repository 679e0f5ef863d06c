#include "store/kv.h"

namespace wormhole {

bool KvTxn::get(std::string_view key, std::string* value) {
  auto it = pending_.find(key);
  if (it != pending_.end()) {
    if (!it->second) return false;
    *value = *it->second;
    return true;
  }
  auto cached = read_cache_.find(key);
  if (cached == read_cache_.end()) {
    std::string v;
    std::optional<std::string> found;
    if (store_.get(key, &v)) found = std::move(v);
    cached = read_cache_.emplace(std::string(key), std::move(found)).first;
  }
  if (!cached->second) return false;
  *value = *cached->second;
  return true;
}

void KvTxn::put(std::string key, std::string value) { pending_[std::move(key)] = std::move(value); }

void KvTxn::del(std::string key) { pending_[std::move(key)] = std::nullopt; }

KvStatus KvTxn::commit(bool sync) {
  KvBatch batch;
  batch.reserve(pending_.size());
  for (auto& [k, v] : pending_) batch.emplace_back(k, v);
  pending_.clear();
  read_cache_.clear();
  if (batch.empty()) return {};
  return store_.write(batch, sync);
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char c = static_cast<unsigned char>(end.back());
    if (c != 0xff) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(64, '\xff');  // no bound: beyond every key we use
}

}  // namespace wormhole
