// The gRPC services of traincache-server (proto/traincache/v1), as callback
// services over a ServiceContext. Each handler validates its request, calls
// the stores and converts the result; POSIX semantics live in the stores.
#ifndef TRAINCACHE_SERVER_SERVICES_H_
#define TRAINCACHE_SERVER_SERVICES_H_

#include "server/service_context.h"
#include "traincache/v1/admin.grpc.pb.h"
#include "traincache/v1/chunk.grpc.pb.h"
#include "traincache/v1/namespace.grpc.pb.h"

namespace traincache::server {

class NamespaceService final : public v1::Namespace::CallbackService {
 public:
  explicit NamespaceService(ServiceContext* ctx) : ctx_(ctx) {}

  using Ctx = grpc::CallbackServerContext;
  using Reactor = grpc::ServerUnaryReactor;
  Reactor* OpenScope(Ctx*, const v1::OpenScopeRequest*, v1::OpenScopeResponse*) override;
  Reactor* Lookup(Ctx*, const v1::LookupRequest*, v1::AttrResponse*) override;
  Reactor* GetAttr(Ctx*, const v1::GetAttrRequest*, v1::AttrResponse*) override;
  Reactor* SetAttr(Ctx*, const v1::SetAttrRequest*, v1::AttrResponse*) override;
  Reactor* ReadDir(Ctx*, const v1::ReadDirRequest*, v1::ReadDirResponse*) override;
  Reactor* Mkdir(Ctx*, const v1::MkdirRequest*, v1::AttrResponse*) override;
  Reactor* Create(Ctx*, const v1::CreateRequest*, v1::CreateResponse*) override;
  Reactor* Unlink(Ctx*, const v1::UnlinkRequest*, v1::UnlinkResponse*) override;
  Reactor* Rmdir(Ctx*, const v1::RmdirRequest*, v1::Empty*) override;
  Reactor* Rename(Ctx*, const v1::RenameRequest*, v1::UnlinkResponse*) override;
  Reactor* Symlink(Ctx*, const v1::SymlinkRequest*, v1::AttrResponse*) override;
  Reactor* ReadLink(Ctx*, const v1::GetAttrRequest*, v1::ReadLinkResponse*) override;
  Reactor* Link(Ctx*, const v1::LinkRequest*, v1::AttrResponse*) override;
  Reactor* GetXattr(Ctx*, const v1::XattrRequest*, v1::XattrResponse*) override;
  Reactor* SetXattr(Ctx*, const v1::XattrRequest*, v1::Empty*) override;
  Reactor* ListXattr(Ctx*, const v1::GetAttrRequest*, v1::ListXattrResponse*) override;
  Reactor* RemoveXattr(Ctx*, const v1::XattrRequest*, v1::Empty*) override;
  Reactor* StatFs(Ctx*, const v1::ScopeRequest*, v1::StatFsResponse*) override;
  Reactor* GetChunkMap(Ctx*, const v1::GetAttrRequest*, v1::ChunkMapResponse*) override;
  Reactor* CommitContent(Ctx*, const v1::CommitRequest*, v1::AttrResponse*) override;
  Reactor* ReleaseInode(Ctx*, const v1::GetAttrRequest*, v1::Empty*) override;

 private:
  ServiceContext* ctx_;
};

class ChunkService final : public v1::Chunks::CallbackService {
 public:
  explicit ChunkService(ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* HasChunks(grpc::CallbackServerContext*, const v1::HasChunksRequest*,
                                      v1::HasChunksResponse*) override;
  grpc::ServerReadReactor<v1::PutChunksRequest>* PutChunks(grpc::CallbackServerContext*,
                                                           v1::PutChunksResponse*) override;
  grpc::ServerWriteReactor<v1::GetChunkResponse>* GetChunk(grpc::CallbackServerContext*,
                                                           const v1::GetChunkRequest*) override;

 private:
  ServiceContext* ctx_;
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  AdminService(ServiceContext* ctx, std::string server_id)
      : ctx_(ctx), server_id_(std::move(server_id)) {}

  using Ctx = grpc::CallbackServerContext;
  using Reactor = grpc::ServerUnaryReactor;
  Reactor* Ping(Ctx*, const v1::PingRequest*, v1::PingResponse*) override;
  Reactor* GetUsage(Ctx*, const v1::ScopeRef*, v1::UsageResponse*) override;
  Reactor* GetQuota(Ctx*, const v1::ScopeRef*, v1::QuotaResponse*) override;
  Reactor* SetQuota(Ctx*, const v1::SetQuotaRequest*, v1::QuotaResponse*) override;
  Reactor* DeleteScope(Ctx*, const v1::ScopeRef*, v1::DeleteScopeResponse*) override;
  Reactor* ListScopes(Ctx*, const v1::ListScopesRequest*, v1::ListScopesResponse*) override;
  Reactor* GetStats(Ctx*, const v1::GetStatsRequest*, v1::GetStatsResponse*) override;
  Reactor* CollectGarbage(Ctx*, const v1::ScopeRef*, v1::CollectGarbageResponse*) override;
  // Walks the scope on the worker pool (scope_summary.h), then streams it.
  grpc::ServerWriteReactor<v1::SummarizeResponse>* Summarize(
      Ctx*, const v1::SummarizeRequest*) override;

 private:
  ServiceContext* ctx_;
  std::string server_id_;
};

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_SERVICES_H_
