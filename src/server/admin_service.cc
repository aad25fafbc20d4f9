#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <mutex>

#include "rpc/convert.h"
#include "server/scope_summary.h"
#include "server/services.h"
#include "traincache/status.h"

namespace traincache::server {

namespace {

// Bounds of one Summarize message after the header (admin.proto): at most
// this many entries, and no entry is added once the message holds this many
// bytes (so a message exceeds it by at most one path).
constexpr size_t kSummaryBatchEntries = 1000;
constexpr size_t kSummaryBatchBytes = 1 << 20;

// Walks the scope on the worker pool (it reads the whole scope: seconds for
// millions of entries), then streams the header and the entries in batches,
// one message in flight at a time: each batch is built from the in-memory
// summary when the previous write is done, so the stream never holds more
// than one batch in protobuf form.
class SummarizeReactor final : public grpc::ServerWriteReactor<v1::SummarizeResponse> {
 public:
  SummarizeReactor(ServiceContext* ctx, grpc::CallbackServerContext* call,
                   const v1::SummarizeRequest* req)
      : ctx_(ctx) {
    if (absl::Status auth = ctx_->CheckAuth(call); !auth.ok()) {
      End(auth);
      return;
    }
    // `call` and `req` live until OnDone, which cannot come before Finish.
    ctx_->pool().Submit([this, call, req] {
      absl::Status status = Load(*req, [call] { return call->IsCancelled(); });
      if (!status.ok()) {
        End(status);
        return;
      }
      msg_.Clear();
      v1::SummaryHeader* header = msg_.mutable_header();
      header->set_captured_at(summary_.captured_at.sec);
      header->set_total_files(summary_.total_files);
      header->set_total_size_bytes(summary_.total_size);
      header->set_entries(summary_.items.size());
      StartWrite(&msg_);
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(absl::CancelledError("client went away"));
      return;
    }
    NextBatch();
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Load(const v1::SummarizeRequest& req, const std::function<bool()>& cancelled) {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ParseScope(req.scope()));
    auto start = std::chrono::steady_clock::now();
    ASSIGN_OR_RETURN(summary_, SummarizeScope(ctx_->meta(), scope, cancelled));
    // As every read answer (MetadataStore::WaitReadsDurable).
    RETURN_IF_ERROR(ctx_->meta().WaitReadsDurable());
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    spdlog::info("scope {}: summarized {} entries ({} files, {} bytes) in {} ms",
                 scope.ToString(), summary_.items.size(), summary_.total_files,
                 summary_.total_size, ms);
    return absl::OkStatus();
  }

  void NextBatch() {
    if (next_ == summary_.items.size()) {
      summary_ = ScopeSummary();  // Free the listing before the call winds down.
      End(absl::OkStatus());
      return;
    }
    msg_.Clear();
    size_t bytes = 0;
    while (next_ < summary_.items.size() &&
           static_cast<size_t>(msg_.entries_size()) < kSummaryBatchEntries &&
           bytes < kSummaryBatchBytes) {
      const SummaryItem& item = summary_.items[next_];
      v1::SummaryEntry* e = msg_.add_entries();
      e->set_path(summary_.PathOf(next_));
      e->set_size_bytes(item.size);
      rpc::ToProto(item.mtime, e->mutable_mtime());
      e->set_mode(item.mode);
      bytes += e->path().size() + 32;  // Tags, varints, mtime: well under 32 bytes.
      ++next_;
    }
    StartWrite(&msg_);
  }

  void End(const absl::Status& status) {
    ctx_->Finished("rpc.Summarize", status, started_);
    Finish(rpc::ToGrpcStatus(status));
  }

  ServiceContext* ctx_;
  const ServiceContext::Clock::time_point started_ = ServiceContext::Clock::now();
  ScopeSummary summary_;
  size_t next_ = 0;  // The first item not sent yet.
  v1::SummarizeResponse msg_;
};

}  // namespace

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
    // Nodes following the scope drop all they cache of it now, rather than
    // at their next check of the scope (they then find it gone).
    if (meta.ok()) ctx_->feed().PublishLost(scope);
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

grpc::ServerWriteReactor<v1::SummarizeResponse>* AdminService::Summarize(
    grpc::CallbackServerContext* c, const v1::SummarizeRequest* req) {
  return new SummarizeReactor(ctx_, c, req);
}

}  // namespace traincache::server
