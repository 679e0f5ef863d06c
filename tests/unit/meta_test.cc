#include <gtest/gtest.h>

#include <algorithm>

#include <linux/fs.h>
#include <future>
#include <optional>
#include <random>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "chunks/chunk_store.h"
#include "common/invariant.h"
#include "common/pb_ids.h"
#include "meta/keys.h"
#include "meta/ino_cache.h"
#include "meta/namespace.h"
#include "snapshot_records.h"
#include "store/mem_kv.h"

using namespace wormhole;

namespace {

// A store whose writes can be made to fail, as a full disk would.
// `fail` fails every write; `fail_if` those batches it picks.
class FlakyKv : public MemKv {
 public:
  bool fail = false;
  std::function<bool(const KvBatch&)> fail_if;
  KvStatus write(const KvBatch& b, bool sync) override {
    if (fail || (fail_if && fail_if(b))) return KvStatus{false, true, "No space left on device"};
    return MemKv::write(b, sync);
  }
};

struct Fixture {
  FlakyKv kv;
  int64_t now = 1'700'000'000'000'000'000;
  Namespace ns{kv, 42, [this] { return now += 1000; }, [](Gid) { return false; }};
  Fixture() {
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
  }
  uint64_t mk(uint64_t parent, const char* name, pb::FileType t = pb::REGULAR) {
    Attr a;
    EXPECT_EQ(ns.make(parent, name, t, 0644, 1000, 1000, t == pb::SYMLINK ? "target" : "", &a), 0) << name;
    return a.ino;
  }
};

}  // namespace

TEST(Namespace, CreateLookupAndErrors) {
  Fixture f;
  uint64_t d = f.mk(1, "dir", pb::DIRECTORY);
  uint64_t file = f.mk(d, "file");
  Attr a;
  ASSERT_EQ(f.ns.lookup(d, "file", &a), 0);
  EXPECT_EQ(a.ino, file);
  EXPECT_EQ(a.nlink, 1u);
  EXPECT_EQ(a.uid, 1000u);
  EXPECT_EQ(a.mode, S_IFREG | 0644u);
  EXPECT_EQ(f.ns.lookup(d, "nope", &a), ENOENT);
  EXPECT_EQ(f.ns.make(d, "file", pb::REGULAR, 0644, 0, 0, "", &a), EEXIST);
  EXPECT_EQ(f.ns.make(file, "x", pb::REGULAR, 0644, 0, 0, "", &a), ENOTDIR);
  EXPECT_EQ(f.ns.make(d, std::string(256, 'n'), pb::REGULAR, 0644, 0, 0, "", &a), ENAMETOOLONG);
  EXPECT_EQ(f.ns.rmdir(1, "dir"), ENOTEMPTY);
  EXPECT_EQ(f.ns.unlink(1, "dir"), EISDIR);
  EXPECT_EQ(f.ns.rmdir(d, "file"), ENOTDIR);
  ASSERT_EQ(f.ns.getattr(1, &a), 0);
  EXPECT_EQ(a.nlink, 3u);  // ".", "..", and dir's ".."
  ASSERT_EQ(f.ns.unlink(d, "file"), 0);
  ASSERT_EQ(f.ns.rmdir(1, "dir"), 0);
  ASSERT_EQ(f.ns.getattr(1, &a), 0);
  EXPECT_EQ(a.nlink, 2u);
  std::vector<ListItem> items;
  uint64_t parent = 0;
  ASSERT_EQ(f.ns.list(1, &items, &parent), 0);
  EXPECT_TRUE(items.empty());
}

// fsync's group commit never reports this pod's chunks durable while another group commit
// that took them from the pending list is still syncing them: the second caller waits for
// the first (before, it found nothing pending, synced the log and returned at once).
TEST(Namespace, AGroupCommitWaitsForTheOneSyncingItsChunks) {
  Fixture f;
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  f.ns.set_before_log_sync([&] {
    if (calls.fetch_add(1) == 0) {  // the first commit's chunk sync is slow
      entered.set_value();
      released.wait();
    }
    return 0;
  });
  f.mk(1, "a");
  auto first = std::async(std::launch::async, [&] { return f.ns.make_durable(); });
  entered.get_future().wait();
  f.mk(1, "b");  // made while the first commit syncs: the second commit must sync it
  std::atomic<bool> second_done{false};
  auto second = std::async(std::launch::async, [&] {
    const int err = f.ns.make_durable();
    second_done = true;
    return err;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(second_done) << "returned while the first group commit was still syncing chunks";
  release.set_value();
  EXPECT_EQ(first.get(), 0);
  EXPECT_EQ(second.get(), 0);
  EXPECT_EQ(calls.load(), 2);  // "b" came after the first commit's target: synced again
  // Already durable: nothing to sync.
  EXPECT_EQ(f.ns.make_durable(), 0);
  EXPECT_EQ(calls.load(), 2);
}

// `status` counts files with a full scan: it must not wait for (nor hold back) a batch of
// received ops being applied, which holds the namespace's lock (it did: a status polled
// during a long catch-up kept every batch waiting for its scan). Counts are of what is
// committed.
TEST(Namespace, StatusCountsDoNotWaitForABatchBeingApplied) {
  Fixture f;
  f.mk(1, "a");
  std::optional<Namespace::RemoteBatch> batch;
  batch.emplace(f.ns);  // holds the namespace's lock, as a batch of received ops does
  auto stats = std::async(std::launch::async, [&] { return f.ns.stats(); });
  const bool ready = stats.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  batch.reset();  // commits, releasing the lock (so that the test ends either way)
  EXPECT_TRUE(ready) << "status waited for the batch";
  EXPECT_EQ(stats.get().files, 1u);
}

// Character and block devices are stored with their number, reported as st_rdev, and
// carried by the op to another pod; other types ignore a number.
TEST(Namespace, DeviceNodesKeepTheirTypeAndNumber) {
  Fixture f;
  Attr a;
  const uint64_t rdev = (uint64_t{259} << 32) | 0x12345;  // beyond 32 bits: the whole dev_t
  ASSERT_EQ(f.ns.make(1, "c", pb::CHAR_DEVICE, 0620, 0, 5, "", &a, rdev), 0);
  EXPECT_EQ(a.mode, S_IFCHR | 0620u);
  EXPECT_EQ(a.rdev, rdev);
  ASSERT_EQ(f.ns.make(1, "b", pb::BLOCK_DEVICE, 0660, 0, 6, "", &a, 7), 0);
  EXPECT_EQ(a.mode, S_IFBLK | 0660u);
  ASSERT_EQ(f.ns.make(1, "p", pb::FIFO, 0600, 0, 0, "", &a, 99), 0);
  EXPECT_EQ(a.rdev, 0u);
  EXPECT_EQ(f.ns.make(1, "x", static_cast<pb::FileType>(42), 0600, 0, 0, "", &a, 1), EINVAL);
  ASSERT_EQ(f.ns.lookup(1, "b", &a), 0);
  EXPECT_EQ(a.rdev, 7u);
  std::vector<ListItem> items;
  uint64_t parent = 0;
  ASSERT_EQ(f.ns.list(1, &items, &parent), 0);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].mode, S_IFBLK | 0660u);
  EXPECT_EQ(items[1].mode, S_IFCHR | 0620u);
  // Another pod applying the ops sees the same nodes.
  FlakyKv kv2;
  Namespace other(kv2, 43, [] { return int64_t{1}; }, [](Gid) { return false; });
  std::string err;
  ASSERT_TRUE(other.init(&err)) << err;
  ASSERT_EQ(f.ns.make_durable(), 0);  // only durable ops leave a pod
  for (const pb::Op& op : f.ns.ops_after(42, 0, 100)) ASSERT_EQ(other.apply_remote(op), 0);
  ASSERT_EQ(other.lookup(1, "c", &a), 0);
  EXPECT_EQ(a.mode, S_IFCHR | 0620u);
  EXPECT_EQ(a.rdev, rdev);
  EXPECT_EQ(a.gid, 5u);
}

TEST(Namespace, HardLinksShareOneInode) {
  Fixture f;
  uint64_t file = f.mk(1, "a");
  Attr a;
  ASSERT_EQ(f.ns.link(file, 1, "b", &a), 0);
  EXPECT_EQ(a.ino, file);
  EXPECT_EQ(a.nlink, 2u);
  ASSERT_EQ(f.ns.unlink(1, "a"), 0);
  ASSERT_EQ(f.ns.lookup(1, "b", &a), 0);
  EXPECT_EQ(a.nlink, 1u);
  uint64_t dir = f.mk(1, "d", pb::DIRECTORY);
  EXPECT_EQ(f.ns.link(dir, 1, "d2", &a), EPERM);
}

