// Validation of peer input (meta/op_validation.h): every op an honest pod makes passes, and
// each way a peer's op or message can be malformed or hostile is rejected with a reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include <zstd.h>

#include "chunks/chunk_store.h"
#include "common/limits.h"
#include "common/pb_ids.h"
#include "meta/namespace.h"
#include "meta/op_validation.h"
#include "net/op_packing.h"
#include "store/mem_kv.h"

using namespace wormhole;

namespace {

constexpr uint64_t kPod = 42;
constexpr int64_t kNowNs = 1'700'000'000'000'000'000;
constexpr uint64_t kNowMs = kNowNs / 1000000;

OpLimits limits() {
  OpLimits l;
  l.now_ms = kNowMs;
  l.max_skew_ms = 600000;
  l.chunk_size_bytes = 64 << 10;
  return l;
}

// Every kind of op an honest pod makes, taken from its op log.
struct HonestOps {
  MemKv kv;
  int64_t now = kNowNs;
  Namespace ns{kv, kPod, [this] { return now += 1000; }, [](Gid) { return false; }};
  std::vector<pb::Op> ops;
  HonestOps() {
    std::string err;
    EXPECT_TRUE(ns.init(&err)) << err;
    Attr d, f, l, s;
    EXPECT_EQ(ns.make(1, "dir", pb::DIRECTORY, 0755, 1, 1, "", &d), 0);
    EXPECT_EQ(ns.make(d.ino, "file", pb::REGULAR, 04755, 1, 1, "", &f), 0);
    EXPECT_EQ(ns.make(d.ino, "link", pb::SYMLINK, 0777, 1, 1, std::string(4095, 't'), &s), 0);
    EXPECT_EQ(ns.make(1, std::string(255, 'n'), pb::FIFO, 0600, 1, 1, "", &l), 0);
    EXPECT_EQ(ns.link(f.ino, 1, "hard", &l), 0);
    EXPECT_EQ(ns.rename(d.ino, "file", 1, "moved", 0), 0);
    pb::SetAttr ch;
    ch.set_mask(0x3f);
    ch.set_mode(07777);
    EXPECT_EQ(ns.setattr(f.ino, ch, &l), 0);
    EXPECT_EQ(ns.setxattr(f.ino, std::string(255, 'x'), std::string(65536, 'v'), 0), 0);
    EXPECT_EQ(ns.removexattr(f.ino, std::string(255, 'x')), 0);
    // A version of 3 chunk spans: a stored chunk, a hole (not listed), an inline tail.
    std::vector<pb::ChunkRef> chunks(2);
    chunks[0].set_sha256(std::string(32, 'h'));
    chunks[0].set_length(64 << 10);
    const std::string tail(100, 'z');
    chunks[1].set_index(2);
    chunks[1].set_sha256(ChunkStore::hash(tail.data(), tail.size()));
    chunks[1].set_length(100);
    chunks[1].set_inline_data(tail);
    Gid v;
    EXPECT_EQ(ns.commit(f.id, Gid{}, (128 << 10) + 100, chunks, now, {kPod, 7}, false, &v), 0);
    pb::Member m;
    m.set_pod_id(7);
    m.set_name("pod-b.1_x");
    m.set_address("127.0.0.1:7001");
    m.set_role("client");
    EXPECT_EQ(ns.record_member(m), 0);
    EXPECT_EQ(ns.unlink(1, "moved"), 0);
    EXPECT_EQ(ns.rmdir(d.ino, "link"), ENOTDIR);
    EXPECT_EQ(ns.unlink(d.ino, "link"), 0);
    EXPECT_EQ(ns.rmdir(1, "dir"), 0);
    EXPECT_EQ(ns.make_durable(), 0);  // only durable ops leave a pod
    ops = ns.ops_after(kPod, 0, 1000);
  }
  // The first op with an action of this kind.
  pb::Op with(pb::Action::KindCase kind, const std::function<bool(const pb::Action&)>& also = nullptr) const {
    for (const pb::Op& op : ops)
      for (const pb::Action& a : op.actions())
        if (a.kind_case() == kind && (!also || also(a))) return op;
    ADD_FAILURE() << "no such op";
    return {};
  }
  pb::Op mkdir_op() const {
    return with(pb::Action::kMove, [](const pb::Action& a) {
      return a.move().has_new_inode() && a.move().new_inode().type() == pb::DIRECTORY;
    });
  }
  pb::Op create_op() const {
    return with(pb::Action::kMove, [](const pb::Action& a) {
      return a.move().has_new_inode() && a.move().new_inode().type() == pb::REGULAR;
    });
  }
  pb::Op symlink_op() const {
    return with(pb::Action::kMove, [](const pb::Action& a) {
      return a.move().has_new_inode() && a.move().new_inode().type() == pb::SYMLINK;
    });
  }
};

const HonestOps& honest() {
  static HonestOps h;
  return h;
}

// The first action of `op` of the kind of `a`, mutable.
pb::Action* first(pb::Op& op, pb::Action::KindCase kind) {
  for (auto& a : *op.mutable_actions())
    if (a.kind_case() == kind) return &a;
  return nullptr;
}
pb::Move* move_of(pb::Op& op) { return first(op, pb::Action::kMove)->mutable_move(); }
pb::CommitVersion* commit_of(pb::Op& op) { return first(op, pb::Action::kCommit)->mutable_commit(); }

// Expects `op` to be rejected with a reason containing `reason`.
void expect_rejected(const pb::Op& op, const std::string& reason, OpLimits l = limits()) {
  std::string why;
  EXPECT_FALSE(validate_op(op, l, &why)) << "accepted; expected: " << reason;
  EXPECT_NE(why.find(reason), std::string::npos) << "reason \"" << why << "\", expected \"" << reason << "\"";
}

}  // namespace

