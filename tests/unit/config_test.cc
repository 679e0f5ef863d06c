#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "temp_dir.h"

using namespace wormhole;

namespace {
// Config files written by the tests live here until the test program ends. Made on first
// use, so that test processes that write no config (every other test) make no directory.
std::string write_file(const std::string& text) {
  static wormhole::testing::TempDir config_dir("config");
  static int n = 0;
  std::string path = config_dir / ("c" + std::to_string(n++) + ".toml");
  std::ofstream(path) << text;
  return path;
}
const char* kValid = R"(
[network]
name = "lab"
redundancy = "all"
conflict = "last-write-wins"
chunk_size = "1MiB"
max_clock_skew = "30s"
[network.replication]
mode = "sync"
delay = "2s"
[network.reactions]
grave = "stop"

[[pod]]
name = "a"
mountpoint = "mnt/a"
storage = "/var/lib/wormhole/a"
listen = "127.0.0.1:7001"
gc_grace = "0s"
[pod.cache]
size = "2GiB"
[pod.affinity]
hot = 2.5

[[pod]]
name = "b"
role = "client"
mountpoint = "/mnt/b"
storage = "/srv/b"

[[rule]]
path = "/photos/**"
redundancy = 3
pin = ["a"]
)";
}  // namespace

TEST(Config, ParsesEveryDeclaredField) {
  std::string err;
  auto path = write_file(kValid);
  auto cfg = load_config(path, &err);
  ASSERT_TRUE(cfg) << err;
  EXPECT_EQ(cfg->network.name, "lab");
  EXPECT_EQ(cfg->network.redundancy, 0u);  // all
  EXPECT_EQ(cfg->network.conflict, "last-write-wins");
  EXPECT_EQ(cfg->network.chunk_size, 1u << 20);
  EXPECT_EQ(cfg->network.replication_mode, "sync");
  EXPECT_EQ(cfg->network.replication_delay_ms, 2000u);
  EXPECT_EQ(cfg->network.max_clock_skew_ms, 30000u);
  EXPECT_EQ(cfg->network.reactions.grave, "stop");
  ASSERT_EQ(cfg->pods.size(), 2u);
  // Relative paths resolve against the file's directory.
  EXPECT_EQ(cfg->pods[0].mountpoint, (std::filesystem::path(path).parent_path() / "mnt/a").string());
  EXPECT_EQ(cfg->pods[0].cache_bytes, 2ull << 30);
  EXPECT_DOUBLE_EQ(cfg->pods[0].affinity.hot, 2.5);
  EXPECT_EQ(cfg->pods[0].gc_grace_s, 0u);
  EXPECT_EQ(cfg->pods[1].role, "client");
  ASSERT_EQ(cfg->rules.size(), 1u);
  EXPECT_EQ(*cfg->rules[0].redundancy, 3u);
  std::string e2;
  EXPECT_EQ(cfg->find_pod("b", &e2)->storage, "/srv/b");
  EXPECT_EQ(cfg->find_pod("", &e2), nullptr);
  EXPECT_NE(e2.find("--pod"), std::string::npos);
}

struct BadCase {
  const char* text;
  const char* expect;  // substring of the message, after "<file>:<line>:"
  int line;
};

TEST(Config, RejectsBadInputNamingFileLineAndKey) {
  const BadCase cases[] = {
      {"[network]\nname = \"x\"\ncolour = 3\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n",
       "network.colour: unknown key", 3},
      {"[network]\nname = \"x\"\nredundancy = \"two\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n",
       "network.redundancy: expected a number of copies", 3},
      {"[network]\nname = \"x\"\nredundancy = 0\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n",
       "network.redundancy", 3},
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\nrole=\"boss\"\n",
       "pod[0].role: \"boss\" is not one of", 7},
      {"[network]\nname = \"x\"\nchunk_size = \"1KiB\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n",
       "network.chunk_size: must be between", 3},
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\ngc_grace = 5\n",
       "pod[0].gc_grace: expected a duration", 7},
      // 999999999999d is 8.6e19 ms: it overflowed 64 bits into a small grace period.
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\ngc_grace = \"999999999999d\"\n",
       "pod[0].gc_grace: too long", 7},
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n"
       "gc_interval = \"99999999999999999999999s\"\n",
       "pod[0].gc_interval: too long", 7},
      {"[network]\nname = \"x\"\n[network.replication]\ndelay = \"36501d\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\n"
       "storage=\"/s\"\n",
       "network.replication.delay: too long", 4},
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\n", "pod[0].storage: missing", 3},
      {"[network]\nname = \"x\"\nmax_clock_skew = \"500ms\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n",
       "network.max_clock_skew: must be at least 1s", 3},
      {"[network]\nname = \"x\"\nmax_clock_skew = 600\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n",
       "network.max_clock_skew: expected a duration", 3},
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n[[pod]]\nname=\"a\"\n"
       "mountpoint=\"/n\"\nstorage=\"/t\"\n",
       "pod[1].name: duplicate pod name", 8},
      {"[network]\nname = \"x\"\n[[pod]]\nname = \"a\"\nmountpoint = [\n", "", 5},  // TOML syntax error
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n"
       "control_group = \"no such group\"\n",
       "pod[0].control_group: not a group name", 7},
      {"[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\ncontrol_group = 0\n",
       "pod[0].control_group: expected a string", 7},
  };
  for (const BadCase& c : cases) {
    std::string err;
    auto path = write_file(c.text);
    EXPECT_FALSE(load_config(path, &err)) << c.text;
    EXPECT_EQ(err.rfind(path + ":" + std::to_string(c.line) + ":", 0), 0u) << err;
    EXPECT_NE(err.find(c.expect), std::string::npos) << err;
  }
}