TEST(Namespace, RenameSemantics) {
  Fixture f;
  uint64_t d1 = f.mk(1, "d1", pb::DIRECTORY);
  uint64_t d2 = f.mk(d1, "d2", pb::DIRECTORY);
  f.mk(1, "x");
  f.mk(1, "y");
  f.mk(d2, "inner");
  Attr a;
  EXPECT_EQ(f.ns.rename(1, "d1", d2, "loop", 0), EINVAL);  // below itself
  EXPECT_EQ(f.ns.rename(1, "x", 1, "y", RENAME_NOREPLACE), EEXIST);
  EXPECT_EQ(f.ns.rename(1, "x", 1, "d1", 0), EISDIR);
  EXPECT_EQ(f.ns.rename(1, "d1", 1, "x", 0), ENOTDIR);
  EXPECT_EQ(f.ns.rename(d1, "d2", 1, "d1", 0), ENOTEMPTY);  // as Linux: d1 holds d2
  uint64_t empty = f.mk(1, "empty", pb::DIRECTORY);
  (void)empty;
  EXPECT_EQ(f.ns.rename(d1, "d2", 1, "empty", 0), 0);  // over an empty directory
  EXPECT_EQ(f.ns.lookup(1, "empty", &a), 0);
  EXPECT_EQ(a.ino, d2);
  ASSERT_EQ(f.ns.lookup(1, "y", &a), 0);
  uint64_t y = a.ino;
  ASSERT_EQ(f.ns.rename(1, "x", 1, "y", 0), 0);  // replaces y
  EXPECT_EQ(f.ns.lookup(1, "x", &a), ENOENT);
  ASSERT_EQ(f.ns.lookup(1, "y", &a), 0);
  EXPECT_NE(a.ino, y);
  uint64_t new_y = a.ino;
  ASSERT_EQ(f.ns.rename(1, "y", 1, "d1", RENAME_EXCHANGE), 0);
  ASSERT_EQ(f.ns.lookup(1, "y", &a), 0);
  EXPECT_EQ(a.ino, d1);
  ASSERT_EQ(f.ns.lookup(1, "d1", &a), 0);
  EXPECT_EQ(a.ino, new_y);
  EXPECT_EQ(f.ns.rename(1, "nothing", 1, "d1", RENAME_EXCHANGE), ENOENT);
}

TEST(Namespace, AttributesAndXattrs) {
  Fixture f;
  uint64_t file = f.mk(1, "f");
  pb::SetAttr ch;
  ch.set_mask(kAttrMode | kAttrUid);
  ch.set_mode(0600);
  ch.set_uid(7);
  Attr a;
  ASSERT_EQ(f.ns.setattr(file, ch, &a), 0);
  EXPECT_EQ(a.mode, S_IFREG | 0600u);
  EXPECT_EQ(a.uid, 7u);
  EXPECT_EQ(a.gid, 1000u);
  EXPECT_EQ(f.ns.setxattr(file, "user.k", "v1", 0), 0);
  EXPECT_EQ(f.ns.setxattr(file, "user.k", "v2", XATTR_CREATE), EEXIST);
  EXPECT_EQ(f.ns.setxattr(file, "user.new", "v", XATTR_REPLACE), ENODATA);
  std::string v;
  ASSERT_EQ(f.ns.getxattr(file, "user.k", &v), 0);
  EXPECT_EQ(v, "v1");
  std::vector<std::string> names;
  ASSERT_EQ(f.ns.listxattr(file, &names), 0);
  EXPECT_EQ(names, std::vector<std::string>{"user.k"});
  EXPECT_EQ(f.ns.removexattr(file, "user.k"), 0);
  EXPECT_EQ(f.ns.getxattr(file, "user.k", &v), ENODATA);
  EXPECT_EQ(f.ns.removexattr(file, "user.k"), ENODATA);
}

TEST(Namespace, AFailedWriteChangesNothing) {
  Fixture f;
  f.mk(1, "before");
  f.kv.fail = true;
  Attr a;
  EXPECT_EQ(f.ns.make(1, "lost", pb::REGULAR, 0644, 0, 0, "", &a), ENOSPC);
  f.kv.fail = false;
  EXPECT_EQ(f.ns.lookup(1, "lost", &a), ENOENT);
  // The next op reuses the sequence number the failed one would have had, and works.
  f.mk(1, "after");
  EXPECT_EQ(f.ns.lookup(1, "after", &a), 0);
  EXPECT_EQ(f.ns.lookup(1, "before", &a), 0);
}

// A store that cannot be read is an error, never an absent entry or an empty directory:
// rmdir of a directory whose listing failed must not remove it.
TEST(Namespace, AFailedStoreScanIsEIONeverAbsentOrEmpty) {
  Fixture f;
  const uint64_t d = f.mk(1, "dir", pb::DIRECTORY);
  f.mk(d, "a");
  f.mk(d, "b");
  const uint64_t e = f.mk(1, "empty", pb::DIRECTORY);
  const uint64_t file = f.mk(1, "file");
  Gid dir_id, empty_id, file_id;
  ASSERT_TRUE(f.ns.gid_of(d, &dir_id));
  ASSERT_TRUE(f.ns.gid_of(e, &empty_id));
  ASSERT_TRUE(f.ns.gid_of(file, &file_id));
  Attr a;
  std::vector<ListItem> items;
  uint64_t parent = 0;

  f.kv.fail_scans_under("");  // every scan
  EXPECT_EQ(f.ns.lookup(d, "a", &a), EIO);
  EXPECT_EQ(f.ns.lookup(d, "zz", &a), EIO);  // not ENOENT: it may exist
  EXPECT_EQ(f.ns.list(d, &items, &parent), EIO);
  EXPECT_EQ(f.ns.unlink(d, "a"), EIO);
  EXPECT_EQ(f.ns.make(d, "c", pb::REGULAR, 0644, 0, 0, "", &a), EIO);  // whether it exists is unknown
  EXPECT_EQ(f.ns.rename(d, "a", 1, "moved", 0), EIO);
  std::vector<std::string> names;
  EXPECT_EQ(f.ns.listxattr(file, &names), EIO);
  Gid v;
  EXPECT_EQ(f.ns.commit(file_id, Gid{}, 3, {}, 5, {}, false, &v), EIO);  // the writer's view of the names
  EXPECT_FALSE(f.ns.for_each_chunk([](const std::string&, bool) {}));      // garbage collection must not run

  // Only the listings of the two directories fail: their names still resolve.
  f.kv.fail_scans_under(keys::dir_prefix(empty_id));
  EXPECT_EQ(f.ns.rmdir(1, "empty"), EIO);  // "empty" is what a failed scan must not mean
  EXPECT_EQ(f.ns.rename(d, "a", 1, "empty", 0), EISDIR);
  f.mk(1, "other", pb::DIRECTORY);
  EXPECT_EQ(f.ns.rename(1, "other", 1, "empty", 0), EIO);
  f.kv.fail_scans_under(keys::dir_prefix(dir_id));
  EXPECT_EQ(f.ns.list(d, &items, &parent), EIO);
  EXPECT_EQ(f.ns.rmdir(1, "dir"), ENOTEMPTY);  // an entry was seen before the failure
  f.kv.stop_failing_scans();

  // Nothing changed.
  ASSERT_EQ(f.ns.list(d, &items, &parent), 0);
  EXPECT_EQ(items.size(), 2u);
  EXPECT_EQ(f.ns.lookup(1, "empty", &a), 0);
  EXPECT_EQ(a.ino, e);
  EXPECT_EQ(f.ns.lookup(1, "moved", &a), ENOENT);
  EXPECT_EQ(f.ns.lookup(1, "other", &a), 0);
  EXPECT_EQ(f.ns.rmdir(1, "dir"), ENOTEMPTY);
  EXPECT_EQ(f.ns.rmdir(1, "empty"), 0);
}

// A remote op applied while the move log cannot be read fails and changes nothing: applied
// without the undo/redo it needs, it would give this pod another tree than the others.
TEST(Namespace, AnOpNeedingTheMoveLogFailsWhenItCannotBeRead) {
  Fixture f;
  f.mk(1, "x", pb::DIRECTORY);  // a logged move, stamped now
  // An op from another pod, older than that move: it needs the log to undo and redo.
  pb::Op op;
  op.mutable_hlc()->set_wall_ms(1000);
  op.mutable_hlc()->set_pod(7);
  op.set_origin(7);
  op.set_seq(1);
  pb::Move* m = op.add_actions()->mutable_move();
  m->mutable_entry()->set_pod(7);
  m->mutable_entry()->set_seq(1);
  m->mutable_parent()->set_pod(kRootId.pod);
  m->mutable_parent()->set_seq(kRootId.seq);
  m->set_name("old");
  *m->mutable_inode() = m->entry();
  *m->mutable_new_inode()->mutable_inode() = m->entry();
  m->mutable_new_inode()->set_type(pb::DIRECTORY);
  f.kv.fail_scans_under("");
  EXPECT_EQ(f.ns.apply_remote(op), EIO);
  f.kv.stop_failing_scans();
  Attr a;
  EXPECT_EQ(f.ns.lookup(1, "old", &a), ENOENT);
  EXPECT_EQ(f.ns.applied()[7], 0u);
  ASSERT_EQ(f.ns.apply_remote(op), 0);  // the same op once the store reads again
  EXPECT_EQ(f.ns.lookup(1, "old", &a), 0);
}

// nlink is derived from the entries; an unlink that would take it below zero means the
// derivation broke. In tests that aborts (an invariant, not compiled away); a production pod
// logs it and keeps nlink at 0 instead of wrapping around to 4 billion.
TEST(Namespace, NlinkBelowZeroIsAnInvariantNeverAWrapAround) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto broken = [](Fixture& f) {
    const uint64_t file = f.mk(1, "f");
    Gid g;
    EXPECT_TRUE(f.ns.gid_of(file, &g));
    // Break the derived count behind Meta's back: the entry stays, nlink says none.
    std::string v;
    EXPECT_TRUE(f.kv.get(keys::inode(g), &v));
    pb::InodeRecord rec;
    EXPECT_TRUE(rec.ParseFromString(v));
    rec.set_nlink(0);
    EXPECT_TRUE(f.kv.write({{keys::inode(g), rec.SerializeAsString()}}, false).ok);
    return file;
  };
  EXPECT_DEATH(
      {
        Fixture f;
        broken(f);
        f.ns.unlink(1, "f");
      },
      "invariant failed.*nlink");
  ASSERT_TRUE(invariants_fatal());
  set_invariants_fatal(false);
  Fixture f;
  const uint64_t file = broken(f);
  Gid g;
  ASSERT_TRUE(f.ns.gid_of(file, &g));
  pb::InodeRecord rec;
  EXPECT_EQ(f.ns.unlink(1, "f"), 0);
  set_invariants_fatal(true);
  std::string v;
  ASSERT_TRUE(f.kv.get(keys::inode(g), &v));
  ASSERT_TRUE(rec.ParseFromString(v));
  EXPECT_EQ(rec.nlink(), 0u);
}

