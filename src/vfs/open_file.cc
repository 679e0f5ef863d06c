#include "vfs/open_file.h"

#include <algorithm>
#include <map>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

#include "common/limits.h"

namespace wormhole {

OpenFile::OpenFile(Namespace& ns, ChunkStore& chunks, BufferPool& buffers, uint64_t chunk_size, Gid inode,
                   ContentReplication* replication)
    : ns_(ns),
      store_(chunks),
      buffers_(buffers),
      chunk_size_(chunk_size),
      readahead_chunks_(std::clamp<uint64_t>(kReadAheadBytes / std::max<uint64_t>(chunk_size, 1), kMinReadAheadChunks,
                                             kMaxReadAheadChunks)),
      inode_(inode),
      replication_(replication) {
  assert(chunk_size_ > 0 && chunk_size_ <= (1u << 30));
}

int OpenFile::load() {
  std::unique_lock lock(mu_);
  Gid version;
  pb::VersionRecord v;
  if (int err = ns_.current_version(inode_, &version, &v)) return err;
  return load_locked(version, v);
}

bool OpenFile::refresh() {
  if (!maybe_stale_.load(std::memory_order_acquire)) return false;
  std::unique_lock lock(mu_);
  return refresh_locked();
}

bool OpenFile::refresh_locked() {
  maybe_stale_.store(false, std::memory_order_release);
  // Unflushed writes here stay: their commit names the old base, which makes it concurrent
  // with the new version (a conflict, decided the same way on every pod).
  if (modified_ || !dirty_.empty() || !sealing_.empty()) return false;
  Gid version;
  pb::VersionRecord v;
  // A failed load left base_version_ as it was, so a version that failed is tried again.
  const int err = ns_.current_version(inode_, &version, &v);
  if (err == EIO) {
    // The current version's record could not be read: not known to be this handle's, so
    // no stale content is served; tried again at the next read.
    load_error_ = EIO;
    maybe_stale_.store(true, std::memory_order_release);
    return false;
  }
  // ENOENT: the file is gone (deleted, and purged): an open handle keeps its content.
  if (err != 0) return false;
  if (version == base_version_) {
    load_error_ = 0;  // what this handle holds is the current version (a read error passed)
    return false;
  }
  if (load_locked(version, v) != 0) {
    maybe_stale_.store(true, std::memory_order_release);  // reads fail with EIO; try again next time
    return false;
  }
  readahead_end_ = 0;
  read_end_ = 0;
  sequential_reads_ = 0;
  return true;
}

int OpenFile::load_locked(Gid version, const pb::VersionRecord& v) {
  // All or nothing: a version that cannot be loaded leaves the handle as it was, with the
  // error for its reads. Half-loaded state (the new size over an empty or partial chunk
  // list) read as zeros, and a write through the handle committed those zeros over the
  // file as a descendant of the version it could not load.
  const Gid old_version = base_version_;
  const uint64_t old_size = size_;
  const int64_t old_mtime_ns = mtime_ns_;
  std::vector<uint64_t> old_holders = std::move(holders_);
  std::map<uint64_t, std::vector<pb::ChunkRef>> old_chunks = std::move(chunks_);
  load_error_ = adopt_locked(version, v);
  if (load_error_ != 0) {
    base_version_ = old_version;
    size_ = old_size;
    mtime_ns_ = old_mtime_ns;
    holders_ = std::move(old_holders);
    chunks_ = std::move(old_chunks);
  }
  return load_error_;
}

int OpenFile::adopt_locked(Gid version, const pb::VersionRecord& v) {
  base_version_ = version;
  size_ = v.size();
  mtime_ns_ = v.mtime_ns();
  holders_.assign(v.holders().begin(), v.holders().end());
  chunks_.clear();
  if (v.incomplete()) {
    spdlog::error("version {} of {} is not known whole on this pod (a delta over a version it lacks): EIO",
                  base_version_.str(), ns_.path_of(inode_));
    return EIO;
  }
  if (size_ > kMaxFileSize) {
    spdlog::error("version {} of {} claims {} bytes, more than the largest file size", base_version_.str(),
                  ns_.path_of(inode_), size_);
    return EIO;
  }
  // Invariant (reads and seals rely on it): pieces sorted by (index, span_offset), not
  // overlapping, each non-empty, within its span of the file and within a chunk file's
  // size, a bounded number per span; inline pieces start their (inline) file.
  const uint64_t count = chunk_count();
  for (const pb::ChunkRef& c : v.chunks()) {
    const bool same_span = !chunks_.empty() && c.index() == chunks_.rbegin()->first;
    const bool ordered = chunks_.empty() || c.index() > chunks_.rbegin()->first ||
                         (same_span && c.span_offset() >= chunks_.rbegin()->second.back().span_offset() +
                                                                 uint64_t{chunks_.rbegin()->second.back().length()});
    const uint64_t end = uint64_t{c.span_offset()} + c.length();
    if (!ordered || c.index() >= count || c.sha256().empty() || c.length() == 0 || end > span(c.index()) ||
        uint64_t{c.file_offset()} + c.length() > chunk_size_ ||
        (same_span && chunks_.rbegin()->second.size() >= kMaxPiecesPerSpan) ||
        (!c.inline_data().empty() && c.file_offset() != 0)) {
      spdlog::error("version {} of {} has a malformed chunk list (piece at {}+{} of chunk {} of {}); chunk size changed?",
                    base_version_.str(), ns_.path_of(inode_), c.index(), c.span_offset(), c.index(), count);
      return EIO;
    }
    const std::string& data = c.inline_data();
    if (!data.empty() && (data.size() != c.length() || ChunkStore::hash(data.data(), data.size()) != c.sha256())) {
      spdlog::error("inline chunk of {} does not match its hash: corrupt metadata", ns_.path_of(inode_));
      return EIO;
    }
    chunks_[c.index()].push_back(c);
  }
  return 0;
}

const std::vector<pb::ChunkRef>* OpenFile::stored_pieces(uint64_t index) const {
  auto it = chunks_.find(index);
  return it == chunks_.end() ? nullptr : &it->second;
}

std::vector<pb::ChunkRef> OpenFile::chunk_list() const {
  std::vector<pb::ChunkRef> out;
  out.reserve(chunks_.size());
  for (auto& [index, pieces] : chunks_) out.insert(out.end(), pieces.begin(), pieces.end());
  return out;
}

namespace {

// The part [from, to) (span offsets, within the piece) of piece `p`. An inline piece keeps
// only those bytes (and their hash): inline data always starts at the piece.
pb::ChunkRef sub_piece(const pb::ChunkRef& p, uint32_t from, uint32_t to) {
  pb::ChunkRef out = p;
  const uint32_t skip = from - p.span_offset();
  out.set_span_offset(from);
  out.set_length(to - from);
  if (!p.inline_data().empty()) {
    out.set_inline_data(p.inline_data().substr(skip, to - from));
    out.set_sha256(ChunkStore::hash(out.inline_data().data(), out.inline_data().size()));
  } else {
    out.set_file_offset(p.file_offset() + skip);
  }
  return out;
}

}  // namespace

uint64_t OpenFile::span(uint64_t index) const {
  const uint64_t start = index * chunk_size_;
  if (start >= size_) return 0;
  return std::min(chunk_size_, size_ - start);
}

bool OpenFile::covers(const DirtyChunk& d, uint32_t start, uint32_t end) {
  if (start >= end) return true;
  for (auto& [s, e] : d.written)
    if (s <= start && e >= end) return true;
  return false;
}

void OpenFile::add_range(DirtyChunk& d, uint32_t start, uint32_t end) {
  if (start >= end) return;
  auto& w = d.written;
  w.emplace_back(start, end);
  std::sort(w.begin(), w.end());
  size_t out = 0;
  for (size_t i = 1; i < w.size(); ++i) {
    if (w[i].first <= w[out].second)
      w[out].second = std::max(w[out].second, w[i].second);
    else
      w[++out] = w[i];
  }
  w.resize(out + 1);
}

OpenFile::DirtyChunk& OpenFile::make_dirty(uint64_t index) {
  auto it = dirty_.find(index);
  if (it != dirty_.end()) return it->second;
  DirtyChunk& d = dirty_[index];
  auto s = sealing_.find(index);
  if (s != sealing_.end()) {
    // Written again while being stored: start from the bytes being stored.
    buffers_.reserve_full(d.data);
    d.data.assign(s->second.data->begin(), s->second.data->end());
    d.base_loaded = true;
    // The bytes being stored are the whole content, but which of them changed is unknown.
    d.whole = true;
    return d;
  }
  // A chunk with no stored bytes (a hole, or beyond the old end) is all zeros: the zero
  // fill of `data` already is its base.
  d.base_loaded = stored_pieces(index) == nullptr;
  return d;
}

int OpenFile::load_base(uint64_t index, DirtyChunk& d) {
  if (d.base_loaded) return 0;
  const uint64_t limit = span(index);
  ByteBuffer merged;
  if (const std::vector<pb::ChunkRef>* pieces = stored_pieces(index)) {
    const pb::ChunkRef& last = pieces->back();
    const uint64_t stored = std::min<uint64_t>(uint64_t{last.span_offset()} + last.length(), limit);
    merged.resize(stored);
    ssize_t n = read_clean(index, 0, stored, merged.data());
    if (n < 0) return static_cast<int>(-n);
  }
  size_t need = merged.size();
  for (auto& [s, e] : d.written) need = std::max<size_t>(need, e);
  const size_t stored_end = merged.size();
  merged.resize(std::max(need, d.data.size()));
  std::memset(merged.data() + stored_end, 0, merged.size() - stored_end);  // past the stored bytes: zeros
  for (auto& [s, e] : d.written) std::memcpy(merged.data() + s, d.data.data() + s, e - s);
  buffers_.give_back(std::move(d.data));
  d.data = std::move(merged);
  d.base_loaded = true;
  // `written` stays: seal() stores only the blocks it touched.
  return 0;
}

int OpenFile::seal(uint64_t index) {
  auto it = dirty_.find(index);
  if (it == dirty_.end()) return 0;
  DirtyChunk& d = it->second;
  const uint64_t limit = span(index);
  if (int r = seal_blocks(index, d); r >= 0) {
    if (r) return r;
    buffers_.give_back(std::move(d.data));
    dirty_.erase(it);
    sealing_.erase(index);  // an older store of this chunk still in flight must not win
    return 0;
  }
  if (!d.base_loaded && !covers(d, 0, static_cast<uint32_t>(limit)))
    if (int err = load_base(index, d)) return err;
  if (d.data.size() > limit) d.data.resize(limit);
  // Trailing bytes past data.size() within the span read as zeros, so a short chunk is
  // exact. An all-empty chunk becomes a hole.
  pb::ChunkRef ref;
  ref.set_index(index);
  if (!d.data.empty() && d.data.size() <= kInlineMaxBytes) {
    ref.set_sha256(ChunkStore::hash(d.data.data(), d.data.size()));
    ref.set_length(static_cast<uint32_t>(d.data.size()));
    ref.set_inline_data(d.data.data(), d.data.size());
  } else if (!d.data.empty()) {
    std::string sha;
    if (int err = store_.put(d.data.data(), d.data.size(), &sha)) {
      spdlog::error("cannot store chunk {} of {}: {}", index, ns_.path_of(inode_), std::strerror(err));
      return err;
    }
    ref.set_sha256(sha);
    ref.set_length(static_cast<uint32_t>(d.data.size()));
  }
  if (ref.sha256().empty())
    chunks_.erase(index);
  else
    chunks_[index] = {ref};
  buffers_.give_back(std::move(d.data));
  dirty_.erase(it);
  sealing_.erase(index);  // an older store of this chunk still in flight must not win
  return 0;
}

int OpenFile::seal_blocks(uint64_t index, DirtyChunk& d) {
  const std::vector<pb::ChunkRef>* base = stored_pieces(index);
  // A hole or a fully rewritten span gains nothing: one new file holds what it stores. A
  // span of one block is as cheap to rewrite whole, and stays one piece.
  if (!base || d.whole || chunk_size_ <= kBlockBytes) return -1;
  const uint32_t limit = static_cast<uint32_t>(span(index));
  if (limit <= kBlockBytes || covers(d, 0, limit)) return -1;
  // The touched pages as runs of adjacent pages [start, end), clipped to the span.
  std::vector<std::pair<uint32_t, uint32_t>> runs;
  auto add_run = [&](uint32_t s, uint32_t e) {
    if (!runs.empty() && s <= runs.back().second)
      runs.back().second = std::max(runs.back().second, e);
    else
      runs.emplace_back(s, e);
  };
  uint64_t run_bytes = 0;
  for (auto [s, e] : d.written) {
    e = std::min(e, limit);
    if (s >= e) continue;
    add_run(s / kPageBytes * kPageBytes,
            static_cast<uint32_t>(std::min<uint64_t>((uint64_t{e} + kPageBytes - 1) / kPageBytes * kPageBytes, limit)));
  }
  for (auto& [s, e] : runs) run_bytes += e - s;
  if (run_bytes > kMaxSealBytes) return -1;
  // The base's pieces cut around the runs (each run becomes one new piece).
  auto cut_base = [&] {
    std::vector<pb::ChunkRef> pieces;
    for (const pb::ChunkRef& p : *base) {
      uint32_t pos = p.span_offset();
      const uint32_t end = p.span_offset() + p.length();
      for (auto& [s, e] : runs) {
        if (e <= pos || s >= end) continue;
        if (s > pos) pieces.push_back(sub_piece(p, pos, s));
        pos = std::max(pos, e);
      }
      if (pos < end) pieces.push_back(sub_piece(p, pos, end));
    }
    return pieces;
  };
  std::vector<pb::ChunkRef> pieces = cut_base();
  // Small pieces pile up under small writes (a log or a database's WAL appended a page per
  // commit): beyond kMaxSmallPieces, the range from the first small piece to the last is
  // rewritten as one piece (if it is at most kMaxMergeBytes: a few commits' worth), which
  // costs about a block every kMaxSmallPieces commits instead of the span's rewrite.
  uint32_t small_start = UINT32_MAX, small_end = 0;
  size_t small = 0;
  auto note_small = [&](uint32_t s, uint32_t e) {
    if (e - s >= kBlockBytes) return;
    ++small;
    small_start = std::min(small_start, s);
    small_end = std::max(small_end, e);
  };
  for (const pb::ChunkRef& p : pieces) note_small(p.span_offset(), p.span_offset() + p.length());
  for (auto& [s, e] : runs) note_small(s, e);
  if (small > kMaxSmallPieces && small_end - small_start <= kMaxMergeBytes) {
    std::vector<std::pair<uint32_t, uint32_t>> widened;
    bool merged = false;
    for (auto& [s, e] : runs) {
      if (e < small_start || s > small_end) {
        if (!merged && s > small_end) {
          widened.emplace_back(small_start, small_end);
          merged = true;
        }
        widened.emplace_back(s, e);
      } else {  // overlaps or touches the merged range: part of it
        small_start = std::min(small_start, s);
        small_end = std::max(small_end, e);
      }
    }
    if (!merged) widened.emplace_back(small_start, small_end);
    runs = std::move(widened);
    pieces = cut_base();
  }
  // Compaction: a chunk file of which the span's pieces now use less than a quarter (the
  // rest overwritten by later writes) would stay whole on disk for those few bytes. Its
  // pieces are rewritten with the runs (at most a quarter of a chunk per file), and GC frees
  // the file once no version names it.
  std::map<std::string, uint64_t> live;  // chunk file -> bytes the span's pieces use
  for (const pb::ChunkRef& p : pieces)
    if (p.inline_data().empty()) live[p.sha256()] += p.length();
  bool compacted = false;
  for (auto& [sha, bytes] : live) {
    const int64_t size = store_.size_of(sha);
    if (size < static_cast<int64_t>(kCompactFilesFrom) || bytes * 4 >= static_cast<uint64_t>(size)) continue;
    for (const pb::ChunkRef& p : pieces)
      if (p.sha256() == sha) runs.emplace_back(p.span_offset(), p.span_offset() + p.length());
    compacted = true;
  }
  if (compacted) {
    std::sort(runs.begin(), runs.end());
    std::vector<std::pair<uint32_t, uint32_t>> sorted;
    sorted.swap(runs);
    for (auto& [s, e] : sorted) add_run(s, e);
    pieces = cut_base();
  }
  if (pieces.size() + runs.size() > kMaxSealPieces) return -1;  // consolidate: seal whole
  ByteBuffer buf;
  for (auto& [s, e] : runs) {
    // The run's bytes: the base's (only these are read), the written ones over them.
    buf.resize(e - s);
    if (d.base_loaded) {
      const size_t have = d.data.size() > s ? std::min<size_t>(e - s, d.data.size() - s) : 0;
      if (have) std::memcpy(buf.data(), d.data.data() + s, have);
      std::memset(buf.data() + have, 0, buf.size() - have);
    } else {
      if (ssize_t r = read_clean(index, s, e - s, buf.data()); r < 0) return static_cast<int>(-r);
      for (auto [ws, we] : d.written) {
        ws = std::max(ws, s);
        we = std::min(we, e);
        if (ws < we) std::memcpy(buf.data() + (ws - s), d.data.data() + ws, we - ws);
      }
    }
    // Stored as a chunk file even when small: inline bytes would sit in the version record,
    // which is rewritten whole at each commit with every piece of the file.
    std::string sha;
    if (int err = store_.put(buf.data(), buf.size(), &sha)) {
      spdlog::error("cannot store blocks of chunk {} of {}: {}", index, ns_.path_of(inode_), std::strerror(err));
      return err;
    }
    pb::ChunkRef ref;
    ref.set_index(index);
    ref.set_span_offset(s);
    ref.set_length(e - s);
    ref.set_sha256(sha);
    pieces.push_back(std::move(ref));
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const pb::ChunkRef& a, const pb::ChunkRef& b) { return a.span_offset() < b.span_offset(); });
  if (pieces.empty())
    chunks_.erase(index);
  else
    chunks_[index] = std::move(pieces);
  return 0;
}

