// The replication boundary: what a peer sends is validated before anything of it is used,
// and what it claims to have applied cannot make this pod forget ops.
#include <gtest/gtest.h>

#include "common/pb_ids.h"
#include "replication/replicator.h"
#include "store/mem_kv.h"

using namespace wormhole;

namespace {

constexpr uint64_t kA = 0xa, kB = 0xb;
constexpr int64_t kStartNs = 1'700'000'000'000'000'000;

struct PodUnderTest {
  MemKv kv;
  int64_t now_ns = kStartNs;
  Namespace ns;
  Replicator rep;
  PodUnderTest(uint64_t id, std::vector<uint64_t> members)
      : ns(kv, id, [this] { return now_ns += 1000000; }, [](Gid) { return false; }), rep((init(), ns), members) {}
  void init() {
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
  }
  uint64_t now_ms() const { return static_cast<uint64_t>(now_ns / 1000000); }
  void mkdir(const std::string& name) {
    Attr a;
    ASSERT_EQ(ns.make(1, name, pb::DIRECTORY, 0755, 0, 0, "", &a), 0);
  }
  // The message that pushes this pod's new ops.
  pb::PeerMessage push() {
    EXPECT_EQ(ns.make_durable(), 0);  // the group commit the push loop makes first
    auto out = rep.publish_local();
    EXPECT_FALSE(out.empty());
    return out.empty() ? pb::PeerMessage() : out[0].message;
  }
};

}  // namespace

TEST(ReplicatorBoundary, ABatchWithOneInvalidOpIsRejectedWhole) {
  PodUnderTest a(kA, {kA, kB}), b(kB, {kA, kB});
  a.mkdir("one");
  a.mkdir("two");
  const pb::PeerMessage intact = a.push();
  ASSERT_EQ(intact.ops().ops_size(), 2);
  pb::PeerMessage msg = intact;
  msg.mutable_ops()->mutable_ops(1)->mutable_actions(0)->mutable_move()->set_name("x/y");
  std::string rejected;
  EXPECT_TRUE(b.rep.receive(kA, msg, b.now_ms(), &rejected).empty());  // not even acknowledged
  EXPECT_NE(rejected.find("name with '/'"), std::string::npos) << rejected;
  EXPECT_EQ(b.ns.applied()[kA], 0u);  // the valid first op was not applied either
  EXPECT_EQ(b.rep.waiting(), 0u);
  // The same batch, intact, is applied.
  rejected.clear();
  EXPECT_EQ(b.rep.receive(kA, intact, b.now_ms(), &rejected).size(), 1u);  // the acknowledgement
  EXPECT_EQ(rejected, "");
  EXPECT_EQ(b.ns.applied()[kA], 2u);
}

TEST(ReplicatorBoundary, AClockTooFarAheadIsRejectedUntilThisClockCatchesUp) {
  PodUnderTest a(kA, {kA, kB}), b(kB, {kA, kB});
  b.rep.set_limits(60000, 4 << 20);  // one minute
  a.now_ns += 120 * 1000000000ll;     // a's clock is two minutes ahead
  a.mkdir("future");
  const pb::PeerMessage msg = a.push();
  std::string rejected;
  b.rep.receive(kA, msg, b.now_ms(), &rejected);
  EXPECT_NE(rejected.find("ahead of this pod's"), std::string::npos) << rejected;
  EXPECT_EQ(b.ns.applied()[kA], 0u);
  rejected.clear();
  b.rep.receive(kA, msg, b.now_ms() + 61000, &rejected);  // a minute later
  EXPECT_EQ(rejected, "");
  EXPECT_EQ(b.ns.applied()[kA], 1u);
}

