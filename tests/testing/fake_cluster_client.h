// FakeClusterClient: an in-process ClusterClient (traincache/cluster_client.h)
// over the in-memory MetadataStore and ChunkStore, for node unit tests.
//
// It answers as traincache-server does where a node can tell: inode 0 is
// EINVAL, an over-long ReadDir `after` is ENAMETOOLONG, CommitContent checks
// that every chunk is stored with exactly the ref's length (ENOENT, EINVAL)
// before the store applies the version check and the quota, PutChunks needs
// an existing scope, OpenScope gives new scopes the configured default quota.
// The conformance suite (tests/rpc/cluster_client_conformance.h) holds it to
// the real server.
//
// For tests of the node it also counts calls per method and injects errors:
// FailNext("GetChunk", absl::UnavailableError(...)) makes the next GetChunk
// fail without touching the stores; SetHook runs a function before every call
// (to block a fetch, or to watch the order of calls).
//
// The change feed (WatchScope) is the test's to drive, as the server would:
// FeedSend hands a message to the scope's subscriptions, FeedEnd ends them.
// The fake publishes nothing by itself (one fake serves several nodes, and
// cannot tell them apart).
//
// Thread-safe: all methods may be called concurrently.
#ifndef TRAINCACHE_TESTS_TESTING_FAKE_CLUSTER_CLIENT_H_
#define TRAINCACHE_TESTS_TESTING_FAKE_CLUSTER_CLIENT_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "traincache/chunk_store.h"
#include "traincache/cluster_client.h"
#include "traincache/metadata_store.h"

namespace traincache::testing {

class FakeClusterClient final : public ClusterClient {
 public:
  struct Options {
    uint64_t default_quota_bytes = kDefaultQuotaBytes;
  };
  FakeClusterClient() : FakeClusterClient(Options{}) {}
  explicit FakeClusterClient(Options options);

  // The stores behind it (to seed or inspect state directly).
  MetadataStore& meta() { return *meta_; }
  ChunkStore& chunks() { return *chunks_; }

  // The next `times` calls of method `op` ("GetChunk", "Lookup", ...; "*":
  // any method) return `status` and change nothing. times < 0: every call
  // until ClearFailures. A method-specific failure wins over "*".
  void FailNext(const std::string& op, absl::Status status, int times = 1);
  void ClearFailures();
  // Runs before every call, with the method's name, on the caller's thread.
  // nullptr removes it.
  void SetHook(std::function<void(std::string_view op)> hook);
  // Calls of method `op` so far, failed ones included.
  uint64_t Calls(const std::string& op) const;

  absl::StatusOr<OpenScopeResult> OpenScope(const Scope& scope, bool create) override;
  absl::StatusOr<InodeAttr> Lookup(const Scope& scope, InodeId parent,
                                   std::string_view name) override;
  absl::StatusOr<InodeAttr> GetAttr(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> SetAttr(const Scope& scope, InodeId ino,
                                    const SetAttrRequest& req) override;
  absl::StatusOr<ReadDirPage> ReadDir(const Scope& scope, InodeId dir, std::string_view after,
                                      uint32_t limit, bool plus) override;
  absl::StatusOr<InodeAttr> Mkdir(const Scope& scope, InodeId parent, std::string_view name,
                                  uint32_t mode, const Caller& caller) override;
  absl::StatusOr<CreateResult> Create(const Scope& scope, InodeId parent, std::string_view name,
                                      uint32_t mode, const Caller& caller, bool exclusive) override;
  absl::StatusOr<UnlinkResult> Unlink(const Scope& scope, InodeId parent,
                                      std::string_view name) override;
  absl::Status Rmdir(const Scope& scope, InodeId parent, std::string_view name) override;
  absl::StatusOr<UnlinkResult> Rename(const Scope& scope, InodeId parent, std::string_view name,
                                      InodeId new_parent, std::string_view new_name,
                                      uint32_t flags) override;
  absl::StatusOr<InodeAttr> Symlink(const Scope& scope, InodeId parent, std::string_view name,
                                    std::string_view target, const Caller& caller) override;
  absl::StatusOr<std::string> ReadLink(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> Link(const Scope& scope, InodeId ino, InodeId new_parent,
                                 std::string_view new_name) override;
  absl::StatusOr<std::string> GetXattr(const Scope& scope, InodeId ino,
                                       std::string_view name) override;
  absl::Status SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                        std::string_view value, uint32_t flags) override;
  absl::StatusOr<std::vector<std::string>> ListXattr(const Scope& scope, InodeId ino) override;
  absl::Status RemoveXattr(const Scope& scope, InodeId ino, std::string_view name) override;
  absl::StatusOr<ScopeUsage> StatFs(const Scope& scope) override;
  absl::Status Sync(const Scope& scope) override;
  absl::StatusOr<ChunkMap> GetChunkMap(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> CommitContent(const Scope& scope, InodeId ino,
                                          uint64_t expected_version, uint64_t size,
                                          uint32_t chunk_size, const std::vector<ChunkRef>& chunks,
                                          Timespec mtime) override;
  absl::StatusOr<InodeAttr> CommitContentWithSmallChunks(
      const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size,
      uint32_t chunk_size, const std::vector<ChunkRef>& chunks, Timespec mtime,
      const std::vector<std::string_view>& small_chunks) override;
  absl::Status ReleaseInode(const Scope& scope, InodeId ino) override;
  absl::StatusOr<std::vector<std::optional<uint64_t>>> HasChunks(
      const Scope& scope, const std::vector<ChunkId>& ids) override;
  absl::Status PutChunks(const Scope& scope, const std::vector<std::string_view>& chunks) override;
  absl::Status PutHashedChunks(const Scope& scope, const std::vector<ChunkId>& ids,
                               const std::vector<std::string_view>& chunks) override;
  absl::StatusOr<std::string> GetChunk(const Scope& scope, const ChunkId& id, uint64_t offset,
                                       uint64_t length) override;
  absl::StatusOr<std::unique_ptr<ChangeSubscription>> WatchScope(
      const Scope& scope, std::function<void(ScopeChanges)> on_changes,
      std::function<void(absl::Status)> on_end) override;

  // Hands `changes` to every live subscription of `scope`, on this thread.
  void FeedSend(const Scope& scope, const ScopeChanges& changes);
  // Ends every live subscription of `scope` with `status`.
  void FeedEnd(const Scope& scope, const absl::Status& status);
  // Live subscriptions of `scope`.
  size_t FeedWatchers(const Scope& scope) const;

 private:
  struct FeedSub;
  struct Failure {
    absl::Status status;
    int times = 0;  // < 0: forever.
  };
  // Counts the call, runs the hook, and returns an injected failure if any.
  absl::Status Enter(const std::string& op);

  const Options options_;
  std::unique_ptr<MetadataStore> meta_;
  std::unique_ptr<ChunkStore> stored_chunks_;
  // stored_chunks_ with meta_'s small chunks, as the server serves them.
  std::unique_ptr<ChunkStore> chunks_;

  mutable std::mutex mu_;
  std::map<std::string, uint64_t, std::less<>> calls_;    // guarded by mu_
  std::map<std::string, Failure, std::less<>> failures_;  // guarded by mu_
  std::function<void(std::string_view)> hook_;            // guarded by mu_
  std::vector<std::shared_ptr<FeedSub>> feed_subs_;       // guarded by mu_
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_TESTING_FAKE_CLUSTER_CLIENT_H_
