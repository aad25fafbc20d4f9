// Key and value encoding of the metadata store: how every scope's namespace
// and content maps lie in one ordered key-value space (one RocksDB, or the
// std::map of the in-memory twin).
//
// Key layout. Every key of a scope starts with the scope prefix
//
//   P = <scope.ToString()> '\0'          e.g. "project:alpha\0"
//
// so one scope is one contiguous range [P, PrefixEnd(P)) = [P, "<scope>\x01").
// Scope ids never contain '\0' (scope.h), so no scope's prefix is a prefix of
// another's ("project:a\0" vs "project:a.b\0"). After P comes a one-byte tag:
//
//   P 'M'                           scope meta: generation, next inode, quota, usage
//   P 'I' be64(ino)                 inode record: InodeAttr (+ parent for dirs)
//   P 'D' be64(parent) name         directory entry: child ino + S_IFMT type
//   P 'L' be64(ino)                 symlink target (raw bytes)
//   P 'X' be64(ino) name            xattr value (raw bytes)
//   P 'C' be64(ino)                 chunk map of a regular file (absent: empty)
//   P 'R' chunk_id(32 raw bytes)    reference count of a chunk (absent: 0)
//   P 'G' chunk_id(32 raw bytes)    garbage list: chunk whose count reached 0
//   P 'S' chunk_id(32 raw bytes)    a small chunk's bytes, kept here instead of
//                                   the chunk store (CommitContent's small_chunks)
//   P 'O' be64(ino)                 orphan list: value = when nlink reached 0
//   P 'Q' be64(seq) client          outcome of a request with an id (RequestId)
//   P 'E' be64(sec) be64(seq) client  expiry index of those: the second the
//                                   record was written, then the 'Q' suffix;
//                                   empty value. Sorted by time, so expired
//                                   records are the front of this range.
//
// Integers in keys are big-endian so the byte order of keys is the numeric
// order (ReadDir and the orphan/garbage lists scan in key order). Entry and
// xattr names follow their fixed-size prefix unescaped, so the entries of one
// directory sort bytewise by name.
//
// Values are a compact hand-written binary encoding: a format byte (1), then
// LEB128 varints (Timespec seconds zig-zag encoded). Decoders never crash and
// never allocate more than the input's size: truncated input, trailing bytes,
// out-of-range numbers or shapes that break an invariant give DATA_LOSS
// naming what is wrong. Key parsers give DATA_LOSS on keys of a wrong shape.
//
// Thread-safe: pure functions and immutable values.
#ifndef TRAINCACHE_META_KEY_CODEC_H_
#define TRAINCACHE_META_KEY_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "traincache/metadata_store.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache::meta {

// Key tags (the byte after the scope prefix).
inline constexpr char kTagMeta = 'M';
inline constexpr char kTagInode = 'I';
inline constexpr char kTagDentry = 'D';
inline constexpr char kTagSymlink = 'L';
inline constexpr char kTagXattr = 'X';
inline constexpr char kTagChunkMap = 'C';
inline constexpr char kTagRefCount = 'R';
inline constexpr char kTagGarbage = 'G';
inline constexpr char kTagOrphan = 'O';
inline constexpr char kTagSmallChunk = 'S';
inline constexpr char kTagRequest = 'Q';
inline constexpr char kTagRequestExpiry = 'E';

// "<scope>\0": the first bytes of every key of `scope`.
std::string ScopePrefix(const Scope& scope);

// The smallest key greater than every key that starts with `prefix` (for
// exclusive upper bounds). Empty if there is none (prefix all 0xff).
std::string PrefixEnd(std::string_view prefix);

// Builds the keys of one scope (the prefix formatted once).
class ScopeKeys {
 public:
  explicit ScopeKeys(const Scope& scope);

  const std::string& prefix() const { return prefix_; }
  // Exclusive end of the scope's range: "<scope>\x01".
  std::string End() const { return PrefixEnd(prefix_); }

  std::string Meta() const;
  std::string Inode(InodeId ino) const;
  std::string InodePrefix() const;  // Every inode record of the scope.
  std::string Dentry(InodeId parent, std::string_view name) const;
  std::string DentryPrefix(InodeId parent) const;  // All entries of `parent`.
  std::string DentriesPrefix() const;  // All entries of every directory.
  std::string Symlink(InodeId ino) const;
  std::string Xattr(InodeId ino, std::string_view name) const;
  std::string XattrPrefix(InodeId ino) const;  // All xattrs of `ino`.
  std::string ChunkMap(InodeId ino) const;
  std::string RefCount(const ChunkId& id) const;
  std::string Garbage(const ChunkId& id) const;
  std::string GarbagePrefix() const;
  std::string SmallChunk(const ChunkId& id) const;
  std::string Orphan(InodeId ino) const;
  std::string OrphanPrefix() const;
  std::string Request(const RequestId& id) const;
  std::string RequestExpiry(int64_t sec, const RequestId& id) const;
  std::string RequestExpiryPrefix() const;

 private:
  std::string Tagged(char tag) const;
  std::string prefix_;
};