int OpenFile::seal_all() {
  while (!dirty_.empty())
    if (int err = seal(dirty_.begin()->first)) return err;
  return 0;
}

int OpenFile::write(uint64_t offset, const char* data, size_t len, int64_t now_ns) {
  std::unique_lock lock(mu_);
  if (len == 0) return 0;
  if (offset > kMaxFileSize || len > kMaxFileSize - offset) return EFBIG;
  std::vector<std::pair<uint64_t, std::shared_ptr<ByteBuffer>>> full_chunks;
  const uint64_t end = offset + len;
  if (end > size_) size_ = end;
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t index = pos / chunk_size_;
    const uint64_t in_chunk = pos - index * chunk_size_;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(end - pos, chunk_size_ - in_chunk));
    DirtyChunk& d = make_dirty(index);
    if (d.data.size() < in_chunk + n) {
      // Past the small-file range, take a whole chunk buffer once instead of regrowing.
      if (in_chunk + n > kInlineMaxBytes) buffers_.reserve_full(d.data);
      const size_t old_size = d.data.size();
      d.data.resize(in_chunk + n);  // uninitialised: filled below
      if (in_chunk > old_size) std::memset(d.data.data() + old_size, 0, in_chunk - old_size);  // a gap is zeros
    }
    std::memcpy(d.data.data() + in_chunk, data + (pos - offset), n);
    if (!d.whole) {
      add_range(d, static_cast<uint32_t>(in_chunk), static_cast<uint32_t>(in_chunk + n));
      if (d.base_loaded && d.written.size() > kMaxWrittenRanges) {
        d.whole = true;  // too scattered for a block seal: stop tracking
        d.written.clear();
      }
    }
    // A completely written chunk is sealed right away: sequential writers keep one chunk
    // in memory, and the bytes reach disk while the writer continues. (A base merged in
    // by a read does not make the chunk written: the block seal stores less.)
    const bool full = in_chunk + n == chunk_size_ &&
                      (d.whole ? d.data.size() == chunk_size_ : covers(d, 0, static_cast<uint32_t>(chunk_size_)));
    pos += n;
    modified_ = true;
    mtime_ns_ = now_ns;
    if (full) {
      auto buf = std::make_shared<ByteBuffer>(std::move(d.data));
      dirty_.erase(index);
      sealing_[index] = Sealing{buf};
      full_chunks.emplace_back(index, std::move(buf));
    }
  }
  // Bound the write-back area: seal the lowest dirty chunks when too many are dirty.
  int bound_err = 0;
  while (!bound_err && dirty_.size() > kMaxDirtyChunks) bound_err = seal(dirty_.begin()->first);
  // Always: the chunks moved to sealing_ above must be stored or put back.
  const int seal_err = seal_outside_lock(lock, full_chunks);
  return bound_err ? bound_err : seal_err;
}