TEST(Namespace, TrimPurgesDeletedInodes) {
  Fixture f;
  uint64_t file = f.mk(1, "f");
  Gid g;
  ASSERT_TRUE(f.ns.gid_of(file, &g));
  std::vector<pb::ChunkRef> chunks(1);
  chunks[0].set_sha256(std::string(32, 'x'));
  chunks[0].set_length(10);
  Gid v;
  ASSERT_EQ(f.ns.commit(g, Gid{}, 10, chunks, 5, {}, false, &v), 0);
  int n = 0;
  f.ns.for_each_chunk([&](const std::string&, bool) { n++; });
  EXPECT_EQ(n, 1);
  ASSERT_EQ(f.ns.unlink(1, "f"), 0);
  f.ns.trim();
  Attr a;
  EXPECT_EQ(f.ns.getattr(file, &a), ENOENT);
  EXPECT_FALSE(f.ns.gid_of(file, &g)) << "the purged inode's number still resolves (cached)";
  n = 0;
  f.ns.for_each_chunk([&](const std::string&, bool) { n++; });
  EXPECT_EQ(n, 0);
  EXPECT_EQ(f.ns.stats().move_log_entries, 0u);
}

// A purge of the trash whose write fails (a full disk) is tried again at the next trim. Its
// pass had moved the trash cursor and the next due time on before the write: the entry
// then waited a whole retention period more (before the fix the file below was still
// there after the second trim).
TEST(Namespace, APurgeWhoseWriteFailsIsTriedAgainAtTheNextTrim) {
  Fixture f;
  const uint64_t kRetentionMs = 60'000;
  f.ns.set_trash_retention_ms(kRetentionMs);
  const uint64_t file = f.mk(1, "f");
  ASSERT_EQ(f.ns.unlink(1, "f"), 0);
  f.now += int64_t{kRetentionMs + 1} * 1'000'000;  // old enough to be purged
  const std::string trash = keys::dir_prefix(kTrashId);
  bool purge_failed = false;
  f.kv.fail_if = [&](const KvBatch& b) {
    for (auto& [k, v] : b)
      if (!v && k.starts_with(trash)) return purge_failed = true;  // the trash entry's removal
    return false;
  };
  f.ns.trim();
  ASSERT_TRUE(purge_failed) << "the purge was not tried";
  Attr a;
  EXPECT_EQ(f.ns.getattr(file, &a), 0) << "purged although its write failed";
  f.kv.fail_if = nullptr;
  f.ns.trim();
  EXPECT_EQ(f.ns.getattr(file, &a), ENOENT) << "the purge waits for another retention period";
  std::vector<TrashItem> items;
  ASSERT_EQ(f.ns.list_trash(10, &items), 0);
  EXPECT_TRUE(items.empty());
}

// ---- the replicated move operation ------------------------------------------------------

namespace {

pb::Op move_op(uint64_t origin, uint64_t seq, uint64_t wall, Gid entry, Gid parent, const std::string& name,
               bool create_dir) {
  pb::Op op;
  op.mutable_hlc()->set_wall_ms(wall);
  op.mutable_hlc()->set_pod(origin);
  op.set_origin(origin);
  op.set_seq(seq);
  pb::Move* m = op.add_actions()->mutable_move();
  m->mutable_entry()->set_pod(entry.pod);
  m->mutable_entry()->set_seq(entry.seq);
  m->mutable_parent()->set_pod(parent.pod);
  m->mutable_parent()->set_seq(parent.seq);
  m->set_name(name);
  m->mutable_inode()->set_pod(entry.pod);
  m->mutable_inode()->set_seq(entry.seq);
  if (create_dir) {
    *m->mutable_new_inode()->mutable_inode() = m->inode();
    m->mutable_new_inode()->set_type(pb::DIRECTORY);
    m->mutable_new_inode()->set_mode(0755);
  }
  return op;
}

// The tree as text: every entry with its parent and name, in key order.
std::string dump_tree(MemKv& kv) {
  std::string out;
  const bool ok = kv.scan("E", prefix_end("E"), false, [&](std::string_view k, std::string_view v) {
    pb::EntryRecord e;
    e.ParseFromArray(v.data(), static_cast<int>(v.size()));
    Gid g = keys::get_gid(k, 1);
    out += g.str() + " -> " + std::to_string(e.parent().pod()) + ":" + std::to_string(e.parent().seq()) + "/" +
           e.name() + "\n";
    return true;
  });
  EXPECT_TRUE(ok);
  return out;
}

}  // namespace

TEST(MoveOp, SameOpsInAnyOrderGiveTheSameTreeWithoutCycles) {
  for (uint32_t seed = 1; seed <= 30; ++seed) {
    std::mt19937 rng(seed);
    // Three origins; origin 1 first creates six directories, then all three move them
    // around at random, sometimes into their own subtrees.
    std::vector<std::vector<pb::Op>> per_origin(3);
    std::vector<Gid> dirs;
    for (uint64_t i = 0; i < 6; ++i) {
      dirs.push_back(Gid{1, 100 + i});
      per_origin[0].push_back(move_op(1, i + 1, 1000 + i, dirs.back(), kRootId, "d" + std::to_string(i), true));
    }
    for (int o = 0; o < 3; ++o) {
      uint64_t wall = 2000;
      for (int i = 0; i < 25; ++i) {
        wall += 1 + rng() % 50;  // an HLC never issues one stamp twice
        Gid child = dirs[rng() % dirs.size()];
        Gid parent = rng() % 4 == 0 ? kRootId : dirs[rng() % dirs.size()];
        uint64_t origin = static_cast<uint64_t>(o + 1);
        per_origin[o].push_back(move_op(origin, per_origin[o].size() + 1, wall, child, parent,
                                        "m" + std::to_string(rng() % 3), false));
      }
    }
    std::string reference;
    for (int replica = 0; replica < 4; ++replica) {
      MemKv kv;
      Meta meta(kv, 9, [](Gid) { return false; });
      std::string err;
      ASSERT_TRUE(meta.init(1, &err));
      // Deliver in a random interleaving that keeps each origin's order, with duplicates.
      std::vector<size_t> next(3, 0);
      std::mt19937 order(seed * 100 + static_cast<uint32_t>(replica));
      for (;;) {
        std::vector<int> ready;
        for (int o = 0; o < 3; ++o)
          if (next[o] < per_origin[o].size()) ready.push_back(o);
        if (ready.empty()) break;
        int o = ready[order() % ready.size()];
        ASSERT_TRUE(meta.apply(per_origin[o][next[o]], false).ok);
        if (order() % 5 == 0) {
          ASSERT_TRUE(meta.apply(per_origin[o][next[o]], false).ok);  // duplicate
        }
        next[o]++;
      }
      // Every directory still reaches the root: no cycle was created.
      for (Gid d : dirs) EXPECT_TRUE(meta.is_ancestor(kRootId, d)) << "seed " << seed;
      std::string tree = dump_tree(kv);
      if (replica == 0) {
        reference = tree;
      } else {
        EXPECT_EQ(tree, reference) << "seed " << seed << " replica " << replica;
      }
    }
  }
}

// ---- a delete concurrent with a modification ------------------------------------------------

namespace {

struct Replica {
  MemKv kv;
  int64_t now = 1'700'000'000'000'000'000;
  Namespace ns;
  explicit Replica(uint64_t id) : ns(kv, id, [this] { return now += 1000; }, [](Gid) { return false; }) {
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
  }
  // Applies every op of `from`'s own origin that this replica lacks.
  void receive_from(Replica& from) {
    const uint64_t origin = from.ns.pod_id();
    const uint64_t have = ns.applied()[origin];
    ASSERT_EQ(from.ns.make_durable(), 0);  // only durable ops leave a pod
    for (const pb::Op& op : from.ns.ops_after(origin, have, 1000)) ASSERT_EQ(ns.apply_remote(op), 0);
  }
  uint64_t create(const char* name) {
    Attr a;
    EXPECT_EQ(ns.make(1, name, pb::REGULAR, 0644, 0, 0, "", &a), 0);
    return a.ino;
  }
  // Commits `text` as the content of the file at FUSE number `ino`.
  void write(uint64_t ino, const std::string& text) {
    Gid g, current;
    pb::VersionRecord rec;
    ASSERT_TRUE(ns.gid_of(ino, &g));
    ASSERT_EQ(ns.current_version(g, &current, &rec), 0);
    std::vector<pb::ChunkRef> chunks(1);
    chunks[0].set_sha256(ChunkStore::hash(text.data(), text.size()));
    chunks[0].set_length(text.size());
    chunks[0].set_inline_data(text);
    Gid v;
    ASSERT_EQ(ns.commit(g, current, text.size(), chunks, now, {}, false, &v), 0);
  }
  // Creates `name` with `text` here, sends it to `other`; returns its FUSE number there.
  uint64_t share_new_file(const char* name, const std::string& text, Replica& other) {
    write(create(name), text);
    other.receive_from(*this);
    Attr a;
    EXPECT_EQ(other.ns.lookup(1, name, &a), 0);
    return a.ino;
  }
  // The content of `name` in the root, or "(none)".
  std::string read(const char* name) {
    Attr a;
    if (ns.lookup(1, name, &a) != 0) return "(none)";
    pb::VersionRecord rec;
    if (!ns.get_version(a.version, &rec) || rec.chunks_size() == 0) return "";
    return rec.chunks(0).inline_data();
  }
};

}  // namespace

