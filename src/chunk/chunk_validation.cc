#include <fmt/format.h>

#include "traincache/chunk_store.h"

namespace traincache {

absl::Status ValidateChunkBytes(const Scope& scope, const ChunkId& id, std::string_view data) {
  if (data.size() > kMaxChunkSize) {
    return absl::InvalidArgumentError(
        fmt::format("chunk {} of {} is {} bytes, more than the maximum {}", id.ToHex(),
                    scope.ToString(), data.size(), kMaxChunkSize));
  }
  if (ChunkId::Of(data) != id) {
    return absl::InvalidArgumentError(fmt::format(
        "bytes given for chunk {} of {} do not hash to its id", id.ToHex(), scope.ToString()));
  }
  return absl::OkStatus();
}

}  // namespace traincache
