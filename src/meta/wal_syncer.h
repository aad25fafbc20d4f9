// WalSyncer: group commit for a write-ahead log. Writers write without
// syncing (so their writes become visible in order under their own locks),
// then call WaitSynced with the sequence number of their write. One caller at
// a time — the leader — syncs the log, covering every write made so far; the
// others wait for it and return as soon as a finished sync covers them. So N
// concurrent writers pay for about one sync, not N.
//
// Thread-safe.
#ifndef TRAINCACHE_META_WAL_SYNCER_H_
#define TRAINCACHE_META_WAL_SYNCER_H_

#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace traincache::meta {

class WalSyncer {
 public:
  // `latest` returns the sequence number of the newest write that is already
  // in the log (written, maybe not synced); `sync` makes everything in the
  // log durable. Both are called without WalSyncer's lock held.
  WalSyncer(std::function<uint64_t()> latest, std::function<absl::Status()> sync)
      : latest_(std::move(latest)), sync_(std::move(sync)) {}

  // Returns once a sync that started after write `seq` was in the log has
  // succeeded. On a failed sync, the leader returns its error and the waiters
  // try again themselves (each returns an error or a success of its own).
  absl::Status WaitSynced(uint64_t seq);

  // How many syncs ran (tests check that concurrent writers share them).
  uint64_t sync_count() const;

 private:
  const std::function<uint64_t()> latest_;
  const std::function<absl::Status()> sync_;
  mutable absl::Mutex mu_;
  absl::CondVar done_;                        // Signalled when a sync ends.
  uint64_t synced_ ABSL_GUARDED_BY(mu_) = 0;  // Every write <= this is durable.
  bool syncing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t sync_count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace traincache::meta

#endif  // TRAINCACHE_META_WAL_SYNCER_H_
