#include "cli/node_daemon.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "rpc/status_convert.h"
#include "traincache/status.h"

namespace traincache::cli {

absl::StatusOr<std::unique_ptr<NodeDaemon>> NodeDaemon::Start(NodeDaemonOptions options) {
  std::unique_ptr<NodeDaemon> d(new NodeDaemon(std::move(options)));
  if (!d->options_.client.metrics) d->options_.client.metrics = d->options_.metrics;
  d->client_ = std::make_unique<rpc::GrpcClusterClient>(d->options_.client);
  d->server_ =
      std::make_unique<rpc::ServerClient>(rpc::ClientOptions{.target = d->options_.client.target,
                                                             .token = d->options_.client.token,
                                                             .deadline = std::chrono::seconds(10),
                                                             .tls = d->options_.client.tls});
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  d->locks_ =
      std::make_unique<rpc::GrpcLockClient>(rpc::ClientOptions{.target = d->options_.client.target,
                                                               .token = d->options_.client.token,
                                                               .deadline = std::chrono::seconds(10),
                                                               .tls = d->options_.client.tls},
                                            fmt::format("{}:{}", host, getpid()),
                                            d->options_.client.outage_timeout);
  ASSIGN_OR_RETURN(d->tier_, OpenDiskTier(d->options_.tier));
  d->fetcher_ =
      std::make_unique<node::ChunkFetcher>(d->client_.get(), d->tier_.get(), d->options_.fetcher);
  if (!d->options_.admin_socket.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(
        std::filesystem::path(d->options_.admin_socket).parent_path(), ec);
    std::filesystem::remove(d->options_.admin_socket, ec);  // a stale socket of a dead daemon
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + d->options_.admin_socket, grpc::InsecureServerCredentials());
    builder.RegisterService(d.get());
    d->admin_ = builder.BuildAndStart();
    if (!d->admin_) {
      return absl::UnavailableError("cannot listen on admin socket " + d->options_.admin_socket);
    }
    // Root only: the socket mounts and unmounts caches.
    chmod(d->options_.admin_socket.c_str(), 0600);
  }
  // Before the admin endpoint: what containers hold open waits for these.
  d->TakeOverInherited();
  d->housekeeper_ = std::thread([raw = d.get()] { raw->HousekeepingLoop(); });
  return d;
}

void NodeDaemon::TakeOverInherited() {
  std::map<std::string, StoredMount> inherited;
  inherited.swap(options_.inherited);
  std::lock_guard lock(mounts_mu_);
  for (auto& [name, stored] : inherited) {
    absl::StatusOr<Scope> scope = Scope::Parse(name);
    absl::StatusOr<std::shared_ptr<Mounted>> m =
        scope.ok() ? MountLocked(*scope, /*create=*/false, stored) : scope.status();
    if (!m.ok()) {
      // Nobody will serve that connection: the service manager lets it go,
      // so its callers get ENOTCONN rather than waiting forever.
      spdlog::error("{}: cannot serve the mount handed over: {}", name, m.status().ToString());
      if (scope.ok()) RemoveStoredMount(*scope);
      continue;
    }
    // Jobs attached before the restart are not known here: kept mounted
    // until unmounted by hand, so no grace period unmounts it under them.
    (*m)->manual = true;
  }
}

NodeDaemon::~NodeDaemon() { Shutdown(); }

