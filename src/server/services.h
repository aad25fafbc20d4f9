// The gRPC services of traincache-server (proto/traincache/v1), as callback
// services over a ServiceContext. Each handler validates its request, calls
// the stores and converts the result; POSIX semantics live in the stores.
#ifndef TRAINCACHE_SERVER_SERVICES_H_
#define TRAINCACHE_SERVER_SERVICES_H_

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "server/affinity.h"
#include "server/lock_table.h"
#include "server/service_context.h"
#include "traincache/v1/admin.grpc.pb.h"
#include "traincache/v1/chunk.grpc.pb.h"
#include "traincache/v1/cluster.grpc.pb.h"
#include "traincache/v1/lock.grpc.pb.h"
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
  Reactor* Sync(Ctx*, const v1::ScopeRequest*, v1::Empty*) override;
  Reactor* GetChunkMap(Ctx*, const v1::GetAttrRequest*, v1::ChunkMapResponse*) override;
  Reactor* CommitContent(Ctx*, const v1::CommitRequest*, v1::AttrResponse*) override;
  Reactor* ReleaseInode(Ctx*, const v1::GetAttrRequest*, v1::Empty*) override;
  // Streams the scope's change feed (ctx->feed()) until the caller cancels
  // or the feed closes.
  grpc::ServerWriteReactor<v1::ScopeChanges>* WatchScope(Ctx*,
                                                         const v1::WatchScopeRequest*) override;

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
  grpc::ServerWriteReactor<v1::SummarizeResponse>* Summarize(Ctx*,
                                                             const v1::SummarizeRequest*) override;

 private:
  ServiceContext* ctx_;
  std::string server_id_;
};

// Cluster affinity (cluster.proto): Attach and the pin calls, answered from
// this server's PinStore or forwarded to the registry server.
class ClusterService final : public v1::Cluster::CallbackService {
 public:
  ClusterService(ServiceContext* ctx, ClusterTopology topology, std::string registry_address)
      : ctx_(ctx), topology_(std::move(topology)), registry_address_(std::move(registry_address)) {}

  using Ctx = grpc::CallbackServerContext;
  using Reactor = grpc::ServerUnaryReactor;
  Reactor* GetClusterInfo(Ctx*, const v1::GetClusterInfoRequest*, v1::ClusterInfo*) override;
  // Under require_attached_scopes, Attach records the job for the caller's
  // identity (ctx->attachments()) once the affinity decision allows it;
  // Detach forgets it.
  Reactor* Attach(Ctx*, const v1::AttachRequest*, v1::AttachResponse*) override;
  Reactor* Detach(Ctx*, const v1::DetachRequest*, v1::DetachResponse*) override;
  Reactor* GetPin(Ctx*, const v1::PinRef*, v1::Pin*) override;
  Reactor* ClaimPin(Ctx*, const v1::ClaimPinRequest*, v1::ClaimPinResponse*) override;
  Reactor* SetPin(Ctx*, const v1::SetPinRequest*, v1::Pin*) override;
  Reactor* ClearPin(Ctx*, const v1::PinRef*, v1::ClearPinResponse*) override;

 private:
  ServiceContext* ctx_;
  const ClusterTopology topology_;
  const std::string registry_address_;
};

// File locks across nodes (lock.proto): sessions with leases over one
// LockTable. A thread expires sessions not renewed within the lease.
//
// The table lives in memory. So that a restart does not hand out a lock a
// node still believes it holds, `marker` (a file) exists while any session
// does; a server that finds it at start keeps a grace period of one lease,
// in which only reclaims (lock.proto) are granted.
class LockService final : public v1::Locks::CallbackService {
 public:
  LockService(ServiceContext* ctx, std::chrono::milliseconds lease, std::string marker);
  ~LockService() override;

  using Ctx = grpc::CallbackServerContext;
  using Reactor = grpc::ServerUnaryReactor;
  Reactor* OpenSession(Ctx*, const v1::OpenSessionRequest*, v1::SessionResponse*) override;
  Reactor* KeepAlive(Ctx*, const v1::SessionRef*, v1::SessionResponse*) override;
  Reactor* CloseSession(Ctx*, const v1::SessionRef*, v1::SessionResponse*) override;
  Reactor* Lock(Ctx*, const v1::LockRequest*, v1::LockResponse*) override;
  Reactor* Unlock(Ctx*, const v1::LockRequest*, v1::LockResponse*) override;
  Reactor* TestLock(Ctx*, const v1::LockRequest*, v1::TestLockResponse*) override;

  LockTable& table() { return table_; }

 private:
  struct Session {
    std::string node;
    std::string identity;  // the opener's certificate CN ("" without one)
    std::chrono::steady_clock::time_point deadline;
  };
  // ENOLCK (FAILED_PRECONDITION) unless the session is alive.
  absl::Status CheckSession(uint64_t session);
  // Under require_attached_scopes: PERMISSION_DENIED unless the caller
  // opened `session` (OK for a session that is gone: CheckSession says so).
  // Lock, TestLock, Unlock and CloseSession check it.
  absl::Status CheckSessionOwner(uint64_t session, const grpc::CallbackServerContext* c);
  // OK, or why `req` may not be granted now (the grace period).
  absl::Status CheckGrace(const v1::LockRequest& req) const;
  // Makes the marker exist exactly while sessions_ is not empty. Requires mu_.
  void UpdateMarkerLocked();
  void ExpiryLoop();

  ServiceContext* ctx_;
  const std::chrono::milliseconds lease_;
  const std::string marker_;
  std::chrono::steady_clock::time_point grace_until_;  // set once, at construction
  bool marker_exists_ = false;                         // guarded by mu_
  LockTable table_;
  std::mutex mu_;
  std::map<uint64_t, Session> sessions_;  // guarded by mu_
  bool stopping_ = false;                 // guarded by mu_
  std::condition_variable cv_;
  std::thread expiry_;
};

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_SERVICES_H_
