// Seeded random-mutation fuzzing of the boundary where peer input enters a pod: ops and
// replication messages are mutated (bytes of their encoding, and their fields: names, ids,
// sizes, stamps, sequence numbers, chunk lists) and fed to
//   * validate_op / validate_peer_message / validate_member (they must never crash), and
//   * Replicator::receive of a pod (validation, causal delivery, Meta::apply): after any
//     input its tree has no cycle, every listed name is valid, every listed inode exists;
//   * Meta::apply directly, without validation: it must not crash or hang on anything.
// The corpus: the ops of an honest workload, plus the serialized ops in tests/fuzz_corpus.
// A short run is part of the unit tests; WORMHOLE_FUZZ_ITERATIONS=N runs longer,
// WORMHOLE_FUZZ_SEED=S replays a seed (a failure prints it), and
// WORMHOLE_FUZZ_WRITE_CORPUS=dir writes the workload's ops there as corpus files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "chunks/chunk_store.h"
#include "common/pb_ids.h"
#include "meta/op_validation.h"
#include "replication/replicator.h"
#include "store/mem_kv.h"

using namespace wormhole;

namespace {

constexpr uint64_t kWriter = 42, kOther = 7, kReceiver = 99;
constexpr int64_t kStartNs = 1'800'000'000'000'000'000;
constexpr uint64_t kChunkBytes = 64 << 10;

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

// The ops of an honest workload on pod kWriter: every kind of action, nested directories,
// renames, hard links, deletes, versions with stored, hole and inline chunks.
std::vector<pb::Op> workload() {
  MemKv kv;
  int64_t now = kStartNs;
  Namespace ns(kv, kWriter, [&] { return now += 1000000; }, [](Gid) { return false; });
  std::string err;
  EXPECT_TRUE(ns.init(&err)) << err;
  Attr a, b, c, f, g, s;
  ns.make(1, "a", pb::DIRECTORY, 0755, 1, 1, "", &a);
  ns.make(a.ino, "b", pb::DIRECTORY, 0700, 1, 1, "", &b);
  ns.make(b.ino, "c", pb::DIRECTORY, 0700, 1, 1, "", &c);
  ns.make(a.ino, "f", pb::REGULAR, 0644, 1, 1, "", &f);
  ns.make(c.ino, "g", pb::REGULAR, 0600, 1, 1, "", &g);
  ns.make(1, "s", pb::SYMLINK, 0777, 1, 1, "a/f", &s);
  ns.make(1, "p", pb::FIFO, 0644, 1, 1, "", &s);
  ns.link(f.ino, b.ino, "f2", &s);
  ns.rename(a.ino, "b", 1, "b", 0);
  ns.rename(1, "b", c.ino, "x", 0);  // a cycle: refused locally, so not in the log
  ns.rename(b.ino, "c", a.ino, "c", 0);
  pb::SetAttr ch;
  ch.set_mask(kAttrMode | kAttrUid | kAttrMtime);
  ch.set_mode(0640);
  ch.set_uid(5);
  ch.set_mtime_ns(123);
  ns.setattr(f.ino, ch, &s);
  ns.setxattr(f.ino, "user.k", "v", 0);
  ns.removexattr(f.ino, "user.k");
  std::vector<pb::ChunkRef> chunks(3);
  chunks[0].set_sha256(std::string(32, 'h'));
  chunks[0].set_length(kChunkBytes);
  const std::string tail = "tail bytes";
  chunks[2].set_sha256(ChunkStore::hash(tail.data(), tail.size()));
  chunks[2].set_length(static_cast<uint32_t>(tail.size()));
  chunks[2].set_inline_data(tail);
  Gid v1, v2;
  ns.commit(f.id, Gid{}, 2 * kChunkBytes + tail.size(), chunks, now, {kWriter, kOther}, false, &v1);
  chunks.resize(1);
  chunks[0] = chunks[0];
  ns.commit(f.id, v1, kChunkBytes, chunks, now, {}, false, &v2);
  pb::Member m;
  m.set_pod_id(kOther);
  m.set_name("other");
  m.set_address("127.0.0.1:7007");
  m.set_role("storage");
  ns.record_member(m);
  ns.unlink(b.ino, "f2");
  ns.unlink(c.ino, "g");
  ns.rmdir(a.ino, "c");
  ns.make(a.ino, "c", pb::DIRECTORY, 0755, 1, 1, "", &c);  // made again where it was removed
  ns.make_durable();  // only durable ops leave a pod
  return ns.ops_after(kWriter, 0, 1000);
}

std::vector<pb::Op> corpus() {
  std::vector<pb::Op> ops = workload();
  if (const char* dir = std::getenv("WORMHOLE_FUZZ_WRITE_CORPUS")) {
    std::filesystem::create_directories(dir);
    for (const pb::Op& op : ops)
      std::ofstream(std::string(dir) + "/op-" + std::to_string(op.seq()) + ".bin", std::ios::binary)
          << op.SerializeAsString();
  }
  std::error_code ec;
  for (auto& entry : std::filesystem::directory_iterator(WORMHOLE_SOURCE_DIR "/tests/fuzz_corpus", ec)) {
    if (entry.path().extension() != ".bin") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    pb::Op op;
    if (op.ParseFromString(bytes)) ops.push_back(std::move(op));
  }
  return ops;
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}
  uint64_t below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool chance(int percent) { return below(100) < static_cast<uint64_t>(percent); }

