#include "meta/wal_syncer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace traincache::meta {
namespace {

// A fake log: Append makes a write visible (a new sequence number); a sync
// takes a while and makes everything appended before it started durable.
class FakeLog {
 public:
  uint64_t Append() { return ++written_; }
  uint64_t Latest() { return written_.load(); }
  absl::Status Sync() {
    uint64_t covered = written_.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++syncs_;
    if (fail_next_.exchange(false)) return absl::InternalError("disk on fire");
    uint64_t d = durable_.load();
    while (d < covered && !durable_.compare_exchange_weak(d, covered)) {
    }
    return absl::OkStatus();
  }
  uint64_t durable() const { return durable_.load(); }
  void FailNext() { fail_next_ = true; }

 private:
  std::atomic<uint64_t> written_{0}, durable_{0};
  std::atomic<int> syncs_{0};
  std::atomic<bool> fail_next_{false};
};

TEST(WalSyncerTest, ReturnsOnlyOnceDurableAndSharesSyncs) {
  FakeLog log;
  WalSyncer syncer([&] { return log.Latest(); }, [&] { return log.Sync(); });
  constexpr int kThreads = 8, kWrites = 100;
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kWrites; ++i) {
        uint64_t seq = log.Append();
        ASSERT_TRUE(syncer.WaitSynced(seq).ok());
        if (log.durable() < seq) ++violations;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(violations.load(), 0);
  // Group commit: far fewer syncs than writes.
  EXPECT_LT(syncer.sync_count(), static_cast<uint64_t>(kThreads * kWrites) / 2);
  // Already durable: no sync at all.
  uint64_t before = syncer.sync_count();
  EXPECT_TRUE(syncer.WaitSynced(log.Latest()).ok());
  EXPECT_TRUE(syncer.WaitSynced(0).ok());
  EXPECT_EQ(syncer.sync_count(), before);
}

TEST(WalSyncerTest, FailedSyncIsReportedThenRetried) {
  FakeLog log;
  WalSyncer syncer([&] { return log.Latest(); }, [&] { return log.Sync(); });
  uint64_t seq = log.Append();
  log.FailNext();
  absl::Status s = syncer.WaitSynced(seq);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_LT(log.durable(), seq);
  EXPECT_TRUE(syncer.WaitSynced(seq).ok());
  EXPECT_GE(log.durable(), seq);
}

}  // namespace
}  // namespace traincache::meta
