// OpenFile: the content of one regular file while it is open on this pod, shared by all
// handles on it: the version it is based on, the pending chunk list, and a bounded set of
// dirty chunks in memory (the write-back area). Reads overlay dirty bytes on the pending
// chunks. A dirty chunk is sealed (hashed and stored as an immutable chunk) as soon as it
// is completely written, when too many are dirty, and on flush; flush then commits the
// pending list as a new version. Only touched chunks are rewritten, and memory per file
// is bounded by kMaxDirtyChunks dirty chunks plus the full chunks being sealed.
//
// A completely written chunk is sealed outside the lock, so that while one thread hashes
// and stores it, other threads keep copying the next writes in: on two cores this nearly
// doubles sequential write speed. Such a chunk sits in `sealing_` (readable) until stored.
// Thread-safe (internal lock).
#pragma once
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "chunks/chunk_store.h"
#include "vfs/buffer_pool.h"
#include "vfs/content_replication.h"
#include "meta/namespace.h"

namespace wormhole {

class OpenFile {
 public:
  static constexpr size_t kMaxDirtyChunks = 8;
  // Chunks up to this size are kept inline in the version record rather than as chunk
  // files: a small file then costs one metadata write instead of a file create + rename.
  static constexpr size_t kInlineMaxBytes = 8 * 1024;
  // Chunks fetched ahead of a reader of a file this pod does not hold (16 MiB with the
  // default 4 MiB chunks: enough to keep two holders busy on a LAN).
  static constexpr uint64_t kReadAheadChunks = 4;
  // Most chunks a file may have: its chunk list is held in memory here, stored in one
  // version record and carried in one op (2^20 references are ~41 MB, within a peer
  // message). So a file is at most chunk_size × 2^20 bytes (1 TiB with 1 MiB chunks);
  // growing it further is EFBIG, as past ext4's 16 TiB, instead of an allocation the
  // size of the request (truncate -s 4E used to abort the daemon).
  static constexpr uint64_t kMaxChunks = uint64_t{1} << 20;
  uint64_t max_size() const { return chunk_size_ * kMaxChunks; }

  // `replication` (may be null: a pod alone) places and copies each committed version.
  OpenFile(Namespace& ns, ChunkStore& chunks, BufferPool& buffers, uint64_t chunk_size, Gid inode,
           ContentReplication* replication);
  // Loads the current version. Returns 0 or errno.
  int load();

  // Returns bytes read (short at end of file) or -errno.
  ssize_t read(uint64_t offset, size_t len, char* out);
  // Returns 0 or errno. Extends the file when writing past its end.
  // Both: 0 or an errno; EFBIG when the file would grow past max_size().
  int write(uint64_t offset, const char* data, size_t len, int64_t now_ns);
  int truncate(uint64_t size, int64_t now_ns);
  // Seals dirty chunks and commits a new version if anything changed; with `sync`, the
  // chunks and the version are durable on return (on this pod; on its holders too in
  // replication.mode = "sync", whatever `sync`).
  int flush(bool sync);

  // Sets the modification time the next version will carry, when unflushed writes exist
  // (the kernel's write-back cache reports the time of the writes it holds). Returns false
  // when there is nothing unflushed: the caller must then change the attribute itself.
  bool set_pending_mtime(int64_t mtime_ns);
  // Current size and modification time, including unflushed writes.
  void overlay(Attr* attr);
  Gid inode() const { return inode_; }
  // Chunks referenced by the pending list (kept alive by garbage collection).
  void pending_chunks(std::vector<std::string>* out);

 private:
  struct DirtyChunk {
    ByteBuffer data;  // bytes [0, data.size()) of the chunk
    // Ranges written since the chunk became dirty, [start, end), sorted and merged.
    // Unneeded once base_loaded: then data holds the whole logical content.
    std::vector<std::pair<uint32_t, uint32_t>> written;
    bool base_loaded = false;
  };
  uint64_t span(uint64_t index) const;
  DirtyChunk& make_dirty(uint64_t index);
  int load_base(uint64_t index, DirtyChunk& d);
  int seal(uint64_t index);
  int seal_all();
  ssize_t read_locked(uint64_t offset, size_t len, char* out, bool may_load);
  ssize_t read_clean(uint64_t index, uint64_t in_chunk, size_t n, char* out);
  // Reads stored bytes of chunk `index` (inline or from the chunk store); short at the
  // chunk's stored end. -errno on failure, logged with the file's path.
  ssize_t read_stored(uint64_t index, uint64_t in_chunk, size_t n, char* out);
  // Reader of a file whose chunks live elsewhere: asks for the next chunks after `index`.
  void read_ahead(uint64_t index);
  static bool covers(const DirtyChunk& d, uint32_t start, uint32_t end);
  static void add_range(DirtyChunk& d, uint32_t start, uint32_t end);

  // A full chunk being stored outside the lock.
  struct Sealing {
    std::shared_ptr<ByteBuffer> data;
  };
  // Stores the full chunks in `jobs` (unlocked), then installs them; 0 or first errno.
  int seal_outside_lock(std::unique_lock<std::shared_mutex>& lock,
                        std::vector<std::pair<uint64_t, std::shared_ptr<ByteBuffer>>>& jobs);

  Namespace& ns_;
  ChunkStore& store_;
  BufferPool& buffers_;
  const uint64_t chunk_size_;
  const Gid inode_;
  ContentReplication* const replication_;
  std::shared_mutex mu_;
  Gid base_version_;
  uint64_t size_ = 0;
  int64_t mtime_ns_ = 0;
  bool modified_ = false;      // pending state differs from base_version_
  bool unsynced_ = false;      // chunks written since the last sync
  std::vector<pb::ChunkRef> chunks_;           // pending chunk list
  std::vector<uint64_t> holders_;              // of base_version_ (asked first for missing chunks)
  // Read-ahead state, changed under a shared lock: chunks below readahead_end_ were already
  // handed to prefetch; remote_ once a read found a chunk missing here.
  std::atomic<uint64_t> readahead_end_{0};
  std::atomic<bool> remote_{false};
  std::atomic<uint64_t> last_index_{UINT64_MAX};  // chunk of the last stored read
  std::map<uint64_t, DirtyChunk> dirty_;       // chunk index -> dirty bytes
  std::map<uint64_t, Sealing> sealing_;        // chunk index -> full chunk being stored
  std::condition_variable_any sealed_;         // signalled when sealing_ shrinks
};

}  // namespace wormhole
