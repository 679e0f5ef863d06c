// ContentReplication: how the content of a new version reaches the pods that hold it, and
// how a pod gets the chunks it lacks when reading. The network layer implements it; a pod
// alone has none and holds everything itself.
// Implementations are thread-safe: any FUSE thread calls them, for different files at once.
#pragma once
#include <cstdint>
#include <string>

#include <sys/types.h>
#include <vector>

#include "common/ids.h"
#include "proto/wormhole.pb.h"

namespace wormhole {

class ContentReplication {
 public:
  virtual ~ContentReplication() = default;

  // Called before a new version of `inode` is committed, with its chunks (already stored on
  // this pod) and the version it is based on. Chooses its holders and returns them (this pod
  // first when it holds a copy). With replication.mode = "sync", returns only once the
  // chunks are durable on every returned holder (fewer than the redundancy when not enough
  // storage pods are reachable: committed() reports the version as under-replicated).
  // Bounded by push deadlines scaled to the data, not by a peer that hangs.
  virtual std::vector<uint64_t> place(Gid inode, Gid base_version, const std::vector<pb::ChunkRef>& chunks) = 0;

  // Fetches chunk `sha256`, which this pod lacks, from another pod (`holders` first: the
  // holders of the version being read), verifies and stores it. Returns 0 or an errno
  // (EIO when no reachable pod has it). Waits for a fetch of the same chunk already running.
  virtual int fetch(const std::string& sha256, const std::vector<uint64_t>& holders) = 0;
  // Reads `len` bytes at `offset` of chunk `sha256`, which this pod lacks, without fetching
  // the whole chunk: only the blocks covering the range come from another pod, each
  // verified against the chunk's block table, and are kept in a bounded memory cache (not
  // stored). For a random reader: 64 KiB moved for a 4 KiB read instead of the chunk.
  // Returns the byte count (short only at the chunk's end) or -errno: -ENOTSUP for a legacy
  // chunk (no block table: fetch() it whole), -EIO when no reachable pod has it.
  virtual ssize_t read_range(const std::string& sha256, const std::vector<uint64_t>& holders, uint64_t offset,
                             size_t len, char* out) = 0;
  // Starts fetching these chunks in the background (read-ahead); returns at once. Requests
  // beyond a bounded queue are dropped (the read then fetches the chunk itself).
  virtual void prefetch(const std::vector<std::string>& sha256s, const std::vector<uint64_t>& holders) = 0;

  // Called once the version is committed on this pod, with what place() was given and
  // returned. Sync mode: returns when every holder acknowledged the version's op durably, or
  // after a bounded deadline. Async mode: starts copying the chunks and returns. Either
  // way, a version with fewer copies than the redundancy is logged and listed.
  virtual void committed(Gid version, Gid base_version, const std::vector<pb::ChunkRef>& chunks,
                         const std::vector<uint64_t>& holders) = 0;
};

}  // namespace wormhole