// A received batch is one store write: when it fails, none of its ops is applied, in the
// store or in memory (progress, inode numbers), and the same ops apply cleanly later.
TEST(RemoteBatch, AFailedWriteAppliesNoneOfTheBatch) {
  Replica source(1);
  source.create("x");
  source.create("y");
  Attr d;
  ASSERT_EQ(source.ns.make(1, "d", pb::DIRECTORY, 0755, 0, 0, "", &d), 0);
  ASSERT_EQ(source.ns.make_durable(), 0);
  const std::vector<pb::Op> ops = source.ns.ops_after(1, 0, 100);
  ASSERT_EQ(ops.size(), 3u);
  Fixture f;
  Attr a;
  {
    Namespace::RemoteBatch batch(f.ns);
    for (const pb::Op& op : ops) ASSERT_EQ(batch.apply(op, nullptr), 0);
    EXPECT_EQ(batch.applied()[1], 3u);  // seen inside the batch
    f.kv.fail = true;
    EXPECT_EQ(batch.commit(), ENOSPC);
  }
  f.kv.fail = false;
  EXPECT_EQ(f.ns.applied()[1], 0u);
  EXPECT_EQ(f.ns.lookup(1, "x", &a), ENOENT);
  const uint64_t local = f.mk(1, "local");  // memory went back: the next number is the first
  {
    Namespace::RemoteBatch batch(f.ns);
    for (const pb::Op& op : ops) ASSERT_EQ(batch.apply(op, nullptr), 0);
    EXPECT_EQ(batch.commit(), 0);
  }
  EXPECT_EQ(f.ns.applied()[1], 3u);
  for (const char* name : {"x", "y", "d", "local"}) EXPECT_EQ(f.ns.lookup(1, name, &a), 0) << name;
  Attr l;
  ASSERT_EQ(f.ns.lookup(1, "local", &l), 0);
  EXPECT_EQ(l.ino, local);
  Fixture fresh;
  EXPECT_EQ(local, fresh.mk(1, "local")) << "inode numbers handed out in the failed batch were not taken back";
}

TEST(ConcurrentDelete, AWriteTheDeleteDidNotSeeKeepsTheFile) {
  Replica a(1), b(2);
  const uint64_t on_b = a.share_new_file("f", "one", b);
  // Concurrently: a deletes f, b writes it. Each then receives the other's op (each pod
  // sees them in another order).
  ASSERT_EQ(a.ns.unlink(1, "f"), 0);
  b.write(on_b, "two");
  a.receive_from(b);
  b.receive_from(a);
  EXPECT_EQ(a.read("f"), "two");
  EXPECT_EQ(b.read("f"), "two");
}

// A remote op older than local moves makes this pod undo and redo them around it. A create
// redone that way is the same live file: its FUSE number must stay, or every handle and
// cached dentry the kernel holds names a number that no longer exists (getattr/ftruncate of
// an open file failed with ENOENT, and the kernel's pages of the file were never
// invalidated again: torn and stale reads in the multi-mount test).
TEST(LocalInodeNumbers, AnUndoneAndRedoneCreateKeepsItsNumber) {
  Replica a(1), b(2);
  Attr x;
  ASSERT_EQ(b.ns.make(1, "x", pb::DIRECTORY, 0755, 0, 0, "", &x), 0);  // older than a's ops below
  a.now += 1'000'000'000;
  const uint64_t f = a.create("f");
  Attr d;
  ASSERT_EQ(a.ns.make(1, "d", pb::DIRECTORY, 0755, 0, 0, "", &d), 0);
  Attr same_d;
  ASSERT_EQ(b.ns.make(1, "d", pb::DIRECTORY, 0755, 0, 0, "", &same_d), 0);  // one id per path: merged
  a.receive_from(b);  // undoes f's and d's creates, applies b's ops, redoes them
  Attr now;
  ASSERT_EQ(a.ns.lookup(1, "f", &now), 0);
  EXPECT_EQ(now.ino, f);
  EXPECT_EQ(a.ns.getattr(f, &now), 0);
  ASSERT_EQ(a.ns.lookup(1, "d", &now), 0);
  EXPECT_EQ(now.ino, d.ino);
  EXPECT_EQ(a.ns.getattr(d.ino, &now), 0);
  // A directory made again where it was removed still gets a new number (the kernel holds
  // the old one as deleted).
  ASSERT_EQ(a.ns.rmdir(1, "d"), 0);
  Attr again;
  ASSERT_EQ(a.ns.make(1, "d", pb::DIRECTORY, 0755, 0, 0, "", &again), 0);
  EXPECT_EQ(again.id, d.id);
  EXPECT_NE(again.ino, d.ino);
  Gid g;
  EXPECT_FALSE(a.ns.gid_of(d.ino, &g)) << "the old number still resolves (cached)";
  ASSERT_TRUE(a.ns.gid_of(again.ino, &g));
  EXPECT_EQ(g, again.id);
}

TEST(InoCache, KeepsTheLatestMappingPerSlotAndForgets) {
  InoCache cache;
  Gid g;
  EXPECT_FALSE(cache.get(7, &g));
  cache.put(7, Gid{1, 7});
  ASSERT_TRUE(cache.get(7, &g));
  EXPECT_EQ(g, (Gid{1, 7}));
  // Another number of the same slot replaces it: never answers for the wrong number.
  cache.put(7 + InoCache::kSlots, Gid{1, 8});
  EXPECT_FALSE(cache.get(7, &g));
  ASSERT_TRUE(cache.get(7 + InoCache::kSlots, &g));
  EXPECT_EQ(g, (Gid{1, 8}));
  cache.forget(7);  // not the cached number: nothing changes
  EXPECT_TRUE(cache.get(7 + InoCache::kSlots, &g));
  cache.forget(7 + InoCache::kSlots);
  EXPECT_FALSE(cache.get(7 + InoCache::kSlots, &g));
  cache.put(9, Gid{1, 9});
  cache.clear();
  EXPECT_FALSE(cache.get(9, &g));
  EXPECT_FALSE(cache.get(0, &g));  // 0 marks an empty slot; no inode has it
}

TEST(ConcurrentDelete, ADeleteThatSawTheWriteRemovesTheFile) {
  Replica a(1), b(2);
  const uint64_t on_b = a.share_new_file("f", "one", b);
  b.write(on_b, "two");
  a.receive_from(b);
  ASSERT_EQ(a.ns.unlink(1, "f"), 0);
  b.receive_from(a);
  EXPECT_EQ(a.read("f"), "(none)");
  EXPECT_EQ(b.read("f"), "(none)");
}

TEST(ConcurrentDelete, AWriteThroughAHandleOfTheDeletedFileDoesNotBringItBack) {
  Replica a(1), b(2);
  const uint64_t f = a.create("tmp");
  a.write(f, "one");
  ASSERT_EQ(a.ns.unlink(1, "tmp"), 0);  // open, unlink, write, close: a temporary file
  a.write(f, "scratch");
  b.receive_from(a);
  EXPECT_EQ(a.read("tmp"), "(none)");
  EXPECT_EQ(b.read("tmp"), "(none)");
}

TEST(ConcurrentDelete, AWriteThroughAnotherHardLinkDoesNotBringTheDeletedNameBack) {
  Replica a(1), b(2);
  const uint64_t f = a.create("x");
  a.write(f, "one");
  Attr attr;
  ASSERT_EQ(a.ns.link(f, 1, "y", &attr), 0);
  ASSERT_EQ(a.ns.unlink(1, "y"), 0);
  a.write(f, "two");  // through x, after y was deleted
  b.receive_from(a);
  for (Replica* r : {&a, &b}) {
    EXPECT_EQ(r->read("x"), "two");
    EXPECT_EQ(r->read("y"), "(none)");
  }
}

// Versions stored before chunk lists became sparse (one entry per span, holes as empty
// hashes) read as sparse lists with their indices: an upgraded pod keeps its files.
TEST(Versions, DenseRecordsOfOlderPodsReadAsSparseLists) {
  Fixture f;
  pb::VersionRecord old;
  old.set_size(3 * 4096);
  old.add_dense_chunks()->set_sha256(std::string(32, 'a'));
  old.add_dense_chunks();  // a hole
  old.add_dense_chunks()->set_sha256(std::string(32, 'c'));
  const Gid v{7, 9};
  KvBatch b{{keys::version(v), old.SerializeAsString()}};
  ASSERT_TRUE(f.kv.write(b, false).ok);
  pb::VersionRecord rec;
  ASSERT_TRUE(f.ns.get_version(v, &rec));
  EXPECT_EQ(rec.dense_chunks_size(), 0);
  ASSERT_EQ(rec.chunks_size(), 2);
  EXPECT_EQ(rec.chunks(0).index(), 0u);
  EXPECT_EQ(rec.chunks(0).sha256(), std::string(32, 'a'));
  EXPECT_EQ(rec.chunks(1).index(), 2u);
  EXPECT_EQ(rec.chunks(1).sha256(), std::string(32, 'c'));
  std::vector<std::string> referenced;
  f.ns.for_each_chunk([&](const std::string& sha, bool) { referenced.push_back(sha); });
  EXPECT_EQ(referenced.size(), 2u);  // garbage collection sees the old record's chunks
}

namespace {

// The snapshot of a pod (id 7) that made one file, "kept".
Meta::SnapshotBatch snapshot_of_a_pod_with_one_file() {
  MemKv source_kv;
  Namespace source(source_kv, 7, [] { return int64_t{1'700'000'000'000'000'000}; }, [](Gid) { return false; });
  std::string err;
  EXPECT_TRUE(source.init(&err)) << err;
  Attr a;
  EXPECT_EQ(source.make(1, "kept", pb::REGULAR, 0644, 0, 0, "", &a), 0);
  Meta::SnapshotBatch pairs = wormhole::testing::snapshot_records(source);
  EXPECT_FALSE(pairs.empty());
  return pairs;
}

}  // namespace

