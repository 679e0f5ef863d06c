// Repair planning: which pods must take a new copy of a version whose holders include lost
// pods, so that it has `wanted` copies on pods that count again (DESIGN.md §6, issue 8).
// Pure logic: every pod runs it on the same replicated holder lists with its own
// membership view, and acts only on its own part of the answer (it fetches the copy it
// must hold, then claims it with an op): no coordinator, no message to agree on.
// Two pods whose views differ for a moment may both take a copy (a surplus, harmless)
// or neither (the next pass, once views agree).
#pragma once
#include <cstdint>
#include <vector>

#include "cluster/membership.h"
#include "common/ids.h"

namespace wormhole {

// One pod as this pod sees it.
struct PodView {
  uint64_t id = 0;
  bool storage = true;  // client pods never hold copies
  PodState state = PodState::kAlive;
  bool has_room = true;  // room for the version's bytes
};

struct RepairPlan {
  size_t copies = 0;   // holders that count (not lost, not forgotten)
  size_t missing = 0;  // wanted - copies, if positive
  // New holders, best first: alive storage pods that do not hold it, in the placement
  // order of the version's file (rendezvous hashing), as many as are missing (fewer when
  // too few pods are alive).
  std::vector<uint64_t> new_holders;
};

// `holders`: the version's holders (its writer's placement and the copies claimed since);
// `pods`: every member but this pod, and this pod itself, as seen here; `key`: what the
// placement hashes (the file's inode id, so a file's versions stay together).
RepairPlan plan_repair(Gid key, const std::vector<uint64_t>& holders, const std::vector<PodView>& pods,
                       size_t wanted);

// The placement hash of rendezvous hashing: the pods with the highest hash for a key hold
// it. The same on every pod.
uint64_t rendezvous_hash(Gid key, uint64_t pod);


}  // namespace wormhole
