#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "server/services.h"
#include "traincache/scope.h"
#include "traincache/status.h"

namespace traincache::server {
namespace {

void ToProto(const meta::PinRecord& pin, v1::Pin* out) {
  out->set_project(pin.project);
  out->set_cluster(pin.cluster);
  out->set_pinned_at(pin.pinned_at);
  out->set_job_id(pin.job_id);
}

std::vector<std::string> ScopeTexts(const std::vector<Scope>& scopes) {
  std::vector<std::string> out;
  for (const Scope& scope : scopes) out.push_back(scope.ToString());
  return out;
}

}  // namespace

grpc::ServerUnaryReactor* ClusterService::GetClusterInfo(grpc::CallbackServerContext* c,
                                                         const v1::GetClusterInfoRequest*,
                                                         v1::ClusterInfo* resp) {
  return ctx_->Unary(c, "rpc.GetClusterInfo", ServiceContext::Work::kQuick, [=, this] {
    resp->set_cluster(topology_.cluster);
    for (const std::string& gpu : topology_.gpu_types) resp->add_gpu_types(gpu);
    for (const auto& [name, gpus] : topology_.others) {
      auto* other = resp->add_others();
      other->set_name(name);
      for (const std::string& gpu : gpus) other->add_gpu_types(gpu);
    }
    resp->set_registry(registry_address_);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ClusterService::Attach(grpc::CallbackServerContext* c,
                                                 const v1::AttachRequest* req,
                                                 v1::AttachResponse* resp) {
  // Blocking: the pin claim syncs a disk or calls the registry.
  return ctx_->Unary(c, "rpc.Attach", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    // Who attaches, checked before anything is pinned: a caller the table
    // cannot name would pin a project and then be refused its scopes.
    std::string identity;
    std::vector<Scope> scopes;
    if (AttachmentTable* table = ctx_->attachments()) {
      identity = ServiceContext::PeerIdentity(c);
      if (identity.empty()) {
        return absl::PermissionDeniedError(
            "attach needs a client certificate with a CN under require_attached_scopes: it "
            "names the node the job runs on");
      }
      RETURN_IF_ERROR(ValidateId(req->job_id(), "job id"));
      ASSIGN_OR_RETURN(Scope project, Scope::Make(ScopeKind::kProject, req->project()));
      scopes.push_back(std::move(project));
      if (!req->team().empty()) {
        ASSIGN_OR_RETURN(Scope team, Scope::Make(ScopeKind::kTeam, req->team()));
        scopes.push_back(std::move(team));
      }
    }
    ASSIGN_OR_RETURN(AttachDecision d,
                     DecideAttach(topology_, ctx_->pins(), req->project(), req->team(),
                                  req->gpu_type(), req->require_cache_affinity(), req->job_id()));
    if (AttachmentTable* table = ctx_->attachments()) {
      RETURN_IF_ERROR(table->Attach(identity, req->job_id(), scopes));
      spdlog::info("job {} attached on node '{}': {}", req->job_id(), identity,
                   fmt::join(ScopeTexts(scopes), ", "));
    }
    resp->set_cluster(topology_.cluster);
    resp->set_pinned_cluster(d.pinned_cluster);
    resp->set_pinned_now(d.pinned_now);
    resp->set_warm(d.warm);
    resp->set_message(d.message);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ClusterService::Detach(grpc::CallbackServerContext* c,
                                                 const v1::DetachRequest* req,
                                                 v1::DetachResponse* resp) {
  // Blocking: forgetting an attachment syncs the attachments' WAL.
  return ctx_->Unary(c, "rpc.Detach", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    RETURN_IF_ERROR(ValidateId(req->job_id(), "job id"));
    AttachmentTable* table = ctx_->attachments();
    // Without require_attached_scopes nothing was recorded: nothing to forget.
    if (table == nullptr) return absl::OkStatus();
    const std::string identity = ServiceContext::PeerIdentity(c);
    if (identity.empty()) {
      return absl::PermissionDeniedError(
          "detach needs a client certificate with a CN under require_attached_scopes");
    }
    ASSIGN_OR_RETURN(AttachmentTable::Detached detached, table->Detach(identity, req->job_id()));
    resp->set_existed(detached.existed);
    for (const Scope& scope : detached.released) resp->add_released_scopes(scope.ToString());
    if (detached.existed) {
      spdlog::info("job {} detached from node '{}'; scopes it may no longer use: {}",
                   req->job_id(), identity, fmt::join(ScopeTexts(detached.released), ", "));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ClusterService::GetPin(grpc::CallbackServerContext* c,
                                                 const v1::PinRef* req, v1::Pin* resp) {
  return ctx_->Unary(c, "rpc.GetPin", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    RETURN_IF_ERROR(ValidateId(req->project(), "project id"));
    ASSIGN_OR_RETURN(std::optional<meta::PinRecord> pin, ctx_->pins().Get(req->project()));
    if (!pin) {
      return absl::NotFoundError(fmt::format("project {} is not pinned", req->project()));
    }
    ToProto(*pin, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ClusterService::ClaimPin(grpc::CallbackServerContext* c,
                                                   const v1::ClaimPinRequest* req,
                                                   v1::ClaimPinResponse* resp) {
  return ctx_->Unary(c, "rpc.ClaimPin", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    RETURN_IF_ERROR(ValidateId(req->project(), "project id"));
    RETURN_IF_ERROR(ValidateId(req->cluster(), "cluster name"));
    if (!req->job_id().empty()) RETURN_IF_ERROR(ValidateId(req->job_id(), "job id"));
    ASSIGN_OR_RETURN(auto claimed,
                     ctx_->pins().Claim({.project = req->project(),
                                         .cluster = req->cluster(),
                                         .pinned_at = std::chrono::duration_cast<std::chrono::seconds>(
                                                          std::chrono::system_clock::now()
                                                              .time_since_epoch())
                                                          .count(),
                                         .job_id = req->job_id()}));
    ToProto(claimed.first, resp->mutable_pin());
    resp->set_created(claimed.second);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ClusterService::SetPin(grpc::CallbackServerContext* c,
                                                 const v1::SetPinRequest* req, v1::Pin* resp) {
  return ctx_->Unary(c, "rpc.SetPin", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    RETURN_IF_ERROR(ValidateId(req->project(), "project id"));
    RETURN_IF_ERROR(ValidateId(req->cluster(), "cluster name"));
    if (!topology_.Knows(req->cluster())) {
      std::string known = topology_.cluster;
      for (const auto& [name, gpus] : topology_.others) known += ", " + name;
      return absl::InvalidArgumentError(
          fmt::format("unknown cluster '{}' (known: {})", req->cluster(), known));
    }
    ASSIGN_OR_RETURN(meta::PinRecord pin, ctx_->pins().Set(req->project(), req->cluster()));
    spdlog::warn("project {}: pin set to cluster {} by an operator", pin.project, pin.cluster);
    ToProto(pin, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ClusterService::ClearPin(grpc::CallbackServerContext* c,
                                                   const v1::PinRef* req,
                                                   v1::ClearPinResponse* resp) {
  return ctx_->Unary(c, "rpc.ClearPin", ServiceContext::Work::kBlocking, [=, this]() -> absl::Status {
    RETURN_IF_ERROR(ValidateId(req->project(), "project id"));
    ASSIGN_OR_RETURN(bool existed, ctx_->pins().Clear(req->project()));
    if (existed) spdlog::warn("project {}: pin cleared", req->project());
    resp->set_existed(existed);
    return absl::OkStatus();
  });
}

}  // namespace traincache::server
