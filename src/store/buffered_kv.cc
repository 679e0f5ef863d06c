#include "store/buffered_kv.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/invariant.h"

namespace wormhole {

void BufferedKv::hold() {
  std::lock_guard lock(mu_);
  WH_INVARIANT(!holding_ && held_.empty(), "a hold started inside another");
  holding_ = true;
  sync_on_release_ = false;
}

KvStatus BufferedKv::release() {
  KvBatch batch;
  bool sync = false;
  {
    std::lock_guard lock(mu_);
    batch.reserve(held_.size());
    for (auto& [k, v] : held_) batch.emplace_back(k, std::move(v));
    held_.clear();
    held_bytes_ = 0;
    holding_ = false;
    sync = std::exchange(sync_on_release_, false);
  }
  // Written outside the mutex: readers of the store do not wait for the write. The caller
  // (the namespace, under its exclusive lock) keeps other writers and readers out meanwhile.
  if (batch.empty()) return sync ? store_.sync() : KvStatus{};
  return store_.write(batch, sync);
}

bool BufferedKv::get(std::string_view key, std::string* value) {
  if (holding()) {
    std::lock_guard lock(mu_);
    if (auto it = held_.find(key); it != held_.end()) {
      if (!it->second) return false;
      *value = *it->second;
      return true;
    }
  }
  return store_.get(key, value);
}

bool BufferedKv::scan(std::string_view start, std::string_view end, bool reverse,
                      const std::function<bool(std::string_view, std::string_view)>& visit) {
  // The held writes of the range, copied so that `visit` runs without the mutex (it may
  // read again). A hold is one batch of ops: a range holds few of them.
  std::vector<std::pair<std::string, std::optional<std::string>>> held;
  if (holding()) {
    std::lock_guard lock(mu_);
    for (auto it = held_.lower_bound(start); it != held_.end() && it->first < end; ++it) held.emplace_back(*it);
  }
  if (held.empty()) return store_.scan(start, end, reverse, visit);
  if (reverse) std::reverse(held.begin(), held.end());
  // Merge in scan order: a held write replaces (or, deleted, hides) the store's pair of
  // its key; held pairs between the store's keys are visited in their place.
  auto before = [reverse](std::string_view a, std::string_view b) { return reverse ? a > b : a < b; };
  size_t next = 0;
  bool stopped = false;
  auto visit_held_before = [&](std::string_view key, bool up_to_end) {
    for (; next < held.size() && (up_to_end || before(held[next].first, key)); ++next)
      if (held[next].second && !visit(held[next].first, *held[next].second)) {
        ++next;
        return false;
      }
    return true;
  };
  const bool ok = store_.scan(start, end, reverse, [&](std::string_view k, std::string_view v) {
    if (!visit_held_before(k, false)) {
      stopped = true;
      return false;
    }
    if (next < held.size() && held[next].first == k) {
      const auto& replaced = held[next++].second;
      if (!replaced) return true;  // deleted while held
      if (!visit(k, *replaced)) {
        stopped = true;
        return false;
      }
      return true;
    }
    if (!visit(k, v)) {
      stopped = true;
      return false;
    }
    return true;
  });
  if (!ok) return false;
  if (!stopped) visit_held_before({}, true);
  return true;
}

KvStatus BufferedKv::write(const KvBatch& batch, bool sync) {
  {
    std::lock_guard lock(mu_);
    if (holding_) {
      size_t bytes = 0;
      for (auto& [k, v] : batch) bytes += k.size() + (v ? v->size() : 0);
      if (held_bytes_ + bytes > kMaxHeldBytes)
        return KvStatus{false, false, "too many writes held for one batch: sent again later"};
      held_bytes_ += bytes;
      for (auto& [k, v] : batch) held_[k] = v;
      sync_on_release_ |= sync;
      return {};
    }
  }
  return store_.write(batch, sync);
}

}  // namespace wormhole
