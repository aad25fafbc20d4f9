#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <optional>
#include <set>

#include "rpc/convert.h"
#include "server/services.h"
#include "traincache/status.h"

namespace traincache::server {

using rpc::FromProto;
using rpc::ToProto;

namespace {

Caller CallerOf(const v1::Caller& c) { return Caller{c.uid(), c.gid()}; }

// The call's id for at-most-once application (metadata_store.h RequestId);
// empty when the client sent none.
RequestId RequestOf(const v1::RequestId& r) { return RequestId{r.client(), r.seq()}; }

absl::Status CheckIno(uint64_t ino) {
  if (ino == 0) return PosixError(EINVAL, "inode number 0");
  return absl::OkStatus();
}

// A name operation in a directory that no longer exists (removed, or
// replaced by a rename on another node) fails with ESTALE, not ENOENT: the
// kernel then looks the directory's own name up again and retries, instead of
// failing while its cached entry for the old directory lives. Only an ENOENT
// answer costs the extra (local) read.
absl::Status StaleIfDirGone(ServiceContext& ctx, const Scope& scope,
                            std::initializer_list<uint64_t> dirs, absl::Status status) {
  if (ErrnoOf(status) != ENOENT) return status;
  // A scope that does not exist stays ENOENT (its root is gone too).
  if (!ctx.meta().GetAttr(scope, kRootInode).ok()) return status;
  for (uint64_t dir : dirs) {
    if (ctx.meta().GetAttr(scope, dir).status().code() == absl::StatusCode::kNotFound) {
      return PosixError(ESTALE, fmt::format("directory inode {} is gone: {}", dir,
                                            std::string(status.message())));
    }
  }
  return status;
}

template <typename T>
absl::StatusOr<T> StaleIfDirGone(ServiceContext& ctx, const Scope& scope,
                                 std::initializer_list<uint64_t> dirs, absl::StatusOr<T> result) {
  if (result.ok()) return result;
  return StaleIfDirGone(ctx, scope, dirs, result.status());
}

// Tells the scope's watchers what the call changed (change_feed.h). Called
// once the store applied the change and before the call is answered, so the
// other nodes' invalidation is under way when the caller learns of success.
void Publish(ServiceContext& ctx, grpc::CallbackServerContext* c, const Scope& scope,
             std::vector<FeedChange> changes) {
  ctx.feed().Publish(scope, ServiceContext::NodeIdOf(c), std::move(changes));
}

// A WatchScope call: the feed hands it batches (one at a time) and it writes
// them. Finish is never called while a write is outstanding: an end that
// comes then (the feed closing, a cancel) waits for OnWriteDone.
class WatchReactor final : public grpc::ServerWriteReactor<v1::ScopeChanges> {
 public:
  WatchReactor(ServiceContext* ctx, grpc::CallbackServerContext* call,
               const v1::WatchScopeRequest* req)
      : ctx_(ctx) {
    absl::Status status = Start(call, *req);
    if (!status.ok()) End(status);
  }

  void OnWriteDone(bool ok) override {
    std::optional<absl::Status> finish;
    {
      std::lock_guard lock(mu_);
      writing_ = false;
      if (!ok && !finishing_) finishing_ = absl::CancelledError("the watcher went away");
      if (finishing_ && !finished_) {
        finished_ = true;
        finish = finishing_;
      }
    }
    if (finish) {
      status_ = *finish;
      Finish(rpc::ToGrpcStatus(*finish));
      return;
    }
    ctx_->feed().SendDone(id_.load());
  }

  void OnCancel() override { End(absl::CancelledError("the watcher cancelled")); }

  void OnDone() override {
    // After this no batch is handed to the reactor any more.
    if (uint64_t id = id_.load(); id != 0) ctx_->feed().Unwatch(id);
    ctx_->Finished("rpc.WatchScope", status_, started_);
    delete this;
  }

 private:
  absl::Status Start(grpc::CallbackServerContext* call, const v1::WatchScopeRequest& req) {
    RETURN_IF_ERROR(ctx_->CheckAuth(call));
    ASSIGN_OR_RETURN(Scope scope, ctx_->ScopeOf(call, req.scope()));
    if (req.node_id().empty() || req.node_id().size() > 256) {
      return absl::InvalidArgumentError(
          fmt::format("node_id must be 1..256 bytes, got {}", req.node_id().size()));
    }
    // Only a scope that exists: its watchers are nodes that mounted it.
    RETURN_IF_ERROR(ctx_->meta().OpenScope(scope, /*create=*/false).status());
    const uint64_t id = ctx_->feed().Watch(
        scope, req.node_id(), [this](uint64_t id, FeedBatch batch) { Send(id, std::move(batch)); },
        [this] { End(absl::UnavailableError("the server is stopping")); });
    if (id == 0) return absl::UnavailableError("the server is stopping");
    id_.store(id);
    ctx_->counters().Add("feed.watches");
    return absl::OkStatus();
  }

