#include "cluster/situation.h"

#include <algorithm>

namespace wormhole {

Situation classify(const SituationInputs& in) {
  if (in.unavailable > 0) return Situation::kGrave;
  // Restoring every redundancy needs `wanted` live storage pods (copies go to distinct
  // pods) and a place for each missing copy.
  if (in.alive_storage_pods < in.wanted || in.unplaceable > 0) return Situation::kMitigated;
  return Situation::kFavorable;
}

const char* situation_name(Situation s) {
  switch (s) {
    case Situation::kFavorable: return "favorable";
    case Situation::kMitigated: return "mitigated";
    case Situation::kGrave: return "grave";
  }
  return "unknown";
}

std::string situation_reason(Situation s, const SituationInputs& in) {
  switch (s) {
    case Situation::kGrave:
      return std::to_string(in.unavailable) + " versions have no live copy";
    case Situation::kMitigated:
      if (in.alive_storage_pods < in.wanted)
        return std::to_string(in.alive_storage_pods) + " live storage pods for " + std::to_string(in.wanted) +
               " copies per version";
      return std::to_string(in.unplaceable) + " missing copies have no pod with room to take them";
    case Situation::kFavorable:
      return in.under_replicated == 0 ? "every version has its copies"
                                      : std::to_string(in.under_replicated) + " versions short of copies, repairable";
  }
  return "";
}

const char* gate_mode_name(GateMode m) {
  switch (m) {
    case GateMode::kOpen: return "open";
    case GateMode::kThrottle: return "throttle";
    case GateMode::kReadOnly: return "read-only";
    case GateMode::kFreeze: return "freeze";
    case GateMode::kStop: return "stop";
  }
  return "unknown";
}

namespace {
// How much a mode restricts: when both a reaction and the disconnect strategy apply, the
// stricter one wins.
int strictness(GateMode m) {
  switch (m) {
    case GateMode::kOpen: return 0;
    case GateMode::kThrottle: return 1;
    case GateMode::kFreeze: return 2;
    case GateMode::kReadOnly: return 3;
    case GateMode::kStop: return 4;
  }
  return 0;
}
}  // namespace

GateMode gate_mode(Situation s, const Reactions& reactions, bool disconnected, const std::string& disconnect) {
  const std::string& r = s == Situation::kGrave       ? reactions.grave
                         : s == Situation::kMitigated ? reactions.mitigated
                                                      : reactions.favorable;
  GateMode mode = GateMode::kOpen;  // continue, lower-redundancy
  if (r == "throttle") mode = GateMode::kThrottle;
  else if (r == "read-only") mode = GateMode::kReadOnly;
  else if (r == "stop") mode = GateMode::kStop;
  if (!disconnected) return mode;
  GateMode own = GateMode::kOpen;  // continue: changes reconcile by the conflict strategy later
  if (disconnect == "read-only") own = GateMode::kReadOnly;
  else if (disconnect == "freeze") own = GateMode::kFreeze;
  return strictness(own) > strictness(mode) ? own : mode;
}

bool cut_off(int64_t now_ms, const std::vector<int64_t>& last_heard_ms, int64_t watching_since_ms,
             int64_t down_after_ms) {
  if (last_heard_ms.empty()) return false;  // alone by design, not cut off
  for (int64_t heard : last_heard_ms)
    if (now_ms - std::max(heard, watching_since_ms) <= down_after_ms) return false;
  return true;
}

}  // namespace wormhole
