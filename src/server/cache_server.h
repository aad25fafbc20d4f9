// CacheServer: one running traincache-server — the data directory (locked
// against a second server), the RocksDB metadata store, the disk chunk store,
// the gRPC services and the periodic garbage collector.
//
// Start() either returns a serving server or an error that says what is wrong
// (bad config, data dir locked by another server, port in use); nothing is
// left running on error. With config.metrics_listen set it also serves
// Prometheus metrics: RPC latency histograms, the counters (as
// traincache_server_*, see metrics/counter_families.h) and, computed at each
// scrape, every scope's usage: traincache_server_scope_used_bytes,
// _quota_bytes and _inodes{scope="project:<id>"}. With
// config.require_attached_scopes it keeps the nodes' attachments in
// <data_dir>/attachments (attachment_table.h) and checks data-plane calls
// against them. Shutdown() stops accepting calls, lets running ones
// finish (up to a deadline), stops the collector and closes the stores.
// Thread-safe: Shutdown may be called from any thread, once.
#ifndef TRAINCACHE_SERVER_CACHE_SERVER_H_
#define TRAINCACHE_SERVER_CACHE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "metrics/metrics_endpoint.h"
#include "rpc/tls.h"
#include "server/config.h"
#include "server/service_context.h"
#include "server/services.h"

namespace traincache::server {

// Reads and checks the TLS files `config` names (tls_cert_file,
// tls_key_file, tls_client_ca_file): INVALID_ARGUMENT naming the key when one
// cannot be read, holds no PEM certificate/key, or the key is not the
// certificate's. Not enabled when the config has no certificate.
absl::StatusOr<rpc::ServerTls> LoadServerTls(const ServerConfig& config);
// The same for registry_tls_ca_file: how this server dials the pin registry.
absl::StatusOr<rpc::ClientTls> LoadRegistryTls(const ServerConfig& config);

class CacheServer {
 public:
  static absl::StatusOr<std::unique_ptr<CacheServer>> Start(const ServerConfig& config);
  ~CacheServer();

  // The address clients dial (the bound port when config said port 0).
  const std::string& address() const { return address_; }
  // The metrics endpoint's "host:port"; empty without metrics.
  std::string metrics_address() const { return metrics_ ? metrics_->address() : ""; }
  ServiceContext& context() { return *context_; }

  void Shutdown();

 private:
  CacheServer() = default;
  void GcLoop();
  // What a scrape adds to the registry: counters and usage per scope.
  std::vector<prometheus::MetricFamily> CollectMetrics();

  ServerConfig config_;
  int lock_fd_ = -1;
  std::string address_;
  // Before everything that records into its registry, so it is destroyed after them.
  std::unique_ptr<metrics::MetricsEndpoint> metrics_;
  std::unique_ptr<MetadataStore> meta_;
  std::unique_ptr<ChunkStore> chunks_;
  std::unique_ptr<meta::PinStore> pin_store_;  // Only when this server is the registry.
  std::unique_ptr<PinRegistry> pins_;
  std::unique_ptr<AttachmentTable> attachments_;  // Only with require_attached_scopes.
  std::unique_ptr<ServiceContext> context_;
  std::unique_ptr<NamespaceService> namespace_service_;
  std::unique_ptr<ChunkService> chunk_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<ClusterService> cluster_service_;
  std::unique_ptr<LockService> lock_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  bool grpc_server_started_ = false;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread gc_thread_;
};

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_CACHE_SERVER_H_
