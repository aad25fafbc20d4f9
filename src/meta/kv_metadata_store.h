// KvMetadataStore: the one implementation of MetadataStore's POSIX semantics,
// over any KvBackend. NewMemoryMetadataStore and OpenRocksMetadataStore are
// this class over a std::map and over RocksDB.
//
// Concurrency. Each scope has a mutex. A mutation holds it while it reads the
// scope's current state, builds its one batch and writes it (visible, not yet
// durable); then, with the mutex released, it waits until its write is
// durable (KvBackend::WaitDurable, where concurrent mutations share one WAL
// sync) and only then returns. So mutations of one scope are serialized and
// applied in order, while their syncs overlap. Read-only operations take no
// lock: they read a backend snapshot.
//
// Lock order: KvMetadataStore::states_mu_ is never held while taking a
// ScopeState::mu; ScopeState::mu before any lock inside the backend.
//
// Thread-safe.
#ifndef TRAINCACHE_META_KV_METADATA_STORE_H_
#define TRAINCACHE_META_KV_METADATA_STORE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "meta/key_codec.h"
#include "meta/kv_backend.h"
#include "meta/meta_txn.h"
#include "traincache/metadata_store.h"

namespace traincache::meta {

class KvMetadataStore : public MetadataStore {
 public:
  explicit KvMetadataStore(std::unique_ptr<KvBackend> backend,
                           MetadataSync sync = MetadataSync::kEveryChange);

  absl::StatusOr<ScopeInfo> OpenScope(const Scope& scope, bool create,
                                      uint64_t quota_if_created = kDefaultQuotaBytes) override;
  absl::Status DeleteScope(const Scope& scope) override;
  absl::StatusOr<std::vector<Scope>> ListScopes() override;
  absl::StatusOr<ScopeUsage> GetUsage(const Scope& scope) override;
  absl::Status SetQuota(const Scope& scope, uint64_t quota_bytes) override;

