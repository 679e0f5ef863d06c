#include "cluster/membership.h"

#include <algorithm>

namespace wormhole {

PodState pod_state(int64_t now_ms, int64_t last_heard_ms, int64_t watching_since_ms, bool forgotten,
                   const FailureTimes& times) {
  if (forgotten) return PodState::kForgotten;
  const int64_t since = std::max(last_heard_ms, watching_since_ms);
  const int64_t silent_ms = now_ms - since;
  if (silent_ms >= times.lost_after_ms && silent_ms >= times.down_after_ms) return PodState::kLost;
  // Never heard from: down until heard (but lost only after the delay, as above).
  if (last_heard_ms == 0 || silent_ms > times.down_after_ms) return PodState::kDown;
  if (silent_ms > times.suspect_after_ms) return PodState::kSuspect;
  return PodState::kAlive;
}

const char* state_name(PodState state) {
  switch (state) {
    case PodState::kAlive: return "alive";
    case PodState::kSuspect: return "suspect";
    case PodState::kDown: return "down";
    case PodState::kLost: return "lost";
    case PodState::kForgotten: return "forgotten";
  }
  return "unknown";
}

}  // namespace wormhole
