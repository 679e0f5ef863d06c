// WriteGate: whether file operations on this pod may change anything now. The network
// layer sets its mode from the situation and this pod's connection (cluster/situation.h);
// the FUSE layer asks it before every change. Thread-safe.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>

#include "cluster/situation.h"

namespace wormhole {

class WriteGate {
 public:
  // `throttle_bytes_per_s`: the pace of writes in throttle mode; `freeze_timeout_ms`: how
  // long a change waits in freeze mode before it fails with EIO.
  WriteGate(uint64_t throttle_bytes_per_s, int64_t freeze_timeout_ms);

  // Sets the mode and why (for the log line of a refused change). Wakes frozen changes.
  void set(GateMode mode, std::string reason);
  GateMode mode() const;
  std::string reason() const;

  // Before a change (create, delete, rename, attributes, open for writing...): 0, or the
  // errno it must fail with (EROFS read-only; EIO stop, or a freeze that outlasted its
  // timeout). In freeze mode, waits for another mode first (no lock of the caller held).
  int admit_change();
  // Before a write of `bytes`: as admit_change, and in throttle mode sleeps as the pace
  // asks (a token bucket of one second's worth).
  int admit_write(uint64_t bytes);

 private:
  const uint64_t throttle_bytes_per_s_;
  const int64_t freeze_timeout_ms_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  GateMode mode_ = GateMode::kOpen;  // guarded by mu_
  std::string reason_;               // guarded by mu_
  int64_t throttle_next_ms_ = 0;     // guarded by mu_: when the next throttled byte may go
  uint64_t refused_ = 0;             // guarded by mu_: changes refused since the mode was set (log bound)
};

}  // namespace wormhole
