// The server's change feed without gRPC: what each watcher is sent (its
// scope only, never its own changes, duplicates once, a burst in few
// batches, `lost` when it fell behind, heartbeats), and Close.
#include "server/change_feed.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace traincache::server {
namespace {

using namespace std::chrono_literals;

Scope MustScope(const std::string& text) { return *Scope::Parse(text); }

// A watcher's end of the feed: records what it is sent and, unless told to
// hold, says each batch is written at once (as a reactor's inline
// OnWriteDone would).
class Sink {
 public:
  explicit Sink(ChangeFeed& feed, bool auto_done = true) : feed_(feed), auto_done_(auto_done) {}
  ~Sink() {
    if (id_ != 0) feed_.Unwatch(id_);
  }

  void Watch(const Scope& scope, const std::string& origin) {
    id_ = feed_.Watch(
        scope, origin, [this](uint64_t id, FeedBatch b) { Got(id, std::move(b)); },
        [this] {
          std::lock_guard lock(mu_);
          closed_ = true;
          cv_.notify_all();
        });
  }

  // Waits until `pred(batches)` holds (up to 5 s).
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 5s, [&] { return pred(batches_); });
  }
  std::vector<FeedBatch> batches() {
    std::lock_guard lock(mu_);
    return batches_;
  }
  // All entry names sent so far.
  std::multiset<std::string> names() {
    std::lock_guard lock(mu_);
    std::multiset<std::string> out;
    for (const FeedBatch& b : batches_) {
      for (const auto& [parent, name] : b.entries) out.insert(name);
    }
    return out;
  }
  bool closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }
  void Done() { feed_.SendDone(id_); }
  uint64_t id() const { return id_; }

 private:
  void Got(uint64_t id, FeedBatch b) {
    {
      std::lock_guard lock(mu_);
      batches_.push_back(std::move(b));
      cv_.notify_all();
    }
    if (auto_done_) feed_.SendDone(id);
  }

  ChangeFeed& feed_;
  const bool auto_done_;
  uint64_t id_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<FeedBatch> batches_;
  bool closed_ = false;
};

size_t Changes(const std::vector<FeedBatch>& batches) {
  size_t n = 0;
  for (const FeedBatch& b : batches) n += b.entries.size() + b.inodes.size();
  return n;
}

TEST(ChangeFeedTest, AWatcherStartsWithAStartBatchAndGetsOthersChangesOnly) {
  ChangeFeed feed;
  const Scope p1 = MustScope("project:p1");
  Sink b(feed);
  b.Watch(p1, "node-b");
  ASSERT_TRUE(b.WaitFor([](auto& v) { return !v.empty(); }));
  EXPECT_TRUE(b.batches()[0].start);
  EXPECT_FALSE(b.batches()[0].lost);

  feed.Publish(p1, "node-b", {FeedChange::Entry(1, "mine")});  // Its own.
  feed.Publish(p1, "node-a", {FeedChange::Entry(1, "theirs"), FeedChange::Inode(7)});
  feed.Publish(p1, "", {FeedChange::Entry(1, "cli")});  // No node id: everyone's.
  ASSERT_TRUE(b.WaitFor([](auto& v) { return Changes(v) >= 3; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(b.names(), (std::multiset<std::string>{"theirs", "cli"}));
  std::vector<InodeId> inodes;
  for (const FeedBatch& batch : b.batches()) {
    inodes.insert(inodes.end(), batch.inodes.begin(), batch.inodes.end());
  }
  EXPECT_EQ(inodes, std::vector<InodeId>{7});
}

TEST(ChangeFeedTest, OtherScopesAndUnwatchedScopesAreNotSentOrKept) {
  ChangeFeed feed;
  Sink b(feed);
  b.Watch(MustScope("project:p1"), "node-b");
  feed.Publish(MustScope("project:p2"), "node-a", {FeedChange::Entry(1, "elsewhere")});
  feed.Publish(MustScope("team:t1"), "node-a", {FeedChange::Inode(3)});
  EXPECT_EQ(feed.Stats().published, 0u);  // Nobody watches them: nothing kept.
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(Changes(b.batches()), 0u);
  feed.Publish(MustScope("project:p1"), "node-a", {FeedChange::Entry(1, "here")});
  ASSERT_TRUE(b.WaitFor([](auto& v) { return Changes(v) == 1; }));
  EXPECT_EQ(b.names(), (std::multiset<std::string>{"here"}));
}

TEST(ChangeFeedTest, ABurstIsSentInFewBatchesEachChangeOnce) {
  ChangeFeed feed;
  const Scope p1 = MustScope("project:p1");
  Sink b(feed);
  b.Watch(p1, "node-b");
  constexpr int kCreates = 10'000;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kCreates; ++i) {
    feed.Publish(p1, "node-a", {FeedChange::Entry(1, "f" + std::to_string(i))});
    // As a real burst: a create every ~20 µs.
    if (i % 50 == 0) std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(b.WaitFor([](auto& v) { return Changes(v) == kCreates; }));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const size_t batches = b.batches().size();
  // At most about one batch per 5 ms (plus the start batch and slack).
  EXPECT_LT(batches, static_cast<size_t>(seconds / 0.005) + 10) << seconds << " s";
  EXPECT_LT(batches, size_t{kCreates / 10});
  std::multiset<std::string> names = b.names();
  EXPECT_EQ(names.size(), size_t{kCreates});
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), size_t{kCreates});
}

TEST(ChangeFeedTest, WhatEveryWatcherTookIsNotKept) {
  ChangeFeed feed;
  const Scope p1 = MustScope("project:p1");
  Sink b(feed);
  b.Watch(p1, "node-b");
  for (int i = 0; i < 5000; ++i) {
    feed.Publish(p1, "node-a", {FeedChange::Inode(static_cast<InodeId>(i + 2))});
    if (i % 100 == 0) std::this_thread::sleep_for(6ms);  // Let batches go.
  }
  ASSERT_TRUE(b.WaitFor([](auto& v) { return Changes(v) == 5000; }));
  feed.Publish(p1, "node-a", {FeedChange::Inode(1)});
  ASSERT_TRUE(b.WaitFor([](auto& v) { return Changes(v) == 5001; }));
  EXPECT_LE(feed.Stats().kept, 1025u);
}

TEST(ChangeFeedTest, DuplicatesInOneBatchAreSentOnce) {
  ChangeFeed feed;
  const Scope p1 = MustScope("project:p1");
  Sink b(feed, /*auto_done=*/false);
  b.Watch(p1, "node-b");
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() == 1; }));  // start, not done yet
  for (int i = 0; i < 5; ++i) {
    feed.Publish(p1, "node-a", {FeedChange::Entry(1, "same"), FeedChange::Inode(9)});
  }
  b.Done();
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() == 2; }));
  const FeedBatch batch = b.batches()[1];
  EXPECT_EQ(batch.entries.size(), 1u);
  EXPECT_EQ(batch.inodes, std::vector<InodeId>{9});
}

