// traincache-node: the FUSE daemon of one GPU node. Mounts each scope it is
// given under the mount root (<root>/project/<id>, <root>/team/<id>) and serves
// it from the node tier and the cluster's traincache-server.
//
//   traincache-node --server ADDR --token-file F --mount-root DIR
//                   --tier-dir DIR --staging-dir DIR [--tier-capacity-bytes N]
//                   [--scope project:ID ...] [--outage-timeout-seconds S]
//                   [--admin-socket /run/traincache/node.sock]
//                   [--scratch-dir DIR] [--unmount-grace-seconds S]
//                   [--scope-check-interval-ms MS]
//                   [--metrics-listen HOST:PORT] [--fuse-passthrough=false]
//                   [--fetch-threads N] [--readahead-chunks N]
//                   [--readahead-max-chunks N] [--fetch-memory-bytes N]
//                   [--tier-direct-writes true|false] [--metadata-ttl-ms MS]
//                   [--background-upload true|false] [--upload-threads N]
//                   [--upload-budget-bytes N]
//                   [--tls-ca-file F [--tls-cert-file F --tls-key-file F]
//                    [--tls-server-name NAME] | --insecure]
//
// Exits 2 on bad flags, 1 when a mount fails, 0 after SIGTERM/SIGINT (every
// mount is committed and unmounted first), 75 after SIGUSR2 (every mount
// committed and handed over: left mounted, its connection kept by systemd's fd store
// for the next process, which serves it on; see cli/fd_store.h). Under
// systemd (Type=notify) it reports READY=1 only once every --scope mount answers a stat, and
// STOPPING=1 on a stop signal.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <map>

#include "common/malloc_tuning.h"
#include "cli/fd_store.h"
#include "cli/node_daemon.h"
#include "cli/service_notify.h"
#include "cli/tls_flags.h"
#include "metrics/counter_families.h"
#include "metrics/metrics_endpoint.h"

using namespace traincache;

// The exit code after SIGUSR2 (EX_TEMPFAIL): the mounts were handed over and
// wait for the next process.
constexpr int kExitHandedOver = 75;