int OpenFile::seal_outside_lock(std::unique_lock<std::shared_mutex>& lock,
                                std::vector<std::pair<uint64_t, std::shared_ptr<ByteBuffer>>>& jobs) {
  if (jobs.empty()) return 0;
  struct Stored {
    std::string sha;
    int err;
  };
  std::vector<Stored> results(jobs.size());
  lock.unlock();
  for (size_t i = 0; i < jobs.size(); ++i)
    results[i].err = store_.put(jobs[i].second->data(), jobs[i].second->size(), &results[i].sha);
  lock.lock();
  int first_err = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    auto& [index, buf] = jobs[i];
    auto it = sealing_.find(index);
    // Install only if nothing newer (a write, a truncate) replaced this chunk meanwhile.
    if (it == sealing_.end() || it->second.data != buf) continue;
    sealing_.erase(it);
    if (results[i].err) {
      // Keep the bytes as a dirty chunk: a later flush retries, nothing is lost.
      spdlog::error("cannot store chunk {} of {}: {}", index, ns_.path_of(inode_), std::strerror(results[i].err));
      if (!first_err) first_err = results[i].err;
      if (dirty_.count(index)) {
        // Written again while being stored: that dirty chunk started from these bytes
        // (make_dirty) and holds the newer writes over them; putting these back would
        // undo those writes.
        buffers_.give_back(std::move(*buf));
        continue;
      }
      DirtyChunk& d = dirty_[index];
      d.data = std::move(*buf);
      d.base_loaded = true;
      d.whole = true;
      continue;
    }
    pb::ChunkRef ref;
    ref.set_index(index);
    ref.set_sha256(results[i].sha);
    ref.set_length(static_cast<uint32_t>(buf->size()));
    if (index < chunk_count()) chunks_[index] = {ref};
    buffers_.give_back(std::move(*buf));
  }
  sealed_.notify_all();
  return first_err;
}

