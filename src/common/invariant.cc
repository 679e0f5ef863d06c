#include "common/invariant.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace wormhole {
namespace {

bool default_fatal() {
#ifndef NDEBUG
  return true;
#else
  const char* env = std::getenv("WORMHOLE_INVARIANTS");
  return env && std::strcmp(env, "fatal") == 0;
#endif
}

std::atomic<bool>& fatal_flag() {
  static std::atomic<bool> flag{default_fatal()};
  return flag;
}

}  // namespace

bool invariants_fatal() { return fatal_flag().load(std::memory_order_relaxed); }

void set_invariants_fatal(bool fatal) { fatal_flag().store(fatal, std::memory_order_relaxed); }

bool invariant_failed(const char* expr, const char* file, int line, const std::string& what) {
  if (invariants_fatal()) {
    // Straight to stderr: whatever the log's sinks, the reason must come out before abort.
    std::fprintf(stderr, "invariant failed at %s:%d: %s (%s)\n", file, line, expr, what.c_str());
    std::fflush(stderr);
    std::abort();
  }
  spdlog::critical("invariant failed at {}:{}: {} ({})", file, line, expr, what);
  return false;
}

}  // namespace wormhole
