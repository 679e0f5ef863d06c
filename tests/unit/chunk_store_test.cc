#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <fcntl.h>
#include <sys/stat.h>
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

// Files in the chunk directory that are not chunks (a stray editor backup, a name that is
// not 64 hex digits, a chunk name in the wrong subdirectory, a directory) are left alone and
// never stop the collection of the real garbage.
TEST(ChunkStore, GarbageCollectionIgnoresFilesThatAreNotChunks) {
  TempDir tmp("chunks4");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err));
  std::string dead;
  ASSERT_EQ(store.put("dead", 4, &dead), 0);
  const std::string hex = ChunkStore::hex(dead);
  const std::string base = tmp / "store";
  const std::vector<std::string> strays = {
      base + "/" + hex.substr(0, 2) + "/" + std::string(62, 'z') + "zz",      // 64 chars, not hex
      base + "/" + hex.substr(0, 2) + "/" + std::string(64, 'A'),             // upper case
      base + "/" + hex.substr(0, 2) + "/notes.txt~",
      base + "/" + (hex.substr(0, 2) == "00" ? "01" : "00") + "/" + hex,      // wrong subdirectory
      base + "/README",
  };
  for (auto& path : strays) std::ofstream(path) << "not a chunk";
  std::filesystem::create_directory(base + "/" + hex.substr(0, 2) + "/" + std::string(64, 'b'));
  std::filesystem::create_directory(base + "/zz");
  EXPECT_EQ(store.collect_garbage({}, 0), 1u);  // the real chunk only
  EXPECT_FALSE(store.contains(dead));
  for (auto& path : strays) EXPECT_TRUE(std::filesystem::exists(path)) << path;
}

// GC lists an unreferenced old chunk; before it deletes it, a writer deduplicates against
// it (its new version will reference it). The chunk must survive: GC decides on the age
// under the chunk's lock, which the writer's refresh also takes.
TEST(ChunkStore, ADeduplicatingPutInGcsWindowKeepsTheChunk) {
  TempDir tmp("chunks5");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err));
  std::string sha;
  ASSERT_EQ(store.put("shared", 6, &sha), 0);
  // Old: written long before the grace period.
  struct timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, store.path_of(sha).c_str(), old_times, 0), 0);
  int puts = 0;
  store.set_gc_hook_for_test([&](const std::string& chunk) {
    if (chunk != sha) return;
    std::string again;
    EXPECT_EQ(store.put("shared", 6, &again), 0);  // deduplicated: nothing written
    ++puts;
  });
  EXPECT_EQ(store.collect_garbage({}, 3600), 0u);
  EXPECT_EQ(puts, 1);
  EXPECT_TRUE(store.contains(sha));
  char buf[6];
  EXPECT_EQ(store.read(sha, 0, 6, buf), 6);
  // Unreferenced and left alone past the grace period, it goes.
  store.set_gc_hook_for_test(nullptr);
  ASSERT_EQ(::utimensat(AT_FDCWD, store.path_of(sha).c_str(), old_times, 0), 0);
  EXPECT_EQ(store.collect_garbage({}, 3600), 1u);
  EXPECT_FALSE(store.contains(sha));
}