TEST(OpValidation, EveryOpAnHonestPodMakesIsValid) {
  const auto& ops = honest().ops;
  ASSERT_GE(ops.size(), 12u);
  for (const pb::Op& op : ops) {
    std::string why;
    EXPECT_TRUE(validate_op(op, limits(), &why)) << why << "\n" << op.ShortDebugString();
  }
  pb::PeerMessage msg;
  for (const pb::Op& op : ops) *msg.mutable_ops()->add_ops() = op;
  (*msg.mutable_ops()->mutable_sender_progress()->mutable_applied())[kPod] = ops.size();
  std::string why;
  EXPECT_TRUE(validate_peer_message(msg, limits(), &why)) << why;
}

TEST(OpValidation, BadNamesAreRejected) {
  for (const std::string& bad : {std::string(), std::string("a/b"), std::string("/"), std::string("a\0b", 3),
                                 std::string(256, 'n'), std::string("."), std::string("..")}) {
    pb::Op op = honest().create_op();
    move_of(op)->set_name(bad);
    expect_rejected(op, "name");
  }
  std::string why;
  EXPECT_TRUE(valid_entry_name(std::string(255, 'n'), &why));
  EXPECT_TRUE(valid_entry_name("...", &why));
}

TEST(OpValidation, MovesOfTheRootTheTrashOrUnderThemselvesAreRejected) {
  pb::Op op = honest().create_op();
  to_pb(kRootId, move_of(op)->mutable_entry());
  expect_rejected(op, "move entry: reserved id");
  op = honest().create_op();
  to_pb(kTrashId, move_of(op)->mutable_inode());
  expect_rejected(op, "move inode: reserved id");
  op = honest().create_op();
  to_pb(Gid{0, 9}, move_of(op)->mutable_parent());
  expect_rejected(op, "reserved parent");
  op = honest().create_op();
  move_of(op)->clear_parent();
  expect_rejected(op, "missing parent");
  op = honest().mkdir_op();
  *move_of(op)->mutable_parent() = move_of(op)->entry();
  expect_rejected(op, "entry under itself");
}

