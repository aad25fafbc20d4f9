// ClusterClient: how a node reaches its cluster's traincache-server — the
// namespace of every scope (proto/traincache/v1/namespace.proto) and the chunk
// bytes (chunk.proto), in the core's own types. The node core (src/node) talks
// to the server only through this interface; the gRPC implementation lives in
// src/rpc/grpc_cluster_client.h, the in-process fake in
// tests/testing/fake_cluster_client.h.
//
// One client serves any number of scopes: every call names its scope, so one
// node daemon keeps one connection for all of its mounts. Semantics are the
// MetadataStore's (metadata_store.h) as the server applies them: a mutation
// happens whole or not at all and is durable when the call returns.
//
// Errors. A call returns what the server answered, with the POSIX errno kept
// (status.h payload): ENOENT as NOT_FOUND, EEXIST as ALREADY_EXISTS, ENOTEMPTY
// and ESTALE as FAILED_PRECONDITION, EDQUOT as RESOURCE_EXHAUSTED, and so on,
// exactly as metadata_store.h lists them. Besides those:
//   UNAVAILABLE (errno EIO)  the server could not be reached, or did not
//                            answer, for the whole outage timeout. Shorter
//                            outages (a restart, a dropped connection) are
//                            waited out and never surface as an error.
//   UNKNOWN (errno EIO)      the connection broke (or the server stopped)
//                            while a request that is not safe to repeat (see
//                            below) was in flight: it may or may not have
//                            been applied. The caller looks
//                            (Lookup, GetAttr) before it acts on either.
//   DEADLINE_EXCEEDED        such a request took longer than the per-call
//                            deadline (same uncertainty as UNKNOWN).
//   UNAUTHENTICATED          the token was refused; never retried.
// Repeatable requests (every read; SetAttr; SetXattr without XATTR_CREATE;
// OpenScope; Create without `exclusive`; ReleaseInode; HasChunks, PutChunks,
// GetChunk, GetChunkUnverified; CommitContent, which is conditional on a version) are re-sent
// after any transient failure until the outage timeout. The others (Mkdir,
// Create exclusive, Symlink, Link, Unlink, Rmdir, Rename, SetXattr with
// XATTR_CREATE, RemoveXattr) are re-sent only with a request id that the
// server applies at most once (metadata_store.h RequestId: GrpcClusterClient
// gives every such call one, so UNKNOWN does not happen for them); a client
// without ids sends them only once a connection is up and never again once
// they may have reached the server.
//
// Thread-safe: all methods may be called concurrently.
#ifndef TRAINCACHE_CLUSTER_CLIENT_H_
#define TRAINCACHE_CLUSTER_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "traincache/metadata_store.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache {

struct OpenScopeResult {
  InodeAttr root;
  // Random, made when the scope was created: a different value means the
  // scope was deleted and made again, so everything cached for it is void.
  uint64_t generation = 0;
};

// One message of a scope's change feed (namespace.proto, WatchScope): what
// other nodes changed, for this node to drop from its caches.
struct ScopeChanges {
  bool start = false;  // The first message: changes are delivered from here on.
  bool lost = false;   // Changes were dropped: everything cached is stale.
  // Names whose entry changed (created, removed, renamed from or to,
  // linked), as (directory, name); the directory's attributes changed too.
  std::vector<std::pair<InodeId, std::string>> entries;
  // Inodes whose attributes or content changed.
  std::vector<InodeId> inodes;
};

// A running WatchScope. Destroying it ends the stream; once the destructor
// returns, neither of its callbacks runs any more.
class ChangeSubscription {
 public:
  virtual ~ChangeSubscription() = default;
};

class ClusterClient {
 public:
  virtual ~ClusterClient() = default;

