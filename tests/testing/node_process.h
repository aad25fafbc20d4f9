// NodeProcess: a real traincache-node child process for integration tests —
// its own tier, staging and mount root under a temp dir (one "node"). Start
// waits until every requested scope is mounted; Stop sends SIGTERM by PID and,
// if the daemon does not go, SIGKILL and a lazy unmount of its mountpoints, so
// a failing test never leaves a mount or a process behind.
#ifndef TRAINCACHE_TESTS_TESTING_NODE_PROCESS_H_
#define TRAINCACHE_TESTS_TESTING_NODE_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "traincache/scope.h"

namespace traincache::testing {

std::string NodeBinary();

// True if `path` is a mountpoint in /proc/self/mounts.
bool IsMounted(const std::string& path);
// A path as /proc/self/mounts writes it ("\040" for a space, ...) decoded.
std::string UnescapeMountPath(const std::string& field);

class NodeProcess {
 public:
  // dir: this node's folder (tier/, staging/, mnt/, node.log inside).
  NodeProcess(std::string dir, std::string server_address, std::string token_file);
  ~NodeProcess();

  absl::Status Start(const std::vector<Scope>& scopes,
                     const std::vector<std::string>& extra_args = {});
  // SIGTERM and wait; returns the wait status (-1 if it had to be killed).
  int Stop();
  void Kill();  // SIGKILL, then lazy-unmount what it left.
  // Sends `sig` and waits (up to 30 s) for the daemon to exit; its mounts are
  // left as they are (a hand-over, or a crash whose connections another
  // process keeps). Returns the wait status, -1 if it did not exit (then it
  // is killed and its mounts detached).
  int SignalAndWait(int sig);

  // For the next Start: extra environment ("NAME=value"), and descriptors
  // passed as systemd passes its fd store ($LISTEN_FDS, $LISTEN_PID,
  // $LISTEN_FDNAMES; fds 3 and up in this order). Kept for later Starts.
  void set_env(std::vector<std::string> env) { env_ = std::move(env); }
  void set_passed_fds(std::vector<std::pair<std::string, int>> fds) {
    passed_fds_ = std::move(fds);
  }

  // The node tier folder (default <dir>/tier); takes effect at Start.
  void set_tier_dir(std::string dir) { tier_dir_ = std::move(dir); }
  // Where `scope` is mounted on this node.
  std::string MountPoint(const Scope& scope) const;
  const std::string& log_file() const { return log_; }
  // The daemon's admin endpoint, and its counters through it (empty if it
  // does not answer): tier.*, fetch.*, scope.<scope>.*.
  std::string AdminSocket() const;
  std::map<std::string, uint64_t> Counters() const;
  pid_t pid() const { return pid_; }

 private:
  void UnmountLeftovers();

  std::string dir_, server_, token_file_, log_;
  std::string tier_dir_;  // empty: <dir>/tier
  std::vector<Scope> scopes_;
  std::vector<std::string> env_;
  std::vector<std::pair<std::string, int>> passed_fds_;
  pid_t pid_ = -1;
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_TESTING_NODE_PROCESS_H_