TEST(OpValidation, ADirectoryMustBeItsOwnEntryAndNothingElseIs) {
  // A directory reachable through an entry of another id would escape the cycle check.
  pb::Op op = honest().mkdir_op();
  to_pb(Gid{kPod, 999999}, move_of(op)->mutable_entry());
  expect_rejected(op, "a directory's entry must be the directory");
  op = honest().create_op();
  *move_of(op)->mutable_entry() = move_of(op)->inode();
  expect_rejected(op, "a non-directory's entry must differ");
}

TEST(OpValidation, NewInodesAreChecked) {
  pb::Op op = honest().create_op();
  move_of(op)->mutable_new_inode()->set_type(pb::FILE_TYPE_UNSPECIFIED);
  expect_rejected(op, "invalid type");
  op = honest().create_op();
  move_of(op)->mutable_new_inode()->set_type(static_cast<pb::FileType>(17));
  expect_rejected(op, "invalid type");
  op = honest().create_op();
  move_of(op)->mutable_new_inode()->set_mode(0100644);
  expect_rejected(op, "mode has bits beyond");
  op = honest().create_op();
  to_pb(Gid{kPod, 123456}, move_of(op)->mutable_new_inode()->mutable_inode());
  expect_rejected(op, "differs from the move's inode");
  op = honest().create_op();
  to_pb(Gid{7, 5}, move_of(op)->mutable_new_inode()->mutable_inode());
  to_pb(Gid{7, 5}, move_of(op)->mutable_inode());
  expect_rejected(op, "not minted by the op's origin");
  op = honest().create_op();
  move_of(op)->mutable_new_inode()->set_symlink_target("x");
  expect_rejected(op, "symlink target on a non-symlink");
  op = honest().symlink_op();
  move_of(op)->mutable_new_inode()->set_symlink_target(std::string(4096, 't'));
  expect_rejected(op, "symlink target of 4096 bytes");
  op = honest().symlink_op();
  move_of(op)->mutable_new_inode()->clear_symlink_target();
  expect_rejected(op, "symlink target of 0 bytes");
}

TEST(OpValidation, StampsSequenceAndOriginAreChecked) {
  pb::Op op = honest().create_op();
  op.mutable_hlc()->set_pod(7);
  expect_rejected(op, "stamped by another pod");
  op = honest().create_op();
  op.set_origin(0);
  expect_rejected(op, "origin 0");
  op = honest().create_op();
  op.set_seq(0);
  expect_rejected(op, "sequence 0");
  op = honest().create_op();
  op.mutable_hlc()->set_counter(UINT32_MAX);
  expect_rejected(op, "counter near wrapping");
  // The clock may be ahead by the configured skew, not more.
  OpLimits l = limits();
  l.now_ms = honest().create_op().hlc().wall_ms() - l.max_skew_ms;
  std::string why;
  EXPECT_TRUE(validate_op(honest().create_op(), l, &why)) << why;
  l.now_ms -= 1;
  expect_rejected(honest().create_op(), "ahead of this pod's", l);
  op = honest().create_op();
  op.mutable_hlc()->set_wall_ms(UINT64_MAX);
  expect_rejected(op, "ahead of this pod's");
}

TEST(OpValidation, ActionsAndDependenciesAreBounded) {
  pb::Op op = honest().create_op();
  op.add_actions();
  expect_rejected(op, "empty action");
  op = honest().create_op();
  const pb::Action a = op.actions(0);
  for (size_t i = 0; i < kMaxActionsPerOp; ++i) *op.add_actions() = a;
  expect_rejected(op, "too many actions");
  op = honest().create_op();
  for (uint64_t p = 1; p <= kMaxPods + 1; ++p) (*op.mutable_deps())[p + 100] = 1;
  expect_rejected(op, "too many dependencies");
  op = honest().create_op();
  (*op.mutable_deps())[kPod] = 1;
  expect_rejected(op, "dependency on pod 0 or on its own origin");
}