TEST(Config, ControlGroupIsLookedUpOnItsPodsMachine) {
  std::string err;
  auto cfg = load_config(write_file(kValid), &err);
  ASSERT_TRUE(cfg) << err;
  EXPECT_EQ(cfg->pods[0].control_group, "");  // by default: root and the daemon's user only
  // A group that does not exist here is no error of the file (it may exist on that pod's
  // machine): the pod's daemon looks it up when it starts.
  cfg = load_config(write_file("[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n"
                               "control_group = \"no-such-group-wh\"\n"),
                    &err);
  ASSERT_TRUE(cfg) << err;
  EXPECT_EQ(cfg->pods[0].control_group, "no-such-group-wh");
  uint32_t gid = 1;
  std::string why;
  EXPECT_FALSE(lookup_group("no-such-group-wh", &gid, &why));
  EXPECT_NE(why.find("no group named"), std::string::npos) << why;
  ASSERT_TRUE(lookup_group("root", &gid, &why)) << why;  // gid 0 on every Linux system
  EXPECT_EQ(gid, 0u);
}

TEST(Config, MissingFileIsAnError) {
  std::string err;
  EXPECT_FALSE(load_config("/nonexistent/wormhole.toml", &err));
  EXPECT_NE(err.find("/nonexistent/wormhole.toml"), std::string::npos);
}

TEST(Config, SizesAndDurations) {
  uint64_t v = 0;
  EXPECT_TRUE(parse_size("4MiB", &v));
  EXPECT_EQ(v, 4u << 20);
  EXPECT_TRUE(parse_size("10GB", &v));
  EXPECT_EQ(v, 10000000000u);
  EXPECT_TRUE(parse_size("512", &v));
  EXPECT_EQ(v, 512u);
  EXPECT_FALSE(parse_size("lots", &v));
  EXPECT_FALSE(parse_size("5 parsecs", &v));
  EXPECT_TRUE(parse_duration_ms("10m", &v));
  EXPECT_EQ(v, 600000u);
  EXPECT_TRUE(parse_duration_ms("250ms", &v));
  EXPECT_EQ(v, 250u);
  EXPECT_FALSE(parse_duration_ms("10", &v));
  EXPECT_FALSE(parse_duration_ms("s", &v));
  bool too_large = false;
  EXPECT_TRUE(parse_duration_ms("36500d", &v, &too_large));
  EXPECT_EQ(v, kMaxDurationMs);
  EXPECT_FALSE(parse_duration_ms("213503982335d", &v, &too_large));  // wrapped past 2^64 ms to 9.5 hours
  EXPECT_TRUE(too_large);
  EXPECT_FALSE(parse_duration_ms("18446744073709551617ms", &v, &too_large));  // 2^64 + 1
  EXPECT_TRUE(too_large);
  EXPECT_FALSE(parse_duration_ms("5 weeks", &v, &too_large));
  EXPECT_FALSE(too_large);
}

TEST(Config, MaxClockSkewDefaultsToTenMinutes) {
  std::string err;
  auto cfg = load_config(write_file("[network]\nname = \"x\"\n[[pod]]\nname=\"a\"\nmountpoint=\"/m\"\nstorage=\"/s\"\n"), &err);
  ASSERT_TRUE(cfg) << err;
  EXPECT_EQ(cfg->network.max_clock_skew_ms, 600000u);
}