// A snapshot install cut by a crash leaves its marker: the next start drops the half copy
// (whose progress records would claim ops the pod lacks) and starts as an empty pod.
TEST(Snapshots, AnInstallCutByACrashStartsEmptyAgain) {
  MemKv kv;
  std::string err;
  Attr a;
  const Meta::SnapshotBatch pairs = snapshot_of_a_pod_with_one_file();
  {
    // What a crash in the middle of an install leaves: the marker, and part of the copy.
    KvBatch half{{keys::state("installing_snapshot"), "1"}};
    for (auto& [k, v] : pairs)
      if (k[0] == 'P' || k[0] == 'O') half.emplace_back(k, v);  // progress and op log, no tree
    ASSERT_GT(half.size(), 1u);
    ASSERT_TRUE(kv.write(half, true).ok);
  }
  bool has_progress = false;
  {
    Namespace restarted(kv, 8, [] { return int64_t{1'700'000'000'000'000'000}; }, [](Gid) { return false; });
    ASSERT_TRUE(restarted.init(&err)) << err;
    EXPECT_TRUE(restarted.empty_history());
    for (auto& [origin, seq] : restarted.applied()) has_progress |= seq != 0;
    EXPECT_FALSE(has_progress);
    std::string v;
    EXPECT_FALSE(kv.get(keys::state("installing_snapshot"), &v));
    // And a whole install works afterwards, leaving no marker.
    ASSERT_TRUE(wormhole::testing::install_records(restarted, pairs, 1, &err)) << err;
    EXPECT_FALSE(kv.get(keys::state("installing_snapshot"), &v));
    EXPECT_EQ(restarted.lookup(1, "kept", &a), 0);
  }
}

// A snapshot cut during the transfer (the source went away) leaves an empty pod whose
// marker is gone: what it does afterwards survives a restart (before, the marker stayed,
// and the next start dropped every replicated key, the pod's own later ops with them).
// When even going back to empty fails, the pod applies nothing more until a restart.
TEST(Snapshots, AnInstallCutDuringTheTransferLeavesAnEmptyPodThatKeepsItsLaterOps) {
  MemKv kv;
  auto clock = [] { return int64_t{1'700'000'000'000'000'000}; };
  std::string err;
  Attr a;
  const Meta::SnapshotBatch pairs = snapshot_of_a_pod_with_one_file();
  ASSERT_GT(pairs.size(), 2u);
  auto cut_halfway = [&pairs](size_t* at) {
    return [&pairs, at](Meta::SnapshotBatch* batch) {
      if (*at >= pairs.size() / 2) return -1;  // the source went away
      batch->push_back(pairs[(*at)++]);
      return 1;
    };
  };
  {
    Namespace pod(kv, 8, clock, [](Gid) { return false; });
    ASSERT_TRUE(pod.init(&err)) << err;
    size_t at = 0;
    EXPECT_FALSE(pod.install_snapshot(cut_halfway(&at), &err));
    EXPECT_TRUE(pod.empty_history());
    ASSERT_EQ(pod.make(1, "mine", pb::REGULAR, 0644, 0, 0, "", &a), 0);
    ASSERT_EQ(pod.make_durable(), 0);
  }
  {
    Namespace restarted(kv, 8, clock, [](Gid) { return false; });
    ASSERT_TRUE(restarted.init(&err)) << err;
    EXPECT_EQ(restarted.lookup(1, "mine", &a), 0) << "the pod's own op was dropped at its restart";
    EXPECT_NE(restarted.lookup(1, "kept", &a), 0);
  }
  MemKv kv2;
  {
    Namespace pod(kv2, 9, clock, [](Gid) { return false; });
    ASSERT_TRUE(pod.init(&err)) << err;
    kv2.fail_scans_under("");  // the store fails: the install, and going back to empty
    size_t at = 0;
    EXPECT_FALSE(pod.install_snapshot(cut_halfway(&at), &err));
    EXPECT_NE(err.find("applies nothing"), std::string::npos) << err;
    EXPECT_NE(pod.make(1, "mine", pb::REGULAR, 0644, 0, 0, "", &a), 0);  // refused
  }
  kv2.stop_failing_scans();
  Namespace restarted(kv2, 9, clock, [](Gid) { return false; });
  ASSERT_TRUE(restarted.init(&err)) << err;  // drops the half copy
  EXPECT_TRUE(restarted.empty_history());
  EXPECT_EQ(restarted.make(1, "mine", pb::REGULAR, 0644, 0, 0, "", &a), 0);
}

// Garbage collection lists the chunks still referenced by scanning the committed store
// without the namespace lock. While a snapshot installs (in many writes), the store holds
// part of the copy: a list made then would leave out the chunks of the versions still to
// come, and GC would delete them. So no list is given until the install has ended.
TEST(Snapshots, NoChunkListIsGivenWhileASnapshotInstalls) {
  MemKv kv;
  std::string err;
  const Meta::SnapshotBatch pairs = snapshot_of_a_pod_with_one_file();
  ASSERT_GT(pairs.size(), 2u);
  Namespace pod(kv, 8, [] { return int64_t{1'700'000'000'000'000'000}; }, [](Gid) { return false; });
  ASSERT_TRUE(pod.init(&err)) << err;
  auto list = [&pod] { return pod.for_each_chunk([](const std::string&, bool) {}); };
  EXPECT_TRUE(list());
  size_t at = 0;
  int lists_during = 0, lists_given = 0;
  ASSERT_TRUE(pod.install_snapshot(
      [&](Meta::SnapshotBatch* batch) {
        if (at >= pairs.size()) return 0;
        if (at == pairs.size() / 2) {  // half of the copy is in: GC asks now (another thread would)
          ++lists_during;
          lists_given += list();
        }
        batch->push_back(pairs[at++]);
        return 1;
      },
      &err))
      << err;
  EXPECT_EQ(lists_during, 1);
  EXPECT_EQ(lists_given, 0) << "a chunk list was made from a half-installed snapshot";
  EXPECT_TRUE(list());
}

// ---- ops from a hostile or broken peer: Meta::apply changes nothing they could break ----

namespace {

// A Meta of pod 42 and ops "from" pod 7, built by hand as a peer could send them.
struct Remote {
  MemKv kv;
  Meta meta{kv, 42, [](Gid) { return false; }};
  uint64_t seq = 0;
  uint64_t wall = 1'700'000'000'000;
  Remote() {
    std::string err;
    EXPECT_TRUE(meta.init(wall, &err)) << err;
  }
  pb::Op op() {
    pb::Op o;
    o.set_origin(7);
    o.set_seq(++seq);
    to_pb(Hlc{++wall, 0, 7}, o.mutable_hlc());
    return o;
  }
  static pb::Move* move(pb::Op& o, Gid entry, Gid parent, const std::string& name, Gid inode) {
    pb::Move* m = o.add_actions()->mutable_move();
    to_pb(entry, m->mutable_entry());
    to_pb(parent, m->mutable_parent());
    m->set_name(name);
    to_pb(inode, m->mutable_inode());
    return m;
  }
  void mkdir(Gid id, Gid parent, const std::string& name) {
    pb::Op o = op();
    pb::NewInode* n = move(o, id, parent, name, id)->mutable_new_inode();
    to_pb(id, n->mutable_inode());
    n->set_type(pb::DIRECTORY);
    n->set_mode(0755);
    ASSERT_TRUE(meta.apply(o, false).ok);
  }
  void create(Gid entry, Gid inode, Gid parent, const std::string& name) {
    pb::Op o = op();
    pb::NewInode* n = move(o, entry, parent, name, inode)->mutable_new_inode();
    to_pb(inode, n->mutable_inode());
    n->set_type(pb::REGULAR);
    n->set_mode(0644);
    ASSERT_TRUE(meta.apply(o, false).ok);
  }
  KvStatus apply_move(Gid entry, Gid parent, const std::string& name, Gid inode) {
    pb::Op o = op();
    move(o, entry, parent, name, inode);
    return meta.apply(o, false);
  }
  std::vector<std::string> names(Gid dir) {
    std::vector<std::string> out;
    std::vector<DirItem> items;
    EXPECT_EQ(meta.list(dir, &items), 0);
    for (auto& item : items) out.push_back(item.name);
    return out;
  }
};

}  // namespace

TEST(HostileOps, AnEntryOfAnotherIdCannotLinkADirectoryBelowItself) {
  // The cycle check walks directory entries, which are the directories themselves: an
  // entry of another id pointing at directory A, put below A, would hang A below itself.
  Remote r;
  const Gid a{7, 1}, b{7, 2};
  r.mkdir(a, kRootId, "a");
  r.mkdir(b, a, "b");
  ASSERT_TRUE(r.apply_move(Gid{7, 3}, b, "loop", a).ok);
  EXPECT_TRUE(r.names(b).empty());
  // Nor anywhere else: a directory has one entry.
  ASSERT_TRUE(r.apply_move(Gid{7, 4}, kRootId, "second", a).ok);
  EXPECT_EQ(r.names(kRootId), std::vector<std::string>{"a"});
  pb::InodeRecord rec;
  ASSERT_TRUE(r.meta.get_inode(a, &rec));
  EXPECT_EQ(rec.nlink(), 3u);
}

