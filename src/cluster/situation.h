// The network's situation and what this pod's file operations do about it (DESIGN.md §6,
// issue 8 §4-5). Pure logic: the inputs are the repair survey's counts and this pod's
// membership view; the network layer computes them, the FUSE layer obeys the result
// through a WriteGate.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace wormhole {

enum class Situation {
  kFavorable,  // nothing missing, and enough live storage pods to restore every redundancy
  kMitigated,  // nothing missing, but too few live storage pods (or room) to restore it
  kGrave,      // some versions have no live copy
};

struct SituationInputs {
  uint64_t unavailable = 0;       // versions with no live copy
  uint64_t under_replicated = 0;  // versions with fewer live copies than wanted
  uint64_t unplaceable = 0;       // copies missing that no alive pod can take
  size_t alive_storage_pods = 0;  // this pod included when it stores data
  size_t wanted = 0;              // copies per version
};

Situation classify(const SituationInputs& in);
const char* situation_name(Situation s);
// What makes it so, for people ("2 versions have no live copy", ...).
std::string situation_reason(Situation s, const SituationInputs& in);

// What file operations do now.
enum class GateMode {
  kOpen,      // everything as usual
  kThrottle,  // writes paced at reactions.throttle_rate
  kReadOnly,  // changes fail with EROFS, reads go on
  kFreeze,    // changes wait for the network (bounded by disconnect_timeout), then EIO
  kStop,      // changes fail with EIO, reads of data held here go on
};
const char* gate_mode_name(GateMode m);

// The network's reaction to the situation (continue and lower-redundancy leave operations
// open: placement already takes the copies live pods allow, and repair raises them back);
// a pod cut off from every other pod also applies its own `disconnect` strategy (continue,
// read-only, freeze), and the stricter of the two wins.
GateMode gate_mode(Situation s, const Reactions& reactions, bool disconnected, const std::string& disconnect);

// Whether a pod is cut off: it has peers, and every one it still waits for has been silent
// longer than `down_after_ms` (silence counted from `watching_since_ms` at most, this pod's
// start). `last_heard_ms`: one entry per peer not forgotten (0: never heard).
bool cut_off(int64_t now_ms, const std::vector<int64_t>& last_heard_ms, int64_t watching_since_ms,
             int64_t down_after_ms);

}  // namespace wormhole
