// FuseMount: one mounted scope — a libfuse low-level session whose callbacks
// each turn one kernel request into one call of a node::Filesystem and one
// reply (the only place statuses become errno: ToErrno). The session loop is
// multi-threaded and runs on its own threads until Unmount.
//
// Mount options: allow_other (container users reach the mount) and
// default_permissions (the kernel checks modes, so the core need not), 1 MiB
// reads and writes. With a metrics registry, every request's time from the
// callback's start to its reply goes into
// traincache_node_fuse_op_duration_seconds{op="lookup"|"read"|...} (one
// histogram per op, resolved at mount). Entries and attributes are replied
// with the cache times the Filesystem gives for a ticket taken before the
// call (Filesystem::CacheTicket: long while the change feed is followed).
// It is the core's KernelCache (node/kernel_cache.h): the kernel
// notifications of the change feed go through it. Thread-safe: Unmount may
// be called from any thread, once.
//
// Restarts that keep the connection (issue 7): the session reads and writes
// /dev/fuse through its own I/O hooks, so a mount can be served by a later
// process. Each mount keeps a HandoverState memfd (handover_state.h) beside
// its descriptor; a caller that keeps both (systemd's fd store) lets the next
// process Mount with FuseMountOptions::takeover_fd: no mount, the same
// connection. That process replays the kernel's INIT to its own session
// (swallowing the reply: the kernel keeps what was negotiated first), then
// asks the kernel to resend every request the earlier process had read but
// not answered (FUSE_NOTIFY_RESEND, kernel >= 6.9), so callers that were
// waiting get an answer instead of hanging. Node ids are the server's inode
// numbers, so they mean the same in every process; a FORGET of an inode the
// process does not know does nothing; an open file handle the kernel holds
// from an earlier process (a number below FirstHandleOf(epoch)) is adopted
// on first use: opened again on the same inode with the flags the request
// carries (a reader reads on; a writer's later writes are staged on top of
// what the earlier process committed or its journal recovered), and closed
// at its RELEASE.
#ifndef TRAINCACHE_FUSE_FUSE_MOUNT_H_
#define TRAINCACHE_FUSE_FUSE_MOUNT_H_

#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "fuse/handover_state.h"
#include "fuse/passthrough.h"
#include "node/filesystem.h"
#include "node/kernel_cache.h"
#include "traincache/locks.h"

struct fuse_session;
namespace prometheus {
class Histogram;
class Registry;
}  // namespace prometheus
namespace traincache::metrics {
class LatencyHistograms;
}  // namespace traincache::metrics

namespace traincache::fuse {

struct LockWait;  // fuse_mount.cc: one lock request answered later

struct FuseMountOptions {
  std::string mountpoint;  // Created if missing.
  unsigned max_threads = 16;
  // flock/fcntl locks through this (must outlive the mount); nullptr: the
  // kernel keeps locks per node.
  LockClient* locks = nullptr;
  // Where the op latency histograms go; nullptr: none. Must outlive the mount.
  prometheus::Registry* metrics = nullptr;
  // FUSE passthrough for files complete in the node tier (passthrough.h),
  // where the kernel allows it.
  bool passthrough = true;
  // Serve an existing connection instead of mounting (see the top): the
  // /dev/fuse descriptor of the mount at `mountpoint` (the FuseMount owns it
  // from now on) and its HandoverState memfd (kept open, rewritten with
  // `state`). -1: mount anew, with a new memfd.
  int takeover_fd = -1;
  int state_fd = -1;
  // The state to record: its epoch numbers this process's handles (the
  // Filesystem must have been given FirstHandleOf(state.epoch)); with
  // takeover_fd, its init_request is replayed.
  HandoverState state;
};

class FuseMount final : public node::KernelCache {
 public:
  // Mounts `fs` (already Init'ed; must outlive the mount) and starts serving.
  static absl::StatusOr<std::unique_ptr<FuseMount>> Mount(node::Filesystem* fs,
                                                          FuseMountOptions options);
  ~FuseMount() override;  // Unmounts.