  // Bytes of the encoding: flips, truncation, insertion, duplication of a slice.
  std::string bytes(std::string s) {
    const int edits = 1 + static_cast<int>(below(4));
    for (int e = 0; e < edits; ++e) {
      switch (below(4)) {
        case 0:
          if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1 << below(8));
          break;
        case 1: s.resize(below(s.size() + 1)); break;
        case 2: s.insert(below(s.size() + 1), 1, static_cast<char>(below(256))); break;
        default:
          if (!s.empty()) {
            const size_t at = below(s.size()), len = below(s.size() - at + 1);
            s.insert(below(s.size() + 1), s.substr(at, len));
          }
      }
    }
    return s;
  }

  std::string name() {
    static const std::string names[] = {"", "/", "a/b", ".", "..", std::string(256, 'n'), std::string("x\0y", 3),
                                        "ok", std::string(255, 'm'), "a", "b", "c"};
    return names[below(std::size(names))];
  }
  Gid gid(const std::vector<Gid>& seen) {
    switch (below(6)) {
      case 0: return kRootId;
      case 1: return kTrashId;
      case 2: return Gid{0, below(5)};
      case 3: return Gid{rng_(), rng_()};
      default: return seen.empty() ? Gid{kWriter, 1} : seen[below(seen.size())];
    }
  }
  uint64_t number() {
    static const uint64_t values[] = {0, 1, 2, 255, 256, 4096, kChunkBytes, kChunkBytes + 1, UINT32_MAX,
                                      uint64_t{1} << 50, (uint64_t{1} << 50) + 1, UINT64_MAX};
    return chance(50) ? values[below(std::size(values))] : rng_();
  }

  // One field-level change of `op`.
  void field(pb::Op& op, const std::vector<Gid>& seen) {
    pb::Action* a = op.actions_size() ? op.mutable_actions(static_cast<int>(below(op.actions_size()))) : nullptr;
    switch (below(16)) {
      case 0: op.mutable_hlc()->set_wall_ms(number()); break;
      case 1: op.mutable_hlc()->set_counter(static_cast<uint32_t>(number())); break;
      case 2: op.mutable_hlc()->set_pod(chance(50) ? kOther : number()); break;
      case 3: op.set_seq(number()); break;
      case 4: (*op.mutable_deps())[chance(50) ? kOther : number()] = number(); break;
      case 5:
        if (a) *op.add_actions() = *a;  // a duplicated action
        break;
      case 6: op.add_actions(); break;
      default:
        if (!a) break;
        if (a->has_move()) move(*a->mutable_move(), seen);
        else if (a->has_commit()) commit(*a->mutable_commit(), seen);
        else if (a->has_set_attr()) {
          to_pb(gid(seen), a->mutable_set_attr()->mutable_inode());
          a->mutable_set_attr()->set_mask(static_cast<uint32_t>(number()));
          a->mutable_set_attr()->set_mode(static_cast<uint32_t>(number()));
        } else if (a->has_set_xattr()) {
          a->mutable_set_xattr()->set_name(name());
          if (chance(30)) a->mutable_set_xattr()->set_value(std::string(below(70000), 'v'));
          to_pb(gid(seen), a->mutable_set_xattr()->mutable_inode());
        } else if (a->has_member()) {
          a->mutable_member()->set_pod_id(number());
          a->mutable_member()->set_name(name());
          a->mutable_member()->set_role(chance(50) ? "client" : "boss");
        }
    }
  }

 private:
  void move(pb::Move& m, const std::vector<Gid>& seen) {
    switch (below(6)) {
      case 0: m.set_name(name()); break;
      case 1: to_pb(gid(seen), m.mutable_entry()); break;
      case 2: to_pb(gid(seen), m.mutable_parent()); break;
      case 3: to_pb(gid(seen), m.mutable_inode()); break;
      case 4:
        if (m.has_new_inode()) {
          m.mutable_new_inode()->set_type(static_cast<pb::FileType>(below(8)));
          m.mutable_new_inode()->set_mode(static_cast<uint32_t>(number()));
          m.mutable_new_inode()->set_symlink_target(std::string(below(5000), 't'));
        } else {
          m.clear_new_inode();
        }
        break;
      default:
        *m.mutable_entry() = m.inode();  // a directory move, or a file as its own entry
    }
  }
  void commit(pb::CommitVersion& c, const std::vector<Gid>& seen) {
    switch (below(7)) {
      case 0: c.set_size(number()); break;
      case 1: to_pb(gid(seen), c.mutable_version()); break;
      case 2: to_pb(gid(seen), c.mutable_inode()); break;
      case 3:
        if (c.chunks_size()) c.mutable_chunks(static_cast<int>(below(c.chunks_size())))->set_length(static_cast<uint32_t>(number()));
        break;
      case 4:
        if (c.chunks_size()) c.mutable_chunks(static_cast<int>(below(c.chunks_size())))->set_sha256(std::string(below(40), 's'));
        break;
      case 5: c.add_holders(chance(50) ? 0 : kWriter); break;
      default: c.mutable_conflict()->set_name(name());
    }
  }
  std::mt19937_64 rng_;
};