absl::StatusOr<std::shared_ptr<NodeDaemon::Mounted>> NodeDaemon::MountLocked(
    const Scope& scope, bool create, std::optional<StoredMount> inherited) {
  // Descriptors of an inherited mount not passed on to a FuseMount are
  // closed on every return.
  auto close_inherited = [&] {
    if (!inherited) return;
    for (int fd : {inherited->fuse_fd, inherited->state_fd}) {
      if (fd >= 0) close(fd);
    }
    inherited.reset();
  };
  struct Closer {
    std::function<void()> fn;
    ~Closer() { fn(); }
  } closer{close_inherited};
  if (shut_down_) return absl::UnavailableError("the node daemon is shutting down");
  auto it = mounts_.find(scope.ToString());
  if (it != mounts_.end()) {
    if (!it->second->fs->scope_deleted()) return it->second;
    // The scope was deleted under this mount: whoever mounts it now wants
    // the new one. Processes still in the old mount get ENOTCONN.
    IGNORE_ERROR(it->second->mount->Unmount(/*force=*/true));
    RemoveStoredMount(scope);
    mounts_.erase(it);
  }
  auto m = std::make_shared<Mounted>(
      scope, fmt::format("{}/{}/{}", options_.mount_root, scope.kind_name(), scope.id()));
  fuse::HandoverState state;  // epoch 1: a new mount
  if (inherited) {
    ASSIGN_OR_RETURN(state, fuse::ReadHandoverState(inherited->state_fd));
    if (state.mountpoint != m->mountpoint) {
      return absl::FailedPreconditionError(
          fmt::format("the connection handed over is mounted at {}, not at {} (--mount-root "
                      "changed?)",
                      state.mountpoint, m->mountpoint));
    }
    ++state.epoch;
  }
  m->fs = std::make_unique<node::Filesystem>(
      scope, client_.get(), fetcher_.get(), tier_.get(),
      node::FilesystemOptions{.staging_dir = options_.staging_dir,
                              .metadata_ttl = options_.metadata_ttl,
                              .create_scope = create,
                              .background_upload = options_.background_upload,
                              .upload_threads = options_.upload_threads,
                              .upload_budget_bytes = options_.upload_budget_bytes,
                              .first_handle = fuse::FirstHandleOf(state.epoch)});
  // A crashed earlier process's staged writes are committed here, before
  // anything is served.
  RETURN_IF_ERROR(m->fs->Init().status());
  fuse::FuseMountOptions mount_options{.mountpoint = m->mountpoint,
                                       .locks = locks_.get(),
                                       .metrics = options_.metrics,
                                       .passthrough = options_.passthrough,
                                       .state = state};
  if (inherited) {
    mount_options.takeover_fd = inherited->fuse_fd;
    mount_options.state_fd = inherited->state_fd;
    inherited.reset();  // The FuseMount owns them now.
  }
  const bool takeover = mount_options.takeover_fd >= 0;
  ASSIGN_OR_RETURN(m->mount, fuse::FuseMount::Mount(m->fs.get(), std::move(mount_options)));
  // Kept by the service manager from now on (a takeover's already are).
  if (!takeover) StoreMount(scope, m->mount->session_fd(), m->mount->state_fd());
  if (options_.metadata_ttl.count() > 0) {
    m->watcher =
        std::make_unique<node::MetadataWatcher>(m->fs.get(), client_.get(), m->mount.get());
  }
  known_scopes_.insert_or_assign(scope.ToString(), std::make_pair(scope, m->fs->generation()));
  mounts_.emplace(scope.ToString(), m);
  return m;
}

absl::StatusOr<std::pair<std::string, bool>> NodeDaemon::Mount(const Scope& scope, bool create) {
  if (options_.attached_scopes_only) {
    return absl::PermissionDeniedError(fmt::format(
        "{} is not mounted by hand on this node: it serves only the scopes of attached jobs "
        "(--attached-scopes-only); attach a job that uses it",
        scope.ToString()));
  }
  std::lock_guard lock(mounts_mu_);
  bool already = mounts_.count(scope.ToString()) > 0;
  ASSIGN_OR_RETURN(std::shared_ptr<Mounted> m, MountLocked(scope, create));
  m->manual = true;
  m->idle_since.reset();
  return std::make_pair(m->mountpoint, already);
}

