// PeerNode: this pod's part of the network. Serves the Peer gRPC service (proto/wormhole.proto),
// keeps a channel to every other pod, and runs metadata replication (Replicator) over them:
// pushes new local ops every 50 ms (back-to-back while a peer is a full batch or more
// behind), sends each peer a sync request (anti-entropy, doubling as heartbeat) every second
// and again at once when its answer was a full batch, applies what arrives (at most a few
// batches queued: a faster sender is told to come back) and tells the kernel to forget what
// changed.
// Places new versions and copies their chunks to the holders along a chain (writer ->
// holder -> holder); holders that missed a copy pull it. Fetches chunks this pod lacks.
// Membership: the [[pod]] list of the configuration plus the replicated member list, to
// which a pod is added when it joins through any member (Join, network.join policy); a
// joining pod that lacks ops the others no longer keep starts from a snapshot.
// Thread-safe.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "chunks/block_cache.h"
#include "cluster/membership.h"
#include "cluster/repair.h"
#include "cluster/situation.h"
#include "chunks/chunk_store.h"
#include "config/config.h"
#include "fs/kernel_cache.h"
#include "meta/namespace.h"
#include "replication/replicator.h"
#include "security/certs.h"
#include "security/join_tokens.h"
#include "security/tls_files.h"
#include "vfs/content_replication.h"
#include "vfs/write_gate.h"

namespace grpc {
class Channel;
class ClientContext;
class ChannelCredentials;
class Server;
class ServerContext;
class ServerCredentials;
template <class R>
class ServerReader;
template <class W>
class ServerWriter;
class Status;
}

namespace wormhole {

// 2: deletes decided against live_entries of versions, acknowledgements, chain pushes, joins.
// 3: sparse chunk lists (CommitVersion.chunks lists stored chunks with their index).
// 4: delta commits; 5: pieces (ChunkRef.span_offset); 6: chunks named by their block table.
// 7: HoldVersion (repair copies claimed by their holder).
// 8: HoldVersion.release (surplus copies released), ConfirmHolding.
// 9: mutual TLS (network.tls), JoinRequest.csr and the CA pod, pending joins.
// 10: OpBatch.packed_ops (op batches compressed on the wire).
inline constexpr uint32_t kProtocolVersion = 10;

class PeerNode final : public ContentReplication {
 public:
  PeerNode(const Config& config, const PodConfig& self, uint64_t pod_id, Namespace& ns, ChunkStore& chunks,
           KernelCache& kernel);
  ~PeerNode() override;  // stops the server and the threads

