#include "node/metadata_watcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace traincache::node {

MetadataWatcher::MetadataWatcher(Filesystem* fs, ClusterClient* client, KernelCache* kernel,
                                 Options options)
    : fs_(fs), client_(client), kernel_(kernel), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

MetadataWatcher::~MetadataWatcher() { Stop(); }

void MetadataWatcher::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

MetadataWatcherStats MetadataWatcher::Stats() const {
  std::lock_guard lock(mu_);
  MetadataWatcherStats out = stats_;
  out.following = fs_->feed_healthy();
  return out;
}

void MetadataWatcher::Received(uint64_t generation, ScopeChanges changes) {
  std::lock_guard lock(mu_);
  if (generation != generation_ || stopping_) return;
  ++stats_.messages;
  stats_.changes += changes.entries.size() + changes.inodes.size();
  if (changes.lost) ++stats_.lost;
  if (queue_.size() >= options_.max_queued) {
    // The kernel takes notifications more slowly than they come: one
    // `lost` (drop everything) stands for all of them.
    ScopeChanges all;
    all.lost = true;
    all.start = changes.start;
    for (const ScopeChanges& c : queue_) all.start = all.start || c.start;
    queue_.clear();
    queue_.push_back(std::move(all));
  } else {
    queue_.push_back(std::move(changes));
  }
  cv_.notify_one();
}

void MetadataWatcher::Ended(uint64_t generation, absl::Status status) {
  std::lock_guard lock(mu_);
  if (generation != generation_ || stopping_) return;
  ended_ = std::move(status);
  cv_.notify_one();
}

void MetadataWatcher::TellKernel(const KernelInvalidation& inv, Clock::time_point now) {
  if (!inv.entries.empty()) kernel_->InvalidateEntries(inv.entries);
  if (!inv.inodes.empty()) {
    kernel_->InvalidateAttrs(inv.inodes);
    rechecks_.emplace_back(now + options_.recheck_delay, inv.inodes);
  }
}

void MetadataWatcher::Loop() {
  const std::string scope = fs_->scope().ToString();
  auto backoff = options_.initial_backoff;
  Clock::time_point next_attempt = Clock::now();
  Clock::time_point last_message = next_attempt;
  bool unimplemented = false;
  bool quiet = false;  // A failure was logged since the feed last worked.
  std::unique_lock lock(mu_);
  while (!stopping_) {
    Clock::time_point now = Clock::now();
    if (!subscription_ && !unimplemented && now >= next_attempt) {
      const uint64_t generation = ++generation_;
      queue_.clear();
      ended_.reset();
      ++stats_.subscriptions;
      lock.unlock();
      absl::StatusOr<std::unique_ptr<ChangeSubscription>> sub = client_->WatchScope(
          fs_->scope(),
          [this, generation](ScopeChanges c) { Received(generation, std::move(c)); },
          [this, generation](absl::Status s) { Ended(generation, std::move(s)); });
      if (sub.ok()) {
        subscription_ = *std::move(sub);
        last_message = Clock::now();
      } else if (absl::IsUnimplemented(sub.status())) {
        unimplemented = true;
        spdlog::info("[{}] no change feed ({}): entries and attributes are cached briefly",
                     scope, std::string(sub.status().message()));
      } else {
        if (!quiet) {
          spdlog::warn("[{}] change feed: cannot subscribe: {}", scope, sub.status().ToString());
          quiet = true;
        }
        next_attempt = now + backoff;
        backoff = std::min(backoff * 2, options_.max_backoff);
      }
      lock.lock();
      continue;
    }

    // At most an hour (a steady_clock time_point::max() would overflow).
    Clock::time_point wake = now + std::chrono::hours(1);
    if (subscription_) {
      wake = std::min(wake, last_message + options_.silence_timeout);
    } else if (!unimplemented) {
      wake = std::min(wake, next_attempt);
    }
    if (!rechecks_.empty()) wake = std::min(wake, rechecks_.front().first);
    cv_.wait_until(lock, wake, [this] { return stopping_ || !queue_.empty() || ended_; });
    if (stopping_) break;
    std::deque<ScopeChanges> messages;
    messages.swap(queue_);
    std::optional<absl::Status> ended = std::move(ended_);
    ended_.reset();
    lock.unlock();

    // Outside mu_: the kernel may keep a notification waiting (kernel_cache.h).
    now = Clock::now();
    for (const ScopeChanges& c : messages) {
      last_message = now;
      if (c.start) {
        fs_->SetFeedHealthy(true);
        backoff = options_.initial_backoff;
        spdlog::info("[{}] change feed followed: entries and attributes are cached for long",
                     scope);
        quiet = false;
      }
      TellKernel(fs_->ApplyChanges(c), now);
    }
    const bool silent =
        subscription_ && !ended && now - last_message >= options_.silence_timeout;
    if (ended || silent) {
      const std::string why = ended ? ended->ToString() : "no message for too long";
      if (!quiet) {
        spdlog::warn("[{}] change feed broken ({}): everything cached is dropped, and cached "
                     "briefly until it is back",
                     scope, why);
        quiet = true;
      } else {
        spdlog::debug("[{}] change feed still broken: {}", scope, why);
      }
      // Cancels the stream and waits for its end (its callbacks take mu_,
      // which is not held here).
      subscription_.reset();
      TellKernel(fs_->SetFeedHealthy(false), now);
      next_attempt = now + backoff;
      backoff = std::min(backoff * 2, options_.max_backoff);
      std::lock_guard stats(mu_);
      ++stats_.breaks;
    }
    while (!rechecks_.empty() && rechecks_.front().first <= now) {
      std::vector<InodeId> known = fs_->KnownInodes(rechecks_.front().second);
      if (!known.empty()) kernel_->InvalidateAttrs(known);
      rechecks_.pop_front();
    }
    lock.lock();
  }
  lock.unlock();
  subscription_.reset();
  // No feed any more: short times, and nothing long-cached is left.
  KernelInvalidation inv = fs_->SetFeedHealthy(false);
  if (!inv.entries.empty()) kernel_->InvalidateEntries(inv.entries);
  if (!inv.inodes.empty()) kernel_->InvalidateAttrs(inv.inodes);
}

}  // namespace traincache::node
