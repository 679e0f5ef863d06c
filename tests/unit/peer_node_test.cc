// The gRPC boundary of a pod (PeerNode): every RPC refuses senders that are not members,
// identities that do not match, and malformed content, before acting on anything.
// One real PeerNode on 127.0.0.1, called through a plain gRPC stub as any peer could.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chunks/chunk_store.h"
#include "common/pb_ids.h"
#include "net/peer_node.h"
#include "proto/wormhole.grpc.pb.h"
#include "store/mem_kv.h"
#include "temp_dir.h"

using namespace wormhole;

namespace {

constexpr uint64_t kSelfId = 0xa1, kBId = 0xb1;

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

// Pod "a" of network "net" (pods a, b, c; b and c are not running).
struct Node {
  wormhole::testing::TempDir dir{"peer-node"};
  Config config;
  MemKv kv;
  Namespace ns{kv, kSelfId, [] { return int64_t{1'700'000'000'000'000'000}; }, [](Gid) { return false; }};
  ChunkStore chunks{dir / "chunks"};
  KernelCache kernel;
  std::unique_ptr<PeerNode> node;
  std::unique_ptr<pb::Peer::Stub> stub;
  Node() {
    config.network.name = "net";
    config.network.chunk_size = 64 << 10;
    config.pods = {pod("a", dir.path()), pod("b", dir.path()), pod("c", dir.path())};
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
    EXPECT_TRUE(chunks.init(&err)) << err;
    node = std::make_unique<PeerNode>(config, config.pods[0], kSelfId, ns, chunks, kernel);
    EXPECT_TRUE(node->start(&err)) << err;
    stub = pb::Peer::NewStub(grpc::CreateChannel(config.pods[0].listen, grpc::InsecureChannelCredentials()));
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
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return stub->Exchange(&ctx, e, reply ? reply : &ignored);
  }
  // Reads a whole chunk as `from`; the status, and the bytes in *data.
  grpc::Status read_chunk(const std::string& sha, const std::string& from, uint64_t id, std::string* data,
                          uint64_t offset = 0, uint64_t length = 0) {
    pb::ChunkRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_network("net");
    req.set_chunk_size(64 << 10);
    req.set_from_pod_name(from);
    req.set_from_pod_id(id);
    req.set_sha256(sha);
    req.set_offset(offset);
    req.set_length(length);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto reader = stub->ReadChunk(&ctx, req);
    pb::ChunkPiece piece;
    while (reader->Read(&piece)) *data += piece.data();
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
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
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