TEST(ReplicatorBoundary, AProgressClaimCoversOnlyOpsThisPodAlreadyHas) {
  PodUnderTest a(kA, {kA, kB});
  a.mkdir("one");
  a.rep.publish_local();
  // b claims far more of a's ops than exist, and ops of a pod nobody knows.
  pb::PeerMessage claim;
  (*claim.mutable_sync_request()->mutable_applied())[kA] = 1000;
  (*claim.mutable_sync_request()->mutable_applied())[0x99] = 5;
  std::string rejected;
  a.rep.receive(kB, claim, a.now_ms(), &rejected);
  EXPECT_EQ(rejected, "");
  EXPECT_EQ(a.rep.peer_has(kB, kA), 1u);
  EXPECT_EQ(a.rep.peer_has(kB, 0x99), 0u);
  // Ops a makes later are not covered by the old claim: they stay in the op log for b.
  a.mkdir("two");
  a.mkdir("three");
  EXPECT_EQ(a.rep.everyone_has()[kA], 1u);
  a.ns.trim_op_log(a.rep.everyone_has());
  ASSERT_EQ(a.ns.make_durable(), 0);  // only durable ops leave a pod
  EXPECT_EQ(a.ns.ops_after(kA, 1, 10).size(), 2u);
}

TEST(ReplicatorBoundary, OpsOfTooManyOriginsAreNotKept) {
  PodUnderTest b(kB, {kA, kB});
  // Valid-looking first ops of many pods b never heard of, each waiting for a dependency
  // that never comes: without a bound on origins they would pile up.
  for (uint64_t batch = 0; batch < 3; ++batch) {
    pb::PeerMessage msg;
    for (uint64_t i = 0; i < kMaxOpsPerBatch; ++i) {
      pb::Op* op = msg.mutable_ops()->add_ops();
      const uint64_t origin = 0x1000 + batch * kMaxOpsPerBatch + i;
      op->set_origin(origin);
      op->set_seq(1);
      to_pb(Hlc{b.now_ms(), 0, origin}, op->mutable_hlc());
      (*op->mutable_deps())[0x77] = 1;
    }
    std::string rejected;
    b.rep.receive(kA, msg, b.now_ms(), &rejected);
    EXPECT_EQ(rejected, "");
  }
  EXPECT_LE(b.rep.waiting() + b.ns.applied().size(), Replicator::kMaxOrigins);
  EXPECT_GT(b.rep.waiting(), 0u);
}

TEST(ReplicatorBoundary, AnOpStampedBeforeItsOriginsPreviousOpIsDropped) {
  PodUnderTest a(kA, {kA, kB}), b(kB, {kA, kB});
  a.mkdir("one");
  a.mkdir("two");
  pb::PeerMessage msg = a.push();
  ASSERT_EQ(msg.ops().ops_size(), 2);
  // Op 2 claims a stamp before op 1: the move log's order (and trimming) would break.
  *msg.mutable_ops()->mutable_ops(1)->mutable_hlc() = msg.ops().ops(0).hlc();
  msg.mutable_ops()->mutable_ops(1)->mutable_hlc()->set_wall_ms(msg.ops().ops(0).hlc().wall_ms() - 1);
  std::string rejected;
  b.rep.receive(kA, msg, b.now_ms(), &rejected);
  EXPECT_EQ(rejected, "");  // valid taken alone: refused at delivery, in order
  EXPECT_EQ(b.ns.applied()[kA], 1u);
  EXPECT_EQ(b.rep.waiting(), 0u);
}

TEST(ReplicatorBoundary, ABadCopyOfAnOpHoldsItsOriginBackOnlyUntilAGoodCopyComes) {
  PodUnderTest a(kA, {kA, kB}), b(kB, {kA, kB});
  a.mkdir("one");
  const pb::PeerMessage good = a.push();
  pb::PeerMessage forged = good;
  (*forged.mutable_ops()->mutable_ops(0)->mutable_deps())[0x77] = 1000;  // never satisfied
  std::string rejected;
  b.rep.receive(kA, forged, b.now_ms(), &rejected);
  EXPECT_EQ(rejected, "");
  EXPECT_EQ(b.rep.waiting(), 1u);
  b.rep.receive(kA, good, b.now_ms(), &rejected);
  EXPECT_EQ(b.ns.applied()[kA], 1u);
  EXPECT_EQ(b.rep.waiting(), 0u);
}