  // From the feed, never two at once (the feed waits for SendDone).
  void Send(uint64_t id, FeedBatch batch) {
    id_.store(id);  // The start batch comes before Watch has returned the id.
    {
      std::lock_guard lock(mu_);
      if (finished_ || finishing_) return;
      writing_ = true;
    }
    msg_.Clear();
    msg_.set_start(batch.start);
    msg_.set_lost(batch.lost);
    for (auto& [parent, name] : batch.entries) {
      v1::EntryChange* e = msg_.add_entries();
      e->set_parent(parent);
      e->set_name(std::move(name));
    }
    for (InodeId ino : batch.inodes) msg_.add_inodes(ino);
    ctx_->counters().Add("feed.messages");
    ctx_->counters().Add("feed.changes", batch.entries.size() + batch.inodes.size());
    if (batch.lost) ctx_->counters().Add("feed.lost");
    StartWrite(&msg_);
  }

  void End(const absl::Status& status) {
    {
      std::lock_guard lock(mu_);
      if (finished_ || finishing_) return;
      finishing_ = status;
      if (writing_) return;  // OnWriteDone finishes.
      finished_ = true;
    }
    status_ = status;
    Finish(rpc::ToGrpcStatus(status));
  }

  ServiceContext* ctx_;
  const ServiceContext::Clock::time_point started_ = ServiceContext::Clock::now();
  std::atomic<uint64_t> id_{0};
  v1::ScopeChanges msg_;  // The one write outstanding.
  absl::Status status_;   // What the stream ended with (for its counters).
  std::mutex mu_;
  bool writing_ = false;                   // guarded by mu_
  std::optional<absl::Status> finishing_;  // guarded by mu_: Finish wanted with this
  bool finished_ = false;                  // guarded by mu_: Finish called
};

}  // namespace

// Every handler: parse the scope and check the caller may use it
// (require_attached_scopes), check inode numbers, call the store, fill the
// response. The store validates names and POSIX rules.
#define TC_SCOPE(var, req) ASSIGN_OR_RETURN(Scope var, ctx_->ScopeOf(c, (req)->scope()))

grpc::ServerUnaryReactor* NamespaceService::OpenScope(grpc::CallbackServerContext* c,
                                                      const v1::OpenScopeRequest* req,
                                                      v1::OpenScopeResponse* resp) {
  return ctx_->Unary(c, "rpc.OpenScope", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    ASSIGN_OR_RETURN(ScopeInfo info, ctx_->OpenScope(scope, req->create()));
    ASSIGN_OR_RETURN(InodeAttr root, ctx_->meta().GetAttr(scope, kRootInode));
    ToProto(root, resp->mutable_root());
    resp->set_generation(info.generation);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Lookup(grpc::CallbackServerContext* c,
                                                   const v1::LookupRequest* req,
                                                   v1::AttrResponse* resp) {
  return ctx_->Unary(c, "rpc.Lookup", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->parent()));
    ASSIGN_OR_RETURN(InodeAttr attr, StaleIfDirGone(*ctx_, scope, {req->parent()}, ctx_->meta().Lookup(scope, req->parent(), req->name())));
    ToProto(attr, resp->mutable_attr());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::GetAttr(grpc::CallbackServerContext* c,
                                                    const v1::GetAttrRequest* req,
                                                    v1::AttrResponse* resp) {
  return ctx_->Unary(c, "rpc.GetAttr", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    ASSIGN_OR_RETURN(InodeAttr attr, ctx_->meta().GetAttr(scope, req->ino()));
    ToProto(attr, resp->mutable_attr());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::SetAttr(grpc::CallbackServerContext* c,
                                                    const v1::SetAttrRequest* req,
                                                    v1::AttrResponse* resp) {
  return ctx_->Unary(c, "rpc.SetAttr", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    SetAttrRequest set;
    if (req->has_mode()) set.mode = req->mode();
    if (req->has_uid()) set.uid = req->uid();
    if (req->has_gid()) set.gid = req->gid();
    if (req->has_size()) set.size = req->size();
    if (req->has_atime()) set.atime = FromProto(req->atime());
    if (req->has_mtime()) set.mtime = FromProto(req->mtime());
    ASSIGN_OR_RETURN(InodeAttr attr, ctx_->meta().SetAttr(scope, req->ino(), set));
    Publish(*ctx_, c, scope, {FeedChange::Inode(req->ino())});
    ToProto(attr, resp->mutable_attr());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::ReadDir(grpc::CallbackServerContext* c,
                                                    const v1::ReadDirRequest* req,
                                                    v1::ReadDirResponse* resp) {
  return ctx_->Unary(c, "rpc.ReadDir", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    if (req->after().size() > kMaxNameBytes) return PosixError(ENAMETOOLONG, "after is too long");
    // The store caps the page at kMaxReadDirEntries (0 means the cap).
    ASSIGN_OR_RETURN(ReadDirPage page, StaleIfDirGone(*ctx_, scope, {req->ino()},
                                   ctx_->meta().ReadDir(scope, req->ino(), req->after(),
                                                        req->limit(), req->plus())));
    for (const DirEntry& e : page.entries) ToProto(e, resp->add_entries());
    resp->set_more(page.more);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Mkdir(grpc::CallbackServerContext* c,
                                                  const v1::MkdirRequest* req,
                                                  v1::AttrResponse* resp) {
  return ctx_->Unary(c, "rpc.Mkdir", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->parent()));
    ASSIGN_OR_RETURN(InodeAttr attr, StaleIfDirGone(*ctx_, scope, {req->parent()},
                                    ctx_->meta().Mkdir(scope, req->parent(), req->name(),
                                                       req->mode(), CallerOf(req->caller()),
                                                       RequestOf(req->request()))));
    Publish(*ctx_, c, scope, {FeedChange::Entry(req->parent(), req->name())});
    ToProto(attr, resp->mutable_attr());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Create(grpc::CallbackServerContext* c,
                                                   const v1::CreateRequest* req,
                                                   v1::CreateResponse* resp) {
  return ctx_->Unary(c, "rpc.Create", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->parent()));
    ASSIGN_OR_RETURN(CreateResult r,
                     StaleIfDirGone(*ctx_, scope, {req->parent()},
                                    ctx_->meta().Create(scope, req->parent(), req->name(),
                                                        req->mode(), CallerOf(req->caller()),
                                                        req->exclusive(), RequestOf(req->request()))));
    if (r.created) Publish(*ctx_, c, scope, {FeedChange::Entry(req->parent(), req->name())});
    ToProto(r.attr, resp->mutable_attr());
    resp->set_created(r.created);
    if (r.parent) ToProto(*r.parent, resp->mutable_parent());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Unlink(grpc::CallbackServerContext* c,
                                                   const v1::UnlinkRequest* req,
                                                   v1::UnlinkResponse* resp) {
  return ctx_->Unary(c, "rpc.Unlink", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->parent()));
    ASSIGN_OR_RETURN(UnlinkResult r, StaleIfDirGone(*ctx_, scope, {req->parent()}, ctx_->meta().Unlink(scope, req->parent(), req->name(), RequestOf(req->request()))));
    std::vector<FeedChange> changes = {FeedChange::Entry(req->parent(), req->name())};
    if (r.ino != 0) changes.push_back(FeedChange::Inode(r.ino));  // One link less.
    Publish(*ctx_, c, scope, std::move(changes));
    resp->set_ino(r.ino);
    resp->set_nlink(r.nlink);
    resp->set_orphaned(r.orphaned);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Rmdir(grpc::CallbackServerContext* c,
                                                  const v1::RmdirRequest* req, v1::Empty*) {
  return ctx_->Unary(c, "rpc.Rmdir", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->parent()));
    RETURN_IF_ERROR(StaleIfDirGone(*ctx_, scope, {req->parent()},
                                   ctx_->meta().Rmdir(scope, req->parent(), req->name(),
                                                      RequestOf(req->request()))));
    Publish(*ctx_, c, scope, {FeedChange::Entry(req->parent(), req->name())});
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Rename(grpc::CallbackServerContext* c,
                                                   const v1::RenameRequest* req,
                                                   v1::UnlinkResponse* resp) {
  return ctx_->Unary(c, "rpc.Rename", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->parent()));
    RETURN_IF_ERROR(CheckIno(req->new_parent()));
    ASSIGN_OR_RETURN(UnlinkResult r,
                     StaleIfDirGone(*ctx_, scope, {req->parent(), req->new_parent()},
                                    ctx_->meta().Rename(scope, req->parent(), req->name(),
                                                        req->new_parent(), req->new_name(),
                                                        req->flags(), RequestOf(req->request()))));
    std::vector<FeedChange> changes = {FeedChange::Entry(req->parent(), req->name()),
                                       FeedChange::Entry(req->new_parent(), req->new_name())};
    if (r.ino != 0) changes.push_back(FeedChange::Inode(r.ino));  // Replaced: one link less.
    Publish(*ctx_, c, scope, std::move(changes));
    resp->set_ino(r.ino);
    resp->set_nlink(r.nlink);
    resp->set_orphaned(r.orphaned);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Symlink(grpc::CallbackServerContext* c,
                                                    const v1::SymlinkRequest* req,
                                                    v1::AttrResponse* resp) {
  return ctx_->Unary(c, "rpc.Symlink", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->parent()));
    ASSIGN_OR_RETURN(InodeAttr attr,
                     StaleIfDirGone(*ctx_, scope, {req->parent()},
                                    ctx_->meta().Symlink(scope, req->parent(), req->name(),
                                                         req->target(), CallerOf(req->caller()),
                                                         RequestOf(req->request()))));
    Publish(*ctx_, c, scope, {FeedChange::Entry(req->parent(), req->name())});
    ToProto(attr, resp->mutable_attr());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::ReadLink(grpc::CallbackServerContext* c,
                                                     const v1::GetAttrRequest* req,
                                                     v1::ReadLinkResponse* resp) {
  return ctx_->Unary(c, "rpc.ReadLink", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    ASSIGN_OR_RETURN(std::string target, ctx_->meta().ReadLink(scope, req->ino()));
    resp->set_target(std::move(target));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Link(grpc::CallbackServerContext* c,
                                                 const v1::LinkRequest* req,
                                                 v1::AttrResponse* resp) {
  return ctx_->Unary(c, "rpc.Link", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    RETURN_IF_ERROR(CheckIno(req->new_parent()));
    ASSIGN_OR_RETURN(InodeAttr attr,
                     StaleIfDirGone(*ctx_, scope, {req->ino(), req->new_parent()},
                                    ctx_->meta().Link(scope, req->ino(), req->new_parent(), req->new_name(),
                                                      RequestOf(req->request()))));
    Publish(*ctx_, c, scope,
            {FeedChange::Entry(req->new_parent(), req->new_name()), FeedChange::Inode(req->ino())});
    ToProto(attr, resp->mutable_attr());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::GetXattr(grpc::CallbackServerContext* c,
                                                     const v1::XattrRequest* req,
                                                     v1::XattrResponse* resp) {
  return ctx_->Unary(c, "rpc.GetXattr", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    ASSIGN_OR_RETURN(std::string value, ctx_->meta().GetXattr(scope, req->ino(), req->name()));
    resp->set_value(std::move(value));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::SetXattr(grpc::CallbackServerContext* c,
                                                     const v1::XattrRequest* req, v1::Empty*) {
  return ctx_->Unary(c, "rpc.SetXattr", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    RETURN_IF_ERROR(
        ctx_->meta().SetXattr(scope, req->ino(), req->name(), req->value(), req->flags(),
                              RequestOf(req->request())));
    Publish(*ctx_, c, scope, {FeedChange::Inode(req->ino())});
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::ListXattr(grpc::CallbackServerContext* c,
                                                      const v1::GetAttrRequest* req,
                                                      v1::ListXattrResponse* resp) {
  return ctx_->Unary(c, "rpc.ListXattr", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    ASSIGN_OR_RETURN(std::vector<std::string> names, ctx_->meta().ListXattr(scope, req->ino()));
    for (std::string& n : names) resp->add_names(std::move(n));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::RemoveXattr(grpc::CallbackServerContext* c,
                                                        const v1::XattrRequest* req, v1::Empty*) {
  return ctx_->Unary(c, "rpc.RemoveXattr", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    RETURN_IF_ERROR(
        ctx_->meta().RemoveXattr(scope, req->ino(), req->name(), RequestOf(req->request())));
    Publish(*ctx_, c, scope, {FeedChange::Inode(req->ino())});
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::StatFs(grpc::CallbackServerContext* c,
                                                   const v1::ScopeRequest* req,
                                                   v1::StatFsResponse* resp) {
  return ctx_->Unary(c, "rpc.StatFs", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    ASSIGN_OR_RETURN(ScopeUsage usage, ctx_->meta().GetUsage(scope));
    resp->set_quota_bytes(usage.quota_bytes);
    resp->set_used_bytes(usage.bytes);
    resp->set_inodes(usage.inodes);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::Sync(grpc::CallbackServerContext* c,
                                                 const v1::ScopeRequest* req, v1::Empty*) {
  return ctx_->Unary(c, "rpc.Sync", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(ctx_->meta().GetUsage(scope).status());  // NOT_FOUND if it does not exist.
    return ctx_->meta().Sync();
  });
}

grpc::ServerUnaryReactor* NamespaceService::GetChunkMap(grpc::CallbackServerContext* c,
                                                        const v1::GetAttrRequest* req,
                                                        v1::ChunkMapResponse* resp) {
  return ctx_->Unary(c, "rpc.GetChunkMap", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    ASSIGN_OR_RETURN(ChunkMap map, ctx_->meta().GetChunkMap(scope, req->ino()));
    resp->set_version(map.version);
    resp->set_size(map.size);
    resp->set_chunk_size(map.chunk_size);
    for (const ChunkRef& ref : map.chunks) ToProto(ref, resp->add_chunks());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::CommitContent(grpc::CallbackServerContext* c,
                                                          const v1::CommitRequest* req,
                                                          v1::AttrResponse* resp) {
  return ctx_->Unary(c, "rpc.CommitContent", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    ASSIGN_OR_RETURN(std::vector<ChunkRef> chunks, FromProto(req->chunks()));
    // Small chunks come with the commit and are stored by it (the store
    // checks their hash, size and that the commit references them).
    std::vector<MetadataStore::SmallChunk> small;
    std::set<ChunkId> carried;
    small.reserve(req->small_chunks_size());
    uint64_t small_bytes = 0;
    for (const std::string& data : req->small_chunks()) {
      small_bytes += data.size();
      // Before hashing anything: a request over the limits costs nothing.
      if (data.size() > kMaxSmallChunkBytes || small_bytes > kMaxSmallChunksBytes) {
        return absl::InvalidArgumentError(fmt::format(
            "small chunks: {} bytes, at most {} each and {} per commit", data.size(),
            kMaxSmallChunkBytes, kMaxSmallChunksBytes));
      }
      small.push_back(MetadataStore::SmallChunk{ChunkId::Of(data), data});
      carried.insert(small.back().id);
    }
    // Shared: the collector cannot delete a chunk between the check below and
    // the commit that references it.
    std::shared_lock lock(ctx_->ScopeLock(scope));
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (!chunks[i].id || carried.count(*chunks[i].id) > 0) continue;
      absl::StatusOr<uint64_t> stored = ctx_->chunks().Stat(scope, *chunks[i].id);
      if (stored.status().code() == absl::StatusCode::kNotFound) {
        return PosixError(ENOENT, fmt::format("chunk {} ({}) is not stored; upload it first", i,
                                              chunks[i].id->ToHex()));
      }
      RETURN_IF_ERROR(stored.status());
      // A writer commits chunks exactly as it made them. (A shorter length is
      // how the store itself records a truncation; accepting one here would
      // let a later extension show the cut-off bytes instead of zeros.)
      if (*stored != chunks[i].length) {
        return PosixError(EINVAL, fmt::format("chunk {} is stored with {} bytes, commit says {}",
                                              i, *stored, chunks[i].length));
      }
    }
    ASSIGN_OR_RETURN(InodeAttr attr,
                     small.empty()
                         ? ctx_->meta().CommitContent(scope, req->ino(), req->expected_version(),
                                                      req->size(), req->chunk_size(), chunks,
                                                      FromProto(req->mtime()))
                         : ctx_->meta().CommitContentWithSmallChunks(
                               scope, req->ino(), req->expected_version(), req->size(),
                               req->chunk_size(), chunks, FromProto(req->mtime()), small));
    if (!small.empty()) {
      // Stored like PutChunks' chunks, only in the commit's batch.
      ctx_->counters().Add("chunk.put.bytes", small_bytes);
      ctx_->counters().Add("chunk.put.count", small.size());
      ctx_->counters().Add("chunk.put.small_count", small.size());
    }
    Publish(*ctx_, c, scope, {FeedChange::Inode(req->ino())});
    ToProto(attr, resp->mutable_attr());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* NamespaceService::ReleaseInode(grpc::CallbackServerContext* c,
                                                         const v1::GetAttrRequest* req,
                                                         v1::Empty*) {
  return ctx_->Unary(c, "rpc.ReleaseInode", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    TC_SCOPE(scope, req);
    RETURN_IF_ERROR(CheckIno(req->ino()));
    return ctx_->meta().ReleaseInode(scope, req->ino());
  });
}

grpc::ServerWriteReactor<v1::ScopeChanges>* NamespaceService::WatchScope(
    grpc::CallbackServerContext* c, const v1::WatchScopeRequest* req) {
  return new WatchReactor(ctx_, c, req);
}

}  // namespace traincache::server
