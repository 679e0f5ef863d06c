// The pure cluster logic of repair: membership states from silence, the repair planner,
// the survey's priorities and bound; and the replicated claims (HoldVersion) it relies on.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "cluster/membership.h"
#include "cluster/repair.h"
#include "common/pb_ids.h"
#include "meta/namespace.h"
#include "meta/op_validation.h"
#include "store/mem_kv.h"

using namespace wormhole;

namespace {
const FailureTimes kTimes{3000, 10000, 60000};
}  // namespace

TEST(Membership, StatesFollowSilence) {
  const int64_t start = 1000;
  // Heard 1 s ago: alive; 5 s: suspect; 20 s: down; 2 min: lost.
  EXPECT_EQ(pod_state(100000, 99000, start, false, kTimes), PodState::kAlive);
  EXPECT_EQ(pod_state(100000, 95000, start, false, kTimes), PodState::kSuspect);
  EXPECT_EQ(pod_state(100000, 80000, start, false, kTimes), PodState::kDown);
  EXPECT_EQ(pod_state(200000, 80000, start, false, kTimes), PodState::kLost);
  EXPECT_EQ(pod_state(200000, 199000, start, true, kTimes), PodState::kForgotten);
  // Never heard from: down, and lost only once the delay has passed since this pod started
  // (it cannot know how long the other was silent before).
  EXPECT_EQ(pod_state(start + 5000, 0, start, false, kTimes), PodState::kDown);
  EXPECT_EQ(pod_state(start + 59000, 0, start, false, kTimes), PodState::kDown);
  EXPECT_EQ(pod_state(start + 60000, 0, start, false, kTimes), PodState::kLost);
  // Heard before this pod restarted: silence counts from the restart.
  EXPECT_EQ(pod_state(start + 30000, start - 100000, start, false, kTimes), PodState::kDown);
  EXPECT_TRUE(counts_as_copy(PodState::kDown));
  EXPECT_FALSE(counts_as_copy(PodState::kLost));
  EXPECT_FALSE(counts_as_copy(PodState::kForgotten));
}

namespace {
std::vector<PodView> pods(std::initializer_list<std::pair<uint64_t, PodState>> states) {
  std::vector<PodView> out;
  for (auto& [id, st] : states) out.push_back(PodView{id, true, st, UINT64_MAX});
  return out;
}
}  // namespace

TEST(RepairPlan, NothingToDoWhileCopiesCount) {
  // A down holder still counts: a restart costs a catch-up, not a repair.
  auto view = pods({{1, PodState::kAlive}, {2, PodState::kDown}, {3, PodState::kAlive}});
  RepairPlan p = plan_repair(Gid{1, 7}, {1, 2}, view, 2, 100);
  EXPECT_EQ(p.copies, 2u);
  EXPECT_EQ(p.live_copies, 1u);
  EXPECT_EQ(p.missing, 0u);
  EXPECT_TRUE(p.new_holders.empty());
}

TEST(RepairPlan, LostHolderIsReplacedByAnAliveStoragePodWithRoom) {
  std::vector<PodView> view = pods({{1, PodState::kAlive}, {2, PodState::kLost}, {3, PodState::kAlive},
                                    {4, PodState::kSuspect}, {5, PodState::kAlive}, {6, PodState::kAlive}});
  view[4].storage = false;   // pod 5: a client never holds copies
  view[5].free_bytes = 50;   // pod 6: no room for 100 bytes
  RepairPlan p = plan_repair(Gid{1, 7}, {1, 2}, view, 2, 100);
  EXPECT_EQ(p.copies, 1u);
  EXPECT_EQ(p.missing, 1u);
  ASSERT_EQ(p.new_holders.size(), 1u);
  EXPECT_EQ(p.new_holders[0], 3u);  // the only eligible one (4 suspect, 5 client, 6 full)
  // A holder named twice is one copy; an unknown holder is none.
  p = plan_repair(Gid{1, 7}, {1, 1, 99}, view, 2, 100);
  EXPECT_EQ(p.copies, 1u);
}

TEST(RepairPlan, EveryPodPicksTheSameNewHoldersWhateverTheOrderOfItsView) {
  std::vector<PodView> view;
  for (uint64_t id = 1; id <= 8; ++id) view.push_back(PodView{id * 0x1234567ULL, true, PodState::kAlive, UINT64_MAX});
  view[0].state = PodState::kLost;
  std::set<uint64_t> chosen;
  for (uint64_t seq = 1; seq <= 200; ++seq) {
    const Gid key{77, seq};
    RepairPlan a = plan_repair(key, {view[0].id}, view, 3, 1);
    std::vector<PodView> shuffled(view.rbegin(), view.rend());
    RepairPlan b = plan_repair(key, {view[0].id}, shuffled, 3, 1);
    ASSERT_EQ(a.new_holders, b.new_holders);
    ASSERT_EQ(a.new_holders.size(), 3u);
    chosen.insert(a.new_holders.begin(), a.new_holders.end());
  }
  EXPECT_EQ(chosen.size(), 7u);  // spread over every eligible pod, not always the same ones
}

