// <data_dir>/server.lock: the flock a traincache-server holds on its data
// dir for as long as it runs (the kernel drops it with the process, so a
// crash never leaves it taken), with the holder's pid inside for messages.
// The server takes it to run; `traincache fsck` takes it to check a stopped
// server's data.
#ifndef TRAINCACHE_COMMON_DATA_DIR_LOCK_H_
#define TRAINCACHE_COMMON_DATA_DIR_LOCK_H_

#include <string>

#include "absl/status/statusor.h"

namespace traincache {

// Takes the lock without waiting: its open descriptor (close it to let go),
// or NotFound if `create` is false and there is no lock file (the folder
// never held a server's data), or FailedPrecondition "pid N" if a running
// server holds it.
absl::StatusOr<int> TakeDataDirLock(const std::string& data_dir, bool create);

}  // namespace traincache

#endif  // TRAINCACHE_COMMON_DATA_DIR_LOCK_H_