int OpenFile::truncate(uint64_t size, int64_t now_ns) {
  if (size > kMaxFileSize) return EFBIG;
  std::unique_lock lock(mu_);
  // Even to the same size, a truncate is a change of the content's times (as on ext4,
  // and what `truncate -s` or O_TRUNC on an empty file are used for).
  modified_ = true;
  mtime_ns_ = now_ns;
  if (size == size_) return 0;
  if (size > size_) {
    // Growing: the new range is a hole; stored bytes never extend past the old end.
    size_ = size;
    return 0;
  }
  const uint64_t count = (size + chunk_size_ - 1) / chunk_size_;
  for (auto it = dirty_.lower_bound(count); it != dirty_.end(); it = dirty_.erase(it))
    buffers_.give_back(std::move(it->second.data));
  sealing_.erase(sealing_.lower_bound(count), sealing_.end());
  if (count > 0 && sealing_.count(count - 1)) {
    make_dirty(count - 1);  // copies the bytes being stored; clipped below
    sealing_.erase(count - 1);
  }
  size_ = size;
  if (count > 0) {
    const uint64_t last = count - 1;
    const uint64_t limit = span(last);
    auto it = dirty_.find(last);
    if (it != dirty_.end()) {
      // Bytes written beyond the new end never come back: cut them off.
      DirtyChunk& d = it->second;
      if (d.data.size() > limit) d.data.resize(limit);
      auto& w = d.written;
      while (!w.empty() && w.back().first >= limit) w.pop_back();
      if (!w.empty()) w.back().second = std::min<uint32_t>(w.back().second, static_cast<uint32_t>(limit));
    }
    // Nor do stored ones: the last span's pieces are cut at the new end (no bytes are read
    // or stored for that: a piece just names fewer of its file's bytes).
    auto p = chunks_.find(last);
    if (p != chunks_.end()) {
      std::vector<pb::ChunkRef>& pieces = p->second;
      while (!pieces.empty() && pieces.back().span_offset() >= limit) pieces.pop_back();
      if (!pieces.empty() && pieces.back().span_offset() + uint64_t{pieces.back().length()} > limit)
        pieces.back() = sub_piece(pieces.back(), pieces.back().span_offset(), static_cast<uint32_t>(limit));
      if (pieces.empty()) chunks_.erase(p);
    }
  }
  chunks_.erase(chunks_.lower_bound(count), chunks_.end());
  return 0;
}