TEST(RepairPlan, TooFewPodsLeavesCopiesUnplaced) {
  auto view = pods({{1, PodState::kAlive}, {2, PodState::kLost}, {3, PodState::kLost}});
  RepairPlan p = plan_repair(Gid{1, 1}, {2, 3}, view, 2, 10);
  EXPECT_EQ(p.copies, 0u);
  EXPECT_EQ(p.missing, 2u);
  EXPECT_EQ(p.new_holders, std::vector<uint64_t>{1});
}

TEST(RepairSurvey, CountsAndKeepsThisPodsTasksMostEndangeredFirst) {
  // Pod 1 is this pod; 2 lost, 3 down, 4 alive. Redundancy 3.
  auto view = pods({{1, PodState::kAlive}, {2, PodState::kLost}, {3, PodState::kDown}, {4, PodState::kAlive}});
  RepairSurvey s(1, view, 3, 100);
  s.add(Gid{9, 1}, Gid{9, 1}, {2, 3, 4}, 1000);  // 2 counted copies (1 live): missing 1
  s.add(Gid{9, 2}, Gid{9, 2}, {2, 3}, 500);      // 1 counted copy, 0 live: missing 2 (unavailable)
  s.add(Gid{9, 3}, Gid{9, 3}, {2}, 0);           // inline content: nothing to copy or count
  s.add(Gid{9, 4}, Gid{9, 4}, {1, 3, 4}, 10);    // fine
  EXPECT_EQ(s.versions(), 4u);
  EXPECT_EQ(s.under_replicated(), 3u);  // live copies below 3: versions 1, 2 and 4 (3 is down)
  EXPECT_EQ(s.unavailable(), 1u);
  EXPECT_EQ(s.copies_missing(), 3u);
  EXPECT_EQ(s.bytes_missing(), 1000u + 2 * 500u);
  std::vector<RepairTask> tasks = s.take_tasks();
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].version, (Gid{9, 2}));  // one counted copy left: first
  EXPECT_EQ(tasks[1].version, (Gid{9, 1}));
}

TEST(RepairSurvey, TheBoundKeepsTheMostEndangered) {
  auto view = pods({{1, PodState::kAlive}, {2, PodState::kLost}, {3, PodState::kAlive}, {4, PodState::kLost}});
  RepairSurvey s(1, view, 2, 4);  // 1 and 3 alive: every version missing copies gets pod 1
  for (uint64_t i = 1; i <= 20; ++i) s.add(Gid{5, i}, Gid{5, i}, {3, 2}, 1);   // one copy left
  for (uint64_t i = 21; i <= 24; ++i) s.add(Gid{5, i}, Gid{5, i}, {2, 4}, 1);  // none left
  EXPECT_EQ(s.tasks_dropped(), 20u);
  std::vector<RepairTask> tasks = s.take_tasks();
  ASSERT_EQ(tasks.size(), 4u);
  for (const RepairTask& t : tasks) EXPECT_GE(t.version.seq, 21u) << t.version.str();
}

namespace {
struct Pod {
  MemKv kv;
  int64_t now = 1'700'000'000'000'000'000;
  Namespace ns;
  explicit Pod(uint64_t id) : ns(kv, id, [this] { return now += 1000; }, [](Gid) { return false; }) {
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
  }
  // Sends every op of `origin` this pod has (once per direction in these tests).
  void send_to(Pod& other, uint64_t origin) {
    ASSERT_EQ(ns.make_durable(), 0);
    for (const pb::Op& op : ns.ops_after(origin, 0, 1000))
      ASSERT_EQ(other.ns.apply_remote(op), 0);
  }
};
std::vector<uint64_t> holders_of(Namespace& ns, Gid v) {
  pb::VersionRecord rec;
  EXPECT_TRUE(ns.get_version(v, &rec));
  return {rec.holders().begin(), rec.holders().end()};
}
}  // namespace

