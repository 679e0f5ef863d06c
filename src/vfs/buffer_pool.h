// BufferPool: reusable chunk-sized byte buffers for the write-back area. Reusing them
// avoids, per 4 MiB chunk written, an mmap, a thousand page faults and a zero fill.
// Holds at most `max_buffers` idle buffers. Thread-safe.
#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace wormhole {

// An allocator whose resize() leaves new bytes uninitialised: callers fill them.
template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <typename U>
  UninitAllocator(const UninitAllocator<U>&) {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialise: no zeroing for char
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using ByteBuffer = std::vector<char, UninitAllocator<char>>;

class BufferPool {
 public:
  BufferPool(size_t buffer_bytes, size_t max_buffers) : buffer_bytes_(buffer_bytes), max_buffers_(max_buffers) {}
  // Makes `buf` able to hold buffer_bytes without reallocating, reusing an idle buffer.
  // Keeps the current contents.
  void reserve_full(ByteBuffer& buf);
  // Takes back a buffer that is no longer needed (its contents are dropped).
  void give_back(ByteBuffer&& buf);

 private:
  const size_t buffer_bytes_, max_buffers_;
  std::mutex mu_;
  std::vector<ByteBuffer> idle_;
};

}  // namespace wormhole