  absl::StatusOr<InodeAttr> Lookup(const Scope& scope, InodeId parent,
                                   std::string_view name) override;
  absl::StatusOr<InodeAttr> GetAttr(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> SetAttr(const Scope& scope, InodeId ino,
                                    const SetAttrRequest& req) override;
  absl::StatusOr<ReadDirPage> ReadDir(const Scope& scope, InodeId dir, std::string_view after,
                                      uint32_t limit, bool plus) override;
  absl::StatusOr<CreateResult> Create(const Scope& scope, InodeId parent, std::string_view name,
                                      uint32_t mode, const Caller& caller, bool exclusive,
                                      const RequestId& request = {}) override;
  absl::StatusOr<InodeAttr> Mkdir(const Scope& scope, InodeId parent, std::string_view name,
                                  uint32_t mode, const Caller& caller,
                                  const RequestId& request = {}) override;
  absl::StatusOr<InodeAttr> Symlink(const Scope& scope, InodeId parent, std::string_view name,
                                    std::string_view target, const Caller& caller,
                                    const RequestId& request = {}) override;
  absl::StatusOr<std::string> ReadLink(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> Link(const Scope& scope, InodeId ino, InodeId new_parent,
                                 std::string_view new_name,
                                 const RequestId& request = {}) override;
  absl::StatusOr<UnlinkResult> Unlink(const Scope& scope, InodeId parent, std::string_view name,
                                      const RequestId& request = {}) override;
  absl::Status Rmdir(const Scope& scope, InodeId parent, std::string_view name,
                     const RequestId& request = {}) override;
  absl::StatusOr<UnlinkResult> Rename(const Scope& scope, InodeId parent, std::string_view name,
                                      InodeId new_parent, std::string_view new_name,
                                      uint32_t flags, const RequestId& request = {}) override;

  absl::StatusOr<std::string> GetXattr(const Scope& scope, InodeId ino,
                                       std::string_view name) override;
  absl::Status SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                        std::string_view value, uint32_t flags,
                        const RequestId& request = {}) override;
  absl::StatusOr<std::vector<std::string>> ListXattr(const Scope& scope, InodeId ino) override;
  absl::Status RemoveXattr(const Scope& scope, InodeId ino, std::string_view name,
                           const RequestId& request = {}) override;

  absl::StatusOr<ChunkMap> GetChunkMap(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> CommitContent(const Scope& scope, InodeId ino,
                                          uint64_t expected_version, uint64_t size,
                                          uint32_t chunk_size, const std::vector<ChunkRef>& chunks,
                                          Timespec mtime) override;
  absl::StatusOr<InodeAttr> CommitContentWithSmallChunks(
      const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size,
      uint32_t chunk_size, const std::vector<ChunkRef>& chunks, Timespec mtime,
      const std::vector<SmallChunk>& small) override;
  absl::StatusOr<std::optional<std::string>> GetSmallChunk(const Scope& scope,
                                                           const ChunkId& id) override;
  absl::Status DeleteSmallChunk(const Scope& scope, const ChunkId& id) override;

  absl::StatusOr<uint64_t> ExpireRequests(const Scope& scope, Timespec older_than) override;
  absl::Status ReleaseInode(const Scope& scope, InodeId ino) override;
  absl::StatusOr<uint64_t> PurgeOrphans(const Scope& scope, Timespec older_than) override;
  absl::StatusOr<std::vector<InodeId>> ListOrphans(const Scope& scope) override;
  absl::Status ScanScope(
      const Scope& scope, const std::function<absl::Status(const InodeAttr&)>& inode,
      const std::function<absl::Status(InodeId parent, std::string_view name, InodeId child)>&
          entry) override;

  absl::StatusOr<uint64_t> ChunkRefCount(const Scope& scope, const ChunkId& id) override;
  absl::StatusOr<std::vector<ChunkId>> ListGarbage(const Scope& scope, uint32_t limit) override;
  absl::Status ForgetGarbage(const Scope& scope, const std::vector<ChunkId>& ids) override;
  absl::Status WaitReadsDurable() override;
  absl::Status Sync() override;

 private:
  // Whether a mutation waits for its write to be durable before it returns.
  enum class Durable {
    kAlways,
    kUnlessRelaxed,  // Not under MetadataSync::kContentCommits.
  };

  // What this process knows of one scope. Every write of the scope's keys
  // happens under `mu` (one process owns the backend), so the cached meta
  // is the stored one.
  struct ScopeState {
    explicit ScopeState(const Scope& scope) : keys(scope) {}
    const ScopeKeys keys;
    absl::Mutex mu;
    bool loaded ABSL_GUARDED_BY(mu) = false;
    // The stored meta record once loaded; nullopt: the scope does not exist.
    std::optional<ScopeMeta> meta ABSL_GUARDED_BY(mu);
    // This process made a durable change that started its epoch (or created
    // the scope): see MetaTxn::StartEpoch.
    bool epoch_started ABSL_GUARDED_BY(mu) = false;
    // When the next mutation with a request id also drops expired request
    // records (seconds since the epoch): at most one range read per
    // interval, never one per request.
    int64_t next_expiry ABSL_GUARDED_BY(mu) = 0;
  };

  std::shared_ptr<ScopeState> State(const Scope& scope);
  bool Relaxed() const { return sync_ == MetadataSync::kContentCommits; }
  // Loads `st.meta` on first use. INTERNAL/DATA_LOSS if unreadable.
  absl::Status LoadLocked(ScopeState& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(st.mu);

  // Runs `fn(MetaTxn&)` (returning absl::StatusOr<T>) as one mutation of an
  // existing scope (NOT_FOUND otherwise): under the scope mutex, writes the
  // transaction's batch if it changed anything; then waits for durability
  // outside the mutex (as `durable` and the store's MetadataSync say). An
  // error from `fn` changes nothing.
  //
  // With a non-empty `request` (RequestId): if its outcome is recorded,
  // returns it without calling `fn`; else a success of `fn` is recorded in
  // the same batch. Expired records of the scope are dropped with it now
  // and then (ScopeState::next_expiry).
  template <typename Fn>
  auto Mutate(const Scope& scope, Fn&& fn, Durable durable = Durable::kAlways,
              const RequestId& request = {}) -> decltype(fn(std::declval<MetaTxn&>()));

  // For read-only operations: NOT_FOUND naming the scope if it does not
  // exist, else NOT_FOUND for the inode.
  absl::Status InodeNotFound(KvView& view, const ScopeKeys& keys, const Scope& scope, InodeId ino);
  // Reads inode `ino` through a snapshot: ENOENT (see InodeNotFound) if absent.
  absl::StatusOr<InodeRecord> ReadExisting(KvView& view, const ScopeKeys& keys, const Scope& scope,
                                           InodeId ino);

  const std::unique_ptr<KvBackend> backend_;
  const MetadataSync sync_;
  // The token of the newest write made durable before its answer (relaxed
  // reads wait for it: no answer shows a commit whose sync is still running).
  std::atomic<uint64_t> last_synced_write_{0};
  absl::Mutex states_mu_;
  std::unordered_map<std::string, std::shared_ptr<ScopeState>> states_ ABSL_GUARDED_BY(states_mu_);
};

}  // namespace traincache::meta

#endif  // TRAINCACHE_META_KV_METADATA_STORE_H_
