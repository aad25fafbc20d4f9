// ChangeFeed: the server's side of the change feed (namespace.proto,
// WatchScope) — what each node watching a scope must drop from its caches
// because another caller changed the scope.
//
// The namespace handlers Publish each mutation (after the store applied it,
// before they answer) as entry changes (parent, name) and inode changes,
// tagged with the caller's node id. For every scope someone watches, the feed
// keeps the last Options::ring_changes changes in a ring with sequence
// numbers; each watcher has a cursor into it. A watcher is sent:
//   - at once, a first batch with `start` set;
//   - the changes past its cursor made by other node ids, gathered into one
//     batch (duplicates dropped, at most max_batch_changes): the first change
//     after a quiet spell leaves at once, later ones at most one batch per
//     min_interval, so a burst of 10,000 creates is a few dozen messages;
//   - `lost` instead, if the ring moved past its cursor (it fell behind: the
//     node drops everything it caches of the scope);
//   - an empty batch after `heartbeat` without any, so a silent stream is a
//     broken one.
// At most one batch per watcher is outstanding: the next one waits for
// SendDone. Scopes nobody watches cost nothing: no ring is kept for them.
//
// The feed knows nothing of gRPC: a watcher is a `send` function (start
// writing this batch) and a `close` function (end the stream: the server is
// stopping). Thread-safe. `send` and `close` run with no lock of the feed
// held but the watcher's own send_mu (so Unwatch can wait for them); they may
// call SendDone. Lock order: Watcher::send_mu before mu_.
#ifndef TRAINCACHE_SERVER_CHANGE_FEED_H_
#define TRAINCACHE_SERVER_CHANGE_FEED_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache::server {

// One change as the handlers publish it.
struct FeedChange {
  InodeId ino = 0;   // An entry change's directory, else the changed inode.
  std::string name;  // An entry change's name; empty for an inode change.

  static FeedChange Entry(InodeId parent, std::string_view name) {
    return FeedChange{parent, std::string(name)};
  }
  static FeedChange Inode(InodeId ino) { return FeedChange{ino, {}}; }
};

// One message to one watcher (namespace.proto ScopeChanges).
struct FeedBatch {
  bool start = false;
  bool lost = false;
  std::vector<std::pair<InodeId, std::string>> entries;
  std::vector<InodeId> inodes;
};

struct ChangeFeedStats {
  uint64_t watchers = 0;   // Watching now.
  uint64_t published = 0;  // Changes recorded into a ring.
  uint64_t batches = 0;    // Batches handed to watchers (heartbeats included).
  uint64_t sent = 0;       // Changes in those batches.
  uint64_t lost = 0;       // `lost` batches: watchers that fell behind.
  uint64_t kept = 0;       // Changes held in rings now.
};

class ChangeFeed {
 public:
  struct Options {
    size_t ring_changes = 65536;  // Per watched scope.
    size_t max_batch_changes = 4096;
    std::chrono::milliseconds min_interval{5};
    std::chrono::milliseconds heartbeat{1000};
  };
  // Starts writing `batch` to watcher `id` (the id Watch returns: the first
  // batch comes before Watch has returned it).
  using SendFn = std::function<void(uint64_t id, FeedBatch batch)>;
  using CloseFn = std::function<void()>;

  ChangeFeed() : ChangeFeed(Options{}) {}
  explicit ChangeFeed(Options options);
  ~ChangeFeed();  // Close().
  ChangeFeed(const ChangeFeed&) = delete;
  ChangeFeed& operator=(const ChangeFeed&) = delete;

  // Records `changes` of `scope`, made by a caller with node id `origin`
  // (empty: a caller without one; sent to every watcher), and starts sending
  // them. Nothing is kept if nobody watches the scope.
  void Publish(const Scope& scope, std::string_view origin, std::vector<FeedChange> changes);

  // Everything of `scope` changed (it was deleted): its watchers are sent
  // `lost`, so they drop all they cache of it.
  void PublishLost(const Scope& scope);

  // Adds a watcher of `scope` whose node id is `origin` (not empty): `send`
  // is called with its first batch before Watch returns, and later from a
  // publisher's thread or the feed's own. Returns its id, or 0 once Close ran
  // (then nothing is called).
  uint64_t Watch(const Scope& scope, std::string origin, SendFn send, CloseFn close);
  // The last batch handed to watcher `id` is written: the next may go.
  void SendDone(uint64_t id);
  // Removes watcher `id`. Once it returns, its `send` and `close` are not
  // running and never run again.
  void Unwatch(uint64_t id);
  // Calls every watcher's `close` (once) and stops the feed's thread; later
  // Watch calls return 0. Watchers still Unwatch themselves.
  void Close();

  ChangeFeedStats Stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Watcher;
  struct Ring;
  using Outbox = std::vector<std::pair<std::shared_ptr<Watcher>, FeedBatch>>;

  // Takes what watcher `w` is owed, if it may be sent now, into `out`;
  // otherwise lowers `*wake` to when it may. Requires mu_.
  void CollectLocked(Watcher& w, const std::shared_ptr<Watcher>& ptr, Clock::time_point now,
                     Outbox& out, Clock::time_point* wake);
  // The next batch of `w` from `ring` (advances its cursor). Requires mu_.
  FeedBatch TakeLocked(Watcher& w, const Ring& ring);
  // Calls `send` of each, outside mu_.
  void Deliver(Outbox& out);
  void Loop();

  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // Wakes Loop: a watcher may be due.
  std::map<std::string, Ring> rings_;                        // by scope; guarded by mu_
  std::map<uint64_t, std::shared_ptr<Watcher>> watchers_;  // guarded by mu_
  uint64_t next_id_ = 1;                                     // guarded by mu_
  bool closed_ = false;                                      // guarded by mu_
  ChangeFeedStats stats_;                                    // guarded by mu_
  std::thread thread_;
};

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_CHANGE_FEED_H_
