#include "testing/node_process.h"

#include "traincache/v1/node_admin.grpc.pb.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace traincache::testing {
namespace {

int WaitFor(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 || std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

std::string NodeBinary() { return TRAINCACHE_NODE_BIN; }

std::string UnescapeMountPath(const std::string& field) {
  auto octal = [&](size_t j) { return j < field.size() && field[j] >= '0' && field[j] <= '7'; };
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out.push_back(static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

bool IsMounted(const std::string& path) {
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string device, mountpoint;
    fields >> device >> mountpoint;
    if (UnescapeMountPath(mountpoint) == path) return true;
  }
  return false;
}

NodeProcess::NodeProcess(std::string dir, std::string server_address, std::string token_file)
    : dir_(std::move(dir)), server_(std::move(server_address)), token_file_(std::move(token_file)) {
  log_ = dir_ + "/node.log";
}

NodeProcess::~NodeProcess() {
  if (pid_ > 0 && Stop() == -1) Kill();
  UnmountLeftovers();
}

std::string NodeProcess::AdminSocket() const { return dir_ + "/admin.sock"; }

std::map<std::string, uint64_t> NodeProcess::Counters() const {
  auto channel = grpc::CreateChannel("unix:" + AdminSocket(), grpc::InsecureChannelCredentials());
  auto stub = v1::NodeAdmin::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetNodeStatsResponse resp;
  std::map<std::string, uint64_t> out;
  if (stub->GetNodeStats(&ctx, {}, &resp).ok()) out.insert(resp.counters().begin(), resp.counters().end());
  return out;
}

std::string NodeProcess::MountPoint(const Scope& scope) const {
  return fmt::format("{}/mnt/{}/{}", dir_, scope.kind_name(), scope.id());
}

absl::Status NodeProcess::Start(const std::vector<Scope>& scopes,
                                const std::vector<std::string>& extra_args) {
  if (pid_ > 0) return absl::FailedPreconditionError("already running");
  scopes_ = scopes;
  std::vector<std::string> argv = {NodeBinary(),     "--server",      server_,
                                   "--token-file",   token_file_,     "--mount-root",
                                   dir_ + "/mnt",    "--tier-dir",    tier_dir_.empty() ? dir_ + "/tier" : tier_dir_,
                                   "--staging-dir",  dir_ + "/staging",
                                   "--admin-socket", AdminSocket()};
  for (const Scope& s : scopes) {
    argv.push_back("--scope");
    argv.push_back(s.ToString());
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  // Made before the fork: the child of a test with threads of its own may
  // only make async-signal-safe calls (a malloc can hang on another
  // thread's lock).
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::string fd_names;
  for (const auto& [name, fd] : passed_fds_) fd_names += (fd_names.empty() ? "" : ":") + name;
  const std::string listen_fds = std::to_string(passed_fds_.size());
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    for (const std::string& e : env_) putenv(const_cast<char*>(e.c_str()));
    if (!passed_fds_.empty()) {
      // Out of the way first (a passed fd may already be 3, 4, ...), then
      // to 3, 4, ... in order; dup2 leaves them open across exec.
      std::vector<int> high;
      for (const auto& [name, pfd] : passed_fds_) high.push_back(fcntl(pfd, F_DUPFD, 1000));
      for (size_t i = 0; i < high.size(); ++i) dup2(high[i], 3 + static_cast<int>(i));
      for (int h : high) close(h);
      setenv("LISTEN_FDS", listen_fds.c_str(), 1);
      setenv("LISTEN_FDNAMES", fd_names.c_str(), 1);
      setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(
          fmt::format("traincache-node exited during start ({}); see {}", status, log_));
    }
    bool all = true;
    for (const Scope& s : scopes) all = all && IsMounted(MountPoint(s));
    // Callers of the admin socket (attach, mount-scope) need it up too.
    all = all && std::filesystem::exists(AdminSocket());
    if (all) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Kill();
  return absl::DeadlineExceededError("traincache-node did not mount within 30 s; see " + log_);
}

int NodeProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = WaitFor(pid_, std::chrono::seconds(30));
  if (status == -1) {
    Kill();
    return -1;
  }
  pid_ = -1;
  UnmountLeftovers();
  return status;
}

int NodeProcess::SignalAndWait(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int status = WaitFor(pid_, std::chrono::seconds(30));
  if (status == -1) {
    Kill();
    return -1;
  }
  pid_ = -1;
  return status;
}

void NodeProcess::Kill() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    WaitFor(pid_, std::chrono::seconds(15));
    pid_ = -1;
  }
  UnmountLeftovers();
}

void NodeProcess::UnmountLeftovers() {
  // A dead daemon leaves its mounts behind ("Transport endpoint is not
  // connected"): detach every mount under this node's mount root, including
  // scopes mounted later through the admin socket.
  const std::string root = dir_ + "/mnt/";
  std::ifstream in("/proc/self/mounts");
  std::vector<std::string> leftovers;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string device, mountpoint;
    fields >> device >> mountpoint;
    if (mountpoint.rfind(root, 0) == 0) leftovers.push_back(mountpoint);
  }
  for (const std::string& mp : leftovers) umount2(mp.c_str(), MNT_DETACH);
}

}  // namespace traincache::testing
