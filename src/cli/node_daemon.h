// NodeDaemon: what one traincache-node process runs — the shared cluster
// client, node tier and chunk fetcher, one Filesystem + FUSE mount per scope
// (one mount per scope, shared by every job of it), the jobs attached to this
// node, and the local admin endpoint (proto/traincache/v1/node_admin.proto)
// on a Unix socket.
//
// Scopes are mounted by hand (Mount: mount-scope, --scope; they stay until
// unmounted by hand) or for jobs (Attach; a scope no job uses any more is
// unmounted after options.unmount_grace). A housekeeping thread does those
// unmounts and watches every scope this daemon has mounted: once the server
// no longer has it (deleted, or deleted and made again: another generation),
// its mount answers ENOENT, the kernel's caches of it are dropped and its
// images leave the node tier. Each mount follows its scope's change feed
// (node/metadata_watcher.h), so its entries and attributes are cached for
// options.metadata_ttl while the feed is followed.
//
// Thread-safe: admin calls may arrive concurrently; mounts_mu_ serializes
// mounts, unmounts, attaches and detaches.
#ifndef TRAINCACHE_CLI_NODE_DAEMON_H_
#define TRAINCACHE_CLI_NODE_DAEMON_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/fd_store.h"
#include "fuse/fuse_mount.h"
#include "node/chunk_fetcher.h"
#include "node/filesystem.h"
#include "node/metadata_watcher.h"
#include "rpc/client.h"
#include "rpc/grpc_cluster_client.h"
#include "rpc/grpc_lock_client.h"
#include "traincache/node_tier.h"
#include "traincache/v1/node_admin.grpc.pb.h"

