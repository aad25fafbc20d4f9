// MetadataWatcher: follows one mounted scope's change feed (ClusterClient::
// WatchScope, namespace.proto) for its Filesystem and the kernel's caches of
// its mount, so that entries and attributes can be cached for
// FilesystemOptions::metadata_ttl instead of a second (filesystem.h).
//
// One thread per watcher. It subscribes, and on the stream's first message
// tells the Filesystem the feed is followed (long cache times from then on).
// Each later message is applied to the Filesystem (which drops what it names
// from its own cache) and then to the kernel (KernelCache), from this thread,
// never from a FUSE request. Inodes are told to the kernel a second time
// after Options::recheck_delay: a lookup whose reply raced the message may
// have created the kernel's inode just after the first notification, which
// the kernel ignored (an entry needs no second time: the kernel drops an
// entry under its directory's lock, which the lookup holds until the entry
// is in place).
//
// When the stream ends (server restart, network, auth) or stays silent for
// Options::silence_timeout (the server sends a heartbeat every second), the
// Filesystem is told the feed is not followed: it drops everything cached,
// which this thread hands to the kernel, and short cache times apply until a
// new subscription's first message (retried with backoff). A `lost` message
// (the node fell behind the server's ring) drops everything too. A client
// without a feed (UNIMPLEMENTED) leaves the short times for good.
//
// Thread-safe. Stop (or the destructor) ends the subscription and the
// thread, after which the Filesystem uses short times again.
#ifndef TRAINCACHE_NODE_METADATA_WATCHER_H_
#define TRAINCACHE_NODE_METADATA_WATCHER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "node/filesystem.h"
#include "node/kernel_cache.h"
#include "traincache/cluster_client.h"

namespace traincache::node {

struct MetadataWatcherStats {
  bool following = false;  // Long cache times are in force.
  uint64_t subscriptions = 0;  // Streams started (each after the previous ended).
  uint64_t breaks = 0;     // Streams that ended or went silent.
  uint64_t messages = 0;   // Messages received (heartbeats included).
  uint64_t changes = 0;    // Entry and inode changes in them.
  uint64_t lost = 0;       // `lost` messages.
};

class MetadataWatcher {
 public:
  struct Options {
    std::chrono::milliseconds silence_timeout{3'000};
    std::chrono::milliseconds recheck_delay{100};
    std::chrono::milliseconds initial_backoff{100};
    std::chrono::milliseconds max_backoff{5'000};
    // Messages received but not yet applied beyond this count are replaced
    // by one `lost` (the kernel is slow to take notifications).
    size_t max_queued = 256;
  };

  // All three must outlive the watcher. Starts following at once.
  MetadataWatcher(Filesystem* fs, ClusterClient* client, KernelCache* kernel)
      : MetadataWatcher(fs, client, kernel, Options{}) {}
  MetadataWatcher(Filesystem* fs, ClusterClient* client, KernelCache* kernel, Options options);
  ~MetadataWatcher();  // Stop().
  MetadataWatcher(const MetadataWatcher&) = delete;
  MetadataWatcher& operator=(const MetadataWatcher&) = delete;

  void Stop();
  MetadataWatcherStats Stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  // From the subscription's callbacks: queue for the thread. `generation`
  // names the subscription, so a late callback of an old one is ignored.
  void Received(uint64_t generation, ScopeChanges changes);
  void Ended(uint64_t generation, absl::Status status);
  void Loop();
  // Hands an invalidation to the kernel, and its inodes again later.
  void TellKernel(const KernelInvalidation& inv, Clock::time_point now);

  Filesystem* const fs_;
  ClusterClient* const client_;
  KernelCache* const kernel_;
  const Options options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;              // guarded by mu_
  uint64_t generation_ = 0;            // guarded by mu_
  std::deque<ScopeChanges> queue_;     // guarded by mu_
  std::optional<absl::Status> ended_;  // guarded by mu_
  MetadataWatcherStats stats_;         // guarded by mu_

  // The loop thread's own.
  std::unique_ptr<ChangeSubscription> subscription_;
  std::deque<std::pair<Clock::time_point, std::vector<InodeId>>> rechecks_;
  std::thread thread_;
};

}  // namespace traincache::node

#endif  // TRAINCACHE_NODE_METADATA_WATCHER_H_
