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
    store.mark_clean_shutdown();  // an orderly stop: the next start does not check chunks
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

// set_aside moves a chunk only when its bytes, read again, do not match its name: a good
// chunk (the caller's EIO was a read error, or another reader restored it) stays, a
// corrupt one goes to corrupt/ and is no longer contained (and no longer counted); a put of
// the same bytes then stores them anew.
TEST(ChunkStore, OnlyACorruptChunkIsSetAside) {
  TempDir tmp("chunks-aside");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err)) << err;
  std::string data(300000, 'z');  // several blocks: a table-named chunk
  data[77] = 'y';
  std::string sha;
  ASSERT_EQ(store.put(data.data(), data.size(), &sha), 0);
  EXPECT_EQ(store.set_aside(sha), EEXIST);
  EXPECT_TRUE(store.contains(sha));
  EXPECT_EQ(store.set_aside(std::string(32, 'n')), ENOENT);
  {
    std::fstream f(store.path_of(sha), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200000);
    f.put('X');
  }
  ASSERT_EQ(store.set_aside(sha), 0);
  EXPECT_FALSE(store.contains(sha));
  EXPECT_TRUE(std::filesystem::exists(tmp / "store/corrupt/" + ChunkStore::hex(sha)));
  EXPECT_EQ(store.stats().chunks, 0u);
  EXPECT_EQ(store.stats().bytes, 0u);
  std::string again;
  ASSERT_EQ(store.put(data.data(), data.size(), &again), 0);
  EXPECT_EQ(again, sha);
  std::string back(data.size(), '\0');
  ChunkStore fresh(tmp / "store");  // verifies on first read, and ignores corrupt/
  store.mark_clean_shutdown();
  ASSERT_TRUE(fresh.init(&err)) << err;
  EXPECT_EQ(fresh.stats().chunks, 1u);
  ASSERT_EQ(fresh.read(sha, 0, back.size(), back.data()), static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back, data);
}

// After a crash (no orderly stop), chunks stored since the last group commit may be cut
// short under their names (renamed before their bytes reached the disk): the next start
// verifies them and removes the bad ones; older chunks, made durable, are not read again.
TEST(ChunkStore, AfterACrashRecentChunksAreVerifiedAndCutOnesRemoved) {
  TempDir tmp("chunks-crash");
  std::string dir = tmp / "store";
  std::string old_sha, torn_sha, good_sha, corrupt_old_sha;
  const std::string old_data(7000, 'o'), torn_data(9000, 't'), good_data(3000, 'g'), corrupt_old(4000, 'c');
  {
    ChunkStore store(dir);
    std::string err;
    ASSERT_TRUE(store.init(&err)) << err;
    ASSERT_EQ(store.put(old_data.data(), old_data.size(), &old_sha), 0);
    ASSERT_EQ(store.put(corrupt_old.data(), corrupt_old.size(), &corrupt_old_sha), 0);
    ASSERT_EQ(store.sync_pending(), 0);
    // Both were durable long before the crash: age them past the recorded group commit.
    struct timespec times[2] = {{::time(nullptr) - 3600, 0}, {::time(nullptr) - 3600, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, store.path_of(old_sha).c_str(), times, 0), 0);
    ASSERT_EQ(::utimensat(AT_FDCWD, store.path_of(corrupt_old_sha).c_str(), times, 0), 0);
    ASSERT_EQ(store.put(torn_data.data(), torn_data.size(), &torn_sha), 0);
    ASSERT_EQ(store.put(good_data.data(), good_data.size(), &good_sha), 0);
    // The power loss: the newest chunk kept its name but lost its bytes.
    ASSERT_EQ(::truncate(store.path_of(torn_sha).c_str(), 0), 0);
    // An old chunk damaged later is not the crash's doing: found when read, not at start.
    std::fstream f(store.path_of(corrupt_old_sha), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('X');
    f.close();
    ASSERT_EQ(::utimensat(AT_FDCWD, store.path_of(corrupt_old_sha).c_str(), times, 0), 0);
  }  // no mark_clean_shutdown(): a crash
  ChunkStore fresh(dir);
  std::string err;
  ASSERT_TRUE(fresh.init(&err)) << err;
  EXPECT_FALSE(std::filesystem::exists(fresh.path_of(torn_sha)));
  EXPECT_TRUE(std::filesystem::exists(fresh.path_of(good_sha)));
  EXPECT_TRUE(std::filesystem::exists(fresh.path_of(corrupt_old_sha)));  // not verified at start
  char buf[8];
  EXPECT_EQ(fresh.read(torn_sha, 0, 8, buf), -ENOENT);  // missing: fetched from a holder
  EXPECT_EQ(fresh.read(good_sha, 0, 8, buf), 8);
  EXPECT_EQ(fresh.read(old_sha, 0, 8, buf), 8);
  EXPECT_EQ(fresh.read(corrupt_old_sha, 0, 8, buf), -EIO);
  EXPECT_EQ(fresh.stats().chunks, 3u);
}

// A chunk of the wrong size (cut short by a power loss) is never deduplicated against:
// storing the same bytes again writes it whole.
TEST(ChunkStore, DeduplicationRewritesAChunkOfTheWrongSize) {
  TempDir tmp("chunks-dedup-torn");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err)) << err;
  const std::string data(20000, 'd');
  std::string sha;
  ASSERT_EQ(store.put(data.data(), data.size(), &sha), 0);
  ASSERT_EQ(::truncate(store.path_of(sha).c_str(), 100), 0);
  ASSERT_EQ(store.put(data.data(), data.size(), &sha), 0);
  EXPECT_EQ(std::filesystem::file_size(store.path_of(sha)), data.size());
}