TEST(RepairClaims, ClaimsGrowTheHolderSetOnEveryPodAndScanSeesThem) {
  Pod a(1), b(2);
  Attr attr;
  ASSERT_EQ(a.ns.make(1, "f", pb::REGULAR, 0644, 0, 0, "", &attr), 0);
  Gid file;
  ASSERT_TRUE(a.ns.gid_of(attr.ino, &file));
  std::vector<pb::ChunkRef> chunks(1);
  chunks[0].set_sha256(std::string(32, 'x'));
  chunks[0].set_length(10);
  Gid v;
  ASSERT_EQ(a.ns.commit(file, Gid{}, 10, chunks, 5, {1, 3}, false, &v), 0);
  a.send_to(b, 1);
  // Pod 2 made a repair copy and claims it; pod 1 learns it. Claiming twice changes nothing.
  ASSERT_EQ(b.ns.claim_holder({v}), 0);
  ASSERT_EQ(b.ns.claim_holder({v}), 0);
  b.send_to(a, 2);
  EXPECT_EQ(holders_of(a.ns, v), (std::vector<uint64_t>{1, 3, 2}));
  EXPECT_EQ(holders_of(b.ns, v), (std::vector<uint64_t>{1, 3, 2}));
  // The survey's scan sees the current version with its holders, in pages.
  std::vector<Gid> seen;
  Gid after, next;
  do {
    ASSERT_TRUE(a.ns.scan_versions(after, 1, [&](Gid g, const pb::VersionRecord&) { seen.push_back(g); }, &next));
    after = next;
  } while (!next.empty());
  EXPECT_EQ(seen, std::vector<Gid>{v});
}

TEST(RepairClaims, AClaimForAnotherPodIsRejected) {
  pb::Op op;
  op.mutable_hlc()->set_wall_ms(1000);
  op.mutable_hlc()->set_pod(5);
  op.set_origin(5);
  op.set_seq(1);
  pb::HoldVersion* h = op.add_actions()->mutable_hold();
  h->mutable_version()->set_pod(1);
  h->mutable_version()->set_seq(2);
  h->set_pod(6);
  OpLimits limits;
  limits.now_ms = 2000;
  limits.chunk_size_bytes = 4 << 20;
  std::string why;
  EXPECT_FALSE(validate_op(op, limits, &why));
  EXPECT_NE(why.find("another pod"), std::string::npos) << why;
  h->set_pod(5);
  EXPECT_TRUE(validate_op(op, limits, &why)) << why;
}

TEST(RepairPlan, ADrainingHolderIsLiveButDoesNotCountAndTakesNothing) {
  std::vector<PodView> view = pods({{1, PodState::kAlive}, {2, PodState::kAlive}, {3, PodState::kAlive}});
  view[2].draining = true;  // pod 3 drains
  RepairPlan p = plan_repair(Gid{4, 4}, {1, 3}, view, 2, 10);
  EXPECT_EQ(p.copies, 1u);
  EXPECT_EQ(p.live_copies, 2u);  // readers still reach it: nothing is unavailable meanwhile
  EXPECT_EQ(p.new_holders, std::vector<uint64_t>{2});
  // A version held only by pods that stay is not touched; nothing new goes to pod 3.
  p = plan_repair(Gid{4, 5}, {1}, view, 2, 10);
  EXPECT_EQ(p.new_holders, std::vector<uint64_t>{2});
}

TEST(RepairClaims, ClaimsInAnyOrderGiveTheSameHolderList) {
  Pod a(1), b(2), c(3), d(4);
  Attr attr;
  ASSERT_EQ(a.ns.make(1, "f", pb::REGULAR, 0644, 0, 0, "", &attr), 0);
  Gid file;
  ASSERT_TRUE(a.ns.gid_of(attr.ino, &file));
  std::vector<pb::ChunkRef> chunks(1);
  chunks[0].set_sha256(std::string(32, 'y'));
  chunks[0].set_length(10);
  Gid v;
  ASSERT_EQ(a.ns.commit(file, Gid{}, 10, chunks, 5, {1, 9}, false, &v), 0);
  for (Pod* p : {&b, &c, &d}) a.send_to(*p, 1);
  ASSERT_EQ(c.ns.claim_holder({v}), 0);
  ASSERT_EQ(b.ns.claim_holder({v}), 0);
  // a hears b then c; d hears c then b: the placed holders keep their order, claims sorted.
  b.send_to(a, 2);
  c.send_to(a, 3);
  c.send_to(d, 3);
  b.send_to(d, 2);
  EXPECT_EQ(holders_of(a.ns, v), (std::vector<uint64_t>{1, 9, 2, 3}));
  EXPECT_EQ(holders_of(d.ns, v), (std::vector<uint64_t>{1, 9, 2, 3}));
}
