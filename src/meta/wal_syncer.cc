#include "meta/wal_syncer.h"

#include <algorithm>

namespace traincache::meta {

absl::Status WalSyncer::WaitSynced(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  while (synced_ < seq) {
    if (syncing_) {
      // A sync is running; it may or may not cover `seq` (it may have read
      // `latest_` before our write). Recheck when it ends.
      done_.Wait(&mu_);
      continue;
    }
    syncing_ = true;
    // Read before syncing: every write up to `target` is in the log now, so
    // the sync below makes all of them durable, ours included.
    const uint64_t target = latest_();
    mu_.Unlock();
    absl::Status status = sync_();
    mu_.Lock();
    syncing_ = false;
    ++sync_count_;
    if (status.ok()) synced_ = std::max(synced_, target);
    done_.SignalAll();
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

uint64_t WalSyncer::sync_count() const {
  absl::MutexLock lock(&mu_);
  return sync_count_;
}

}  // namespace traincache::meta
