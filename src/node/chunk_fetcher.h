// ChunkFetcher: the node's read path below the page cache — node tier first,
// then the server. One fetch per chunk however many readers ask at once
// (single-flight); bytes from the server are verified against the chunk id
// before they enter the tier (a mismatch is DATA_LOSS and nothing is stored);
// sequential readers get the next chunks fetched ahead of them.
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
};

class ChunkFetcher {
 public:
  struct Options {
    size_t threads = 8;           // background fetch (readahead) threads
    uint32_t readahead_chunks = 4;  // chunks fetched ahead of a sequential reader
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

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace traincache::node

#endif  // TRAINCACHE_NODE_CHUNK_FETCHER_H_