// The group commit makes every chunk put since the last one durable, once.
TEST(ChunkStore, SyncPendingSyncsChunksPutSinceTheLastCall) {
  TempDir tmp("chunks-pending");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err)) << err;
  EXPECT_EQ(store.sync_pending(), 0);  // nothing pending
  const std::string data(5000, 'p');
  std::string sha;
  ASSERT_EQ(store.put(data.data(), data.size(), &sha), 0);
  EXPECT_EQ(store.sync_pending(), 0);
  EXPECT_TRUE(std::filesystem::exists(tmp / "store/synced_until"));
  // A chunk collected before the group commit is no error: nothing names it any more.
  const std::string other(6000, 'q');
  ASSERT_EQ(store.put(other.data(), other.size(), &sha), 0);
  std::filesystem::remove(store.path_of(sha));
  EXPECT_EQ(store.sync_pending(), 0);
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

// Chunks referenced but held by other pods are a cache: the most recently stored ones stay
// within the budget, the older ones go (once past the grace period), held ones always stay.
TEST(ChunkStore, CachedChunksStayWithinTheirBudgetYoungestFirst) {
  TempDir tmp("chunks_cache");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err));
  std::string held, old_c, mid_c, new_c;
  ASSERT_EQ(store.put("held", 4, &held), 0);
  ASSERT_EQ(store.put("old!", 4, &old_c), 0);
  ASSERT_EQ(store.put("mid!", 4, &mid_c), 0);
  ASSERT_EQ(store.put("new!", 4, &new_c), 0);
  // Ages set by hand: 300 s, 200 s and 100 s old.
  auto age = [&](const std::string& sha, int64_t seconds) {
    struct timespec times[2];
    ::clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, store.path_of(sha).c_str(), times, 0), 0);
  };
  age(held, 400);
  age(old_c, 300);
  age(mid_c, 200);
  age(new_c, 100);
  const std::unordered_set<std::string> cached = {old_c, mid_c, new_c};
  // Room for two: the oldest goes, but not within its grace period.
  EXPECT_EQ(store.collect_garbage({held}, 3600, cached, 8), 0u);
  EXPECT_EQ(store.collect_garbage({held}, 10, cached, 8), 1u);
  EXPECT_FALSE(store.contains(old_c));
  EXPECT_TRUE(store.contains(mid_c));
  EXPECT_TRUE(store.contains(new_c));
  EXPECT_TRUE(store.contains(held));
  // refresh() makes the older one the youngest: the other goes when the budget shrinks.
  EXPECT_TRUE(store.refresh(mid_c));
  EXPECT_FALSE(store.refresh(old_c));  // not here
  EXPECT_EQ(store.collect_garbage({held}, 10, cached, 4), 1u);
  EXPECT_TRUE(store.contains(mid_c));
  EXPECT_FALSE(store.contains(new_c));
  // No budget: every cached chunk goes; the held one stays.
  EXPECT_EQ(store.collect_garbage({held}, 0, cached, 0), 1u);
  EXPECT_TRUE(store.contains(held));
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

