// Global ids and hybrid-logical-clock stamps: the two value types every module shares.
// Plain values, thread-compatible.
#pragma once
#include <compare>
#include <cstdint>
#include <string>

namespace wormhole {

// Globally unique id of an inode, entry or version: (creating pod, that pod's counter).
// Never a bare local counter, so ids minted on different pods never collide.
struct Gid {
  uint64_t pod = 0;
  uint64_t seq = 0;
  auto operator<=>(const Gid&) const = default;
  bool empty() const { return pod == 0 && seq == 0; }
  std::string str() const;  // "pod:seq" in hex, for logs
  // Parses str()'s form; false on anything else.
  static bool parse(std::string_view text, Gid* out);
};

// Well-known ids (pod 0 is reserved for them).
inline constexpr Gid kRootId{0, 1};   // the root directory (entry and inode)
inline constexpr Gid kTrashId{0, 2};  // parent of deleted entries; never visible
// "lost+found" at the root: a view of removed directories in which something still lives
// (created there concurrently with the rmdir on another pod). Local to each pod, never the
// subject of an op.
inline constexpr Gid kLostFoundId{0, 3};

// Hybrid logical clock stamp. Totally ordered by (wall_ms, counter, pod).
struct Hlc {
  uint64_t wall_ms = 0;
  uint32_t counter = 0;
  uint64_t pod = 0;
  auto operator<=>(const Hlc&) const = default;
  bool empty() const { return wall_ms == 0 && counter == 0 && pod == 0; }
  std::string str() const;
};

// Largest wall time (ms) a clock takes in (about the year 146 million): only a forged or
// corrupt stamp is beyond it. The clock ignores such stamps, so that moving past what it
// observed always leaves room: its wall part never overflows.
inline constexpr uint64_t kMaxHlcWallMs = uint64_t{1} << 62;

// The clock of one pod. Not thread-safe: the owner (meta) serializes calls.
// It never reads the wall clock itself: callers pass wall time, so simulations stay
// deterministic.
class HlcClock {
 public:
  explicit HlcClock(uint64_t pod) : pod_(pod) {}
  // Returns a stamp greater than every stamp issued or observed so far. A wall time beyond
  // kMaxHlcWallMs counts as kMaxHlcWallMs. When the counter is exhausted within one wall
  // millisecond, the stamp moves to the next millisecond instead of wrapping to 0.
  Hlc tick(uint64_t wall_ms);
  // Records a stamp received from elsewhere so later ticks are greater than it. A stamp
  // with a wall time beyond kMaxHlcWallMs is ignored (see there).
  void observe(const Hlc& remote);
  const Hlc& last() const { return last_; }

 private:
  uint64_t pod_;
  Hlc last_;
};

}  // namespace wormhole
