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
  // File "f" with one version of one chunk (named by `fill`), placed on `holders`.
  void write_file(char fill, std::vector<uint64_t> holders, Gid* version) {
    Attr attr;
    ASSERT_EQ(ns.make(1, "f", pb::REGULAR, 0644, 0, 0, "", &attr), 0);
    Gid file;
    ASSERT_TRUE(ns.gid_of(attr.ino, &file));
    std::vector<pb::ChunkRef> chunks(1);
    chunks[0].set_sha256(std::string(32, fill));
    chunks[0].set_length(10);
    ASSERT_EQ(ns.commit(file, Gid{}, 10, chunks, 5, holders, false, version), 0);
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
  Gid v;
  ASSERT_NO_FATAL_FAILURE(a.write_file('x', {1, 3}, &v));
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
  // A release is the pod's own business too.
  h->set_release(true);
  EXPECT_TRUE(validate_op(op, limits, &why)) << why;
  h->set_pod(6);
  EXPECT_FALSE(validate_op(op, limits, &why));
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
  Gid v;
  ASSERT_NO_FATAL_FAILURE(a.write_file('y', {1, 9}, &v));
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

namespace {
// The pods of `view` in the balance order of version `v` of file `key`: the writer, then
// by rendezvous hash, highest first.
std::vector<uint64_t> balance_order(Gid v, Gid key, const std::vector<PodView>& view) {
  std::vector<uint64_t> ids;
  for (const PodView& p : view) ids.push_back(p.id);
  std::sort(ids.begin(), ids.end(), [&](uint64_t a, uint64_t b) {
    if ((a == v.pod) != (b == v.pod)) return a == v.pod;
    return rendezvous_hash(key, a) > rendezvous_hash(key, b);
  });
  return ids;
}
}  // namespace

TEST(BalancePlan, AJoiningPodTakesTheVersionsThatBelongOnItAndTheLowestHolderReleases) {
  // Four storage pods, redundancy 2; the version was written by pod 1 while pod 4 was away.
  const std::vector<PodView> view =
      pods({{1, PodState::kAlive}, {2, PodState::kAlive}, {3, PodState::kAlive}, {4, PodState::kAlive}});
  // Find a version whose second place (after its writer 1) belongs to pod 4, and one
  // where pod 4 ranks last.
  Gid mine, not_mine;
  for (uint64_t seq = 1; seq < 1000 && (mine.empty() || not_mine.empty()); ++seq) {
    const Gid v{1, seq};
    const std::vector<uint64_t> order = balance_order(v, v, view);
    ASSERT_EQ(order[0], 1u);
    if (order[1] == 4 && mine.empty()) mine = v;
    if (order[3] == 4 && not_mine.empty()) not_mine = v;
  }
  ASSERT_FALSE(mine.empty());
  ASSERT_FALSE(not_mine.empty());
  const std::vector<uint64_t> order = balance_order(mine, mine, view);
  const std::vector<uint64_t> held = {1, order[2]};  // placed when pod 4 was away
  // Pod 4 fetches; nobody releases yet (the version has exactly its redundancy).
  EXPECT_TRUE(plan_balance(4, mine, mine, held, view, 2, 100).fetch);
  for (uint64_t p : held) EXPECT_FALSE(plan_balance(p, mine, mine, held, view, 2, 100).release) << p;
  EXPECT_FALSE(plan_balance(order[3], mine, mine, held, view, 2, 100).fetch);
  // Once pod 4 claimed its copy, the lowest-ranked holder releases, keeping the writer and pod 4.
  const std::vector<uint64_t> after = {1, order[2], 4};
  const BalancePlan lowest = plan_balance(order[2], mine, mine, after, view, 2, 100);
  EXPECT_TRUE(lowest.release);
  EXPECT_EQ(lowest.copies, 3u);
  EXPECT_EQ(lowest.keepers, (std::vector<uint64_t>{1, 4}));
  EXPECT_FALSE(plan_balance(1, mine, mine, after, view, 2, 100).release);  // the writer keeps its own
  EXPECT_FALSE(plan_balance(4, mine, mine, after, view, 2, 100).release);
  // Nothing moves for a version that does not belong on pod 4.
  const std::vector<uint64_t> order2 = balance_order(not_mine, not_mine, view);
  EXPECT_FALSE(plan_balance(4, not_mine, not_mine, {order2[0], order2[1]}, view, 2, 100).fetch);
  // A pod without room, a draining pod or a client pod takes nothing.
  std::vector<PodView> full = view;
  full[3].free_bytes = 50;
  EXPECT_FALSE(plan_balance(4, mine, mine, held, full, 2, 100).fetch);
  std::vector<PodView> draining = view;
  draining[3].draining = true;
  EXPECT_FALSE(plan_balance(4, mine, mine, held, draining, 2, 100).fetch);
  std::vector<PodView> client = view;
  client[3].storage = false;
  EXPECT_FALSE(plan_balance(4, mine, mine, held, client, 2, 100).fetch);
}

TEST(BalancePlan, ASurplusIsReleasedOnlyWhileEveryKeeperIsAlive) {
  // A pod back after its repair: three copies, redundancy 2.
  std::vector<PodView> view = pods({{1, PodState::kAlive}, {2, PodState::kAlive}, {3, PodState::kAlive}});
  const Gid v{1, 42};
  const std::vector<uint64_t> order = balance_order(v, v, view);
  const std::vector<uint64_t> held = {1, 2, 3};
  BalancePlan p = plan_balance(order[2], v, v, held, view, 2, 10);
  EXPECT_TRUE(p.release);
  EXPECT_EQ(p.keepers, (std::vector<uint64_t>{order[0], order[1]}));
  for (PodState st : {PodState::kSuspect, PodState::kDown}) {
    std::vector<PodView> shaky = view;
    for (PodView& pv : shaky)
      if (pv.id == order[1]) pv.state = st;
    EXPECT_FALSE(plan_balance(order[2], v, v, held, shaky, 2, 10).release) << static_cast<int>(st);
  }
  // A lost or draining keeper does not count: the third copy is needed, nothing is released.
  for (int variant = 0; variant < 2; ++variant) {
    std::vector<PodView> gone = view;
    for (PodView& pv : gone)
      if (pv.id == order[1]) {
        if (variant == 0) pv.state = PodState::kLost;
        else pv.draining = true;
      }
    const BalancePlan q = plan_balance(order[2], v, v, held, gone, 2, 10);
    EXPECT_FALSE(q.release);
    EXPECT_EQ(q.copies, 2u);
  }
  // Below the redundancy, balance does nothing at all (repair's business).
  p = plan_balance(order[2], v, v, {1, order[2]}, pods({{1, PodState::kAlive}, {order[2], PodState::kAlive}}), 3, 10);
  EXPECT_FALSE(p.release);
  EXPECT_FALSE(p.fetch);
}

TEST(BalancePlan, WhateverEachPodSeesTheTopRankedHoldersNeverRelease) {
  // Every subset of views: the first `wanted` holders in the global order never release,
  // so releases never take a version below its redundancy.
  const Gid v{3, 9};
  const std::vector<PodView> all = pods(
      {{1, PodState::kAlive}, {2, PodState::kAlive}, {3, PodState::kAlive}, {4, PodState::kAlive}, {5, PodState::kAlive}});
  const std::vector<uint64_t> order = balance_order(v, v, all);
  const std::vector<uint64_t> held = {1, 2, 3, 4, 5};
  for (uint32_t mask = 0; mask < 32; ++mask) {  // which pods this pod sees lost
    std::vector<PodView> view = all;
    for (size_t i = 0; i < view.size(); ++i)
      if (mask & (1u << i)) view[i].state = PodState::kLost;
    for (size_t top = 0; top < 2; ++top)
      EXPECT_FALSE(plan_balance(order[top], v, v, held, view, 2, 10).release) << mask << " " << top;
  }
}

TEST(RepairClaims, ReleasesInAnyOrderGiveTheSameHolderListAndNeverTheWholeList) {
  Pod a(1), b(2), c(3);
  Gid v;
  ASSERT_NO_FATAL_FAILURE(a.write_file('z', {1, 2}, &v));
  for (Pod* p : {&b, &c}) a.send_to(*p, 1);
  // Pod 3 claims a copy (a rebalance), then pod 2 releases its placed copy; releasing
  // twice, or releasing what it does not hold, changes nothing.
  ASSERT_EQ(c.ns.claim_holder({v}), 0);
  c.send_to(b, 3);
  ASSERT_EQ(b.ns.claim_holder({v}, true), 0);
  ASSERT_EQ(b.ns.claim_holder({v}, true), 0);
  // a hears the release before the claim; c hears it after its own claim.
  b.send_to(a, 2);
  c.send_to(a, 3);
  b.send_to(c, 2);
  EXPECT_EQ(holders_of(a.ns, v), (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(holders_of(b.ns, v), (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(holders_of(c.ns, v), (std::vector<uint64_t>{1, 3}));
  // The writer releases too (placed part empties): a new claim still lands in one order.
  ASSERT_EQ(a.ns.claim_holder({v}, true), 0);
  ASSERT_EQ(b.ns.claim_holder({v}), 0);
  a.send_to(b, 1);
  a.send_to(c, 1);
  b.send_to(c, 2);
  b.send_to(a, 2);
  EXPECT_EQ(holders_of(a.ns, v), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(holders_of(c.ns, v), (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(holders_of(b.ns, v), (std::vector<uint64_t>{2, 3}));
}
