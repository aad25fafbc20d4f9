#include "traincache/types.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <time.h>

#include <bit>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include <fmt/format.h>

namespace traincache {

Timespec Now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return Timespec{ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec)};
}

ChunkId ChunkId::Of(std::string_view data) {
  ChunkId id;
  // SHA256() uses the SHA-NI / AVX2 code paths OpenSSL picks at run time.
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), id.digest_.data());
  return id;
}

absl::StatusOr<ChunkId> ChunkId::FromBytes(std::string_view bytes) {
  if (bytes.size() != kSize) {
    return absl::InvalidArgumentError(
        fmt::format("chunk id must be 32 bytes, got {}", bytes.size()));
  }
  ChunkId id;
  std::memcpy(id.digest_.data(), bytes.data(), kSize);
  return id;
}

absl::StatusOr<ChunkId> ChunkId::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kSize) {
    return absl::InvalidArgumentError("chunk id must be 64 hex digits");
  }
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("chunk id must be 64 hex digits");
    }
  }
  return FromBytes(absl::HexStringToBytes(std::string(hex)));
}

std::string ChunkId::ToHex() const { return absl::BytesToHexString(std::string(bytes())); }

absl::Status ValidateChunkMapShape(uint64_t size, uint32_t chunk_size,
                                   const std::vector<ChunkRef>& chunks) {
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize ||
      !std::has_single_bit(chunk_size)) {
    return absl::InvalidArgumentError(
        fmt::format("chunk_size must be a power of two in [64 KiB, 16 MiB], got {}", chunk_size));
  }
  // Written so that no size near 2^64 can overflow.
  uint64_t expected_count = size / chunk_size + (size % chunk_size != 0 ? 1 : 0);
  if (chunks.size() != expected_count) {
    return absl::InvalidArgumentError(fmt::format("a file of {} bytes in chunks of {} has {} chunks, got {}",
                                                    size, chunk_size, expected_count, chunks.size()));
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    uint64_t want = (i + 1 < chunks.size()) ? chunk_size : size - i * uint64_t{chunk_size};
    if (chunks[i].length != want) {
      return absl::InvalidArgumentError(
          fmt::format("chunk {} has length {}, want {}", i, chunks[i].length, want));
    }
  }
  return absl::OkStatus();
}

}  // namespace traincache
