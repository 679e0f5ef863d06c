// Op batches on the wire. A batch's ops repeat pod ids, stamps and key material (an op of
// a small-file create is ~500 bytes serialized), which compresses well: on a slow link the
// bytes are what a peer waits for. So a batch whose ops serialize to kPackOpsFromBytes or
// more travels packed — its ops serialized and compressed with zstd at its fastest level
// (hundreds of MB/s: a 512-op batch costs well under a millisecond of CPU, next to tens of
// milliseconds of applying it) — and is unpacked where it is received, before anything
// else reads it. The replicator never sees a packed batch.
//
// Unpacking is peer input: a frame that is malformed, that claims or yields more than the
// caller's bound, or that comes with plain ops besides is rejected, never decompressed
// without a bound.
//
// Thread-safety: plain functions on the caller's messages.
#pragma once
#include <cstddef>
#include <string>

#include "proto/wormhole.pb.h"

namespace wormhole {

inline constexpr size_t kPackOpsFromBytes = 4096;

// Replaces `batch`'s ops by packed_ops when they serialize to kPackOpsFromBytes or more
// and pack smaller. Requires: packed_ops empty.
void pack_ops(pb::OpBatch* batch);

// Restores the ops of a packed batch (a batch without packed_ops is left as it is). False,
// with `why`, for a frame that is malformed, unpacks to more than `max_bytes`, or comes
// with plain ops besides; `batch` is unchanged then.
bool unpack_ops(pb::OpBatch* batch, size_t max_bytes, std::string* why);

}  // namespace wormhole