// Every id an op names, for mutations that swap ids among existing objects.
void collect_ids(const pb::Op& op, std::vector<Gid>* ids) {
  for (const pb::Action& a : op.actions()) {
    if (a.has_move()) {
      ids->push_back(from_pb(a.move().entry()));
      ids->push_back(from_pb(a.move().inode()));
    } else if (a.has_commit()) {
      ids->push_back(from_pb(a.commit().inode()));
      ids->push_back(from_pb(a.commit().version()));
    }
  }
}

// The pod receiving the fuzzed input, as the daemon runs it: Replicator over Namespace.
struct Receiver {
  MemKv kv;
  int64_t now_ns = kStartNs;
  Namespace ns{kv, kReceiver, [this] { return now_ns; }, [](Gid) { return false; }};
  Replicator rep{(init(), ns), {kReceiver, kWriter, kOther}};
  void init() {
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
  }
  uint64_t now_ms() const { return static_cast<uint64_t>(now_ns / 1000000); }

  // The tree from the root: no cycle, valid names, every listed inode readable.
  void check_tree(uint64_t seed) {
    std::set<uint64_t> visited{1};
    std::vector<std::pair<uint64_t, int>> todo{{1, 0}};
    while (!todo.empty()) {
      auto [dir, depth] = todo.back();
      todo.pop_back();
      ASSERT_LT(depth, 1000) << "seed " << seed;
      std::vector<ListItem> items;
      uint64_t parent = 0;
      ASSERT_EQ(ns.list(dir, &items, &parent), 0) << "seed " << seed << ": a directory cannot be listed";
      for (const ListItem& item : items) {
        std::string why;
        ASSERT_TRUE(valid_entry_name(item.name, &why)) << "seed " << seed << ": listed " << why;
        Attr attr;
        ASSERT_EQ(ns.getattr(item.ino, &attr), 0) << "seed " << seed << ": " << item.name;
        if (attr.type == pb::DIRECTORY) {
          ASSERT_TRUE(visited.insert(item.ino).second) << "seed " << seed << ": directory " << item.name
                                                       << " reachable twice: a cycle or a linked directory";
          todo.emplace_back(item.ino, depth + 1);
        }
      }
    }
  }
};

// Applies `op` to a bare Meta with no validation (sequence and stamp made to follow), then
// reads the tree back: nothing may crash or hang, whatever the op says.
void apply_raw(Meta& meta, pb::Op op, uint64_t* wall_ms) {
  op.set_origin(kWriter);
  op.set_seq(meta.applied()[kWriter] + 1);
  to_pb(Hlc{++*wall_ms, 0, kWriter}, op.mutable_hlc());
  meta.apply(op, false);
  for (const pb::Action& a : op.actions())
    if (a.has_move()) {
      meta.path_of(from_pb(a.move().inode()));
      std::vector<DirItem> items;
      meta.list(from_pb(a.move().parent()), &items);
      meta.is_ancestor(kRootId, from_pb(a.move().parent()));
    }
}

}  // namespace