absl::Status NodeDaemon::Unmount(const Scope& scope) {
  std::lock_guard lock(mounts_mu_);
  auto it = mounts_.find(scope.ToString());
  if (it == mounts_.end()) {
    return absl::NotFoundError(fmt::format("{} is not mounted on this node", scope.ToString()));
  }
  if (!it->second->jobs.empty()) {
    return absl::FailedPreconditionError(
        fmt::format("{} is used by attached jobs ({}); detach them first", scope.ToString(),
                    fmt::join(it->second->jobs, ", ")));
  }
  // Refused while a process uses the mount. When it succeeds every file was
  // closed, so every release (and its commit) has already run.
  RETURN_IF_ERROR(it->second->mount->Unmount(/*force=*/false));
  RemoveStoredMount(scope);
  mounts_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<v1::AttachJobResponse> NodeDaemon::Attach(const v1::AttachJobRequest& req) {
  RETURN_IF_ERROR(ValidateId(req.job_id(), "job id"));
  ASSIGN_OR_RETURN(Scope project, Scope::Make(ScopeKind::kProject, req.project()));
  std::optional<Scope> team;
  if (!req.team().empty()) {
    ASSIGN_OR_RETURN(team, Scope::Make(ScopeKind::kTeam, req.team()));
  }
  if (options_.scratch_dir.empty()) {
    return absl::FailedPreconditionError(
        "this node daemon has no --scratch-dir: it cannot attach jobs");
  }
  std::vector<Scope> scopes = {project};
  if (team) scopes.push_back(*team);

  std::lock_guard lock(mounts_mu_);
  if (auto it = jobs_.find(req.job_id()); it != jobs_.end()) {
    if (it->second.scopes != scopes) {
      return absl::AlreadyExistsError(
          fmt::format("job {} is attached already, with other caches", req.job_id()));
    }
    v1::AttachJobResponse again = it->second.answer;
    again.set_already_attached(true);
    return again;
  }

  // Where may it run? The server decides (affinity pins) before anything is
  // mounted, so a refused job changes nothing on this node.
  v1::AttachRequest ask;
  ask.set_project(req.project());
  ask.set_team(req.team());
  ask.set_gpu_type(req.gpu_type());
  ask.set_require_cache_affinity(req.require_cache_affinity());
  ask.set_job_id(req.job_id());
  v1::AttachResponse decided;
  {
    // As DetachOnServer: a connection being (re)made is waited for within
    // the deadline, so an attach right after a server restart does not
    // fail at once on a channel in reconnect backoff.
    auto ctx = server_->NewContext();
    ctx->set_wait_for_ready(true);
    RETURN_IF_ERROR(rpc::FromGrpcStatus(server_->cluster().Attach(ctx.get(), ask, &decided)));
  }

  std::vector<std::shared_ptr<Mounted>> mounted;
  // Undo: a mount made for this job alone goes again (after the grace), and
  // the server forgets the attachment it just recorded.
  auto undo = [&] {
    for (auto& done : mounted) {
      if (done->jobs.empty() && !done->manual && !done->idle_since) done->idle_since = Clock::now();
    }
    IGNORE_ERROR(DetachOnServer(req.job_id()).status());
  };
  for (const Scope& scope : scopes) {
    auto m = MountLocked(scope, /*create=*/true);
    if (!m.ok()) {
      undo();
      return m.status();
    }
    mounted.push_back(*m);
  }
  std::string scratch = fmt::format("{}/{}", options_.scratch_dir, req.job_id());
  std::error_code ec;
  std::filesystem::create_directories(scratch, ec);
  if (ec) {
    undo();
    return PosixError(ec.value(),
                      fmt::format("cannot make scratch folder {}: {}", scratch, ec.message()));
  }
  chmod(scratch.c_str(), 0755);

  v1::AttachJobResponse out;
  out.set_cluster(decided.cluster());
  out.set_pinned_cluster(decided.pinned_cluster());
  out.set_pinned_now(decided.pinned_now());
  out.set_warm(decided.warm());
  out.set_message(decided.message());
  out.set_project_mountpoint(mounted[0]->mountpoint);
  if (team) out.set_team_mountpoint(mounted[1]->mountpoint);
  out.set_scratch_dir(scratch);
  auto bind = [&](const std::string& source, const char* target) {
    auto* b = out.add_binds();
    b->set_source(source);
    b->set_target(target);
  };
  auto& env = *out.mutable_env();
  bind(mounted[0]->mountpoint, kContainerProjectDir);
  env["BT_PROJECT_CACHE_DIR"] = kContainerProjectDir;
  if (team) {
    bind(mounted[1]->mountpoint, kContainerTeamDir);
    env["BT_TEAM_CACHE_DIR"] = kContainerTeamDir;
  }
  bind(scratch, kContainerScratchDir);
  env["BT_SCRATCH_DIR"] = kContainerScratchDir;
  env["HF_HOME"] = fmt::format("{}/huggingface", kContainerProjectDir);

  for (auto& m : mounted) {
    m->jobs.insert(req.job_id());
    m->idle_since.reset();
  }
  jobs_[req.job_id()] = Job{.scopes = scopes, .scratch = scratch, .answer = out};
  spdlog::info("job {} attached: {}", req.job_id(), decided.message());
  return out;
}

absl::StatusOr<std::vector<std::string>> NodeDaemon::Detach(const std::string& job_id) {
  RETURN_IF_ERROR(ValidateId(job_id, "job id"));
  std::lock_guard lock(mounts_mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    // An earlier process of this daemon may have attached it (jobs are not
    // kept across restarts, the server's attachments are): the server still
    // lets this node use the job's scopes until it hears of the detach.
    absl::StatusOr<bool> existed = DetachOnServer(job_id);
    if (existed.ok() && *existed) {
      spdlog::info("job {}: not attached in this process; detached on the server", job_id);
      return std::vector<std::string>{};
    }
    return absl::NotFoundError(fmt::format("job {} is not attached on this node", job_id));
  }
  // The job's writes first: every staged change of its scopes is committed
  // (other jobs' too: a scope cannot tell them apart, and it does no harm).
  for (const Scope& scope : it->second.scopes) {
    auto m = mounts_.find(scope.ToString());
    if (m == mounts_.end() || m->second->fs->scope_deleted()) continue;
    absl::Status committed = m->second->fs->CommitAll();
    if (!committed.ok()) {
      return absl::Status(committed.code(),
                          fmt::format("job {} stays attached: committing its writes to {}: {}",
                                      job_id, scope.ToString(), std::string(committed.message())));
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(it->second.scratch, ec);
  if (ec) {
    spdlog::warn("job {}: cannot remove scratch folder {}: {}", job_id, it->second.scratch,
                 ec.message());
  }
  std::vector<std::string> released;
  for (const Scope& scope : it->second.scopes) {
    auto m = mounts_.find(scope.ToString());
    if (m == mounts_.end()) continue;
    m->second->jobs.erase(job_id);
    if (m->second->jobs.empty() && !m->second->manual) {
      m->second->idle_since = Clock::now();
      released.push_back(scope.ToString());
    }
  }
  jobs_.erase(it);
  // After the commits above: the server may refuse this node the scopes
  // from now on.
  IGNORE_ERROR(DetachOnServer(job_id).status());
  spdlog::info("job {} detached", job_id);
  return released;
}

absl::StatusOr<bool> NodeDaemon::DetachOnServer(const std::string& job_id) {
  v1::DetachRequest req;
  req.set_job_id(job_id);
  v1::DetachResponse resp;
  auto ctx = server_->NewContext();
  // A connection being re-made (the server just restarted) is waited for,
  // within the call's deadline, rather than failing the detach at once:
  // a detach the server misses leaves this node its scopes there.
  ctx->set_wait_for_ready(true);
  absl::Status status = rpc::FromGrpcStatus(server_->cluster().Detach(ctx.get(), req, &resp));
  if (!status.ok()) {
    // Best effort: the job is gone from this node either way. What is left
    // on the server is an attachment too many (this node may still use the
    // scopes there), never one too few; detaching the job again retries.
    spdlog::warn("job {}: the server was not told of the detach ({}); detach the job again to "
                 "retry",
                 job_id, status.ToString());
    return status;
  }
  return resp.existed();
}

void NodeDaemon::HousekeepingLoop() {
  Clock::time_point next_check = Clock::now();
  std::unique_lock lock(stop_mu_);
  while (!stopping_) {
    stop_cv_.wait_for(lock, std::chrono::milliseconds(200));
    if (stopping_) break;
    lock.unlock();
    UnmountIdle();
    if (Clock::now() >= next_check) {
      CheckScopes();
      next_check = Clock::now() + options_.scope_check_interval;
    }
    lock.lock();
  }
}

void NodeDaemon::UnmountIdle() {
  std::lock_guard lock(mounts_mu_);
  for (auto it = mounts_.begin(); it != mounts_.end();) {
    Mounted& m = *it->second;
    if (!m.idle_since || Clock::now() - *m.idle_since < options_.unmount_grace) {
      ++it;
      continue;
    }
    absl::Status status = m.mount->Unmount(/*force=*/false);
    if (!status.ok()) {
      // Still in use (a process kept a file open past its job): try again
      // at the next pass.
      spdlog::debug("{}: idle but busy, stays mounted: {}", it->first, status.ToString());
      ++it;
      continue;
    }
    spdlog::info("{}: unmounted, no job has used it for {} ms", it->first,
                 options_.unmount_grace.count());
    RemoveStoredMount(m.scope);
    it = mounts_.erase(it);
  }
}

void NodeDaemon::CheckScopes() {
  std::map<std::string, std::pair<Scope, uint64_t>> known;
  {
    std::lock_guard lock(mounts_mu_);
    known = known_scopes_;
  }
  for (const auto& [name, entry] : known) {
    v1::OpenScopeRequest req;
    req.set_scope(name);
    req.set_create(false);
    v1::OpenScopeResponse resp;
    absl::Status status = server_->Call(&v1::Namespace::Stub::OpenScope, server_->ns(), req, &resp);
    // Only the server's word that the scope is gone (or is another one now)
    // counts; an unreachable server says nothing.
    bool gone = status.code() == absl::StatusCode::kNotFound ||
                (status.ok() && resp.generation() != entry.second);
    if (!gone) continue;
    std::lock_guard lock(mounts_mu_);
    auto k = known_scopes_.find(name);
    if (k == known_scopes_.end() || k->second.second != entry.second) continue;  // remounted
    known_scopes_.erase(k);
    if (auto m = mounts_.find(name); m != mounts_.end()) {
      std::vector<InodeId> inodes = m->second->fs->MarkScopeDeleted();
      inodes.push_back(kRootInode);
      m->second->mount->InvalidateInodes(inodes);
    }
    fetcher_->DropScope(entry.first);
    absl::Status dropped = tier_->DropScope(entry.first);
    if (!dropped.ok()) {
      spdlog::error("{}: cannot drop its node tier images: {}", name, dropped.ToString());
    }
    spdlog::warn("{}: gone from the server: its node tier images are dropped", name);
  }
}

std::map<std::string, uint64_t> NodeDaemon::Counters() {
  std::map<std::string, uint64_t> out;
  TierStats t = tier_->Stats();
  out["tier.capacity_bytes"] = t.capacity_bytes;
  out["tier.used_bytes"] = t.used_bytes;
  out["tier.images"] = t.images;
  out["tier.hits"] = t.hits;
  out["tier.hit_bytes"] = t.hit_bytes;
  out["tier.misses"] = t.misses;
  out["tier.evicted_bytes"] = t.evicted_bytes;
  out["tier.corrupt_chunks"] = t.corrupt_chunks;
  node::FetcherStats f = fetcher_->Stats();
  out["fetch.fetches"] = f.fetches;
  out["fetch.fetched_bytes"] = f.fetched_bytes;
  out["fetch.coalesced"] = f.coalesced;
  out["fetch.prefetches"] = f.prefetches;
  out["fetch.verify_failures"] = f.verify_failures;
  out["fetch.memory_hits"] = f.memory_hits;
  out["fetch.memory_bytes"] = f.memory_bytes;
  std::lock_guard lock(mounts_mu_);
  out["node.mounts"] = mounts_.size();
  out["node.jobs"] = jobs_.size();
  for (const auto& [name, m] : mounts_) {
    node::FilesystemStats s = m->fs->Stats();
    out[fmt::format("scope.{}.commits", name)] = s.commits;
    out[fmt::format("scope.{}.commit_conflicts", name)] = s.commit_conflicts;
    out[fmt::format("scope.{}.commit_rebases", name)] = s.commit_rebases;
    out[fmt::format("scope.{}.uploaded_chunks", name)] = s.uploaded_chunks;
    out[fmt::format("scope.{}.uploaded_bytes", name)] = s.uploaded_bytes;
    out[fmt::format("scope.{}.background_uploaded_chunks", name)] = s.background_uploaded_chunks;
    out[fmt::format("scope.{}.background_uploaded_bytes", name)] = s.background_uploaded_bytes;
    out[fmt::format("scope.{}.background_used_chunks", name)] = s.background_used_chunks;
    out[fmt::format("scope.{}.background_dropped_chunks", name)] = s.background_dropped_chunks;
    out[fmt::format("scope.{}.commit_resends", name)] = s.commit_resends;
    out[fmt::format("scope.{}.upload_peak_bytes", name)] = s.upload_peak_bytes;
    fuse::PassthroughStats p = m->mount->passthrough_stats();
    out[fmt::format("scope.{}.passthrough_enabled", name)] = p.enabled ? 1 : 0;
    out[fmt::format("scope.{}.passthrough_opens", name)] = p.opens;
    out[fmt::format("scope.{}.passthrough_backing_files", name)] = p.backing_files;
    out[fmt::format("scope.{}.passthrough_direct_opens", name)] = p.direct_opens;
    out[fmt::format("scope.{}.passthrough_refusals", name)] = p.refusals;
    if (m->watcher) {
      node::MetadataWatcherStats w = m->watcher->Stats();
      out[fmt::format("scope.{}.feed_following", name)] = w.following ? 1 : 0;
      out[fmt::format("scope.{}.feed_subscriptions", name)] = w.subscriptions;
      out[fmt::format("scope.{}.feed_breaks", name)] = w.breaks;
      out[fmt::format("scope.{}.feed_messages", name)] = w.messages;
      out[fmt::format("scope.{}.feed_changes", name)] = w.changes;
      out[fmt::format("scope.{}.feed_lost", name)] = w.lost;
    }
  }
  return out;
}

void NodeDaemon::StopAdminAndHousekeeper() {
  if (admin_) {
    admin_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    admin_.reset();
  }
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (housekeeper_.joinable()) housekeeper_.join();
}

void NodeDaemon::HandOver() {
  StopAdminAndHousekeeper();
  std::lock_guard lock(mounts_mu_);
  shut_down_ = true;
  for (auto& [name, m] : mounts_) {
    m->watcher.reset();
    // First no request is served any more, then what open files staged is
    // committed: the next process adopts their handles over that version.
    // What cannot be committed stays journaled and is its Init's.
    IGNORE_ERROR(m->mount->Detach());
    if (absl::Status committed = m->fs->CommitAll(); !committed.ok()) {
      spdlog::error(
          "{}: staged writes not committed before the hand-over (the next process "
          "recovers them from the staging journal): {}",
          name, committed.ToString());
    }
    spdlog::info("{}: handed over at {}", name, m->mountpoint);
  }
  mounts_.clear();
  // The next process has a lease of its own: locks taken through this one
  // are freed now rather than at the lease's end.
  if (locks_) locks_->Close();
}

void NodeDaemon::Shutdown() {
  StopAdminAndHousekeeper();
  std::lock_guard lock(mounts_mu_);
  shut_down_ = true;
  // Forced: a file still open in a container does not keep the daemon from
  // stopping. Its staged writes stay in the staging folder (journal) and are
  // committed at the next mount of the scope.
  for (auto& [name, m] : mounts_) {
    IGNORE_ERROR(m->mount->Unmount(/*force=*/true));
    RemoveStoredMount(m->scope);
  }
  mounts_.clear();
  // Nothing can use this node's locks any more: free them for the others now
  // rather than after the lease.
  if (locks_) locks_->Close();
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
      out->set_mountpoint(m->mountpoint);
      for (const std::string& job : m->jobs) out->add_jobs(job);
      out->set_manual(m->manual);
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

grpc::ServerUnaryReactor* NodeDaemon::Attach(grpc::CallbackServerContext* ctx,
                                             const v1::AttachJobRequest* req,
                                             v1::AttachJobResponse* resp) {
  absl::StatusOr<v1::AttachJobResponse> answer = Attach(*req);
  if (answer.ok()) *resp = *std::move(answer);
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(rpc::ToGrpcStatus(answer.status()));
  return reactor;
}

grpc::ServerUnaryReactor* NodeDaemon::Detach(grpc::CallbackServerContext* ctx,
                                             const v1::DetachJobRequest* req,
                                             v1::DetachJobResponse* resp) {
  absl::StatusOr<std::vector<std::string>> released = Detach(req->job_id());
  if (released.ok()) {
    for (const std::string& scope : *released) resp->add_released_scopes(scope);
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(rpc::ToGrpcStatus(released.status()));
  return reactor;
}

}  // namespace traincache::cli