ssize_t OpenFile::read_stored(uint64_t index, const pb::ChunkRef& ref, uint64_t in_piece, size_t n, char* out) {
  if (!ref.inline_data().empty() || ref.length() == 0) {
    // load_locked checked that inline data is exactly the piece.
    const std::string& data = ref.inline_data();
    if (in_piece >= data.size()) return 0;
    const size_t count = std::min<size_t>(n, data.size() - in_piece);
    std::memcpy(out, data.data() + in_piece, count);
    return static_cast<ssize_t>(count);
  }
  const uint64_t in_chunk = ref.file_offset() + in_piece;
  ssize_t r = store_.read(ref.sha256(), in_chunk, n, out);
  if (r == -EIO && replication_) {
    const int aside = store_.set_aside(ref.sha256());
    if (aside == 0) {
      // This pod's copy does not match its name (the store logged it): fetched whole again
      // from a holder, which also restores this pod's copy if it is a holder itself.
      spdlog::error("read of {}: the copy of chunk {} here is corrupt; fetching it from a holder",
                    ns_.path_of(inode_), index);
      r = replication_->fetch(ref.sha256(), holders_) == 0 ? store_.read(ref.sha256(), in_chunk, n, out) : -EIO;
    } else if (aside == EEXIST) {
      r = store_.read(ref.sha256(), in_chunk, n, out);  // another reader restored it meanwhile
    }
  }
  if (replication_ && (r == -ENOENT || remote_)) {
    // A reader streaming through the file (each read starting where the last ended, within
    // a window: kernel read-ahead and parallel FUSE threads reorder its requests) gets whole
    // chunks, and the next ones fetched ahead. Any other read fetches only the blocks it
    // needs: a random reader would pay for chunks it never reads. Two reads in a row must
    // look sequential, so that a random reader landing near its last read by chance does
    // not start a read-ahead.
    const uint64_t at = index * chunk_size_ + ref.span_offset() + in_piece;
    const uint64_t last_end = read_end_.exchange(at + n);
    const bool follows = at + kStreamingSlackBytes >= last_end && at <= last_end + kStreamingSlackBytes;
    bool streaming = false;
    if (!follows)
      sequential_reads_ = 0;
    else  // saturates: no wrap-around after 2^32 reads
      streaming = sequential_reads_.load() >= kStreamingAfterReads ||
                  sequential_reads_.fetch_add(1) + 1 >= kStreamingAfterReads;
    if (r == -ENOENT) {
      remote_ = true;
      if (!streaming) {
        r = replication_->read_range(ref.sha256(), holders_, in_chunk, n, out);
        if (r == -ENOTSUP) r = -ENOENT;  // a legacy chunk (no block table): fetched whole below
      }
    }
    if (streaming) read_ahead(index);
    if (r == -ENOENT) {
      // Not here: this pod does not hold the version (or lost the chunk). Fetch it whole
      // from a holder.
      if (replication_->fetch(ref.sha256(), holders_) == 0) r = store_.read(ref.sha256(), in_chunk, n, out);
    }
  }
  if (r < 0) {
    // A chunk this pod does not hold (remote_) failed because no holder gave it (down,
    // too slow, or none has a good copy); one it holds, because its copy is unreadable.
    spdlog::error("read of {} failed at chunk {}: {}", ns_.path_of(inode_), index,
                  remote_ ? "no holder gave the chunk" : r == -ENOENT ? "chunk missing" : "chunk corrupt or unreadable");
    return -EIO;
  }
  if (static_cast<size_t>(r) < n) {
    // The version says the file holds these bytes: a shorter file is damaged (or the
    // metadata is), and zeros would be made-up content.
    spdlog::error("read of {} failed at chunk {}: chunk file {} has fewer bytes than its piece ({}+{})",
                  ns_.path_of(inode_), index, store_.path_of(ref.sha256()), ref.file_offset(), ref.length());
    return -EIO;
  }
  return r;
}

