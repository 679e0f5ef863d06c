#include <gtest/gtest.h>

#include "chunks/block_cache.h"

using namespace wormhole;

TEST(BlockCache, ReadsWhatWasInsertedWithinTheBlock) {
  BlockCache cache(1 << 20);
  const std::string sha(32, 'a');
  char buf[8] = {};
  EXPECT_EQ(cache.read(sha, 0, 0, 4, buf), -1);
  cache.insert(sha, 3, "0123456789");
  ASSERT_EQ(cache.read(sha, 3, 2, 4, buf), 4);
  EXPECT_EQ(std::string(buf, 4), "2345");
  EXPECT_EQ(cache.read(sha, 3, 8, 8, buf), 2);  // short at the block's end
  EXPECT_EQ(cache.read(sha, 3, 10, 8, buf), 0);
  EXPECT_EQ(cache.read(sha, 2, 0, 4, buf), -1);  // another block
  EXPECT_EQ(cache.read(std::string(32, 'b'), 3, 0, 4, buf), -1);  // another chunk
}

TEST(BlockCache, StaysWithinItsBoundDroppingTheLeastRecentlyUsed) {
  BlockCache cache(3000);
  const std::string sha(32, 'c');
  char buf[1];
  cache.insert(sha, 0, std::string(1000, 'x'));
  cache.insert(sha, 1, std::string(1000, 'y'));
  cache.insert(sha, 2, std::string(1000, 'z'));
  ASSERT_EQ(cache.read(sha, 0, 0, 1, buf), 1);  // block 0 is now the most recent
  cache.insert(sha, 3, std::string(1000, 'w'));
  EXPECT_LE(cache.bytes(), 3000u);
  EXPECT_EQ(cache.blocks(), 3u);
  EXPECT_EQ(cache.read(sha, 1, 0, 1, buf), -1);  // the least recent went
  EXPECT_EQ(cache.read(sha, 0, 0, 1, buf), 1);
  cache.insert(sha, 0, std::string(10, 'v'));  // replacing a block counts its new size
  EXPECT_EQ(cache.bytes(), 2010u);
  cache.insert(sha, 9, std::string(5000, 'q'));  // larger than the whole cache: not kept
  EXPECT_EQ(cache.read(sha, 9, 0, 1, buf), -1);
  EXPECT_LE(cache.bytes(), 3000u);
}
