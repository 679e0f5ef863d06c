// The control socket: who may use it (control_peer_allowed, and a real ControlServer
// talked to by root and, when the tests run as root, by forked children that became
// nobody), and what it does with garbage (random bytes, over-long lines, invalid JSON and
// UTF-8: an error reply or a closed connection, never a crash).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/control.h"
#include "temp_dir.h"

using namespace wormhole;
using nlohmann::json;

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr gid_t kOps = 4242;  // a group id no test user has (as root, any gid can be chowned to)
constexpr size_t kMaxRequestBytesForTest = 64 * 1024;  // the daemon's bound on a request line

// A ControlServer in a fresh directory (mode 0755: other users may reach the socket),
// answering {"echo": cmd} and counting the requests its handler saw.
struct Server {
  explicit Server(const std::string& name, ControlAccess access = {"p", std::nullopt, ""})
      : dir(name), path(dir / "control.sock") {
    ::chmod(dir.path().c_str(), 0755);
    server = std::make_unique<ControlServer>(
        path,
        [this](const json& req) {
          handled++;
          const std::string cmd = req.value("cmd", "");
          if (cmd == "throw") throw std::runtime_error("boom");
          if (cmd == "bytes") return json{{"name", std::string("a\xff\xfe" "b")}};  // not UTF-8
          return json{{"echo", cmd}};
        },
        std::move(access));
    std::string error;
    started = server->start(&error);
    EXPECT_TRUE(started) << error;
  }
  wormhole::testing::TempDir dir;
  std::string path;
  std::atomic<int> handled{0};
  std::unique_ptr<ControlServer> server;
  bool started = false;
};

struct Outcome {
  bool ok = false;
  std::string error;
  int err_no = 0;  // the reply's "errno"
  json reply;
};

Outcome ask(const std::string& path, const json& req = {{"cmd", "ping"}}) {
  Outcome o;
  o.ok = control_request(path, req, &o.reply, &o.error);
  if (o.reply.is_object()) o.err_no = o.reply.value("errno", 0);
  return o;
}

// control_request from a child process with these credentials (setgroups, setgid, setuid).
Outcome ask_as(const std::string& path, uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  int fds[2];
  Outcome o;
  if (::pipe(fds) != 0) {
    o.error = "pipe failed";
    return o;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    if (::setgroups(groups.size(), groups.empty() ? nullptr : groups.data()) != 0 || ::setgid(gid) != 0 ||
        ::setuid(uid) != 0)
      ::_exit(3);
    o = ask(path);
    const std::string out = json{{"ok", o.ok}, {"error", o.error}, {"errno", o.err_no}}.dump();
    ssize_t n = ::write(fds[1], out.data(), out.size());
    ::_exit(n == static_cast<ssize_t>(out.size()) ? 0 : 4);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) {
    o.error = "child said: " + text;
    return o;
  }
  o.ok = j.value("ok", false);
  o.error = j.value("error", "");
  o.err_no = j.value("errno", 0);
  return o;
}

// Sends raw bytes, closes the sending side, and returns whatever comes back before the
// daemon closes (or 10 s pass).
std::string exchange_raw(const std::string& path, const std::string& bytes) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  size_t done = 0;
  while (done < bytes.size()) {  // the daemon may close early (over-long line): stop then
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Captures what is logged while it lives. Made before the threads that log start, and
// outliving them: swapping spdlog's default logger under a logging thread is a data race
// (TSan found it when the swap happened around a running server).
class CapturedLog {
 public:
  CapturedLog() : previous_(spdlog::default_logger()) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("control-test", sink_));
  }
  ~CapturedLog() {
    spdlog::set_default_logger(previous_);
    spdlog::drop("control-test");
  }
  std::vector<std::string> lines() { return sink_->last_formatted(); }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_ = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
  std::shared_ptr<spdlog::logger> previous_;
};

}  // namespace

TEST(ControlPeerAllowed, RootAndTheDaemonsUserAlways) {
  for (std::optional<gid_t> group : {std::optional<gid_t>{}, std::optional<gid_t>{kOps}}) {
    EXPECT_TRUE(control_peer_allowed(0, 0, {}, 1000, group));
    EXPECT_TRUE(control_peer_allowed(0, kNogroup, {}, 1000, group));
    EXPECT_TRUE(control_peer_allowed(1000, 1000, {}, 1000, group));
    EXPECT_TRUE(control_peer_allowed(1000, kNogroup, {kNogroup}, 1000, group));
    EXPECT_FALSE(control_peer_allowed(1001, 1001, {1001, 27}, 1000, group));
    EXPECT_FALSE(control_peer_allowed(kNobody, kNogroup, {}, 1000, group));
  }
}

