// ChunkStore: immutable, content-addressed chunk files on local disk.
//
// A chunk's name (its "sha256" everywhere in the code) is the SHA-256 of its block table:
// the chunk is cut in blocks of kBlockBytes, each block hashed with SHA-256, and the name is
// SHA-256(kTableTag || the block hashes). A chunk of one block is named by the SHA-256 of
// its bytes (its table is its name). So a reader that has the table (n x 32 bytes, checked
// against the name) can verify any block alone: a remote read fetches and verifies the
// blocks it needs, not the chunk (docs/architecture.md, "Blocks inside chunks"). Chunks of
// more than one block stored by protocol 5 and earlier are named by the SHA-256 of their
// bytes ("legacy"): still read, verified whole and served whole, never given a table.
//
// A chunk lives at <dir>/<first 2 hex of its name>/<64 hex>; it is written to
// <dir>/tmp first and renamed into place, so a crash never leaves a half chunk under its
// name. Every chunk is verified against its hash the first time it is opened for reading;
// open verified chunks stay in a bounded descriptor cache; a chunk found corrupt is moved
// to <dir>/corrupt/ (set_aside). Thread-safe.
//
// Durability is grouped: put() writes a chunk and starts its writeback without waiting;
// sync_pending(), called by the metadata group commit before the log sync, waits for all of
// them (per-chunk fdatasync cost one journal commit per small file). After a power loss a
// chunk stored after the last group commit may be cut short under its name; init() then
// (and only then: `running` was left behind) verifies the chunks newer than the last
// completed group commit and removes the bad ones, and put() never deduplicates against a
// chunk of the wrong size.
//
// Deduplication and garbage collection meet on a chunk file: put() finds the chunk present
// and relies on it staying (the version naming it is committed only later), while
// collect_garbage() deletes unreferenced chunks older than a grace period. Both act on a
// chunk under its stripe lock (stripe_of), each in one step: put refreshes the file's age
// (utimensat, which also tells whether it exists), GC reads the age and unlinks. So either
// put refreshed first, and GC sees a young file and keeps it; or GC unlinked first, and
// put's utimensat fails with ENOENT and put writes the chunk anew. Without the lock, GC
// could read an old age, put refresh it, and GC unlink: the writer's new version would name
// a deleted chunk.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <sys/types.h>

namespace wormhole {

struct ChunkStoreStats {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
};

class ChunkStore {
 public:
  static constexpr size_t kHashBytes = 32;
  // The unit of verification and of partial remote reads.
  static constexpr size_t kBlockBytes = 64 * 1024;
  explicit ChunkStore(std::string dir, size_t max_open_files = 256);
  ~ChunkStore();

  // Creates the directories, removes leftovers of interrupted writes, counts chunks.
  bool init(std::string* error);

  // Stores `len` bytes and sets *sha256 to their 32-byte hash. Storing bytes that are
  // already present is free. Returns 0 or an errno (ENOSPC when the disk is full).
  int put(const char* data, size_t len, std::string* sha256);
  // Stores `len` bytes that must hash to `sha256` (data from another pod): EBADMSG, and
  // nothing stored, when they do not. Returns 0 or an errno.
  int put_expected(const char* data, size_t len, const std::string& sha256);

  // Reads up to `len` bytes at `offset` of chunk `sha256` into `out`. Returns the byte
  // count (short at the chunk's end) or -errno: -ENOENT missing, -EIO corrupt.
  ssize_t read(const std::string& sha256, uint64_t offset, size_t len, char* out);

  bool contains(const std::string& sha256);
  // Takes chunk `sha256` out of the store if its bytes do not match its name (a read got
  // EIO): checked again, and only then moved to <dir>/corrupt/ for inspection, so that
  // contains() is false and a fetch from a holder stores a good copy. 0 when moved; EEXIST
  // when the file matches its name (left; read it again); EIO when it cannot be read whole
  // (left: a read error is not corruption); ENOENT when not here.
  int set_aside(const std::string& sha256);
  // Whether chunk `sha256` is here, and if so makes it young again for garbage collection
  // (under its stripe lock, as put's deduplication): a chunk about to be claimed or
  // confirmed (a repair copy found in the cache, a keeper's answer) then survives a GC
  // whose list of held chunks predates the claim, for gc_grace. Callers check again with
  // refresh() right before they claim (PeerNode::holds_every_chunk).
  bool refresh(const std::string& sha256);
  // The size of chunk `sha256` on disk, or -ENOENT (not here) / -EIO.
  int64_t size_of(const std::string& sha256) const;

  // The block table of chunk `sha256` (its blocks' hashes, kHashBytes each): 0, or ENOENT
  // (not here), EIO (corrupt), ENOTSUP (a legacy chunk: no table, verified whole only).
  int table_of(const std::string& sha256, std::string* table);

  // Makes every stored chunk durable (syncfs of the storage file system).
  int sync();
  // The group commit of chunks: makes every chunk put since the last call durable (its
  // bytes and its name). Called before the metadata log is synced, so that a durable
  // version never names a chunk a power loss can take. 0 or errno (the chunks stay pending).
  int sync_pending();
  // An orderly stop: pending chunks made durable, and the next init skips the recovery
  // check. (Not in the destructor: a test that simulates a crash destroys the store too.)
  void mark_clean_shutdown();
  // Makes the named chunks durable: their files and directory entries. 0 or first errno
  // (ENOENT for a chunk not stored here).
  // With `skip_missing`, a chunk not stored here is passed over instead.
  int sync_chunks(const std::vector<std::string>& sha256s, bool skip_missing = false);

