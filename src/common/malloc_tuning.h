// Process-wide allocator settings for programs that move multi-MiB chunk
// buffers. With glibc's defaults every 4 MiB buffer is a fresh mmap whose
// pages fault in on first touch and go back to the kernel on free; on the
// virtual machines we run on a page fault is expensive, and measured chunk get
// throughput tripled (90 -> 350 MB/s on one stream) once buffers were reused
// from the heap. Call once at the start of main, before any thread starts.
#ifndef TRAINCACHE_COMMON_MALLOC_TUNING_H_
#define TRAINCACHE_COMMON_MALLOC_TUNING_H_

namespace traincache {

void TuneMallocForChunkBuffers();

}  // namespace traincache

#endif  // TRAINCACHE_COMMON_MALLOC_TUNING_H_