namespace {
std::string pattern(size_t len, uint32_t seed) {
  std::string s(len, '\0');
  for (size_t i = 0; i < len; ++i) s[i] = static_cast<char>((i * 2654435761u + seed) >> 13);
  return s;
}
}  // namespace

TEST(ChunkNames, OneBlockIsTheBytesHashManyBlocksTheTablesHash) {
  const std::string small = pattern(1000, 1);
  EXPECT_EQ(ChunkStore::block_table(small.data(), small.size()), ChunkStore::hash(small.data(), small.size()));
  const std::string big = pattern(3 * ChunkStore::kBlockBytes + 17, 2);
  const std::string table = ChunkStore::block_table(big.data(), big.size());
  ASSERT_EQ(table.size(), 4 * ChunkStore::kHashBytes);
  EXPECT_EQ(table.substr(3 * ChunkStore::kHashBytes),
            ChunkStore::hash(big.data() + 3 * ChunkStore::kBlockBytes, 17));  // the short last block
  const std::string name = ChunkStore::hash(big.data(), big.size());
  EXPECT_EQ(name, ChunkStore::name_of_table(table));
  // Blocks verify alone, in any run, against the table that names the chunk.
  EXPECT_TRUE(ChunkStore::verify_blocks(name, table, 1, big.data() + ChunkStore::kBlockBytes, ChunkStore::kBlockBytes));
  EXPECT_TRUE(ChunkStore::verify_blocks(name, table, 2, big.data() + 2 * ChunkStore::kBlockBytes,
                                        ChunkStore::kBlockBytes + 17));
  EXPECT_TRUE(ChunkStore::verify_blocks(name, table, 0, big.data(), big.size()));
}

TEST(ChunkNames, TamperedBlocksTablesAndCutsAreRejected) {
  const std::string big = pattern(3 * ChunkStore::kBlockBytes, 3);
  const std::string table = ChunkStore::block_table(big.data(), big.size());
  const std::string name = ChunkStore::hash(big.data(), big.size());
  std::string bad = big.substr(ChunkStore::kBlockBytes, ChunkStore::kBlockBytes);
  bad[100] ^= 1;
  EXPECT_FALSE(ChunkStore::verify_blocks(name, table, 1, bad.data(), bad.size()));  // a changed byte
  // A table made up for the changed block does not name the chunk.
  std::string forged = table;
  forged.replace(ChunkStore::kHashBytes, ChunkStore::kHashBytes, ChunkStore::hash(bad.data(), bad.size()));
  EXPECT_FALSE(ChunkStore::verify_blocks(name, forged, 1, bad.data(), bad.size()));
  // A block cut short that is not the chunk's last; a block beyond the table; the wrong index.
  EXPECT_FALSE(ChunkStore::verify_blocks(name, table, 1, big.data() + ChunkStore::kBlockBytes, 1000));
  EXPECT_FALSE(ChunkStore::verify_blocks(name, table, 3, big.data(), ChunkStore::kBlockBytes));
  EXPECT_FALSE(ChunkStore::verify_blocks(name, table, 0, big.data() + ChunkStore::kBlockBytes, ChunkStore::kBlockBytes));
  EXPECT_FALSE(ChunkStore::verify_blocks(name, table.substr(1), 0, big.data(), ChunkStore::kBlockBytes));
  EXPECT_FALSE(ChunkStore::verify_blocks(name, "", 0, big.data(), 0));
}

