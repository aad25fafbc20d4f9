// traincache-server: the cluster cache service.
//
//   traincache-server --config /etc/traincache/server.toml [--data-dir D] [--listen A]
//                     [--token-file F] [--default-quota-bytes N] [--log-level L]
//                     [--metrics-listen HOST:PORT] [--tls-cert-file F --tls-key-file F]
//                     [--tls-client-ca-file F] [--require-attached-scopes]
//
// Flags override the file. Exits 2 with a message naming the key when the
// config is wrong, 1 when the server cannot start (data dir locked, port in
// use), 0 after a clean shutdown on SIGTERM or SIGINT. Under systemd
// (Type=notify) it reports READY=1 once it listens and STOPPING=1 on a stop
// signal.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "common/malloc_tuning.h"
#include <cstdio>
#include <iostream>

#include "cli/service_notify.h"
#include "server/cache_server.h"
#include "server/config.h"

using traincache::server::CacheServer;
using traincache::server::ServerConfig;

int main(int argc, char** argv) {
  traincache::TuneMallocForChunkBuffers();
  CLI::App app{"traincache-server: the cluster cache service"};
  std::string config_path;
  std::optional<std::string> data_dir, listen, token_file, log_level, metrics_listen, metadata_sync,
      tls_cert_file, tls_key_file, tls_client_ca_file;
  std::optional<uint64_t> quota;
  // A plain bool: CLI11 assigns an optional<bool> flag even when absent,
  // which would switch the config file's key off.
  bool require_attached_scopes = false;
  app.add_option("--config", config_path, "TOML config file");
  app.add_option("--data-dir", data_dir, "data directory (RocksDB and chunks)");
  app.add_option("--listen", listen, "host:port or unix:/path");
  app.add_option("--token-file", token_file, "file holding the bearer token");
  app.add_option("--default-quota-bytes", quota, "quota of a new scope (default 1 TB)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  app.add_option("--metadata-sync", metadata_sync,
                 "content-commits (default: close and fsync are durable, namespace changes "
                 "with them) or every-change (each change waits for a disk sync)");
  app.add_option("--metrics-listen", metrics_listen,
                 "host:port of the Prometheus /metrics endpoint (empty: none)");
  app.add_option("--tls-cert-file", tls_cert_file,
                 "PEM certificate chain: serve TLS (config key tls_cert_file)");
  app.add_option("--tls-key-file", tls_key_file, "PEM private key of --tls-cert-file");
  app.add_option("--tls-client-ca-file", tls_client_ca_file,
                 "PEM CA bundle: require client certificates it signed (mutual TLS)");
  app.add_flag("--require-attached-scopes", require_attached_scopes,
               "serve a scope's data only to a node (client certificate CN) with an attached "
               "job that uses it (config key require_attached_scopes; needs "
               "--tls-client-ca-file)");
  CLI11_PARSE(app, argc, argv);

  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<ServerConfig> config = ServerConfig{};
  if (!config_path.empty()) config = traincache::server::LoadServerConfigFile(config_path);
  if (config.ok()) {
    if (data_dir) config->data_dir = *data_dir;
    if (listen) config->listen = *listen;
    if (token_file) {
      config->token_file = *token_file;
      config->token.clear();
    }
    if (quota) config->default_quota_bytes = *quota;
    if (log_level) config->log_level = *log_level;
    if (metadata_sync) config->metadata_sync = *metadata_sync;
    if (metrics_listen) config->metrics_listen = *metrics_listen;
    if (tls_cert_file) config->tls_cert_file = *tls_cert_file;
    if (tls_key_file) config->tls_key_file = *tls_key_file;
    if (tls_client_ca_file) config->tls_client_ca_file = *tls_client_ca_file;
    if (require_attached_scopes) config->require_attached_scopes = true;
    config = traincache::server::FinalizeServerConfig(*std::move(config));
  }
  if (config.ok()) {
    // Read here too (Start reads them again) so that a wrong file is a
    // config error (exit 2), not a failure to start.
    absl::Status tls = traincache::server::LoadServerTls(*config).status();
    if (tls.ok()) tls = traincache::server::LoadRegistryTls(*config).status();
    if (!tls.ok()) config = tls;
  }
  if (!config.ok()) {
    std::cerr << "traincache-server: " << config.status().message() << "\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [server] %v");

  auto server = CacheServer::Start(*config);
  if (!server.ok()) {
    std::cerr << "traincache-server: " << server.status().message() << "\n";
    return 1;
  }
  std::string metrics = (*server)->metrics_address();
  traincache::cli::NotifyReady(fmt::format("serving on {}{}", (*server)->address(),
                                           metrics.empty() ? "" : ", metrics on " + metrics));
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  traincache::cli::NotifyStopping("finishing running calls, closing the stores");
  (*server)->Shutdown();
  return 0;
}