TEST(Fuzz, PeerInputNeverCrashesNorBreaksTheTree) {
  const uint64_t iterations = env_u64("WORMHOLE_FUZZ_ITERATIONS", 10000);
  const uint64_t first_seed = env_u64("WORMHOLE_FUZZ_SEED", 1);
  // Each seed runs on fresh pods: the pod under test never trims its move log (pods that
  // never send an op hold the horizon back), so one pod's history stays a thousand ops.
  constexpr uint64_t kOpsPerSeed = 1000;
  const uint64_t seeds = std::getenv("WORMHOLE_FUZZ_SEED") ? 1 : std::max<uint64_t>(1, iterations / kOpsPerSeed);
  const uint64_t per_seed = std::min(iterations, kOpsPerSeed), total = seeds * per_seed;
  const std::vector<pb::Op> base = corpus();
  ASSERT_GE(base.size(), 20u);
  std::vector<Gid> ids;
  for (const pb::Op& op : base) collect_ids(op, &ids);
  OpLimits limits;
  limits.chunk_size_bytes = kChunkBytes;
  size_t valid = 0, applied = 0;
  for (uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    Mutator mut(seed);
    Receiver pod;
    pod.rep.set_limits(limits.max_skew_ms, kChunkBytes);
    MemKv raw_kv;
    Meta raw(raw_kv, kReceiver, [](Gid) { return false; });
    std::string err;
    ASSERT_TRUE(raw.init(static_cast<uint64_t>(kStartNs / 1000000), &err)) << err;
    uint64_t raw_wall = static_cast<uint64_t>(kStartNs / 1000000);
    for (uint64_t i = 0; i < per_seed; ++i) {
      pod.now_ns += 1000000;
      limits.now_ms = pod.now_ms();
      // Mostly the workload in order (so later ops find what earlier ones made), mutated.
      pb::Op op = base[i % base.size()];
      if (mut.chance(85)) {
        // Made to follow what the pod applied, so that mutations reach Meta::apply.
        op.set_seq(pod.ns.applied()[op.origin()] + 1);
        op.mutable_hlc()->set_wall_ms(pod.now_ms());
      }
      if (mut.chance(60)) {
        const int edits = 1 + static_cast<int>(mut.below(3));
        for (int e = 0; e < edits; ++e) mut.field(op, ids);
      }
      if (mut.chance(15)) {
        pb::Op parsed;
        if (!parsed.ParseFromString(mut.bytes(op.SerializeAsString()))) continue;
        op = std::move(parsed);
      }
      std::string why;
      EXPECT_NO_THROW(valid += validate_op(op, limits, &why));
      for (const pb::Action& a : op.actions())
        if (a.has_member()) validate_member(a.member(), &why);
      // Through the replication boundary, as a peer's push; sometimes with a false or
      // oversized progress report, sometimes as a sync request.
      pb::PeerMessage msg;
      *msg.mutable_ops()->add_ops() = op;
      if (mut.chance(20)) (*msg.mutable_ops()->mutable_sender_progress()->mutable_applied())[mut.number()] = mut.number();
      if (mut.chance(5)) {
        msg.Clear();
        for (int k = 0; k < static_cast<int>(mut.below(2000)); ++k)
          (*msg.mutable_sync_request()->mutable_applied())[mut.number()] = mut.number();
      }
      const uint64_t before = pod.ns.applied()[kWriter];
      std::string rejected;
      EXPECT_NO_THROW(pod.rep.receive(mut.chance(90) ? kWriter : kOther, msg, pod.now_ms(), &rejected));
      if (std::getenv("WORMHOLE_FUZZ_VERBOSE") && !rejected.empty()) std::printf("rejected: %s\n", rejected.c_str());
      applied += pod.ns.applied()[kWriter] > before;
      EXPECT_LE(pod.rep.waiting(), Replicator::kMaxWaitingOps);
      EXPECT_NO_THROW(apply_raw(raw, op, &raw_wall));
      if (i % 200 == 199) {
        pod.check_tree(seed);
        if (HasFatalFailure()) return;
        pod.ns.trim();
        raw.trim(1000, {}, raw_wall, 0);
      }
    }
    pod.check_tree(seed);
    if (HasFatalFailure()) return;
  }
  std::printf("%llu seeds from %llu, %llu mutated ops: %zu valid, %zu applied through the replicator\n",
              static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(first_seed),
              static_cast<unsigned long long>(total), valid, applied);
  // What the harness is meant to exercise was exercised (a property of the mutations).
  EXPECT_GT(valid, total / 10);
  EXPECT_GT(applied, total / 20);
  EXPECT_LT(valid, total);
}
