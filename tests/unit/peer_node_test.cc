// The gRPC boundary of a pod (PeerNode): every RPC refuses senders that are not members,
// identities that do not match, and malformed content, before acting on anything.
// One real PeerNode on 127.0.0.1, called through a plain gRPC stub as any peer could.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include "chunks/chunk_store.h"
#include "common/pb_ids.h"
#include "net/op_packing.h"
#include "net/peer.h"
#include "net/peer_node.h"
#include "security/admin_auth.h"
#include "proto/wormhole.grpc.pb.h"
#include "store/mem_kv.h"
#include "temp_dir.h"

using namespace wormhole;

namespace {

constexpr uint64_t kSelfId = 0xa1, kBId = 0xb1;

// The deadline of a test's own call: 5 s, times WORMHOLE_TIMEOUT_SCALE (sanitizer builds
// run gRPC several times slower; scripts/test sets it, as for the mount tests).
std::chrono::system_clock::time_point call_deadline() {
  const char* scale = std::getenv("WORMHOLE_TIMEOUT_SCALE");
  const int factor = scale ? std::max(1, std::atoi(scale)) : 1;
  return std::chrono::system_clock::now() + std::chrono::seconds(5 * factor);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

PodConfig pod(const std::string& name, const std::string& dir) {
  PodConfig p;
  p.name = name;
  p.listen = "127.0.0.1:" + std::to_string(free_port());
  p.mountpoint = dir + "/mnt-" + name;
  p.storage = dir;
  return p;
}

// Pod "a" of network "net" (pods a, b, c; b and c are not running). Without TLS unless
// asked: the request-level checks are the same either way (PeerTls tests the certificates).
struct Node {
  wormhole::testing::TempDir dir{"peer-node"};
  Config config;
  MemKv kv;
  Namespace ns{kv, kSelfId, [] { return int64_t{1'700'000'000'000'000'000}; }, [](Gid) { return false; }};
  ChunkStore chunks{dir / "chunks"};
  KernelCache kernel;
  std::unique_ptr<PeerNode> node;
  std::unique_ptr<pb::Peer::Stub> stub;
  explicit Node(uint64_t chunk_size = 64 << 10, bool tls = false, std::vector<std::string> admins = {}) {
    config.network.name = "net";
    config.network.tls = tls;
    config.network.admins = std::move(admins);
    config.network.chunk_size = chunk_size;
    config.pods = {pod("a", dir.path()), pod("b", dir.path()), pod("c", dir.path())};
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
    EXPECT_TRUE(chunks.init(&err)) << err;
    node = std::make_unique<PeerNode>(config, config.pods[0], kSelfId, ns, chunks, kernel);
    EXPECT_TRUE(node->start(&err)) << err;
    if (!tls) stub = pb::Peer::NewStub(grpc::CreateChannel(config.pods[0].listen, grpc::InsecureChannelCredentials()));
  }
  pb::Envelope envelope(const std::string& from, uint64_t id) {
    pb::Envelope e;
    e.set_protocol_version(kProtocolVersion);
    e.set_network("net");
    e.set_chunk_size(64 << 10);
    e.set_from_pod_name(from);
    e.set_from_pod_id(id);
    *e.mutable_body()->mutable_sync_request() = pb::Progress();
    return e;
  }
  grpc::Status exchange(const pb::Envelope& e, pb::EnvelopeReply* reply = nullptr) {
    pb::EnvelopeReply ignored;
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    return stub->Exchange(&ctx, e, reply ? reply : &ignored);
  }
  // A request about `versions` (GetVersions, ConfirmHolding) sent as pod `from` (`id`).
  template <class Request>
  Request versions_request(const std::string& from, uint64_t id, const std::vector<Gid>& versions) {
    Request req;
    req.set_protocol_version(kProtocolVersion);
    req.set_network("net");
    req.set_chunk_size(config.network.chunk_size);
    req.set_from_pod_name(from);
    req.set_from_pod_id(id);
    for (Gid g : versions) to_pb(g, req.add_versions());
    return req;
  }
  // Reads a whole chunk as `from`; the status, and the bytes in *data.
  grpc::Status read_chunk(const std::string& sha, const std::string& from, uint64_t id, std::string* data,
                          uint64_t offset = 0, uint64_t length = 0, std::string* table = nullptr) {
    pb::ChunkRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_network("net");
    req.set_chunk_size(config.network.chunk_size);
    req.set_with_table(table != nullptr);
    req.set_from_pod_name(from);
    req.set_from_pod_id(id);
    req.set_sha256(sha);
    req.set_offset(offset);
    req.set_length(length);
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    auto reader = stub->ReadChunk(&ctx, req);
    pb::ChunkPiece piece;
    while (reader->Read(&piece)) {
      *data += piece.data();
      if (table) *table += piece.table();
    }
    return reader->Finish();
  }
};

}  // namespace

TEST(PeerBoundary, ChunksAreServedToMembersOnly) {
  Node n;
  const std::string bytes(1000, 'c');
  std::string sha;
  ASSERT_EQ(n.chunks.put(bytes.data(), bytes.size(), &sha), 0);
  std::string data;
  EXPECT_EQ(n.read_chunk(sha, "", 0, &data).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(n.read_chunk(sha, "mallory", 0xe1, &data).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(data.empty());
  ASSERT_TRUE(n.read_chunk(sha, "b", kBId, &data).ok());
  EXPECT_EQ(data, bytes);
  // b's identity is known now: its name with another id is refused.
  data.clear();
  EXPECT_EQ(n.read_chunk(sha, "b", 0xb2, &data).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // Offsets and lengths beyond a chunk are malformed (and would overflow).
  EXPECT_EQ(n.read_chunk(sha, "b", kBId, &data, 10, UINT64_MAX).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(n.read_chunk(sha, "b", kBId, &data, UINT64_MAX, 1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(PeerBoundary, OneIdentityHasOneName) {
  Node n;
  ASSERT_TRUE(n.exchange(n.envelope("b", kBId)).ok());
  // c has not been heard from yet; b's id must not take its name.
  const grpc::Status st = n.exchange(n.envelope("c", kBId));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("belongs to pod \"b\""), std::string::npos) << st.error_message();
  EXPECT_TRUE(n.exchange(n.envelope("c", 0xc1)).ok());
  // Names are checked before they are echoed.
  const grpc::Status bad = n.exchange(n.envelope(std::string(1000, 'x'), 0xd1));
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_LT(bad.error_message().size(), 100u);
}

// Pods cutting files in chunks of another size would read each other's chunk lists at the
// wrong offsets: refused, saying which setting to align.
TEST(PeerBoundary, APodWithAnotherChunkSizeIsRefused) {
  Node n;
  pb::Envelope e = n.envelope("b", kBId);
  e.set_chunk_size(4 << 20);
  const grpc::Status st = n.exchange(e);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("network.chunk_size"), std::string::npos) << st.error_message();
  EXPECT_TRUE(n.exchange(n.envelope("b", kBId)).ok());
}

// Pods of another protocol version (a rolling upgrade across a format change) are refused
// with a message saying both versions, for every request kind, never half-understood.
TEST(PeerBoundary, APodOfAnotherProtocolVersionIsRefusedClearly) {
  Node n;
  for (uint32_t version : {kProtocolVersion - 1, kProtocolVersion + 1, 0u}) {
    pb::Envelope e = n.envelope("b", kBId);
    e.set_protocol_version(version);
    const grpc::Status st = n.exchange(e);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << version;
    const std::string want = "protocol version " + std::to_string(version) + ", this pod speaks " +
                             std::to_string(kProtocolVersion);
    EXPECT_NE(st.error_message().find(want), std::string::npos) << st.error_message();
    pb::ChunkRequest req;
    req.set_protocol_version(version);
    req.set_network("net");
    req.set_chunk_size(64 << 10);
    req.set_from_pod_name("b");
    req.set_from_pod_id(kBId);
    req.set_sha256(std::string(32, 'x'));
    grpc::ClientContext ctx;
    auto reader = n.stub->ReadChunk(&ctx, req);
    pb::ChunkPiece piece;
    EXPECT_FALSE(reader->Read(&piece));
    const grpc::Status read = reader->Finish();
    EXPECT_FALSE(read.ok()) << version;
    EXPECT_NE(read.error_message().find(want), std::string::npos) << read.error_message();
  }
  EXPECT_TRUE(n.exchange(n.envelope("b", kBId)).ok());
}

TEST(PeerBoundary, AnInvalidBatchIsRejectedAndNothingOfItApplied) {
  Node n;
  pb::Envelope e = n.envelope("b", kBId);
  pb::Op* op = e.mutable_body()->mutable_ops()->add_ops();
  op->set_origin(kBId);
  op->set_seq(1);
  to_pb(Hlc{1'700'000'000'000, 0, kBId}, op->mutable_hlc());
  pb::Move* m = op->add_actions()->mutable_move();
  to_pb(Gid{kBId, 1}, m->mutable_entry());
  to_pb(kRootId, m->mutable_parent());
  to_pb(Gid{kBId, 2}, m->mutable_inode());
  m->set_name("");  // every pod's listing would fail
  pb::NewInode* ni = m->mutable_new_inode();
  to_pb(Gid{kBId, 2}, ni->mutable_inode());
  ni->set_type(pb::REGULAR);
  const grpc::Status st = n.exchange(e);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("empty name"), std::string::npos) << st.error_message();
  EXPECT_EQ(n.ns.applied()[kBId], 0u);
  m->set_name("fine");
  EXPECT_TRUE(n.exchange(e).ok());
  EXPECT_EQ(n.ns.applied()[kBId], 1u);
}

TEST(PeerBoundary, APackedBatchIsAppliedAndAHostileOneRejectedUnopened) {
  Node n;
  // 200 creates made by pod b: a batch that travels packed.
  MemKv b_kv;
  int64_t b_now = int64_t{1'700'000'000'000'000'000};
  Namespace b{b_kv, kBId, [&] { return b_now += 1000; }, [](Gid) { return false; }};
  std::string err;
  ASSERT_TRUE(b.init(&err)) << err;
  Attr attr;
  for (int i = 0; i < 200; ++i) ASSERT_EQ(b.make(1, "f" + std::to_string(i), pb::REGULAR, 0644, 0, 0, "", &attr), 0);
  ASSERT_EQ(b.make_durable(), 0);
  pb::Envelope e = n.envelope("b", kBId);
  pb::OpBatch* batch = e.mutable_body()->mutable_ops();
  for (pb::Op& op : b.ops_after(kBId, 0, 512)) *batch->add_ops() = std::move(op);
  const uint64_t ops = static_cast<uint64_t>(batch->ops_size());
  ASSERT_GE(ops, 200u);
  pb::Envelope hostile = e;
  pack_ops(batch);
  ASSERT_FALSE(batch->packed_ops().empty());
  // A frame that claims to unpack to more than a message may hold: refused unopened.
  std::string zeros(kMaxMessageBytes + 1, '\0');
  std::string bomb(ZSTD_compressBound(zeros.size()), '\0');
  bomb.resize(ZSTD_compress(bomb.data(), bomb.size(), zeros.data(), zeros.size(), 1));
  hostile.mutable_body()->mutable_ops()->clear_ops();
  hostile.mutable_body()->mutable_ops()->set_packed_ops(bomb);
  grpc::Status st = n.exchange(hostile);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("unpack to"), std::string::npos) << st.error_message();
  EXPECT_EQ(n.ns.applied()[kBId], 0u);
  ASSERT_TRUE(n.exchange(e).ok());
  EXPECT_EQ(n.ns.applied()[kBId], ops);
  EXPECT_EQ(n.ns.lookup(1, "f199", &attr), 0);
}

TEST(PeerBoundary, JoinsAreValidated) {
  Node n;
  auto join = [&](const std::string& name, uint64_t id, const std::string& role) {
    pb::JoinRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_network("net");
    req.set_chunk_size(64 << 10);
    req.mutable_pod()->set_pod_id(id);
    req.mutable_pod()->set_name(name);
    req.mutable_pod()->set_address("127.0.0.1:1");
    req.mutable_pod()->set_role(role);
    pb::JoinReply reply;
    grpc::ClientContext ctx;
    EXPECT_TRUE(n.stub->Join(&ctx, req, &reply).ok());
    return reply.accepted();
  };
  EXPECT_FALSE(join("../d", 0xd1, "storage"));
  EXPECT_FALSE(join(std::string(65, 'd'), 0xd1, "storage"));
  EXPECT_FALSE(join("d", 0xd1, "boss"));
  EXPECT_FALSE(join("d", 0, "storage"));
  EXPECT_TRUE(join("d", 0xd1, "client"));
  EXPECT_FALSE(join("d", 0xd2, "client"));  // the name is taken
}

TEST(PeerBoundary, APushStoresOnlyAnnouncedChunks) {
  Node n;
  auto push = [&](const std::vector<uint64_t>& chain, const std::string& announced, const std::string& bytes,
                  pb::PushReply* reply) {
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    auto writer = n.stub->PushChunks(&ctx, reply);
    pb::ChunkPiece head;
    pb::PushHeader* h = head.mutable_header();
    h->set_protocol_version(kProtocolVersion);
    h->set_network("net");
    h->set_chunk_size(64 << 10);
    h->set_from_pod_name("b");
    h->set_from_pod_id(kBId);
    for (uint64_t c : chain) h->add_chain(c);
    h->add_expected(announced);
    writer->Write(head);
    pb::ChunkPiece piece;
    piece.set_sha256(ChunkStore::hash(bytes.data(), bytes.size()));
    piece.set_data(bytes);
    piece.set_last(true);
    writer->Write(piece);
    writer->WritesDone();
    return writer->Finish();
  };
  const std::string good(500, 'g'), other(500, 'o');
  pb::PushReply reply;
  ASSERT_TRUE(push({}, ChunkStore::hash(good.data(), good.size()), other, &reply).ok());
  EXPECT_NE(reply.error(), "");
  EXPECT_FALSE(n.chunks.contains(ChunkStore::hash(other.data(), other.size())));
  reply.Clear();
  EXPECT_EQ(push({kSelfId}, ChunkStore::hash(good.data(), good.size()), good, &reply).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // a chain back to the receiver
  reply.Clear();
  ASSERT_TRUE(push({}, ChunkStore::hash(good.data(), good.size()), good, &reply).ok());
  EXPECT_EQ(reply.error(), "");
  EXPECT_TRUE(n.chunks.contains(ChunkStore::hash(good.data(), good.size())));
}

namespace {
std::string blocks_pattern(size_t len, uint32_t seed) {
  std::string s(len, '\0');
  for (size_t i = 0; i < len; ++i) s[i] = static_cast<char>((i * 2654435761u + seed) >> 11);
  return s;
}
std::string plain_sha256(const std::string& data) {
  // The legacy name of a chunk (protocol 5): its bytes' SHA-256, computed by sha256sum.
  wormhole::testing::TempDir t("legacy-name");
  { std::ofstream(t / "f", std::ios::binary) << data; }
  FILE* p = ::popen(("sha256sum " + (t / "f")).c_str(), "r");
  char hex[65] = {};
  const size_t n = std::fread(hex, 1, 64, p);
  ::pclose(p);
  std::string raw;
  for (size_t i = 0; n == 64 && i < 32; ++i)
    raw.push_back(static_cast<char>(std::stoi(std::string(hex + 2 * i, 2), nullptr, 16)));
  return raw;
}
}  // namespace

TEST(PeerBoundary, RangedReadsCarryTheBlockTableAndLegacyChunksHaveNone) {
  Node n(256 << 10);
  const std::string bytes = blocks_pattern(200 << 10, 1);
  std::string sha;
  ASSERT_EQ(n.chunks.put(bytes.data(), bytes.size(), &sha), 0);
  std::string data, table;
  ASSERT_TRUE(n.read_chunk(sha, "b", kBId, &data, 64 << 10, 64 << 10, &table).ok());
  EXPECT_EQ(data, bytes.substr(64 << 10, 64 << 10));
  EXPECT_EQ(table, ChunkStore::block_table(bytes.data(), bytes.size()));
  EXPECT_TRUE(ChunkStore::verify_blocks(sha, table, 1, data.data(), data.size()));
  // A chunk named by its bytes' hash (stored by protocol 5) is served whole only.
  const std::string old = blocks_pattern(150 << 10, 2);
  const std::string legacy = plain_sha256(old);
  ASSERT_EQ(legacy.size(), 32u);
  ASSERT_EQ(n.chunks.put_expected(old.data(), old.size(), legacy), 0);
  data.clear();
  table.clear();
  EXPECT_EQ(n.read_chunk(legacy, "b", kBId, &data, 0, 64 << 10, &table).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  data.clear();
  ASSERT_TRUE(n.read_chunk(legacy, "b", kBId, &data).ok());
  EXPECT_EQ(data, old);
}

namespace {
// Pod "b" as a peer that answers chunk reads with what the test says: the true blocks, or
// blocks with one byte changed, or a table forged to match the changed bytes.
class FakeHolder final : public pb::Peer::Service {
 public:
  enum Mode { kTrue, kFlippedByte, kForgedTable, kCutShort, kLegacy };
  std::atomic<Mode> mode{kTrue};
  std::atomic<int> asked{0};
  std::string bytes;  // the chunk
  // When set: the first answer among the holders sharing it has one byte changed (the flag
  // is taken by that answer), whatever `mode` says.
  std::atomic<int>* lie_once = nullptr;
  grpc::Status ReadChunk(grpc::ServerContext*, const pb::ChunkRequest* req,
                         grpc::ServerWriter<pb::ChunkPiece>* writer) override {
    ++asked;
    if (mode == kLegacy && req->with_table()) return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "legacy");
    std::string data = bytes.substr(req->offset(), req->length() ? req->length() : std::string::npos);
    std::string table = ChunkStore::block_table(bytes.data(), bytes.size());
    const bool lie = lie_once && lie_once->exchange(0) == 1;
    if (mode == kFlippedByte || mode == kForgedTable || lie) data[10] ^= 1;
    if (mode == kForgedTable) {
      std::string changed = bytes;
      changed.replace(req->offset(), data.size(), data);
      table = ChunkStore::block_table(changed.data(), changed.size());
    }
    if (mode == kCutShort) data.resize(data.size() / 2 / ChunkStore::kBlockBytes * ChunkStore::kBlockBytes);
    pb::ChunkPiece piece;
    piece.set_sha256(req->sha256());
    piece.set_offset(req->offset());
    piece.set_data(data);
    if (req->with_table()) piece.set_table(table);
    piece.set_last(true);
    writer->Write(piece);
    return grpc::Status::OK;
  }
};
}  // namespace

// A ranged read verifies each block against the table that names the chunk: a peer sending
// changed bytes, a forged table or fewer blocks than exist is ignored (EIO when no other
// pod has the chunk); the true blocks are returned and kept for the next read.
TEST(PeerData, ARangedReadVerifiesEveryBlock) {
  Node n(1 << 20);
  FakeHolder b;
  b.bytes = blocks_pattern((1 << 20) - 1000, 3);
  const std::string sha = ChunkStore::hash(b.bytes.data(), b.bytes.size());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(n.config.pods[1].listen, grpc::InsecureServerCredentials());
  builder.RegisterService(&b);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server);
  std::string out(100 << 10, '\0');
  // Until a's channel to b connects (it failed while b was not listening yet): block 0.
  for (int i = 0; i < 100 && n.node->read_range(sha, {kBId}, 0, 100, out.data()) != 100; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(out.substr(0, 100), b.bytes.substr(0, 100));
  const uint64_t at = (3 << 16) + 5000;  // across blocks 3 and 4
  for (auto mode : {FakeHolder::kFlippedByte, FakeHolder::kForgedTable, FakeHolder::kCutShort}) {
    b.mode = mode;
    const int asked = b.asked;
    EXPECT_EQ(n.node->read_range(sha, {kBId}, at, out.size(), out.data()), -EIO) << mode;
    EXPECT_GT(b.asked, asked);
  }
  EXPECT_EQ(n.chunks.contains(sha), false);  // nothing stored from a ranged read
  b.mode = FakeHolder::kTrue;
  ASSERT_EQ(n.node->read_range(sha, {kBId}, at, out.size(), out.data()), static_cast<ssize_t>(out.size()));
  EXPECT_EQ(out, b.bytes.substr(at, out.size()));
  // The chunk's last, short block, and a read past the chunk's end.
  const uint64_t tail = b.bytes.size() - 300;
  ASSERT_EQ(n.node->read_range(sha, {kBId}, tail, 1000, out.data()), 300);
  EXPECT_EQ(out.substr(0, 300), b.bytes.substr(tail));
  // Blocks read before come from memory: the holder is not asked again.
  const int asked = b.asked;
  ASSERT_EQ(n.node->read_range(sha, {kBId}, at + 100, 4096, out.data()), 4096);
  EXPECT_EQ(out.substr(0, 4096), b.bytes.substr(at + 100, 4096));
  EXPECT_EQ(b.asked, asked);
  // A legacy chunk: the caller is told to fetch it whole.
  b.mode = FakeHolder::kLegacy;
  EXPECT_EQ(n.node->read_range(std::string(32, 'L'), {kBId}, 0, 4096, out.data()), -ENOTSUP);
  server->Shutdown();
}

// A holder answering with bad bytes is passed over for another: pods b and c both hold the
// chunk, and whichever is asked first sends one byte changed (then both answer truly). A
// ranged read and a whole fetch both end with the true bytes, after asking the second.
TEST(PeerData, ABadAnswerIsPassedOverForAnotherHolder) {
  Node n(1 << 20);
  std::atomic<int> first_lies{1};
  FakeHolder b, c;
  b.bytes = c.bytes = blocks_pattern((1 << 20) - 1000, 5);
  const std::string sha = ChunkStore::hash(b.bytes.data(), b.bytes.size());
  std::vector<std::unique_ptr<grpc::Server>> servers;
  for (auto [holder, pod] : {std::pair{&b, 1}, std::pair{&c, 2}}) {
    holder->lie_once = &first_lies;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(n.config.pods[pod].listen, grpc::InsecureServerCredentials());
    builder.RegisterService(holder);
    servers.push_back(builder.BuildAndStart());
    ASSERT_TRUE(servers.back());
  }
  std::string out(100 << 10, '\0');
  // Until a's channels to both connect (they failed while b and c were not listening yet,
  // and a channel in its reconnect backoff fails calls at once): a read in which one lied
  // and the other answered truly has reached both.
  for (int i = 0; i < 100; ++i) {
    first_lies = 1;
    if (n.node->read_range(sha, {kBId}, 0, 100, out.data()) == 100 && first_lies.load() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  first_lies = 1;
  const int asked_before = b.asked + c.asked;
  const uint64_t at = (5 << 16) + 77;
  ASSERT_EQ(n.node->read_range(sha, {kBId}, at, out.size(), out.data()), static_cast<ssize_t>(out.size()));
  EXPECT_EQ(out, b.bytes.substr(at, out.size()));
  EXPECT_EQ(first_lies.load(), 0) << "the first answer was the bad one";
  EXPECT_GE(b.asked + c.asked - asked_before, 2);
  // The whole chunk: stored only as its true bytes.
  first_lies = 1;
  ASSERT_EQ(n.node->fetch(sha, {kBId}), 0);
  EXPECT_EQ(first_lies.load(), 0);
  ASSERT_TRUE(n.chunks.contains(sha));
  std::string stored(b.bytes.size(), '\0');
  ASSERT_EQ(n.chunks.read(sha, 0, stored.size(), stored.data()), static_cast<ssize_t>(stored.size()));
  EXPECT_EQ(stored, b.bytes);
  for (auto& s : servers) s->Shutdown();
}

TEST(PeerBoundary, WholeVersionsAreServedToMembersOnlyAndBounded) {
  Node n;
  Attr f;
  ASSERT_EQ(n.ns.make(1, "f", pb::REGULAR, 0644, 0, 0, "", &f), 0);
  const std::string text = "whole content";
  pb::ChunkRef ref;
  ref.set_sha256(ChunkStore::hash(text.data(), text.size()));
  ref.set_length(static_cast<uint32_t>(text.size()));
  ref.set_inline_data(text);
  Gid v;
  ASSERT_EQ(n.ns.commit(f.id, Gid{}, text.size(), {ref}, 1, {kSelfId}, false, &v), 0);
  auto ask = [&](const std::string& from, uint64_t id, std::vector<Gid> versions, pb::VersionsReply* reply) {
    auto req = n.versions_request<pb::VersionsRequest>(from, id, versions);
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    return n.stub->GetVersions(&ctx, req, reply);
  };
  pb::VersionsReply reply;
  EXPECT_EQ(ask("mallory", 0xe1, {v}, &reply).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(reply.versions_size(), 0);
  EXPECT_EQ(ask("b", kBId, std::vector<Gid>(17, v), &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(ask("b", kBId, {v, Gid{kSelfId, 999999}}, &reply).ok());
  ASSERT_EQ(reply.versions_size(), 1);  // an unknown version is left out
  EXPECT_EQ(from_pb(reply.versions(0).version()), v);
  EXPECT_EQ(reply.versions(0).size(), text.size());
  ASSERT_EQ(reply.versions(0).chunks_size(), 1);
  EXPECT_EQ(reply.versions(0).chunks(0).inline_data(), text);
}

namespace {
// Pod "b" answering GetVersions with the whole record of one version: first for another
// size (a lie or a mix-up: not taken), then truly.
class WholeVersionHolder final : public pb::Peer::Service {
 public:
  std::atomic<int> asked{0};
  std::atomic<bool> wrong_size{true};
  Gid version;
  pb::VersionRecord whole;
  // Answers exchanges as an empty, reachable pod b (a pod that fails them is down, and a
  // down pod is not asked).
  grpc::Status Exchange(grpc::ServerContext*, const pb::Envelope*, pb::EnvelopeReply* reply) override {
    reply->set_pod_name("b");
    reply->set_pod_id(kBId);
    return grpc::Status::OK;
  }
  grpc::Status GetVersions(grpc::ServerContext*, const pb::VersionsRequest* req, pb::VersionsReply* reply) override {
    ++asked;
    for (const pb::Gid& g : req->versions()) {
      if (from_pb(g) != version) continue;
      pb::VersionsReply::Whole* w = reply->add_versions();
      *w->mutable_version() = g;
      w->set_size(whole.size() + (wrong_size.exchange(false) ? 1 : 0));
      *w->mutable_chunks() = whole.chunks();
    }
    return grpc::Status::OK;
  }
};
}  // namespace

// The asking side of whole versions: a delta that arrived over a base this pod lacks makes
// an incomplete version (reads EIO, never garbage); the pod asks its writer for the whole
// chunk list, refuses an answer for another size, and completes it from a true one.
TEST(PeerData, AnIncompleteVersionIsCompletedFromItsWriter) {
  Node n;
  // Pod b's namespace makes the ops: a file, a first version, a second as a delta over it.
  MemKv kv_b;
  Namespace b(kv_b, kBId, [] { return int64_t{1'700'000'000'000'000'000}; }, [](Gid) { return false; });
  std::string err;
  ASSERT_TRUE(b.init(&err)) << err;
  Attr f;
  ASSERT_EQ(b.make(1, "f", pb::REGULAR, 0644, 0, 0, "", &f), 0);
  auto inline_ref = [](uint64_t index, const std::string& text) {
    pb::ChunkRef ref;
    ref.set_index(index);
    ref.set_sha256(ChunkStore::hash(text.data(), text.size()));
    ref.set_length(static_cast<uint32_t>(text.size()));
    ref.set_inline_data(text);
    return ref;
  };
  // Two spans; the second version changes only the second, so its op is a delta that needs
  // the first version's first span.
  const uint64_t span = n.config.network.chunk_size, size = span + 3;
  Gid v1, v2;
  ASSERT_EQ(b.commit(f.id, Gid{}, size, {inline_ref(0, "one"), inline_ref(1, "abc")}, 1, {kBId}, false, &v1, 2), 0);
  ASSERT_EQ(b.commit(f.id, v1, size, {inline_ref(0, "one"), inline_ref(1, "xyz")}, 2, {kBId}, false, &v2, 2), 0);
  ASSERT_EQ(b.make_durable(), 0);
  std::vector<pb::Op> ops = b.ops_after(kBId, 0, 100);
  ASSERT_EQ(ops.size(), 3u);
  // Pod a gets the create and the second commit, whose base (the first) it never saw.
  to_pb(Gid{kBId, 999999}, ops[2].mutable_actions(0)->mutable_commit()->mutable_base_version());
  ASSERT_EQ(n.ns.apply_remote(ops[0]), 0);
  ops[2].set_seq(ops[0].seq() + 1);  // as if the first commit never existed
  ASSERT_EQ(n.ns.apply_remote(ops[2]), 0);
  ASSERT_EQ(n.ns.incomplete_versions(16).size(), 1u);
  WholeVersionHolder holder;
  holder.version = v2;
  ASSERT_TRUE(b.get_version(v2, &holder.whole));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(n.config.pods[1].listen, grpc::InsecureServerCredentials());
  builder.RegisterService(&holder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server);
  ASSERT_TRUE(n.exchange(n.envelope("b", kBId)).ok());  // a learns b's id
  // complete_versions runs every 2 s: the first answer (another size) is refused, the next
  // completes the version.
  for (int i = 0; i < 150 && !n.ns.incomplete_versions(16).empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(n.ns.incomplete_versions(16).empty());
  EXPECT_GE(holder.asked.load(), 2) << "the answer for another size was taken";
  pb::VersionRecord rec;
  ASSERT_TRUE(n.ns.get_version(v2, &rec));
  EXPECT_FALSE(rec.incomplete());
  ASSERT_EQ(rec.chunks_size(), 2);
  EXPECT_EQ(rec.chunks(0).inline_data(), "one");
  EXPECT_EQ(rec.chunks(1).inline_data(), "xyz");
  server->Shutdown();
}

// ConfirmHolding: members only, bounded; "held" only for a version this pod names
// itself a holder of in its own metadata, with every chunk stored.
TEST(PeerBoundary, HoldingIsConfirmedOnlyForVersionsHeldWithTheirChunks) {
  Node n;
  auto commit = [&](const std::string& name, const std::string& data, std::vector<uint64_t> holders, bool store) {
    Attr f;
    EXPECT_EQ(n.ns.make(1, name, pb::REGULAR, 0644, 0, 0, "", &f), 0);
    pb::ChunkRef ref;
    std::string sha;
    if (store) EXPECT_EQ(n.chunks.put(data.data(), data.size(), &sha), 0);
    else sha = ChunkStore::hash(data.data(), data.size());
    ref.set_sha256(sha);
    ref.set_length(static_cast<uint32_t>(data.size()));
    Gid v;
    EXPECT_EQ(n.ns.commit(f.id, Gid{}, data.size(), {ref}, 1, holders, false, &v), 0);
    return v;
  };
  const std::string big(20000, 'h');  // beyond the inline size: a chunk file
  const Gid held = commit("held", big, {kSelfId, kBId}, true);
  const Gid elsewhere = commit("elsewhere", big + "e", {kBId}, true);    // stored, not held
  const Gid missing = commit("missing", big + "m", {kSelfId, kBId}, false);  // held, chunk gone
  auto ask = [&](const std::string& from, uint64_t id, std::vector<Gid> versions, pb::ConfirmHoldingReply* reply) {
    auto req = n.versions_request<pb::ConfirmHoldingRequest>(from, id, versions);
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    return n.stub->ConfirmHolding(&ctx, req, reply);
  };
  pb::ConfirmHoldingReply reply;
  EXPECT_EQ(ask("mallory", 0xe1, {held}, &reply).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // PeerNode::kMaxConfirmVersions is 1024.
  EXPECT_EQ(ask("b", kBId, std::vector<Gid>(1025, held), &reply).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  reply.Clear();
  ASSERT_TRUE(ask("b", kBId, {held, elsewhere, missing, Gid{kSelfId, 999999}}, &reply).ok());
  ASSERT_EQ(reply.held_size(), 4);
  EXPECT_TRUE(reply.held(0));
  EXPECT_FALSE(reply.held(1));
  EXPECT_FALSE(reply.held(2));
  EXPECT_FALSE(reply.held(3));
}

// ---- mutual TLS (network.tls) -------------------------------------------------------------

namespace {

struct KeyCert {
  std::string key, cert;
};

// A certificate for pod `name` (`id`) of `network`, signed by the CA `ca` (key, cert).
KeyCert issue(const KeyCert& ca, const std::string& name, uint64_t id, int64_t valid_from_s = -60,
              int64_t valid_for_s = 3600, const std::string& network = "net") {
  KeyCert out;
  std::string csr, error;
  certs::Identity who;
  EXPECT_TRUE(certs::create_key(&out.key, &error)) << error;
  EXPECT_TRUE(certs::make_csr(out.key, certs::Identity{network, name, id, ""}, &csr, &error)) << error;
  EXPECT_TRUE(certs::sign_csr(ca.key, ca.cert, csr, network, valid_from_s, valid_for_s, &out.cert, &who, &error))
      << error;
  return out;
}

// A stub to pod a over TLS trusting `ca_cert`, presenting `client` (none if null).
std::unique_ptr<pb::Peer::Stub> tls_stub(const Node& n, const std::string& ca_cert, const KeyCert* client) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ca_cert;
  if (client) {
    o.pem_private_key = client->key;
    o.pem_cert_chain = client->cert;
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride(certs::kPodDnsName);
  return pb::Peer::NewStub(grpc::CreateCustomChannel(n.config.pods[0].listen, grpc::SslCredentials(o), args));
}

// Node a with TLS: it made the network CA (first pod of the file) on start.
struct TlsNode : Node {
  KeyCert ca;
  TlsNode() : Node(64 << 10, true) {
    TlsFiles files(dir.path());
    std::string error;
    EXPECT_TRUE(files.load(&error)) << error;
    EXPECT_TRUE(files.is_ca());
    ca = KeyCert{files.ca_key, files.ca_cert};
  }
  grpc::Status exchange_with(pb::Peer::Stub& s, const pb::Envelope& e) {
    pb::EnvelopeReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    return s.Exchange(&ctx, e, &reply);
  }
  grpc::Status read_with(pb::Peer::Stub& s, const std::string& sha, const std::string& from, uint64_t id,
                         std::string* data) {
    pb::ChunkRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_network("net");
    req.set_chunk_size(config.network.chunk_size);
    req.set_from_pod_name(from);
    req.set_from_pod_id(id);
    req.set_sha256(sha);
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    auto reader = s.ReadChunk(&ctx, req);
    pb::ChunkPiece piece;
    while (reader->Read(&piece)) *data += piece.data();
    return reader->Finish();
  }
  grpc::Status join_with(pb::Peer::Stub& s, const std::string& name, uint64_t id, const std::string& csr,
                         pb::JoinReply* reply, bool claims = false) {
    pb::JoinRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_network("net");
    req.set_chunk_size(config.network.chunk_size);
    req.mutable_pod()->set_pod_id(id);
    req.mutable_pod()->set_name(name);
    req.mutable_pod()->set_address("127.0.0.1:1");
    req.mutable_pod()->set_role("storage");
    if (claims) {  // what a joining pod may not say of itself
      req.mutable_pod()->set_ca(true);
      req.mutable_pod()->set_draining(true);
      req.mutable_pod()->set_forgotten(true);
    }
    req.set_csr(csr);
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    return s.Join(&ctx, req, reply);
  }
};

}  // namespace

TEST(PeerTls, OnlyMembersWithTheNetworksCertificatesAreServed) {
  TlsNode n;
  const std::string bytes(1000, 's');
  std::string sha, data;
  ASSERT_EQ(n.chunks.put(bytes.data(), bytes.size(), &sha), 0);
  // A member with its certificate: served.
  const KeyCert b = issue(n.ca, "b", kBId);
  auto member = tls_stub(n, n.ca.cert, &b);
  ASSERT_TRUE(n.exchange_with(*member, n.envelope("b", kBId)).ok());
  ASSERT_TRUE(n.read_with(*member, sha, "b", kBId, &data).ok());
  EXPECT_EQ(data, bytes);
  // The same certificate claiming to be another pod: refused, whatever the request says.
  data.clear();
  const grpc::Status claimed = n.read_with(*member, sha, "c", 0xc1, &data);
  EXPECT_EQ(claimed.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(claimed.error_message().find("certificate is pod \"b\""), std::string::npos) << claimed.error_message();
  EXPECT_FALSE(n.exchange_with(*member, n.envelope("c", 0xc1)).ok());
  // TLS without a certificate: refused by every handler.
  auto anonymous = tls_stub(n, n.ca.cert, nullptr);
  EXPECT_EQ(n.read_with(*anonymous, sha, "b", kBId, &data).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  const grpc::Status none = n.exchange_with(*anonymous, n.envelope("b", kBId));
  EXPECT_NE(none.error_message().find("no certificate"), std::string::npos) << none.error_message();
  // Plaintext, a certificate of another CA, an expired or not yet valid one of this CA:
  // no connection at all.
  auto plain = pb::Peer::NewStub(grpc::CreateChannel(n.config.pods[0].listen, grpc::InsecureChannelCredentials()));
  EXPECT_FALSE(n.read_with(*plain, sha, "b", kBId, &data).ok());
  KeyCert other_ca;
  std::string error;
  ASSERT_TRUE(certs::create_ca("net", 3600, &other_ca.key, &other_ca.cert, &error));
  const KeyCert forged = issue(other_ca, "b", kBId);
  auto foreign = tls_stub(n, n.ca.cert, &forged);
  EXPECT_FALSE(n.read_with(*foreign, sha, "b", kBId, &data).ok());
  const KeyCert expired = issue(n.ca, "b", kBId, -7200, 3600);
  auto stale = tls_stub(n, n.ca.cert, &expired);
  EXPECT_FALSE(n.read_with(*stale, sha, "b", kBId, &data).ok());
  const KeyCert future = issue(n.ca, "b", kBId, 3600, 3600);
  auto early = tls_stub(n, n.ca.cert, &future);
  EXPECT_FALSE(n.read_with(*early, sha, "b", kBId, &data).ok());
  // A client that does not trust a's CA does not talk to it either.
  auto distrustful = tls_stub(n, other_ca.cert, &forged);
  EXPECT_FALSE(n.exchange_with(*distrustful, n.envelope("b", kBId)).ok());
  EXPECT_TRUE(data.empty());
  // A pod forgotten (its certificate revoked with it): refused from then on.
  pb::Member gone;
  gone.set_pod_id(kBId);
  gone.set_name("b");
  gone.set_address(n.config.pods[1].listen);
  gone.set_role("storage");
  gone.set_forgotten(true);
  ASSERT_EQ(n.ns.record_member(gone), 0);
  grpc::Status revoked;
  for (int i = 0; i < 100; ++i) {  // the replication loop adopts the member list
    data.clear();
    revoked = n.read_with(*member, sha, "b", kBId, &data);
    if (!revoked.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(revoked.error_message().find("forgotten"), std::string::npos) << revoked.error_message();
  pb::JoinReply again;
  std::string csr, key;
  ASSERT_TRUE(certs::create_key(&key, &error));
  ASSERT_TRUE(certs::make_csr(key, certs::Identity{"net", "b", kBId, ""}, &csr, &error));
  ASSERT_TRUE(n.join_with(*anonymous, "b", kBId, csr, &again).ok());
  EXPECT_FALSE(again.accepted());
  EXPECT_TRUE(again.certificate().empty());
}

TEST(PeerTls, AJoiningPodGetsACertificateForItsOwnKeyAndBadRequestsAreRefused) {
  TlsNode n;
  auto anonymous = tls_stub(n, n.ca.cert, nullptr);
  std::string key, csr, error;
  ASSERT_TRUE(certs::create_key(&key, &error));
  ASSERT_TRUE(certs::make_csr(key, certs::Identity{"net", "d", 0xd1, ""}, &csr, &error));
  pb::JoinReply reply;
  ASSERT_TRUE(n.join_with(*anonymous, "d", 0xd1, csr, &reply, /*claims=*/true).ok());
  ASSERT_TRUE(reply.accepted()) << reply.reason();
  bool recorded = false;
  for (const pb::Member& m : n.ns.members())
    if (m.pod_id() == 0xd1) {
      recorded = true;
      EXPECT_FALSE(m.ca() || m.draining() || m.forgotten()) << "a joining pod's claims were recorded";
    }
  EXPECT_TRUE(recorded);
  EXPECT_TRUE(certs::verify_cert(n.ca.cert, reply.certificate(), &error)) << error;
  EXPECT_TRUE(certs::key_matches_cert(key, reply.certificate()));
  EXPECT_EQ(certs::cert_fingerprint(reply.ca_certificate()), certs::cert_fingerprint(n.ca.cert));
  certs::Identity who;
  ASSERT_TRUE(certs::read_cert(reply.certificate(), &who, &error));
  EXPECT_EQ(who.pod_name, "d");
  EXPECT_EQ(who.pod_id, 0xd1u);
  // The certificate works: d is a member now.
  const KeyCert d{key, reply.certificate()};
  auto member = tls_stub(n, n.ca.cert, &d);
  EXPECT_TRUE(n.exchange_with(*member, n.envelope("d", 0xd1)).ok());
  // Refused, and nothing signed: a CSR for another network, for another pod than the
  // request describes, garbage, truncated, huge; a pod taking a known pod's name.
  std::string foreign, other_pod;
  ASSERT_TRUE(certs::make_csr(key, certs::Identity{"elsewhere", "e", 0xe1, ""}, &foreign, &error));
  ASSERT_TRUE(certs::make_csr(key, certs::Identity{"net", "f", 0xf1, ""}, &other_pod, &error));
  const std::vector<std::pair<std::string, std::string>> bad{
      {"e", foreign},
      {"e", other_pod},
      {"e", "garbage"},
      {"e", csr.substr(0, csr.size() / 2)},
      {"e", std::string(1 << 20, 'A')},
      {"d", csr},  // d's name with another id below
  };
  for (const auto& [name, request] : bad) {
    pb::JoinReply r;
    const grpc::Status st = n.join_with(*anonymous, name, name == "d" ? 0xd2 : 0xe1, request, &r);
    EXPECT_FALSE(st.ok() && r.accepted()) << name << " " << r.reason();
    EXPECT_TRUE(r.certificate().empty());
  }
  // Taking over d (its id is no secret): with another key under its name and id, or its id
  // under another name. Renewing d's certificate for its own key is fine.
  std::string thief_key, thief_csr, renamed_csr;
  ASSERT_TRUE(certs::create_key(&thief_key, &error));
  ASSERT_TRUE(certs::make_csr(thief_key, certs::Identity{"net", "d", 0xd1, ""}, &thief_csr, &error));
  ASSERT_TRUE(certs::make_csr(thief_key, certs::Identity{"net", "evil", 0xd1, ""}, &renamed_csr, &error));
  for (const auto& [name, request] : std::vector<std::pair<std::string, std::string>>{{"d", thief_csr},
                                                                                       {"evil", renamed_csr}}) {
    pb::JoinReply r;
    const grpc::Status st = n.join_with(*anonymous, name, 0xd1, request, &r);
    EXPECT_TRUE(st.ok() && !r.accepted()) << name << ": " << st.error_message();
    EXPECT_TRUE(r.certificate().empty()) << name << " took over d";
  }
  pb::JoinReply renewed;
  ASSERT_TRUE(n.join_with(*anonymous, "d", 0xd1, csr, &renewed).ok());
  EXPECT_TRUE(renewed.accepted()) << renewed.reason();
  for (const pb::Member& m : n.ns.members())
    if (m.pod_id() == 0xd1) {
      EXPECT_EQ(m.name(), "d");
      EXPECT_EQ(m.key_fingerprint(), who.key_fingerprint);
    }
  // A pod asking without a CSR and without a certificate is not let in either.
  pb::JoinReply r;
  ASSERT_TRUE(n.join_with(*anonymous, "g", 0x61, "", &r).ok());
  EXPECT_FALSE(r.accepted());
}

TEST(PeerTls, GarbageOnTheTlsPortIsHarmlessAndTheCaIsShownOverTls13) {
  TlsNode n;
  const std::string address = n.config.pods[0].listen;
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  // Garbage, a truncated ClientHello, a huge record header: the server closes, and serves on.
  const std::vector<std::string> junk{std::string(4096, '\x17'), std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc", 9),
                                      std::string("\x16\x03\x03\xff\xff", 5) + std::string(1000, 'x'),
                                      "GET / HTTP/1.1\r\n\r\n"};
  for (const std::string& bytes : junk) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    (void)!::write(fd, bytes.data(), bytes.size());
    ::close(fd);
  }
  std::vector<std::string> chain;
  std::string error;
  ASSERT_TRUE(certs::fetch_server_chain(address, 3000, &chain, &error)) << error;  // TLS 1.3 only
  bool shows_ca = false;
  for (const std::string& pem : chain) shows_ca |= certs::cert_fingerprint(pem) == certs::cert_fingerprint(n.ca.cert);
  EXPECT_TRUE(shows_ca);
  const KeyCert b = issue(n.ca, "b", kBId);
  auto member = tls_stub(n, n.ca.cert, &b);
  EXPECT_TRUE(n.exchange_with(*member, n.envelope("b", kBId)).ok());
}

// The join handler's parsers (the request, its member, its CSR, its token) take mutated
// encodings of an honest request without crashing, signing or recording anything odd.
TEST(PeerTls, MutatedJoinRequestsAreRefusedWithoutHarm) {
  TlsNode n;
  n.config.network.join = "token";  // the token parser is on the path too
  auto anonymous = tls_stub(n, n.ca.cert, nullptr);
  std::string key, csr, error;
  ASSERT_TRUE(certs::create_key(&key, &error));
  ASSERT_TRUE(certs::make_csr(key, certs::Identity{"net", "z", 0x21, ""}, &csr, &error));
  pb::JoinRequest honest;
  honest.set_protocol_version(kProtocolVersion);
  honest.set_network("net");
  honest.set_chunk_size(n.config.network.chunk_size);
  honest.mutable_pod()->set_pod_id(0x21);
  honest.mutable_pod()->set_name("z");
  honest.mutable_pod()->set_address("127.0.0.1:1");
  honest.mutable_pod()->set_role("storage");
  honest.set_csr(csr);
  honest.set_token("wh1-00000000-" + std::string(32, '0') + "-" + std::string(64, '0'));
  const std::string encoded = honest.SerializeAsString();
  std::mt19937_64 rng(42);
  int sent = 0;
  for (int i = 0; i < 600; ++i) {
    std::string bytes = encoded;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % bytes.size();
      switch (rng() % 6) {  // mostly flipped bytes: they keep the encoding parseable more often
        case 0: bytes.erase(at, 1 + rng() % 16); break;
        case 1: bytes.insert(at, std::string(1 + rng() % 64, static_cast<char>(rng()))); break;
        default: bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8))); break;
      }
      if (bytes.empty()) bytes = "x";
    }
    pb::JoinRequest req;
    if (!req.ParseFromString(bytes)) continue;
    pb::JoinReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(call_deadline());
    const grpc::Status st = anonymous->Join(&ctx, req, &reply);
    ++sent;
    EXPECT_TRUE(!st.ok() || !reply.accepted()) << "a mutated join was accepted";
    EXPECT_TRUE(reply.certificate().empty());
  }
  EXPECT_GT(sent, 100);
  // The pod serves on.
  const KeyCert b = issue(n.ca, "b", kBId);
  auto member = tls_stub(n, n.ca.cert, &b);
  EXPECT_TRUE(n.exchange_with(*member, n.envelope("b", kBId)).ok());
}

// With network.admins, a drain or forget recorded without an admin's signature is not acted
// on by any pod (the op itself replicates as any other); with one, it is.
TEST(PeerBoundary, ForgetsCountOnlyWithAnAdminsSignature) {
  std::string key, pub, error;
  ASSERT_TRUE(certs::create_admin_key(&key, &pub, &error)) << error;
  Node n(64 << 10, false, {"alice:" + pub});
  ASSERT_TRUE(n.exchange(n.envelope("b", kBId)).ok());
  pb::Member m;
  m.set_pod_id(kBId);
  m.set_name("b");
  m.set_address(n.config.pods[1].listen);
  m.set_role("storage");
  m.set_forgotten(true);
  ASSERT_EQ(n.ns.record_member(m), 0);  // as a member without the admin's key could
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // two adoption rounds
  EXPECT_TRUE(n.exchange(n.envelope("b", kBId)).ok()) << "an unsigned forget took effect";
  // Signed by alice, for another pod: still not.
  const uint64_t t = 1'700'000'000'000;
  std::string sig;
  ASSERT_TRUE(certs::sign_message(key, admin_statement("net", "forget", "c", t), &sig, &error));
  m.mutable_authorization()->set_admin("alice");
  m.mutable_authorization()->set_time_ms(t);
  m.mutable_authorization()->set_signature(sig);
  ASSERT_EQ(n.ns.record_member(m), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE(n.exchange(n.envelope("b", kBId)).ok()) << "a forget signed for another pod took effect";
  // Signed for b (its age does not matter here: the pod that took the command checked it).
  ASSERT_TRUE(certs::sign_message(key, admin_statement("net", "forget", "b", t), &sig, &error));
  m.mutable_authorization()->set_signature(sig);
  ASSERT_EQ(n.ns.record_member(m), 0);
  grpc::Status st;
  for (int i = 0; i < 100 && (st = n.exchange(n.envelope("b", kBId))).ok(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(st.error_message().find("forgotten"), std::string::npos) << st.error_message();
}
