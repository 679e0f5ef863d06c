// Daemon: one pod. Wires storage (lock, identity, RocksDB, chunks), the namespace, the
// virtual file system, the control socket and the background timers together, and serves
// the FUSE mount on the calling thread until SIGINT/SIGTERM or unmount.
#pragma once
#include <string>

#include "config/config.h"

namespace wormhole {

// Runs the pod `pod` of `config`. Returns the process exit code.
// `join_token`: presented when this pod asks the network CA for its certificate (empty:
// network.token).
int run_daemon(const Config& config, const PodConfig& pod, const std::string& join_token = "");

// Path of the control socket of a pod (in its storage directory).
std::string control_socket_path(const PodConfig& pod);

}  // namespace wormhole
