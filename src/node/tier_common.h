// Helpers shared by the NodeTier implementations (memory_tier.cc,
// disk_tier.cc): the image name of a content and the argument checks every
// tier makes the same way. Internal to src/node. Pure functions, thread-safe.
#ifndef TRAINCACHE_NODE_TIER_COMMON_H_
#define TRAINCACHE_NODE_TIER_COMMON_H_

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "absl/status/status.h"
#include "traincache/node_tier.h"

namespace traincache::node_internal {

// "<kind>/<scope id>/<ino>.<version>": unique per content, and sorted so that
// every version of one inode is one contiguous range of an ordered map.
inline std::string ImageName(const ContentKey& key) {
  return fmt::format("{}/{}/{}.{}", key.scope.kind_name(), key.scope.id(), key.ino, key.version);
}

// The prefix shared by the names of every version of `ino`.
inline std::string InodePrefix(const Scope& scope, InodeId ino) {
  return fmt::format("{}/{}/{}.", scope.kind_name(), scope.id(), ino);
}

// The prefix shared by the names of every image of `scope`.
inline std::string ScopePrefix(const Scope& scope) {
  return fmt::format("{}/{}/", scope.kind_name(), scope.id());
}

// INVALID_ARGUMENT unless `index` names a chunk of `map` and [offset,
// offset+n) lies inside its length.
inline absl::Status CheckChunkRange(const ChunkMap& map, uint64_t index, uint64_t offset,
                                    uint64_t n) {
  if (index >= map.chunks.size()) {
    return absl::InvalidArgumentError(
        fmt::format("chunk {} of a content with {} chunks", index, map.chunks.size()));
  }
  const uint64_t length = map.chunks[index].length;
  if (offset > length || n > length - offset) {
    return absl::InvalidArgumentError(fmt::format(
        "range [{}, +{}) is outside chunk {} of {} bytes", offset, n, index, length));
  }
  return absl::OkStatus();
}

}  // namespace traincache::node_internal

#endif  // TRAINCACHE_NODE_TIER_COMMON_H_
