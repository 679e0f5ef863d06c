// Membership view: what one pod concludes about another from when it last heard from it.
// Pure logic (no clock of its own: times are passed in), so the simulation and the network
// layer decide the same way. DESIGN.md §6: alive, suspect, down; and lost, a pod down for
// `failure.repair_delay`, whose copies are re-created elsewhere (repair).
#pragma once
#include <cstdint>

namespace wormhole {

// Thresholds from the network file's [network.failure] table, in milliseconds of silence.
struct FailureTimes {
  int64_t suspect_after_ms = 3000;
  int64_t down_after_ms = 10000;
  int64_t lost_after_ms = 600000;  // failure.repair_delay
};

enum class PodState { kAlive, kSuspect, kDown, kLost, kForgotten };

// The state of a pod last heard from at `last_heard_ms` (0: never), seen by a pod that has
// been watching since `watching_since_ms` (its start: a pod cannot know how long another
// was silent before it started, so silence counts from then at most).
PodState pod_state(int64_t now_ms, int64_t last_heard_ms, int64_t watching_since_ms, bool forgotten,
                   const FailureTimes& times);

// "alive", "suspect", "down", "lost", "forgotten".
const char* state_name(PodState state);

// Whether a pod in this state still counts as holding its copies: a pod that is only down
// may come back with them (a restart costs a catch-up, not a repair).
inline bool counts_as_copy(PodState s) { return s != PodState::kLost && s != PodState::kForgotten; }

}  // namespace wormhole