TEST(OpValidation, AttributesAndXattrsAreChecked) {
  pb::Op op = honest().with(pb::Action::kSetAttr);
  first(op, pb::Action::kSetAttr)->mutable_set_attr()->set_mask(1u << 6);
  expect_rejected(op, "unknown attribute bits");
  op = honest().with(pb::Action::kSetAttr);
  first(op, pb::Action::kSetAttr)->mutable_set_attr()->set_mode(010000);
  expect_rejected(op, "mode has bits beyond");
  op = honest().with(pb::Action::kSetAttr);
  to_pb(kTrashId, first(op, pb::Action::kSetAttr)->mutable_set_attr()->mutable_inode());
  expect_rejected(op, "reserved id");
  for (const std::string& name : {std::string(), std::string(256, 'x'), std::string("a\0b", 3)}) {
    op = honest().with(pb::Action::kSetXattr);
    first(op, pb::Action::kSetXattr)->mutable_set_xattr()->set_name(name);
    expect_rejected(op, "xattr: name");
  }
  op = honest().with(pb::Action::kSetXattr, [](const pb::Action& x) { return !x.set_xattr().remove(); });
  first(op, pb::Action::kSetXattr)->mutable_set_xattr()->set_value(std::string(65537, 'v'));
  expect_rejected(op, "value of 65537 bytes");
  op = honest().with(pb::Action::kSetXattr, [](const pb::Action& x) { return x.set_xattr().remove(); });
  first(op, pb::Action::kSetXattr)->mutable_set_xattr()->set_value("v");
  expect_rejected(op, "a removal with a value");
}