// A pod's ops that are not durable yet are not given out — and not mistaken for trimmed
// ones: a sync request is answered with what is durable, never with "snapshot needed"
// (which told pods with state of their own that they could never catch up).
TEST(ReplicatorBoundary, OpsNotYetDurableAreWithheldNotReportedTrimmed) {
  PodUnderTest a(kA, {kA, kB}), b(kB, {kA, kB});
  a.mkdir("one");  // applied, not yet synced
  std::string rejected;
  auto answer = a.rep.receive(kB, b.rep.sync_request(kA).message, a.now_ms(), &rejected);
  ASSERT_EQ(answer.size(), 1u);
  EXPECT_FALSE(answer[0].message.ops().snapshot_needed());
  EXPECT_EQ(answer[0].message.ops().ops_size(), 0);
  ASSERT_EQ(a.ns.make_durable(), 0);
  answer = a.rep.receive(kB, b.rep.sync_request(kA).message, a.now_ms(), &rejected);
  ASSERT_EQ(answer.size(), 1u);
  EXPECT_FALSE(answer[0].message.ops().snapshot_needed());
  EXPECT_EQ(answer[0].message.ops().ops_size(), 1);
}

// An op a pod made before it applied another (a delta over the version that other op
// supersedes) may still wait for its group commit when the pod reports the other op
// applied: that op is not stable until the delta is here, or the base it names is trimmed
// before it arrives (the multi-mount test saw such a delta find no base: EIO).
TEST(ReplicatorBoundary, AnOpIsNotStableWhileAnOpMadeBeforeItsApplyIsOnItsWay) {
  PodUnderTest a(kA, {kA, kB}), b(kB, {kA, kB});
  std::string rejected;
  b.mkdir("x");
  a.rep.receive(kB, b.push(), a.now_ms(), &rejected);
  ASSERT_EQ(rejected, "");
  a.mkdir("a-durable");
  b.rep.receive(kA, a.push(), b.now_ms(), &rejected);
  a.mkdir("made-before");  // a's op, waiting for a's group commit
  b.mkdir("y");            // b's op that a applies after making its own
  const Hlc y = b.ns.applied_stamps()[kB];
  a.rep.receive(kB, b.push(), a.now_ms(), &rejected);
  ASSERT_EQ(a.ns.make_received_durable(), 0);  // a acknowledges y durably; its own op waits
  b.rep.receive(kA, a.rep.sync_request(kB).message, b.now_ms(), &rejected);
  auto stable = b.rep.stable_stamps();
  EXPECT_TRUE(stable[kB] < y) << "y counted stable while a's earlier op is not here";
  // a's op arrives: now y is stable.
  b.rep.receive(kA, a.push(), b.now_ms(), &rejected);
  b.rep.receive(kA, a.rep.sync_request(kB).message, b.now_ms(), &rejected);
  stable = b.rep.stable_stamps();
  EXPECT_FALSE(stable[kB] < y);
}

// A pod catching up through a relay: the relay's own backlog (more than one batch) depends
// on an op of a third pod the asker lacks. Answers go in stamp order across origins, so the
// third pod's op comes first and the asker progresses; origin by origin, every answer was
// the relay's first batch, none of it deliverable: the asker stalled for good (found by the
// repair simulation, behind a lost pod whose ops only relays had).
TEST(ReplicatorBoundary, CatchingUpThroughARelayNeverStallsOnAnotherOriginsOp) {
  constexpr uint64_t kC = 0xc, kD = 0xd;
  const std::vector<uint64_t> members{kA, kC, kD};
  PodUnderTest a(kA, members), c(kC, members), d(kD, members);
  c.mkdir("from-c");
  std::string rejected;
  a.rep.receive(kC, c.push(), a.now_ms(), &rejected);
  ASSERT_EQ(rejected, "");
  ASSERT_EQ(a.ns.applied()[kC], 1u);
  const uint64_t backlog = Replicator::kMaxBatchOps + 100;
  for (uint64_t i = 0; i < backlog; ++i) a.mkdir("a" + std::to_string(i));
  ASSERT_EQ(a.ns.make_durable(), 0);
  for (int round = 0; round < 10 && d.ns.applied()[kA] < backlog; ++round) {
    auto answers = a.rep.receive(kD, d.rep.sync_request(kA).message, a.now_ms(), &rejected);
    ASSERT_EQ(answers.size(), 1u);
    d.rep.receive(kA, answers[0].message, d.now_ms(), &rejected);
    ASSERT_EQ(rejected, "");
  }
  EXPECT_EQ(d.ns.applied()[kC], 1u);
  EXPECT_EQ(d.ns.applied()[kA], backlog);
  EXPECT_EQ(d.rep.waiting(), 0u);
}
