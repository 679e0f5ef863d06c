#include "net/op_packing.h"

#include <zstd.h>

namespace wormhole {

void pack_ops(pb::OpBatch* batch) {
  if (batch->ops_size() == 0 || !batch->packed_ops().empty()) return;
  pb::OpBatch ops_only;
  ops_only.mutable_ops()->Swap(batch->mutable_ops());
  const std::string plain = ops_only.SerializeAsString();
  const auto keep_plain = [&] { batch->mutable_ops()->Swap(ops_only.mutable_ops()); };
  if (plain.size() < kPackOpsFromBytes) return keep_plain();
  std::string packed(ZSTD_compressBound(plain.size()), '\0');
  const size_t n = ZSTD_compress(packed.data(), packed.size(), plain.data(), plain.size(), 1);
  if (ZSTD_isError(n) || n >= plain.size()) return keep_plain();
  packed.resize(n);
  batch->set_packed_ops(std::move(packed));
}

bool unpack_ops(pb::OpBatch* batch, size_t max_bytes, std::string* why) {
  const std::string& packed = batch->packed_ops();
  if (packed.empty()) return true;
  if (batch->ops_size() > 0) {
    *why = "a batch with both packed and plain ops";
    return false;
  }
  // The frame says how much it unpacks to (pack_ops writes it); a frame that does not say,
  // or says more than the bound, is not decompressed at all.
  const unsigned long long claimed = ZSTD_getFrameContentSize(packed.data(), packed.size());
  if (claimed == ZSTD_CONTENTSIZE_ERROR || claimed == ZSTD_CONTENTSIZE_UNKNOWN) {
    *why = "packed ops that are not one zstd frame of known size";
    return false;
  }
  if (claimed > max_bytes) {
    *why = "packed ops that unpack to " + std::to_string(claimed) + " bytes (at most " + std::to_string(max_bytes) + ")";
    return false;
  }
  std::string plain(static_cast<size_t>(claimed), '\0');
  const size_t n = ZSTD_decompress(plain.data(), plain.size(), packed.data(), packed.size());
  if (ZSTD_isError(n) || n != plain.size()) {
    *why = "packed ops that do not unpack";
    return false;
  }
  pb::OpBatch ops_only;
  if (!ops_only.ParseFromString(plain) || !ops_only.packed_ops().empty() || ops_only.has_sender_progress() ||
      ops_only.snapshot_needed() || ops_only.snapshot_optional()) {
    *why = "packed ops that are not a list of ops";
    return false;
  }
  batch->mutable_ops()->Swap(ops_only.mutable_ops());
  batch->clear_packed_ops();
  return true;
}

}  // namespace wormhole
