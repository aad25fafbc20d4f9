// Cluster affinity: what a server knows about the clusters (its own and the
// others of its config), where pins live (PinRegistry: this server's own
// PinStore, or the registry server over gRPC), and the Attach decision
// (proto/traincache/v1/cluster.proto says what each outcome means).
//
// Thread-safe: the topology is immutable; registries may be called
// concurrently (the local one serializes changes in its PinStore).
#ifndef TRAINCACHE_SERVER_AFFINITY_H_
#define TRAINCACHE_SERVER_AFFINITY_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "meta/pin_store.h"
#include "rpc/client.h"

namespace traincache::server {

struct ClusterTopology {
  std::string cluster;                 // this server's cluster
  std::vector<std::string> gpu_types;  // empty: any GPU type runs here
  std::map<std::string, std::vector<std::string>> others;

  bool Knows(const std::string& cluster_name) const;
  // The GPU types of a known cluster (empty: any).
  const std::vector<std::string>& GpuTypesOf(const std::string& cluster_name) const;
  // Whether `cluster_name` offers `gpu` (a cluster listing none offers any).
  bool Offers(const std::string& cluster_name, const std::string& gpu) const;
  // "H100, A100" or "any GPU type".
  static std::string Describe(const std::vector<std::string>& gpus);
};

class PinRegistry {
 public:
  virtual ~PinRegistry() = default;
  // nullopt if the project is not pinned.
  virtual absl::StatusOr<std::optional<meta::PinRecord>> Get(const std::string& project) = 0;
  // Pins the project unless pinned; returns the pin in force and whether
  // this call made it.
  virtual absl::StatusOr<std::pair<meta::PinRecord, bool>> Claim(const meta::PinRecord& pin) = 0;
  virtual absl::StatusOr<meta::PinRecord> Set(const std::string& project,
                                              const std::string& cluster) = 0;
  // Whether there was a pin.
  virtual absl::StatusOr<bool> Clear(const std::string& project) = 0;
};

// Pins in `store` (this server is the registry). `store` must outlive it.
std::unique_ptr<PinRegistry> NewLocalPinRegistry(meta::PinStore* store);
// Pins on the registry server at `options.target` (its Cluster service).
std::unique_ptr<PinRegistry> NewRemotePinRegistry(rpc::ClientOptions options);

struct AttachDecision {
  std::string pinned_cluster;
  bool pinned_now = false;
  bool warm = false;
  std::string message;
};

// Validates the request's ids and GPU type, claims the pin if the project
// has none, and decides (see cluster.proto). Errors: INVALID_ARGUMENT for a
// malformed id or a GPU type no cluster offers; FAILED_PRECONDITION when this
// cluster lacks the GPU type or the pin is elsewhere and affinity is
// required; UNAVAILABLE when the registry cannot be reached.
absl::StatusOr<AttachDecision> DecideAttach(const ClusterTopology& topology,
                                            PinRegistry& registry, const std::string& project,
                                            const std::string& team, const std::string& gpu_type,
                                            bool require_cache_affinity,
                                            const std::string& job_id);

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_AFFINITY_H_
