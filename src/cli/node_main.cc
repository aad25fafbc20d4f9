// traincache-node: the FUSE daemon of one GPU node. Mounts each scope it is
// given under the mount root (<root>/project/<id>, <root>/team/<id>) and serves
// it from the node tier and the cluster's traincache-server.
//
//   traincache-node --server ADDR --token-file F --mount-root DIR
//                   --tier-dir DIR --staging-dir DIR [--tier-capacity-bytes N]
//                   [--scope project:ID ...] [--outage-timeout-seconds S]
//
// Exits 2 on bad flags, 1 when a mount fails, 0 after SIGTERM/SIGINT (every
// mount is committed and unmounted first).
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <map>

#include "common/malloc_tuning.h"
#include "fuse/fuse_mount.h"
#include "node/chunk_fetcher.h"
#include "node/filesystem.h"
#include "rpc/grpc_cluster_client.h"
#include "traincache/node_tier.h"

using namespace traincache;

namespace {

struct MountedScope {
  std::unique_ptr<node::Filesystem> fs;
  std::unique_ptr<fuse::FuseMount> mount;
};

}  // namespace

int main(int argc, char** argv) {
  TuneMallocForChunkBuffers();
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
  CLI11_PARSE(app, argc, argv);

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [node] %v");

  std::ifstream token_in(token_file);
  std::string token;
  if (!token_in || !std::getline(token_in, token) || token.empty()) {
    std::cerr << "traincache-node: cannot read a token from " << token_file << "\n";
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

  rpc::GrpcClusterClient client(rpc::GrpcClusterClientOptions{
      .target = server,
      .token = token,
      .outage_timeout = std::chrono::seconds(outage_timeout_seconds)});
  auto tier = OpenDiskTier(DiskTierOptions{.dir = tier_dir, .capacity_bytes = tier_capacity});
  if (!tier.ok()) {
    std::cerr << "traincache-node: " << tier.status().message() << "\n";
    return 1;
  }
  node::ChunkFetcher fetcher(&client, tier->get(), node::ChunkFetcher::Options{});

  std::map<std::string, MountedScope> mounts;
  int exit_code = 0;
  for (const Scope& scope : parsed) {
    MountedScope m;
    m.fs = std::make_unique<node::Filesystem>(
        scope, &client, &fetcher, tier->get(),
        node::FilesystemOptions{.staging_dir = staging_dir});
    if (auto root = m.fs->Init(); !root.ok()) {
      std::cerr << "traincache-node: " << scope.ToString() << ": " << root.status().message()
                << "\n";
      exit_code = 1;
      break;
    }
    std::string mountpoint =
        fmt::format("{}/{}/{}", mount_root, scope.kind_name(), scope.id());
    auto mount = fuse::FuseMount::Mount(m.fs.get(), fuse::FuseMountOptions{.mountpoint = mountpoint});
    if (!mount.ok()) {
      std::cerr << "traincache-node: " << mount.status().message() << "\n";
      exit_code = 1;
      break;
    }
    m.mount = *std::move(mount);
    mounts.emplace(scope.ToString(), std::move(m));
  }
  if (exit_code == 0) {
    spdlog::info("traincache-node serving {} scope(s) under {}", mounts.size(), mount_root);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("received {}, unmounting", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  }
  // Unmount first (the kernel sends the last releases, which commit), then
  // the filesystems go.
  for (auto& [name, m] : mounts) {
    if (m.mount) m.mount->Unmount();
  }
  mounts.clear();
  return exit_code;
}
