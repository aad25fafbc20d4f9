#include "cli/node_daemon.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>

#include "rpc/status_convert.h"
#include "traincache/status.h"

namespace traincache::cli {

absl::StatusOr<std::unique_ptr<NodeDaemon>> NodeDaemon::Start(NodeDaemonOptions options) {
  std::unique_ptr<NodeDaemon> d(new NodeDaemon(std::move(options)));
  if (!d->options_.client.metrics) d->options_.client.metrics = d->options_.metrics;
  d->client_ = std::make_unique<rpc::GrpcClusterClient>(d->options_.client);
  ASSIGN_OR_RETURN(d->tier_, OpenDiskTier(d->options_.tier));
  d->fetcher_ = std::make_unique<node::ChunkFetcher>(d->client_.get(), d->tier_.get(),
                                                     node::ChunkFetcher::Options{});
  if (!d->options_.admin_socket.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(
        std::filesystem::path(d->options_.admin_socket).parent_path(), ec);
    std::filesystem::remove(d->options_.admin_socket, ec);  // a stale socket of a dead daemon
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + d->options_.admin_socket,
                             grpc::InsecureServerCredentials());
    builder.RegisterService(d.get());
    d->admin_ = builder.BuildAndStart();
    if (!d->admin_) {
      return absl::UnavailableError("cannot listen on admin socket " + d->options_.admin_socket);
    }
    // Root only: the socket mounts and unmounts caches.
    chmod(d->options_.admin_socket.c_str(), 0600);
  }
  return d;
}

NodeDaemon::~NodeDaemon() { Shutdown(); }

absl::StatusOr<std::pair<std::string, bool>> NodeDaemon::Mount(const Scope& scope, bool create) {
  std::lock_guard lock(mounts_mu_);
  if (shut_down_) return absl::UnavailableError("the node daemon is shutting down");
  auto it = mounts_.find(scope.ToString());
  if (it != mounts_.end()) return std::make_pair(it->second.mountpoint, true);
  Mounted m;
  m.mountpoint = fmt::format("{}/{}/{}", options_.mount_root, scope.kind_name(), scope.id());
  m.fs = std::make_unique<node::Filesystem>(
      scope, client_.get(), fetcher_.get(), tier_.get(),
      node::FilesystemOptions{.staging_dir = options_.staging_dir, .create_scope = create});
  RETURN_IF_ERROR(m.fs->Init().status());
  ASSIGN_OR_RETURN(m.mount, fuse::FuseMount::Mount(
                                m.fs.get(), fuse::FuseMountOptions{.mountpoint = m.mountpoint,
                                                                   .metrics = options_.metrics}));
  std::string mountpoint = m.mountpoint;
  mounts_.emplace(scope.ToString(), std::move(m));
  return std::make_pair(mountpoint, false);
}

absl::Status NodeDaemon::Unmount(const Scope& scope) {
  std::lock_guard lock(mounts_mu_);
  auto it = mounts_.find(scope.ToString());
  if (it == mounts_.end()) {
    return absl::NotFoundError(fmt::format("{} is not mounted on this node", scope.ToString()));
  }
  // Refused while a process uses the mount. When it succeeds every file was
  // closed, so every release (and its commit) has already run.
  RETURN_IF_ERROR(it->second.mount->Unmount(/*force=*/false));
  mounts_.erase(it);
  return absl::OkStatus();
}

std::map<std::string, uint64_t> NodeDaemon::Counters() {
  std::map<std::string, uint64_t> out;
  TierStats t = tier_->Stats();
  out["tier.capacity_bytes"] = t.capacity_bytes;
  out["tier.used_bytes"] = t.used_bytes;
  out["tier.images"] = t.images;
  out["tier.hits"] = t.hits;
  out["tier.misses"] = t.misses;
  out["tier.evicted_bytes"] = t.evicted_bytes;
  out["tier.corrupt_chunks"] = t.corrupt_chunks;
  node::FetcherStats f = fetcher_->Stats();
  out["fetch.fetches"] = f.fetches;
  out["fetch.fetched_bytes"] = f.fetched_bytes;
  out["fetch.coalesced"] = f.coalesced;
  out["fetch.prefetches"] = f.prefetches;
  out["fetch.verify_failures"] = f.verify_failures;
  std::lock_guard lock(mounts_mu_);
  for (const auto& [name, m] : mounts_) {
    node::FilesystemStats s = m.fs->Stats();
    out[fmt::format("scope.{}.commits", name)] = s.commits;
    out[fmt::format("scope.{}.commit_conflicts", name)] = s.commit_conflicts;
    out[fmt::format("scope.{}.commit_rebases", name)] = s.commit_rebases;
    out[fmt::format("scope.{}.uploaded_chunks", name)] = s.uploaded_chunks;
    out[fmt::format("scope.{}.uploaded_bytes", name)] = s.uploaded_bytes;
  }
  return out;
}

void NodeDaemon::Shutdown() {
  if (admin_) {
    admin_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    admin_.reset();
  }
  std::lock_guard lock(mounts_mu_);
  shut_down_ = true;
  // Forced: a file still open in a container does not keep the daemon from
  // stopping. Its staged writes stay in the staging folder (journal) and are
  // committed at the next mount of the scope.
  for (auto& [name, m] : mounts_) IGNORE_ERROR(m.mount->Unmount(/*force=*/true));
  mounts_.clear();
}

grpc::ServerUnaryReactor* NodeDaemon::MountScope(grpc::CallbackServerContext* ctx,
                                                 const v1::MountScopeRequest* req,
                                                 v1::MountScopeResponse* resp) {
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, Scope::Parse(req->scope()));
    ASSIGN_OR_RETURN(auto mounted, Mount(scope, req->create()));
    resp->set_mountpoint(mounted.first);
    resp->set_already_mounted(mounted.second);
    return absl::OkStatus();
  }();
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(rpc::ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* NodeDaemon::UnmountScope(grpc::CallbackServerContext* ctx,
                                                   const v1::UnmountScopeRequest* req,
                                                   v1::UnmountScopeResponse*) {
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, Scope::Parse(req->scope()));
    return Unmount(scope);
  }();
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(rpc::ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* NodeDaemon::ListMounts(grpc::CallbackServerContext* ctx,
                                                 const v1::ListMountsRequest*,
                                                 v1::ListMountsResponse* resp) {
  {
    std::lock_guard lock(mounts_mu_);
    for (const auto& [name, m] : mounts_) {
      auto* out = resp->add_mounts();
      out->set_scope(name);
      out->set_mountpoint(m.mountpoint);
    }
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* NodeDaemon::GetNodeStats(grpc::CallbackServerContext* ctx,
                                                   const v1::GetNodeStatsRequest*,
                                                   v1::GetNodeStatsResponse* resp) {
  for (const auto& [name, value] : Counters()) (*resp->mutable_counters())[name] = value;
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace traincache::cli
