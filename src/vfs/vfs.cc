#include "vfs/vfs.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <unordered_set>

namespace wormhole {

// Idle chunk buffers kept for reuse: enough for a few files written at once.
constexpr size_t kIdleBuffers = 16;

Vfs::Vfs(Namespace& ns, ChunkStore& chunks, uint64_t chunk_size)
    : ns_(ns), chunks_(chunks), chunk_size_(chunk_size), buffers_(chunk_size, kIdleBuffers) {}

int64_t Vfs::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int Vfs::open(Gid inode, std::shared_ptr<OpenFile>* file, bool* reloaded) {
  bool existed;
  {
    std::lock_guard lock(mu_);
    Slot& slot = open_[inode];
    existed = slot.file != nullptr;
    if (!existed) {
      auto f = std::make_shared<OpenFile>(ns_, chunks_, buffers_, chunk_size_, inode, replication_);
      if (int err = f->load()) {
        open_.erase(inode);
        return err;
      }
      slot.file = std::move(f);
      std::lock_guard in_use_lock(in_use_mu_);
      in_use_.insert(inode);
    }
    slot.refs++;
    *file = slot.file;
  }
  // Outside the table lock: the file's own lock may be held by a flush waiting on holders.
  if (existed) (*file)->note_new_version();  // cheap when nothing changed: one version read
  const bool changed = existed && (*file)->refresh();
  // A version that could not be loaded counts as a change: the kernel must not keep
  // serving the pages of the one before (its reads then fail here, as a new open's would).
  if (reloaded) *reloaded = changed || (existed && (*file)->load_failed());
  return 0;
}

void Vfs::note_new_versions(const std::vector<Gid>& inodes) {
  std::lock_guard lock(mu_);
  for (Gid g : inodes) {
    auto it = open_.find(g);
    if (it != open_.end()) it->second.file->note_new_version();
  }
}

int Vfs::release(const std::shared_ptr<OpenFile>& file, bool commit_writes) {
  int err = commit_writes ? file->flush(false) : 0;
  bool last = false;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(file->inode());
    if (it != open_.end() && --it->second.refs <= 0) {
      // Flush again under the table lock: no writer can slip in between.
      int err2 = it->second.file->flush(false);
      if (!err) err = err2;
      open_.erase(it);
      last = true;
      std::lock_guard in_use_lock(in_use_mu_);
      in_use_.erase(file->inode());
    }
  }
  if (last) ns_.purge_if_unused(file->inode());
  return err;
}

bool Vfs::in_use(Gid inode) {
  std::lock_guard lock(in_use_mu_);
  return in_use_.count(inode) > 0;
}

int Vfs::getattr(uint64_t ino, Attr* attr) {
  if (int err = ns_.getattr(ino, attr)) return err;
  overlay(attr);
  return 0;
}

void Vfs::overlay(Attr* attr) {
  if (attr->type != pb::REGULAR) return;
  std::shared_ptr<OpenFile> f;
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(attr->id);
    if (it == open_.end()) return;
    f = it->second.file;
  }
  f->overlay(attr);
}

int Vfs::truncate(Gid inode, uint64_t size) {
  std::shared_ptr<OpenFile> f;
  if (int err = open(inode, &f)) return err;
  int err = f->truncate(size, now_ns());
  int err2 = release(f);
  return err ? err : err2;
}

uint64_t Vfs::collect_garbage(int64_t grace_s, uint64_t cache_bytes) {
  std::unordered_set<std::string> live, cached;
  if (!ns_.for_each_chunk([&](const std::string& sha, bool held) { (held ? live : cached).insert(sha); })) {
    // Chunks missing from a partial list would look unreferenced and be deleted.
    spdlog::error("garbage collection skipped: the metadata store could not be read whole (or a snapshot was "
                  "being installed)");
    return 0;
  }
  // The open files are taken under the table lock, their pending chunks asked for after
  // it is released: a file's lock may be held by a flush waiting on the network (sync
  // mode), and every getattr, open and release needs the table lock. A file opened after
  // the list was taken writes chunks younger than the grace period, which GC keeps.
  std::vector<std::shared_ptr<OpenFile>> files;
  {
    std::lock_guard lock(mu_);
    files.reserve(open_.size());
    for (auto& [g, slot] : open_) files.push_back(slot.file);
  }
  std::vector<std::string> pending;
  for (const auto& f : files) f->pending_chunks(&pending);
  live.insert(pending.begin(), pending.end());
  for (const std::string& sha : live) cached.erase(sha);  // one held reference keeps it
  return chunks_.collect_garbage(live, grace_s, cached, cache_bytes);
}

}  // namespace wormhole
