// FuseMount: one mounted scope — a libfuse low-level session whose callbacks
// each turn one kernel request into one call of a node::Filesystem and one
// reply (the only place statuses become errno: ToErrno). The session loop is
// multi-threaded and runs on its own threads until Unmount.
//
// Mount options: allow_other (container users reach the mount) and
// default_permissions (the kernel checks modes, so the core need not), 1 MiB
// reads and writes. Thread-safe: Unmount may be called from any thread, once.
#ifndef TRAINCACHE_FUSE_FUSE_MOUNT_H_
#define TRAINCACHE_FUSE_FUSE_MOUNT_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "node/filesystem.h"

struct fuse_session;

namespace traincache::fuse {

struct FuseMountOptions {
  std::string mountpoint;  // Created if missing.
  unsigned max_threads = 16;
};

class FuseMount {
 public:
  // Mounts `fs` (already Init'ed; must outlive the mount) and starts serving.
  static absl::StatusOr<std::unique_ptr<FuseMount>> Mount(node::Filesystem* fs,
                                                          FuseMountOptions options);
  ~FuseMount();  // Unmounts.

  // Stops the session loop and unmounts (lazily if the mount is busy).
  void Unmount();
  const std::string& mountpoint() const { return options_.mountpoint; }
  // For the session's callbacks (the session's userdata is the FuseMount).
  node::Filesystem& fs() const { return *fs_; }
  struct fuse_session* session() const { return session_; }

 private:
  FuseMount() = default;

  node::Filesystem* fs_ = nullptr;
  FuseMountOptions options_;
  struct fuse_session* session_ = nullptr;
  std::thread loop_;
  bool mounted_ = false;
};

}  // namespace traincache::fuse

#endif  // TRAINCACHE_FUSE_FUSE_MOUNT_H_