void OpenFile::read_ahead(uint64_t index) {
  const uint64_t end = std::min<uint64_t>(index + 1 + readahead_chunks_, chunk_count());
  uint64_t from = std::max(readahead_end_.load(), index + 1);
  // Half the window is still ahead: nothing to ask yet (keeps stat calls off most reads).
  if (from >= end || from > index + 1 + readahead_chunks_ / 2) return;
  readahead_end_ = end;
  std::vector<std::string> wanted;
  for (auto it = chunks_.lower_bound(from); it != chunks_.end() && it->first < end; ++it)
    for (const pb::ChunkRef& ref : it->second) {
      if (!ref.inline_data().empty() || store_.contains(ref.sha256())) continue;
      if (std::find(wanted.begin(), wanted.end(), ref.sha256()) == wanted.end()) wanted.push_back(ref.sha256());
    }
  if (!wanted.empty()) replication_->prefetch(wanted, holders_);
}

ssize_t OpenFile::read_clean(uint64_t index, uint64_t in_chunk, size_t n, char* out) {
  const std::vector<pb::ChunkRef>* pieces = stored_pieces(index);
  const uint64_t end = in_chunk + n;
  uint64_t pos = in_chunk;  // bytes before it are filled
  if (pieces) {
    // The first piece that ends past in_chunk (pieces are sorted and disjoint).
    auto p = std::upper_bound(pieces->begin(), pieces->end(), in_chunk, [](uint64_t off, const pb::ChunkRef& r) {
      return off < uint64_t{r.span_offset()} + r.length();
    });
    for (; p != pieces->end() && p->span_offset() < end; ++p) {
      const uint64_t s = std::max<uint64_t>(p->span_offset(), in_chunk);
      const uint64_t e = std::min<uint64_t>(uint64_t{p->span_offset()} + p->length(), end);
      if (s > pos) std::memset(out + (pos - in_chunk), 0, s - pos);  // a hole between pieces
      ssize_t r = read_stored(index, *p, s - p->span_offset(), e - s, out + (s - in_chunk));
      if (r < 0) return r;
      pos = e;
    }
  }
  if (pos < end) std::memset(out + (pos - in_chunk), 0, end - pos);  // hole or past the stored bytes
  return static_cast<ssize_t>(n);
}

