#include "testing/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

namespace traincache::testing {
namespace {

// Runs argv with stdout appended to `log` (stderr too, unless `err` names
// its own file, which is truncated; so is `log` then).
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log,
            const std::string& err = "") {
  // Built before fork: the child of a test with threads of its own may only
  // make async-signal-safe calls (a malloc can hang on another thread's lock).
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid != 0) return pid;
  int flags = O_WRONLY | O_CREAT | (err.empty() ? O_APPEND : O_TRUNC);
  int fd = open(log.c_str(), flags, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
  }
  if (!err.empty()) {
    int efd = open(err.c_str(), flags, 0644);
    if (efd >= 0) dup2(efd, 2);
  }
  execv(args[0], args.data());
  _exit(127);
}

// Waits for `pid` up to `timeout`; returns the wait status or -1.
int WaitFor(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

std::string ServerBinary() { return TRAINCACHE_SERVER_BIN; }
std::string CliBinary() { return TRAINCACHE_CLI_BIN; }

ServerProcess::ServerProcess(std::string data_dir, std::string work_dir, std::string listen)
    : data_dir_(std::move(data_dir)), work_dir_(std::move(work_dir)) {
  address_ = listen.empty() ? "unix:" + work_dir_ + "/server.sock" : listen;
  token_file_ = work_dir_ + "/token";
  log_file_ = work_dir_ + "/server.log";
  std::mt19937_64 rng(std::random_device{}());
  token_ = fmt::format("{:016x}{:016x}", rng(), rng());
  std::ofstream(token_file_) << token_ << "\n";
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && Stop() == -1) Kill();
}

absl::Status ServerProcess::Start(const std::vector<std::string>& extra_args) {
  if (pid_ > 0) return absl::FailedPreconditionError("already running");
  std::vector<std::string> argv = {ServerBinary(),  "--data-dir",   data_dir_,
                                   "--listen",      address_,     "--token-file",
                                   token_file_,     "--log-level", "info"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  argv.insert(argv.begin(), prefix_.begin(), prefix_.end());
  pid_ = Spawn(argv, log_file_);
  if (pid_ < 0) return absl::InternalError("fork failed");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(fmt::format("server exited during start, status {}; see {}",
                                             status, log_file_));
    }
    // A fresh channel each try: a channel whose first connect failed waits
    // out gRPC's reconnect backoff (seconds) before it tries again.
    auto client = Client();
    v1::PingResponse resp;
    if (client->Call(&v1::Admin::Stub::Ping, client->admin(), {}, &resp).ok()) {
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Kill();
  return absl::DeadlineExceededError("server did not answer Ping within 20 s");
}

int ServerProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = WaitFor(pid_, std::chrono::seconds(15));
  if (status == -1) {
    kill(pid_, SIGKILL);
    WaitFor(pid_, std::chrono::seconds(15));
  }
  pid_ = -1;
  return status;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  WaitFor(pid_, std::chrono::seconds(15));
  pid_ = -1;
}

std::unique_ptr<rpc::ServerClient> ServerProcess::Client() const {
  return ClientWithToken(token_);
}

std::unique_ptr<rpc::ServerClient> ServerProcess::ClientWithToken(const std::string& token) const {
  return std::make_unique<rpc::ServerClient>(
      rpc::ClientOptions{.target = address_,
                         .token = token,
                         .deadline = std::chrono::seconds(30),
                         .tls = client_tls_});
}

uint64_t ServerProcess::Counter(const std::string& name) const {
  auto client = Client();
  v1::GetStatsResponse resp;
  if (!client->Call(&v1::Admin::Stub::GetStats, client->admin(), {}, &resp).ok()) return 0;
  auto it = resp.counters().find(name);
  return it == resp.counters().end() ? 0 : it->second;
}

std::string FreeLoopbackAddress() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return fmt::format("127.0.0.1:{}", ntohs(addr.sin_port));
}

int RunProgram(const std::vector<std::string>& argv, const std::string& log, int timeout_seconds) {
  return RunProgramSplit(argv, log, "", timeout_seconds);
}

int RunProgramSplit(const std::vector<std::string>& argv, const std::string& out,
                    const std::string& err, int timeout_seconds) {
  pid_t pid = Spawn(argv, out, err);
  int status = WaitFor(pid, std::chrono::seconds(timeout_seconds));
  if (status == -1) {
    kill(pid, SIGKILL);
    WaitFor(pid, std::chrono::seconds(5));
    return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

}  // namespace traincache::testing