TEST(OpValidation, VersionsAreChecked) {
  auto commit = [] { return honest().with(pb::Action::kCommit); };
  pb::Op op = commit();
  commit_of(op)->set_size(kMaxFileSize + 1);
  expect_rejected(op, "beyond the largest file");
  op = commit();
  commit_of(op)->set_size(64 << 10);  // 1 span, 2 chunks
  expect_rejected(op, "beyond the end of the file");
  op = commit();
  commit_of(op)->mutable_chunks(1)->set_index(0);
  expect_rejected(op, "pieces of chunk 0 overlap or are not sorted");
  op = commit();
  {
    // Pieces: chunk 0 as two pieces of one file is valid; overlapping or misplaced ones not.
    pb::CommitVersion* c = commit_of(op);
    pb::ChunkRef second = c->chunks(0);
    c->mutable_chunks(0)->set_length(1000);
    second.set_span_offset(1000);
    second.set_file_offset(1000);
    second.set_length((64 << 10) - 1000);
    *c->mutable_chunks()->Add() = second;
    std::rotate(c->mutable_chunks()->begin() + 1, c->mutable_chunks()->end() - 1, c->mutable_chunks()->end());
    std::string why;
    EXPECT_TRUE(validate_op(op, limits(), &why)) << why;
    pb::Op overlap = op;
    commit_of(overlap)->mutable_chunks(1)->set_span_offset(999);
    expect_rejected(overlap, "pieces of chunk 0 overlap or are not sorted");
    pb::Op past_span = op;
    commit_of(past_span)->mutable_chunks(1)->set_span_offset(1001);
    expect_rejected(past_span, "piece beyond its span");
    pb::Op past_file = op;
    commit_of(past_file)->mutable_chunks(1)->set_file_offset(1001);
    expect_rejected(past_file, "piece beyond a chunk file's size");
  }
  op = commit();
  commit_of(op)->mutable_chunks(1)->set_file_offset(5);
  expect_rejected(op, "inline piece with a file offset");
  op = commit();
  {
    pb::CommitVersion* c = commit_of(op);
    pb::ChunkRef piece = c->chunks(0);
    piece.set_length(100);
    google::protobuf::RepeatedPtrField<pb::ChunkRef> list;
    for (uint32_t i = 0; i <= kMaxPiecesPerSpan; ++i) {
      piece.set_span_offset(i * 100);
      *list.Add() = piece;
    }
    for (int i = 1; i < c->chunks_size(); ++i) *list.Add() = c->chunks(i);
    *c->mutable_chunks() = list;
  }
  expect_rejected(op, "too many pieces in chunk 0");
  op = commit();
  commit_of(op)->set_size((128 << 10) + 50);  // the tail's span shrinks to 50 bytes
  expect_rejected(op, "piece beyond its span");
  op = commit();
  commit_of(op)->set_size(128 << 10);  // spans 0 and 1 only: the chunk at index 2 is beyond it
  expect_rejected(op, "beyond the end of the file");
  op = commit();
  commit_of(op)->mutable_chunks(0)->set_sha256(std::string(31, 'h'));
  expect_rejected(op, "hash of 31 bytes");
  op = commit();
  commit_of(op)->mutable_chunks(0)->set_length((64 << 10) + 1);
  expect_rejected(op, "piece beyond its span");
  op = commit();
  commit_of(op)->mutable_chunks(1)->set_length(101);  // the tail's span is 100 bytes
  expect_rejected(op, "piece beyond its span");
  op = commit();
  commit_of(op)->mutable_chunks(0)->set_length(0);
  expect_rejected(op, "stored chunk of no bytes");
  op = commit();
  commit_of(op)->mutable_chunks(1)->clear_sha256();  // a hole is not listed: no empty hashes
  expect_rejected(op, "hash of 0 bytes");
  op = commit();
  commit_of(op)->mutable_chunks(1)->set_inline_data(std::string(99, 'z'));
  expect_rejected(op, "inline bytes differ from its length");
  op = commit();
  commit_of(op)->mutable_chunks(1)->set_inline_data(std::string(100, 'y'));
  expect_rejected(op, "do not match the hash");
  op = commit();
  {
    const std::string big(8193, 'b');
    pb::ChunkRef* c = commit_of(op)->mutable_chunks(0);
    c->set_sha256(ChunkStore::hash(big.data(), big.size()));
    c->set_length(8193);
    c->set_inline_data(big);
  }
  expect_rejected(op, "inline bytes beyond 8 KiB");
  op = commit();
  to_pb(Gid{7, 1}, commit_of(op)->mutable_version());  // another pod's id
  expect_rejected(op, "not minted by the op's origin");
  op = commit();
  *commit_of(op)->mutable_base_version() = commit_of(op)->version();
  expect_rejected(op, "based on itself");
  op = commit();
  to_pb(kRootId, commit_of(op)->mutable_inode());
  expect_rejected(op, "commit inode: reserved id");
  op = commit();
  commit_of(op)->add_holders(kPod);
  expect_rejected(op, "holder 0 or named twice");
  op = commit();
  commit_of(op)->add_holders(0);
  expect_rejected(op, "holder 0 or named twice");
  op = commit();
  for (uint64_t h = 1000; h < 1000 + kMaxPods; ++h) commit_of(op)->add_holders(h);
  expect_rejected(op, "too many holders");
  op = commit();
  for (size_t i = 0; i <= kMaxLiveEntries; ++i) to_pb(Gid{kPod, 1000 + i}, commit_of(op)->add_live_entries());
  expect_rejected(op, "too many live entries");
  op = commit();
  commit_of(op)->mutable_conflict()->set_name("a/b");
  expect_rejected(op, "conflict name");
  op = commit();
  commit_of(op)->mutable_conflict()->set_writer("../evil");
  expect_rejected(op, "invalid writer name");
}

