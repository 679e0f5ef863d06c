// Op streaming between pods (Replicator with Namespaces on in-memory stores), driven round by
// round as PeerNode's loop drives it: a group commit, a push to every reachable peer whose
// answer settles the push cursor, sync requests again at once to peers whose last batch was
// full, and a sync round (anti-entropy, trimming) only every kSyncEveryRounds rounds. The
// assertions are about results and about how many rounds the logic needs (which tells
// whether batches go back-to-back or wait for the periodic sync), never about time.
#include <gtest/gtest.h>

#include <memory>

#include "replication/replicator.h"
#include "snapshot_records.h"
#include "store/mem_kv.h"

using namespace wormhole;

namespace {

constexpr int64_t kStartNs = 1'700'000'000'000'000'000;
// The daemon pushes every 50 ms and syncs every second: a sync round every 20 rounds.
constexpr int kSyncEveryRounds = 20;

struct TestPod {
  uint64_t id;
  std::vector<uint64_t> members;
  MemKv kv;  // survives restarts
  int64_t now_ns = kStartNs;
  std::unique_ptr<Namespace> ns;
  std::unique_ptr<Replicator> rep;
  bool up = false;
  bool just_started = false;  // its loop's first round syncs, as the daemon's does

  TestPod(uint64_t pod_id, std::vector<uint64_t> all) : id(pod_id), members(std::move(all)) { start(); }
  void start() {
    ns = std::make_unique<Namespace>(kv, id, [this] { return now_ns += 100000; }, [](Gid) { return false; });
    std::string err;
    ASSERT_TRUE(ns->init(&err)) << err;
    rep = std::make_unique<Replicator>(*ns, members);
    up = true;
    just_started = true;
  }
  void stop() {
    rep.reset();
    ns.reset();
    up = false;
  }
  uint64_t now_ms() const { return static_cast<uint64_t>(now_ns / 1000000); }
};

class Network {
 public:
  explicit Network(int pods) {
    std::vector<uint64_t> ids;
    for (int i = 0; i < pods; ++i) ids.push_back(0xa0 + static_cast<uint64_t>(i));
    for (uint64_t id : ids) pods_.push_back(std::make_unique<TestPod>(id, ids));
  }
  TestPod& pod(size_t i) { return *pods_[i]; }
  TestPod* by_id(uint64_t id) {
    for (auto& p : pods_)
      if (p->id == id) return p.get();
    return nullptr;
  }
  // `from` sends `message` to `to` and handles the answers, as PeerNode::exchange_all does.
  // False when `to` is down (the call fails).
  bool exchange(TestPod& from, uint64_t to, const pb::PeerMessage& message) {
    TestPod* peer = by_id(to);
    if (!peer || !peer->up || !from.up || drop_next_to_ == to) {
      if (drop_next_to_ == to) drop_next_to_ = 0;
      return false;
    }
    std::string rejected;
    auto answers = peer->rep->receive(from.id, message, peer->now_ms(), &rejected);
    EXPECT_EQ(rejected, "");
    for (auto& a : answers) {
      from.rep->receive(to, a.message, from.now_ms(), &rejected);
      EXPECT_EQ(rejected, "");
    }
    return true;
  }
  // The next message to `peer` is lost (a failed call).
  void drop_next_to(uint64_t peer) { drop_next_to_ = peer; }
  // One round of every pod's loop; `sync`: with the periodic sync round, and then with
  // trimming unless not `trim`.
  void round(bool sync, bool trim = true) {
    for (auto& p : pods_) {
      if (!p->up) continue;
      ASSERT_EQ(p->ns->make_durable(), 0);
      std::vector<uint64_t> unreachable;
      for (auto& q : pods_)
        if (!q->up) unreachable.push_back(q->id);
      for (auto& o : p->rep->publish_local(unreachable)) {
        exchange(*p, o.to, o.message);
        p->rep->push_settled(o.to);
      }
      for (uint64_t peer : p->rep->take_pull_again()) exchange(*p, peer, p->rep->sync_request(peer).message);
      const bool first_round = std::exchange(p->just_started, false);
      if (!sync && !first_round) continue;
      for (uint64_t peer : p->rep->peers()) exchange(*p, peer, p->rep->sync_request(peer).message);
      if (!trim) continue;
      p->ns->set_stable(p->rep->stable_stamps());
      p->ns->trim();
      p->ns->trim_op_log(p->rep->everyone_has());
    }
    ++rounds_;
  }
  void run_round() { round(rounds_ % kSyncEveryRounds == 0); }
  bool all_have_everything() {
    auto want = pods_[0]->ns->applied();
    for (auto& p : pods_)
      if (!p->up || p->ns->applied() != want) return false;
    return true;
  }