  // Unmounts and stops the session loop. A mount in use (open files, a
  // working directory) is FAILED_PRECONDITION (EBUSY) and stays mounted,
  // unless `force`: then it is detached and its connection aborted, so the
  // loop ends (processes still using it get ENOTCONN; their staged writes
  // stay on disk for the next mount). An unmount that succeeded found no open
  // file, so every release (and its commit) has already run.
  absl::Status Unmount(bool force = false);
  // Stops serving without unmounting (a hand-over to the next process): the
  // loop ends, lock waits are answered, the session and its descriptor are
  // closed. The connection lives on while another holder of the descriptor
  // (the fd store) keeps it; what the kernel sends meanwhile waits for the
  // next process. Requests this process had read and dropped are resent to
  // that one. Once, instead of Unmount.
  absl::Status Detach();
  // The /dev/fuse descriptor and the HandoverState memfd to keep for the
  // next process (valid until Unmount or Detach).
  int session_fd() const { return session_fd_; }
  int state_fd() const { return state_fd_; }
  // The session's I/O hooks (read(2) and writev(2) contracts).
  ssize_t OnRead(int fd, void* buf, size_t len);
  ssize_t OnWritev(int fd, struct iovec* iov, int count);
  // The handle of this process for the kernel's file handle `fh` of `ino`:
  // `fh` itself, or, for an earlier process's handle, the one opened for it
  // (now, with `flags`, if it is the first use; `dir`: a directory handle).
  absl::StatusOr<uint64_t> OwnHandle(uint64_t ino, uint64_t fh, int flags, bool dir);
  // At RELEASE of `fh`: the handle to release, or nullopt for an earlier
  // process's handle never used here (nothing to release).
  std::optional<uint64_t> ReleaseHandle(uint64_t fh);
  const std::string& mountpoint() const { return options_.mountpoint; }
  // Tells the kernel to drop what it caches of these inodes (attributes and
  // pages), so its next access asks the daemon. Not from inside a callback.
  void InvalidateInodes(const std::vector<uint64_t>& inodes);
  // node::KernelCache. Not from inside a callback; no-ops once unmounted.
  void InvalidateEntries(const std::vector<std::pair<InodeId, std::string>>& entries) override;
  void InvalidateAttrs(const std::vector<InodeId>& inodes) override;
  // For the session's callbacks (the session's userdata is the FuseMount).
  node::Filesystem& fs() const { return *fs_; }
  struct fuse_session* session() const {
    return session_;
  }
  const FuseMountOptions& options() const { return options_; }
  // Remembers that `owner` asked for a lock of `kind` on `ino` through
  // handle `fh`, so that its close releases it (ReleaseOwnerLocks) without a
  // call for every close. A flock is released only by its own handle's
  // release (the kernel may reuse the owner id of a closed file).
  void NoteLockOwner(LockKind kind, uint64_t ino, uint64_t owner, uint64_t fh);
  void ReleaseOwnerLocks(LockKind kind, uint64_t ino, uint64_t owner, uint64_t fh);
  // Lock requests not yet answered: Unmount cancels them and waits for their
  // answers before it frees the session their replies use.
  void TrackLockWait(LockWait* wait, bool live);
  // Runs `task` on the mount's lock thread: what follows a granted lock
  // (asking the server for the file's newest version, then the reply).
  void RunAfterLock(std::function<void()> task) { after_lock_.Submit(std::move(task)); }
  // The passthrough state (nullptr when not wanted).
  Passthrough* passthrough() const { return passthrough_.get(); }
  PassthroughStats passthrough_stats() const {
    return passthrough_ ? passthrough_->Stats() : PassthroughStats{};
  }
  // The latency histogram of op number `op` (fuse_mount.cc), or nullptr.
  prometheus::Histogram* OpLatency(size_t op) const;

 private:
  FuseMount() = default;

  node::Filesystem* fs_ = nullptr;
  FuseMountOptions options_;
  struct fuse_session* session_ = nullptr;
  std::thread loop_;
  bool mounted_ = false;
  // The kernel's connection number (/sys/fs/fuse/connections/<n>), read at
  // mount: the way to abort a busy connection.
  unsigned connection_ = 0;
  // Held by the invalidations while they use the session; Unmount clears
  // notify_ok_ under it before the session goes.
  std::mutex notify_mu_;
  bool notify_ok_ = false;  // guarded by notify_mu_
  // Cancels the lock waits, waits (up to 5 s) for their answers, and
  // releases the locks of files still open (a forced unmount).
  void EndLockWaits();
  std::mutex waits_mu_;
  std::condition_variable waits_cv_;
  std::set<LockWait*> lock_waits_;  // guarded by waits_mu_
  std::mutex lock_owners_mu_;
  // (kind, ino, owner) -> the handle that last asked; guarded by lock_owners_mu_
  std::map<std::tuple<LockKind, uint64_t, uint64_t>, uint64_t> lock_owners_;
  std::unique_ptr<metrics::LatencyHistograms> op_latency_;  // null without metrics
  std::unique_ptr<Passthrough> passthrough_;

  // Stops the session loop (after fuse_session_exit): wakes the loop's
  // threads waiting in OnRead.
  void StopLoop();
  // What Unmount and Detach share once the kernel side is settled: the loop
  // stopped, lock waits answered, the session destroyed.
  void StopServing();
  int session_fd_ = -1;
  int state_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: readable once the loop must end
  uint64_t first_handle_ = 1;
  std::mutex state_mu_;
  HandoverState state_;          // guarded by state_mu_
  std::string replay_init_;      // guarded by state_mu_: the INIT still to replay
  bool replay_pending_ = false;  // guarded by state_mu_: its reply not seen yet
  // Set (under state_mu_) with replay_pending_ at a takeover, cleared with
  // it: read without the lock by every OnRead.
  std::atomic<bool> replaying_{false};
  std::condition_variable replay_cv_;
  std::mutex adopted_mu_;
  std::map<uint64_t, uint64_t> adopted_;  // earlier process's fh -> ours; adopted_mu_
  // Last: its thread may still answer a lock (TrackLockWait) until
  // EndLockWaits has seen every wait end, and goes before the rest.
  ThreadPool after_lock_{1};
};

}  // namespace traincache::fuse

#endif  // TRAINCACHE_FUSE_FUSE_MOUNT_H_
