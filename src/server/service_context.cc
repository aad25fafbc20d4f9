#include "server/service_context.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include "metrics/latency_histograms.h"
#include "rpc/client.h"
#include "rpc/convert.h"
#include "traincache/status.h"
#include "traincache/v1/admin.grpc.pb.h"
#include "traincache/v1/chunk.grpc.pb.h"
#include "traincache/v1/namespace.grpc.pb.h"

namespace traincache::server {

ServiceContext::ServiceContext(MetadataStore* meta, ChunkStore* chunks, Options options)
    : meta_(meta),
      chunks_(NewSmallChunkAwareStore(meta, chunks)),
      options_(std::move(options)),
      expected_auth_("Bearer " + options_.token),
      pool_(options_.worker_threads) {
  if (options_.metrics) {
    latency_ = std::make_unique<metrics::LatencyHistograms>(
        *options_.metrics, "traincache_server_rpc_duration_seconds",
        "Time from a call's arrival to its answer (a stream's: its whole life), by method",
        "method",
        rpc::MethodNames({v1::Namespace::service_full_name(), v1::Chunks::service_full_name(),
                          v1::Admin::service_full_name()}));
  }
}

ServiceContext::~ServiceContext() = default;

absl::Status ServiceContext::CheckAuth(const grpc::CallbackServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return absl::UnauthenticatedError("missing bearer token");
  const grpc::string_ref& got = it->second;
  // Constant-time compare so the token cannot be guessed byte by byte.
  if (got.size() != expected_auth_.size() ||
      CRYPTO_memcmp(got.data(), expected_auth_.data(), got.size()) != 0) {
    return absl::UnauthenticatedError("wrong bearer token");
  }
  return absl::OkStatus();
}

std::string ServiceContext::NodeIdOf(const grpc::CallbackServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(rpc::kNodeIdMetadata);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

std::string ServiceContext::PeerIdentity(const grpc::ServerContextBase* ctx) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return "";
  std::vector<grpc::string_ref> cn = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
  if (cn.empty()) return "";
  return std::string(cn.front().data(), cn.front().size());
}

absl::StatusOr<Scope> ServiceContext::ScopeOf(const grpc::ServerContextBase* ctx,
                                              const std::string& text) {
  ASSIGN_OR_RETURN(Scope scope, ParseScope(text));
  RETURN_IF_ERROR(CheckScopeAccess(ctx, scope));
  return scope;
}

absl::Status ServiceContext::CheckScopeAccess(const grpc::ServerContextBase* ctx,
                                              const Scope& scope) {
  if (options_.attachments == nullptr) return absl::OkStatus();
  const std::string identity = PeerIdentity(ctx);
  if (!identity.empty() && options_.attachments->Allows(identity, scope)) {
    return absl::OkStatus();
  }
  counters_.Add("scope_denied");
  if (identity.empty()) {
    return absl::PermissionDeniedError(fmt::format(
        "{}: the caller presented no client certificate with a CN, and this server serves a "
        "scope only to nodes with an attached job that uses it (require_attached_scopes)",
        scope.ToString()));
  }
  return absl::PermissionDeniedError(
      fmt::format("node '{}' has no attached job that uses {} (require_attached_scopes): "
                  "attach a job of it on this node first",
                  identity, scope.ToString()));
}

absl::StatusOr<Scope> ServiceContext::ParseScope(const std::string& text) {
  auto scope = Scope::Parse(text);
  if (!scope.ok()) counters_.Add("bad_scope");
  return scope;
}

absl::StatusOr<ScopeInfo> ServiceContext::OpenScope(const Scope& scope, bool create) {
  auto existing = meta_->OpenScope(scope, /*create=*/false);
  if (existing.ok() || !create || existing.status().code() != absl::StatusCode::kNotFound) {
    return existing;
  }
  // The quota is part of the creating batch: no window in which the scope
  // exists with another quota, and a concurrent SetQuota is never undone.
  ASSIGN_OR_RETURN(ScopeInfo info,
                   meta_->OpenScope(scope, /*create=*/true, options_.default_quota_bytes));
  spdlog::info("scope {}: created (quota {} bytes)", scope.ToString(), options_.default_quota_bytes);
  return info;
}

std::shared_mutex& ServiceContext::ScopeLock(const Scope& scope) {
  std::lock_guard lock(locks_mu_);
  auto& slot = scope_locks_[scope.ToString()];
  if (!slot) slot = std::make_unique<std::shared_mutex>();
  return *slot;
}

absl::StatusOr<uint64_t> ServiceContext::CollectGarbage(const Scope& scope) {
  Timespec orphan_cutoff = Now();
  orphan_cutoff.sec -= options_.orphan_grace_seconds;
  ASSIGN_OR_RETURN(uint64_t orphans, meta_->PurgeOrphans(scope, orphan_cutoff));
  ASSIGN_OR_RETURN(uint64_t chunks,
                   traincache::CollectGarbage(scope, *meta_, *chunks_, options_.gc_grace_seconds,
                                              &ScopeLock(scope)));
  if (orphans > 0 || chunks > 0) {
    spdlog::info("scope {}: collected {} orphan inodes and {} chunks", scope.ToString(), orphans,
                 chunks);
  }
  counters_.Add("gc.chunks_deleted", chunks);
  return chunks;
}

void ServiceContext::Finished(std::string_view method, const absl::Status& status,
                              Clock::time_point started) {
  if (latency_) {
    std::string_view name = method;
    if (name.starts_with("rpc.")) name.remove_prefix(4);
    if (prometheus::Histogram* h = latency_->Find(name)) {
      h->Observe(std::chrono::duration<double>(Clock::now() - started).count());
    }
  }
  counters_.Add(method);
  if (status.ok()) return;
  counters_.Add(fmt::format("{}.error.{}", method, absl::StatusCodeToString(status.code())));
  switch (status.code()) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnknown:
      spdlog::error("{}: {}", method, status.ToString());
      break;
    case absl::StatusCode::kUnauthenticated:
      spdlog::warn("{}: {}", method, status.message());
      break;
    default:
      spdlog::debug("{}: {}", method, status.ToString());
  }
}

grpc::ServerUnaryReactor* ServiceContext::Unary(grpc::CallbackServerContext* ctx,
                                                std::string_view method, Work work,
                                                std::function<absl::Status()> body) {
  Clock::time_point started = Clock::now();
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (absl::Status auth = CheckAuth(ctx); !auth.ok()) {
    Finished(method, auth, started);
    reactor->Finish(rpc::ToGrpcStatus(auth));
    return reactor;
  }
  if (work == Work::kQuick) {
    absl::Status status = body();
    // A read may have seen a commit whose WAL sync is still running; the
    // answer leaves only once that is durable (usually nothing is pending;
    // under metadata_sync = content-commits, namespace changes are not
    // waited for: see MetadataStore::WaitReadsDurable).
    if (status.ok()) status = meta_->WaitReadsDurable();
    Finished(method, status, started);
    reactor->Finish(rpc::ToGrpcStatus(status));
    return reactor;
  }
  pool_.Submit([this, reactor, method, started, body = std::move(body)] {
    absl::Status status = body();
    Finished(method, status, started);
    reactor->Finish(rpc::ToGrpcStatus(status));
  });
  return reactor;
}

}  // namespace traincache::server
