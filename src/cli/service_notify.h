// The service manager protocol (sd_notify(3)) for Type=notify units: READY=1
// once a daemon serves, STOPPING=1 when it begins to stop, STATUS= lines for
// `systemctl status`. Without $NOTIFY_SOCKET (not started by systemd) every
// call does nothing.
//
// For the node daemon, WaitUntilAnswering checks that its mounts really serve
// before READY=1 is sent: a stat(2) of each mountpoint's root must come back
// from the daemon's own FUSE session.
//
// Thread-safe.
#ifndef TRAINCACHE_CLI_SERVICE_NOTIFY_H_
#define TRAINCACHE_CLI_SERVICE_NOTIFY_H_

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace traincache::cli {

// READY=1 with a STATUS line.
void NotifyReady(const std::string& status);
// STOPPING=1 with a STATUS line.
void NotifyStopping(const std::string& status);
// A STATUS line alone.
void NotifyStatus(const std::string& status);

// Returns OK once a stat(2) of every path in `mountpoints` succeeded and
// found a mount there (a device other than its parent's), each on its own
// thread; FAILED_PRECONDITION for a path with nothing mounted, DEADLINE_EXCEEDED
// naming the first that did not answer within `timeout`, or the stat error.
// Call only after the mounts' session loops run (FuseMount::Mount returned):
// before that, a stat of the mountpoint waits forever. A stat that hangs past
// the timeout is left to finish on its own thread, which ends when the mount
// is aborted.
absl::Status WaitUntilAnswering(const std::vector<std::string>& mountpoints,
                                std::chrono::milliseconds timeout);

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_SERVICE_NOTIFY_H_
