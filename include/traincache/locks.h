// File locks across nodes (proto/traincache/v1/lock.proto says what they
// mean): the types shared by the server's lock table and the node, and
// LockClient, the node's way to the server's lock service.
//
// The FUSE adapter turns flock(2) and fcntl(2) locks into LockClient calls;
// a blocking lock is answered through a callback, so a waiting lock holds
// no FUSE thread. Thread-safe.
#ifndef TRAINCACHE_LOCKS_H_
#define TRAINCACHE_LOCKS_H_

#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache {

enum class LockKind { kFlock, kPosix };
enum class LockType { kRead, kWrite, kUnlock };

// A lock request or a held lock. Ranges are inclusive; flock locks cover
// the whole file whatever the range says.
struct LockRange {
  LockKind kind = LockKind::kPosix;
  LockType type = LockType::kRead;
  uint64_t start = 0;
  uint64_t end = UINT64_MAX;  // UINT64_MAX: to the end of the file
  uint32_t pid = 0;           // who holds it (F_GETLK shows it)
};

class LockClient {
 public:
  using Done = std::function<void(absl::Status)>;
  virtual ~LockClient() = default;

  // Takes `range` (read or write) for `owner` on the file. Calls `done`
  // exactly once, maybe before returning: OK when held; without `wait`,
  // EAGAIN on a conflict; EINTR if cancelled; ENOLCK if this node lost its
  // lease meanwhile; EIO if the server cannot be reached. Returns a
  // function that gives up the wait (then `done` gets EINTR, and the lock
  // is not left held); calling it after `done` is harmless.
  virtual std::function<void()> Lock(const Scope& scope, InodeId ino, uint64_t owner,
                                     const LockRange& range, bool wait, Done done) = 0;
  // Releases what `owner` holds of `kind` over [start, end] (flock: its
  // lock). OK if it held nothing there.
  virtual absl::Status Unlock(const Scope& scope, InodeId ino, uint64_t owner, LockKind kind,
                              uint64_t start, uint64_t end) = 0;
  // The first lock of another owner that conflicts with `range`, if any.
  virtual absl::StatusOr<std::optional<LockRange>> Test(const Scope& scope, InodeId ino,
                                                        uint64_t owner,
                                                        const LockRange& range) = 0;
};

}  // namespace traincache

#endif  // TRAINCACHE_LOCKS_H_