 private:
  std::vector<std::unique_ptr<TestPod>> pods_;
  uint64_t drop_next_to_ = 0;
  int rounds_ = 0;
};

// `count` files in directories of 500 on `p`: one op each, and one per directory.
void create_files(TestPod& p, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    const std::string dir = "d" + std::to_string(i / 500);
    Attr d;
    if (p.ns->lookup(1, dir, &d) != 0) {
      ASSERT_EQ(p.ns->make(1, dir, pb::DIRECTORY, 0755, 0, 0, "", &d), 0);
    }
    Attr f;
    ASSERT_EQ(p.ns->make(d.ino, "f" + std::to_string(i), pb::REGULAR, 0644, 0, 0, "", &f), 0);
  }
}

std::vector<std::string> listing(TestPod& p) {
  std::vector<std::string> out;
  std::vector<ListItem> dirs;
  uint64_t parent;
  EXPECT_EQ(p.ns->list(1, &dirs, &parent), 0);
  for (auto& d : dirs) {
    std::vector<ListItem> files;
    EXPECT_EQ(p.ns->list(d.ino, &files, &parent), 0);
    for (auto& f : files) out.push_back(d.name + "/" + f.name);
  }
  return out;
}

}  // namespace

TEST(ReplicationStream, APodRestartedAfterMissingThousandsOfOpsConvergesBackToBack) {
  Network net(3);
  TestPod &a = net.pod(0), &c = net.pod(2);
  create_files(a, 0, 100);
  for (int i = 0; i < 3; ++i) net.round(true);
  ASSERT_TRUE(net.all_have_everything());

  c.stop();
  // A storm while c is down: b keeps up, c misses it all.
  constexpr int kMissed = 12000;
  for (int i = 100; i < 100 + kMissed; i += 400) {
    create_files(a, i, 400);
    net.run_round();
  }
  c.start();
  const uint64_t missing = a.ns->applied()[a.id] - c.ns->applied()[a.id];
  ASSERT_GT(missing, static_cast<uint64_t>(kMissed));
  int rounds = 0;
  while (!net.all_have_everything() && rounds < 10000) {
    net.run_round();
    ++rounds;
  }
  ASSERT_TRUE(net.all_have_everything());
  EXPECT_EQ(listing(c), listing(a));
  EXPECT_EQ(listing(c).size(), static_cast<size_t>(100 + kMissed));
  // Back-to-back: about one round per batch (pushed and pulled), not one batch per sync
  // round (which would take kSyncEveryRounds times as many).
  const uint64_t batches = (missing + Replicator::kMaxBatchOps - 1) / Replicator::kMaxBatchOps;
  EXPECT_LE(static_cast<uint64_t>(rounds), batches + 2) << "rounds for " << missing << " ops";
}

TEST(ReplicationStream, ALostPushIsSentAgainByTheNextOne) {
  Network net(2);
  TestPod &a = net.pod(0), &b = net.pod(1);
  net.round(true);  // each learns the other's progress
  create_files(a, 0, 10);
  net.drop_next_to(b.id);
  net.round(false);  // the push is lost
  EXPECT_LT(b.ns->applied()[a.id], a.ns->applied()[a.id]);
  create_files(a, 10, 10);
  net.round(false);  // no sync round: the push itself starts where b left off
  EXPECT_TRUE(net.all_have_everything());
  EXPECT_EQ(listing(b), listing(a));
}

TEST(ReplicationStream, LogsStayBoundedDuringALongCreateStormWithIdlePeers) {
  Network net(3);
  TestPod& a = net.pod(0);
  net.round(true);
  // 30,000 creates, 150 per round: b and c make no op of their own.
  constexpr int kFiles = 30000, kPerRound = 150;
  size_t most_move_log = 0, most_op_log = 0;
  for (int i = 0, round = 1; i < kFiles; i += kPerRound, ++round) {
    create_files(a, i, kPerRound);
    net.run_round();
    if (i >= kFiles / 4 && round % 10 == 0) {  // past the warm-up: what a few sync rounds let through
      for (size_t p = 0; p < 3; ++p) {
        const NamespaceStats s = net.pod(p).ns->stats();
        most_move_log = std::max<size_t>(most_move_log, s.move_log_entries);
        most_op_log = std::max<size_t>(most_op_log, s.op_log_entries);
      }
    }
  }
  ASSERT_TRUE(net.all_have_everything());
  // Bounded by what a few sync rounds bring (20 rounds × 150 files: 3,000 ops each), far
  // below the storm's 30,000-odd ops.
  EXPECT_LT(most_move_log, 10000u);
  EXPECT_LT(most_op_log, 10000u);
}