// Chunks written by protocol 5 and earlier are named by their bytes' hash: they are still
// read and accepted from peers, and have no block table (served whole only).
TEST(ChunkNames, LegacyChunksAreReadAndAcceptedButHaveNoTable) {
  TempDir tmp("chunks-legacy");
  ChunkStore store(tmp / "store");
  std::string err;
  ASSERT_TRUE(store.init(&err)) << err;
  const std::string big = pattern(2 * ChunkStore::kBlockBytes + 5, 4);
  // The plain SHA-256, as protocol 5 named it (computed here independently of the store).
  std::string legacy;
  {
    TempDir t2("chunks-legacy-name");
    std::ofstream(t2 / "f", std::ios::binary) << big;
    FILE* p = ::popen(("sha256sum " + (t2 / "f")).c_str(), "r");
    char hex[65] = {};
    ASSERT_EQ(std::fread(hex, 1, 64, p), 64u);
    ::pclose(p);
    for (int i = 0; i < 32; ++i) legacy.push_back(static_cast<char>(std::stoi(std::string(hex + 2 * i, 2), nullptr, 16)));
  }
  ASSERT_NE(legacy, ChunkStore::hash(big.data(), big.size()));
  ASSERT_EQ(store.put_expected(big.data(), big.size(), legacy), 0);
  std::string table;
  EXPECT_EQ(store.table_of(legacy, &table), ENOTSUP);
  std::string buf(big.size(), '\0');
  ASSERT_EQ(store.read(legacy, 0, buf.size(), buf.data()), static_cast<ssize_t>(big.size()));
  EXPECT_EQ(buf, big);
  // A fresh store (no cached descriptor) verifies the legacy file by its bytes' hash.
  store.mark_clean_shutdown();
  ChunkStore fresh(tmp / "store");
  ASSERT_TRUE(fresh.init(&err)) << err;
  EXPECT_EQ(fresh.read(legacy, 0, 10, buf.data()), 10);
  EXPECT_EQ(fresh.table_of(legacy, &table), ENOTSUP);
  // The same bytes under the new name have a table; wrong bytes under either name do not pass.
  std::string name;
  ASSERT_EQ(fresh.put(big.data(), big.size(), &name), 0);
  ASSERT_EQ(fresh.table_of(name, &table), 0);
  EXPECT_EQ(table, ChunkStore::block_table(big.data(), big.size()));
  std::string other = big;
  other[7] ^= 1;
  EXPECT_EQ(fresh.put_expected(other.data(), other.size(), legacy), EBADMSG);
  EXPECT_EQ(fresh.put_expected(other.data(), other.size(), name), EBADMSG);
}

TEST(ChunkNames, TheTableOfAStoredChunkComesFromDiskAfterARestart) {
  TempDir tmp("chunks-table");
  const std::string big = pattern(5 * ChunkStore::kBlockBytes - 1, 5);
  std::string name, err, table;
  {
    ChunkStore store(tmp / "store");
    ASSERT_TRUE(store.init(&err)) << err;
    ASSERT_EQ(store.put(big.data(), big.size(), &name), 0);
    store.mark_clean_shutdown();
  }
  ChunkStore store(tmp / "store");
  ASSERT_TRUE(store.init(&err)) << err;
  ASSERT_EQ(store.table_of(name, &table), 0);
  EXPECT_EQ(table, ChunkStore::block_table(big.data(), big.size()));
  EXPECT_EQ(store.table_of(std::string(32, 'x'), &table), ENOENT);
}
