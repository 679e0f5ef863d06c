#include <gtest/gtest.h>

#include "common/ids.h"

using namespace wormhole;

TEST(Hlc, TicksAreStrictlyIncreasingEvenWhenTheWallClockStalls) {
  HlcClock c(7);
  Hlc a = c.tick(1000), b = c.tick(1000), d = c.tick(999);
  EXPECT_LT(a, b);
  EXPECT_LT(b, d);
  EXPECT_EQ(d.wall_ms, 1000u);
  EXPECT_EQ(d.pod, 7u);
  Hlc e = c.tick(2000);
  EXPECT_EQ(e.wall_ms, 2000u);
  EXPECT_EQ(e.counter, 0u);
}

TEST(Hlc, ObservingARemoteStampMovesTheClockPastIt) {
  HlcClock c(1);
  c.tick(100);
  Hlc remote{5000, 3, 2};
  c.observe(remote);
  Hlc next = c.tick(200);
  EXPECT_GT(next, remote);
  EXPECT_EQ(next.wall_ms, 5000u);
  EXPECT_EQ(next.counter, 4u);
}

TEST(Hlc, OrderIsWallThenCounterThenPod) {
  EXPECT_LT((Hlc{1, 9, 9}), (Hlc{2, 0, 0}));
  EXPECT_LT((Hlc{1, 1, 9}), (Hlc{1, 2, 0}));
  EXPECT_LT((Hlc{1, 1, 1}), (Hlc{1, 1, 2}));
}

TEST(Gid, IdsOfDifferentPodsNeverCollide) {
  Gid a{1, 5}, b{2, 5};
  EXPECT_NE(a, b);
  EXPECT_LT(a, b);
  EXPECT_TRUE(Gid{}.empty());
  EXPECT_FALSE(kRootId.empty());
  EXPECT_EQ(a.str(), "1:5");
}

TEST(Hlc, ACounterAtItsLimitMovesToTheNextMillisecondInsteadOfWrapping) {
  HlcClock c(1);
  const Hlc peer{5000, UINT32_MAX, 2};  // what a hostile or broken peer may send
  c.observe(peer);
  const Hlc next = c.tick(100);
  EXPECT_GT(next, peer);
  EXPECT_EQ(next.wall_ms, 5001u);
  EXPECT_EQ(next.counter, 0u);
  EXPECT_GT(c.tick(100), next);
}

TEST(Hlc, AStampFromTheFarFutureIsIgnored) {
  HlcClock c(1);
  const Hlc before = c.tick(1000);
  c.observe(Hlc{UINT64_MAX, UINT32_MAX, 2});
  c.observe(Hlc{kMaxHlcWallMs + 1, 0, 2});
  const Hlc next = c.tick(1000);
  EXPECT_GT(next, before);
  EXPECT_EQ(next.wall_ms, 1000u);
  // A wall clock beyond the limit counts as the limit: stamps still grow.
  const Hlc far = c.tick(UINT64_MAX);
  EXPECT_EQ(far.wall_ms, kMaxHlcWallMs);
  EXPECT_GT(c.tick(UINT64_MAX), far);
}
