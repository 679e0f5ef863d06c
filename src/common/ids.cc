#include "common/ids.h"

#include <algorithm>
#include <cstdio>

namespace wormhole {

std::string Gid::str() const {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%llx:%llx", static_cast<unsigned long long>(pod),
                static_cast<unsigned long long>(seq));
  return buf;
}

bool Gid::parse(std::string_view text, Gid* out) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 16 || text.size() - colon - 1 > 16 ||
      text.size() == colon + 1)
    return false;
  auto hex = [](std::string_view s, uint64_t* v) {
    *v = 0;
    for (char c : s) {
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return false;
      *v = (*v << 4) | static_cast<uint64_t>(d);
    }
    return true;
  };
  return hex(text.substr(0, colon), &out->pod) && hex(text.substr(colon + 1), &out->seq);
}

std::string Hlc::str() const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%llu.%u@%llx", static_cast<unsigned long long>(wall_ms), counter,
                static_cast<unsigned long long>(pod));
  return buf;
}

Hlc HlcClock::tick(uint64_t wall_ms) {
  wall_ms = std::min(wall_ms, kMaxHlcWallMs);
  if (wall_ms > last_.wall_ms) {
    last_.wall_ms = wall_ms;
    last_.counter = 0;
  } else if (last_.counter == UINT32_MAX) {
    // The counter would wrap to 0 and make a stamp older than the last: take the next
    // millisecond instead. Its wall part stays far from overflowing: observe() never takes
    // a wall time beyond kMaxHlcWallMs.
    last_.wall_ms++;
    last_.counter = 0;
  } else {
    // Wall clock behind or equal to the last stamp: keep its wall part, bump the counter.
    last_.counter++;
  }
  last_.pod = pod_;
  return last_;
}

void HlcClock::observe(const Hlc& remote) {
  if (remote.wall_ms > kMaxHlcWallMs) return;  // forged or corrupt: see kMaxHlcWallMs
  if (remote.wall_ms > last_.wall_ms ||
      (remote.wall_ms == last_.wall_ms && remote.counter > last_.counter)) {
    last_.wall_ms = remote.wall_ms;
    last_.counter = remote.counter;
  }
}

}  // namespace wormhole
