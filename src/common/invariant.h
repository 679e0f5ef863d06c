// Invariants of the state, checked in every build (TigerBeetle style: an invariant that is
// never checked is a guess). WH_INVARIANT(cond, what) evaluates `cond` always; when it is
// false:
//   * fatal mode (debug builds, unit tests, the simulation, mount tests through
//     WORMHOLE_INVARIANTS=fatal): logs and aborts, so the bug is caught where it happens;
//   * otherwise (a production daemon): logs an error and returns false, and the caller
//     repairs what it can (e.g. clamps a counter) so that the pod keeps serving.
// Thread-safe.
#pragma once
#include <string>

namespace wormhole {

// Whether a failed invariant aborts. Defaults to true in builds without NDEBUG and when
// the environment has WORMHOLE_INVARIANTS=fatal, false otherwise.
bool invariants_fatal();
void set_invariants_fatal(bool fatal);

// Reports a failed invariant (see above). Returns false when it does not abort.
bool invariant_failed(const char* expr, const char* file, int line, const std::string& what);

}  // namespace wormhole

// True when `cond` holds; otherwise reports (aborting in fatal mode) and is false.
#define WH_INVARIANT(cond, what) \
  (static_cast<bool>(cond) ? true : ::wormhole::invariant_failed(#cond, __FILE__, __LINE__, (what)))
