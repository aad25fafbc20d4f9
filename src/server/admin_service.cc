#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <mutex>

#include "server/services.h"
#include "traincache/status.h"

namespace traincache::server {

grpc::ServerUnaryReactor* AdminService::Ping(grpc::CallbackServerContext* c,
                                             const v1::PingRequest*, v1::PingResponse* resp) {
  return ctx_->Unary(c, "rpc.Ping", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    resp->set_version(TRAINCACHE_VERSION);
    resp->set_server_id(server_id_);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::GetUsage(grpc::CallbackServerContext* c,
                                                 const v1::ScopeRef* req,
                                                 v1::UsageResponse* resp) {
  return ctx_->Unary(c, "rpc.GetUsage", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ParseScope(req->scope()));
    ASSIGN_OR_RETURN(ScopeUsage usage, ctx_->meta().GetUsage(scope));
    resp->set_used_bytes(usage.bytes);
    resp->set_inodes(usage.inodes);
    resp->set_quota_bytes(usage.quota_bytes);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::GetQuota(grpc::CallbackServerContext* c,
                                                 const v1::ScopeRef* req,
                                                 v1::QuotaResponse* resp) {
  return ctx_->Unary(c, "rpc.GetQuota", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ParseScope(req->scope()));
    ASSIGN_OR_RETURN(ScopeUsage usage, ctx_->meta().GetUsage(scope));
    resp->set_quota_bytes(usage.quota_bytes);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::SetQuota(grpc::CallbackServerContext* c,
                                                 const v1::SetQuotaRequest* req,
                                                 v1::QuotaResponse* resp) {
  return ctx_->Unary(c, "rpc.SetQuota", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ParseScope(req->scope()));
    // Setting a quota is how an operator prepares a scope before its first job.
    ASSIGN_OR_RETURN(ScopeInfo info, ctx_->OpenScope(scope, /*create=*/true));
    // A quota below what the scope holds would fail every later commit, even
    // deletions' follow-ups: refuse it and say what is used.
    if (req->quota_bytes() < info.usage.bytes) {
      return absl::FailedPreconditionError(fmt::format(
          "quota {} bytes is below the {} bytes {} uses now; delete files first or choose at "
          "least {}",
          req->quota_bytes(), info.usage.bytes, scope.ToString(), info.usage.bytes));
    }
    RETURN_IF_ERROR(ctx_->meta().SetQuota(scope, req->quota_bytes()));
    spdlog::info("scope {}: quota set to {} bytes", scope.ToString(), req->quota_bytes());
    resp->set_quota_bytes(req->quota_bytes());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::DeleteScope(grpc::CallbackServerContext* c,
                                                    const v1::ScopeRef* req,
                                                    v1::DeleteScopeResponse* resp) {
  return ctx_->Unary(c, "rpc.DeleteScope", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ParseScope(req->scope()));
    // Exclusive: no commit of this scope runs while its chunks go away.
    std::unique_lock lock(ctx_->ScopeLock(scope));
    uint64_t chunks = 0;
    RETURN_IF_ERROR(ctx_->chunks().List(scope, [&](const ChunkInfo&) {
      ++chunks;
      return absl::OkStatus();
    }));
    // Metadata first: once it is gone nothing can reference the chunks, and a
    // crash in between leaves only unreferenced chunk files, which the
    // deletion below (or a retry) removes.
    absl::Status meta = ctx_->meta().DeleteScope(scope);
    if (!meta.ok() && meta.code() != absl::StatusCode::kNotFound) return meta;
    RETURN_IF_ERROR(ctx_->chunks().DeleteScope(scope));
    // A deleted project has no pin either: its next first job pins it anew.
    bool had_pin = false;
    if (scope.kind() == ScopeKind::kProject) {
      ASSIGN_OR_RETURN(had_pin, ctx_->pins().Clear(scope.id()));
    }
    if (meta.code() == absl::StatusCode::kNotFound && chunks == 0 && !had_pin) return meta;
    spdlog::warn("scope {}: deleted with {} chunks", scope.ToString(), chunks);
    resp->set_chunks_deleted(chunks);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListScopes(grpc::CallbackServerContext* c,
                                                   const v1::ListScopesRequest*,
                                                   v1::ListScopesResponse* resp) {
  return ctx_->Unary(c, "rpc.ListScopes", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(std::vector<Scope> scopes, ctx_->meta().ListScopes());
    for (const Scope& s : scopes) resp->add_scopes(s.ToString());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::GetStats(grpc::CallbackServerContext* c,
                                                 const v1::GetStatsRequest*,
                                                 v1::GetStatsResponse* resp) {
  return ctx_->Unary(c, "rpc.GetStats", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    for (const auto& [name, value] : ctx_->counters().Snapshot()) {
      (*resp->mutable_counters())[name] = value;
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::CollectGarbage(grpc::CallbackServerContext* c,
                                                       const v1::ScopeRef* req,
                                                       v1::CollectGarbageResponse* resp) {
  return ctx_->Unary(c, "rpc.CollectGarbage", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ParseScope(req->scope()));
    ASSIGN_OR_RETURN(uint64_t deleted, ctx_->CollectGarbage(scope));
    resp->set_chunks_deleted(deleted);
    return absl::OkStatus();
  });
}

}  // namespace traincache::server