namespace traincache::cli {

// Where a job's container sees its caches (the bind mount targets).
inline constexpr char kContainerProjectDir[] = "/root/.cache/user_artifacts";
inline constexpr char kContainerTeamDir[] = "/root/.cache/team_artifacts";
inline constexpr char kContainerScratchDir[] = "/scratch";

struct NodeDaemonOptions {
  rpc::GrpcClusterClientOptions client;
  std::string mount_root;
  std::string staging_dir;
  DiskTierOptions tier;
  node::ChunkFetcher::Options fetcher;
  std::string admin_socket;  // empty: no admin endpoint
  std::string scratch_dir;   // jobs' scratch folders (<scratch_dir>/<job id>); required to attach
  // Serve only the scopes of attached jobs: Mount (mount-scope, --scope) is
  // refused, so this daemon never asks the server for a scope no job of
  // this node uses. A server with require_attached_scopes enforces the same
  // (it knows this node by its client certificate); this flag refuses
  // before any call.
  bool attached_scopes_only = false;
  // A scope no attached job uses is unmounted this long after its last detach.
  std::chrono::milliseconds unmount_grace{60'000};
  // How often the scopes mounted here are checked against the server.
  std::chrono::milliseconds scope_check_interval{2'000};
  // Where the FUSE op and RPC latency histograms go (also client.metrics
  // unless that is set); nullptr: none. Must outlive the daemon.
  prometheus::Registry* metrics = nullptr;
  // FUSE passthrough for files complete in the node tier (fuse/passthrough.h).
  bool passthrough = true;
  // How long entries and attributes are cached while a scope's change feed
  // is followed (FilesystemOptions::metadata_ttl); 0: no change feed, 1 s.
  std::chrono::milliseconds metadata_ttl{30'000};
  // Write path of every mount (node::FilesystemOptions): upload finished
  // chunks while files are written, on how many threads, in how many bytes.
  bool background_upload = true;
  size_t upload_threads = 4;
  uint64_t upload_budget_bytes = 32ull << 20;
  // Mounts an earlier process of this daemon served, handed over by the
  // service manager's fd store (fd_store.h TakeStoredMounts): Start serves
  // each one on, with no unmount, before anything else. Every mount this
  // daemon makes is stored there in turn (StoreMount) and removed when it is
  // unmounted.
  std::map<std::string, StoredMount> inherited;
};

class NodeDaemon final : public v1::NodeAdmin::CallbackService {
 public:
  static absl::StatusOr<std::unique_ptr<NodeDaemon>> Start(NodeDaemonOptions options);
  ~NodeDaemon();

  // Mounts `scope` at <mount_root>/<kind>/<id> by hand (no-op if mounted;
  // then it stays until Unmount). Returns the mountpoint and whether it was
  // mounted already.
  absl::StatusOr<std::pair<std::string, bool>> Mount(const Scope& scope, bool create);
  // FAILED_PRECONDITION while jobs use the scope or a process uses the mount
  // (EBUSY).
  absl::Status Unmount(const Scope& scope);
  // See node_admin.proto. Errors: the server's (affinity refusals carry its
  // message), INVALID_ARGUMENT for malformed ids, FAILED_PRECONDITION
  // without a scratch folder configured.
  absl::StatusOr<v1::AttachJobResponse> Attach(const v1::AttachJobRequest& req);
  // NOT_FOUND for a job not attached here; the commit's error (the job stays
  // attached: detach again) if its scopes' staged writes cannot be committed.
  absl::StatusOr<std::vector<std::string>> Detach(const std::string& job_id);
  std::map<std::string, uint64_t> Counters();
  // Stops the admin endpoint and housekeeping, and unmounts every scope:
  // cleanly where nothing uses it (every close already committed), forced
  // where something does (its staged writes are recovered at the next mount).
  void Shutdown();
  // Stops serving every mount without unmounting it, for the next process
  // to take over (issue 7): commits what is staged (as a detach would), ends
  // the session loops and lock waits, leaves the FUSE connections with the
  // fd store. Callers of the mounts wait (they get no error) until the next
  // process serves them. Then the daemon is shut down as by Shutdown.
  void HandOver();

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
  grpc::ServerUnaryReactor* Attach(grpc::CallbackServerContext*, const v1::AttachJobRequest*,
                                   v1::AttachJobResponse*) override;
  grpc::ServerUnaryReactor* Detach(grpc::CallbackServerContext*, const v1::DetachJobRequest*,
                                   v1::DetachJobResponse*) override;

 private:
  // The first steps of Shutdown and HandOver: no more admin calls, and the
  // housekeeping thread stopped.
  void StopAdminAndHousekeeper();
  using Clock = std::chrono::steady_clock;
  struct Mounted {
    Mounted(Scope s, std::string where) : scope(std::move(s)), mountpoint(std::move(where)) {}
    Scope scope;
    std::string mountpoint;
    std::unique_ptr<node::Filesystem> fs;
    std::unique_ptr<fuse::FuseMount> mount;
    // Last: stops (and leaves the mount alone) before the mount and fs go.
    std::unique_ptr<node::MetadataWatcher> watcher;
    std::set<std::string> jobs;  // attached jobs using it
    bool manual = false;         // mounted by hand: never unmounted by the grace
    std::optional<Clock::time_point> idle_since;  // no job, not manual: since when
  };
  struct Job {
    std::vector<Scope> scopes;
    std::string scratch;
    v1::AttachJobResponse answer;
  };
  explicit NodeDaemon(NodeDaemonOptions options) : options_(std::move(options)) {}

  // The mount of `scope`, mounting it if needed (a mount whose scope was
  // deleted is replaced).
  // Requires mounts_mu_.
  // With `inherited`, the mount an earlier process served is served on
  // (FuseMount takeover) instead of mounted anew.
  absl::StatusOr<std::shared_ptr<Mounted>> MountLocked(const Scope& scope, bool create,
                                                       std::optional<StoredMount> inherited = {});
  // Serves on every mount of options_.inherited (Start).
  void TakeOverInherited();
  // Tells the server the job left this node (Cluster.Detach), so that under
  // require_attached_scopes it stops serving this node the job's scopes
  // that no other job of it uses. Returns whether the server had the job
  // attached for this node; a failure is logged (a warning) and returned.
  absl::StatusOr<bool> DetachOnServer(const std::string& job_id);
  void HousekeepingLoop();
  void UnmountIdle();
  void CheckScopes();

  NodeDaemonOptions options_;
  std::unique_ptr<rpc::GrpcClusterClient> client_;
  std::unique_ptr<rpc::ServerClient> server_;  // Attach and scope checks (short deadlines)
  std::unique_ptr<rpc::GrpcLockClient> locks_;  // flock/fcntl of every mount
  std::unique_ptr<NodeTier> tier_;
  std::unique_ptr<node::ChunkFetcher> fetcher_;
  std::unique_ptr<grpc::Server> admin_;

  // Guards the rest of this block. Held across a mount's RPCs and FUSE
  // setup (admin calls are rare); never held by a FUSE callback.
  std::mutex mounts_mu_;
  std::map<std::string, std::shared_ptr<Mounted>> mounts_;  // by scope text
  std::map<std::string, Job> jobs_;                         // by job id
  // Every scope mounted by this process, with the generation it had: what
  // the housekeeping checks against the server.
  std::map<std::string, std::pair<Scope, uint64_t>> known_scopes_;
  bool shut_down_ = false;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread housekeeper_;
};

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_NODE_DAEMON_H_
