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
  // Copied a slice at a time, so that `visit` may call back into the store, and so that a
  // caller that stops after a few keys (a page) does not pay for copying the whole range.
  constexpr size_t kSlice = 64;
  std::vector<std::pair<std::string, std::string>> items;
  std::string lo(start), hi(end);  // the part of the range not visited yet
  bool failing = false, first_slice = true;
  for (;;) {  // bounded: each slice shrinks [lo, hi) by what it copied
    items.clear();
    {
      std::lock_guard lock(mu_);
      if (first_slice) failing = fail_prefix_ && start.substr(0, fail_prefix_->size()) == *fail_prefix_;
      if (!reverse) {
        for (auto it = data_.lower_bound(lo); it != data_.end() && it->first < hi && items.size() < kSlice; ++it)
          items.emplace_back(it->first, it->second);
      } else {
        for (auto it = data_.lower_bound(hi); it != data_.begin() && items.size() < kSlice;) {
          --it;
          if (it->first < lo) break;
          items.emplace_back(it->first, it->second);
        }
      }
    }
    first_slice = false;
    if (failing) {
      // Fails after the first key, so that callers are tested both on "saw nothing" and on
      // "saw part of the range".
      if (!items.empty()) visit(items.front().first, items.front().second);
      return false;
    }
    for (auto& [k, v] : items)
      if (!visit(k, v)) return true;
    if (items.size() < kSlice) return true;
    if (!reverse) lo = items.back().first + '\0';  // the next key after the last one seen
    else hi = items.back().first;                  // keys before the last one seen
  }
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