ssize_t OpenFile::read_locked(uint64_t offset, size_t len, char* out) {
  if (offset >= size_) return 0;
  const uint64_t end = std::min<uint64_t>(size_, offset + len);
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t index = pos / chunk_size_;
    const uint64_t in_chunk = pos - index * chunk_size_;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(end - pos, chunk_size_ - in_chunk));
    char* dst = out + (pos - offset);
    auto it = dirty_.find(index);
    auto sealing = it == dirty_.end() ? sealing_.find(index) : sealing_.end();
    if (sealing != sealing_.end()) {
      const ByteBuffer& d = *sealing->second.data;
      size_t have = d.size() > in_chunk ? std::min<size_t>(n, d.size() - in_chunk) : 0;
      if (have) std::memcpy(dst, d.data() + in_chunk, have);
      if (have < n) std::memset(dst + have, 0, n - have);
    } else if (it == dirty_.end()) {
      ssize_t r = read_clean(index, in_chunk, n, dst);
      if (r < 0) return r;
    } else {
      const DirtyChunk& d = it->second;
      if (!d.base_loaded && !covers(d, static_cast<uint32_t>(in_chunk), static_cast<uint32_t>(in_chunk + n))) {
        // The stored bytes with the written ones over them: only the range asked for is
        // read (loading the whole base would cost a chunk per small read).
        ssize_t r = read_clean(index, in_chunk, n, dst);
        if (r < 0) return r;
        for (auto [s, e] : d.written) {
          const uint64_t from = std::max<uint64_t>(s, in_chunk), to = std::min<uint64_t>(e, in_chunk + n);
          if (from < to) std::memcpy(dst + (from - in_chunk), d.data.data() + from, to - from);
        }
        pos += n;
        continue;
      }
      size_t have = d.data.size() > in_chunk ? std::min<size_t>(n, d.data.size() - in_chunk) : 0;
      if (have) std::memcpy(dst, d.data.data() + in_chunk, have);
      if (have < n) std::memset(dst + have, 0, n - have);
    }
    pos += n;
  }
  return static_cast<ssize_t>(end - offset);
}

