#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "chunks/chunk_store.h"
#include "temp_dir.h"

using namespace wormhole;

using wormhole::testing::TempDir;

TEST(ChunkStore, StoresReadsAndDeduplicates) {
  TempDir tmp("chunks1");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err)) << err;
  std::string data(100000, 'a');
  data[500] = 'b';
  std::string sha, sha2;
  ASSERT_EQ(store.put(data.data(), data.size(), &sha), 0);
  EXPECT_EQ(sha.size(), 32u);
  EXPECT_EQ(ChunkStore::hex(sha).size(), 64u);
  ASSERT_EQ(store.put(data.data(), data.size(), &sha2), 0);
  EXPECT_EQ(sha, sha2);
  EXPECT_EQ(store.stats().chunks, 1u);
  EXPECT_EQ(store.stats().bytes, data.size());
  char buf[10];
  ASSERT_EQ(store.read(sha, 495, 10, buf), 10);
  EXPECT_EQ(std::string(buf, 10), std::string("aaaaabaaaa"));
  EXPECT_EQ(store.read(sha, data.size() - 3, 10, buf), 3);
  EXPECT_EQ(store.read(std::string(32, 'z'), 0, 10, buf), -ENOENT);
}

TEST(ChunkStore, CorruptChunkIsEIO) {
  TempDir tmp("chunks2");
  std::string dir = tmp / "store";
  std::string sha;
  {
    ChunkStore store(dir);
    std::string err;
    ASSERT_TRUE(store.init(&err));
    std::string data(5000, 'q');
    ASSERT_EQ(store.put(data.data(), data.size(), &sha), 0);
    // Flip one byte on disk behind the store's back.
    std::fstream f(store.path_of(sha), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1234);
    f.put('X');
  }
  ChunkStore fresh(dir);  // a restarted daemon verifies on first read
  std::string err;
  ASSERT_TRUE(fresh.init(&err));
  char buf[4];
  EXPECT_EQ(fresh.read(sha, 0, 4, buf), -EIO);
}

TEST(ChunkStore, GarbageCollectionKeepsLiveAndYoungChunks) {
  TempDir tmp("chunks3");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err));
  std::string a, b;
  ASSERT_EQ(store.put("live", 4, &a), 0);
  ASSERT_EQ(store.put("dead", 4, &b), 0);
  EXPECT_EQ(store.collect_garbage({a}, 3600), 0u);  // dead but young: kept
  EXPECT_TRUE(store.contains(b));
  EXPECT_EQ(store.collect_garbage({a}, 0), 1u);
  EXPECT_FALSE(store.contains(b));
  EXPECT_TRUE(store.contains(a));
  EXPECT_EQ(store.stats().chunks, 1u);
}