  // Deletes chunk files not in `live` whose age exceeds `grace_s` (a chunk can be written
  // before the version that references it is committed), except the chunks in `cached`
  // (referenced, but held by other pods: a cache here) while they fit in `cache_bytes`,
  // the youngest kept first. Files that are not chunks (a name that is not 64 hex digits in
  // its own subdirectory, not a regular file) are left alone, with a log line (bounded per
  // run). Returns the number removed.
  uint64_t collect_garbage(const std::unordered_set<std::string>& live, int64_t grace_s,
                           const std::unordered_set<std::string>& cached = {}, uint64_t cache_bytes = 0);

  // Tests only: called by collect_garbage with each unreferenced chunk it is about to
  // check and delete, before it takes the chunk's lock (to run a put in that window).
  void set_gc_hook_for_test(std::function<void(const std::string& sha256)> hook) { gc_hook_ = std::move(hook); }
  // Tests only: called at the start of every put; a non-zero errno fails the put with it.
  void set_put_hook_for_test(std::function<int()> hook) { put_hook_ = std::move(hook); }

  ChunkStoreStats stats() const { return {chunks_.load(), bytes_.load()}; }
  std::string path_of(const std::string& sha256) const;

  // The name of a chunk holding these bytes (see the class comment).
  static std::string hash(const char* data, size_t len);
  // The block table of these bytes: the SHA-256 of each kBlockBytes block (the last may be
  // shorter); one entry for len <= kBlockBytes (also for len 0).
  static std::string block_table(const char* data, size_t len);
  // The chunk name a block table gives: its only entry, or SHA-256(kTableTag || table).
  static std::string name_of_table(const std::string& table);
  // True when `table` is a well-formed block table whose name is `sha256`, and `data` holds
  // blocks first_block, first_block + 1, ... of that chunk, each matching its entry (every
  // block but the chunk's last is whole; `data` may end with the chunk's last block).
  static bool verify_blocks(const std::string& sha256, const std::string& table, uint64_t first_block,
                            const char* data, size_t len);
  static std::string hex(const std::string& sha256);

 private:
  struct OpenChunk {
    int fd = -1;
    uint64_t size = 0;
    std::string table;  // the block table; empty for a legacy chunk
    ~OpenChunk();
  };
  // Hashes the file at `fd` as a chunk: its block table and size. False on a read error.
  static bool table_of_file(int fd, std::string* table, uint64_t* size);
  // The SHA-256 of the file's bytes (a legacy chunk's name), or "" on a read error.
  static std::string content_hash_of_file(int fd);
  // What a chunk file `fd` named `sha256` holds: kMatches (and its table, empty if legacy)
  // when its bytes match the name, kMismatch when they do not, kUnreadable on a read error.
  enum class FileCheck { kMatches, kMismatch, kUnreadable };
  static FileCheck check_file_bytes(int fd, const std::string& sha256, std::string* table, uint64_t* size);
  // check_file_bytes() == kMatches.
  static bool check_file(int fd, const std::string& sha256, std::string* table, uint64_t* size) {
    return check_file_bytes(fd, sha256, table, size) == FileCheck::kMatches;
  }
  std::shared_ptr<OpenChunk> open_verified(const std::string& sha256, int* err);
  void cache_insert(const std::string& sha256, std::shared_ptr<OpenChunk> chunk);
  // `table`: the chunk's block table, empty for a legacy chunk.
  int store(const char* data, size_t len, const std::string& sha256, std::string table);
  // True when the file at `path` hashes to `name` (64 hex digits; other names pass).
  static bool verify_file(const std::string& path, const std::string& name);

  // Chunks put since the last sync_pending(), bounded: beyond it, one syncfs instead.
  static constexpr size_t kMaxPending = 65536;
  // Beyond this many pending chunks, sync_pending() makes them durable with one syncfs.
  static constexpr size_t kSyncfsAbove = 16;
  // Chunks stored this long before the recorded group commit are verified too after a
  // crash (clock granularity: a chunk's mtime and the record are whole seconds).
  static constexpr int64_t kSyncedUntilSlackS = 2;
  std::mutex pending_mu_;
  std::vector<std::string> pending_;
  bool pending_overflow_ = false;
  std::atomic<int64_t> synced_until_s_{0};

  // The lock of a chunk's stripe: serializes put's dedup (age refresh) with GC's age check
  // and unlink of that chunk (see the class comment). Striped: bounded memory, and puts of
  // different chunks rarely wait for each other.
  static constexpr size_t kStripes = 64;
  std::mutex& stripe_of(const std::string& sha256) {
    return stripes_[static_cast<unsigned char>(sha256.empty() ? 0 : sha256[0]) % kStripes];
  }

  std::string dir_;
  size_t max_open_files_;
  std::array<std::mutex, kStripes> stripes_;
  std::function<void(const std::string&)> gc_hook_;
  std::function<int()> put_hook_;
  int dir_fd_ = -1;
  std::atomic<uint64_t> chunks_{0}, bytes_{0}, tmp_seq_{0};
  std::mutex mu_;  // guards the cache; taken after a stripe lock, never before
  std::list<std::string> lru_;  // most recent first
  std::unordered_map<std::string, std::pair<std::shared_ptr<OpenChunk>, std::list<std::string>::iterator>> cache_;
};

}  // namespace wormhole
