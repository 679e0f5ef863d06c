#include "store/mem_kv.h"

namespace wormhole {

bool MemKv::get(std::string_view key, std::string* value) {
  std::lock_guard lock(mu_);
  auto it = data_.find(key);
  if (it == data_.end()) return false;
  *value = it->second;
  return true;
}

bool MemKv::scan(std::string_view start, std::string_view end, bool reverse,
                 const std::function<bool(std::string_view, std::string_view)>& visit) {
  // Copy the range first so `visit` may call back into the store.
  std::vector<std::pair<std::string, std::string>> items;
  bool fail = false;
  {
    std::lock_guard lock(mu_);
    fail = fail_prefix_ && start.substr(0, fail_prefix_->size()) == *fail_prefix_;
    for (auto it = data_.lower_bound(start); it != data_.end() && it->first < end; ++it)
      items.emplace_back(it->first, it->second);
  }
  if (fail) {
    // Fails after the first key, so that callers are tested both on "saw nothing" and on
    // "saw part of the range".
    if (items.size() > 1) items.resize(1);
    if (!items.empty()) visit(items.front().first, items.front().second);
    return false;
  }
  if (reverse) {
    for (auto it = items.rbegin(); it != items.rend(); ++it)
      if (!visit(it->first, it->second)) return true;
  } else {
    for (auto& [k, v] : items)
      if (!visit(k, v)) return true;
  }
  return true;
}

void MemKv::fail_scans_under(std::string prefix) {
  std::lock_guard lock(mu_);
  fail_prefix_ = std::move(prefix);
}

void MemKv::stop_failing_scans() {
  std::lock_guard lock(mu_);
  fail_prefix_.reset();
}

void MemKv::apply(Map& m, const KvBatch& batch) {
  for (auto& [k, v] : batch) {
    if (v)
      m[k] = *v;
    else
      m.erase(k);
  }
}

KvStatus MemKv::write(const KvBatch& batch, bool sync) {
  std::lock_guard lock(mu_);
  apply(data_, batch);
  unsynced_.push_back(batch);
  if (sync) {
    for (auto& b : unsynced_) apply(durable_, b);
    unsynced_.clear();
  }
  return {};
}

KvStatus MemKv::sync() {
  std::lock_guard lock(mu_);
  for (auto& b : unsynced_) apply(durable_, b);
  unsynced_.clear();
  return {};
}

void MemKv::lose_unsynced() {
  std::lock_guard lock(mu_);
  data_ = durable_;
  unsynced_.clear();
}

}  // namespace wormhole
