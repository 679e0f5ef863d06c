#include <gtest/gtest.h>

#include <linux/fs.h>
#include <random>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "chunks/chunk_store.h"
#include "common/pb_ids.h"
#include "meta/keys.h"
#include "meta/namespace.h"
#include "store/mem_kv.h"

using namespace wormhole;

namespace {

// A store whose writes can be made to fail, as a full disk would.
class FlakyKv : public MemKv {
 public:
  bool fail = false;
  KvStatus write(const KvBatch& b, bool sync) override {
    if (fail) return KvStatus{false, true, "No space left on device"};
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
  f.ns.for_each_chunk([&](const std::string&) { n++; });
  EXPECT_EQ(n, 1);
  ASSERT_EQ(f.ns.unlink(1, "f"), 0);
  f.ns.trim();
  Attr a;
  EXPECT_EQ(f.ns.getattr(file, &a), ENOENT);
  n = 0;
  f.ns.for_each_chunk([&](const std::string&) { n++; });
  EXPECT_EQ(n, 0);
  EXPECT_EQ(f.ns.stats().move_log_entries, 0u);
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
  kv.scan("E", prefix_end("E"), false, [&](std::string_view k, std::string_view v) {
    pb::EntryRecord e;
    e.ParseFromArray(v.data(), static_cast<int>(v.size()));
    Gid g = keys::get_gid(k, 1);
    out += g.str() + " -> " + std::to_string(e.parent().pod()) + ":" + std::to_string(e.parent().seq()) + "/" +
           e.name() + "\n";
    return true;
  });
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
    for (auto& item : meta.list(dir)) out.push_back(item.name);
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