TEST(OpValidation, MembersAreChecked) {
  auto member = [] { return honest().with(pb::Action::kMember); };
  auto m = [](pb::Op& op) { return first(op, pb::Action::kMember)->mutable_member(); };
  pb::Op op = member();
  m(op)->set_pod_id(0);
  expect_rejected(op, "pod id 0");
  for (const std::string& name : {std::string(), std::string("a/b"), std::string(65, 'p'), std::string("é")}) {
    op = member();
    m(op)->set_name(name);
    expect_rejected(op, "invalid name");
  }
  op = member();
  m(op)->set_address(std::string(256, 'a'));
  expect_rejected(op, "invalid address");
  op = member();
  m(op)->set_role("boss");
  expect_rejected(op, "role \"boss\"");
}

TEST(OpValidation, MessagesAreBounded) {
  pb::PeerMessage msg;
  for (uint64_t p = 1; p <= kMaxPods + 1; ++p) (*msg.mutable_sync_request()->mutable_applied())[p] = 1;
  std::string why;
  EXPECT_FALSE(validate_peer_message(msg, limits(), &why));
  EXPECT_NE(why.find("too many pods"), std::string::npos) << why;
  msg.Clear();
  (*msg.mutable_sync_request()->mutable_applied())[0] = 1;
  EXPECT_FALSE(validate_peer_message(msg, limits(), &why));
  msg.Clear();
  for (size_t i = 0; i <= kMaxOpsPerBatch; ++i) *msg.mutable_ops()->add_ops() = honest().ops[0];
  EXPECT_FALSE(validate_peer_message(msg, limits(), &why));
  EXPECT_NE(why.find("too many ops"), std::string::npos) << why;
  msg.Clear();
  *msg.mutable_ops()->add_ops() = honest().ops[0];
  msg.mutable_ops()->set_snapshot_needed(true);
  EXPECT_FALSE(validate_peer_message(msg, limits(), &why));
  msg.Clear();
  (*msg.mutable_ops()->mutable_sender_progress()->mutable_applied())[0] = 5;
  EXPECT_FALSE(validate_peer_message(msg, limits(), &why));
  // One bad op condemns the batch.
  msg.Clear();
  for (const pb::Op& op : honest().ops) *msg.mutable_ops()->add_ops() = op;
  move_of(*msg.mutable_ops()->mutable_ops(0))->set_name("a/b");
  EXPECT_FALSE(validate_peer_message(msg, limits(), &why));
}

// ---- op batches on the wire (net/op_packing.h) -----------------------------------------

namespace {

// A batch of `count` copies of every honest op: what a busy pod pushes.
pb::OpBatch big_batch(size_t rounds) {
  pb::OpBatch batch;
  for (size_t i = 0; i < rounds; ++i)
    for (const pb::Op& op : honest().ops) *batch.add_ops() = op;
  (*batch.mutable_sender_progress()->mutable_applied())[kPod] = 7;
  return batch;
}

std::string zstd_frame(const std::string& plain, bool with_size) {
  if (with_size) {
    std::string out(ZSTD_compressBound(plain.size()), '\0');
    out.resize(ZSTD_compress(out.data(), out.size(), plain.data(), plain.size(), 1));
    return out;
  }
  // A frame that does not say how much it unpacks to (allowed by the format).
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  std::string out(ZSTD_compressBound(plain.size()) + 64, '\0');
  ZSTD_inBuffer in{plain.data(), plain.size(), 0};
  ZSTD_outBuffer o{out.data(), out.size(), 0};
  EXPECT_EQ(ZSTD_compressStream2(cctx, &o, &in, ZSTD_e_end), 0u);
  ZSTD_freeCCtx(cctx);
  out.resize(o.pos);
  return out;
}

}  // namespace

