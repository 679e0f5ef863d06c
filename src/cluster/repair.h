// Repair planning: which pods must take a new copy of a version whose holders are fewer
// than the redundancy on pods that count (DESIGN.md §6, issue 8): holders on lost pods, or
// a version written while too few storage pods were reachable.
// Pure logic: every pod runs it on the same replicated holder lists with its own
// membership view, and acts only on its own part of the answer (it fetches the copy it
// must hold, then claims it with an op): no coordinator, no message to agree on.
// Two pods whose views differ for a moment may both take a copy (a surplus, harmless)
// or neither (the next survey, once views agree).
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
  uint64_t free_bytes = UINT64_MAX;  // room for new copies
  // `wormhole drain`: its copies are still there (live for readers) but do not count
  // towards the redundancy, and it takes no new ones.
  bool draining = false;
};

struct RepairPlan {
  size_t copies = 0;       // holders that count (not lost, not forgotten, not draining, still members)
  size_t live_copies = 0;  // holders alive or suspect: what readers can reach now
  size_t missing = 0;      // wanted - copies, if positive
  // New holders, best first: alive storage pods with room that do not hold it, in the
  // rendezvous order of `key`, as many as are missing (fewer when too few pods are alive).
  std::vector<uint64_t> new_holders;
};

// `holders`: the version's holders (its writer's placement and the copies claimed since);
// `pods`: every member as seen here, this pod included; `key`: what placement hashes (the
// file's inode id, so a file's versions stay together); `bytes`: the version's size (a pod
// needs that much room to take it).
RepairPlan plan_repair(Gid key, const std::vector<uint64_t>& holders, const std::vector<PodView>& pods,
                       size_t wanted, uint64_t bytes);

// Balance (issue 8: no surplus after a return, a joining pod's share): once a version has
// its redundancy, which pod takes a copy and which releases one. Holders rank: the
// version's writer first (it keeps its own copy), then by rendezvous hash of (key, pod),
// highest first: the order PeerNode::choose_holders places new versions in. The version
// belongs on the first `wanted` eligible pods of that order.
struct BalancePlan {
  // This pod takes a copy: it is not a holder, has room, takes copies (storage, not
  // draining), and fewer than `wanted` counted holders rank above it. Once it claims the
  // copy, the lowest-ranked holder's copy becomes a surplus.
  bool fetch = false;
  // This pod's copy is a surplus: the first `wanted` counted holders all rank above it and
  // are alive. It may release it once each of `keepers` confirms it stores the version.
  // The first `wanted` holders never release, on any pod's view: a version never goes
  // below its redundancy through releases.
  bool release = false;
  std::vector<uint64_t> keepers;
  size_t copies = 0;  // counted copies
};

// `version`: the version's id (its pod is the writer); the rest as plan_repair.
BalancePlan plan_balance(uint64_t self, Gid version, Gid key, const std::vector<uint64_t>& holders,
                         const std::vector<PodView>& pods, size_t wanted, uint64_t bytes);

// The placement hash of rendezvous hashing: the pods with the highest hash for a key hold
// it. The same on every pod.
uint64_t rendezvous_hash(Gid key, uint64_t pod);

// A version this pod must copy: it is one of the version's new holders (repair), or a
// pod the version belongs on (rebalance).
struct RepairTask {
  Gid version;
  size_t copies = 0;  // counted copies before this one (priority: fewest first)
  uint64_t bytes = 0;
};

// A surplus copy this pod may release once every keeper confirms it stores the version.
struct ReleaseTask {
  Gid version;
  std::vector<uint64_t> keepers;
};

// One pass over every current version: counts what is endangered (for `wormhole status`)
// and keeps the versions this pod must copy, the most endangered first (fewest counted
// copies, then fewest live ones), at most `max_tasks` of them (the next survey finds the
// rest). Pure; not thread-safe (one survey per thread).
class RepairSurvey {
 public:
  RepairSurvey(uint64_t self, std::vector<PodView> pods, size_t wanted, size_t max_tasks);

  // Counts version `version` of file `key` (`bytes` of stored content; 0: inline only,
  // nothing to copy) held by `holders`, and keeps it as a task when this pod must copy it.
  // `self_has`: this pod stores every chunk of it (what a drain waits for).
  void add(Gid version, Gid key, const std::vector<uint64_t>& holders, uint64_t bytes, bool self_has = false);

  // The tasks, most endangered first. Leaves the survey without tasks.
  std::vector<RepairTask> take_tasks();
  // The copies this pod takes to balance the network: none while any version lacks live
  // copies (repair first, and a rebalance never uses the bandwidth a repair needs), and at
  // most a tenth of the surveyed bytes (at least one version) per survey, so that a pod
  // that joins a large network takes its share in bounded steps.
  std::vector<RepairTask> take_rebalance_tasks();
  // Surplus copies of this pod, at most `max_tasks`. Leaves the survey without them.
  std::vector<ReleaseTask> take_releases();

  uint64_t versions() const { return versions_; }
  // Fewer live copies than wanted (a down holder's versions count here before they are
  // repaired: readers reach fewer copies).
  uint64_t under_replicated() const { return under_replicated_; }
  uint64_t unavailable() const { return unavailable_; }  // no live copy at all
  // Copies missing on pods that count (what repair re-creates) and their bytes.
  uint64_t copies_missing() const { return copies_missing_; }
  uint64_t bytes_missing() const { return bytes_missing_; }
  // Missing copies no pod can take now (too few alive storage pods with room).
  uint64_t copies_unplaceable() const { return copies_unplaceable_; }
  uint64_t tasks_dropped() const { return tasks_dropped_; }  // beyond max_tasks
  // Versions whose chunks this pod stores that lack copies elsewhere: a draining pod may
  // leave once none is left (a version it does not store, even if named its holder, is
  // not its to wait for: leaving takes nothing from it).
  uint64_t held_short() const { return held_short_; }
  // Versions with more counted copies than wanted (a pod back after its repair, a
  // rebalance between its copy and the release).
  uint64_t surplus() const { return surplus_; }
  uint64_t bytes_total() const { return bytes_total_; }  // stored bytes of the versions surveyed

 private:
  struct Ranked {
    size_t copies, live;
    RepairTask task;
  };
  const uint64_t self_;
  const std::vector<PodView> pods_;
  const size_t wanted_, max_tasks_;
  std::vector<Ranked> tasks_;  // a heap on (copies, live) while adding: the worst dropped first
  std::vector<RepairTask> rebalance_;  // at most max_tasks_, in version order
  std::vector<ReleaseTask> releases_;  // at most max_tasks_, in version order
  uint64_t surplus_ = 0, bytes_total_ = 0;
  uint64_t versions_ = 0, under_replicated_ = 0, unavailable_ = 0, copies_missing_ = 0, bytes_missing_ = 0,
           copies_unplaceable_ = 0, tasks_dropped_ = 0, held_short_ = 0;
};

}  // namespace wormhole