TEST(HostileOps, TheRootAndTheTrashNeverMove) {
  Remote r;
  const Gid a{7, 1};
  r.mkdir(a, kRootId, "a");
  ASSERT_TRUE(r.apply_move(kTrashId, kRootId, "trash", kTrashId).ok);
  ASSERT_TRUE(r.apply_move(kRootId, kTrashId, "root", kRootId).ok);
  ASSERT_TRUE(r.apply_move(kRootId, a, "root", kRootId).ok);
  EXPECT_EQ(r.names(kRootId), std::vector<std::string>{"a"});
  pb::EntryRecord e;
  EXPECT_FALSE(r.meta.get_entry(kRootId, &e));
  EXPECT_FALSE(r.meta.get_entry(kTrashId, &e));
  EXPECT_EQ(r.meta.path_of(a), "/a");
}

TEST(HostileOps, AMoveNamingAnUnknownInodeOrAFileAsItsOwnEntryChangesNothing) {
  Remote r;
  ASSERT_TRUE(r.apply_move(Gid{7, 1}, kRootId, "ghost", Gid{7, 2}).ok);
  r.create(Gid{7, 3}, Gid{7, 4}, kRootId, "file");
  ASSERT_TRUE(r.apply_move(Gid{7, 4}, kRootId, "self", Gid{7, 4}).ok);
  EXPECT_EQ(r.names(kRootId), std::vector<std::string>{"file"});
}

TEST(HostileOps, OnlyFilesGetVersionsAndAVersionIdIsNeverOverwritten) {
  Remote r;
  const Gid dir{7, 1}, f1{7, 3}, f2{7, 5}, v{7, 9};
  r.mkdir(dir, kRootId, "d");
  r.create(Gid{7, 2}, f1, kRootId, "f1");
  r.create(Gid{7, 4}, f2, kRootId, "f2");
  auto commit = [&](Gid inode, Gid version, uint64_t size) {
    pb::Op o = r.op();
    pb::CommitVersion* c = o.add_actions()->mutable_commit();
    to_pb(inode, c->mutable_inode());
    to_pb(version, c->mutable_version());
    c->set_size(size);
    c->add_chunks()->set_length(0);
    return r.meta.apply(o, false);
  };
  ASSERT_TRUE(commit(dir, Gid{7, 8}, 10).ok);
  pb::InodeRecord rec;
  ASSERT_TRUE(r.meta.get_inode(dir, &rec));
  EXPECT_FALSE(rec.has_version());
  EXPECT_EQ(rec.size(), 0u);
  ASSERT_TRUE(commit(f1, v, 10).ok);
  // f2's commit reuses f1's version id: it would overwrite f1's content.
  ASSERT_TRUE(commit(f2, v, 20).ok);
  pb::VersionRecord got;
  ASSERT_TRUE(r.meta.get_version(v, &got));
  EXPECT_EQ(from_pb(got.inode()), f1);
  EXPECT_EQ(got.size(), 10u);
  ASSERT_TRUE(r.meta.get_inode(f2, &rec));
  EXPECT_FALSE(rec.has_version());
}

TEST(HostileOps, OpsOutOfSequenceOrWithAnOlderStampAreRefused) {
  Remote r;
  r.mkdir(Gid{7, 1}, kRootId, "a");
  pb::Op gap = r.op();
  gap.set_seq(5);
  EXPECT_FALSE(r.meta.apply(gap, false).ok);
  EXPECT_EQ(r.meta.applied()[7], 1u);
  pb::Op older = r.op();
  r.seq--;  // this op takes seq 2 again below
  older.set_seq(2);
  to_pb(Hlc{1000, 0, 7}, older.mutable_hlc());  // before op 1
  std::string why;
  EXPECT_FALSE(r.meta.in_order(older, &why));
  EXPECT_NE(why.find("not after its origin's previous op"), std::string::npos) << why;
  EXPECT_FALSE(r.meta.apply(older, false).ok);
  pb::Op zero = r.op();
  zero.set_origin(0);
  EXPECT_FALSE(r.meta.apply(zero, false).ok);
  EXPECT_EQ(r.meta.applied().count(0), 0u);
}

// `wormhole forget` is final: a forgotten member stays forgotten whatever the order of the
// ops (the pod recording itself again, later or concurrently, does not bring it back).
TEST(Members, ForgottenIsFinalInAnyOrder) {
  auto member = [](bool forgotten) {
    pb::Member m;
    m.set_pod_id(77);
    m.set_name("gone");
    m.set_address("127.0.0.1:1");
    m.set_role("storage");
    m.set_forgotten(forgotten);
    return m;
  };
  auto op = [&](uint64_t origin, uint64_t wall, bool forgotten) {
    pb::Op o;
    o.set_origin(origin);
    o.set_seq(1);
    o.mutable_hlc()->set_wall_ms(wall);
    o.mutable_hlc()->set_pod(origin);
    *o.add_actions()->mutable_member() = member(forgotten);
    return o;
  };
  const pb::Op forget = op(5, 1000, true), readd = op(6, 2000, false);  // the re-add is newer
  for (bool forget_first : {true, false}) {
    MemKv kv;
    Meta meta(kv, 42, [](Gid) { return false; });
    std::string err;
    ASSERT_TRUE(meta.init(1, &err)) << err;
    ASSERT_TRUE(meta.apply(forget_first ? forget : readd, false).ok);
    ASSERT_TRUE(meta.apply(forget_first ? readd : forget, false).ok);
    auto members = meta.members();
    ASSERT_EQ(members.size(), 1u);
    EXPECT_TRUE(members[0].forgotten()) << "forget first: " << forget_first;
  }
}

// What justified a forget (the admin's authorization, the origin of the op) is the newest
// forget's, whatever the order, and later ops that are not forgets do not drop it.
TEST(Members, TheNewestForgetsAuthorizationStaysInAnyOrder) {
  auto op = [](uint64_t origin, uint64_t wall, bool forgotten, const std::string& sig) {
    pb::Op o;
    o.set_origin(origin);
    o.set_seq(1);
    o.mutable_hlc()->set_wall_ms(wall);
    o.mutable_hlc()->set_pod(origin);
    pb::Member* m = o.add_actions()->mutable_member();
    m->set_pod_id(77);
    m->set_name("gone");
    m->set_address("127.0.0.1:" + std::to_string(wall));
    m->set_role("storage");
    m->set_forgotten(forgotten);
    m->mutable_authorization()->set_signature(sig);
    m->set_forgotten_by(999);  // never taken from an op
    return o;
  };
  std::vector<pb::Op> ops{op(5, 1000, true, "first"), op(7, 2000, true, "newest"), op(6, 3000, false, "")};
  std::vector<int> order{0, 1, 2};
  do {
    MemKv kv;
    Meta meta(kv, 42, [](Gid) { return false; });
    std::string err;
    ASSERT_TRUE(meta.init(1, &err)) << err;
    for (int i : order) ASSERT_TRUE(meta.apply(ops[static_cast<size_t>(i)], false).ok);
    auto members = meta.members();
    ASSERT_EQ(members.size(), 1u);
    const std::string where = std::to_string(order[0]) + std::to_string(order[1]) + std::to_string(order[2]);
    EXPECT_TRUE(members[0].forgotten()) << where;
    EXPECT_EQ(members[0].authorization().signature(), "newest") << where;
    EXPECT_EQ(members[0].forgotten_by(), 7u) << where;
    EXPECT_EQ(members[0].address(), "127.0.0.1:3000") << where;  // the description: last writer wins
  } while (std::next_permutation(order.begin(), order.end()));
}

// ---- concurrent changes that once lost or hid data ------------------------------------------

