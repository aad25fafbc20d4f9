#include "server/cache_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/data_dir_lock.h"
#include "metrics/counter_families.h"
#include "rpc/client.h"
#include "traincache/status.h"

namespace traincache::server {
namespace {

// Takes <data_dir>/server.lock (common/data_dir_lock.h) so two servers never
// share one data dir, and records this server's pid in it.
absl::StatusOr<int> LockDataDir(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        fmt::format("config key 'data_dir': cannot create {}: {}", data_dir, ec.message()));
  }
  absl::StatusOr<int> fd = TakeDataDirLock(data_dir, /*create=*/true);
  if (absl::IsFailedPrecondition(fd.status())) {
    return absl::FailedPreconditionError(
        fmt::format("data dir {} is locked by another traincache-server ({})", data_dir,
                    fd.status().message()));
  }
  RETURN_IF_ERROR(fd.status());
  const std::string path = data_dir + "/server.lock";
  std::string pid = fmt::format("{}\n", getpid());
  if (ftruncate(*fd, 0) != 0 || pwrite(*fd, pid.data(), pid.size(), 0) < 0) {
    spdlog::warn("cannot record pid in {}: {}", path, strerror(errno));
  }
  return *fd;
}

std::string MakeServerId() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

std::string KeyName(std::string_view key) { return fmt::format("config key '{}'", key); }

}  // namespace

absl::StatusOr<rpc::ServerTls> LoadServerTls(const ServerConfig& config) {
  rpc::ServerTls tls;
  if (config.tls_cert_file.empty()) return tls;
  ASSIGN_OR_RETURN(tls.cert_pem,
                   rpc::ReadCertificates(KeyName("tls_cert_file"), config.tls_cert_file));
  ASSIGN_OR_RETURN(tls.key_pem, rpc::ReadPrivateKey(KeyName("tls_key_file"), config.tls_key_file));
  RETURN_IF_ERROR(rpc::CheckKeyMatches(KeyName("tls_key_file"), tls.cert_pem, tls.key_pem));
  if (!config.tls_client_ca_file.empty()) {
    ASSIGN_OR_RETURN(tls.client_ca_pem, rpc::ReadCertificates(KeyName("tls_client_ca_file"),
                                                              config.tls_client_ca_file));
  }
  return tls;
}

absl::StatusOr<rpc::ClientTls> LoadRegistryTls(const ServerConfig& config) {
  rpc::ClientTls tls;
  if (config.registry_tls_ca_file.empty()) return tls;
  ASSIGN_OR_RETURN(tls.ca_pem, rpc::ReadCertificates(KeyName("registry_tls_ca_file"),
                                                     config.registry_tls_ca_file));
  return tls;
}

