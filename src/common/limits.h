// Limits that every layer agrees on (the FUSE adapter, the write path, peer validation).
#pragma once
#include <cstdint>

namespace wormhole {

// Largest file size: 1 PiB. Chunk indices then stay below 2^30 even with 1 MiB chunks, and
// offset + length never overflows 64 bits. A write or truncate past it is EFBIG; a version
// claiming more is invalid.
inline constexpr uint64_t kMaxFileSize = uint64_t{1} << 50;

}  // namespace wormhole
