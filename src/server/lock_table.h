// LockTable: the server's file locks (proto/traincache/v1/lock.proto says
// what they mean) — pure logic, no RPC, so it is tested on its own.
//
// Per (scope, inode) it keeps the held flock and POSIX locks and a FIFO of
// waiters. Granting a waiter happens when a release (Unlock, ReleaseSession)
// makes its request compatible; waiters that are still blocked do not hold
// up later, compatible ones. Waiter callbacks run outside the table's mutex,
// exactly once: with OK when granted, or ABORTED when their session is
// released. A waiter cancelled through Cancel() gets no callback (Cancel
// returns true) — unless it was granted first (Cancel returns false and the
// lock is held: the caller must release it if nobody will use it).
//
// POSIX semantics: a lock replaces the owner's own locks over its range
// (splitting them), conflicts with other owners' overlapping locks when
// either is a write lock; unlock splits too. flock: one lock per owner,
// replaced by a new one (a conversion is not atomic, as on Linux).
// No deadlock detection. Thread-safe.
#ifndef TRAINCACHE_SERVER_LOCK_TABLE_H_
#define TRAINCACHE_SERVER_LOCK_TABLE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "traincache/locks.h"

namespace traincache::server {

struct LockOwner {
  uint64_t session = 0;
  uint64_t owner = 0;
  bool operator==(const LockOwner&) const = default;
};

struct HeldLock {
  LockOwner owner;
  LockRange range;
};

class LockTable {
 public:
  using Granted = std::function<void(absl::Status)>;
  // Caps the locks plus waiters of one file (RESOURCE_EXHAUSTED, ENOLCK),
  // so no client can grow the table without bound.
  static constexpr size_t kMaxPerFile = 10'000;

  enum class Outcome { kGranted, kConflict, kWaiting };
  struct LockResult {
    Outcome outcome;
    uint64_t waiter = 0;  // kWaiting: the id to Cancel with
  };

  // Takes the lock if it is compatible now. Otherwise: without `wait`,
  // kConflict (nothing changes); with `wait`, kWaiting and `granted` runs
  // later. `key` names the file ("<scope>\0<ino>"). INVALID_ARGUMENT for an
  // unlock type or start > end.
  absl::StatusOr<LockResult> Lock(const std::string& key, const LockOwner& owner,
                                  const LockRange& range, bool wait, Granted granted);
  // Releases the owner's locks of `kind` over [start, end] (flock: the
  // owner's flock) and grants waiters that fit now.
  void Unlock(const std::string& key, const LockOwner& owner, LockKind kind, uint64_t start,
              uint64_t end);
  // The first held lock of another owner that conflicts with `range`.
  std::optional<HeldLock> Test(const std::string& key, const LockOwner& owner,
                               const LockRange& range);
  // Gives up a wait. True if it was still waiting (no callback will run).
  bool Cancel(const std::string& key, uint64_t waiter);
  // Drops every lock and wait of the session (its waiters get ABORTED).
  void ReleaseSession(uint64_t session);

  size_t HeldCount() const;
  size_t WaiterCount() const;

 private:
  struct Waiter {
    uint64_t id;
    LockOwner owner;
    LockRange range;
    Granted granted;
  };
  struct File {
    std::vector<HeldLock> held;
    std::vector<Waiter> waiters;  // FIFO
  };
  using Callbacks = std::vector<std::pair<Granted, absl::Status>>;

  static bool Overlaps(const LockRange& a, const LockRange& b);
  static bool Conflicts(const HeldLock& held, const LockOwner& owner, const LockRange& range);
  const HeldLock* FirstConflict(const File& file, const LockOwner& owner,
                                const LockRange& range) const;
  // Removes the owner's locks of `kind` over [start, end] (splitting).
  static void RemoveOwned(File& file, const LockOwner& owner, LockKind kind, uint64_t start,
                          uint64_t end);
  void Apply(File& file, const LockOwner& owner, const LockRange& range);
  // Grants every waiter of `file` that fits now, in order.
  void WakeLocked(File& file, Callbacks& out);
  void EraseIfEmpty(const std::string& key);

  mutable std::mutex mu_;
  std::map<std::string, File> files_;           // guarded by mu_
  uint64_t next_waiter_ = 1;                    // guarded by mu_
};

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_LOCK_TABLE_H_
