// Internals shared by the files of PeerNode (peer_node.cc: replication and status;
// peer_data.cc: placement and chunk transfer). Not part of PeerNode's interface.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "net/peer_node.h"
#include "proto/wormhole.grpc.pb.h"

namespace wormhole {

// Pieces in which chunk data travels (a chunk may be up to 64 MiB).
inline constexpr size_t kPieceBytes = 1 << 20;
// Largest chunk (64 MiB) plus framing.
inline constexpr int kMaxMessageBytes = (64 << 20) + (1 << 20);

inline int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct PeerNode::Peer {
  std::string name, address;
  bool storage = true;  // role = "storage": may hold copies
  std::unique_ptr<pb::Peer::Stub> stub;
  // Learnt from the peer; written under PeerNode::mu_, read without it (the placement runs
  // under a file's lock, which must never wait for mu_).
  std::atomic<uint64_t> id{0};
  std::atomic<int64_t> last_ok_ms{0};
  std::atomic<bool> reported_down{false};
  // Chunk and block fetches from this pod in flight now: a fetch asks the least busy
  // holder first, so that a file's chunks come from every holder at once.
  std::atomic<int> fetches_in_flight{0};
  std::atomic<bool> forgotten{false};  // `wormhole forget`: never talked to again
  std::atomic<bool> draining{false};   // `wormhole drain`: takes no new copies, leaves when done
  std::atomic<uint64_t> used_bytes{0}, free_bytes{0};  // as last reported by the peer
};

}  // namespace wormhole
