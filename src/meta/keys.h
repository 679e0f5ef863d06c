// Key layout of the metadata store. One-byte prefix per record kind, integers big-endian
// so that byte order is numeric order. See docs/architecture.md "On-disk layout".
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "common/ids.h"

namespace wormhole::keys {

inline void put_u64(std::string& s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
inline void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
inline uint64_t get_u64(std::string_view s, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}
inline void put_gid(std::string& s, Gid g) {
  put_u64(s, g.pod);
  put_u64(s, g.seq);
}
inline Gid get_gid(std::string_view s, size_t at) { return Gid{get_u64(s, at), get_u64(s, at + 8)}; }

// I<inode>            -> InodeRecord
inline std::string inode(Gid g) { std::string k("I"); put_gid(k, g); return k; }
inline constexpr std::string_view kInodePrefix = "I";
// E<entry>            -> EntryRecord (current edge)
inline std::string entry(Gid g) { std::string k("E"); put_gid(k, g); return k; }
// D<parent><name>\0<entry> -> inode gid (16 bytes): the directory index
inline std::string dir_prefix(Gid parent) { std::string k("D"); put_gid(k, parent); return k; }
inline std::string dirent_prefix(Gid parent, std::string_view name) {
  std::string k = dir_prefix(parent);
  k.append(name);
  k.push_back('\0');
  return k;
}
inline std::string dirent(Gid parent, std::string_view name, Gid entry) {
  std::string k = dirent_prefix(parent, name);
  put_gid(k, entry);
  return k;
}
// V<version>          -> VersionRecord
inline std::string version(Gid g) { std::string k("V"); put_gid(k, g); return k; }
inline constexpr std::string_view kVersionPrefix = "V";
// X<inode><name>      -> XattrRecord
inline std::string xattr_prefix(Gid inode) { std::string k("X"); put_gid(k, inode); return k; }
inline std::string xattr(Gid inode, std::string_view name) {
  std::string k = xattr_prefix(inode);
  k.append(name);
  return k;
}
// A stamp in a key: 20 bytes that sort as the stamps do.
inline void put_hlc(std::string& k, const Hlc& h) {
  put_u64(k, h.wall_ms);
  put_u32(k, h.counter);
  put_u64(k, h.pod);
}
// L<wall><counter><pod><index> -> MoveLogRecord, in timestamp order
inline std::string movelog(const Hlc& h, uint32_t index) {
  std::string k("L");
  put_hlc(k, h);
  put_u32(k, index);
  return k;
}
inline constexpr std::string_view kMoveLogPrefix = "L";
// T<inode><movelog key without its "L"> -> "": the logged deletes of a file's entries, so
// that a new version of the file finds them (and has them decided again) without a scan.
inline std::string trash_move_prefix(Gid inode) { std::string k("T"); put_gid(k, inode); return k; }
inline std::string trash_move(Gid inode, std::string_view movelog_key) {
  return trash_move_prefix(inode) + std::string(movelog_key.substr(1));
}
inline uint32_t get_u32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}
// The stamp put_hlc wrote at `at`.
inline Hlc get_hlc(std::string_view s, size_t at) { return Hlc{get_u64(s, at), get_u32(s, at + 8), get_u64(s, at + 12)}; }
inline bool parse_movelog(std::string_view k, Hlc* h, uint32_t* index) {
  if (k.size() != 25 || k[0] != 'L') return false;
  *h = get_hlc(k, 1);
  *index = get_u32(k, 21);
  return true;
}
// The stamp of a move-log key (a malformed key reads as the zero stamp).
inline Hlc movelog_hlc(std::string_view k) {
  Hlc h;
  uint32_t index;
  return parse_movelog(k, &h, &index) ? h : Hlc{};
}
// The entry of a directory-index key (its last 16 bytes).
inline Gid dirent_entry(std::string_view k) { return k.size() >= 33 ? get_gid(k, k.size() - 16) : Gid{}; }
// A<inode><entry>     -> "": the entries pointing to an inode (reverse of E)
inline std::string link_prefix(Gid inode) { std::string k("A"); put_gid(k, inode); return k; }
inline std::string link(Gid inode, Gid entry) {
  std::string k = link_prefix(inode);
  put_gid(k, entry);
  return k;
}
inline Gid link_entry(std::string_view k) { return k.size() == 33 ? get_gid(k, 17) : Gid{}; }
// O<origin><seq>      -> Op (the op log kept for replication)
inline std::string oplog(uint64_t origin, uint64_t seq) {
  std::string k("O");
  put_u64(k, origin);
  put_u64(k, seq);
  return k;
}
inline constexpr std::string_view kOpLogPrefix = "O";
// N<ino>              -> inode gid: this pod's FUSE inode numbers
inline std::string ino(uint64_t n) { std::string k("N"); put_u64(k, n); return k; }
// P<pod>              -> PodProgress "seq hlc": the newest op applied from each origin
inline std::string progress(uint64_t pod) { std::string k("P"); put_u64(k, pod); return k; }
inline constexpr std::string_view kProgressPrefix = "P";
// R<inode>            -> "": unreachable inodes waiting until no local handle uses them
inline std::string orphan(Gid g) { std::string k("R"); put_gid(k, g); return k; }
inline constexpr std::string_view kOrphanPrefix = "R";
// M<pod>              -> MemberRecord: the replicated member list
inline std::string member(uint64_t pod) { std::string k("M"); put_u64(k, pod); return k; }
inline constexpr std::string_view kMemberPrefix = "M";
// Y<entry>            -> "": directories in the trash (lost+found shows those still holding
// live entries)
inline std::string trashed_dir(Gid entry) { std::string k("Y"); put_gid(k, entry); return k; }
inline constexpr std::string_view kTrashedDirPrefix = "Y";
// W<version>          -> VersionRecord: a version superseded by a newer one of its file,
// kept as the base of deltas still to come (CommitVersion.delta) until the superseding op
// is causally stable; U<stamp of that op><version> -> "" orders them for trim.
inline std::string superseded(Gid version) { std::string k("W"); put_gid(k, version); return k; }
inline constexpr std::string_view kSupersededPrefix = "W";
inline std::string superseded_at(const Hlc& h, Gid version) {
  std::string k("U");
  put_hlc(k, h);
  put_gid(k, version);
  return k;
}
inline constexpr std::string_view kSupersededAtPrefix = "U";
inline bool parse_superseded_at(std::string_view k, Hlc* h, Gid* version) {
  if (k.size() != 37 || k[0] != 'U') return false;
  *h = get_hlc(k, 1);
  *version = get_gid(k, 21);
  return true;
}
// Q<version>          -> "": versions recorded incomplete (a delta over a base this pod
// lacked); each is fetched whole from a peer (Meta::complete_version)
inline std::string incomplete(Gid version) { std::string k("Q"); put_gid(k, version); return k; }
inline constexpr std::string_view kIncompletePrefix = "Q";
// S<name>             -> counters of this pod (next gid, next ino, HLC)
inline std::string state(std::string_view name) { return "S" + std::string(name); }

}  // namespace wormhole::keys
