// Jobs and cluster affinity against real processes: two traincache-server
// processes play two clusters ("east" offers H100 and A100 and is the pin
// registry; "west" offers A10G and L4 and forwards pin calls to east), node
// daemons attach and detach jobs through the real `traincache` CLI, and
// delete-project is checked on every disk it touches.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "integration/leftovers.h"
#include "integration/mount_fixture.h"
#include "traincache/status.h"
#include "traincache/v1/cluster.grpc.pb.h"

namespace traincache::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

Scope MustScope(const std::string& text) { return *Scope::Parse(text); }

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Waits up to `timeout` for `cond`.
template <typename Cond>
bool Eventually(Cond cond, std::chrono::seconds timeout = std::chrono::seconds(15)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return cond();
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.Sub("east"));
    east_ = std::make_unique<ServerProcess>(dir_.Sub("east-data"), dir_.Sub("east"));
    WriteConfig(dir_.Sub("east.toml"), R"(
cluster = "east"
gpu_types = ["H100", "A100"]
[clusters.west]
gpu_types = ["A10G", "L4"]
)");
    ASSERT_TRUE(east_->Start({"--config", dir_.Sub("east.toml")}).ok()) << Slurp(east_->log_file());

    std::filesystem::create_directories(dir_.Sub("west"));
    west_ = std::make_unique<ServerProcess>(dir_.Sub("west-data"), dir_.Sub("west"));
    WriteConfig(dir_.Sub("west.toml"), fmt::format(R"(
cluster = "west"
gpu_types = ["A10G", "L4"]
registry = "{}"
registry_token_file = "{}"
[clusters.east]
gpu_types = ["H100", "A100"]
)",
                                                   east_->address(), east_->token_file()));
    ASSERT_TRUE(west_->Start({"--config", dir_.Sub("west.toml")}).ok()) << Slurp(west_->log_file());
  }

  void TearDown() override {
    for (auto& n : nodes_) n->Stop();
    nodes_.clear();
    if (west_) west_->Stop();
    if (east_) east_->Stop();
  }

  static void WriteConfig(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  }

  // A node daemon of `server`'s cluster that can attach jobs.
  NodeProcess& StartNode(ServerProcess& server, const std::string& name,
                         const std::vector<std::string>& extra_args = {}) {
    std::filesystem::create_directories(dir_.Sub(name));
    nodes_.push_back(std::make_unique<NodeProcess>(dir_.Sub(name), server.address(),
                                                   server.token_file()));
    NodeProcess& node = *nodes_.back();
    std::vector<std::string> args = {"--scratch-dir",
                                     dir_.Sub(name) + "/scratch",
                                     "--unmount-grace-seconds",
                                     "1",
                                     "--scope-check-interval-ms",
                                     "200"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    absl::Status started = node.Start({}, args);
    EXPECT_TRUE(started.ok()) << started;
    return node;
  }

  struct Run {
    int code;
    std::string output;  // stdout and stderr
  };
  // The real CLI against `server` (and `node`'s admin socket).
  Run Cli(ServerProcess& server, NodeProcess* node, std::vector<std::string> args) {
    std::vector<std::string> argv = {CliBinary(), "--server", server.address(), "--token-file",
                                     server.token_file()};
    if (node) {
      argv.push_back("--node-socket");
      argv.push_back(node->AdminSocket());
    }
    argv.insert(argv.end(), args.begin(), args.end());
    std::string log = dir_.Sub(fmt::format("cli-{}.log", ++cli_runs_));
    int code = RunProgram(argv, log, 120);
    return {code, Slurp(log)};
  }

  absl::StatusOr<v1::AttachResponse> Attach(ServerProcess& server, const std::string& project,
                                            const std::string& gpu, bool required,
                                            const std::string& job) {
    auto client = server.Client();
    v1::AttachRequest req;
    req.set_project(project);
    req.set_gpu_type(gpu);
    req.set_require_cache_affinity(required);
    req.set_job_id(job);
    v1::AttachResponse resp;
    RETURN_IF_ERROR(client->Call(&v1::Cluster::Stub::Attach, client->cluster(), req, &resp));
    return resp;
  }

  // Where `project` is pinned, asked of `server`; "" if nowhere.
  std::string PinOf(ServerProcess& server, const std::string& project) {
    auto client = server.Client();
    v1::PinRef ref;
    ref.set_project(project);
    v1::Pin pin;
    absl::Status s = client->Call(&v1::Cluster::Stub::GetPin, client->cluster(), ref, &pin);
    if (s.code() == absl::StatusCode::kNotFound) return "";
    EXPECT_TRUE(s.ok()) << s;
    return pin.cluster();
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> east_, west_;
  std::vector<std::unique_ptr<NodeProcess>> nodes_;
  int cli_runs_ = 0;
};

TEST_F(ClusterTest, AffinityMatrix) {
  // First cache-enabled job pins the project to its cluster.
  auto first = Attach(*east_, "llm", "H100", true, "job-1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->pinned_now());
  EXPECT_FALSE(first->warm());
  EXPECT_EQ(first->pinned_cluster(), "east");
  EXPECT_EQ(PinOf(*east_, "llm"), "east");
  EXPECT_EQ(PinOf(*west_, "llm"), "east");  // through the registry

  // Same cluster again: warm.
  auto again = Attach(*east_, "llm", "A100", true, "job-2");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->pinned_now());
  EXPECT_TRUE(again->warm());
  EXPECT_EQ(PinOf(*east_, "llm"), "east");

  // Other cluster, affinity required, GPU type the pinned cluster lacks.
  auto refused = Attach(*west_, "llm", "A10G", true, "job-3");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  std::string msg(refused.status().message());
  EXPECT_THAT(msg, HasSubstr("pinned to cluster east"));
  EXPECT_THAT(msg, HasSubstr("H100, A100"));
  EXPECT_THAT(msg, HasSubstr("asks for A10G"));
  EXPECT_THAT(msg, HasSubstr("east does not offer A10G"));
  EXPECT_EQ(PinOf(*east_, "llm"), "east");

  // Other cluster, not required: runs there on that cluster's own (empty)
  // cache; the pin stays.
  auto elsewhere = Attach(*west_, "llm", "L4", false, "job-4");
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.status();
  EXPECT_FALSE(elsewhere->warm());
  EXPECT_FALSE(elsewhere->pinned_now());
  EXPECT_EQ(elsewhere->cluster(), "west");
  EXPECT_EQ(elsewhere->pinned_cluster(), "east");
  EXPECT_EQ(PinOf(*east_, "llm"), "east");
  EXPECT_EQ(PinOf(*west_, "llm"), "east");

  // Another project's first job on west pins it there.
  auto other = Attach(*west_, "vision", "L4", true, "job-5");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(other->pinned_now());
  EXPECT_EQ(PinOf(*east_, "vision"), "west");
}

TEST_F(ClusterTest, RefusedAttachesChangeNothing) {
  // A GPU type no cluster offers.
  auto unknown = Attach(*east_, "p1", "Z900", true, "job-1");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("unknown GPU type 'Z900'"));
  // A GPU type this cluster does not offer.
  auto missing = Attach(*east_, "p1", "A10G", false, "job-1");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("offered by west"));
  // Malformed ids.
  EXPECT_EQ(Attach(*east_, "bad/id", "H100", true, "job-1").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Attach(*east_, "p1", "H100", true, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Attach(*east_, "p1", "H100", true, "../x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PinOf(*east_, "p1"), "");
  auto scopes = east_->Client();
  v1::ListScopesResponse listed;
  ASSERT_TRUE(scopes->Call(&v1::Admin::Stub::ListScopes, scopes->admin(), {}, &listed).ok());
  EXPECT_EQ(listed.scopes_size(), 0);
}

TEST_F(ClusterTest, PinCommandsShowSetAndClear) {
  ASSERT_TRUE(Attach(*east_, "moving", "H100", true, "job-1").ok());
  Run show = Cli(*west_, nullptr, {"pin", "show", "moving"});
  EXPECT_EQ(show.code, 0) << show.output;
  EXPECT_THAT(show.output, HasSubstr("pinned to cluster east (by job job-1)"));

  Run unknown = Cli(*east_, nullptr, {"pin", "set", "moving", "north"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_THAT(unknown.output, HasSubstr("unknown cluster 'north'"));
  EXPECT_EQ(PinOf(*east_, "moving"), "east");

  Run set = Cli(*west_, nullptr, {"pin", "set", "moving", "west"});
  EXPECT_EQ(set.code, 0) << set.output;
  EXPECT_EQ(PinOf(*east_, "moving"), "west");
  // Now a required job on east is refused, and west runs warm.
  EXPECT_EQ(Attach(*east_, "moving", "H100", true, "job-2").status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto warm = Attach(*west_, "moving", "A10G", true, "job-3");
  ASSERT_TRUE(warm.ok());
  EXPECT_TRUE(warm->warm());

  Run bad = Cli(*east_, nullptr, {"pin", "show", "no/such"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.output, HasSubstr("project id must match"));
  Run clear = Cli(*east_, nullptr, {"pin", "clear", "moving"});
  EXPECT_EQ(clear.code, 0) << clear.output;
  EXPECT_EQ(PinOf(*east_, "moving"), "");
  Run none = Cli(*east_, nullptr, {"pin", "show", "moving"});
  EXPECT_EQ(none.code, 1);
  EXPECT_THAT(none.output, HasSubstr("not pinned"));
}

TEST_F(ClusterTest, TwoJobsShareOneMountAndDetachKeepsTheOtherWorking) {
  NodeProcess& node = StartNode(*east_, "node-1");
  Run a = Cli(*east_, &node,
              {"attach", "--project", "shared", "--team", "research", "--gpu", "H100", "--job",
               "job-a"});
  ASSERT_EQ(a.code, 0) << a.output;
  EXPECT_THAT(a.output, HasSubstr("export BT_PROJECT_CACHE_DIR='/root/.cache/user_artifacts'"));
  EXPECT_THAT(a.output, HasSubstr("export BT_TEAM_CACHE_DIR='/root/.cache/team_artifacts'"));
  EXPECT_THAT(a.output, HasSubstr("export HF_HOME='/root/.cache/user_artifacts/huggingface'"));
  EXPECT_THAT(a.output, HasSubstr("export BT_SCRATCH_DIR="));
  const std::string project_mnt = node.MountPoint(MustScope("project:shared"));
  const std::string team_mnt = node.MountPoint(MustScope("team:research"));
  EXPECT_THAT(a.output, HasSubstr(project_mnt + ":/root/.cache/user_artifacts"));
  EXPECT_THAT(a.output, HasSubstr(team_mnt + ":/root/.cache/team_artifacts"));
  ASSERT_TRUE(IsMounted(project_mnt));
  ASSERT_TRUE(IsMounted(team_mnt));
  const std::string scratch_a = dir_.Sub("node-1") + "/scratch/job-a";
  EXPECT_TRUE(std::filesystem::is_directory(scratch_a));

  Run b = Cli(*east_, &node,
              {"attach", "--project", "shared", "--gpu", "H100", "--job", "job-b", "-o", "json"});
  ASSERT_EQ(b.code, 0) << b.output;
  EXPECT_THAT(b.output, HasSubstr("\"project_mountpoint\": \"" + project_mnt + "\""));
  EXPECT_THAT(b.output, HasSubstr("\"warm\": true"));
  Run mounts = Cli(*east_, &node, {"mounts"});
  EXPECT_THAT(mounts.output, HasSubstr("project:shared " + project_mnt + " jobs: job-a job-b"));

  // job-a leaves a file open for writing; its detach commits the data.
  ASSERT_EQ(WriteFile(project_mnt + "/from-a", "written by a"), 0);
  int fd = open((project_mnt + "/open-at-detach").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(WriteAll(fd, "staged, not closed"), 0);
  Run detach_a = Cli(*east_, &node, {"detach", "--job", "job-a"});
  ASSERT_EQ(detach_a.code, 0) << detach_a.output;
  EXPECT_FALSE(std::filesystem::exists(scratch_a));
  {
    // What the server holds now (no close happened yet).
    auto client = east_->Client();
    v1::LookupRequest req;
    req.set_scope("project:shared");
    req.set_parent(kRootInode);
    req.set_name("open-at-detach");
    v1::AttrResponse attr;
    ASSERT_TRUE(client->Call(&v1::Namespace::Stub::Lookup, client->ns(), req, &attr).ok());
    EXPECT_EQ(attr.attr().size(), std::string("staged, not closed").size());
  }
  close(fd);

  // job-b still works on the shared mount; the team scope (job-a's only)
  // is unmounted after the grace period, the project scope is not.
  EXPECT_EQ(ReadFile(project_mnt + "/from-a"), "written by a");
  ASSERT_EQ(WriteFile(project_mnt + "/from-b", "written by b"), 0);
  EXPECT_EQ(ReadFile(project_mnt + "/from-b"), "written by b");
  EXPECT_TRUE(Eventually([&] { return !IsMounted(team_mnt); }));
  EXPECT_TRUE(IsMounted(project_mnt));

  Run detach_b = Cli(*east_, &node, {"detach", "--job", "job-b"});
  ASSERT_EQ(detach_b.code, 0) << detach_b.output;
  EXPECT_TRUE(Eventually([&] { return !IsMounted(project_mnt); }));
  Run twice = Cli(*east_, &node, {"detach", "--job", "job-b"});
  EXPECT_EQ(twice.code, 1);
  EXPECT_THAT(twice.output, HasSubstr("job job-b is not attached"));

  // A later job finds what the earlier ones wrote (the cache persists).
  Run c = Cli(*east_, &node, {"attach", "--project", "shared", "--gpu", "A100", "--job", "job-c"});
  ASSERT_EQ(c.code, 0) << c.output;
  EXPECT_EQ(ReadFile(project_mnt + "/from-b"), "written by b");
  EXPECT_EQ(ReadFile(project_mnt + "/open-at-detach"), "staged, not closed");
}

// A node daemon that serves only attached jobs never asks the server for a
// scope none of its jobs uses: mount-scope is refused, an attached job's
// scopes are served, and unmounted once its job detached.
TEST_F(ClusterTest, AttachedScopesOnlyNodeRefusesScopesNoJobUses) {
  NodeProcess& node = StartNode(*east_, "node-1", {"--attached-scopes-only"});
  const std::string other_mnt = node.MountPoint(MustScope("project:other-tenant"));
  Run refused = Cli(*east_, &node, {"mount-scope", "project:other-tenant"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.output, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(refused.output, HasSubstr("serves only the scopes of attached jobs"));
  EXPECT_FALSE(IsMounted(other_mnt));
  // Nothing reached the server: the scope was not created.
  v1::ListScopesResponse scopes;
  auto client = east_->Client();
  ASSERT_TRUE(client->Call(&v1::Admin::Stub::ListScopes, client->admin(), {}, &scopes).ok());
  for (const std::string& scope : scopes.scopes()) EXPECT_NE(scope, "project:other-tenant");

  Run a = Cli(*east_, &node, {"attach", "--project", "mine", "--gpu", "H100", "--job", "job-a"});
  ASSERT_EQ(a.code, 0) << a.output;
  const std::string mine = node.MountPoint(MustScope("project:mine"));
  ASSERT_TRUE(IsMounted(mine));
  ASSERT_EQ(WriteFile(mine + "/f", "attached"), 0);
  EXPECT_EQ(ReadFile(mine + "/f"), "attached");
  Run detach = Cli(*east_, &node, {"detach", "--job", "job-a"});
  ASSERT_EQ(detach.code, 0) << detach.output;
  EXPECT_TRUE(Eventually([&] { return !IsMounted(mine); }));
  Run again = Cli(*east_, &node, {"mount-scope", "project:mine"});
  EXPECT_EQ(again.code, 1);
  EXPECT_FALSE(IsMounted(mine));

  // Flags that contradict it stop the daemon at start.
  std::string log = dir_.Sub("node-flags.log");
  EXPECT_EQ(
      RunProgram({NodeBinary(), "--server", east_->address(), "--token-file", east_->token_file(),
                  "--mount-root", dir_.Sub("m"), "--tier-dir", dir_.Sub("t"), "--staging-dir",
                  dir_.Sub("s"), "--admin-socket", "", "--attached-scopes-only", "--scratch-dir",
                  dir_.Sub("x"), "--scope", "project:mine"},
                 log),
      2);
  EXPECT_THAT(Slurp(log), HasSubstr("cannot be given with --scope"));
}

TEST_F(ClusterTest, RefusedCliAttachMountsNothing) {
  NodeProcess& node = StartNode(*west_, "node-w");
  ASSERT_TRUE(Attach(*east_, "pinned", "H100", true, "job-0").ok());
  Run refused = Cli(*west_, &node,
                    {"attach", "--project", "pinned", "--gpu", "A10G", "--job", "job-1"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.output, HasSubstr("pinned to cluster east"));
  Run unknown = Cli(*west_, &node,
                    {"attach", "--project", "pinned", "--gpu", "TPUv9", "--job", "job-2"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_THAT(unknown.output, HasSubstr("unknown GPU type"));
  Run malformed = Cli(*west_, &node,
                      {"attach", "--project", "a b", "--gpu", "L4", "--job", "job-3"});
  EXPECT_EQ(malformed.code, 1);
  EXPECT_THAT(malformed.output, HasSubstr("scope id must match"));
  Run mounts = Cli(*west_, &node, {"mounts"});
  EXPECT_EQ(mounts.code, 0);
  EXPECT_THAT(mounts.output, Not(HasSubstr("project:")));
  EXPECT_FALSE(std::filesystem::exists(dir_.Sub("node-w") + "/scratch/job-1"));

  // Not required: runs on west's own, empty cache of the project.
  Run runs = Cli(*west_, &node,
                 {"attach", "--project", "pinned", "--gpu", "A10G", "--job", "job-4",
                  "--require-cache-affinity=false"});
  ASSERT_EQ(runs.code, 0) << runs.output;
  std::string mnt = node.MountPoint(MustScope("project:pinned"));
  EXPECT_TRUE(std::filesystem::is_empty(mnt));
  EXPECT_EQ(PinOf(*east_, "pinned"), "east");
}

TEST_F(ClusterTest, QuotaBelowUsageIsRefused) {
  NodeProcess& node = StartNode(*east_, "node-q");
  ASSERT_EQ(Cli(*east_, &node, {"attach", "--project", "q", "--gpu", "H100", "--job", "j"}).code, 0);
  std::string mnt = node.MountPoint(MustScope("project:q"));
  ASSERT_EQ(WriteFile(mnt + "/data", RandomBytes(300'000, 1)), 0);
  Run low = Cli(*east_, nullptr, {"quota", "set", "project:q", "1000"});
  EXPECT_EQ(low.code, 1);
  EXPECT_THAT(low.output, HasSubstr("below the 300000 bytes project:q uses now"));
  Run get = Cli(*east_, nullptr, {"quota", "get", "project:q"});
  EXPECT_THAT(get.output, HasSubstr("quota 1000000000000 bytes"));
  Run ok = Cli(*east_, nullptr, {"quota", "set", "project:q", "300000"});
  EXPECT_EQ(ok.code, 0) << ok.output;
}

TEST_F(ClusterTest, DeleteProjectLeavesNothingAnywhere) {
  NodeProcess& n1 = StartNode(*east_, "node-1");
  NodeProcess& n2 = StartNode(*east_, "node-2");
  for (NodeProcess* n : {&n1, &n2}) {
    Run r = Cli(*east_, n, {"attach", "--project", "doomed", "--gpu", "H100", "--job",
                            n == &n1 ? "j1" : "j2"});
    ASSERT_EQ(r.code, 0) << r.output;
  }
  const Scope doomed = MustScope("project:doomed");
  const std::string m1 = n1.MountPoint(doomed), m2 = n2.MountPoint(doomed);
  const std::string secret = RandomBytes(3 << 20, 7);
  ASSERT_EQ(WriteFile(m1 + "/weights.bin", secret), 0);
  ASSERT_EQ(ReadFile(m2 + "/weights.bin"), secret);  // node 2's tier has it now
  ASSERT_EQ(ReadFile(m1 + "/weights.bin"), secret);
  Run warm = Cli(*east_, &n2, {"warmup", m2});
  EXPECT_EQ(warm.code, 0) << warm.output;
  EXPECT_THAT(warm.output, HasSubstr("warmed 1 files"));
  const std::string tier1 = dir_.Sub("node-1") + "/tier/project/doomed";
  const std::string tier2 = dir_.Sub("node-2") + "/tier/project/doomed";
  EXPECT_GT(FilesUnder(tier2), 0u);
  int held = open((m2 + "/weights.bin").c_str(), O_RDONLY);
  ASSERT_GE(held, 0);

  Run no = Cli(*east_, nullptr, {"delete-project", "doomed"});
  EXPECT_EQ(no.code, 2);
  EXPECT_EQ(PinOf(*east_, "doomed"), "east");
  Run del = Cli(*east_, nullptr, {"delete-project", "doomed", "--yes"});
  ASSERT_EQ(del.code, 0) << del.output;
  EXPECT_EQ(PinOf(*east_, "doomed"), "");

  // Every node drops its tier images and answers errors, never old bytes.
  EXPECT_TRUE(Eventually([&] { return FilesUnder(tier1) == 0 && FilesUnder(tier2) == 0; }));
  EXPECT_THAT(ReadFile(m1 + "/weights.bin"), HasSubstr("<errno"));
  EXPECT_THAT(ReadFile(m2 + "/weights.bin"), HasSubstr("<errno"));
  // A file open before the deletion reads an error (served by the daemon)
  // or nothing (read by the kernel from an emptied passthrough image).
  std::string buf(4096, '\0');
  EXPECT_LE(pread(held, buf.data(), buf.size(), 0), 0);
  close(held);
  struct stat st;
  EXPECT_NE(stat((m1 + "/weights.bin").c_str(), &st), 0);

  Run bad = Cli(*east_, nullptr, {"delete-project", "../etc", "--yes"});
  EXPECT_EQ(bad.code, 1);
  Run unknown = Cli(*east_, nullptr, {"delete-project", "never-existed", "--yes"});
  EXPECT_EQ(unknown.code, 1);

  for (auto& n : nodes_) n->Stop();
  nodes_.clear();
  ASSERT_EQ(east_->Stop(), 0);
  Leftovers left = LeftoversOf(east_->data_dir(), doomed);
  EXPECT_EQ(left.keys, 0u);
  EXPECT_EQ(left.chunk_files, 0u);
  EXPECT_EQ(FilesUnder(tier1), 0u);
  EXPECT_EQ(FilesUnder(tier2), 0u);
}

// deploy/launch-job.sh with a stand-in `docker` that records its arguments
// and writes through the project bind mount's source, as a container would.
TEST_F(ClusterTest, LaunchScriptAttachesRunsAndDetaches) {
  NodeProcess& node = StartNode(*east_, "node-l");
  const std::string bin = dir_.Sub("bin");
  std::filesystem::create_directories(bin);
  {
    std::ofstream docker(bin + "/docker");
    docker << "#!/bin/sh\n"
              "echo \"$@\" > " << dir_.Sub("docker-args") << "\n"
              "for a in \"$@\"; do case \"$a\" in *:/root/.cache/user_artifacts)\n"
              "  echo from-the-container > \"${a%%:*}/result.txt\";; esac; done\n";
  }
  chmod((bin + "/docker").c_str(), 0755);
  const std::string cli_wrapper = bin + "/traincache";
  {
    std::ofstream tc(cli_wrapper);
    tc << "#!/bin/sh\nexec " << CliBinary() << " --server " << east_->address()
       << " --token-file " << east_->token_file() << " --node-socket " << node.AdminSocket()
       << " \"$@\"\n";
  }
  chmod(cli_wrapper.c_str(), 0755);
  std::string script = std::string(TRAINCACHE_SOURCE_DIR) + "/deploy/launch-job.sh";
  std::string log = dir_.Sub("launch.log");
  const std::string old_path = std::getenv("PATH");
  setenv("TRAINCACHE", cli_wrapper.c_str(), 1);
  setenv("PATH", (bin + ":" + old_path).c_str(), 1);
  int code = RunProgram({"/bin/bash", script, "--project", "launched", "--team", "t1", "--gpu",
                         "H100", "--job", "job-l", "--", "trainer:latest", "python", "train.py"},
                        log, 120);
  setenv("PATH", old_path.c_str(), 1);
  unsetenv("TRAINCACHE");
  ASSERT_EQ(code, 0) << Slurp(log);
  std::string args = Slurp(dir_.Sub("docker-args"));
  const std::string mnt = node.MountPoint(MustScope("project:launched"));
  EXPECT_THAT(args, HasSubstr("-v " + mnt + ":/root/.cache/user_artifacts"));
  EXPECT_THAT(args, HasSubstr("-e BT_PROJECT_CACHE_DIR=/root/.cache/user_artifacts"));
  EXPECT_THAT(args, HasSubstr("-e BT_TEAM_CACHE_DIR=/root/.cache/team_artifacts"));
  EXPECT_THAT(args, HasSubstr("-e HF_HOME=/root/.cache/user_artifacts/huggingface"));
  EXPECT_THAT(args, HasSubstr("trainer:latest python train.py"));
  // Detached on exit: no job left; what the container wrote is in the cache.
  Run mounts = Cli(*east_, &node, {"mounts"});
  EXPECT_THAT(mounts.output, Not(HasSubstr("job-l")));
  auto client = east_->Client();
  v1::LookupRequest req;
  req.set_scope("project:launched");
  req.set_parent(kRootInode);
  req.set_name("result.txt");
  v1::AttrResponse attr;
  EXPECT_TRUE(client->Call(&v1::Namespace::Stub::Lookup, client->ns(), req, &attr).ok());
}

}  // namespace
}  // namespace traincache::testing
