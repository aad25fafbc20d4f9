// Value types shared by the stores, the server and the node: inode attributes,
// directory entries, chunk ids and chunk maps. Plain values; thread-safe to
// copy, not to mutate concurrently.
#ifndef TRAINCACHE_TYPES_H_
#define TRAINCACHE_TYPES_H_

#include <sys/stat.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace traincache {

using InodeId = uint64_t;
inline constexpr InodeId kRootInode = 1;

// Default size of a content chunk; the last chunk of a file is shorter.
inline constexpr uint32_t kDefaultChunkSize = 4u << 20;
inline constexpr uint32_t kMinChunkSize = 64u << 10;
inline constexpr uint32_t kMaxChunkSize = 16u << 20;
// A chunk this small may travel inside its commit and be kept with the
// metadata (MetadataStore::CommitContentWithSmallChunks): small files then
// cost one call and no chunk file. At most kMaxSmallChunksBytes per commit.
inline constexpr uint32_t kMaxSmallChunkBytes = 64u << 10;
inline constexpr uint64_t kMaxSmallChunksBytes = 1u << 20;

// Bounds every request is checked against.
inline constexpr size_t kMaxNameBytes = 255;
inline constexpr size_t kMaxSymlinkBytes = 4095;
inline constexpr size_t kMaxXattrNameBytes = 255;
inline constexpr size_t kMaxXattrValueBytes = 64u << 10;
inline constexpr uint32_t kMaxReadDirEntries = 4096;
inline constexpr uint64_t kDefaultQuotaBytes = 1'000'000'000'000ull;  // 1 TB

struct Timespec {
  int64_t sec = 0;
  uint32_t nsec = 0;
  auto operator<=>(const Timespec&) const = default;
};

Timespec Now();

// SHA-256 of a chunk's bytes. Names exactly one content within a scope.
class ChunkId {
 public:
  static constexpr size_t kSize = 32;
  ChunkId() = default;
  // Hashes `data` (OpenSSL SHA-256).
  static ChunkId Of(std::string_view data);
  // From 32 raw bytes; INVALID_ARGUMENT on any other length.
  static absl::StatusOr<ChunkId> FromBytes(std::string_view bytes);
  // From 64 lowercase or uppercase hex digits; INVALID_ARGUMENT otherwise.
  static absl::StatusOr<ChunkId> FromHex(std::string_view hex);

  std::string_view bytes() const {
    return {reinterpret_cast<const char*>(digest_.data()), digest_.size()};
  }
  std::string ToHex() const;
  auto operator<=>(const ChunkId&) const = default;

  template <typename H>
  friend H AbslHashValue(H h, const ChunkId& id) {
    return H::combine(std::move(h), id.digest_);
  }

 private:
  std::array<uint8_t, kSize> digest_{};
};

// What stat(2) shows, plus the inode's version: a counter that changes on
// every change of the inode's content or attributes (never goes back).
struct InodeAttr {
  InodeId ino = 0;
  uint32_t mode = 0;  // st_mode: file type bits and permission bits.
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  uint32_t rdev = 0;
  Timespec atime, mtime, ctime;
  uint64_t version = 0;

  bool is_dir() const { return S_ISDIR(mode); }
  bool is_reg() const { return S_ISREG(mode); }
  bool is_symlink() const { return S_ISLNK(mode); }
  bool operator==(const InodeAttr&) const = default;
};

struct DirEntry {
  std::string name;
  InodeId ino = 0;
  uint32_t type = 0;                // S_IFMT bits of the child.
  std::optional<InodeAttr> attr;    // Filled by readdirplus.
};

// One chunk of a file's content: the first `length` bytes of chunk `id`. If
// the stored chunk is shorter than `length` the rest reads as zeros (that is
// how truncate extends a file without new chunk bytes, and a prefix is how it
// shrinks one). An empty `id` (nullopt) is a hole: all zeros.
struct ChunkRef {
  std::optional<ChunkId> id;
  uint32_t length = 0;
  bool operator==(const ChunkRef&) const = default;
};

// A file's content: chunk i covers [i*chunk_size, i*chunk_size + length).
// Every chunk but the last has length == chunk_size; lengths sum to `size`.
struct ChunkMap {
  uint64_t version = 0;  // The inode version this content belongs to.
  uint64_t size = 0;
  uint32_t chunk_size = kDefaultChunkSize;
  std::vector<ChunkRef> chunks;
};

// Checks the shape rules above (chunk_size in range and a power of two,
// lengths consistent with size). INVALID_ARGUMENT naming the rule otherwise.
absl::Status ValidateChunkMapShape(uint64_t size, uint32_t chunk_size,
                                   const std::vector<ChunkRef>& chunks);

// Which attributes a SetAttr changes.
struct SetAttrRequest {
  std::optional<uint32_t> mode;  // Permission bits only (07777).
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::optional<uint64_t> size;  // Truncate or extend (holes).
  std::optional<Timespec> atime;
  std::optional<Timespec> mtime;
};

// Per-scope accounting.
struct ScopeUsage {
  uint64_t bytes = 0;   // Sum over regular files of non-hole chunk lengths.
  uint64_t inodes = 0;  // Live inodes, root included.
  uint64_t quota_bytes = kDefaultQuotaBytes;
};

}  // namespace traincache

#endif  // TRAINCACHE_TYPES_H_
