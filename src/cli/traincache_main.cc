// traincache: the command-line tool for operators and job launchers.
//
// Server commands (talk to traincache-server):
//   traincache [--server ADDR] [--token-file F] [TLS flags] ping
//   traincache ... smoke [--scope project:demo]     write, read back, compare
//   traincache ... usage <scope>
//   traincache ... quota get <scope> | quota set <scope> <bytes>
//   traincache ... delete-scope <scope> --yes
//   traincache ... server-stats
//   traincache ... pin show|clear <project> | pin set <project> <cluster>
//   traincache ... delete-project <project> --yes
//   traincache ... summarize <id> [--team] [--sort filepath|size|modified|type|permissions]
//                  [--order asc|desc] [-o cli-table|csv|json]   files of project (team) <id>
// Offline (the server stopped):
//   traincache fsck --data-dir D     verify every chunk of a server's data dir;
//                                    exit 1 if one is corrupt or missing
// Node commands (talk to the local traincache-node's admin socket):
//   traincache attach --project P [--team T] --gpu H100 --job J
//                     [--require-cache-affinity=false] [-o env|json]
//   traincache detach --job J
//   traincache warmup <path>                         read a tree into the node tier
//   traincache [--node-socket S] mount-scope <scope> [--no-create]
//   traincache ... unmount-scope <scope>
//   traincache ... mounts
//   traincache ... stats                             node tier use, hit ratio, per scope
// ADDR, F and S default to $TRAINCACHE_SERVER, $TRAINCACHE_TOKEN_FILE and
// $TRAINCACHE_NODE_SOCKET (else /run/traincache/node.sock).
// TLS flags: --tls-ca-file F (default $TRAINCACHE_TLS_CA_FILE) [--tls-cert-file F
// --tls-key-file F] [--tls-server-name N], or --insecure for plaintext to a
// server that is not on this machine (rpc/tls.h).
// Exit codes: 0 success, 1 the operation failed (message on stderr), 2 usage.
#include <CLI/CLI.hpp>

#include "common/malloc_tuning.h"
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>

#include "cli/fsck_command.h"
#include "cli/job_commands.h"
#include "cli/summarize_command.h"
#include "cli/tls_flags.h"
#include "rpc/client.h"
#include "traincache/v1/node_admin.grpc.pb.h"
#include "traincache/status.h"