int main(int argc, char** argv) {
  TuneMallocForChunkBuffers();
  KeepChunkBuffersInOneArena();
  CLI::App app{"traincache-node: the node daemon (FUSE mounts of cluster caches)"};
  std::string server, token_file, mount_root, tier_dir, staging_dir, log_level = "info";
  uint64_t tier_capacity = 0;
  uint32_t outage_timeout_seconds = 60;
  std::vector<std::string> scopes;
  app.add_option("--server", server, "traincache-server address")->required();
  app.add_option("--token-file", token_file, "file holding the bearer token")->required();
  app.add_option("--mount-root", mount_root, "where scopes are mounted")->required();
  app.add_option("--tier-dir", tier_dir, "node tier folder (NVMe)")->required();
  app.add_option("--staging-dir", staging_dir, "write staging folder (NVMe)")->required();
  app.add_option("--tier-capacity-bytes", tier_capacity, "node tier size (0: 90% of its disk)");
  app.add_option("--scope", scopes, "scope to mount at start (project:ID or team:ID)");
  app.add_option("--outage-timeout-seconds", outage_timeout_seconds,
                 "how long a server outage is waited out before calls fail with EIO");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  std::string admin_socket = "/run/traincache/node.sock";
  app.add_option("--admin-socket", admin_socket,
                 "Unix socket of the admin endpoint (mount-scope, unmount-scope, stats); "
                 "empty: none");
  std::string scratch_dir;
  uint32_t unmount_grace_seconds = 60, scope_check_interval_ms = 2000;
  app.add_option("--scratch-dir", scratch_dir,
                 "where attached jobs get their scratch folders (node NVMe); empty: no attach");
  app.add_option("--unmount-grace-seconds", unmount_grace_seconds,
                 "a scope no attached job uses is unmounted after this long");
  app.add_option("--scope-check-interval-ms", scope_check_interval_ms,
                 "how often mounted scopes are checked for deletion on the server")
      ->check(CLI::Range(100u, 3'600'000u));
  node::ChunkFetcher::Options fetcher;
  app.add_option("--fetch-threads", fetcher.threads,
                 "threads fetching chunks from the server ahead of readers")
      ->check(CLI::Range(1, 256));
  app.add_option("--readahead-chunks", fetcher.readahead_chunks,
                 "chunks fetched ahead of a sequential reader at first (0: no readahead)");
  app.add_option("--readahead-max-chunks", fetcher.max_readahead_chunks,
                 "how far the readahead window of a long sequential read grows, in chunks");
  app.add_option("--fetch-memory-bytes", fetcher.memory_bytes,
                 "memory holding verified chunks for readers (and readahead) to copy from");
  bool tier_direct_writes = true;
  app.add_option("--tier-direct-writes", tier_direct_writes,
                 "write node tier chunks with O_DIRECT (bypassing the page cache)");
  bool background_upload = true;
  size_t upload_threads = 4;
  uint64_t upload_budget_bytes = 32ull << 20;
  app.add_option("--background-upload", background_upload,
                 "upload each chunk a writer has finished while it writes on (else all at close)")
      ->default_val(true);
  app.add_option("--upload-threads", upload_threads,
                 "threads per mount hashing and uploading written chunks")
      ->check(CLI::Range(1, 64));
  app.add_option("--upload-budget-bytes", upload_budget_bytes,
                 "bytes of written chunks per mount queued or being uploaded at once")
      ->check(CLI::Range(uint64_t{1} << 20, uint64_t{1} << 34));
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "host:port of the Prometheus /metrics endpoint (empty: none)");
  bool passthrough = true;
  app.add_option("--fuse-passthrough", passthrough,
                 "hand files complete in the node tier to the kernel (FUSE passthrough) where "
                 "it allows it")
      ->default_val(true);
  uint32_t metadata_ttl_ms = 30'000;
  app.add_option("--metadata-ttl-ms", metadata_ttl_ms,
                 "how long entries and attributes are cached (here and by the kernel) while the "
                 "server's change feed is followed; 0: no change feed, 1 s")
      ->check(CLI::Range(0u, 3'600'000u));
  bool attached_scopes_only = false;
  app.add_flag("--attached-scopes-only", attached_scopes_only,
               "serve only the scopes of attached jobs: refuse --scope and mount-scope (a "
               "server with require_attached_scopes also refuses them, by certificate)");
  rpc::ClientTlsFiles tls_files;
  cli::AddClientTlsFlags(app, tls_files);
  CLI11_PARSE(app, argc, argv);
  // First: the descriptors systemd passed (fds 3 and up) must not be taken
  // for something else before they are claimed.
  std::map<std::string, cli::StoredMount> inherited = cli::TakeStoredMounts();

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [node] %v");

  std::ifstream token_in(token_file);
  std::string token;
  if (!token_in || !std::getline(token_in, token) || token.empty()) {
    std::cerr << "traincache-node: cannot read a token from " << token_file << "\n";
    return 2;
  }
  absl::StatusOr<rpc::ClientTls> tls = rpc::LoadClientTls(tls_files, server);
  if (!tls.ok()) {
    std::cerr << "traincache-node: " << tls.status().message() << "\n";
    return 2;
  }
  if (attached_scopes_only && (!scopes.empty() || scratch_dir.empty())) {
    std::cerr << "traincache-node: --attached-scopes-only "
              << (scratch_dir.empty() ? "needs --scratch-dir (jobs attach there)"
                                      : "cannot be given with --scope")
              << "\n";
    return 2;
  }
  std::vector<Scope> parsed;
  for (const std::string& text : scopes) {
    auto scope = Scope::Parse(text);
    if (!scope.ok()) {
      std::cerr << "traincache-node: --scope " << text << ": " << scope.status().message() << "\n";
      return 2;
    }
    parsed.push_back(*scope);
  }

  // Declared before the daemon: its histograms live in the endpoint's registry.
  std::unique_ptr<metrics::MetricsEndpoint> metrics;
  if (!metrics_listen.empty()) {
    auto endpoint = metrics::MetricsEndpoint::Start(metrics_listen);
    if (!endpoint.ok()) {
      std::cerr << "traincache-node: --metrics-listen: " << endpoint.status().message() << "\n";
      return endpoint.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
    }
    metrics = *std::move(endpoint);
  }
  auto daemon = cli::NodeDaemon::Start(cli::NodeDaemonOptions{
      .client = {.target = server,
                 .token = token,
                 .tls = *tls,
                 .outage_timeout = std::chrono::seconds(outage_timeout_seconds)},
      .mount_root = mount_root,
      .staging_dir = staging_dir,
      .tier = {.dir = tier_dir,
               .capacity_bytes = tier_capacity,
               .direct_writes = tier_direct_writes},
      .fetcher = fetcher,
      .admin_socket = admin_socket,
      .scratch_dir = scratch_dir,
      .attached_scopes_only = attached_scopes_only,
      .unmount_grace = std::chrono::seconds(unmount_grace_seconds),
      .scope_check_interval = std::chrono::milliseconds(scope_check_interval_ms),
      .metrics = metrics ? &metrics->registry() : nullptr,
      .passthrough = passthrough,
      .metadata_ttl = std::chrono::milliseconds(metadata_ttl_ms),
      .background_upload = background_upload,
      .upload_threads = upload_threads,
      .upload_budget_bytes = upload_budget_bytes,
      .inherited = std::move(inherited)});
  if (!daemon.ok()) {
    std::cerr << "traincache-node: " << daemon.status().message() << "\n";
    return 1;
  }
  if (metrics) {
    metrics->AddCollectable([d = daemon->get()] {
      return metrics::CounterFamilies(metrics::NodeCounterNaming(), d->Counters());
    });
  }
  int exit_code = 0;
  std::vector<std::string> mountpoints;
  for (const Scope& scope : parsed) {
    cli::NotifyStatus("mounting " + scope.ToString());
    auto mounted = (*daemon)->Mount(scope, /*create=*/true);
    if (!mounted.ok()) {
      std::cerr << "traincache-node: " << scope.ToString() << ": " << mounted.status().message()
                << rpc::UnavailableHint(mounted.status(), *tls) << "\n";
      exit_code = 1;
      break;
    }
    mountpoints.push_back(mounted->first);
  }
  if (exit_code == 0) {
    // Ready means served: each mount answers a stat through its session loop.
    absl::Status answering = cli::WaitUntilAnswering(mountpoints, std::chrono::seconds(60));
    if (!answering.ok()) {
      std::cerr << "traincache-node: " << answering.message() << "\n";
      exit_code = 1;
    }
  }
  if (exit_code == 0) {
    std::string serving = fmt::format("serving {} scope(s) under {}{}{}", parsed.size(),
                                      mount_root,
                                      admin_socket.empty() ? "" : ", admin socket " + admin_socket,
                                      metrics ? ", metrics on " + metrics->address() : "");
    spdlog::info("traincache-node {}", serving);
    cli::NotifyReady(serving);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (sig == SIGUSR2) {
      spdlog::info("received SIGUSR2, handing every mount over to the next process");
      cli::NotifyStopping("committing and handing the mounts over (they stay mounted)");
      if (metrics) metrics->Stop();
      (*daemon)->HandOver();
      // Not 0: the unit restarts the daemon on it (RestartForceExitStatus=)
      // and counts it a success (SuccessExitStatus=), not a failure.
      return kExitHandedOver;
    }
    spdlog::info("received {}, unmounting", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    cli::NotifyStopping("committing and unmounting every scope");
  }
  // No scrape reads the daemon's counters past this line.
  if (metrics) metrics->Stop();
  // Unmount every scope (see NodeDaemon::Shutdown), then go.
  (*daemon)->Shutdown();
  return exit_code;
}
