// The node daemon's side of systemd's file descriptor store (sd_notify(3)
// FDSTORE=1, sd_listen_fds_with_names(3); the unit sets
// FileDescriptorStoreMax=): each mount's /dev/fuse descriptor and its
// hand-over state memfd (fuse/handover_state.h) are stored as soon as the
// scope is mounted, so systemd keeps the FUSE connection open through a
// restart or a crash of the daemon and passes both to the next process,
// which serves the mount on (FuseMount takeover) instead of leaving
// containers with a dead one. A clean unmount removes them.
//
// Names: "fuse-<kind>-<id>" and "state-<kind>-<id>" (FDNAME allows no ':').
// Without $NOTIFY_SOCKET (not under systemd) Store and Remove do nothing;
// any process that speaks the same protocol can play systemd's part (the
// integration tests do). Thread-compatible; errors are logged.
#ifndef TRAINCACHE_CLI_FD_STORE_H_
#define TRAINCACHE_CLI_FD_STORE_H_

#include <map>
#include <string>

#include "traincache/scope.h"

namespace traincache::cli {

struct StoredMount {
  int fuse_fd = -1;   // the /dev/fuse connection
  int state_fd = -1;  // its HandoverState memfd
};

// The mounts handed to this process at start ($LISTEN_FDS with
// $LISTEN_FDNAMES), by scope text; descriptors whose names are not ours, or
// a scope missing one of its two, are closed. Unsets the variables.
std::map<std::string, StoredMount> TakeStoredMounts();
// Asks the service manager to keep `scope`'s two descriptors.
void StoreMount(const Scope& scope, int fuse_fd, int state_fd);
// Asks it to close them (the scope was unmounted).
void RemoveStoredMount(const Scope& scope);

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_FD_STORE_H_
