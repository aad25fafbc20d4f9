#include "server/affinity.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "traincache/scope.h"
#include "traincache/status.h"

namespace traincache::server {
namespace {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class LocalPinRegistry : public PinRegistry {
 public:
  explicit LocalPinRegistry(meta::PinStore* store) : store_(store) {}

  absl::StatusOr<std::optional<meta::PinRecord>> Get(const std::string& project) override {
    return store_->Get(project);
  }
  absl::StatusOr<std::pair<meta::PinRecord, bool>> Claim(const meta::PinRecord& pin) override {
    return store_->Claim(pin);
  }
  absl::StatusOr<meta::PinRecord> Set(const std::string& project,
                                      const std::string& cluster) override {
    meta::PinRecord pin{
        .project = project, .cluster = cluster, .pinned_at = NowSeconds(), .job_id = ""};
    RETURN_IF_ERROR(store_->Set(pin));
    return pin;
  }
  absl::StatusOr<bool> Clear(const std::string& project) override {
    return store_->Clear(project);
  }

 private:
  meta::PinStore* store_;
};

meta::PinRecord FromProto(const v1::Pin& p) {
  return {.project = p.project(), .cluster = p.cluster(), .pinned_at = p.pinned_at(),
          .job_id = p.job_id()};
}

class RemotePinRegistry : public PinRegistry {
 public:
  explicit RemotePinRegistry(rpc::ClientOptions options) : client_(std::move(options)) {}

  absl::StatusOr<std::optional<meta::PinRecord>> Get(const std::string& project) override {
    v1::PinRef req;
    req.set_project(project);
    v1::Pin resp;
    absl::Status status = Call(&v1::Cluster::Stub::GetPin, req, &resp);
    if (status.code() == absl::StatusCode::kNotFound) return std::nullopt;
    RETURN_IF_ERROR(status);
    return FromProto(resp);
  }
  absl::StatusOr<std::pair<meta::PinRecord, bool>> Claim(const meta::PinRecord& pin) override {
    v1::ClaimPinRequest req;
    req.set_project(pin.project);
    req.set_cluster(pin.cluster);
    req.set_job_id(pin.job_id);
    v1::ClaimPinResponse resp;
    RETURN_IF_ERROR(Call(&v1::Cluster::Stub::ClaimPin, req, &resp));
    return std::make_pair(FromProto(resp.pin()), resp.created());
  }
  absl::StatusOr<meta::PinRecord> Set(const std::string& project,
                                      const std::string& cluster) override {
    v1::SetPinRequest req;
    req.set_project(project);
    req.set_cluster(cluster);
    v1::Pin resp;
    RETURN_IF_ERROR(Call(&v1::Cluster::Stub::SetPin, req, &resp));
    return FromProto(resp);
  }
  absl::StatusOr<bool> Clear(const std::string& project) override {
    v1::PinRef req;
    req.set_project(project);
    v1::ClearPinResponse resp;
    RETURN_IF_ERROR(Call(&v1::Cluster::Stub::ClearPin, req, &resp));
    return resp.existed();
  }

 private:
  // The registry's errors pass through with its message; an unreachable
  // registry says which address it is.
  template <typename Req, typename Resp>
  absl::Status Call(grpc::Status (v1::Cluster::Stub::*method)(grpc::ClientContext*, const Req&,
                                                               Resp*),
                    const Req& req, Resp* resp) {
    absl::Status status = client_.Call(method, client_.cluster(), req, resp);
    if (status.code() == absl::StatusCode::kUnavailable ||
        status.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::UnavailableError(fmt::format("pin registry {} unreachable: {}",
                                                client_.options().target,
                                                std::string(status.message())));
    }
    return status;
  }

