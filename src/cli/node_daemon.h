// NodeDaemon: what one traincache-node process runs — the shared cluster
// client, node tier and chunk fetcher, one Filesystem + FUSE mount per scope
// (one mount per scope, shared by every job of it), and the local admin
// endpoint (proto/traincache/v1/node_admin.proto) on a Unix socket.
//
// Thread-safe: admin calls may arrive concurrently; mounts_mu_ serializes
// mount and unmount.
#ifndef TRAINCACHE_CLI_NODE_DAEMON_H_
#define TRAINCACHE_CLI_NODE_DAEMON_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "fuse/fuse_mount.h"
#include "node/chunk_fetcher.h"
#include "node/filesystem.h"
#include "rpc/grpc_cluster_client.h"
#include "traincache/node_tier.h"
#include "traincache/v1/node_admin.grpc.pb.h"

namespace traincache::cli {

struct NodeDaemonOptions {
  rpc::GrpcClusterClientOptions client;
  std::string mount_root;
  std::string staging_dir;
  DiskTierOptions tier;
  std::string admin_socket;  // empty: no admin endpoint
  // Where the FUSE op and RPC latency histograms go (also client.metrics
  // unless that is set); nullptr: none. Must outlive the daemon.
  prometheus::Registry* metrics = nullptr;
};

class NodeDaemon final : public v1::NodeAdmin::CallbackService {
 public:
  static absl::StatusOr<std::unique_ptr<NodeDaemon>> Start(NodeDaemonOptions options);
  ~NodeDaemon();

  // Mounts `scope` at <mount_root>/<kind>/<id> (no-op if mounted). Returns
  // the mountpoint and whether it was mounted already.
  absl::StatusOr<std::pair<std::string, bool>> Mount(const Scope& scope, bool create);
  // FAILED_PRECONDITION/EBUSY while a process uses the mount.
  absl::Status Unmount(const Scope& scope);
  std::map<std::string, uint64_t> Counters();
  // Stops the admin endpoint and unmounts every scope: cleanly where nothing
  // uses it (every close already committed), forced where something does
  // (its staged writes are recovered at the next mount).
  void Shutdown();

  grpc::ServerUnaryReactor* MountScope(grpc::CallbackServerContext*,
                                       const v1::MountScopeRequest*,
                                       v1::MountScopeResponse*) override;
  grpc::ServerUnaryReactor* UnmountScope(grpc::CallbackServerContext*,
                                         const v1::UnmountScopeRequest*,
                                         v1::UnmountScopeResponse*) override;
  grpc::ServerUnaryReactor* ListMounts(grpc::CallbackServerContext*, const v1::ListMountsRequest*,
                                       v1::ListMountsResponse*) override;
  grpc::ServerUnaryReactor* GetNodeStats(grpc::CallbackServerContext*,
                                         const v1::GetNodeStatsRequest*,
                                         v1::GetNodeStatsResponse*) override;

 private:
  struct Mounted {
    std::string mountpoint;
    std::unique_ptr<node::Filesystem> fs;
    std::unique_ptr<fuse::FuseMount> mount;
  };
  explicit NodeDaemon(NodeDaemonOptions options) : options_(std::move(options)) {}

  NodeDaemonOptions options_;
  std::unique_ptr<rpc::GrpcClusterClient> client_;
  std::unique_ptr<NodeTier> tier_;
  std::unique_ptr<node::ChunkFetcher> fetcher_;
  std::unique_ptr<grpc::Server> admin_;

  std::mutex mounts_mu_;
  std::map<std::string, Mounted> mounts_;  // by scope text; guarded by mounts_mu_
  bool shut_down_ = false;                 // guarded by mounts_mu_
};

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_NODE_DAEMON_H_
