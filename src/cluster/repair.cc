#include "cluster/repair.h"

#include <algorithm>
#include <cstddef>

#include "common/invariant.h"

namespace wormhole {

uint64_t rendezvous_hash(Gid key, uint64_t pod) {
  uint64_t x = key.pod * 0x9e3779b97f4a7c15ULL ^ key.seq ^ (pod * 0xc2b2ae3d27d4eb4fULL);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

RepairPlan plan_repair(Gid key, const std::vector<uint64_t>& holders, const std::vector<PodView>& pods,
                       size_t wanted, uint64_t bytes) {
  RepairPlan plan;
  auto view_of = [&](uint64_t id) -> const PodView* {
    for (const PodView& p : pods)
      if (p.id == id) return &p;
    return nullptr;
  };
  std::vector<uint64_t> distinct;  // a holder named twice is one copy
  for (uint64_t h : holders)
    if (std::find(distinct.begin(), distinct.end(), h) == distinct.end()) distinct.push_back(h);
  for (uint64_t h : distinct) {
    const PodView* v = view_of(h);
    // A holder this pod does not know (not a member) or a client does not count.
    if (!v || !v->storage || !counts_as_copy(v->state)) continue;
    plan.live_copies += v->state == PodState::kAlive || v->state == PodState::kSuspect;
    plan.copies += !v->draining;
  }
  if (plan.copies >= wanted) return plan;
  plan.missing = wanted - plan.copies;
  std::vector<std::pair<uint64_t, uint64_t>> ranked;  // (hash, pod)
  for (const PodView& p : pods) {
    if (!p.storage || p.draining || p.state != PodState::kAlive || p.free_bytes < bytes || p.id == 0) continue;
    if (std::find(distinct.begin(), distinct.end(), p.id) != distinct.end()) continue;
    ranked.emplace_back(rendezvous_hash(key, p.id), p.id);
  }
  std::sort(ranked.begin(), ranked.end(), std::greater<>());
  for (size_t i = 0; i < ranked.size() && plan.new_holders.size() < plan.missing; ++i)
    plan.new_holders.push_back(ranked[i].second);
  return plan;
}

BalancePlan plan_balance(uint64_t self, Gid version, Gid key, const std::vector<uint64_t>& holders,
                         const std::vector<PodView>& pods, size_t wanted, uint64_t bytes) {
  BalancePlan plan;
  if (wanted == 0) return plan;
  const PodView* me = nullptr;
  for (const PodView& p : pods)
    if (p.id == self) me = &p;
  // (writer first, hash) as one key: the writer ranks above every hash.
  auto rank = [&](uint64_t pod) -> std::pair<bool, uint64_t> { return {pod == version.pod, rendezvous_hash(key, pod)}; };
  std::vector<std::pair<std::pair<bool, uint64_t>, const PodView*>> counted;
  bool self_holds = false;
  for (const PodView& p : pods) {
    if (std::find(holders.begin(), holders.end(), p.id) == holders.end()) continue;
    self_holds |= p.id == self;
    if (p.id != 0 && p.storage && counts_as_copy(p.state) && !p.draining) counted.emplace_back(rank(p.id), &p);
  }
  plan.copies = counted.size();
  if (counted.size() < wanted || !me) return plan;  // repair's business
  std::sort(counted.begin(), counted.end(), [](auto& a, auto& b) { return a.first > b.first; });
  if (!self_holds) {
    if (!me->storage || me->draining || me->state != PodState::kAlive || me->free_bytes < bytes) return plan;
    size_t above = 0;
    for (auto& [r, p] : counted) above += r > rank(self);
    plan.fetch = above < wanted;
    return plan;
  }
  for (size_t i = 0; i < wanted; ++i) {
    if (counted[i].second->id == self) return plan;  // among the first: a keeper
    if (counted[i].second->state != PodState::kAlive) return plan;  // wait until the keepers are sure
    plan.keepers.push_back(counted[i].second->id);
  }
  // Self counts (it holds, and is not draining) or it would not be past the keepers.
  plan.release = std::any_of(counted.begin() + static_cast<std::ptrdiff_t>(wanted), counted.end(),
                             [&](auto& c) { return c.second->id == self; });
  if (!plan.release) plan.keepers.clear();
  return plan;
}

RepairSurvey::RepairSurvey(uint64_t self, std::vector<PodView> pods, size_t wanted, size_t max_tasks)
    : self_(self), pods_(std::move(pods)), wanted_(wanted), max_tasks_(max_tasks) {}

namespace {
// Heap order: the least endangered task on top, so that it is the one dropped at the bound.
bool less_endangered_first(size_t copies_a, size_t live_a, size_t copies_b, size_t live_b) {
  return copies_a != copies_b ? copies_a < copies_b : live_a < live_b;
}
}  // namespace

void RepairSurvey::add(Gid version, Gid key, const std::vector<uint64_t>& holders, uint64_t bytes, bool self_has) {
  ++versions_;
  if (bytes == 0) return;  // inline content travels with the op: every pod has it
  bytes_total_ += bytes;
  const RepairPlan plan = plan_repair(key, holders, pods_, wanted_, bytes);
  under_replicated_ += plan.live_copies < wanted_;
  unavailable_ += plan.live_copies == 0;
  if (plan.missing == 0) {
    const BalancePlan balance = plan_balance(self_, version, key, holders, pods_, wanted_, bytes);
    surplus_ += balance.copies > wanted_;
    if (balance.fetch && rebalance_.size() < max_tasks_) rebalance_.push_back(RepairTask{version, balance.copies, bytes});
    if (balance.release && releases_.size() < max_tasks_) releases_.push_back(ReleaseTask{version, balance.keepers});
    return;
  }
  held_short_ += self_has;
  copies_missing_ += plan.missing;
  bytes_missing_ += plan.missing * bytes;
  copies_unplaceable_ += plan.missing - plan.new_holders.size();
  if (std::find(plan.new_holders.begin(), plan.new_holders.end(), self_) == plan.new_holders.end()) return;
  auto cmp = [](const Ranked& a, const Ranked& b) { return less_endangered_first(a.copies, a.live, b.copies, b.live); };
  Ranked r{plan.copies, plan.live_copies, RepairTask{version, plan.copies, bytes}};
  if (tasks_.size() < max_tasks_) {
    tasks_.push_back(r);
    std::push_heap(tasks_.begin(), tasks_.end(), cmp);
    return;
  }
  ++tasks_dropped_;
  if (tasks_.empty() || !cmp(r, tasks_.front())) return;  // no more endangered than the kept ones
  std::pop_heap(tasks_.begin(), tasks_.end(), cmp);
  tasks_.back() = r;
  std::push_heap(tasks_.begin(), tasks_.end(), cmp);
}

std::vector<RepairTask> RepairSurvey::take_rebalance_tasks() {
  std::vector<RepairTask> out;
  if (under_replicated_ > 0 || copies_missing_ > 0) {
    rebalance_.clear();
    return out;
  }
  const uint64_t max_bytes = bytes_total_ / 10;
  uint64_t bytes = 0;
  for (RepairTask& t : rebalance_) {  // bounded: max_tasks_
    if (!out.empty() && bytes + t.bytes > max_bytes) break;
    bytes += t.bytes;
    out.push_back(t);
  }
  rebalance_.clear();
  return out;
}

std::vector<ReleaseTask> RepairSurvey::take_releases() {
  std::vector<ReleaseTask> out;
  out.swap(releases_);
  WH_INVARIANT(out.size() <= max_tasks_, "release tasks beyond their bound");
  return out;
}

std::vector<RepairTask> RepairSurvey::take_tasks() {
  std::sort(tasks_.begin(), tasks_.end(),
            [](const Ranked& a, const Ranked& b) { return less_endangered_first(a.copies, a.live, b.copies, b.live); });
  std::vector<RepairTask> out;
  out.reserve(tasks_.size());
  for (const Ranked& r : tasks_) out.push_back(r.task);
  tasks_.clear();
  WH_INVARIANT(out.size() <= max_tasks_, "repair tasks beyond their bound");
  return out;
}

}  // namespace wormhole
