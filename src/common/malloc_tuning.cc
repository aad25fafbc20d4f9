#include "common/malloc_tuning.h"

#include <malloc.h>

namespace traincache {

void TuneMallocForChunkBuffers() {
  // Buffers up to 64 MiB come from the heap (chunks are at most 16 MiB), and
  // freed memory stays with the process for reuse instead of being trimmed.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

void KeepChunkBuffersInOneArena() { mallopt(M_ARENA_MAX, 1); }

}  // namespace traincache