absl::StatusOr<std::unique_ptr<CacheServer>> CacheServer::Start(const ServerConfig& config) {
  ASSIGN_OR_RETURN(rpc::ServerTls tls, LoadServerTls(config));
  ASSIGN_OR_RETURN(rpc::ClientTls registry_tls, LoadRegistryTls(config));
  std::unique_ptr<CacheServer> s(new CacheServer());
  s->config_ = config;
  ASSIGN_OR_RETURN(s->lock_fd_, LockDataDir(config.data_dir));
  ASSIGN_OR_RETURN(s->meta_, OpenRocksMetadataStore(config.data_dir + "/meta",
                                                    config.metadata_sync == "every-change"
                                                        ? MetadataSync::kEveryChange
                                                        : MetadataSync::kContentCommits));
  ASSIGN_OR_RETURN(s->chunks_, OpenDiskChunkStore(config.data_dir + "/chunks"));
  if (config.registry.empty()) {
    // The pins live in a RocksDB of their own, apart from the scopes.
    ASSIGN_OR_RETURN(auto backend, meta::OpenRocksKvBackend(config.data_dir + "/registry"));
    s->pin_store_ = std::make_unique<meta::PinStore>(std::move(backend));
    s->pins_ = NewLocalPinRegistry(s->pin_store_.get());
  } else {
    s->pins_ = NewRemotePinRegistry(
        {.target = config.registry, .token = config.registry_token, .tls = registry_tls});
  }
  if (config.require_attached_scopes) {
    // A RocksDB of its own, as the pins': the scopes' keyspace (listed,
    // deleted, checked by fsck) never meets an attachment. Loaded whole:
    // every data-plane call is checked against memory.
    ASSIGN_OR_RETURN(auto backend, meta::OpenRocksKvBackend(config.data_dir + "/attachments"));
    ASSIGN_OR_RETURN(s->attachments_, AttachmentTable::Open(std::make_unique<meta::AttachmentStore>(
                                          std::move(backend))));
    spdlog::info("attached scopes required: {} job(s) of {} node(s) attached", s->attachments_->jobs(),
                 s->attachments_->identities());
  }
  if (!config.metrics_listen.empty()) {
    auto endpoint = metrics::MetricsEndpoint::Start(config.metrics_listen);
    if (!endpoint.ok()) {
      return absl::Status(endpoint.status().code(), fmt::format("config key 'metrics_listen': {}",
                                                                endpoint.status().message()));
    }
    s->metrics_ = *std::move(endpoint);
  }

  s->context_ = std::make_unique<ServiceContext>(
      s->meta_.get(), s->chunks_.get(),
      ServiceContext::Options{.token = config.token,
                              .default_quota_bytes = config.default_quota_bytes,
                              .worker_threads = config.worker_threads,
                              .gc_grace_seconds = config.gc_grace_seconds,
                              .orphan_grace_seconds = config.orphan_grace_seconds,
                              .pins = s->pins_.get(),
                              .attachments = s->attachments_.get(),
                              .metrics = s->metrics_ ? &s->metrics_->registry() : nullptr});
  s->namespace_service_ = std::make_unique<NamespaceService>(s->context_.get());
  s->chunk_service_ = std::make_unique<ChunkService>(s->context_.get());
  s->admin_service_ = std::make_unique<AdminService>(s->context_.get(), MakeServerId());
  s->cluster_service_ =
      std::make_unique<ClusterService>(s->context_.get(),
                                       ClusterTopology{.cluster = config.cluster,
                                                       .gpu_types = config.gpu_types,
                                                       .others = config.other_clusters},
                                       config.registry);
  s->lock_service_ = std::make_unique<LockService>(s->context_.get(),
                                                   std::chrono::seconds(config.lock_lease_seconds),
                                                   config.data_dir + "/locks-in-use");

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, rpc::ServerCredentialsFor(tls), &port);
  builder.SetMaxReceiveMessageSize(rpc::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(rpc::kMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, rpc::kHttp2WindowBytes);
  builder.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  builder.AddChannelArgument(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  builder.RegisterService(s->namespace_service_.get());
  builder.RegisterService(s->chunk_service_.get());
  builder.RegisterService(s->admin_service_.get());
  builder.RegisterService(s->cluster_service_.get());
  builder.RegisterService(s->lock_service_.get());
  if (config.listen.rfind("unix:", 0) == 0) {
    // A stale socket file from a crashed server would make the bind fail.
    std::error_code ec;
    std::filesystem::remove(config.listen.substr(5), ec);
  }
  s->grpc_server_ = builder.BuildAndStart();
  if (!s->grpc_server_ || (config.listen.rfind("unix:", 0) != 0 && port == 0)) {
    return absl::UnavailableError(fmt::format(
        "config key 'listen': cannot listen on {} (in use or bad address)", config.listen));
  }
  s->address_ = config.listen;
  if (config.listen.rfind("unix:", 0) != 0) {
    s->address_ = config.listen.substr(0, config.listen.rfind(':') + 1) + std::to_string(port);
  }
  s->grpc_server_started_ = true;
  if (s->metrics_) s->metrics_->AddCollectable([raw = s.get()] { return raw->CollectMetrics(); });
  s->gc_thread_ = std::thread([raw = s.get()] { raw->GcLoop(); });
  spdlog::info(
      "traincache-server {} listening on {} ({}), data in {}, cluster {} ({}), pin "
      "registry {}",
      TRAINCACHE_VERSION, s->address_,
      !tls.enabled()              ? "plaintext"
      : tls.client_ca_pem.empty() ? "TLS"
                                  : "TLS, client certificates required",
      config.data_dir, config.cluster, ClusterTopology::Describe(config.gpu_types),
      config.registry.empty() ? "here" : config.registry);
  return s;
}

CacheServer::~CacheServer() { Shutdown(); }

void CacheServer::Shutdown() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  // No scrape reads the stores or the counters past this line.
  if (metrics_) metrics_->Stop();
  // Change feed streams never end by themselves: end them first, so the
  // nodes learn at once that they must fall back to short cache times.
  if (context_) context_->feed().Close();
  // Running calls get up to 5 s to finish, then are cancelled. (gRPC 1.51
  // also waits this long while an idle TCP client stays connected.)
  if (grpc_server_) {
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  if (gc_thread_.joinable()) gc_thread_.join();
  // Waits still open were cancelled by the gRPC shutdown; the lock
  // service's expiry thread stops here. The pool's destructor runs queued
  // work; services and stores go after it.
  lock_service_.reset();
  context_.reset();
  grpc_server_.reset();
  meta_.reset();
  chunks_.reset();
  pins_.reset();
  pin_store_.reset();
  attachments_.reset();
  if (lock_fd_ >= 0) close(lock_fd_);
  lock_fd_ = -1;
  if (grpc_server_started_) spdlog::info("traincache-server stopped");
}

std::vector<prometheus::MetricFamily> CacheServer::CollectMetrics() {
  std::vector<prometheus::MetricFamily> out =
      metrics::CounterFamilies(metrics::ServerCounterNaming(), context_->counters().Snapshot());
  // Usage per scope, read at scrape time: one key read per scope, fine for
  // the hundreds of scopes one cluster holds.
  auto scopes = meta_->ListScopes();
  if (!scopes.ok()) {
    spdlog::warn("metrics: cannot list scopes: {}", scopes.status().ToString());
    return out;
  }
  std::vector<std::pair<std::string, double>> used, quota, inodes;
  for (const Scope& scope : *scopes) {
    auto usage = meta_->GetUsage(scope);
    if (!usage.ok()) continue;  // Deleted since it was listed.
    used.emplace_back(scope.ToString(), static_cast<double>(usage->bytes));
    quota.emplace_back(scope.ToString(), static_cast<double>(usage->quota_bytes));
    inodes.emplace_back(scope.ToString(), static_cast<double>(usage->inodes));
  }
  out.push_back(metrics::LabelledGauge(
      "traincache_server_scope_used_bytes",
      "Bytes of file content a scope holds (what its quota counts)", "scope", used));
  out.push_back(metrics::LabelledGauge("traincache_server_scope_quota_bytes",
                                       "Quota of a scope in bytes", "scope", quota));
  out.push_back(metrics::LabelledGauge("traincache_server_scope_inodes",
                                       "Inodes (files, directories, links) of a scope", "scope",
                                       inodes));
  return out;
}

void CacheServer::GcLoop() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::seconds(config_.gc_interval_seconds),
                       [this] { return stopping_; })) {
    lock.unlock();
    auto scopes = meta_->ListScopes();
    if (!scopes.ok()) {
      spdlog::error("gc: cannot list scopes: {}", scopes.status().ToString());
    } else {
      for (const Scope& scope : *scopes) {
        auto collected = context_->CollectGarbage(scope);
        if (!collected.ok()) {
          spdlog::error("gc: scope {}: {}", scope.ToString(), collected.status().ToString());
        }
      }
    }
    lock.lock();
  }
}

}  // namespace traincache::server