namespace {

// The names and contents a replica shows in its root, sorted.
std::vector<std::pair<std::string, std::string>> shown(Replica& r) {
  std::vector<ListItem> items;
  uint64_t parent;
  EXPECT_EQ(r.ns.list(1, &items, &parent), 0);
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& i : items) out.emplace_back(i.name, r.read(i.name.c_str()));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// Two pods create one name at once: both files stay reachable, under the same names on
// every pod (the second as "name.conflict-<tag>.ext"), and each name resolves.
TEST(ConcurrentCreate, BothFilesOfOneNameStayReachable) {
  Replica a(1), b(2);
  a.write(a.create("notes.txt"), "from a");
  b.write(b.create("notes.txt"), "from b");
  a.receive_from(b);
  b.receive_from(a);
  const auto on_a = shown(a);
  ASSERT_EQ(on_a.size(), 2u);
  EXPECT_EQ(on_a, shown(b));
  std::vector<std::string> contents{on_a[0].second, on_a[1].second};
  std::sort(contents.begin(), contents.end());
  EXPECT_EQ(contents, (std::vector<std::string>{"from a", "from b"}));
  const std::string& dup = on_a[0].first == "notes.txt" ? on_a[1].first : on_a[0].first;
  EXPECT_EQ(dup.rfind("notes.conflict-", 0), 0u) << dup;
  EXPECT_EQ(dup.substr(dup.size() - 4), ".txt") << dup;
  // The duplicate's name works like any other: rename it to a name of its own.
  ASSERT_EQ(a.ns.rename(1, dup, 1, "notes-b.txt", 0), 0);
  b.receive_from(a);
  EXPECT_EQ(shown(a), shown(b));
  EXPECT_EQ(shown(a).size(), 2u);
  EXPECT_EQ(b.read("notes-b.txt").empty(), false);
}

// `mv other f` on one pod while another writes f: the rename deletes f's entry, which the
// write had not seen (so it is void), and puts `other` under the name: both stay visible.
TEST(ConcurrentDelete, ARenameOverAFileAConcurrentWriteKeepsShowsBoth) {
  Replica a(1), b(2);
  const uint64_t f_on_b = a.share_new_file("f", "old", b);
  a.share_new_file("other", "the other", b);
  ASSERT_EQ(a.ns.rename(1, "other", 1, "f", 0), 0);
  b.write(f_on_b, "written on b");
  a.receive_from(b);
  b.receive_from(a);
  const auto on_a = shown(a);
  EXPECT_EQ(on_a, shown(b));
  std::vector<std::string> contents;
  for (auto& [name, text] : on_a) contents.push_back(text);
  std::sort(contents.begin(), contents.end());
  EXPECT_EQ(contents, (std::vector<std::string>{"the other", "written on b"}));
}

TEST(DuplicateNames, RoundTripAndBounds) {
  std::string name, tag;
  const Gid e{5, 7};
  const std::string d = duplicate_name("report.final.pdf", e);
  EXPECT_EQ(d.substr(0, 19), "report.final.confli");
  ASSERT_TRUE(parse_duplicate_name(d, &name, &tag));
  EXPECT_EQ(name, "report.final.pdf");
  ASSERT_TRUE(parse_duplicate_name(duplicate_name("Makefile", e), &name, &tag));
  EXPECT_EQ(name, "Makefile");
  EXPECT_LE(duplicate_name(std::string(255, 'x'), e).size(), 255u);
  EXPECT_LE(duplicate_name(std::string(100, 'x') + "." + std::string(154, 'y'), e).size(), 255u);
  EXPECT_FALSE(parse_duplicate_name("plain.txt", &name, &tag));
  EXPECT_FALSE(parse_duplicate_name("a.conflict-xyz.txt", &name, &tag));
}

// A file made in a directory another pod removes at the same time never vanishes: the
// removed directory shows in "lost+found" at the root, on every pod, with the file in it,
// and moving the file out puts it back (lost+found then disappears).
TEST(ConcurrentDelete, AFileMadeInADirectoryRemovedMeanwhileShowsInLostAndFound) {
  Replica a(1), b(2);
  Attr d;
  ASSERT_EQ(a.ns.make(1, "d", pb::DIRECTORY, 0755, 0, 0, "", &d), 0);
  b.receive_from(a);
  Attr d_on_b, f;
  ASSERT_EQ(b.ns.lookup(1, "d", &d_on_b), 0);
  ASSERT_EQ(a.ns.rmdir(1, "d"), 0);
  ASSERT_EQ(b.ns.make(d_on_b.ino, "survivor", pb::REGULAR, 0644, 0, 0, "", &f), 0);
  b.write(f.ino, "precious");
  a.receive_from(b);
  b.receive_from(a);
  for (Replica* r : {&a, &b}) {
    EXPECT_EQ(r->read("d"), "(none)");
    Attr lf, dir, file;
    ASSERT_EQ(r->ns.lookup(1, "lost+found", &lf), 0);
    std::vector<ListItem> items;
    uint64_t parent;
    ASSERT_EQ(r->ns.list(lf.ino, &items, &parent), 0);
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].name.rfind("d.", 0), 0u);
    ASSERT_EQ(r->ns.lookup(lf.ino, items[0].name, &dir), 0);
    ASSERT_EQ(r->ns.lookup(dir.ino, "survivor", &file), 0);
    // Nothing can be made in the view itself.
    Attr x;
    EXPECT_EQ(r->ns.make(lf.ino, "x", pb::REGULAR, 0644, 0, 0, "", &x), EPERM);
  }
  // Put back from a: mv lost+found/d.<tag>/survivor /survivor.
  Attr lf, dir;
  ASSERT_EQ(a.ns.lookup(1, "lost+found", &lf), 0);
  std::vector<ListItem> items;
  uint64_t parent;
  ASSERT_EQ(a.ns.list(lf.ino, &items, &parent), 0);
  ASSERT_EQ(a.ns.lookup(lf.ino, items[0].name, &dir), 0);
  ASSERT_EQ(a.ns.rename(dir.ino, "survivor", 1, "survivor", 0), 0);
  b.receive_from(a);
  for (Replica* r : {&a, &b}) {
    EXPECT_EQ(r->read("survivor"), "precious");
    Attr gone;
    EXPECT_EQ(r->ns.lookup(1, "lost+found", &gone), ENOENT);
  }
}

// ---- commits as deltas ------------------------------------------------------------------------

namespace {

constexpr uint64_t kSpanBytes = 4 << 20;  // the default chunk size: op validation's limit

pb::ChunkRef chunk_ref(uint64_t index, const std::string& text) {
  pb::ChunkRef c;
  c.set_index(index);
  c.set_sha256(ChunkStore::hash(text.data(), text.size()));
  c.set_length(static_cast<uint32_t>(text.size()));
  c.set_inline_data(text);
  return c;
}

// The chunk list of `name` in the root as "index:text" items.
std::string chunk_list(Replica& r, const char* name) {
  Attr a;
  if (r.ns.lookup(1, name, &a) != 0) return "(none)";
  pb::VersionRecord rec;
  if (!r.ns.get_version(a.version, &rec)) return "(no version)";
  if (rec.incomplete()) return "(incomplete)";
  std::string out;
  for (auto& c : rec.chunks())
    out += std::to_string(c.index()) + (c.span_offset() ? "@" + std::to_string(c.span_offset()) : "") + ":" +
           c.inline_data() + " ";
  return out;
}

// A piece of span `index` at `span_offset` holding `text` (inline).
pb::ChunkRef piece(uint64_t index, uint32_t span_offset, const std::string& text) {
  pb::ChunkRef c = chunk_ref(index, text);
  c.set_span_offset(span_offset);
  return c;
}

// Commits `chunks` (the whole list) over the current version of `name`, as OpenFile does.
Gid commit_list(Replica& r, const char* name, uint64_t spans, const std::vector<pb::ChunkRef>& chunks) {
  Attr a;
  EXPECT_EQ(r.ns.lookup(1, name, &a), 0);
  Gid current;
  pb::VersionRecord rec;
  EXPECT_EQ(r.ns.current_version(a.id, &current, &rec), 0);
  Gid v;
  EXPECT_EQ(r.ns.commit(a.id, current, spans * kSpanBytes, chunks, r.now, {}, false, &v, spans), 0);
  return v;
}

// The newest op of `r`'s own origin.
pb::Op last_op(Replica& r) {
  const uint64_t origin = r.ns.pod_id();
  EXPECT_EQ(r.ns.make_durable(), 0);
  std::vector<pb::Op> ops = r.ns.ops_after(origin, r.ns.applied()[origin] - 1, 1);
  EXPECT_EQ(ops.size(), 1u);
  return ops.empty() ? pb::Op{} : ops[0];
}

}  // namespace

// A small write into a large file commits an op that names what changed, not the whole list
// (issue "Pay for what you touch": a 4 KiB write into a 1 GiB file, op ≤ 4 KiB).
TEST(Deltas, ASmallWriteIntoALargeFileIsASmallOp) {
  Replica a(1), b(2);
  a.create("big");
  std::vector<pb::ChunkRef> chunks;
  for (uint64_t i = 0; i < 256; ++i) chunks.push_back(chunk_ref(i, "c" + std::to_string(i)));  // 1 GiB
  commit_list(a, "big", 256, chunks);
  const size_t whole_bytes = last_op(a).ByteSizeLong();
  chunks[100] = chunk_ref(100, "changed");
  commit_list(a, "big", 256, chunks);
  const pb::Op op = last_op(a);
  ASSERT_EQ(op.actions_size(), 1);
  EXPECT_TRUE(op.actions(0).commit().delta());
  EXPECT_EQ(op.actions(0).commit().chunks_size(), 1);
  EXPECT_LT(op.ByteSizeLong(), 4096u) << "whole list: " << whole_bytes;
  b.receive_from(a);
  EXPECT_EQ(chunk_list(b, "big"), chunk_list(a, "big"));
  EXPECT_NE(chunk_list(b, "big").find("100:changed 101:c101"), std::string::npos);
}

// Holes and truncation travel as holes and spans; the result is the writer's list.
TEST(Deltas, HolesAndTruncationResolveToTheWritersList) {
  Replica a(1), b(2);
  a.create("f");
  commit_list(a, "f", 4, {chunk_ref(0, "a"), chunk_ref(1, "b"), chunk_ref(2, "c"), chunk_ref(3, "d")});
  b.receive_from(a);
  commit_list(a, "f", 3, {chunk_ref(0, "a"), chunk_ref(2, "C")});  // punch 1, change 2, cut 3
  const pb::Op op = last_op(a);
  const pb::CommitVersion& c = op.actions(0).commit();
  EXPECT_TRUE(c.delta());
  EXPECT_EQ(c.spans(), 3u);
  ASSERT_EQ(c.holes_size(), 1);
  EXPECT_EQ(c.holes(0), 1u);
  b.receive_from(a);
  EXPECT_EQ(chunk_list(a, "f"), "0:a 2:C ");
  EXPECT_EQ(chunk_list(b, "f"), "0:a 2:C ");
}

