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

absl::StatusOr<uint64_t> ChunkSliceLength(const Scope& scope, const ChunkId& id, uint64_t size,
                                          uint64_t offset, uint64_t length) {
  if (offset > size) {
    return absl::InvalidArgumentError(
        fmt::format("offset {} is past the end of chunk {} of {} ({} bytes)", offset, id.ToHex(),
                    scope.ToString(), size));
  }
  const uint64_t available = size - offset;
  return (length == 0 || length > available) ? available : length;
}

}  // namespace traincache
