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

// Also makes every thread allocate from one heap (glibc M_ARENA_MAX 1). With
// per-thread arenas, chunk buffers allocated on one thread and freed on
// another (the node's fetch threads, gRPC's, FUSE's) keep landing on fresh
// pages: in the node's tier-miss reads the protobuf copy of each received
// chunk and gRPC's socket buffers page-faulted on ~20% of their pages, and
// one arena cut the node's CPU per GB by ~20%. Costs malloc lock contention,
// which is small when the big allocations are chunk-sized. Call after
// TuneMallocForChunkBuffers, before any thread starts.
void KeepChunkBuffersInOneArena();

}  // namespace traincache

#endif  // TRAINCACHE_COMMON_MALLOC_TUNING_H_
