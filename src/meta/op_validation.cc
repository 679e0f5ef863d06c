#include "meta/op_validation.h"

#include <openssl/evp.h>

#include <set>

#include "common/ids.h"
#include "common/limits.h"
#include "common/pb_ids.h"

namespace wormhole {
namespace {

// Sets *why (with the context `where`) and returns false: `return fail(...)` reads as
// what it does.
bool fail(std::string* why, const std::string& where, const std::string& what) {
  *why = where.empty() ? what : where + ": " + what;
  return false;
}

// Pod id 0 is reserved for the well-known ids: every other id names a pod-minted or
// derived object.
bool is_object_id(Gid g) { return g.pod != 0; }
bool is_reserved(Gid g) { return g.pod == 0; }
// Ids minted by `origin` itself (new_gid) or derived from another id (derived_id sets the
// top bit): what a new object of an op from `origin` may be called.
bool minted_by(Gid g, uint64_t origin) { return g.seq != 0 && (g.pod == origin || (g.pod >> 63) != 0); }

bool check_object(const pb::Gid& id, const std::string& where, std::string* why) {
  const Gid g = from_pb(id);
  if (g.empty()) return fail(why, where, "missing id");
  if (!is_object_id(g)) return fail(why, where, "reserved id " + g.str());
  return true;
}

std::string sha256(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

bool check_new_inode(const pb::Move& m, uint64_t origin, std::string* why) {
  const pb::NewInode& n = m.new_inode();
  const Gid inode = from_pb(n.inode());
  if (inode != from_pb(m.inode())) return fail(why, "new inode", "differs from the move's inode");
  if (!minted_by(inode, origin)) return fail(why, "new inode", "id " + inode.str() + " not minted by the op's origin");
  if (n.type() < pb::REGULAR || n.type() > pb::BLOCK_DEVICE || !pb::FileType_IsValid(n.type()))
    return fail(why, "new inode", "invalid type " + std::to_string(n.type()));
  const bool device = n.type() == pb::CHAR_DEVICE || n.type() == pb::BLOCK_DEVICE;
  if (!device && n.rdev() != 0) return fail(why, "new inode", "a device number on a node that is no device");
  // The cycle check walks directory entries: a directory is its own entry (Meta::do_move
  // relies on it), any other inode has entries of its own (hard links).
  const bool is_dir = n.type() == pb::DIRECTORY;
  if (is_dir != (from_pb(m.entry()) == inode))
    return fail(why, "new inode", is_dir ? "a directory's entry must be the directory" : "a non-directory's entry must differ from its inode");
  if (n.mode() & ~07777u) return fail(why, "new inode", "mode has bits beyond the permissions");
  if (n.type() == pb::SYMLINK) {
    if (n.symlink_target().empty() || n.symlink_target().size() > kMaxSymlinkBytes)
      return fail(why, "new inode", "symlink target of " + std::to_string(n.symlink_target().size()) + " bytes");
    if (n.symlink_target().find('\0') != std::string::npos) return fail(why, "new inode", "symlink target with NUL");
  } else if (!n.symlink_target().empty()) {
    return fail(why, "new inode", "symlink target on a non-symlink");
  }
  return true;
}

bool check_move(const pb::Move& m, uint64_t origin, std::string* why) {
  const Gid entry = from_pb(m.entry()), parent = from_pb(m.parent());
  // The root and the trash never move and are never linked: moving either could hang the
  // tree below itself, outside every cycle check (they are where the walks stop).
  if (!check_object(m.entry(), "move entry", why)) return false;
  if (!check_object(m.inode(), "move inode", why)) return false;
  if (parent.empty()) return fail(why, "move", "missing parent");
  if (is_reserved(parent) && parent != kRootId && parent != kTrashId)
    return fail(why, "move", "reserved parent id " + parent.str());
  if (parent == entry) return fail(why, "move", "entry under itself");
  if (!valid_entry_name(m.name(), why)) return fail(why, "move name", *why);
  if (m.has_new_inode()) {
    if (!minted_by(entry, origin)) return fail(why, "move", "new entry " + entry.str() + " not minted by the op's origin");
    if (!check_new_inode(m, origin, why)) return false;
  }
  return true;
}

bool check_set_attr(const pb::SetAttr& a, std::string* why) {
  const Gid inode = from_pb(a.inode());
  if (inode != kRootId && !check_object(a.inode(), "setattr inode", why)) return false;
  constexpr uint32_t kKnownMask = 0x3f;  // AttrMask (meta.h): mode, uid, gid, atime, mtime, ctime
  if (a.mask() & ~kKnownMask) return fail(why, "setattr", "unknown attribute bits in the mask");
  if (a.mode() & ~07777u) return fail(why, "setattr", "mode has bits beyond the permissions");
  return true;
}

bool check_set_xattr(const pb::SetXattr& x, std::string* why) {
  const Gid inode = from_pb(x.inode());
  if (inode != kRootId && !check_object(x.inode(), "xattr inode", why)) return false;
  if (x.name().empty() || x.name().size() > kMaxXattrNameBytes || x.name().find('\0') != std::string::npos)
    return fail(why, "xattr", "name of " + std::to_string(x.name().size()) + " bytes, or with NUL");
  if (x.value().size() > kMaxXattrValueBytes)
    return fail(why, "xattr", "value of " + std::to_string(x.value().size()) + " bytes");
  if (x.remove() && !x.value().empty()) return fail(why, "xattr", "a removal with a value");
  return true;
}

bool check_conflict(const pb::Conflict& c, std::string* why) {
  const Gid parent = from_pb(c.parent());
  if (!parent.empty() && is_reserved(parent) && parent != kRootId)
    return fail(why, "conflict", "reserved parent id " + parent.str());
  // The sibling's name is made of these two: each must be a valid part of a name.
  if (!c.name().empty() && !valid_entry_name(c.name(), why)) return fail(why, "conflict name", *why);
  if (!c.writer().empty() && !valid_pod_name(c.writer())) return fail(why, "conflict", "invalid writer name");
  if (c.mode() & ~07777u) return fail(why, "conflict", "mode has bits beyond the permissions");
  return true;
}

// One stored piece of span `index` of a file of `size` bytes.
bool check_chunk_ref(const pb::ChunkRef& r, uint64_t index, uint64_t size, uint64_t chunk, std::string* why) {
  const std::string where = "chunk " + std::to_string(index);
  if (index >= kMaxFileSize / chunk + 1) return fail(why, where, "beyond the end of the file");
  const uint64_t start = index * chunk;
  if (start >= size) return fail(why, where, "beyond the end of the file");
  const uint64_t span = std::min(chunk, size - start);
  if (r.sha256().size() != kMaxHashBytes) return fail(why, where, "hash of " + std::to_string(r.sha256().size()) + " bytes");
  if (r.length() == 0) return fail(why, where, "stored chunk of no bytes");
  if (uint64_t{r.span_offset()} + r.length() > span) return fail(why, where, "piece beyond its span");
  // A chunk file is never longer than a chunk: a piece past that could never be read.
  if (uint64_t{r.file_offset()} + r.length() > chunk) return fail(why, where, "piece beyond a chunk file's size");
  if (!r.inline_data().empty() && r.file_offset() != 0) return fail(why, where, "inline piece with a file offset");
  if (!r.inline_data().empty()) {
    if (r.inline_data().size() > kMaxInlineBytes) return fail(why, where, "inline bytes beyond 8 KiB");
    if (r.inline_data().size() != r.length()) return fail(why, where, "inline bytes differ from its length");
    // Checked here, not only when the file is opened: an unreadable version would make
    // the file fail with EIO on every pod.
    if (sha256(r.inline_data()) != r.sha256()) return fail(why, where, "inline bytes do not match the hash");
  }
  return true;
}

bool check_chunks(const pb::CommitVersion& c, const OpLimits& limits, std::string* why) {
  const uint64_t chunk = limits.chunk_size_bytes;
  if (chunk == 0) return fail(why, "commit", "no chunk size");
  const uint64_t spans = c.size() / chunk + (c.size() % chunk != 0);
  if (c.dense_chunks_size() > 0) {
    // An op of protocol 2 (from an old op log): one entry per span, a hole as an empty hash.
    if (c.chunks_size() > 0) return fail(why, "commit", "both a dense and a sparse chunk list");
    if (static_cast<uint64_t>(c.dense_chunks_size()) != spans)
      return fail(why, "commit", std::to_string(c.dense_chunks_size()) + " chunks for " + std::to_string(c.size()) + " bytes");
    for (int i = 0; i < c.dense_chunks_size(); ++i) {
      const pb::ChunkRef& r = c.dense_chunks(i);
      if (r.sha256().empty() && r.inline_data().empty() && r.length() == 0) continue;  // a hole
      if (!check_chunk_ref(r, static_cast<uint64_t>(i), c.size(), chunk, why)) return false;
    }
    return true;
  }
  // The stored pieces sorted by (index, span_offset), not overlapping, each within its
  // span of the file (OpenFile::load relies on it), at most kMaxPiecesPerSpan per span;
  // spans no piece covers are holes.
  if (static_cast<uint64_t>(c.chunks_size()) / kMaxPiecesPerSpan > spans)
    return fail(why, "commit", std::to_string(c.chunks_size()) + " chunks for " + std::to_string(c.size()) + " bytes");
  uint64_t in_span = 0;
  for (int i = 0; i < c.chunks_size(); ++i) {
    const pb::ChunkRef& r = c.chunks(i);
    if (!check_chunk_ref(r, r.index(), c.size(), chunk, why)) return false;
    if (i > 0) {
      const pb::ChunkRef& prev = c.chunks(i - 1);
      if (r.index() < prev.index()) return fail(why, "commit", "chunk indices not increasing");
      if (r.index() == prev.index() && r.span_offset() < uint64_t{prev.span_offset()} + prev.length())
        return fail(why, "commit", "pieces of chunk " + std::to_string(r.index()) + " overlap or are not sorted");
    }
    in_span = i > 0 && r.index() == c.chunks(i - 1).index() ? in_span + 1 : 1;
    if (in_span > kMaxPiecesPerSpan) return fail(why, "commit", "too many pieces in chunk " + std::to_string(r.index()));
  }
  // A delta names its base, the new size's spans exactly (the base's chunks past them are
  // dropped) and its holes by increasing index below them.
  if (!c.delta()) {
    if (c.holes_size() > 0 || c.spans() != 0) return fail(why, "commit", "holes or spans in a whole chunk list");
    return true;
  }
  if (c.base_version().pod() == 0 && c.base_version().seq() == 0) return fail(why, "commit", "a delta without a base");
  if (c.spans() != spans) return fail(why, "commit", "delta spans " + std::to_string(c.spans()) + " for " + std::to_string(c.size()) + " bytes");
  if (static_cast<uint64_t>(c.holes_size()) > spans) return fail(why, "commit", "more holes than spans");
  for (int i = 0; i < c.holes_size(); ++i)
    if (c.holes(i) >= spans || (i > 0 && c.holes(i) <= c.holes(i - 1)))
      return fail(why, "commit", "delta holes not increasing within the file");
  return true;
}

}  // namespace

bool validate_chunk_list(uint64_t size, const google::protobuf::RepeatedPtrField<pb::ChunkRef>& chunks,
                         const OpLimits& limits, std::string* why) {
  if (size > kMaxFileSize) return fail(why, "version", "size beyond the largest file");
  pb::CommitVersion c;
  c.set_size(size);
  *c.mutable_chunks() = chunks;
  return check_chunks(c, limits, why);
}

namespace {

bool check_commit(const pb::CommitVersion& c, uint64_t origin, const OpLimits& limits, std::string* why) {
  if (!check_object(c.inode(), "commit inode", why)) return false;
  // A version id is minted by its writer: one of another pod's ids would overwrite that
  // pod's version of another file.
  const Gid version = from_pb(c.version());
  if (version.pod != origin || version.seq == 0) return fail(why, "commit", "version " + version.str() + " not minted by the op's origin");
  const Gid base = from_pb(c.base_version());
  if (!base.empty() && !check_object(c.base_version(), "commit base", why)) return false;
  if (base == version) return fail(why, "commit", "version based on itself");
  if (c.size() > kMaxFileSize) return fail(why, "commit", "size " + std::to_string(c.size()) + " beyond the largest file");
  if (!check_chunks(c, limits, why)) return false;
  if (static_cast<size_t>(c.holders_size()) > kMaxPods) return fail(why, "commit", "too many holders");
  std::set<uint64_t> holders;
  for (uint64_t h : c.holders())
    if (h == 0 || !holders.insert(h).second) return fail(why, "commit", "holder 0 or named twice");
  if (static_cast<size_t>(c.live_entries_size()) > kMaxLiveEntries) return fail(why, "commit", "too many live entries");
  for (const pb::Gid& e : c.live_entries())
    if (!check_object(e, "commit live entry", why)) return false;
  return check_conflict(c.conflict(), why);
}

}  // namespace

bool valid_entry_name(std::string_view name, std::string* why) {
  if (name.empty()) return fail(why, "", "empty name");
  if (name.size() > kMaxNameBytes) return fail(why, "", "name of " + std::to_string(name.size()) + " bytes");
  if (name == "." || name == "..") return fail(why, "", "name \"" + std::string(name) + "\"");
  if (name.find('/') != std::string_view::npos) return fail(why, "", "name with '/'");
  if (name.find('\0') != std::string_view::npos) return fail(why, "", "name with NUL");
  return true;
}

bool valid_pod_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxPodNameBytes &&
         name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
             std::string_view::npos;
}

bool validate_member(const pb::Member& m, std::string* why) {
  if (m.pod_id() == 0) return fail(why, "member", "pod id 0");
  if (!valid_pod_name(m.name())) return fail(why, "member", "invalid name");
  if (m.address().size() > kMaxAddressBytes || m.address().find('\0') != std::string::npos)
    return fail(why, "member", "invalid address");
  if (m.role() != "storage" && m.role() != "client") return fail(why, "member", "role \"" + m.role().substr(0, 16) + "\"");
  if (m.authorization().admin().size() > kMaxPodNameBytes || m.authorization().signature().size() > 64)
    return fail(why, "member", "oversized admin authorization");
  if (m.key_fingerprint().size() > 64) return fail(why, "member", "oversized key fingerprint");
  return true;
}

bool validate_op(const pb::Op& op, const OpLimits& limits, std::string* why) {
  const uint64_t origin = op.origin();
  const std::string where = "op " + std::to_string(op.seq());
  if (origin == 0) return fail(why, where, "origin 0");
  if (op.seq() == 0) return fail(why, where, "sequence 0");
  const Hlc hlc = from_pb(op.hlc());
  // Stamps are unique because each carries its origin: a stamp of another pod could
  // equal one of that pod's and break the total order of moves.
  if (hlc.pod != origin) return fail(why, where, "stamped by another pod than its origin");
  if (hlc.counter > kMaxHlcCounter) return fail(why, where, "clock counter near wrapping");
  // A stamp far in the future would drag every clock there, and no later op of any pod
  // could be ordered after it until the real clocks catch up.
  if (hlc.wall_ms > limits.now_ms && hlc.wall_ms - limits.now_ms > limits.max_skew_ms)
    return fail(why, where,
                "clock " + std::to_string((hlc.wall_ms - limits.now_ms) / 1000) + " s ahead of this pod's (network.max_clock_skew)");
  if (static_cast<size_t>(op.actions_size()) > kMaxActionsPerOp) return fail(why, where, "too many actions");
  if (op.deps_size() > static_cast<int>(kMaxPods)) return fail(why, where, "too many dependencies");
  for (auto& [pod, seq] : op.deps())
    if (pod == 0 || pod == origin) return fail(why, where, "dependency on pod 0 or on its own origin");
  for (int i = 0; i < op.actions_size(); ++i) {
    const pb::Action& a = op.actions(i);
    bool ok = true;
    switch (a.kind_case()) {
      case pb::Action::kMove: ok = check_move(a.move(), origin, why); break;
      case pb::Action::kSetAttr: ok = check_set_attr(a.set_attr(), why); break;
      case pb::Action::kSetXattr: ok = check_set_xattr(a.set_xattr(), why); break;
      case pb::Action::kCommit: ok = check_commit(a.commit(), origin, limits, why); break;
      case pb::Action::kMember: ok = validate_member(a.member(), why); break;
      case pb::Action::kHold:
        // A pod claims only its own copies: another's claim would make readers and repair
        // count a copy that may not exist.
        ok = check_object(a.hold().version(), "hold version", why) &&
             (a.hold().pod() == origin || fail(why, "hold", "a claim for another pod than the op's origin"));
        break;
      case pb::Action::KIND_NOT_SET: ok = fail(why, "", "empty action"); break;
    }
    if (!ok) return fail(why, where + " action " + std::to_string(i), *why);
  }
  return true;
}

bool validate_progress(const pb::Progress& p, std::string* why) {
  if (p.applied_size() > static_cast<int>(kMaxPods)) return fail(why, "progress", "too many pods");
  for (auto& [pod, seq] : p.applied())
    if (pod == 0) return fail(why, "progress", "pod id 0");
  return true;
}

bool validate_peer_message(const pb::PeerMessage& message, const OpLimits& limits, std::string* why) {
  if (message.has_sync_request()) return validate_progress(message.sync_request(), why);
  if (!message.has_ops()) return true;  // nothing to act on
  const pb::OpBatch& batch = message.ops();
  if (static_cast<size_t>(batch.ops_size()) > kMaxOpsPerBatch) return fail(why, "batch", "too many ops");
  // The network layer unpacks what travels packed (net/op_packing.h) before it gets here.
  if (!batch.packed_ops().empty()) return fail(why, "batch", "packed ops not unpacked");
  if (batch.snapshot_needed() && batch.ops_size() > 0) return fail(why, "batch", "snapshot advice with ops");
  if (batch.has_sender_progress() && !validate_progress(batch.sender_progress(), why)) return false;
  for (const pb::Op& op : batch.ops())
    if (!validate_op(op, limits, why)) return false;
  return true;
}

}  // namespace wormhole
