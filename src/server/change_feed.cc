#include "server/change_feed.h"

#include <algorithm>
#include <atomic>
#include <set>

namespace traincache::server {
namespace {

// A ring longer than this drops what every watcher has taken already.
constexpr size_t kTrimAbove = 1024;

}  // namespace

struct ChangeFeed::Watcher {
  uint64_t id = 0;
  std::string scope;   // Scope::ToString(): its ring's key.
  std::string origin;  // Its node id: changes with this origin are not sent.
  SendFn send;
  CloseFn close;
  // Guarded by ChangeFeed::mu_.
  uint64_t cursor = 0;  // Sequence number of the next change to look at.
  bool started = false;
  bool in_flight = false;
  Clock::time_point last_send;
  // Held while `send` or `close` runs; Unwatch takes it to wait them out.
  std::mutex send_mu;
  std::atomic<bool> gone{false};
};

struct ChangeFeed::Ring {
  struct Entry {
    uint64_t seq;
    std::string origin;
    FeedChange change;
  };
  std::deque<Entry> changes;  // Consecutive sequence numbers.
  uint64_t next_seq = 1;
  std::set<uint64_t> watchers;

  uint64_t first_seq() const { return changes.empty() ? next_seq : changes.front().seq; }
};

ChangeFeed::ChangeFeed(Options options) : options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

ChangeFeed::~ChangeFeed() { Close(); }

void ChangeFeed::Publish(const Scope& scope, std::string_view origin,
                         std::vector<FeedChange> changes) {
  if (changes.empty()) return;
  Outbox out;
  {
    std::lock_guard lock(mu_);
    auto it = rings_.find(scope.ToString());
    if (it == rings_.end()) return;  // Nobody watches it.
    Ring& ring = it->second;
    for (FeedChange& c : changes) {
      ring.changes.push_back(Ring::Entry{ring.next_seq++, std::string(origin), std::move(c)});
    }
    if (ring.changes.size() > kTrimAbove) {
      // What every watcher has taken is not needed any more: a quiet scope
      // keeps a short ring, a lagging watcher the whole one.
      uint64_t oldest_needed = ring.next_seq;
      for (uint64_t id : ring.watchers) {
        oldest_needed = std::min(oldest_needed, watchers_.at(id)->cursor);
      }
      while (!ring.changes.empty() && ring.changes.front().seq < oldest_needed) {
        ring.changes.pop_front();
      }
    }
    while (ring.changes.size() > options_.ring_changes) ring.changes.pop_front();
    stats_.published += changes.size();
    const Clock::time_point now = Clock::now();
    Clock::time_point wake = Clock::time_point::max();
    for (uint64_t id : ring.watchers) {
      const std::shared_ptr<Watcher>& w = watchers_.at(id);
      CollectLocked(*w, w, now, out, &wake);
    }
    // A watcher that may not be sent to yet (it was sent to a moment ago)
    // is the loop's: it sends when the interval has passed.
    if (wake != Clock::time_point::max()) cv_.notify_one();
  }
  // From the publisher's thread: the first change after a quiet spell is on
  // its way before the caller is answered.
  Deliver(out);
}

void ChangeFeed::PublishLost(const Scope& scope) {
  Outbox out;
  {
    std::lock_guard lock(mu_);
    auto it = rings_.find(scope.ToString());
    if (it == rings_.end()) return;
    const Clock::time_point now = Clock::now();
    Clock::time_point wake = Clock::time_point::max();
    for (uint64_t id : it->second.watchers) {
      const std::shared_ptr<Watcher>& w = watchers_.at(id);
      w->cursor = 0;  // Before any ring's first change: TakeLocked says `lost`.
      CollectLocked(*w, w, now, out, &wake);
    }
    if (wake != Clock::time_point::max()) cv_.notify_one();
  }
  Deliver(out);
}

uint64_t ChangeFeed::Watch(const Scope& scope, std::string origin, SendFn send, CloseFn close) {
  auto w = std::make_shared<Watcher>();
  w->scope = scope.ToString();
  w->origin = std::move(origin);
  w->send = std::move(send);
  w->close = std::move(close);
  Outbox out;
  {
    std::lock_guard lock(mu_);
    if (closed_) return 0;
    w->id = next_id_++;
    Ring& ring = rings_[w->scope];
    // Changes from now on; what came before is the node's to read fresh.
    w->cursor = ring.next_seq;
    ring.watchers.insert(w->id);
    watchers_.emplace(w->id, w);
    ++stats_.watchers;
    Clock::time_point wake = Clock::time_point::max();
    CollectLocked(*w, w, Clock::now(), out, &wake);  // The start batch.
  }
  const uint64_t id = w->id;
  Deliver(out);
  return id;
}

void ChangeFeed::SendDone(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = watchers_.find(id);
  if (it == watchers_.end()) return;
  it->second->in_flight = false;
  // Whatever came meanwhile goes from the loop, min_interval after the last
  // batch: that is what gathers a burst into few messages.
  cv_.notify_one();
}

void ChangeFeed::Unwatch(uint64_t id) {
  std::shared_ptr<Watcher> w;
  {
    std::lock_guard lock(mu_);
    auto it = watchers_.find(id);
    if (it == watchers_.end()) return;
    w = std::move(it->second);
    watchers_.erase(it);
    --stats_.watchers;
    auto ring = rings_.find(w->scope);
    ring->second.watchers.erase(id);
    if (ring->second.watchers.empty()) rings_.erase(ring);
  }
  w->gone.store(true);
  // A send or close that started before `gone` was set ends first.
  std::lock_guard wait(w->send_mu);
}

void ChangeFeed::Close() {
  std::vector<std::shared_ptr<Watcher>> all;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    for (auto& [id, w] : watchers_) all.push_back(w);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (const auto& w : all) {
    std::lock_guard send(w->send_mu);
    if (!w->gone.load()) w->close();
  }
}

ChangeFeedStats ChangeFeed::Stats() const {
  std::lock_guard lock(mu_);
  ChangeFeedStats out = stats_;
  for (const auto& [scope, ring] : rings_) out.kept += ring.changes.size();
  return out;
}

void ChangeFeed::CollectLocked(Watcher& w, const std::shared_ptr<Watcher>& ptr,
                               Clock::time_point now, Outbox& out, Clock::time_point* wake) {
  if (w.in_flight) return;  // SendDone wakes the loop.
  const Ring& ring = rings_.at(w.scope);
  const bool owed = !w.started || w.cursor < ring.next_seq;
  if (!owed) {
    const Clock::time_point beat = w.last_send + options_.heartbeat;
    if (beat > now) {
      *wake = std::min(*wake, beat);
      return;
    }
    // Nothing to say for a while: an empty batch says the stream is alive.
  } else if (w.started && w.last_send + options_.min_interval > now) {
    *wake = std::min(*wake, w.last_send + options_.min_interval);
    return;
  }
  FeedBatch batch = owed ? TakeLocked(w, ring) : FeedBatch{};
  if (owed && !batch.start && !batch.lost && batch.entries.empty() && batch.inodes.empty()) {
    return;  // Only its own changes: nothing to send.
  }
  w.in_flight = true;
  w.last_send = now;
  ++stats_.batches;
  stats_.sent += batch.entries.size() + batch.inodes.size();
  if (batch.lost) ++stats_.lost;
  out.emplace_back(ptr, std::move(batch));
}

FeedBatch ChangeFeed::TakeLocked(Watcher& w, const Ring& ring) {
  FeedBatch batch;
  if (!w.started) {
    batch.start = true;
    w.started = true;
  }
  if (w.cursor < ring.first_seq()) {
    // The ring moved past changes it never got: it must drop everything.
    batch.lost = true;
    w.cursor = ring.next_seq;
    return batch;
  }
  std::set<std::pair<InodeId, std::string_view>> entries;
  std::set<InodeId> inodes;
  size_t i = static_cast<size_t>(w.cursor - ring.first_seq());
  for (; i < ring.changes.size() && entries.size() + inodes.size() < options_.max_batch_changes;
       ++i) {
    const Ring::Entry& e = ring.changes[i];
    if (!w.origin.empty() && e.origin == w.origin) continue;
    if (e.change.name.empty()) {
      if (inodes.insert(e.change.ino).second) batch.inodes.push_back(e.change.ino);
    } else if (entries.emplace(e.change.ino, e.change.name).second) {
      batch.entries.emplace_back(e.change.ino, e.change.name);
    }
  }
  w.cursor = ring.first_seq() + i;
  return batch;
}

void ChangeFeed::Deliver(Outbox& out) {
  for (auto& [w, batch] : out) {
    std::lock_guard send(w->send_mu);
    if (!w->gone.load()) w->send(w->id, std::move(batch));
  }
  out.clear();
}

void ChangeFeed::Loop() {
  std::unique_lock lock(mu_);
  while (!closed_) {
    const Clock::time_point now = Clock::now();
    Clock::time_point wake = now + options_.heartbeat;
    Outbox out;
    for (auto& [id, w] : watchers_) CollectLocked(*w, w, now, out, &wake);
    if (!out.empty()) {
      lock.unlock();
      Deliver(out);
      lock.lock();
      continue;
    }
    cv_.wait_until(lock, wake);
  }
}

}  // namespace traincache::server
