#include <gtest/gtest.h>

#include "common/invariant.h"

using namespace wormhole;

namespace {
// Every unit test, the simulation included, runs with fatal invariants whatever the build
// type: a broken invariant aborts the test where it breaks.
const bool kFatal = (set_invariants_fatal(true), true);
}  // namespace

TEST(Invariant, HoldsQuietlyAndAbortsInTests) {
  ASSERT_TRUE(kFatal);
  EXPECT_TRUE(invariants_fatal());
  int evaluated = 0;
  EXPECT_TRUE(WH_INVARIANT(++evaluated == 1, "evaluated once"));
  EXPECT_EQ(evaluated, 1);  // evaluated in every build, never compiled away
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(WH_INVARIANT(evaluated == 2, "x is " + std::to_string(evaluated)), "invariant failed.*x is 1");
}

TEST(Invariant, OutsideTestsAFailureIsReportedAndSurvived) {
  set_invariants_fatal(false);
  const bool held = WH_INVARIANT(1 + 1 == 3, "arithmetic");
  set_invariants_fatal(true);
  EXPECT_FALSE(held);
}
