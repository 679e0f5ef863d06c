// FuseFs: the libfuse3 low-level adapter. Translates kernel requests into Namespace and
// Vfs calls and their results into replies; it holds no file-system state of its own.
// Runs the multithreaded session loop on the calling thread until unmount or signal.
#pragma once
#include <functional>
#include <string>

#include "fs/kernel_cache.h"
#include "vfs/vfs.h"
#include "vfs/write_gate.h"

namespace wormhole {

struct FuseOptions {
  std::string mountpoint;
  std::string storage_dir;   // for statfs and fallocate space checks
  // Every change on this pod passes through this mount, so the kernel's caches of names
  // and attributes stay true; changes from other pods will invalidate them explicitly.
  double entry_timeout_s = 300.0;
  double attr_timeout_s = 300.0;
  unsigned max_threads = 16;
  std::function<void()> on_mounted;  // called once the mount is live
  KernelCache* kernel_cache = nullptr; // attached to the session while it is mounted
  // The kernel's write-back cache batches writes, but then trusts its own file sizes and
  // times over ours: only right when no other pod changes files (a network of one pod).
  bool writeback_cache = true;
  // Asked before every change (the situation's reaction, the disconnect strategy); none:
  // always open.
  WriteGate* gate = nullptr;
};

// Mounts and serves until the file system is unmounted or SIGINT/SIGTERM arrives, then
// unmounts. Returns 0 on a clean stop, non-zero (with a log line) if mounting failed.
int run_fuse(Vfs& vfs, const FuseOptions& options);

// If `mountpoint` is a dead FUSE mount (ENOTCONN), detaches it. Returns false when a
// stale mount could not be removed.
bool clean_stale_mount(const std::string& mountpoint);

}  // namespace wormhole
