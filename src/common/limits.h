// Limits shared by the modules that must agree on them. Plain constants.
#pragma once
#include <cstdint>

namespace wormhole {

// Largest file size (1 PiB). Local writes beyond it fail with EFBIG, and a version from a
// peer claiming more is rejected: every pod must be able to hold the chunk list of any
// version it accepts, and offsets computed from sizes must never overflow.
inline constexpr uint64_t kMaxFileSize = uint64_t{1} << 50;

// Most pieces (ChunkRef) one chunk span of a version may have. A writer consolidates a span
// long before (OpenFile::kMaxSealPieces, 48); the bound keeps a peer's version list, and the
// work of reading one span, proportionate.
inline constexpr uint64_t kMaxPiecesPerSpan = 64;

}  // namespace wormhole
