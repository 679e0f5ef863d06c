#include "cluster/repair.h"

#include <algorithm>

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
                       size_t wanted) {
  RepairPlan plan;
  auto view_of = [&](uint64_t id) -> const PodView* {
    for (const PodView& p : pods)
      if (p.id == id) return &p;
    return nullptr;
  };
  std::vector<uint64_t> distinct;
  for (uint64_t h : holders)
    if (std::find(distinct.begin(), distinct.end(), h) == distinct.end()) distinct.push_back(h);
  for (uint64_t h : distinct) {
    const PodView* v = view_of(h);
    // A holder this pod does not know (not a member any more) does not count.
    if (v && counts_as_copy(v->state)) ++plan.copies;
  }
  if (plan.copies >= wanted) return plan;
  plan.missing = wanted - plan.copies;
  std::vector<std::pair<uint64_t, uint64_t>> ranked;  // (hash, pod)
  for (const PodView& p : pods) {
    if (!p.storage || p.state != PodState::kAlive || !p.has_room || p.id == 0) continue;
    if (std::find(distinct.begin(), distinct.end(), p.id) != distinct.end()) continue;
    ranked.emplace_back(rendezvous_hash(key, p.id), p.id);
  }
  std::sort(ranked.begin(), ranked.end(), std::greater<>());
  for (size_t i = 0; i < ranked.size() && plan.new_holders.size() < plan.missing; ++i)
    plan.new_holders.push_back(ranked[i].second);
  return plan;
}

}  // namespace wormhole