TEST(ControlPeerAllowed, MembersOfTheGroupOnlyWhenOneIsSet) {
  // Primary group.
  EXPECT_TRUE(control_peer_allowed(1001, kOps, {}, 1000, kOps));
  EXPECT_FALSE(control_peer_allowed(1001, kOps, {}, 1000, std::nullopt));
  // Supplementary group, anywhere in the list.
  EXPECT_TRUE(control_peer_allowed(1001, 1001, {kOps}, 1000, kOps));
  EXPECT_TRUE(control_peer_allowed(1001, 1001, {5, 27, kOps, 100}, 1000, kOps));
  EXPECT_FALSE(control_peer_allowed(1001, 1001, {5, 27, kOps, 100}, 1000, std::nullopt));
  // Neither.
  EXPECT_FALSE(control_peer_allowed(1001, 1001, {5, 27, kOps + 1, kOps - 1}, 1000, kOps));
  // Group 0 is a group like another: it does not make its members root.
  EXPECT_TRUE(control_peer_allowed(1001, 0, {}, 1000, gid_t{0}));
  EXPECT_FALSE(control_peer_allowed(1001, 0, {0}, 1000, std::nullopt));
  // A daemon running as root does not admit everybody.
  EXPECT_FALSE(control_peer_allowed(1001, 1001, {}, 0, kOps));
}

TEST(ControlServer, AnswersTheDaemonsUserWithSocketMode0600) {
  Server s("control-own");
  ASSERT_TRUE(s.started);
  struct stat st;
  ASSERT_EQ(::stat(s.path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  Outcome o = ask(s.path);
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.reply.value("echo", ""), "ping");
  o = ask(s.path, {{"cmd", "throw"}});
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.error, "boom");
  // A handler's string that is not UTF-8 (a file name) is replaced, not fatal.
  o = ask(s.path, {{"cmd", "bytes"}});
  ASSERT_TRUE(o.ok) << o.error;
  EXPECT_EQ(o.reply.value("name", ""), "a\xEF\xBF\xBD\xEF\xBF\xBD" "b");
  EXPECT_EQ(s.handled.load(), 3);
}

TEST(ControlServer, WithAGroupTheSocketIs0660AndTheGroups) {
  // As root any group will do; otherwise the daemon may only give it to its own groups.
  const gid_t group = ::geteuid() == 0 ? kOps : ::getegid();
  Server s("control-group", {"p", group, "ops"});
  ASSERT_TRUE(s.started);
  struct stat st;
  ASSERT_EQ(::stat(s.path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, group);
  Outcome o = ask(s.path);
  EXPECT_TRUE(o.ok) << o.error;
}

TEST(ControlServer, AGroupTheDaemonIsNotInIsAStartError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root may give the socket to any group";
  wormhole::testing::TempDir dir("control-notmember");
  ControlServer server(dir / "control.sock", [](const json&) { return json::object(); }, {"p", kOps, "ops"});
  std::string error;
  EXPECT_FALSE(server.start(&error));
  EXPECT_NE(error.find("pod.control_group"), std::string::npos) << error;
}

TEST(ControlServer, RefusesOtherUsersWithEacces) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to become another user";
  CapturedLog log;  // before the server's thread starts, after it stops
  Server s("control-refuse");
  ASSERT_TRUE(s.started);
  // The kernel refuses first: the socket is 0600.
  Outcome o = ask_as(s.path, kNobody, kNogroup, {});
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.error.rfind("permission denied (EACCES): the control socket " + s.path, 0), 0u) << o.error;
  EXPECT_NE(o.error.find("pod.control_group"), std::string::npos) << o.error;
  EXPECT_EQ(o.err_no, EACCES);
  // Opened wide, the daemon refuses: credentials are checked on every connection.
  ASSERT_EQ(::chmod(s.path.c_str(), 0666), 0);
  for (int i = 0; i < 3; i++) {
    o = ask_as(s.path, kNobody, kNogroup, {});
    EXPECT_FALSE(o.ok);
    EXPECT_EQ(o.error,
              "permission denied (EACCES): the control socket of pod p accepts root and the daemon's user only "
              "(pod.control_group can admit a group)");
    EXPECT_EQ(o.err_no, EACCES);
  }
  std::vector<std::string> logged = log.lines();
  EXPECT_EQ(s.handled.load(), 0);
  // Logged once for the user, not once per connection.
  size_t refusals = 0;
  for (auto& line : logged) refusals += line.find("refused uid 65534") != std::string::npos;
  EXPECT_EQ(refusals, 1u);
  // Root still may.
  EXPECT_TRUE(ask(s.path).ok);
  EXPECT_EQ(s.handled.load(), 1);
}