// Pieces: the unit of change is the span. A delta lists every piece of a span that changed
// (none of the others), and resolving it replaces all of the base's pieces of that span.
TEST(Deltas, PiecesChangeSpanBySpan) {
  Replica a(1), b(2);
  a.create("f");
  commit_list(a, "f", 4, {piece(0, 0, "a"), piece(1, 0, "b"), piece(2, 0, "c"), piece(2, 100, "d"), piece(3, 5, "e")});
  b.receive_from(a);
  EXPECT_EQ(chunk_list(b, "f"), "0:a 1:b 2:c 2@100:d 3@5:e ");
  // Span 1 split around a small write; span 2 loses a piece; span 3 unchanged.
  commit_list(a, "f", 4, {piece(0, 0, "a"), piece(1, 0, "b"), piece(1, 50, "X"), piece(1, 60, "b2"), piece(2, 100, "d"),
                          piece(3, 5, "e")});
  pb::Op op = last_op(a);
  const pb::CommitVersion& c = op.actions(0).commit();
  EXPECT_TRUE(c.delta());
  EXPECT_EQ(c.holes_size(), 0);
  ASSERT_EQ(c.chunks_size(), 4);  // span 1's three pieces and span 2's one
  EXPECT_EQ(c.chunks(0).index(), 1u);
  EXPECT_EQ(c.chunks(3).index(), 2u);
  b.receive_from(a);
  EXPECT_EQ(chunk_list(a, "f"), "0:a 1:b 1@50:X 1@60:b2 2@100:d 3@5:e ");
  EXPECT_EQ(chunk_list(b, "f"), chunk_list(a, "f"));
  // A span of several pieces becoming a hole is one hole, and the cut drops span 3.
  commit_list(a, "f", 3, {piece(0, 0, "a"), piece(2, 100, "d")});
  op = last_op(a);
  const pb::CommitVersion& h = op.actions(0).commit();
  EXPECT_EQ(h.chunks_size(), 0);
  ASSERT_EQ(h.holes_size(), 1);
  EXPECT_EQ(h.holes(0), 1u);
  b.receive_from(a);
  EXPECT_EQ(chunk_list(a, "f"), "0:a 2@100:d ");
  EXPECT_EQ(chunk_list(b, "f"), chunk_list(a, "f"));
}

// Two pods write over the same base at once: each delta is resolved against that base
// (superseded on the pod that applied the other first), in either order, and both
// contents survive (one as a conflict sibling) with their whole lists.
TEST(Deltas, ConcurrentDeltasOverOneBaseResolveAlikeInEitherOrder) {
  Replica a(1), b(2);
  a.create("f");
  commit_list(a, "f", 2, {chunk_ref(0, "x"), chunk_ref(1, "y")});
  b.receive_from(a);
  commit_list(a, "f", 2, {chunk_ref(0, "A"), chunk_ref(1, "y")});
  commit_list(b, "f", 2, {chunk_ref(0, "x"), chunk_ref(1, "B")});
  a.receive_from(b);
  b.receive_from(a);
  const std::string winner = chunk_list(a, "f");
  EXPECT_EQ(chunk_list(b, "f"), winner);
  EXPECT_TRUE(winner == "0:A 1:y " || winner == "0:x 1:B ") << winner;
  // The loser is kept whole: its content is the base with its own change.
  const std::string loser = winner == "0:A 1:y " ? "0:x 1:B " : "0:A 1:y ";
  bool found = false;
  std::vector<ListItem> items;
  uint64_t parent;
  ASSERT_EQ(a.ns.list(1, &items, &parent), 0);
  for (auto& item : items) {
    if (item.name.rfind("f.conflict", 0) != 0) continue;
    found = true;
    EXPECT_EQ(chunk_list(a, item.name.c_str()), loser);
    EXPECT_EQ(chunk_list(b, item.name.c_str()), loser);
  }
  EXPECT_TRUE(found) << "no conflict sibling";
}

// A superseded version is kept while a delta over it may still come, and dropped by trim
// once the op that superseded it is stable.
TEST(Deltas, SupersededVersionsAreDroppedOnceStable) {
  Replica a(1), b(2);
  a.create("f");
  commit_list(a, "f", 1, {chunk_ref(0, "one")});
  commit_list(a, "f", 1, {chunk_ref(0, "two")});
  auto superseded = [](Replica& r) {
    size_t n = 0;
    (void)r.kv.scan(keys::kSupersededPrefix, "X", false, [&](std::string_view, std::string_view) { return ++n, true; });
    return n;
  };
  EXPECT_EQ(superseded(a), 1u);
  b.receive_from(a);
  EXPECT_EQ(superseded(b), 1u);
  b.ns.set_expected_members(2);
  b.ns.trim();
  EXPECT_EQ(superseded(b), 1u);  // nothing known stable: kept
  b.ns.set_stable({{1, a.ns.applied_stamps()[1]}, {2, b.ns.applied_stamps()[2]}});
  b.ns.trim();
  EXPECT_EQ(superseded(b), 0u);
}

// A delta whose base this pod lacks (never expected; a forged or damaged op) is recorded as
// incomplete: reads fail, nothing is made up.
TEST(Deltas, ADeltaOverAMissingBaseIsIncompleteNeverGarbage) {
  Replica a(1), b(2);
  a.create("f");
  commit_list(a, "f", 1, {chunk_ref(0, "one")});
  b.receive_from(a);
  commit_list(a, "f", 1, {chunk_ref(0, "two")});
  pb::Op op = last_op(a);
  to_pb(Gid{1, 999999}, op.mutable_actions(0)->mutable_commit()->mutable_base_version());
  ASSERT_EQ(b.ns.apply_remote(op), 0);
  EXPECT_EQ(chunk_list(b, "f"), "(incomplete)");
  // Listed for a fetch of its whole chunk list (PeerNode::complete_versions), which a's
  // record provides; a list for another size is not taken.
  const Gid v = from_pb(op.actions(0).commit().version());
  auto incomplete = b.ns.incomplete_versions(16);
  ASSERT_EQ(incomplete.size(), 1u);
  EXPECT_EQ(incomplete[0].first, v);
  pb::VersionRecord whole;
  ASSERT_TRUE(a.ns.get_version(v, &whole));
  Namespace::Changed changed;
  EXPECT_FALSE(b.ns.complete_version(v, whole.size() + 1, whole.chunks(), &changed));
  ASSERT_TRUE(b.ns.complete_version(v, whole.size(), whole.chunks(), &changed));
  EXPECT_EQ(chunk_list(b, "f"), "0:two ");
  EXPECT_EQ(changed.contents.size(), 1u);
  EXPECT_TRUE(b.ns.incomplete_versions(16).empty());
  EXPECT_FALSE(b.ns.complete_version(v, whole.size(), whole.chunks(), &changed));  // whole already
}

// A removed directory is purged once its rmdir is stable and it is empty — but not while a
// delete that emptied it can still be voided. Here f lives on in the removed d (made there
// concurrently with the rmdir); b deletes it while c writes it. Pod a, which has the rmdir
// (stable) and the delete (not stable) but not the write, must not purge d: the write voids
// the delete, f is back in d, and d must still be in the trash (lost+found) on every pod.
// (The simulation found it, seed 3, with a conflict sibling of f made in d as well: a purged
// d, so f vanished there while the others kept d in the trash.)
TEST(ConcurrentDelete, ARemovedDirectoryWaitsForTheDeletesThatEmptiedIt) {
  Replica a(1), b(2), c(3);
  Attr d;
  ASSERT_EQ(a.ns.make(1, "d", pb::DIRECTORY, 0755, 0, 0, "", &d), 0);
  b.receive_from(a);
  c.receive_from(a);
  Attr d_on_b, f;
  ASSERT_EQ(b.ns.lookup(1, "d", &d_on_b), 0);
  ASSERT_EQ(a.ns.rmdir(1, "d"), 0);
  ASSERT_EQ(b.ns.make(d_on_b.ino, "f", pb::REGULAR, 0644, 0, 0, "", &f), 0);
  b.write(f.ino, "one");
  a.receive_from(b);
  b.receive_from(a);
  c.receive_from(a);
  c.receive_from(b);
  // Every pod has applied everything so far, and nothing else: all of it is stable.
  const std::map<uint64_t, Hlc> stable = a.ns.applied_stamps();
  // lost+found/d.<tag>: the removed directory (its FUSE number), or 0.
  auto removed_d = [](Replica& r) -> uint64_t {
    Attr lf, dir;
    std::vector<ListItem> items;
    uint64_t parent;
    if (r.ns.lookup(1, "lost+found", &lf) != 0 || r.ns.list(lf.ino, &items, &parent) != 0 || items.size() != 1 ||
        r.ns.lookup(lf.ino, items[0].name, &dir) != 0)
      return 0;
    return dir.ino;
  };
  // What f in the removed d holds, or "(none)".
  auto read_f = [&](Replica& r) -> std::string {
    Attr file;
    pb::VersionRecord rec;
    const uint64_t dir = removed_d(r);
    if (dir == 0 || r.ns.lookup(dir, "f", &file) != 0) return "(none)";
    if (!r.ns.get_version(file.version, &rec) || rec.chunks_size() == 0) return "";
    return rec.chunks(0).inline_data();
  };
  ASSERT_EQ(read_f(c), "one");
  Attr f_on_c;
  ASSERT_EQ(c.ns.lookup(removed_d(c), "f", &f_on_c), 0);
  // Concurrently: b deletes f (the last entry of d), c writes it.
  ASSERT_EQ(b.ns.unlink(removed_d(b), "f"), 0);
  c.write(f_on_c.ino, "three");
  // a has the delete, not the write: d looks empty and its rmdir is stable, but the delete
  // is not (c has not seen it).
  a.receive_from(b);
  EXPECT_EQ(removed_d(a), 0u);  // empty: not in lost+found
  a.ns.set_stable(stable);
  a.ns.trim();
  // The write arrives: it voids the delete, f is back in d.
  a.receive_from(c);
  b.receive_from(c);
  c.receive_from(b);
  for (Replica* r : {&a, &b, &c}) EXPECT_EQ(read_f(*r), "three") << "pod " << r->ns.pod_id();
  // Once everything is stable, every pod purges the same: d stays (f is in it).
  c.receive_from(a);
  for (Replica* r : {&a, &b, &c}) {
    r->ns.set_stable(c.ns.applied_stamps());
    r->ns.trim();
    r->ns.trim();
  }
  EXPECT_EQ(dump_tree(a.kv), dump_tree(b.kv));
  EXPECT_EQ(dump_tree(a.kv), dump_tree(c.kv));
  for (Replica* r : {&a, &b, &c}) EXPECT_EQ(read_f(*r), "three") << "pod " << r->ns.pod_id();
}
