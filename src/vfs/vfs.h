// Vfs: what the FUSE adapter calls for file content. Owns the table of open files (one
// OpenFile per inode, shared by its handles) and overlays unflushed state on attributes.
// Thread-safe.
#pragma once
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "chunks/chunk_store.h"
#include "meta/namespace.h"
#include "vfs/open_file.h"

namespace wormhole {

struct GidHash {
  size_t operator()(const Gid& g) const { return std::hash<uint64_t>()(g.pod * 0x9e3779b97f4a7c15ULL ^ g.seq); }
};

class Vfs {
 public:
  Vfs(Namespace& ns, ChunkStore& chunks, uint64_t chunk_size);
  // Places and copies new versions on a network (set once, before the first open).
  void set_replication(ContentReplication* replication) { replication_ = replication; }

  // Opens the content of regular file `inode`; every open needs a matching release().
  // An open file is brought to the current version first (close-to-open: a version another
  // pod committed is seen by every open after it arrived); *reloaded (if given) tells
  // whether that changed its content, so that the kernel drops its cached pages.
  int open(Gid inode, std::shared_ptr<OpenFile>* file, bool* reloaded = nullptr);
  // Versions of these files were committed by other pods: their open files reload before
  // the next read (see OpenFile::note_new_version). Never waits on a file.
  void note_new_versions(const std::vector<Gid>& inodes);
  // Drops one reference; the last one flushes and forgets the OpenFile.
  // `commit_writes`: this handle wrote (or cannot tell), so its close commits the file's
  // pending writes; a handle that only read leaves another handle's unfinished writes
  // alone (they are no closed version yet). The last release always commits.
  int release(const std::shared_ptr<OpenFile>& file, bool commit_writes = true);
  bool in_use(Gid inode);

  // Namespace attributes with the size/mtime of unflushed writes.
  int getattr(uint64_t ino, Attr* attr);
  // Puts the size/mtime of unflushed writes on attributes just read from the namespace
  // (what getattr adds; spares reading them twice).
  void overlay(Attr* attr);
  // Changes the size of a file, open or not. Returns 0 or errno.
  int truncate(Gid inode, uint64_t size);

  // Deletes unreferenced chunks older than `grace_s`, and chunks of versions this pod does
  // not hold (a cache of others' copies) beyond `cache_bytes`, the oldest first. Returns the
  // number removed. Waits for each open file's lock in turn (its pending chunks), never
  // holding the table lock meanwhile: a file whose flush waits on the network stalls GC,
  // not getattr or open.
  uint64_t collect_garbage(int64_t grace_s, uint64_t cache_bytes = UINT64_MAX);

  Namespace& ns() { return ns_; }
  ChunkStore& chunks() { return chunks_; }
  static int64_t now_ns();

 private:
  Namespace& ns_;
  ChunkStore& chunks_;
  const uint64_t chunk_size_;
  ContentReplication* replication_ = nullptr;
  BufferPool buffers_;
  // Lock order: mu_, then an OpenFile's lock, then the Namespace's lock, then in_use_mu_.
  std::mutex mu_;
  // A leaf lock for in_use(), which the Namespace calls while holding its own lock.
  std::mutex in_use_mu_;
  std::unordered_set<Gid, GidHash> in_use_;
  struct Slot {
    std::shared_ptr<OpenFile> file;
    int refs = 0;
  };
  std::unordered_map<Gid, Slot, GidHash> open_;
};

}  // namespace wormhole
