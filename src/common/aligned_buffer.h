// ThreadAlignedBuffer: scratch memory for O_DIRECT writes of buffers that are
// not aligned (the disk chunk store's and the node tier's direct stores).
#ifndef TRAINCACHE_COMMON_ALIGNED_BUFFER_H_
#define TRAINCACHE_COMMON_ALIGNED_BUFFER_H_

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace traincache {

// At least `size` bytes aligned to `align` (a power of two; `size` a
// multiple of it): one buffer per thread, reused and grown as needed, since
// touching fresh memory for every chunk is part of what direct writes save.
// Valid until this thread's next call. nullptr if it cannot be allocated (the
// caller writes buffered instead).
inline char* ThreadAlignedBuffer(size_t size, size_t align) {
  thread_local std::unique_ptr<char, decltype(&std::free)> buffer(nullptr, &std::free);
  thread_local size_t buffer_size = 0;
  thread_local size_t buffer_align = 0;
  if (buffer_size < size || buffer_align < align) {
    buffer.reset(static_cast<char*>(std::aligned_alloc(align, size)));
    buffer_size = buffer != nullptr ? size : 0;
    buffer_align = buffer != nullptr ? align : 0;
  }
  return buffer.get();
}

}  // namespace traincache

#endif  // TRAINCACHE_COMMON_ALIGNED_BUFFER_H_
