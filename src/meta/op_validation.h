// Validation of what peers send: every field of every op and replication message, checked
// at the boundary before anything reaches Meta::apply or the replication state. Pure: no
// I/O, no clock, no state (the caller passes the time and the limits), so the same checks
// run in the daemon, the simulation and the fuzz test. Thread-safe (free functions).
//
// What it cannot see is checked where the state is: an op's place in its origin's
// sequence and stamps (Replicator, Meta::apply), whether a moved inode is a directory
// (Meta::do_move), who is a member (PeerNode). What no check can tell without
// authentication (issue 9, TLS) is written in docs/architecture.md, "Input from peers".
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "proto/wormhole.pb.h"

namespace wormhole {

// Bounds of what one peer message may carry. An honest pod never exceeds them: each is
// what the local code produces at most, with room to spare.
inline constexpr size_t kMaxNameBytes = 255;           // NAME_MAX
inline constexpr size_t kMaxSymlinkBytes = 4095;       // PATH_MAX minus its NUL
inline constexpr size_t kMaxXattrNameBytes = 255;      // XATTR_NAME_MAX
inline constexpr size_t kMaxXattrValueBytes = 65536;   // XATTR_SIZE_MAX
inline constexpr size_t kMaxInlineBytes = 8 * 1024;    // OpenFile::kInlineMaxBytes
inline constexpr size_t kMaxPodNameBytes = 64;         // config: pod and network names
inline constexpr size_t kMaxAddressBytes = 255;        // host:port
inline constexpr size_t kMaxHashBytes = 32;            // SHA-256
// Pods in one network (PeerNode talks to at most 256 others): bounds holders, deps and
// progress reports.
inline constexpr size_t kMaxPods = 1024;
// A version's live entries in view of its writer (Meta::live_entries' default limit).
inline constexpr size_t kMaxLiveEntries = 1024;
// Actions in one op (the largest local op, a directory made again, removes its xattrs).
inline constexpr size_t kMaxActionsPerOp = 1 << 16;
// Ops in one batch (Replicator::kMaxBatchOps).
inline constexpr size_t kMaxOpsPerBatch = 512;
// An HLC counter grows only while many stamps share one wall millisecond; far below
// UINT32_MAX, so that no peer can bring a clock to the edge of wrapping.
inline constexpr uint32_t kMaxHlcCounter = 1u << 31;

// What validation needs from the receiver: its wall time, how far ahead of it a peer's
// clock may be, and the network's chunk size (a version has one chunk per chunk span).
struct OpLimits {
  uint64_t now_ms = 0;
  uint64_t max_skew_ms = 10 * 60 * 1000;
  uint64_t chunk_size_bytes = 4 << 20;
};

// A directory entry name: 1 to 255 bytes, no '/', no NUL, not "." or "..".
bool valid_entry_name(std::string_view name, std::string* why);
// A pod's name as the configuration allows it: 1 to 64 of [A-Za-z0-9._-].
bool valid_pod_name(std::string_view name);

// Every field of `op`: ids (non-zero, not the reserved root/trash ids where an object is
// meant), names, types, modes, sizes, chunk lists, holders, members; the stamp (from the
// op's origin, not beyond now + max skew, counter far from wrapping); sequence ≥ 1; bounded
// actions and deps. True if valid; else false and *why says what is wrong.
bool validate_op(const pb::Op& op, const OpLimits& limits, std::string* why);

// The whole chunk list of a version of `size` bytes (a peer's answer to a request for an
// incomplete version): as a commit's, sorted, within the file, bounded.
bool validate_chunk_list(uint64_t size, const google::protobuf::RepeatedPtrField<pb::ChunkRef>& chunks,
                         const OpLimits& limits, std::string* why);

// A member description (in a Member action, a join request or reply).
bool validate_member(const pb::Member& member, std::string* why);

// A progress report: bounded, no pod id 0.
bool validate_progress(const pb::Progress& progress, std::string* why);

// A replication message: its progress report, its batch size, and every op in it.
bool validate_peer_message(const pb::PeerMessage& message, const OpLimits& limits, std::string* why);

}  // namespace wormhole
