#include "vfs/write_gate.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

namespace wormhole {
namespace {

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Refused changes logged per mode change, at most (the rest would flood the log).
constexpr uint64_t kMaxLoggedRefusals = 3;

}  // namespace

WriteGate::WriteGate(uint64_t throttle_bytes_per_s, int64_t freeze_timeout_ms)
    : throttle_bytes_per_s_(std::max<uint64_t>(throttle_bytes_per_s, 1)), freeze_timeout_ms_(freeze_timeout_ms) {}

void WriteGate::set(GateMode mode, std::string reason) {
  {
    std::lock_guard lock(mu_);
    if (mode == mode_ && reason == reason_) return;
    if (mode != mode_) refused_ = 0;
    mode_ = mode;
    reason_ = std::move(reason);
  }
  changed_.notify_all();
}

GateMode WriteGate::mode() const {
  std::lock_guard lock(mu_);
  return mode_;
}

std::string WriteGate::reason() const {
  std::lock_guard lock(mu_);
  return reason_;
}

int WriteGate::admit_change() {
  std::unique_lock lock(mu_);
  if (mode_ == GateMode::kFreeze) {
    // Bounded: the timeout. Other FUSE threads (reads) go on meanwhile.
    changed_.wait_for(lock, std::chrono::milliseconds(freeze_timeout_ms_), [&] { return mode_ != GateMode::kFreeze; });
  }
  int err = 0;
  if (mode_ == GateMode::kReadOnly) err = EROFS;
  else if (mode_ == GateMode::kStop || mode_ == GateMode::kFreeze) err = EIO;
  if (err != 0 && refused_++ < kMaxLoggedRefusals)
    spdlog::warn("a change was refused ({}): {}{}", gate_mode_name(mode_), reason_,
                 refused_ == kMaxLoggedRefusals ? " (further refusals not logged until the mode changes)" : "");
  return err;
}

int WriteGate::admit_write(uint64_t bytes) {
  if (int err = admit_change()) return err;
  int64_t wait_ms = 0;
  {
    std::lock_guard lock(mu_);
    if (mode_ != GateMode::kThrottle) return 0;
    const int64_t now = steady_ms();
    throttle_next_ms_ = std::max(throttle_next_ms_, now - 1000) + static_cast<int64_t>(bytes * 1000 / throttle_bytes_per_s_);
    wait_ms = throttle_next_ms_ - now;
  }
  // No lock held while paced: the caller holds none either (a FUSE write handler).
  if (wait_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  return 0;
}

}  // namespace wormhole
