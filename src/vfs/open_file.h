// OpenFile: the content of one regular file while it is open on this pod, shared by all
// handles on it: the version it is based on, the pending chunk list, and a bounded set of
// dirty chunks in memory (the write-back area). Reads overlay dirty bytes on the pending
// chunks. A dirty chunk is sealed (hashed and stored as an immutable chunk) as soon as it
// is completely written, when too many are dirty, and on flush; flush then commits the
// pending list as a new version. Only touched chunks are rewritten, and memory per file
// is bounded by kMaxDirtyChunks dirty chunks plus the full chunks being sealed.
//
// A span's stored content is a short list of pieces (ranges of chunk files, see ChunkRef):
// a dirty span whose writes touched few 64 KiB blocks is sealed by storing only those
// blocks (merged with the base's bytes for the rest of each block) as new chunk files and
// splitting the span's pieces around them; a span that would get too many pieces is sealed
// whole into one file again (consolidation), which bounds the pieces per span.
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
  // Bytes fetched ahead of a sequential reader of a file this pod does not hold (enough to
  // keep two holders busy with two chunks each, on links of a few hundred Mbit/s as on a
  // LAN), in whole chunks: at least kMinReadAheadChunks, at most kMaxReadAheadChunks (8
  // with 4 MiB chunks, 256 with 64 KiB ones).
  static constexpr uint64_t kReadAheadBytes = 32 << 20;
  static constexpr uint64_t kMinReadAheadChunks = 4;
  static constexpr uint64_t kMaxReadAheadChunks = 256;
  // Sealing a partly written span (seal_blocks): the unit stored is an aligned page, at most
  // kMaxSealBytes of them (more: the span is sealed whole). Small pieces (under a block)
  // beyond kMaxSmallPieces are merged into one (the range they span, if at most
  // kMaxMergeBytes), and a span keeps at most kMaxSealPieces pieces (more: sealed whole,
  // which makes it one piece again). A span of at most a block is always sealed whole.
  static constexpr uint32_t kPageBytes = 4096;
  static constexpr uint32_t kBlockBytes = 64 * 1024;
  static constexpr uint64_t kMaxSealBytes = 512 * 1024;
  static constexpr size_t kMaxSmallPieces = 16;
  static constexpr uint32_t kMaxMergeBytes = 1 << 20;
  static constexpr size_t kMaxSealPieces = 48;
  // Chunk files from this size on are compacted once a span uses less than a quarter of
  // them (seal_blocks).
  static constexpr uint64_t kCompactFilesFrom = 256 * 1024;
  // Written ranges tracked per dirty span once its base is loaded; beyond this the span is
  // sealed whole anyway (kMaxSealBlocks could not hold them), so tracking stops.
  static constexpr size_t kMaxWrittenRanges = 64;

  // `replication` (may be null: a pod alone) places and copies each committed version.
  OpenFile(Namespace& ns, ChunkStore& chunks, BufferPool& buffers, uint64_t chunk_size, Gid inode,
           ContentReplication* replication);
  // Loads the current version. Returns 0 or errno.
  int load();
  // Another pod committed a version of this file: the next read, getattr or open reloads
  // the current version, unless this pod has unflushed writes (their commit will then be
  // concurrent with it: a conflict, resolved as such). Lock-free, cheap: called from the
  // replication thread, which must never wait on a file (a flush may wait on the network).
  void note_new_version() { maybe_stale_.store(true, std::memory_order_release); }
  // Reloads now if a newer version was committed elsewhere and nothing is pending here.
  // Returns true if the content changed (the kernel's cached pages are then stale).
  bool refresh();
  // Whether the current version could not be loaded: reads fail with EIO meanwhile.
  bool load_failed() {
    std::shared_lock lock(mu_);
    return load_error_ != 0;
  }

  // Returns bytes read (short at end of file) or -errno.
  ssize_t read(uint64_t offset, size_t len, char* out);
  // Returns 0 or errno (EFBIG past kMaxFileSize). Extends the file when writing past its end.
  int write(uint64_t offset, const char* data, size_t len, int64_t now_ns);
  // Returns 0 or errno (EFBIG past kMaxFileSize). Growing adds a hole: it stores nothing.
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
    // Ranges written since the chunk became dirty, [start, end), sorted and merged. Before
    // base_loaded, only these bytes of `data` are valid; after it, `data` holds the whole
    // logical content and `written` tells seal() which blocks changed (unless `whole`).
    std::vector<std::pair<uint32_t, uint32_t>> written;
    bool base_loaded = false;
    // The changed ranges are not known (bytes taken over from a chunk being stored, too
    // many ranges): seal the whole span. Only with base_loaded.
    bool whole = false;
  };
  // Loads version `version` (`v`) as the base, all or nothing: on failure the handle keeps
  // its state and reads fail with the error (load_error_) until a load succeeds or the
  // handle writes (its writes over the state it kept commit as a concurrent version). Lock
  // held. Returns 0 or errno.
  int load_locked(Gid version, const pb::VersionRecord& v);
  // load_locked's work, which may leave the state half-changed on failure.
  int adopt_locked(Gid version, const pb::VersionRecord& v);
  // See refresh(); lock held.
  bool refresh_locked();
  uint64_t span(uint64_t index) const;
  // Chunk spans of the file: ceil(size / chunk_size).
  uint64_t chunk_count() const { return (size_ + chunk_size_ - 1) / chunk_size_; }
  // The stored pieces of span `index` (sorted by span_offset), or null for a hole.
  const std::vector<pb::ChunkRef>* stored_pieces(uint64_t index) const;
  // The pending chunk list in the form a version carries it (by increasing index).
  std::vector<pb::ChunkRef> chunk_list() const;
  DirtyChunk& make_dirty(uint64_t index);
  int load_base(uint64_t index, DirtyChunk& d);
  int seal(uint64_t index);
  // seal() of a span whose writes touched few blocks: stores just those blocks. Returns 0
  // when done, -1 when the span must be sealed whole instead, or an errno.
  int seal_blocks(uint64_t index, DirtyChunk& d);
  int seal_all();
  ssize_t read_locked(uint64_t offset, size_t len, char* out);
  // Reads n bytes of span `index` from its stored pieces (zeros where none is). n or -errno.
  ssize_t read_clean(uint64_t index, uint64_t in_chunk, size_t n, char* out);
  // Reads `n` bytes of piece `ref` of span `index` at `in_piece` (inline or from the chunk
  // store): exactly n, or -EIO logged with the file's path (a chunk file shorter than the
  // piece says is corrupt metadata or a damaged file).
  ssize_t read_stored(uint64_t index, const pb::ChunkRef& ref, uint64_t in_piece, size_t n, char* out);
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
  const uint64_t readahead_chunks_;  // see kReadAheadBytes
  const Gid inode_;
  ContentReplication* const replication_;
  std::shared_mutex mu_;
  Gid base_version_;
  uint64_t size_ = 0;
  int64_t mtime_ns_ = 0;
  bool modified_ = false;      // pending state differs from base_version_
  // Pending chunk list: the stored pieces by span index (each ref's `index` is its key),
  // sorted by span_offset, never empty; an index not present is a hole. Sparse, so a 1 TB
  // file with little data costs little.
  std::map<uint64_t, std::vector<pb::ChunkRef>> chunks_;
  std::vector<uint64_t> holders_;              // of base_version_ (asked first for missing chunks)
  // Read-ahead state, changed under a shared lock: chunks below readahead_end_ were already
  // handed to prefetch; remote_ once a read found a chunk missing here.
  std::atomic<uint64_t> readahead_end_{0};
  std::atomic<bool> remote_{false};
  std::atomic<bool> maybe_stale_{false};       // see note_new_version()
  int load_error_ = 0;  // the errno of the last load when it failed, else 0 (guarded by mu_)
  std::atomic<uint64_t> read_end_{0};          // file offset where the last stored read ended
  std::atomic<uint32_t> sequential_reads_{0};  // stored reads in a row that followed the last
  // A read starting within this of where the last ended follows it; after this many such
  // reads in a row the reader is streaming (whole chunks, read-ahead).
  static constexpr uint64_t kStreamingSlackBytes = 1 << 20;
  static constexpr uint32_t kStreamingAfterReads = 2;
  std::map<uint64_t, DirtyChunk> dirty_;       // chunk index -> dirty bytes
  std::map<uint64_t, Sealing> sealing_;        // chunk index -> full chunk being stored
  std::condition_variable_any sealed_;         // signalled when sealing_ shrinks
};

}  // namespace wormhole
