// PeerNode: this pod's part of the network. Serves the Peer gRPC service (proto/wormhole.proto),
// keeps a channel to every other pod of the configuration, and runs metadata replication
// (Replicator) over them: pushes new local ops every 50 ms, sends each peer a sync request
// (anti-entropy, doubling as heartbeat) every second, applies what arrives and tells the
// kernel to forget what changed. Serves and fetches whole chunks for reads of data this pod
// lacks. Membership is the [[pod]] list of the configuration; pod ids are learnt from the
// pods themselves. Thread-safe.
#pragma once
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "chunks/chunk_store.h"
#include "config/config.h"
#include "fs/kernel_cache.h"
#include "meta/namespace.h"
#include "replication/replicator.h"

namespace grpc {
class Server;
}

namespace wormhole {

inline constexpr uint32_t kProtocolVersion = 1;

class PeerNode {
 public:
  PeerNode(const Config& config, const PodConfig& self, uint64_t pod_id, Namespace& ns, ChunkStore& chunks,
           KernelCache& kernel);
  ~PeerNode();  // stops the server and the replication thread

  // Listens on the pod's address and starts replicating. False + *error on failure.
  bool start(std::string* error);
  // Fetches chunk `sha256` from a peer that has it, verifies and stores it. 0 or errno.
  int fetch_chunk(const std::string& sha256);
  // Peers with their state (alive / suspect / down), for `wormhole status`.
  nlohmann::json status();
  // Name and state of pod `id` ("self" for this pod), for `wormhole where`.
  nlohmann::json describe(uint64_t id);
  // Holders for a new version: this pod first (if it stores data), then redundancy - 1
  // other reachable storage pods by rendezvous hashing on the version id.
  std::vector<uint64_t> choose_holders(Gid version);

  struct Peer;  // one other pod: its channel and what is known of it (defined in the .cc)

 private:
  class Service;
  void loop();
  // Sends `message` to `peer`; handles the replies. False if the peer could not be reached.
  bool exchange(Peer& peer, const pb::PeerMessage& message);
  // Validates an incoming request's identity; returns "" or the reason to refuse.
  std::string check_sender(uint32_t version, const std::string& network, const std::string& name, uint64_t id);
  void forget_changed();
  pb::PodSpace my_space();
  // Fetches the missing chunks of a few versions this pod must hold (bounded per call).
  void fetch_held_versions();
  struct HeldVersion {
    Gid version;
    int64_t next_try_ms = 0;
  };

  const Config& config_;
  const PodConfig& self_;
  const uint64_t pod_id_;
  Namespace& ns_;
  ChunkStore& chunks_;
  KernelCache& kernel_;
  std::mutex mu_;  // guards replicator_ and the peers' learnt ids
  Replicator replicator_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::deque<HeldVersion> to_hold_;  // versions whose chunks this pod must fetch (guarded by mu_)
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace wormhole