TEST(OpPacking, ABigBatchTravelsPackedAndUnpacksToTheSameOps) {
  const pb::OpBatch original = big_batch(20);
  pb::OpBatch batch = original;
  pack_ops(&batch);
  EXPECT_EQ(batch.ops_size(), 0);
  ASSERT_FALSE(batch.packed_ops().empty());
  EXPECT_LT(batch.ByteSizeLong() * 2, original.ByteSizeLong()) << "ops should pack to well under half";
  EXPECT_EQ(batch.sender_progress().applied().at(kPod), 7u);  // the rest of the batch stays as it is
  std::string why;
  pb::PeerMessage packed_message;
  *packed_message.mutable_ops() = batch;
  EXPECT_FALSE(validate_peer_message(packed_message, limits(), &why)) << "packed ops must be unpacked first";
  ASSERT_TRUE(unpack_ops(&batch, 64 << 20, &why)) << why;
  EXPECT_TRUE(batch.packed_ops().empty());
  EXPECT_EQ(batch.SerializeAsString(), original.SerializeAsString());
  *packed_message.mutable_ops() = batch;
  EXPECT_TRUE(validate_peer_message(packed_message, limits(), &why)) << why;
}

TEST(OpPacking, ASmallBatchStaysPlain) {
  pb::OpBatch batch;
  *batch.add_ops() = honest().ops[0];
  ASSERT_LT(batch.ByteSizeLong(), kPackOpsFromBytes);
  const std::string before = batch.SerializeAsString();
  pack_ops(&batch);
  EXPECT_EQ(batch.SerializeAsString(), before);
  std::string why;
  EXPECT_TRUE(unpack_ops(&batch, 64 << 20, &why));  // nothing packed: unchanged
  EXPECT_EQ(batch.SerializeAsString(), before);
}

TEST(OpPacking, HostilePackedOpsAreRejectedAndChangeNothing) {
  pb::OpBatch packed = big_batch(20);
  const size_t plain_bytes = packed.ByteSizeLong();
  pack_ops(&packed);
  std::string why;
  auto rejected = [&](pb::OpBatch batch, const std::string& expect) {
    const std::string before = batch.SerializeAsString();
    why.clear();
    const bool ok = unpack_ops(&batch, 64 << 20, &why);
    EXPECT_EQ(batch.SerializeAsString(), before) << expect;
    return !ok && why.find(expect) != std::string::npos;
  };
  // More than the bound: not decompressed at all (a decompression bomb of zeros).
  pb::OpBatch bomb;
  bomb.set_packed_ops(zstd_frame(std::string(65 << 20, '\0'), true));
  EXPECT_TRUE(rejected(bomb, "unpack to")) << why;
  pb::OpBatch small_bound = packed;
  EXPECT_FALSE(unpack_ops(&small_bound, plain_bytes / 2, &why));
  // Not a frame; a frame of unknown size; a cut frame; a frame of something else.
  pb::OpBatch garbage;
  garbage.set_packed_ops("not zstd at all");
  EXPECT_TRUE(rejected(garbage, "zstd frame")) << why;
  pb::OpBatch streamed;
  streamed.set_packed_ops(zstd_frame(honest().ops[0].SerializeAsString(), false));
  EXPECT_TRUE(rejected(streamed, "zstd frame")) << why;
  pb::OpBatch cut = packed;
  cut.set_packed_ops(packed.packed_ops().substr(0, packed.packed_ops().size() - 8));
  EXPECT_TRUE(rejected(cut, "do not unpack")) << why;
  pb::OpBatch other;
  other.set_packed_ops(zstd_frame(std::string(5000, '\xff'), true));
  EXPECT_TRUE(rejected(other, "not a list of ops")) << why;
  pb::OpBatch nested;
  pb::OpBatch inner;
  inner.set_packed_ops("x");
  nested.set_packed_ops(zstd_frame(inner.SerializeAsString(), true));
  EXPECT_TRUE(rejected(nested, "not a list of ops")) << why;
  // Packed and plain ops at once.
  pb::OpBatch both = packed;
  *both.add_ops() = honest().ops[0];
  EXPECT_TRUE(rejected(both, "both")) << why;
}