// The ops of a pod that is down come from the others: asked again at once while an answer is
// a full batch, not one batch per sync round.
TEST(ReplicationStream, OpsRelayedForAPodThatIsDownComeBackToBack) {
  Network net(3);
  TestPod &a = net.pod(0), &b = net.pod(1), &c = net.pod(2);
  net.round(true);
  c.stop();
  constexpr int kMissed = 8000;
  for (int i = 0; i < kMissed; i += 400) {
    create_files(a, i, 400);
    net.run_round();
  }
  ASSERT_EQ(b.ns->applied()[a.id], a.ns->applied()[a.id]);
  a.stop();
  c.start();
  const uint64_t missing = b.ns->applied()[a.id] - c.ns->applied()[a.id];
  int rounds = 0;
  while (c.ns->applied() != b.ns->applied() && rounds < 10000) {
    net.run_round();
    ++rounds;
  }
  ASSERT_EQ(c.ns->applied(), b.ns->applied());
  EXPECT_EQ(listing(c), listing(b));
  const uint64_t batches = (missing + Replicator::kMaxBatchOps - 1) / Replicator::kMaxBatchOps;
  // The first batch comes with c's first sync round (its first round); then one per round.
  EXPECT_LE(static_cast<uint64_t>(rounds), batches + 2) << "rounds for " << missing << " ops";
}

// Snapshot when faster: a newcomer that has applied nothing and lacks more ops than the
// bound is told to install a snapshot rather than replay them, and no member pushes to it
// meanwhile — not even one with few ops of its own (pushed ops would give it a history, and
// then it could not install). Once it has installed, it is sent what came since. A
// newcomer whose install failed says so (it no longer accepts a snapshot) and is sent the
// ops.
TEST(ReplicationStream, ANewcomerFarBehindIsToldToInstallASnapshot) {
  constexpr uint64_t kFasterAbove = 500;
  for (const bool install_fails : {false, true}) {
    SCOPED_TRACE(install_fails ? "the install fails" : "the install works");
    Network net(3);
    TestPod &a = net.pod(0), &b = net.pod(1), &c = net.pod(2);
    b.stop();  // b has never run while a and c make their history
    for (TestPod* p : {&a, &c}) p->rep->set_snapshot_faster_ops(kFasterAbove);
    create_files(a, 0, 1000);  // about 1,000 ops: more than the bound
    create_files(c, 5000, 2);  // c: a few ops of its own
    for (int i = 0; i < 3; ++i) net.round(true);
    b.start();
    b.rep->set_snapshot_faster_ops(kFasterAbove);
    auto pushes_to_b = [&](TestPod& p) {
      EXPECT_EQ(p.ns->make_durable(), 0);
      size_t n = 0;
      for (auto& o : p.rep->publish_local()) n += o.to == b.id;
      return n;
    };
    EXPECT_EQ(pushes_to_b(a), 0u) << "a pushed to a pod not heard from that may lack more than the bound";
    EXPECT_EQ(pushes_to_b(c), 0u) << "c pushed its few ops to a pod not heard from that may lack many";
    for (TestPod* p : {&a, &c}) {
      net.exchange(b, p->id, b.rep->sync_request(p->id).message);
      EXPECT_EQ(b.rep->take_snapshot_source(), p->id) << "no snapshot advice to a fresh pod far behind";
    }
    EXPECT_TRUE(b.ns->empty_history()) << "ops given with the advice";
    EXPECT_EQ(pushes_to_b(a), 0u) << "pushed to a newcomer that will install a snapshot";
    EXPECT_EQ(pushes_to_b(c), 0u) << "pushed to a newcomer that will install a snapshot";
    if (install_fails) {
      b.rep->set_accepts_snapshot(false);
    } else {
      const Meta::SnapshotBatch records = wormhole::testing::snapshot_records(*a.ns);
      ASSERT_FALSE(records.empty());
      std::string err;
      ASSERT_TRUE(wormhole::testing::install_records(*b.ns, records, 100, &err)) << err;
      b.rep->reset();
      EXPECT_FALSE(b.ns->empty_history());
    }
    create_files(a, 1000, 10);  // and more after
    for (int rounds = 0; !net.all_have_everything() && rounds < 1000; ++rounds) net.run_round();
    ASSERT_TRUE(net.all_have_everything());
    EXPECT_EQ(listing(b), listing(a));
    EXPECT_EQ(b.rep->take_snapshot_source(), 0u) << "advised again";
  }
}
