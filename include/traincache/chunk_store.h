// ChunkStore: immutable chunk bytes, per scope, named by their SHA-256.
//
// A chunk is written once and never changes; Put of bytes that are already
// stored is a cheap no-op. Bytes are verified against their id on the way in
// (Put: INVALID_ARGUMENT on mismatch, nothing stored) and on the way out
// (Get: DATA_LOSS on mismatch, never the wrong bytes). A Put is durable when it
// returns (data and directory entry synced), so metadata that references the
// chunk may commit after it.
//
// Reference counting is the MetadataStore's (atomic with commits); the store
// only lists and deletes, and CollectGarbage (chunk_collector.h) ties both.
//
// Errors: NOT_FOUND for a missing chunk or scope, INVALID_ARGUMENT for bad
// ranges or mismatched bytes, RESOURCE_EXHAUSTED (ENOSPC payload) when the
// disk is full, INTERNAL for other I/O errors, DATA_LOSS for corruption.
//
// Thread-safe: all methods may be called concurrently.
#ifndef TRAINCACHE_CHUNK_STORE_H_
#define TRAINCACHE_CHUNK_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache {

struct ChunkInfo {
  ChunkId id;
  uint64_t size = 0;
  Timespec mtime;  // When it was stored (for the grace period of the sweep).
};

class ChunkStore {
 public:
  virtual ~ChunkStore() = default;

  // Stores `data` as chunk `id` of `scope`. INVALID_ARGUMENT (nothing stored)
  // if SHA-256(data) != id or data is larger than kMaxChunkSize.
  virtual absl::Status Put(const Scope& scope, const ChunkId& id, std::string_view data) = 0;
  // Returns bytes [offset, offset+length) of the chunk, clipped at its end
  // (length 0 means to the end). The whole chunk is verified first.
  virtual absl::StatusOr<std::string> Get(const Scope& scope, const ChunkId& id,
                                          uint64_t offset = 0, uint64_t length = 0) = 0;
  // The whole chunk as stored, for a caller that checks it against `id`
  // itself: the store may skip its own check, so corrupt bytes can come back
  // (Get is what detects, reports and sets aside a corrupt chunk). NOT_FOUND
  // if absent. The default verifies anyway.
  virtual absl::StatusOr<std::string> GetUnverified(const Scope& scope, const ChunkId& id) {
    return Get(scope, id);
  }
  // Size of the stored chunk; NOT_FOUND if absent. Does not verify.
  virtual absl::StatusOr<uint64_t> Stat(const Scope& scope, const ChunkId& id) = 0;
  // Removes the chunk; OK if it was absent.
  virtual absl::Status Delete(const Scope& scope, const ChunkId& id) = 0;
  // Removes every chunk of the scope; OK if there were none.
  virtual absl::Status DeleteScope(const Scope& scope) = 0;
  // Calls `fn` for each chunk of the scope, in no particular order. Stops and
  // returns fn's error if fn returns one.
  virtual absl::Status List(const Scope& scope,
                            const std::function<absl::Status(const ChunkInfo&)>& fn) = 0;
};

// The check every ChunkStore::Put makes before storing: INVALID_ARGUMENT if
// `data` is over kMaxChunkSize or does not hash to `id`.
absl::Status ValidateChunkBytes(const Scope& scope, const ChunkId& id, std::string_view data);

// How many bytes a Get of [offset, offset+length) (length 0: to the end)
// returns from chunk `id` of `size` bytes; INVALID_ARGUMENT if offset is past
// the end. What every ChunkStore::Get clips by.
absl::StatusOr<uint64_t> ChunkSliceLength(const Scope& scope, const ChunkId& id, uint64_t size,
                                          uint64_t offset, uint64_t length);

// The in-memory twin. Never fails.
std::unique_ptr<ChunkStore> NewMemoryChunkStore();

// A store of files under `root`: <root>/<kind>/<id>/<hh>/<hh>/<64 hex> with
// temp files in <root>/tmp (write, fsync, rename, fsync dir). Creates root.
absl::StatusOr<std::unique_ptr<ChunkStore>> OpenDiskChunkStore(const std::string& root);

// Deletes chunks of `scope` that nothing references: those on the metadata
// store's garbage list whose count is still 0, and (sweep) any stored chunk
// with no references that is older than `grace` seconds (an upload whose
// commit never came). A commit that references a chunk must not slip between
// the count check and the delete: `commit_lock` (the server's scope lock,
// held shared by commits) is taken exclusively around each check-and-delete
// only, so listing a large scope never holds commits up. nullptr: the caller
// keeps commits out itself. Returns chunks deleted.
class MetadataStore;
absl::StatusOr<uint64_t> CollectGarbage(const Scope& scope, MetadataStore& meta,
                                        ChunkStore& chunks, int64_t grace_seconds,
                                        std::shared_mutex* commit_lock = nullptr);

// The chunks a server serves: `meta`'s small chunks (kept with the metadata,
// MetadataStore::CommitContentWithSmallChunks) over `base`. Get and Stat look
// at the small chunks first (verified against their id like any chunk), then
// at `base`; Put, List and DeleteScope are `base`'s (small chunks are only
// written by commits, and leave with their scope's metadata); Delete drops
// both copies. Both must outlive it.
std::unique_ptr<ChunkStore> NewSmallChunkAwareStore(MetadataStore* meta, ChunkStore* base);

}  // namespace traincache

#endif  // TRAINCACHE_CHUNK_STORE_H_