  // Listens on the pod's address and starts replicating. A pod with `peers` in its
  // configuration joins the network through them first and, when it never synced before,
  // catches up before returning (so it mounts a complete tree). False + *error on failure.
  bool start(std::string* error);
  // Called (outside every lock of the node) with the files whose current version ops from
  // other pods changed, before the kernel is told: open files reload (Vfs). Set before start().
  void set_content_listener(std::function<void(const std::vector<Gid>&)> listener) {
    content_listener_ = std::move(listener);
  }
  // The gate this pod's file operations pass (the situation's reaction, the disconnect
  // strategy), set every sync round. Set before start().
  void set_gate(WriteGate* gate) { gate_ = gate; }
  // The join token this pod presents when it asks for its certificate (`run --token`);
  // default network.token. Set before start().
  void set_join_token(std::string token) { join_token_ = std::move(token); }
  // The situation (favorable / mitigated / grave) with what makes it so, the gate's mode,
  // whether this pod is cut off and since when. For `wormhole status`.
  nlohmann::json situation_status();
  // `wormhole forget NAME`: removes a pod that is gone for good from the member list (a
  // replicated, final op), so that the others stop waiting for it (stability, trimming).
  // Refused for this pod, an unknown or never-heard-from pod, or one that is not down.
  // Returns "" or why not.
  // With `force`, also a pod that is not down (it is cut off for good: its daemon must
  // not come back with that storage directory).
  // `auth`: the admin's signature (checked by the caller; carried in the op so that every
  // pod checks it too, see member_change_authorized).
  std::string forget(const std::string& name, bool force = false, const pb::AdminAuthorization& auth = {});
  // `wormhole drain NAME`: the pod takes no new copies, its copies are re-created on the
  // others (repair; it keeps serving them meanwhile, so no version goes below its
  // redundancy), and once every version has its copies without it, it leaves the network
  // (records itself forgotten). Refused for an unknown, forgotten or client pod, and when
  // the storage pods left would be fewer than the redundancy. Returns "" or why not.
  std::string drain(const std::string& name, const pb::AdminAuthorization& auth = {});
  // `wormhole token create|list|revoke` (request fields: action, ttl_ms, uses, id): join
  // tokens issued by this pod, which must hold the network CA. A JSON reply ({"error"} on
  // failure).
  nlohmann::json tokens(const nlohmann::json& request);
  // `wormhole pending`: join requests waiting for an admin (network.join = "approval") with
  // their key fingerprints.
  nlohmann::json pending_joins();
  // `wormhole approve|deny NAME`: decides a pending join (the caller verified the admin's
  // signature). Returns "" or why not.
  // `key_prefix` (optional, hex): the start of the key fingerprint the admin approves.
  std::string decide_join(const std::string& name, bool approve, const std::string& key_prefix = "");
  // Peers with their state (alive / suspect / down / forgotten), for `wormhole status`.
  nlohmann::json status();
  // Chunk bytes this pod sent and received since it started, by kind: pushed (sent along a
  // chain, as writer or forwarder), received by push, fetched (pulled from a peer), served
  // (answering fetches). For `wormhole status`.
  nlohmann::json transfer();
  // Repair (docs/architecture.md, "Repair"): the last survey's counts (under-replicated and
  // unavailable versions, copies and bytes missing), this pod's part of the work left, the
  // repair rate and its ETA, the pods lost. For `wormhole status`.
  nlohmann::json repair_status();
  // Name and state of pod `id` ("self" for this pod), for `wormhole where`.
  nlohmann::json describe(uint64_t id);
  // Versions this pod wrote with fewer copies than the redundancy asks for, as far as it
  // knows (docs/architecture.md, "Under-replication"): their count, at most `max_listed`
  // of them with their file and missing copies, and how many placements found fewer
  // storage pods than the redundancy. For `wormhole status`.
  nlohmann::json under_replication(size_t max_listed);
  // Copies of version `rec` (id `version`) as far as this pod knows, against the
  // redundancy: holders named in the version, minus those that had not acknowledged its op
  // when this pod wrote it. For `wormhole where`.
  nlohmann::json replication_of(Gid version, const pb::VersionRecord& rec);
  // Holders for a new version of `inode`: this pod first (if it stores data and has room),
  // then other reachable storage pods with room, by rendezvous hashing on the inode id
  // weighted by free space, up to the redundancy. Fewer pods than the redundancy is logged
  // when that condition changes (not per file) and counted.
  std::vector<uint64_t> choose_holders(Gid inode);

  // ContentReplication (see there).
  std::vector<uint64_t> place(Gid inode, Gid base_version, const std::vector<pb::ChunkRef>& chunks) override;
  // Asks the holders (alive ones first, rotated per chunk so that chunks of one file come
  // from several holders at once); a holder that is slow to answer is raced by the next.
  int fetch(const std::string& sha256, const std::vector<uint64_t>& holders) override;
  ssize_t read_range(const std::string& sha256, const std::vector<uint64_t>& holders, uint64_t offset, size_t len,
                     char* out) override;
  void prefetch(const std::vector<std::string>& sha256s, const std::vector<uint64_t>& holders) override;
  void committed(Gid version, Gid base_version, const std::vector<pb::ChunkRef>& chunks,
                 const std::vector<uint64_t>& holders) override;

  struct Peer;  // one other pod: its channel and what is known of it (net/peer.h)

