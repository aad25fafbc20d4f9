// ServerProcess: a real traincache-server child process for integration
// tests, on a Unix socket in a temp dir with a random token.
//
// Start() forks and execs the binary and waits until it answers Ping. The
// process is stopped by PID (SIGTERM, then SIGKILL after a timeout) by Stop()
// or the destructor, so a failing test never leaves it behind.
#ifndef TRAINCACHE_TESTS_TESTING_SERVER_PROCESS_H_
#define TRAINCACHE_TESTS_TESTING_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "rpc/client.h"

namespace traincache::testing {

// Paths of the built traincache-server and traincache CLI (set by CMake).
std::string ServerBinary();
std::string CliBinary();

class ServerProcess {
 public:
  // data_dir: where the server keeps its state (kept across restarts).
  // work_dir: where the socket, token and log go.
  // listen: "" for a Unix socket in work_dir, else e.g. "127.0.0.1:7070".
  ServerProcess(std::string data_dir, std::string work_dir, std::string listen = "");
  ~ServerProcess();

  // Starts the server with `extra_args`; waits up to 20 s for Ping.
  absl::Status Start(const std::vector<std::string>& extra_args = {});
  // Runs the server through `prefix` (e.g. setpriv with a unit's
  // capabilities) from the next Start on; the prefix must exec the server,
  // whose PID is then the one stopped.
  void set_command_prefix(std::vector<std::string> prefix) { prefix_ = std::move(prefix); }
  // How Client() and the readiness Ping dial the server (a server started
  // with --tls-cert-file needs a client that trusts its CA).
  void set_client_tls(rpc::ClientTls tls) { client_tls_ = std::move(tls); }
  // SIGTERM and wait; returns the exit status (as from waitpid), -1 if none.
  int Stop();
  // SIGKILL and wait (a crash).
  void Kill();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  const std::string& address() const { return address_; }
  const std::string& token() const { return token_; }
  const std::string& token_file() const { return token_file_; }
  const std::string& log_file() const { return log_file_; }
  const std::string& data_dir() const { return data_dir_; }
  // A client with the right token; `token` overrides it (tests of auth).
  std::unique_ptr<rpc::ServerClient> Client() const;
  std::unique_ptr<rpc::ServerClient> ClientWithToken(const std::string& token) const;
  // One server counter (GetStats).
  uint64_t Counter(const std::string& name) const;

 private:
  std::string data_dir_, work_dir_, address_, token_, token_file_, log_file_;
  std::vector<std::string> prefix_;
  rpc::ClientTls client_tls_;
  pid_t pid_ = -1;
};

// "127.0.0.1:<port>" with a port that was free a moment ago.
std::string FreeLoopbackAddress();

// Runs a program to completion, output to `log`; returns its exit code
// (or 128+signal). Used for refusal-to-start tests.
int RunProgram(const std::vector<std::string>& argv, const std::string& log,
               int timeout_seconds = 30);
// As RunProgram, with standard output to file `out` and standard error to
// file `err` (non-empty; both truncated first): for tests that compare a
// program's output exactly.
int RunProgramSplit(const std::vector<std::string>& argv, const std::string& out,
                    const std::string& err, int timeout_seconds = 30);

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_TESTING_SERVER_PROCESS_H_