TEST(ChangeFeedTest, AWatcherThatFellBehindTheRingIsToldItLostChanges) {
  ChangeFeed::Options options;
  options.ring_changes = 10;
  ChangeFeed feed(options);
  const Scope p1 = MustScope("project:p1");
  Sink b(feed, /*auto_done=*/false);
  b.Watch(p1, "node-b");
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() == 1; }));
  // Its start batch is still being written: 20 changes pass it by.
  for (int i = 0; i < 20; ++i) feed.Publish(p1, "node-a", {FeedChange::Inode(100 + i)});
  b.Done();
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() == 2; }));
  EXPECT_TRUE(b.batches()[1].lost);
  EXPECT_EQ(feed.Stats().lost, 1u);
  // After the `lost`, it follows again from there.
  b.Done();
  feed.Publish(p1, "node-a", {FeedChange::Inode(5)});
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() == 3; }));
  EXPECT_FALSE(b.batches()[2].lost);
  EXPECT_EQ(b.batches()[2].inodes, std::vector<InodeId>{5});
}

TEST(ChangeFeedTest, ADeletedScopesWatchersAreToldTheyLostEverything) {
  ChangeFeed feed;
  const Scope p1 = MustScope("project:p1");
  Sink b(feed);
  b.Watch(p1, "node-b");
  Sink c(feed);
  c.Watch(MustScope("project:p2"), "node-c");
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() == 1; }));
  feed.PublishLost(p1);
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() == 2; }));
  EXPECT_TRUE(b.batches()[1].lost);
  std::this_thread::sleep_for(20ms);
  for (const FeedBatch& batch : c.batches()) EXPECT_FALSE(batch.lost);
}

TEST(ChangeFeedTest, AQuietScopeGetsHeartbeats) {
  ChangeFeed::Options options;
  options.heartbeat = 50ms;
  ChangeFeed feed(options);
  Sink b(feed);
  b.Watch(MustScope("project:p1"), "node-b");
  ASSERT_TRUE(b.WaitFor([](auto& v) { return v.size() >= 4; }));
  for (size_t i = 1; i < 4; ++i) {
    const FeedBatch batch = b.batches()[i];
    EXPECT_FALSE(batch.start || batch.lost);
    EXPECT_EQ(batch.entries.size() + batch.inodes.size(), 0u);
  }
}

TEST(ChangeFeedTest, CloseEndsEveryWatcherAndRefusesNewOnes) {
  ChangeFeed feed;
  Sink b(feed);
  b.Watch(MustScope("project:p1"), "node-b");
  feed.Close();
  EXPECT_TRUE(b.closed());
  Sink c(feed);
  c.Watch(MustScope("project:p1"), "node-c");
  EXPECT_EQ(c.id(), 0u);
}

TEST(ChangeFeedTest, UnwatchedWatchersAreNotCalledAgain) {
  ChangeFeed feed;
  const Scope p1 = MustScope("project:p1");
  std::atomic<int> calls{0};
  const uint64_t id =
      feed.Watch(p1, "node-b", [&](uint64_t id, FeedBatch) { ++calls, feed.SendDone(id); }, [] {});
  ASSERT_NE(id, 0u);
  feed.Unwatch(id);
  const int seen = calls.load();
  feed.Publish(p1, "node-a", {FeedChange::Inode(1)});
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(calls.load(), seen);
  EXPECT_EQ(feed.Stats().watchers, 0u);
  EXPECT_EQ(feed.Stats().published, 0u);  // Its ring went with its last watcher.
}

}  // namespace
}  // namespace traincache::server