  // --- namespace (namespace.proto; semantics in metadata_store.h) ---
  // The scope's root, creating the scope (empty root, the server's default
  // quota) if `create`. NOT_FOUND if absent and !create.
  virtual absl::StatusOr<OpenScopeResult> OpenScope(const Scope& scope, bool create) = 0;
  virtual absl::StatusOr<InodeAttr> Lookup(const Scope& scope, InodeId parent,
                                           std::string_view name) = 0;
  virtual absl::StatusOr<InodeAttr> GetAttr(const Scope& scope, InodeId ino) = 0;
  virtual absl::StatusOr<InodeAttr> SetAttr(const Scope& scope, InodeId ino,
                                            const SetAttrRequest& req) = 0;
  // One page of entries with name > `after` (empty: from the start), at most
  // `limit` (0 or more than kMaxReadDirEntries: kMaxReadDirEntries). Pass the
  // last name of a page as the next `after` while `more` is set.
  virtual absl::StatusOr<ReadDirPage> ReadDir(const Scope& scope, InodeId dir,
                                              std::string_view after, uint32_t limit,
                                              bool plus) = 0;
  virtual absl::StatusOr<InodeAttr> Mkdir(const Scope& scope, InodeId parent, std::string_view name,
                                          uint32_t mode, const Caller& caller) = 0;
  virtual absl::StatusOr<CreateResult> Create(const Scope& scope, InodeId parent,
                                              std::string_view name, uint32_t mode,
                                              const Caller& caller, bool exclusive) = 0;
  virtual absl::StatusOr<UnlinkResult> Unlink(const Scope& scope, InodeId parent,
                                              std::string_view name) = 0;
  virtual absl::Status Rmdir(const Scope& scope, InodeId parent, std::string_view name) = 0;
  // `flags`: 0, kRenameNoReplace or kRenameExchange.
  virtual absl::StatusOr<UnlinkResult> Rename(const Scope& scope, InodeId parent,
                                              std::string_view name, InodeId new_parent,
                                              std::string_view new_name, uint32_t flags) = 0;
  virtual absl::StatusOr<InodeAttr> Symlink(const Scope& scope, InodeId parent,
                                            std::string_view name, std::string_view target,
                                            const Caller& caller) = 0;
  virtual absl::StatusOr<std::string> ReadLink(const Scope& scope, InodeId ino) = 0;
  virtual absl::StatusOr<InodeAttr> Link(const Scope& scope, InodeId ino, InodeId new_parent,
                                         std::string_view new_name) = 0;
  virtual absl::StatusOr<std::string> GetXattr(const Scope& scope, InodeId ino,
                                               std::string_view name) = 0;
  // `flags`: 0, kXattrCreate or kXattrReplace.
  virtual absl::Status SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                                std::string_view value, uint32_t flags) = 0;
  virtual absl::StatusOr<std::vector<std::string>> ListXattr(const Scope& scope, InodeId ino) = 0;
  virtual absl::Status RemoveXattr(const Scope& scope, InodeId ino, std::string_view name) = 0;
  // Quota, bytes used and live inodes of the scope (what statfs shows).
  virtual absl::StatusOr<ScopeUsage> StatFs(const Scope& scope) = 0;
  // Returns once every change to the scope made so far is durable on the
  // server (a server may apply namespace changes before their disk sync:
  // MetadataSync). For fsync and fsyncdir.
  virtual absl::Status Sync(const Scope& scope) = 0;
  // The content of regular file `ino`; its `version` is the expected_version
  // of a following CommitContent.
  virtual absl::StatusOr<ChunkMap> GetChunkMap(const Scope& scope, InodeId ino) = 0;
  // Replaces the content of `ino` if its version is still `expected_version`
  // (else FAILED_PRECONDITION/ESTALE). Every non-hole chunk must be stored
  // with exactly the ref's length (else FAILED_PRECONDITION/ENOENT for a
  // missing one, INVALID_ARGUMENT/EINVAL for a length mismatch); over quota
  // is RESOURCE_EXHAUSTED/EDQUOT. Nothing changes on error.
  virtual absl::StatusOr<InodeAttr> CommitContent(const Scope& scope, InodeId ino,
                                                  uint64_t expected_version, uint64_t size,
                                                  uint32_t chunk_size,
                                                  const std::vector<ChunkRef>& chunks,
                                                  Timespec mtime) = 0;
  // CommitContent that also carries the bytes of small chunks of `chunks`
  // (each at most kMaxSmallChunkBytes, kMaxSmallChunksBytes in all), which
  // the server need not have: it stores them with the commit, in the same
  // atomic, durable write. One call instead of HasChunks, PutChunks and
  // CommitContent. Errors as CommitContent's, plus INVALID_ARGUMENT for a
  // small chunk over the limits or not in `chunks`. Default: PutChunks, then
  // CommitContent.
  virtual absl::StatusOr<InodeAttr> CommitContentWithSmallChunks(
      const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size,
      uint32_t chunk_size, const std::vector<ChunkRef>& chunks, Timespec mtime,
      const std::vector<std::string_view>& small_chunks) {
    if (!small_chunks.empty()) {
      absl::Status put = PutChunks(scope, small_chunks);
      if (!put.ok()) return put;
    }
    return CommitContent(scope, ino, expected_version, size, chunk_size, chunks, mtime);
  }
  // The node saw the last close of an unlinked file: frees it. OK if the
  // inode still has links or is gone.
  virtual absl::Status ReleaseInode(const Scope& scope, InodeId ino) = 0;

  // --- change feed (namespace.proto, WatchScope) ---
  // Follows the change feed of `scope`: `on_changes` gets each message in
  // order (an empty one is the server's heartbeat, about once a second), and
  // `on_end` the status the stream ended with (at most once, never after
  // the subscription is destroyed; nothing more comes after it). The
  // callbacks run on the client's threads, one at a time, and must not
  // block. The node's own changes are not delivered (the client names the
  // node on every call). Never re-sent: after an end the caller subscribes
  // again. UNIMPLEMENTED where there is no feed (the default).
  virtual absl::StatusOr<std::unique_ptr<ChangeSubscription>> WatchScope(
      const Scope& scope, std::function<void(ScopeChanges)> on_changes,
      std::function<void(absl::Status)> on_end) {
    static_cast<void>(scope);
    static_cast<void>(on_changes);
    static_cast<void>(on_end);
    return absl::UnimplementedError("this cluster client has no change feed");
  }

  // --- chunks (chunk.proto) ---
  // For each id, in order: the stored size, or nullopt if the server lacks
  // it. Any number of ids (the wire's 1024-per-call limit is handled here).
  virtual absl::StatusOr<std::vector<std::optional<uint64_t>>> HasChunks(
      const Scope& scope, const std::vector<ChunkId>& ids) = 0;
  // Stores each byte string as the chunk named by its SHA-256 (ChunkId::Of),
  // durably. Each is at most kMaxChunkSize (else INVALID_ARGUMENT). NOT_FOUND
  // if the scope does not exist. On error some chunks may be stored (that is
  // harmless: unreferenced chunks are collected).
  virtual absl::Status PutChunks(const Scope& scope,
                                 const std::vector<std::string_view>& chunks) = 0;
  // PutChunks of chunks the caller has hashed already: ids[k] must be
  // ChunkId::Of(chunks[k]) (INVALID_ARGUMENT if the counts differ). Saves the
  // node hashing every byte twice; the server checks each chunk against its
  // id all the same (a mismatch is INVALID_ARGUMENT, that chunk not stored).
  // Default: PutChunks, which hashes them again.
  virtual absl::Status PutHashedChunks(const Scope& scope, const std::vector<ChunkId>& ids,
                                       const std::vector<std::string_view>& chunks) {
    if (ids.size() != chunks.size()) {
      return absl::InvalidArgumentError("PutHashedChunks: one id per chunk");
    }
    return PutChunks(scope, chunks);
  }
  // Bytes [offset, offset+length) of chunk `id`, clipped at its end (length
  // 0: to its end), verified by the server. NOT_FOUND if absent, DATA_LOSS if
  // the server's copy is corrupt.
  virtual absl::StatusOr<std::string> GetChunk(const Scope& scope, const ChunkId& id,
                                               uint64_t offset, uint64_t length) = 0;
  // The whole chunk `id`, for a caller that checks it against `id` itself
  // (the node's fetcher does, for every chunk): the server may then skip its
  // own check (chunk.proto, client_verifies), so the bytes may be corrupt.
  // A caller that finds a mismatch asks GetChunk, which the server verifies
  // (DATA_LOSS for a corrupt copy). NOT_FOUND if absent. The default is
  // GetChunk.
  virtual absl::StatusOr<std::string> GetChunkUnverified(const Scope& scope, const ChunkId& id) {
    return GetChunk(scope, id, 0, 0);
  }
};

}  // namespace traincache

#endif  // TRAINCACHE_CLUSTER_CLIENT_H_
