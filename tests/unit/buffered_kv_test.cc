#include <gtest/gtest.h>

#include <random>

#include "store/buffered_kv.h"
#include "store/mem_kv.h"

namespace wormhole {
namespace {

// Every pair of [start, end) as "k=v;" in the scan's order, stopping after `limit` pairs.
std::string scan_text(KvStore& kv, const std::string& start, const std::string& end, bool reverse, size_t limit) {
  std::string out;
  size_t n = 0;
  EXPECT_TRUE(kv.scan(start, end, reverse, [&](std::string_view k, std::string_view v) {
    out += std::string(k) + "=" + std::string(v) + ";";
    return ++n < limit;
  }));
  return out;
}

}  // namespace

// Held writes read like written ones: a random mix of writes to the store before the hold
// and held writes (puts, overwrites, deletes) gives the same gets and scans (both ways,
// whole and stopped early) as a store that got everything; release writes them all.
TEST(BufferedKv, HeldWritesReadLikeWrittenOnes) {
  std::mt19937 rng(11);
  for (int round = 0; round < 200; ++round) {
    MemKv base, model;
    BufferedKv kv(base);
    auto key = [&] { return std::string(1, static_cast<char>('a' + rng() % 12)) + std::to_string(rng() % 3); };
    auto random_batch = [&] {
      KvBatch b;
      for (int i = 0, n = 1 + static_cast<int>(rng() % 3); i < n; ++i) {
        if (rng() % 3 == 0)
          b.emplace_back(key(), std::nullopt);
        else
          b.emplace_back(key(), "v" + std::to_string(rng() % 100));
      }
      return b;
    };
    for (int i = 0; i < 10; ++i) {
      KvBatch b = random_batch();
      ASSERT_TRUE(kv.write(b, false).ok);
      ASSERT_TRUE(model.write(b, false).ok);
    }
    kv.hold();
    for (int i = 0; i < 10; ++i) {
      KvBatch b = random_batch();
      ASSERT_TRUE(kv.write(b, false).ok);
      ASSERT_TRUE(model.write(b, false).ok);
    }
    for (char c = 'a'; c < 'a' + 12; ++c) {
      std::string got, want;
      const std::string k = std::string(1, c) + "1";
      ASSERT_EQ(kv.get(k, &got), model.get(k, &want)) << k;
      EXPECT_EQ(got, want);
    }
    for (int q = 0; q < 10; ++q) {
      std::string a = key(), b = key();
      if (b < a) std::swap(a, b);
      const bool reverse = rng() % 2;
      const size_t limit = rng() % 2 ? 1000 : 1 + rng() % 4;
      EXPECT_EQ(scan_text(kv, a, b, reverse, limit), scan_text(model, a, b, reverse, limit))
          << "round " << round << " [" << a << ", " << b << ") reverse " << reverse << " limit " << limit;
    }
    ASSERT_TRUE(kv.release().ok);
    EXPECT_EQ(scan_text(base, "", "\xff", false, 1000), scan_text(model, "", "\xff", false, 1000));
    EXPECT_FALSE(kv.holding());
  }
}

TEST(BufferedKv, AHoldIsBoundedAndNeverWrittenInPart) {
  MemKv base;
  BufferedKv kv(base);
  kv.hold();
  const std::string big(BufferedKv::kMaxHeldBytes / 2, 'x');
  ASSERT_TRUE(kv.write({{"a", big}}, false).ok);
  EXPECT_FALSE(kv.write({{"b", big}, {"c", "small"}}, false).ok);  // beyond the bound: refused whole
  std::string v;
  EXPECT_FALSE(kv.get("c", &v));
  EXPECT_FALSE(base.get("a", &v));  // nothing reached the store before the release
  ASSERT_TRUE(kv.release().ok);
  EXPECT_TRUE(base.get("a", &v));
  EXPECT_FALSE(base.get("b", &v));
}

}  // namespace wormhole
