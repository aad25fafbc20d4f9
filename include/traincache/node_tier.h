// NodeTier: the node's NVMe cache of file contents (DESIGN.md, "Node tier").
//
// Each cached content — (scope, inode, version): immutable, since a new
// version is a new content — is one sparse image file in the tier folder, with
// chunk i of the content at bytes [i*chunk_size, ...) and a per-chunk presence
// map. A fully present image is what a later change hands to the kernel for
// FUSE passthrough (ImagePath). Capacity is in bytes with high/low watermarks:
// crossing the high one evicts least recently used images (or chunk ranges)
// down to the low one. The index (which images exist, which chunks they hold,
// recency) is persisted, so a restarted daemon is warm at once; a chunk read
// for the first time after a restart is checked against its id, and a chunk
// that does not match (or a missing image range) reads as absent, so the
// caller fetches it again. The tier holds only clean data: dirty data lives in
// the write staging area, never here.
//
// Errors: INTERNAL naming the path for I/O errors; RESOURCE_EXHAUSTED when
// nothing more can be evicted to make room. Thread-safe.
#ifndef TRAINCACHE_NODE_TIER_H_
#define TRAINCACHE_NODE_TIER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache {

// One immutable content: a file's bytes at one version.
struct ContentKey {
  Scope scope;
  InodeId ino = 0;
  uint64_t version = 0;
  bool operator==(const ContentKey&) const = default;
};

struct TierStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;  // Bytes of present chunks.
  uint64_t images = 0;
  uint64_t hits = 0;        // Reads served from the tier.
  uint64_t hit_bytes = 0;   // Bytes those reads returned.
  uint64_t misses = 0;      // Reads that found the chunk absent.
  uint64_t evicted_bytes = 0;
  uint64_t corrupt_chunks = 0;  // Chunks that failed verification and were dropped.
};

// A complete image lent out for passthrough: the open file and the pin,
// both given back when it is destroyed.
class ImageLease {
 public:
  virtual ~ImageLease() = default;
  // The image, open (owned by the lease).
  virtual int fd() const = 0;
};

class NodeTier {
 public:
  virtual ~NodeTier() = default;

  // Copies bytes [offset, offset+n) of chunk `index` of content `key` (whose
  // chunk map is `map`) into `out`, if the chunk is present. Returns false if
  // it is absent (the caller fetches it and calls Store). Counts a hit or miss
  // and refreshes the image's recency. Bytes past the stored chunk's end (a
  // short chunk) read as zeros; a hole reads as zeros and is always present.
  // INVALID_ARGUMENT if the range is not inside [0, map.chunks[index].length).
  virtual absl::StatusOr<bool> Read(const ContentKey& key, const ChunkMap& map, uint64_t index,
                                    uint64_t offset, size_t n, char* out) = 0;
  // Stores the bytes of chunk `index` of `key` (the caller verified them
  // against map.chunks[index].id): the whole chunk as the server holds it; the
  // tier keeps its first map.chunks[index].length bytes. Evicts to make room;
  // never evicts `key`'s own image while storing into it. OK without writing
  // if the chunk is already present.
  virtual absl::Status Store(const ContentKey& key, const ChunkMap& map, uint64_t index,
                             std::string_view bytes) = 0;
  // True if chunk `index` of `key` is present (a hole always is). Cheap: it
  // neither verifies nor counts a hit or miss (the fetcher asks it before a
  // readahead, so that a present chunk is not fetched again).
  virtual bool Contains(const ContentKey& key, const ChunkMap& map, uint64_t index) = 0;
  // True if every non-hole chunk of `key` is present. A chunk not yet checked
  // since a restart is checked here (and dropped if corrupt), so a true answer
  // means the image reads as the file: what passthrough needs.
  virtual bool Complete(const ContentKey& key, const ChunkMap& map) = 0;
  // The image file of `key` (it may not exist or be partial).
  virtual std::string ImagePath(const ContentKey& key) const = 0;
  // For FUSE passthrough: if `key` is complete (as Complete) and has an image
  // file, opens the image and pins it: it is not evicted while the lease
  // lives. DropOtherVersions still unlinks it (the lease's open file keeps
  // its bytes for the readers of that version); DropScope empties it too, so
  // nothing of a deleted scope stays readable. NOT_FOUND if it is incomplete
  // or has no image file (a file of holes only); INTERNAL naming the path if
  // the open fails.
  virtual absl::StatusOr<std::unique_ptr<ImageLease>> LeaseImage(const ContentKey& key,
                                                                 const ChunkMap& map) = 0;
  // The image of `key` may have been changed from outside (a writer's
  // shared mmap of a passthrough backing file): its chunks are verified
  // again before they are read or the image is lent out; a chunk that no
  // longer matches its id is dropped and fetched again. No-op if absent.
  virtual void Distrust(const ContentKey& key) = 0;
  // Drops every image of `scope` (the scope was deleted).
  virtual absl::Status DropScope(const Scope& scope) = 0;
  // Drops images of `ino` whose version is not `keep_version` (superseded).
  virtual absl::Status DropOtherVersions(const Scope& scope, InodeId ino,
                                         uint64_t keep_version) = 0;
  virtual TierStats Stats() const = 0;
};

struct DiskTierOptions {
  std::string dir;                    // The tier folder (node NVMe).
  uint64_t capacity_bytes = 0;        // 0: 90% of the filesystem holding `dir`.
  double high_watermark = 0.95;       // Evict when used > high * capacity ...
  double low_watermark = 0.85;        // ... down to low * capacity.
  // Store writes chunks with O_DIRECT (where the file system takes it): the
  // bytes go to the disk without passing through, and growing, the page
  // cache. The node's reader gets them from the fetcher and the kernel keeps
  // them in the mount's own page cache, so caching them a second time in
  // RAM (the image's page cache) is waste, and on this project's VMs the
  // buffered copy into fresh page-cache pages was the node's biggest CPU cost
  // on a tier miss (~2 s per GB).
  bool direct_writes = true;
};

// Opens (creating) the disk tier in options.dir, loading its index.
absl::StatusOr<std::unique_ptr<NodeTier>> OpenDiskTier(const DiskTierOptions& options);

// The in-memory twin (for tests): same contract, same LRU and watermarks
// (high 0.95, low 0.85 of `capacity_bytes`), no persistence. ImagePath
// returns a name no file has and LeaseImage is always NOT_FOUND. Never fails.
std::unique_ptr<NodeTier> NewMemoryTier(uint64_t capacity_bytes);

}  // namespace traincache

#endif  // TRAINCACHE_NODE_TIER_H_
