// ChunkFetcher: the node's read path below the page cache — recently
// fetched chunks in memory, then the node tier, then the server. One fetch
// per chunk however many readers ask at once (single-flight); bytes from the
// server are verified against the chunk id before anyone sees them or they
// enter the tier (a mismatch is DATA_LOSS and nothing is stored or kept);
// sequential readers get the next chunks fetched ahead of them, in a window
// that grows while they stay sequential.
//
// Memory: verified chunks stay in memory (up to Options::memory_bytes, least
// recently used out first), so that a reader following its readahead copies
// them from there: the tier writes them with O_DIRECT, so reading them back
// from it would be a disk read. Keyed by (scope, chunk id): content
// addressed, so never stale, and never shared across scopes.
//
// Errors: what the ClusterClient or NodeTier returned (UNAVAILABLE after the
// client's outage timeout, DATA_LOSS for bytes that do not match their id).
// Thread-safe.
#ifndef TRAINCACHE_NODE_CHUNK_FETCHER_H_
#define TRAINCACHE_NODE_CHUNK_FETCHER_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "traincache/cluster_client.h"
#include "traincache/node_tier.h"

namespace traincache::node {

struct FetcherStats {
  uint64_t fetches = 0;         // GetChunk calls made
  uint64_t fetched_bytes = 0;   // bytes received from the server
  uint64_t coalesced = 0;       // reads that waited on another reader's fetch
  uint64_t prefetches = 0;      // chunks fetched ahead
  uint64_t verify_failures = 0; // server bytes that did not match their id
  uint64_t memory_hits = 0;     // chunk reads served from the recent chunks in memory
  uint64_t memory_bytes = 0;    // bytes of chunks held in memory now
};

class ChunkFetcher {
 public:
  struct Options {
    size_t threads = 8;           // background fetch (readahead) threads
    uint32_t readahead_chunks = 4;  // chunks fetched ahead of a sequential reader at first
    // The window doubles each time a sequential reader enters a new chunk, up
    // to this many chunks, and to at most half of `memory_bytes` shared by
    // the readers active in the last second.
    uint32_t max_readahead_chunks = 16;
    uint64_t memory_bytes = 256ull << 20;  // verified chunks kept in memory
  };
  ChunkFetcher(ClusterClient* client, NodeTier* tier, Options options);
  ~ChunkFetcher();  // waits for background fetches

  // Copies [offset, offset+n) of content `key` (chunk map `map`) into `out`,
  // clipped at map.size; holes and short chunks read as zeros. Returns the
  // bytes copied.
  absl::StatusOr<size_t> Read(const ContentKey& key, const ChunkMap& map, uint64_t offset,
                              size_t n, char* out);
  // Fetches chunks [first, first+count) into the tier in the background.
  void Prefetch(const ContentKey& key, const ChunkMap& map, uint64_t first, uint64_t count);
  FetcherStats Stats() const;
  // Forgets the chunks of `scope` held in memory (the scope was deleted).
  void DropScope(const Scope& scope);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace traincache::node

#endif  // TRAINCACHE_NODE_CHUNK_FETCHER_H_