  rpc::ServerClient client_;
};

}  // namespace

bool ClusterTopology::Knows(const std::string& cluster_name) const {
  return cluster_name == cluster || others.count(cluster_name) > 0;
}

const std::vector<std::string>& ClusterTopology::GpuTypesOf(const std::string& cluster_name) const {
  static const std::vector<std::string> kNone;
  if (cluster_name == cluster) return gpu_types;
  auto it = others.find(cluster_name);
  return it == others.end() ? kNone : it->second;
}

bool ClusterTopology::Offers(const std::string& cluster_name, const std::string& gpu) const {
  if (!Knows(cluster_name)) return false;
  const std::vector<std::string>& gpus = GpuTypesOf(cluster_name);
  return gpus.empty() || std::find(gpus.begin(), gpus.end(), gpu) != gpus.end();
}

std::string ClusterTopology::Describe(const std::vector<std::string>& gpus) {
  return gpus.empty() ? "any GPU type" : fmt::format("{}", fmt::join(gpus, ", "));
}

std::unique_ptr<PinRegistry> NewLocalPinRegistry(meta::PinStore* store) {
  return std::make_unique<LocalPinRegistry>(store);
}

std::unique_ptr<PinRegistry> NewRemotePinRegistry(rpc::ClientOptions options) {
  return std::make_unique<RemotePinRegistry>(std::move(options));
}

absl::StatusOr<AttachDecision> DecideAttach(const ClusterTopology& topology,
                                            PinRegistry& registry, const std::string& project,
                                            const std::string& team, const std::string& gpu_type,
                                            bool require_cache_affinity,
                                            const std::string& job_id) {
  RETURN_IF_ERROR(ValidateId(project, "project id"));
  if (!team.empty()) RETURN_IF_ERROR(ValidateId(team, "team id"));
  RETURN_IF_ERROR(ValidateId(job_id, "job id"));
  RETURN_IF_ERROR(ValidateId(gpu_type, "GPU type"));

  // A GPU type is known if some cluster offers it (a cluster that lists no
  // types offers any).
  bool known = topology.Offers(topology.cluster, gpu_type);
  std::vector<std::string> offered_by;
  for (const auto& [name, gpus] : topology.others) {
    if (topology.Offers(name, gpu_type)) {
      known = true;
      offered_by.push_back(name);
    }
  }
  if (!known) {
    std::string clusters = fmt::format("{} offers {}", topology.cluster,
                                       ClusterTopology::Describe(topology.gpu_types));
    for (const auto& [name, gpus] : topology.others) {
      clusters += fmt::format("; {} offers {}", name, ClusterTopology::Describe(gpus));
    }
    return absl::InvalidArgumentError(
        fmt::format("unknown GPU type '{}': no cluster offers it ({})", gpu_type, clusters));
  }
  if (!topology.Offers(topology.cluster, gpu_type)) {
    return absl::FailedPreconditionError(fmt::format(
        "cluster {} has no {} GPUs (it offers {}); {} offered by {}", topology.cluster, gpu_type,
        ClusterTopology::Describe(topology.gpu_types), gpu_type, fmt::join(offered_by, ", ")));
  }

  ASSIGN_OR_RETURN(auto claimed, registry.Claim({.project = project,
                                                 .cluster = topology.cluster,
                                                 .pinned_at = NowSeconds(),
                                                 .job_id = job_id}));
  const meta::PinRecord& pin = claimed.first;
  AttachDecision d;
  d.pinned_cluster = pin.cluster;
  d.pinned_now = claimed.second;
  if (d.pinned_now) {
    d.message = fmt::format("project {} pinned to cluster {} by job {}; its cache starts empty",
                            project, topology.cluster, job_id);
    spdlog::info("{}", d.message);
    return d;
  }
  if (pin.cluster == topology.cluster) {
    d.warm = true;
    d.message = fmt::format("project {} is pinned to cluster {}: job {} runs on its cache",
                            project, topology.cluster, job_id);
    return d;
  }
  const std::vector<std::string>& pinned_gpus = topology.GpuTypesOf(pin.cluster);
  std::string pinned_desc =
      topology.Knows(pin.cluster)
          ? fmt::format("cluster {} (GPU types: {})", pin.cluster,
                        ClusterTopology::Describe(pinned_gpus))
          : fmt::format("cluster {} (not in this server's cluster list)", pin.cluster);
  if (require_cache_affinity) {
    std::string could = topology.Offers(pin.cluster, gpu_type)
                            ? fmt::format("{} offers {}: run the job there", pin.cluster, gpu_type)
                            : fmt::format("{} does not offer {}", pin.cluster, gpu_type);
    return absl::FailedPreconditionError(fmt::format(
        "project {} is pinned to {}; job {} asks for {} on cluster {} with "
        "require_cache_affinity: refused ({}; or run without require_cache_affinity on an empty "
        "cache here, or move the pin with `traincache pin set`)",
        project, pinned_desc, job_id, gpu_type, topology.cluster, could));
  }
  d.message = fmt::format(
      "project {} is pinned to {}; job {} runs on cluster {} on this cluster's own cache of it "
      "(empty until a job fills it); the pin stays",
      project, pinned_desc, job_id, topology.cluster);
  spdlog::info("{}", d.message);
  return d;
}

}  // namespace traincache::server
