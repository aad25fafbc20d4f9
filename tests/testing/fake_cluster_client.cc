#include "testing/fake_cluster_client.h"

#include <fmt/format.h>

#include <cerrno>
#include <mutex>
#include <set>

#include "traincache/status.h"

namespace traincache::testing {

namespace {

// The server's check of inode numbers (src/server/namespace_service.cc).
absl::Status CheckIno(InodeId ino) {
  if (ino == 0) return PosixError(EINVAL, "inode number 0");
  return absl::OkStatus();
}

}  // namespace

FakeClusterClient::FakeClusterClient(Options options)
    : options_(options),
      meta_(NewMemoryMetadataStore()),
      stored_chunks_(NewMemoryChunkStore()),
      chunks_(NewSmallChunkAwareStore(meta_.get(), stored_chunks_.get())) {}

void FakeClusterClient::FailNext(const std::string& op, absl::Status status, int times) {
  std::lock_guard lock(mu_);
  failures_[op] = Failure{std::move(status), times};
}

void FakeClusterClient::ClearFailures() {
  std::lock_guard lock(mu_);
  failures_.clear();
}

void FakeClusterClient::SetHook(std::function<void(std::string_view op)> hook) {
  std::lock_guard lock(mu_);
  hook_ = std::move(hook);
}

uint64_t FakeClusterClient::Calls(const std::string& op) const {
  std::lock_guard lock(mu_);
  auto it = calls_.find(op);
  return it == calls_.end() ? 0 : it->second;
}

absl::Status FakeClusterClient::Enter(const std::string& op) {
  std::function<void(std::string_view)> hook;
  absl::Status injected;
  {
    std::lock_guard lock(mu_);
    ++calls_[op];
    hook = hook_;
    for (const std::string& key : {op, std::string("*")}) {
      auto it = failures_.find(key);
      if (it == failures_.end()) continue;
      injected = it->second.status;
      if (it->second.times > 0 && --it->second.times == 0) failures_.erase(it);
      break;
    }
  }
  // Outside the lock: a hook may block until the test lets it go.
  if (hook) hook(op);
  return injected;
}

absl::StatusOr<OpenScopeResult> FakeClusterClient::OpenScope(const Scope& scope, bool create) {
  RETURN_IF_ERROR(Enter("OpenScope"));
  // As the server: a scope it creates gets the configured default quota.
  absl::StatusOr<ScopeInfo> info = meta_->OpenScope(scope, /*create=*/false);
  if (!info.ok() && create && info.status().code() == absl::StatusCode::kNotFound) {
    info = meta_->OpenScope(scope, /*create=*/true, options_.default_quota_bytes);
  }
  RETURN_IF_ERROR(info.status());
  ASSIGN_OR_RETURN(InodeAttr root, meta_->GetAttr(scope, kRootInode));
  return OpenScopeResult{.root = root, .generation = info->generation};
}

absl::StatusOr<InodeAttr> FakeClusterClient::Lookup(const Scope& scope, InodeId parent,
                                                    std::string_view name) {
  RETURN_IF_ERROR(Enter("Lookup"));
  RETURN_IF_ERROR(CheckIno(parent));
  return meta_->Lookup(scope, parent, name);
}

absl::StatusOr<InodeAttr> FakeClusterClient::GetAttr(const Scope& scope, InodeId ino) {
  RETURN_IF_ERROR(Enter("GetAttr"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->GetAttr(scope, ino);
}

absl::StatusOr<InodeAttr> FakeClusterClient::SetAttr(const Scope& scope, InodeId ino,
                                                     const SetAttrRequest& req) {
  RETURN_IF_ERROR(Enter("SetAttr"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->SetAttr(scope, ino, req);
}

absl::StatusOr<ReadDirPage> FakeClusterClient::ReadDir(const Scope& scope, InodeId dir,
                                                       std::string_view after, uint32_t limit,
                                                       bool plus) {
  RETURN_IF_ERROR(Enter("ReadDir"));
  RETURN_IF_ERROR(CheckIno(dir));
  if (after.size() > kMaxNameBytes) return PosixError(ENAMETOOLONG, "after is too long");
  return meta_->ReadDir(scope, dir, after, limit, plus);
}

absl::StatusOr<InodeAttr> FakeClusterClient::Mkdir(const Scope& scope, InodeId parent,
                                                   std::string_view name, uint32_t mode,
                                                   const Caller& caller) {
  RETURN_IF_ERROR(Enter("Mkdir"));
  RETURN_IF_ERROR(CheckIno(parent));
  return meta_->Mkdir(scope, parent, name, mode, caller);
}

absl::StatusOr<CreateResult> FakeClusterClient::Create(const Scope& scope, InodeId parent,
                                                       std::string_view name, uint32_t mode,
                                                       const Caller& caller, bool exclusive) {
  RETURN_IF_ERROR(Enter("Create"));
  RETURN_IF_ERROR(CheckIno(parent));
  return meta_->Create(scope, parent, name, mode, caller, exclusive);
}

absl::StatusOr<UnlinkResult> FakeClusterClient::Unlink(const Scope& scope, InodeId parent,
                                                       std::string_view name) {
  RETURN_IF_ERROR(Enter("Unlink"));
  RETURN_IF_ERROR(CheckIno(parent));
  return meta_->Unlink(scope, parent, name);
}

absl::Status FakeClusterClient::Rmdir(const Scope& scope, InodeId parent, std::string_view name) {
  RETURN_IF_ERROR(Enter("Rmdir"));
  RETURN_IF_ERROR(CheckIno(parent));
  return meta_->Rmdir(scope, parent, name);
}

absl::StatusOr<UnlinkResult> FakeClusterClient::Rename(const Scope& scope, InodeId parent,
                                                       std::string_view name, InodeId new_parent,
                                                       std::string_view new_name, uint32_t flags) {
  RETURN_IF_ERROR(Enter("Rename"));
  RETURN_IF_ERROR(CheckIno(parent));
  RETURN_IF_ERROR(CheckIno(new_parent));
  return meta_->Rename(scope, parent, name, new_parent, new_name, flags);
}

absl::StatusOr<InodeAttr> FakeClusterClient::Symlink(const Scope& scope, InodeId parent,
                                                     std::string_view name, std::string_view target,
                                                     const Caller& caller) {
  RETURN_IF_ERROR(Enter("Symlink"));
  RETURN_IF_ERROR(CheckIno(parent));
  return meta_->Symlink(scope, parent, name, target, caller);
}

absl::StatusOr<std::string> FakeClusterClient::ReadLink(const Scope& scope, InodeId ino) {
  RETURN_IF_ERROR(Enter("ReadLink"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->ReadLink(scope, ino);
}

absl::StatusOr<InodeAttr> FakeClusterClient::Link(const Scope& scope, InodeId ino,
                                                  InodeId new_parent, std::string_view new_name) {
  RETURN_IF_ERROR(Enter("Link"));
  RETURN_IF_ERROR(CheckIno(ino));
  RETURN_IF_ERROR(CheckIno(new_parent));
  return meta_->Link(scope, ino, new_parent, new_name);
}

absl::StatusOr<std::string> FakeClusterClient::GetXattr(const Scope& scope, InodeId ino,
                                                        std::string_view name) {
  RETURN_IF_ERROR(Enter("GetXattr"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->GetXattr(scope, ino, name);
}

absl::Status FakeClusterClient::SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                                         std::string_view value, uint32_t flags) {
  RETURN_IF_ERROR(Enter("SetXattr"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->SetXattr(scope, ino, name, value, flags);
}

absl::StatusOr<std::vector<std::string>> FakeClusterClient::ListXattr(const Scope& scope,
                                                                      InodeId ino) {
  RETURN_IF_ERROR(Enter("ListXattr"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->ListXattr(scope, ino);
}

absl::Status FakeClusterClient::RemoveXattr(const Scope& scope, InodeId ino,
                                            std::string_view name) {
  RETURN_IF_ERROR(Enter("RemoveXattr"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->RemoveXattr(scope, ino, name);
}

absl::StatusOr<ScopeUsage> FakeClusterClient::StatFs(const Scope& scope) {
  RETURN_IF_ERROR(Enter("StatFs"));
  return meta_->GetUsage(scope);
}

absl::Status FakeClusterClient::Sync(const Scope& scope) {
  RETURN_IF_ERROR(Enter("Sync"));
  RETURN_IF_ERROR(meta_->GetUsage(scope).status());
  return meta_->Sync();
}

absl::StatusOr<ChunkMap> FakeClusterClient::GetChunkMap(const Scope& scope, InodeId ino) {
  RETURN_IF_ERROR(Enter("GetChunkMap"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->GetChunkMap(scope, ino);
}

absl::StatusOr<InodeAttr> FakeClusterClient::CommitContent(const Scope& scope, InodeId ino,
                                                           uint64_t expected_version, uint64_t size,
                                                           uint32_t chunk_size,
                                                           const std::vector<ChunkRef>& chunks,
                                                           Timespec mtime) {
  return CommitContentWithSmallChunks(scope, ino, expected_version, size, chunk_size, chunks,
                                      mtime, {});
}

absl::StatusOr<InodeAttr> FakeClusterClient::CommitContentWithSmallChunks(
    const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size,
    uint32_t chunk_size, const std::vector<ChunkRef>& chunks, Timespec mtime,
    const std::vector<std::string_view>& small_chunks) {
  RETURN_IF_ERROR(Enter("CommitContent"));
  RETURN_IF_ERROR(CheckIno(ino));
  // The server's checks, in its order (src/server/namespace_service.cc).
  std::vector<MetadataStore::SmallChunk> small;
  std::set<ChunkId> carried;
  uint64_t small_bytes = 0;
  for (std::string_view data : small_chunks) {
    small_bytes += data.size();
    if (data.size() > kMaxSmallChunkBytes || small_bytes > kMaxSmallChunksBytes) {
      return absl::InvalidArgumentError("small chunks over the limits");
    }
    small.push_back(MetadataStore::SmallChunk{ChunkId::Of(data), data});
    carried.insert(small.back().id);
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (!chunks[i].id || carried.count(*chunks[i].id) > 0) continue;
    absl::StatusOr<uint64_t> stored = chunks_->Stat(scope, *chunks[i].id);
    if (stored.status().code() == absl::StatusCode::kNotFound) {
      return PosixError(ENOENT, fmt::format("chunk {} ({}) is not stored; upload it first", i,
                                            chunks[i].id->ToHex()));
    }
    RETURN_IF_ERROR(stored.status());
    if (*stored != chunks[i].length) {
      return PosixError(EINVAL, fmt::format("chunk {} is stored with {} bytes, commit says {}", i,
                                            *stored, chunks[i].length));
    }
  }
  if (small.empty()) {
    return meta_->CommitContent(scope, ino, expected_version, size, chunk_size, chunks, mtime);
  }
  return meta_->CommitContentWithSmallChunks(scope, ino, expected_version, size, chunk_size,
                                             chunks, mtime, small);
}

absl::Status FakeClusterClient::ReleaseInode(const Scope& scope, InodeId ino) {
  RETURN_IF_ERROR(Enter("ReleaseInode"));
  RETURN_IF_ERROR(CheckIno(ino));
  return meta_->ReleaseInode(scope, ino);
}

absl::StatusOr<std::vector<std::optional<uint64_t>>> FakeClusterClient::HasChunks(
    const Scope& scope, const std::vector<ChunkId>& ids) {
  RETURN_IF_ERROR(Enter("HasChunks"));
  std::vector<std::optional<uint64_t>> out;
  out.reserve(ids.size());
  for (const ChunkId& id : ids) {
    absl::StatusOr<uint64_t> size = chunks_->Stat(scope, id);
    if (size.ok()) {
      out.push_back(*size);
    } else if (size.status().code() == absl::StatusCode::kNotFound) {
      out.push_back(std::nullopt);
    } else {
      return size.status();
    }
  }
  return out;
}

absl::Status FakeClusterClient::PutChunks(const Scope& scope,
                                          const std::vector<std::string_view>& chunks) {
  std::vector<ChunkId> ids;
  ids.reserve(chunks.size());
  for (std::string_view data : chunks) ids.push_back(ChunkId::Of(data));
  return PutHashedChunks(scope, ids, chunks);
}

absl::Status FakeClusterClient::PutHashedChunks(const Scope& scope, const std::vector<ChunkId>& ids,
                                                const std::vector<std::string_view>& chunks) {
  RETURN_IF_ERROR(Enter("PutChunks"));  // The same method on the wire.
  if (ids.size() != chunks.size()) {
    return absl::InvalidArgumentError("PutHashedChunks: one id per chunk");
  }
  for (std::string_view data : chunks) {
    if (data.size() > kMaxChunkSize) {
      return PosixError(EINVAL, fmt::format("chunk of {} bytes is over the {} byte limit",
                                            data.size(), kMaxChunkSize));
    }
  }
  // As the server: chunks go only into a scope that exists.
  RETURN_IF_ERROR(meta_->OpenScope(scope, /*create=*/false).status());
  // The store checks each chunk against its id, as the server's does.
  for (size_t k = 0; k < chunks.size(); ++k) RETURN_IF_ERROR(chunks_->Put(scope, ids[k], chunks[k]));
  return absl::OkStatus();
}

absl::StatusOr<std::string> FakeClusterClient::GetChunk(const Scope& scope, const ChunkId& id,
                                                        uint64_t offset, uint64_t length) {
  RETURN_IF_ERROR(Enter("GetChunk"));
  return chunks_->Get(scope, id, offset, length);
}

// One WatchScope subscription: live until ended or destroyed. A callback
// runs under `mu`, so destroying the subscription waits for it.
struct FakeClusterClient::FeedSub {
  std::string scope;
  std::function<void(ScopeChanges)> on_changes;
  std::function<void(absl::Status)> on_end;
  std::mutex mu;
  bool live = true;  // guarded by mu
};

namespace {

class FakeSubscription final : public ChangeSubscription {
 public:
  explicit FakeSubscription(std::function<void()> end) : end_(std::move(end)) {}
  ~FakeSubscription() override { end_(); }

 private:
  std::function<void()> end_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChangeSubscription>> FakeClusterClient::WatchScope(
    const Scope& scope, std::function<void(ScopeChanges)> on_changes,
    std::function<void(absl::Status)> on_end) {
  RETURN_IF_ERROR(Enter("WatchScope"));
  auto sub = std::make_shared<FeedSub>();
  sub->scope = scope.ToString();
  sub->on_changes = std::move(on_changes);
  sub->on_end = std::move(on_end);
  {
    std::lock_guard lock(mu_);
    std::erase_if(feed_subs_, [](const std::shared_ptr<FeedSub>& s) {
      std::lock_guard sub_lock(s->mu);
      return !s->live;
    });
    feed_subs_.push_back(sub);
  }
  return std::unique_ptr<ChangeSubscription>(
      std::make_unique<FakeSubscription>([sub] {
        std::lock_guard lock(sub->mu);
        sub->live = false;
      }));
}

void FakeClusterClient::FeedSend(const Scope& scope, const ScopeChanges& changes) {
  std::vector<std::shared_ptr<FeedSub>> subs;
  {
    std::lock_guard lock(mu_);
    subs = feed_subs_;
  }
  for (const auto& sub : subs) {
    std::lock_guard lock(sub->mu);
    if (sub->live && sub->scope == scope.ToString()) sub->on_changes(changes);
  }
}

void FakeClusterClient::FeedEnd(const Scope& scope, const absl::Status& status) {
  std::vector<std::shared_ptr<FeedSub>> subs;
  {
    std::lock_guard lock(mu_);
    subs = feed_subs_;
  }
  for (const auto& sub : subs) {
    std::lock_guard lock(sub->mu);
    if (!sub->live || sub->scope != scope.ToString()) continue;
    sub->live = false;
    sub->on_end(status);
  }
}

size_t FakeClusterClient::FeedWatchers(const Scope& scope) const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& sub : feed_subs_) {
    std::lock_guard sub_lock(sub->mu);
    if (sub->live && sub->scope == scope.ToString()) ++n;
  }
  return n;
}

}  // namespace traincache::testing