TEST(ControlServer, AdmitsMembersOfTheControlGroup) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to become another user";
  Server s("control-member", {"p", kOps, "ops"});
  ASSERT_TRUE(s.started);
  // Member by a supplementary group (SO_PEERGROUPS), then by the primary group.
  Outcome o = ask_as(s.path, kNobody, kNogroup, {kOps});
  EXPECT_TRUE(o.ok) << o.error;
  o = ask_as(s.path, kNobody, kOps, {});
  EXPECT_TRUE(o.ok) << o.error;
  EXPECT_EQ(s.handled.load(), 2);
  // Not a member: the kernel refuses (0660), and the daemon too once the socket is opened.
  o = ask_as(s.path, kNobody, kNogroup, {kNogroup + 1});
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.err_no, EACCES);
  EXPECT_NE(o.error.find("members of group"), std::string::npos) << o.error;
  ASSERT_EQ(::chmod(s.path.c_str(), 0666), 0);
  o = ask_as(s.path, kNobody, kNogroup, {kNogroup + 1});
  EXPECT_FALSE(o.ok);
  EXPECT_EQ(o.error,
            "permission denied (EACCES): the control socket of pod p accepts root, the daemon's user and members of "
            "group ops (pod.control_group)");
  EXPECT_EQ(o.err_no, EACCES);
  EXPECT_EQ(s.handled.load(), 2);
}

TEST(ControlServer, SurvivesGarbage) {
  Server s("control-fuzz");
  ASSERT_TRUE(s.started);
  std::mt19937_64 rng(20240613);
  auto random_bytes = [&](size_t n) {
    std::string b(n, '\0');
    for (char& c : b) c = static_cast<char>(rng());
    return b;
  };
  std::vector<std::string> inputs = {
      "",
      "\n",
      "{}\n",
      "[]\n",
      "null\n",
      "\"cmd\"\n",
      "{\"cmd\": 5}\n",              // cmd of the wrong type: the handler throws
      "{\"cmd\": \"ping\"",          // no newline, then EOF
      "{\"cmd\": \"\xff\xfe\"}\n",   // invalid UTF-8
      "{\"cmd\": \"ping\"}\n{\"cmd\": \"ping\"}\n",
      std::string(kMaxRequestBytesForTest, 'x'),                                  // over-long, no newline
      std::string(kMaxRequestBytesForTest * 3, '{') + "\n",                       // over-long
      std::string(30000, '[') + "\n",                                             // deep nesting
      "{\"a\":" + std::string(10000, '[') + std::string(10000, ']') + ",\"cmd\":\"ping\"}\n",
      std::string("{\"cmd\":\"ping\"}\0garbage\n", 24),
  };
  for (int i = 0; i < 200; i++) {
    std::string b = random_bytes(rng() % 512);
    if (rng() % 2) b += "\n";
    inputs.push_back(std::move(b));
  }
  for (int i = 0; i < 4; i++) inputs.push_back(random_bytes(64 * 1024 + rng() % 200000));
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::err);  // one "malformed request" warning per input otherwise
  for (const std::string& in : inputs) {
    const std::string out = exchange_raw(s.path, in);
    if (out.empty()) continue;  // closed without an answer: allowed
    ASSERT_EQ(out.back(), '\n') << "input of " << in.size() << " bytes";
    json reply = json::parse(out.substr(0, out.size() - 1), nullptr, false);
    ASSERT_TRUE(reply.is_object()) << out;
    EXPECT_TRUE(reply.contains("echo") || reply.contains("error")) << out;
  }
  spdlog::set_level(level);
  // Still serving.
  Outcome o = ask(s.path);
  EXPECT_TRUE(o.ok) << o.error;
}