ssize_t OpenFile::read(uint64_t offset, size_t len, char* out) {
  refresh();
  std::shared_lock lock(mu_);
  // The current version could not be loaded (logged, naming the file): EIO, not the
  // content this handle held before (a new open fails the same way) — unless this handle
  // changed it since: its own writes are what it reads.
  if (load_error_ != 0 && !modified_) return -load_error_;
  return read_locked(offset, len, out);
}

int OpenFile::flush(bool sync) {
  std::unique_lock lock(mu_);
  sealed_.wait(lock, [this] { return sealing_.empty(); });
  if (int err = seal_all()) return err;
  if (modified_) {
    // In sync mode place() copies the chunks before the version exists anywhere: a holder
    // that learns of the version already has its content.
    const std::vector<pb::ChunkRef> list = chunk_list();
    std::vector<uint64_t> holders;
    if (replication_) holders = replication_->place(inode_, base_version_, list);
    Gid version;
    if (int err = ns_.commit(inode_, base_version_, size_, list, mtime_ns_, holders, false, &version, chunk_count())) return err;
    const Gid base = std::exchange(base_version_, version);
    holders_ = holders.empty() ? std::vector<uint64_t>{ns_.pod_id()} : holders;
    modified_ = false;
    load_error_ = 0;  // the handle's state is a committed version now
    // fsync: the log sync is a group commit outside the namespace lock (a synced commit
    // held it across the disk sync, stopping every other FUSE thread's metadata). It makes
    // this pod's pending chunks durable first (ChunkStore::sync_pending: an fdatasync per
    // chunk written since the last group commit, not a syncfs of the whole file system,
    // which cost a SQLite commit ~30 KB of journal writes). The version is committed
    // either way: a failed sync is reported, not committed again.
    if (sync)
      if (int err = ns_.make_durable()) return err;
    if (replication_) {
      // Other handles wait meanwhile; the file's state is consistent (committed) already.
      replication_->committed(version, base, list, holders);
    }
    return 0;
  }
  if (sync) {
    // Nothing new through this handle, but `write; close; open; fsync` must still make the
    // content durable: its chunks and version may have been written by an earlier handle
    // and not synced yet. The group commit covers both (chunks pending since the last one,
    // then the metadata log).
    if (int err = ns_.make_durable()) return err;
  }
  return 0;
}

bool OpenFile::set_pending_mtime(int64_t mtime_ns) {
  std::unique_lock lock(mu_);
  if (!modified_) return false;
  mtime_ns_ = mtime_ns;
  return true;
}

void OpenFile::overlay(Attr* attr) {
  refresh();
  std::shared_lock lock(mu_);
  // A version that could not be loaded: its size from the namespace stands (reads fail).
  if (load_error_ != 0 && !modified_) return;
  attr->size = size_;
  if (modified_) attr->mtime_ns = attr->ctime_ns = mtime_ns_;
}

void OpenFile::pending_chunks(std::vector<std::string>* out) {
  std::shared_lock lock(mu_);
  for (auto& [index, pieces] : chunks_)
    for (const pb::ChunkRef& c : pieces)
      if (c.inline_data().empty()) out->push_back(c.sha256());
}

}  // namespace wormhole