namespace traincache::cli {
namespace {

std::string EnvOr(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

absl::StatusOr<rpc::ClientOptions> ClientOptionsFrom(const std::string& server,
                                                     const std::string& token_file,
                                                     const rpc::ClientTlsFiles& tls) {
  rpc::ClientOptions options;
  options.target = server;
  ASSIGN_OR_RETURN(options.tls, rpc::LoadClientTls(tls, server));
  std::ifstream in(token_file);
  if (!in) return absl::NotFoundError(fmt::format("cannot read token file {}", token_file));
  std::getline(in, options.token);
  return options;
}

absl::Status Ping(rpc::ServerClient& client) {
  v1::PingResponse resp;
  RETURN_IF_ERROR(client.Call(&v1::Admin::Stub::Ping, client.admin(), {}, &resp));
  std::cout << "traincache-server " << resp.version() << " (id " << resp.server_id() << ") is up\n";
  return absl::OkStatus();
}

// Creates a scope if needed, writes a file of random bytes through chunk upload
// and commit, reads it back and compares: proof that the service works.
absl::Status Smoke(rpc::ServerClient& client, const std::string& scope_text) {
  ASSIGN_OR_RETURN(Scope scope, Scope::Parse(scope_text));
  v1::OpenScopeRequest open;
  open.set_scope(scope.ToString());
  open.set_create(true);
  v1::OpenScopeResponse opened;
  RETURN_IF_ERROR(client.Call(&v1::Namespace::Stub::OpenScope, client.ns(), open, &opened));

  v1::CreateRequest create;
  create.set_scope(scope.ToString());
  create.set_parent(kRootInode);
  create.set_name("smoke.bin");
  create.set_mode(0644);
  v1::CreateResponse created;
  RETURN_IF_ERROR(client.Call(&v1::Namespace::Stub::Create, client.ns(), create, &created));

  std::string data(10u << 20, '\0');
  std::mt19937_64 rng(std::random_device{}());
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    uint64_t r = rng();
    std::memcpy(&data[i], &r, 8);
  }
  ASSIGN_OR_RETURN(InodeAttr attr, client.WriteFile(scope, created.attr().ino(),
                                                    created.attr().version(), data));
  ASSIGN_OR_RETURN(std::string back, client.ReadFile(scope, attr.ino));
  if (back != data) return absl::DataLossError("read back different bytes than were written");
  std::cout << "smoke ok: wrote and read back " << data.size() << " bytes as "
            << scope.ToString() << ":/smoke.bin (inode " << attr.ino << ", version "
            << attr.version << ")\n";
  return absl::OkStatus();
}

absl::Status Usage(rpc::ServerClient& client, const std::string& scope) {
  v1::ScopeRef ref;
  ref.set_scope(scope);
  v1::UsageResponse resp;
  RETURN_IF_ERROR(client.Call(&v1::Admin::Stub::GetUsage, client.admin(), ref, &resp));
  std::cout << scope << ": " << resp.used_bytes() << " bytes in " << resp.inodes()
            << " inodes, quota " << resp.quota_bytes() << " bytes\n";
  return absl::OkStatus();
}

absl::Status NodeCommand(const std::string& socket, const std::string& command,
                         const std::string& scope_text, bool create) {
  auto stub = NodeAdminStub(socket);
  auto ctx = NodeAdminContext();
  if (command == "mount-scope") {
    v1::MountScopeRequest req;
    req.set_scope(scope_text);
    req.set_create(create);
    v1::MountScopeResponse resp;
    RETURN_IF_ERROR(rpc::FromGrpcStatus(stub->MountScope(ctx.get(), req, &resp)));
    std::cout << scope_text << " " << (resp.already_mounted() ? "already mounted" : "mounted")
              << " at " << resp.mountpoint() << "\n";
  } else if (command == "unmount-scope") {
    v1::UnmountScopeRequest req;
    req.set_scope(scope_text);
    v1::UnmountScopeResponse resp;
    RETURN_IF_ERROR(rpc::FromGrpcStatus(stub->UnmountScope(ctx.get(), req, &resp)));
    std::cout << scope_text << " unmounted\n";
  } else {
    v1::ListMountsResponse resp;
    RETURN_IF_ERROR(rpc::FromGrpcStatus(stub->ListMounts(ctx.get(), {}, &resp)));
    for (const auto& m : resp.mounts()) {
      std::cout << m.scope() << " " << m.mountpoint() << (m.manual() ? " (by hand)" : "");
      if (m.jobs_size() > 0) std::cout << " jobs:";
      for (const auto& job : m.jobs()) std::cout << " " << job;
      std::cout << "\n";
    }
  }
  return absl::OkStatus();
}

absl::Status Stats(rpc::ServerClient& client) {
  v1::GetStatsResponse resp;
  RETURN_IF_ERROR(client.Call(&v1::Admin::Stub::GetStats, client.admin(), {}, &resp));
  std::map<std::string, uint64_t> sorted(resp.counters().begin(), resp.counters().end());
  for (const auto& [name, value] : sorted) std::cout << name << " " << value << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace traincache::cli

int main(int argc, char** argv) {
  using namespace traincache;
  traincache::TuneMallocForChunkBuffers();
  CLI::App app{"traincache: operate the training cache"};
  app.require_subcommand(1);
  std::string server = cli::EnvOr("TRAINCACHE_SERVER", "127.0.0.1:7070");
  std::string token_file = cli::EnvOr("TRAINCACHE_TOKEN_FILE", "/etc/traincache/token");
  app.add_option("--server", server, "server address (host:port or unix:/path)");
  app.add_option("--token-file", token_file, "file holding the bearer token");
  rpc::ClientTlsFiles tls_files;
  tls_files.ca_file = cli::EnvOr("TRAINCACHE_TLS_CA_FILE", "");
  cli::AddClientTlsFlags(app, tls_files, "$TRAINCACHE_TLS_CA_FILE");

  auto* ping = app.add_subcommand("ping", "check the server answers");
  std::string smoke_scope = "project:demo";
  auto* smoke = app.add_subcommand("smoke", "write a file, read it back, compare");
  smoke->add_option("--scope", smoke_scope, "scope to use");
  std::string scope;
  auto* usage = app.add_subcommand("usage", "bytes and inodes used by a scope");
  usage->add_option("scope", scope)->required();
  auto* quota = app.add_subcommand("quota", "get or set a scope's quota");
  quota->require_subcommand(1);
  auto* quota_get = quota->add_subcommand("get", "print the quota");
  quota_get->add_option("scope", scope)->required();
  auto* quota_set = quota->add_subcommand("set", "set the quota");
  uint64_t quota_bytes = 0;
  quota_set->add_option("scope", scope)->required();
  quota_set->add_option("bytes", quota_bytes)->required();
  auto* del = app.add_subcommand("delete-scope", "permanently delete a scope's cache");
  bool yes = false;
  del->add_option("scope", scope)->required();
  del->add_flag("--yes", yes, "confirm");
  auto* server_stats = app.add_subcommand("server-stats", "server counters");
  cli::SummarizeCommand summarize_cmd;
  std::string summarize_sort = "filepath", summarize_order = "asc", summarize_format = "cli-table";
  auto* summarize = app.add_subcommand("summarize", "list a project's (or team's) cache");
  summarize->add_option("id", summarize_cmd.id, "project id (team id with --team)")
      ->required()
      ->check(CLI::Validator(
          [](std::string& id) {
            absl::Status valid = ValidateScopeId(id);
            return valid.ok() ? std::string() : std::string(valid.message());
          },
          "ID"));
  summarize->add_flag("--team", summarize_cmd.team, "the id is a team's");
  summarize->add_option("--sort", summarize_sort, "sort key (default filepath)")
      ->check(CLI::IsMember({"filepath", "size", "modified", "type", "permissions"}));
  summarize->add_option("--order", summarize_order, "asc or desc (default asc)")
      ->check(CLI::IsMember({"asc", "desc"}));
  summarize->add_option("-o,--output-format", summarize_format, "cli-table, csv or json")
      ->check(CLI::IsMember({"cli-table", "csv", "json"}));

  std::string node_socket = cli::EnvOr("TRAINCACHE_NODE_SOCKET", "/run/traincache/node.sock");
  app.add_option("--node-socket", node_socket, "the local traincache-node's admin socket");
  bool no_create = false;
  auto* mount_scope = app.add_subcommand("mount-scope", "mount a scope on this node");
  mount_scope->add_option("scope", scope)->required();
  mount_scope->add_flag("--no-create", no_create, "fail if the scope does not exist yet");
  auto* unmount_scope = app.add_subcommand("unmount-scope", "unmount a scope on this node");
  unmount_scope->add_option("scope", scope)->required();
  auto* mounts = app.add_subcommand("mounts", "scopes mounted on this node");
  auto* stats = app.add_subcommand("stats", "this node's counters: tier, fetches, commits");

  v1::AttachJobRequest attach_req;
  bool require_affinity = true;
  std::string attach_format = "env";
  auto* attach = app.add_subcommand("attach", "attach a job: mount its caches, print its env");
  attach->add_option("--project", *attach_req.mutable_project(), "project id")->required();
  attach->add_option("--team", *attach_req.mutable_team(), "team id");
  attach->add_option("--gpu", *attach_req.mutable_gpu_type(), "GPU type, e.g. H100")->required();
  attach->add_option("--job", *attach_req.mutable_job_id(), "job id")->required();
  attach->add_option("--require-cache-affinity", require_affinity,
                     "refuse to run away from the project's pinned cluster (default true)");
  attach->add_option("-o,--output", attach_format, "env or json")
      ->check(CLI::IsMember({"env", "json"}));
  std::string job_id;
  auto* detach = app.add_subcommand("detach", "commit a job's writes, drop its scratch folder");
  detach->add_option("--job", job_id, "job id")->required();
  std::string warm_path;
  auto* warmup = app.add_subcommand("warmup", "read a tree on a traincache mount into the node tier");
  warmup->add_option("path", warm_path)->required();
  bool no_progress = false;
  warmup->add_flag("--no-progress", no_progress, "no progress bar");

  std::string project, pin_cluster;
  auto* pin = app.add_subcommand("pin", "show, set or clear a project's cluster affinity pin");
  pin->require_subcommand(1);
  auto* pin_show = pin->add_subcommand("show", "where the project is pinned");
  pin_show->add_option("project", project)->required();
  auto* pin_set = pin->add_subcommand("set", "move the pin (the old cluster's data stays)");
  pin_set->add_option("project", project)->required();
  pin_set->add_option("cluster", pin_cluster)->required();
  auto* pin_clear = pin->add_subcommand("clear", "remove the pin");
  pin_clear->add_option("project", project)->required();
  auto* delete_project =
      app.add_subcommand("delete-project", "permanently delete a project's cache everywhere");
  delete_project->add_option("project", project)->required();
  delete_project->add_flag("--yes", yes, "confirm");
  std::string fsck_data_dir;
  auto* fsck = app.add_subcommand(
      "fsck",
      "verify a stopped server's data dir: every chunk hashed, every referenced one present");
  fsck->add_option("--data-dir", fsck_data_dir, "the server's data_dir")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11's own codes (100 and up) would break the documented contract:
    // every usage error is exit code 2 (--help is 0).
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto report = [](const absl::Status& status) {
    if (status.ok()) return 0;
    std::cerr << "traincache: " << absl::StatusCodeToString(status.code()) << ": "
              << status.message() << "\n";
    return 1;
  };
  if (*fsck) {
    absl::StatusOr<cli::FsckReport> checked = cli::RunFsck(fsck_data_dir, std::cout);
    if (!checked.ok()) return report(checked.status());
    return checked->ok() ? 0 : 1;
  }
  if (*attach) {
    attach_req.set_require_cache_affinity(require_affinity);
    return report(cli::AttachJob(node_socket, attach_req, attach_format));
  }
  if (*detach) return report(cli::DetachJob(node_socket, job_id));
  if (*warmup) return report(cli::Warmup(warm_path, !no_progress));
  if (*stats) return report(cli::NodeStats(node_socket));

  for (CLI::App* node_cmd : {mount_scope, unmount_scope, mounts}) {
    if (!*node_cmd) continue;
    absl::Status status = cli::NodeCommand(node_socket, node_cmd->get_name(), scope, !no_create);
    if (!status.ok()) {
      std::cerr << "traincache: " << absl::StatusCodeToString(status.code()) << ": "
                << status.message() << "\n";
      return 1;
    }
    return 0;
  }

  auto options = cli::ClientOptionsFrom(server, token_file, tls_files);
  if (!options.ok()) {
    std::cerr << "traincache: " << options.status().message() << "\n";
    return 2;
  }
  rpc::ServerClient client(*options);
  absl::Status status;
  if (*ping) {
    status = cli::Ping(client);
  } else if (*smoke) {
    status = cli::Smoke(client, smoke_scope);
  } else if (*usage) {
    status = cli::Usage(client, scope);
  } else if (*quota_get || *quota_set) {
    v1::QuotaResponse resp;
    if (*quota_get) {
      v1::ScopeRef ref;
      ref.set_scope(scope);
      status = client.Call(&v1::Admin::Stub::GetQuota, client.admin(), ref, &resp);
    } else {
      v1::SetQuotaRequest req;
      req.set_scope(scope);
      req.set_quota_bytes(quota_bytes);
      status = client.Call(&v1::Admin::Stub::SetQuota, client.admin(), req, &resp);
    }
    if (status.ok()) std::cout << scope << " quota " << resp.quota_bytes() << " bytes\n";
  } else if (*del) {
    if (!yes) {
      std::cerr << "traincache: delete-scope removes " << scope
                << "'s whole cache permanently; add --yes to confirm\n";
      return 2;
    }
    v1::ScopeRef ref;
    ref.set_scope(scope);
    v1::DeleteScopeResponse resp;
    status = client.Call(&v1::Admin::Stub::DeleteScope, client.admin(), ref, &resp);
    if (status.ok()) std::cout << "deleted " << scope << " (" << resp.chunks_deleted() << " chunks)\n";
  } else if (*server_stats) {
    status = cli::Stats(client);
  } else if (*pin) {
    status = cli::PinCommand(client, *pin_show ? "show" : *pin_set ? "set" : "clear", project,
                             pin_cluster);
  } else if (*delete_project) {
    if (!yes) {
      std::cerr << "traincache: delete-project removes project " << project
                << "'s cache, pin and quota permanently, on every node; add --yes to confirm\n";
      return 2;
    }
    status = cli::DeleteProject(client, project);
  } else if (*summarize) {
    summarize_cmd.sort = *cli::ParseSortKey(summarize_sort);
    summarize_cmd.descending = summarize_order == "desc";
    summarize_cmd.format = *cli::ParseOutputFormat(summarize_format);
    status = cli::RunSummarize(client, summarize_cmd, std::cout);
  }
  if (!status.ok()) {
    std::cerr << "traincache: " << absl::StatusCodeToString(status.code()) << ": "
              << status.message() << rpc::UnavailableHint(status, options->tls) << "\n";
    return 1;
  }
  return 0;
}