 private:
  class Service;
  void loop();
  // Sends `message` to `peer`; handles the replies. False if the peer could not be reached.
  bool exchange(Peer& peer, const pb::PeerMessage& message);
  struct Outbound {
    Peer* peer;
    pb::PeerMessage message;
  };
  // Fills a request: the sender fields, `message`, this pod's space, the exchange deadline.
  void prepare_exchange(const pb::PeerMessage& message, const pb::PodSpace& space, pb::Envelope* req,
                        grpc::ClientContext* ctx);
  // Handles the answer to one exchange with `peer`: its reachability and space, and the
  // messages of the reply (validated, then given to the replicator under mu_, unless
  // `use_replies` is false). Whether the peer answered (false: unreachable, busy, or an
  // answer that is refused).
  bool handle_answer(Peer& peer, const grpc::Status& status, const pb::EnvelopeReply& reply,
                     bool use_replies = true);
  // The loop's exchanges are asynchronous (see loop()): one started, answered into
  // answered_calls_.
  struct LoopCall;
  void start_loop_call(LoopCall* call);
  // Sends every message at once and handles the replies; whether each peer answered.
  // `forget`: tell the kernel what changed now. False when the caller holds a lock the
  // kernel may wait for (a FUSE thread in close): the next round tells it.
  std::vector<bool> exchange_all(const std::vector<Outbound>& batch, bool forget = true);
  // Fills the sender fields every request carries (protocol version, network, chunk size,
  // this pod's name and id), which check_sender validates on the other side.
  template <class Request>
  void identify(Request* req) const {
    req->set_protocol_version(kProtocolVersion);
    req->set_network(config_.network.name);
    req->set_chunk_size(config_.network.chunk_size);
    req->set_from_pod_name(self_.name);
    req->set_from_pod_id(pod_id_);
  }
  // Validates an incoming request's identity: with TLS, the caller's certificate (verified
  // against the network CA by the handshake) must name the pod the request says it is
  // from, then check_sender. Returns "" or the reason to refuse.
  std::string check_caller(grpc::ServerContext* ctx, uint32_t version, const std::string& network,
                           uint64_t chunk_size, const std::string& name, uint64_t id);
  // Validates an incoming request's identity; returns "" or the reason to refuse.
  std::string check_sender(uint32_t version, const std::string& network, uint64_t chunk_size, const std::string& name,
                           uint64_t id);
  // Why a peer using chunks of `chunk_size` bytes cannot be in this network ("" if it can).
  std::string check_chunk_size(uint64_t chunk_size) const;
  void forget_changed();
  Peer* peer_by_id(uint64_t id);
  // The other pods, for iteration without a lock (see peer_slots_).
  struct PeerRange {
    const std::unique_ptr<Peer>* first;
    const std::unique_ptr<Peer>* last;
    const std::unique_ptr<Peer>* begin() const { return first; }
    const std::unique_ptr<Peer>* end() const { return last; }
    size_t size() const { return static_cast<size_t>(last - first); }
  };
  PeerRange peers() const;
  // Adds a pod (known by name) unless present; sets its id when learnt. Caller holds mu_.
  Peer* add_peer_locked(const std::string& name, const std::string& address, bool storage, uint64_t id);
  // Adds the members of the replicated list this pod does not talk to yet, and acts on their
  // draining / forgotten flags when member_change_authorized.
  void adopt_members();
  // With network.admins: whether `m`'s forgotten / draining flags carry an admin's signature
  // of that forget or drain (a drain that ended in the pod's own leave counts for the
  // forget). Without admins: always. Pure but for the configuration.
  bool member_change_authorized(const pb::Member& m, bool forgotten) const;
  std::set<uint64_t> unauthorized_logged_;  // pods whose unsigned flag was logged (adopt_members; ≤ kMaxPeers)
  // Serves Join: the join policy, then records the pod in the member list.
  grpc::Status handle_join(grpc::ServerContext* ctx, const pb::JoinRequest& req, pb::JoinReply* reply);
  // network.tls, before the server starts (net/peer_security.cc): loads this pod's
  // certificate, or makes the network CA (the first [[pod]] of the file, without peers, on
  // its first start), or asks the CA pod for one (a join with a CSR; waits while pending).
  bool prepare_tls(std::string* error);
  bool obtain_certificate(std::string* error);
  // One join attempt with a CSR at `address`; "" when the certificate was stored, else why
  // not; *retry: worth asking again (pending, redirect, unreachable).
  std::string join_with_csr(const std::string& address, const std::string& ca_cert, const std::string& csr,
                            std::string* redirect, bool* retry);
  // The network CA certificate to trust when asking `address` for a certificate: the one it
  // shows, checked against network.ca_fingerprint or the join token's (else trusted on
  // first use, logged). "" + *error when it does not match.
  std::string trusted_ca_at(const std::string& address, std::string* error);
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials() const;
  // A channel to the pod at `address` with this pod's credentials and channel settings.
  std::shared_ptr<grpc::Channel> peer_channel(const std::string& address) const;
  std::shared_ptr<grpc::ServerCredentials> server_credentials() const;
  // Serves a join that carries a CSR (this pod holds the CA): the join policy (open, token,
  // approval), then the certificate. Returns "" (reply filled) or why not.
  // `existing`: the member record of the pod's id, if any (its key must be the CSR's). Sets
  // *m's key fingerprint when it issues.
  std::string certify_join(const pb::JoinRequest& req, const pb::Member* existing, pb::JoinReply* reply,
                           pb::Member* m);
  // The identity in the caller's certificate (TLS); "" or why there is none.
  std::string caller_identity(grpc::ServerContext* ctx, certs::Identity* who);
  std::string own_key_fingerprint_;  // of this pod's certificate (set in start, before the server)
  std::atomic<bool> started_{false};  // start() finished: control commands may act
  // The address of the pod that holds the network CA, as the member list says ("" if none).
  std::string ca_address();
  // Joins through the configured peers; when this pod never synced, catches up (bounded).
  bool join_network(std::string* error);
  // Serves Snapshot / installs one from `peer` (only on a pod that applied no op yet).
  grpc::Status serve_snapshot(grpc::ServerContext* ctx, const pb::SnapshotRequest& req,
                              grpc::ServerWriter<pb::SnapshotPiece>* writer);
  bool install_snapshot_from(Peer& peer);
  // Acts on a peer's "snapshot needed": installs its snapshot when this pod has no history
  // (1), else logs once that it cannot catch up (-1); 0 when no peer said so.
  int act_on_snapshot_advice();
  // Sends every peer a sync request (anti-entropy, heartbeat); whether each answered.
  std::vector<bool> sync_round();
  pb::Member self_member() const;
  // Storage peers that may take a copy, best first for `key` (rendezvous hashing).
  std::vector<Peer*> ranked_storage_peers(Gid key);
  // Sends chunks `send` (stored here) along `chain`; `expected` are all the stored chunks of
  // the version (a holder fetches those it lacks). Returns the chain pods that stored all.
  std::vector<uint64_t> push_chain(const std::vector<uint64_t>& chain, const std::vector<std::string>& send,
                                   const std::vector<std::string>& expected, bool durable);
  // Serves PushChunks: stores the pieces, forwards them to the rest of the chain.
  grpc::Status receive_push(grpc::ServerContext* ctx, grpc::ServerReader<pb::ChunkPiece>* reader,
                            pb::PushReply* reply);
  // Pushes to each pod of `targets` alone (a chain of one), all at once; the targets that
  // stored everything. Called from a FUSE thread in a sync close: the pushes' deadlines
  // bound it, not their sum.
  std::vector<uint64_t> push_each(const std::vector<uint64_t>& targets, const std::vector<std::string>& send,
                                  const std::vector<std::string>& expected);
  // Sends holders the ops they lack until each has acknowledged this pod's op `seq`
  // (durably: acknowledgements report durable progress) or `deadline_ms` (steady clock)
  // passes. A holder that does not answer (or whose last exchange failed) is given up at
  // once. Returns the holders that acknowledged (this pod included when named).
  std::vector<uint64_t> deliver_ops_to(const std::vector<uint64_t>& holders, uint64_t seq, int64_t deadline_ms);
  // Copies a new version should have: the redundancy, or every storage pod ("all").
  size_t copies_wanted();
  // Placement found `found` pods for `wanted` copies: counts and logs a shortfall.
  void note_placement(size_t found, size_t wanted);
  // After a commit: records (and logs) version `version` of `inode` (this pod's op `seq`)
  // as under-replicated when `holders` are fewer than wanted or some of them are not in
  // `acked` (null: acknowledgements not waited for, async mode).
  void note_copies(Gid version, Gid inode, uint64_t seq, const std::vector<uint64_t>& holders,
                   const std::vector<uint64_t>* acked);
  // Drops under-replicated versions that were replaced, and holders that acknowledged the
  // op since (anti-entropy): a version whose holders all have it is replicated again.
  // Replication thread, every sync round.
  void review_under_replicated();
  std::string pod_names(const std::vector<uint64_t>& ids);
  // The chunks version `rec` adds to `base` (to send) and all its stored chunks (expected).
  void chunks_to_copy(const std::vector<pb::ChunkRef>& chunks, Gid base, std::vector<std::string>* send,
                      std::vector<std::string>* expected);
  void push_loop();  // async mode: copies committed versions to their holders
  int fetch_from_peers(const std::string& sha256, const std::vector<uint64_t>& holders);
  // Blocks [first_block, first_block + count) of chunk `sha256` from another pod, verified
  // (the chunk's end may cut them short): 0 and *data, or ENOTSUP (a legacy chunk), EIO.
  int fetch_blocks(const std::string& sha256, const std::vector<uint64_t>& holders, uint64_t first_block,
                   uint64_t count, std::string* data);
  // Asks pods for the chunk of `req` (holders first, see fetch) until `accept` takes an
  // answer: accept(peer name, table, data) returns 0 (done), EAGAIN (bad answer: ask the
  // next pod) or another errno (give up with it). Returns 0 or the errno: ENOTSUP when a pod
  // says the chunk has no block table, EIO when no pod answered acceptably.
  int ask_peers(pb::ChunkRequest req, const std::vector<uint64_t>& holders, uint64_t max_bytes,
                const std::function<int(const std::string&, const std::string&, const std::string&)>& accept);
  void prefetch_loop();  // read-ahead worker
  pb::PodSpace my_space();
  // Fetches the missing chunks of a few versions this pod must hold (bounded per call);
  // whether more may be due at once.
  bool fetch_held_versions();
  // The held-version worker: pulls off the replication thread, so that a large version
  // being fetched never delays op pushes and anti-entropy. Also completes incomplete
  // versions (complete_versions).
  void hold_loop();
  // Versions recorded incomplete here (a delta over a base this pod lacked; never
  // expected, see docs/architecture.md "Versions as deltas") get their whole chunk list
  // from a peer (the writer first): at most kMaxVersionsPerRequest per call, validated.
  void complete_versions();
  static constexpr size_t kMaxVersionsPerRequest = 16;
  // The state of peer `p` now (membership view, cluster/membership.h).
  PodState state_of(const Peer& p) const;
  // Every member with a known id as this pod sees it, this pod included (repair planning).
  std::vector<PodView> pod_views();
  // The repair worker (net/peer_repair.cc): surveys every current version when the view of
  // which pods count changes (and every few minutes), then fetches the versions this pod
  // must take, most endangered first, at failure.repair_rate, and claims them.
  void repair_loop();
  // Computes the situation (from the last survey) and whether this pod is cut off, logs
  // changes, and sets the gate. Replication thread, every sync round.
  void update_situation();
  // One survey and the copies it assigns to this pod; whether any copy was made.
  bool repair_pass();
  // Records this draining pod as gone (forgotten) once its survey found every version it
  // holds with its copies elsewhere.
  void finish_drain();
  // Fetches every chunk of version `t` this pod lacks and makes them durable: 0, or the
  // errno of the first chunk no pod could give (ENOENT: the version was replaced). Paced at
  // `rate_bytes` per second.
  int repair_copy(const RepairTask& t, uint64_t rate_bytes);
  // Copies `tasks` (repair or rebalance) at `rate_bytes` per second and claims them;
  // the bytes copied.
  uint64_t copy_and_claim(const std::vector<RepairTask>& tasks, uint64_t rate_bytes, const char* what);
  // Releases the surplus copies of `releases` whose keepers confirm (ConfirmHolding) that
  // they hold the version durably; the number released. The versions being released are in
  // `releasing_` meanwhile.
  uint64_t release_surplus(const std::vector<ReleaseTask>& releases);
  // Asks each pod of `asks` (pod -> versions) whether it holds them; calls
  // `held(pod, version)` for each confirmed one. Pods that cannot answer confirm nothing.
  void confirm_holding(const std::map<uint64_t, std::vector<Gid>>& asks,
                       const std::function<void(uint64_t pod, Gid version)>& held);
  // A draining pod's last check before it leaves: each version whose chunks it stores is
  // confirmed held by `copies_wanted()` other pods that count. False: not yet.
  bool drain_confirmed(const std::vector<PodView>& views);
  // Serves ConfirmHolding (see the RPC in proto/wormhole.proto).
  grpc::Status serve_confirm_holding(const pb::ConfirmHoldingRequest& req, pb::ConfirmHoldingReply* reply);
  static constexpr size_t kMaxConfirmVersions = 1024;
  static constexpr size_t kMaxConfirmChunks = 65536;  // chunks checked per request (~256 GiB of 4 MiB chunks)
  // Whether every chunk of `version` is stored here, each made young for GC (refresh):
  // checked just before a copy is claimed.
  bool holds_every_chunk(Gid version);
  // Sleeps as a token bucket of `rate_bytes` per second asks after `bytes` more were copied;
  // false when the node stops meanwhile.
  bool repair_throttle(uint64_t bytes, uint64_t rate_bytes);
  // Waits `ms` or until the node stops; false when it stops.
  bool repair_sleep(int64_t ms);
  struct RepairCounts {
    int64_t surveyed_ms = 0;  // steady time of the last survey's end (0: none yet)
    uint64_t versions = 0, under_replicated = 0, unavailable = 0, copies_missing = 0, bytes_missing = 0,
             unplaceable = 0, tasks_dropped = 0;
    uint64_t my_versions_left = 0, my_bytes_left = 0;  // this pod's part, as it works through it
    uint64_t pass_done_versions = 0;                    // of this pod's part, done in this pass
    uint64_t repaired_versions = 0, repaired_bytes = 0, failed_versions = 0;  // since start
    uint64_t surplus = 0;  // versions with more counted copies than wanted, at the last survey
    uint64_t rebalanced_versions = 0, rebalanced_bytes = 0, released_versions = 0;  // since start
    double rate_bytes_per_s = 0;  // over the current pass
    std::vector<std::string> lost;  // pods counted lost (or forgotten) at the last survey
  };
  std::atomic<bool> balance_left_{false};  // the last survey left rebalance copies or releases
  // Versions this pod is releasing: asked about before the release op applies, it does not
  // confirm holding them (two pods releasing on each other's word would leave none).
  // Bounded: one release batch (kClaimsPerOp) at a time, by the repair thread.
  std::mutex releasing_mu_;
  std::set<Gid> releasing_;
  struct SituationState {
    bool known = false;  // a survey ran
    Situation situation = Situation::kFavorable;
    std::string reason;
    int64_t since_wall_ms = 0;
    GateMode mode = GateMode::kOpen;
    bool disconnected = false;
    int64_t disconnected_since_wall_ms = 0;
  };
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
  std::function<void(const std::vector<Gid>&)> content_listener_;
  std::mutex mu_;  // guards replicator_ and the peers' learnt ids
  Replicator replicator_;
  // The other pods, append-only (a pod that joins is added; none is removed): readers
  // iterate the prefix published by peer_count_ without a lock; adding holds mu_.
  static constexpr size_t kMaxPeers = 256;
  std::array<std::unique_ptr<Peer>, kMaxPeers> peer_slots_;
  std::atomic<size_t> peer_count_{0};
  std::set<uint64_t> snapshot_refused_from_;  // peers whose snapshot advice was refused (logged once each; loop thread)
  std::atomic<uint64_t> snapshot_installs_{0};  // snapshot installs begun (see LoopCall::installs_at_start)
  std::mutex hold_mu_;
  std::condition_variable hold_cv_;  // stop
  std::deque<HeldVersion> to_hold_;  // versions whose chunks this pod must fetch (bounded; guarded by hold_mu_)
  std::thread hold_thread_;
  std::thread repair_thread_;
  const int64_t started_ms_;  // steady clock: silence counts from here at most
  const FailureTimes failure_times_;
  std::mutex repair_mu_;      // a leaf lock: guards repair_
  RepairCounts repair_;
  SituationState situation_;  // guarded by repair_mu_
  WriteGate* gate_ = nullptr;
  std::atomic<bool> self_draining_{false};  // this pod's member record says draining
  std::atomic<bool> self_left_{false};      // this pod's member record says forgotten (a drain ended)
  // "a, b, c": the names of the other pods and this one, for messages naming an unknown pod.
  std::string known_pod_names();
  int64_t repair_next_ms_ = 0;  // token bucket: when the next repair byte may go (repair thread only)
  // A version written here with fewer copies than wanted (see under_replication()).
  struct UnderReplicated {
    Gid version, inode;
    uint64_t op_seq = 0;  // this pod's op that committed it
    size_t wanted = 0;
    std::vector<uint64_t> holders;     // named in the version
    std::vector<uint64_t> without_op;  // named holders that had not acknowledged the op
  };
  static constexpr size_t kMaxUnderReplicated = 10000;
  std::mutex under_mu_;  // a leaf lock: guards under_ and under_untracked_
  std::deque<UnderReplicated> under_;  // bounded (kMaxUnderReplicated), oldest first
  uint64_t under_untracked_ = 0;       // under-replicated versions beyond the bound (never cleared)
  std::atomic<uint64_t> placements_short_{0};  // placements that found fewer pods than wanted
  std::atomic<uint64_t> placement_state_{0};   // last (found << 32 | wanted) logged; 0: enough
  struct PushJob {
    std::vector<uint64_t> chain;
    std::vector<std::string> send, expected;  // see push_chain
  };
  std::mutex push_mu_;
  std::condition_variable push_cv_;
  std::deque<PushJob> push_queue_;  // async copies to make (bounded; guarded by push_mu_)
  std::thread push_thread_;
  struct PrefetchJob {
    std::string sha256;
    std::vector<uint64_t> holders;
  };
  std::mutex fetch_mu_;
  std::condition_variable fetch_cv_;             // a fetch ended, or a prefetch job arrived
  std::set<std::string> fetching_;               // chunks being fetched (guarded by fetch_mu_)
  std::deque<PrefetchJob> prefetch_queue_;       // bounded; guarded by fetch_mu_
  std::vector<std::thread> prefetch_threads_;
  // network.tls: this pod's key, certificate and CA (TlsFiles), the tokens it issued, the
  // joins waiting for approval (bounded: kMaxPendingJoins, oldest dropped).
  TlsFiles tls_;
  std::unique_ptr<JoinTokens> tokens_;
  std::string join_token_;  // the token this pod joins with (--token, or network.token)
  bool certified_by_join_ = false;  // this start joined while getting its certificate
  std::set<std::string> tofu_logged_;  // CA fingerprints trusted on first use, logged once (start-up only)
  struct PendingJoin {
    pb::Member member;
    std::string key_fingerprint, address_seen;
    int64_t first_ms = 0, last_ms = 0;  // steady clock
    int decision = 0;                   // 1 approved, -1 denied
  };
  static constexpr size_t kMaxPendingJoins = 64;
  std::mutex pending_mu_;  // a leaf lock
  std::map<std::string, PendingJoin> pending_;  // by pod name
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> stop_{false};
  std::mutex calls_mu_;                     // a leaf lock: guards answered_calls_
  std::condition_variable calls_cv_;        // a loop exchange was answered, or stop
  std::vector<LoopCall*> answered_calls_;   // answered, not yet handled by the loop (bounded by its calls in flight)
  std::atomic<uint64_t> pushed_bytes_{0}, received_bytes_{0}, fetched_bytes_{0}, served_bytes_{0};
  std::atomic<uint64_t> op_bytes_sent_{0};  // op batches sent to peers (serialized bytes)
  std::atomic<int> op_batches_queued_{0};   // received op batches not yet applied (flow control)
  // Verified blocks of chunks not stored here, for random remote reads (read_range).
  static constexpr size_t kBlockCacheBytes = 64 << 20;
  BlockCache block_cache_{kBlockCacheBytes};
  std::thread thread_;
};

}  // namespace wormhole