// The scope text ("project:alpha") of any key: the bytes before the first
// '\0'. DATA_LOSS if there is no '\0'.
absl::StatusOr<std::string_view> ScopeTextOfKey(std::string_view key);
// The part of `key` after `prefix`; DATA_LOSS if `key` does not start with it.
absl::StatusOr<std::string_view> KeySuffix(std::string_view key, std::string_view prefix);
// The inode number of a key that is `prefix` + be64(ino) (orphan keys).
absl::StatusOr<InodeId> ParseInoKey(std::string_view key, std::string_view prefix);
// The chunk id of a key that is `prefix` + 32 bytes (garbage, refcount keys).
absl::StatusOr<ChunkId> ParseChunkIdKey(std::string_view key, std::string_view prefix);
// The parent and name of a directory entry key; `prefix` is
// ScopeKeys::DentriesPrefix(). The name points into `key`. DATA_LOSS if the
// key is shorter than prefix + 8 + 1 or has another prefix.
struct DentryKey {
  InodeId parent = 0;
  std::string_view name;
};
absl::StatusOr<DentryKey> ParseDentryKey(std::string_view key, std::string_view prefix);
// The time and request id of an expiry index key; `prefix` is
// ScopeKeys::RequestExpiryPrefix(). DATA_LOSS if shorter than prefix + 16 +
// 1, or the client is longer than kMaxRequestClientBytes.
struct RequestExpiryKey {
  int64_t sec = 0;
  RequestId id;
};
absl::StatusOr<RequestExpiryKey> ParseRequestExpiryKey(std::string_view key,
                                                       std::string_view prefix);

// --- values ---

// The scope meta record ('M').
struct ScopeMeta {
  uint64_t generation = 0;
  InodeId next_ino = kRootInode + 1;  // Next inode number to hand out.
  uint64_t quota_bytes = kDefaultQuotaBytes;
  uint64_t used_bytes = 0;   // ScopeUsage::bytes.
  uint64_t used_inodes = 0;  // ScopeUsage::inodes.
  // Inode numbers below this were reserved by a durable write: a process
  // that loads the scope starts at ino_limit, never reusing a number its
  // predecessor handed out in a change that a machine crash then lost.
  InodeId ino_limit = 0;
  // Bumped by the first change after each load; versions of this epoch are
  // at least epoch << kEpochShift, so no version number handed out before a
  // crash is handed out again for another content or attribute state.
  uint64_t epoch = 0;
  bool operator==(const ScopeMeta&) const = default;
};
inline constexpr int kEpochShift = 40;
std::string EncodeScopeMeta(const ScopeMeta& meta);
absl::StatusOr<ScopeMeta> DecodeScopeMeta(std::string_view value);

// An inode record ('I'). The inode number is the key's, not stored twice.
struct InodeRecord {
  InodeAttr attr;
  // Directories: the directory holding this one's entry (the root: itself).
  // Rename walks these up to refuse moving a directory into its own subtree.
  // 0 for other types (they may have several names).
  InodeId parent = 0;
  bool operator==(const InodeRecord&) const = default;
};
std::string EncodeInode(const InodeRecord& rec);
// `ino` fills attr.ino.
absl::StatusOr<InodeRecord> DecodeInode(InodeId ino, std::string_view value);

// A directory entry ('D').
struct DentryValue {
  InodeId ino = 0;
  uint32_t type = 0;  // S_IFMT bits of the child.
  bool operator==(const DentryValue&) const = default;
};
std::string EncodeDentry(const DentryValue& d);
absl::StatusOr<DentryValue> DecodeDentry(std::string_view value);

// One chunk of a stored chunk map: the public ChunkRef plus what the store
// must remember about it.
struct StoredChunk {
  ChunkRef ref;
  // A truncate lowered `ref.length` below the bytes the chunk holds: the
  // chunk's stored bytes may go on past `length`, so raising `length` again
  // would bring back cut-off data instead of zeros. Never set on holes.
  bool truncated = false;
  bool operator==(const StoredChunk&) const = default;
};

// A regular file's content ('C'). Shape as ChunkMap's (types.h); the version
// is the inode's and not stored here.
struct StoredChunkMap {
  uint64_t size = 0;
  uint32_t chunk_size = kDefaultChunkSize;
  std::vector<StoredChunk> chunks;
  bool operator==(const StoredChunkMap&) const = default;
};
std::string EncodeChunkMap(const StoredChunkMap& map);
// Also checks ValidateChunkMapShape and at most kMaxFileChunks chunks.
absl::StatusOr<StoredChunkMap> DecodeChunkMap(std::string_view value);

// Most chunks one file may have (EFBIG past it): 8 TiB in 4 MiB chunks. Bounds
// the size of one chunk map value and of what truncate may allocate.
inline constexpr uint64_t kMaxFileChunks = uint64_t{1} << 21;

// A chunk reference count ('R'); never stored as 0.
std::string EncodeRefCount(uint64_t count);
absl::StatusOr<uint64_t> DecodeRefCount(std::string_view value);

// The recorded outcome of a request ('Q'): what the call returned, so that
// a copy of it returns the same. monostate: a call answering only OK
// (Rmdir, SetXattr, RemoveXattr).
struct RequestRecord {
  Timespec written;  // When applied; its second names the expiry index key.
  std::variant<std::monostate, InodeAttr, CreateResult, UnlinkResult> outcome;
  bool operator==(const RequestRecord&) const = default;
};
std::string EncodeRequestRecord(const RequestRecord& rec);
absl::StatusOr<RequestRecord> DecodeRequestRecord(std::string_view value);

// A Timespec (orphan list values).
std::string EncodeTimespec(Timespec t);
absl::StatusOr<Timespec> DecodeTimespec(std::string_view value);

}  // namespace traincache::meta

#endif  // TRAINCACHE_META_KEY_CODEC_H_
