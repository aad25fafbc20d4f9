// The node's side of the change feed over the fake server (whose WatchScope
// the tests drive): the Filesystem's cache times and invalidations, and the
// MetadataWatcher's following, breaking and re-subscribing, with a fake
// kernel that records what it is told to drop.
#include "node/metadata_watcher.h"

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "node/chunk_fetcher.h"
#include "node/filesystem.h"
#include "testing/fake_cluster_client.h"
#include "testing/temp_dir.h"
#include "traincache/node_tier.h"
#include "traincache/status.h"

namespace traincache::node {
namespace {

using namespace std::chrono_literals;
using testing::FakeClusterClient;
using testing::TempDir;
using Entry = std::pair<InodeId, std::string>;

constexpr auto kShort = 1000ms;
constexpr auto kLong = 30'000ms;

class FakeKernel final : public KernelCache {
 public:
  void InvalidateEntries(const std::vector<Entry>& entries) override {
    std::lock_guard lock(mu_);
    entries_.insert(entries_.end(), entries.begin(), entries.end());
    cv_.notify_all();
  }
  void InvalidateAttrs(const std::vector<InodeId>& inodes) override {
    std::lock_guard lock(mu_);
    inodes_.insert(inodes_.end(), inodes.begin(), inodes.end());
    cv_.notify_all();
  }
  size_t EntryCount(const Entry& e) {
    std::lock_guard lock(mu_);
    return std::count(entries_.begin(), entries_.end(), e);
  }
  size_t InodeCount(InodeId ino) {
    std::lock_guard lock(mu_);
    return std::count(inodes_.begin(), inodes_.end(), ino);
  }
  void Clear() {
    std::lock_guard lock(mu_);
    entries_.clear();
    inodes_.clear();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Entry> entries_;
  std::vector<InodeId> inodes_;
};

template <typename Cond>
bool Eventually(Cond cond, std::chrono::milliseconds timeout = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

ScopeChanges Start() {
  ScopeChanges c;
  c.start = true;
  return c;
}

class MetadataWatcherTest : public ::testing::Test {
 protected:
  MetadataWatcherTest() : scope_(*Scope::Parse("project:demo")) {}

  void SetUp() override {
    a_ = MakeFs("a");
    b_ = MakeFs("b");
  }
  void TearDown() override { watcher_.reset(); }

  struct Fs {
    std::unique_ptr<NodeTier> tier;
    std::unique_ptr<ChunkFetcher> fetcher;
    std::unique_ptr<Filesystem> fs;
  };
  std::unique_ptr<Fs> MakeFs(const std::string& name) {
    auto node = std::make_unique<Fs>();
    node->tier = NewMemoryTier(1ull << 30);
    node->fetcher = std::make_unique<ChunkFetcher>(&fake_, node->tier.get(), ChunkFetcher::Options{});
    FilesystemOptions options;
    options.staging_dir = dir_.Sub("staging-" + name);
    options.attr_ttl = kShort;
    options.entry_ttl = kShort;
    options.metadata_ttl = kLong;
    node->fs = std::make_unique<Filesystem>(scope_, &fake_, node->fetcher.get(), node->tier.get(),
                                            options);
    EXPECT_TRUE(node->fs->Init().ok());
    return node;
  }
  Filesystem& A() { return *a_->fs; }
  Filesystem& B() { return *b_->fs; }

  // B follows the feed (a watcher, the stream's first message sent).
  void Follow(MetadataWatcher::Options options = {}) {
    options.initial_backoff = std::min(options.initial_backoff, 20ms);
    options.recheck_delay = std::min(options.recheck_delay, 20ms);
    watcher_ = std::make_unique<MetadataWatcher>(&B(), &fake_, &kernel_, options);
    ASSERT_TRUE(Eventually([&] { return fake_.FeedWatchers(scope_) == 1; }));
    fake_.FeedSend(scope_, Start());
    ASSERT_TRUE(Eventually([&] { return B().feed_healthy(); }));
  }

  InodeId WriteFile(Filesystem& fs, const std::string& name, const std::string& data) {
    absl::StatusOr<CreateReply> c = fs.Create(kRootInode, name, 0644, O_WRONLY | O_TRUNC, {});
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return 0;
    EXPECT_TRUE(fs.Write(c->attr.ino, c->fh, 0, data).ok());
    EXPECT_TRUE(fs.Flush(c->attr.ino, c->fh).ok());
    fs.Release(c->attr.ino, c->fh);
    return c->attr.ino;
  }

  TempDir dir_;
  FakeClusterClient fake_;
  Scope scope_;
  FakeKernel kernel_;
  std::unique_ptr<Fs> a_, b_;
  std::unique_ptr<MetadataWatcher> watcher_;
};

TEST_F(MetadataWatcherTest, TimesAreShortUntilTheStreamStartsThenLong) {
  watcher_ = std::make_unique<MetadataWatcher>(&B(), &fake_, &kernel_);
  ASSERT_TRUE(Eventually([&] { return fake_.FeedWatchers(scope_) == 1; }));
  EXPECT_EQ(B().EntryTtl(B().CacheTicket()), kShort);
  EXPECT_EQ(B().AttrTtl(B().CacheTicket()), kShort);
  fake_.FeedSend(scope_, Start());
  ASSERT_TRUE(Eventually([&] { return B().feed_healthy(); }));
  EXPECT_EQ(B().EntryTtl(B().CacheTicket()), kLong);
  EXPECT_EQ(B().AttrTtl(B().CacheTicket()), kLong);
  EXPECT_TRUE(watcher_->Stats().following);
  EXPECT_EQ(watcher_->Stats().subscriptions, 1u);
}

TEST_F(MetadataWatcherTest, WhileFollowingAttributesAreServedPastTheShortTime) {
  Follow();
  const InodeId ino = WriteFile(A(), "f", "one");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  const uint64_t asked = fake_.Calls("GetAttr");
  std::this_thread::sleep_for(kShort + 200ms);
  absl::StatusOr<InodeAttr> attr = B().GetAttr(ino);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->size, 3u);
  EXPECT_EQ(fake_.Calls("GetAttr"), asked);  // From B's cache.
}

TEST_F(MetadataWatcherTest, AChangeDropsWhatItNamesHereAndInTheKernel) {
  Follow();
  const InodeId ino = WriteFile(A(), "f", "one");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  ASSERT_TRUE(B().GetAttr(ino).ok());
  kernel_.Clear();

  // A writes a new version; the server tells B.
  WriteFile(A(), "f", "longer content");
  ScopeChanges commit;
  commit.inodes = {ino, 999};  // 999: never seen here, not the kernel's.
  fake_.FeedSend(scope_, commit);
  // Told to the kernel twice: at once and after the recheck delay.
  ASSERT_TRUE(Eventually([&] { return kernel_.InodeCount(ino) == 2; }));
  EXPECT_EQ(kernel_.InodeCount(999), 0u);
  const uint64_t asked = fake_.Calls("GetAttr");
  absl::StatusOr<InodeAttr> attr = B().GetAttr(ino);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->size, 14u);
  EXPECT_EQ(fake_.Calls("GetAttr"), asked + 1);

  // A removes it: the entry and the directory's attributes go.
  ASSERT_TRUE(A().Unlink(kRootInode, "f").ok());
  ScopeChanges unlink;
  unlink.entries = {{kRootInode, "f"}, {kRootInode, "never-looked-up"}};
  unlink.inodes = {ino};
  fake_.FeedSend(scope_, unlink);
  ASSERT_TRUE(Eventually([&] { return kernel_.EntryCount({kRootInode, "f"}) == 1; }));
  EXPECT_TRUE(Eventually([&] { return kernel_.InodeCount(kRootInode) >= 1; }));
  EXPECT_EQ(kernel_.EntryCount({kRootInode, "never-looked-up"}), 0u);
  EXPECT_EQ(watcher_->Stats().changes, 5u);
}

TEST_F(MetadataWatcherTest, AnXattrSetElsewhereIsNoLongerKnownAbsent) {
  Follow();
  const InodeId ino = WriteFile(A(), "f", "one");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  EXPECT_EQ(ToErrno(B().GetXattr(ino, "user.tag").status()), ENODATA);  // Noted absent.
  ASSERT_TRUE(A().SetXattr(ino, "user.tag", "v1", 0).ok());
  // Until the change arrives, B still answers from what it noted.
  EXPECT_EQ(ToErrno(B().GetXattr(ino, "user.tag").status()), ENODATA);
  ScopeChanges c;
  c.inodes = {ino};
  fake_.FeedSend(scope_, c);
  ASSERT_TRUE(Eventually([&] { return kernel_.InodeCount(ino) >= 1; }));
  absl::StatusOr<std::string> value = B().GetXattr(ino, "user.tag");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "v1");
}

TEST_F(MetadataWatcherTest, AReplyThatRacedAChangeIsCachedBriefly) {
  B().SetFeedHealthy(true);  // No watcher: this test applies the changes.
  const InodeId ino = WriteFile(A(), "f", "one");
  // The change arrives while B's lookup is at the server.
  fake_.SetHook([&](std::string_view op) {
    if (op == "Lookup") {
      ScopeChanges c;
      c.inodes = {ino};
      B().ApplyChanges(c);
    }
  });
  const uint64_t ticket = B().CacheTicket();
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  fake_.SetHook(nullptr);
  EXPECT_EQ(B().EntryTtl(ticket), kShort);
  EXPECT_EQ(B().AttrTtl(ticket), kShort);
  // Not served from B's cache either.
  const uint64_t asked = fake_.Calls("GetAttr");
  ASSERT_TRUE(B().GetAttr(ino).ok());
  EXPECT_EQ(fake_.Calls("GetAttr"), asked + 1);
  // Without a race: long, and cached.
  const uint64_t quiet = B().CacheTicket();
  ASSERT_TRUE(B().GetAttr(ino).ok());
  EXPECT_EQ(B().AttrTtl(quiet), kLong);
  ASSERT_TRUE(B().GetAttr(ino).ok());
  EXPECT_EQ(fake_.Calls("GetAttr"), asked + 1);
}

TEST_F(MetadataWatcherTest, AListingReadBeforeAChangeIsCachedBriefly) {
  B().SetFeedHealthy(true);
  WriteFile(A(), "f", "one");
  absl::StatusOr<uint64_t> dh = B().OpenDir(kRootInode);
  ASSERT_TRUE(dh.ok());
  ScopeChanges c;
  c.inodes = {12345};
  B().ApplyChanges(c);
  std::vector<uint64_t> tickets;
  ASSERT_TRUE(B().ReadDir(*dh, 0, /*plus=*/true, [&](const DirListEntry& e) {
                   if (e.attr) tickets.push_back(e.cache_ticket);
                   return true;
                 }).ok());
  B().ReleaseDir(*dh);
  ASSERT_EQ(tickets.size(), 1u);
  EXPECT_EQ(B().EntryTtl(tickets[0]), kShort);
}

TEST_F(MetadataWatcherTest, ABrokenStreamDropsEverythingAndFollowsAgainOnceBack) {
  Follow();
  WriteFile(A(), "f", "one");
  const InodeId g = WriteFile(A(), "g", "two");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  ASSERT_TRUE(B().Lookup(kRootInode, "g").ok());
  kernel_.Clear();

  fake_.FeedEnd(scope_, absl::UnavailableError("server restarting"));
  ASSERT_TRUE(Eventually([&] { return kernel_.EntryCount({kRootInode, "g"}) == 1; }));
  EXPECT_EQ(kernel_.EntryCount({kRootInode, "f"}), 1u);
  EXPECT_GE(kernel_.InodeCount(g), 1u);
  EXPECT_FALSE(B().feed_healthy());
  EXPECT_EQ(B().EntryTtl(B().CacheTicket()), kShort);
  const uint64_t asked = fake_.Calls("GetAttr");
  ASSERT_TRUE(B().GetAttr(g).ok());
  EXPECT_EQ(fake_.Calls("GetAttr"), asked + 1);  // B's own cache was dropped too.

  // The watcher subscribes again; once the new stream starts, long again.
  ASSERT_TRUE(Eventually([&] { return fake_.FeedWatchers(scope_) == 1; }));
  fake_.FeedSend(scope_, Start());
  ASSERT_TRUE(Eventually([&] { return B().feed_healthy(); }));
  EXPECT_EQ(B().EntryTtl(B().CacheTicket()), kLong);
  EXPECT_EQ(watcher_->Stats().breaks, 1u);
  EXPECT_EQ(watcher_->Stats().subscriptions, 2u);
}

TEST_F(MetadataWatcherTest, AStreamThatCannotStartIsRetried) {
  fake_.FailNext("WatchScope", absl::UnavailableError("no server"), 3);
  watcher_ = std::make_unique<MetadataWatcher>(
      &B(), &fake_, &kernel_,
      MetadataWatcher::Options{.initial_backoff = 10ms, .max_backoff = 20ms});
  ASSERT_TRUE(Eventually([&] { return fake_.FeedWatchers(scope_) == 1; }));
  EXPECT_EQ(fake_.Calls("WatchScope"), 4u);
  fake_.FeedSend(scope_, Start());
  EXPECT_TRUE(Eventually([&] { return B().feed_healthy(); }));
}

TEST_F(MetadataWatcherTest, ASilentStreamCountsAsBroken) {
  Follow(MetadataWatcher::Options{.silence_timeout = 200ms});
  ASSERT_TRUE(Eventually([&] { return !B().feed_healthy(); }, 3000ms));
  EXPECT_GE(watcher_->Stats().breaks, 1u);
  // Heartbeats keep it alive: a new stream that talks stays followed.
  ASSERT_TRUE(Eventually([&] { return fake_.FeedWatchers(scope_) == 1; }));
  fake_.FeedSend(scope_, Start());
  ASSERT_TRUE(Eventually([&] { return B().feed_healthy(); }));
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(100ms);
    fake_.FeedSend(scope_, ScopeChanges{});
  }
  EXPECT_TRUE(B().feed_healthy());
}

TEST_F(MetadataWatcherTest, LostChangesDropEverythingAndFollowingGoesOn) {
  Follow();
  WriteFile(A(), "f", "one");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  kernel_.Clear();
  ScopeChanges lost;
  lost.lost = true;
  fake_.FeedSend(scope_, lost);
  ASSERT_TRUE(Eventually([&] { return kernel_.EntryCount({kRootInode, "f"}) == 1; }));
  EXPECT_TRUE(B().feed_healthy());
  EXPECT_EQ(watcher_->Stats().lost, 1u);
}

TEST_F(MetadataWatcherTest, TheNamesTheKernelHoldsFollowThisNodesRenames) {
  Follow();
  WriteFile(A(), "a", "x");
  WriteFile(A(), "c", "y");
  WriteFile(A(), "d", "z");
  ASSERT_TRUE(B().Lookup(kRootInode, "a").ok());
  ASSERT_TRUE(B().Lookup(kRootInode, "c").ok());
  ASSERT_TRUE(B().Lookup(kRootInode, "d").ok());
  ASSERT_TRUE(B().Rename(kRootInode, "a", kRootInode, "b", 0).ok());
  ASSERT_TRUE(B().Rename(kRootInode, "c", kRootInode, "d", kRenameExchange).ok());
  KernelInvalidation all = B().SetFeedHealthy(false);
  std::set<Entry> names(all.entries.begin(), all.entries.end());
  EXPECT_EQ(names, (std::set<Entry>{{kRootInode, "b"}, {kRootInode, "c"}, {kRootInode, "d"}}));
  // Forgotten inodes take their names with them.
  B().SetFeedHealthy(true);
  absl::StatusOr<InodeAttr> b = B().Lookup(kRootInode, "b");
  ASSERT_TRUE(b.ok());
  B().Forget(b->ino, 2);
  all = B().SetFeedHealthy(false);
  names = std::set<Entry>(all.entries.begin(), all.entries.end());
  EXPECT_EQ(names.count({kRootInode, "b"}), 0u);
}

TEST_F(MetadataWatcherTest, WithoutAFeedTimesStayShortAndNothingIsRetried) {
  fake_.FailNext("WatchScope", absl::UnimplementedError("no feed"), -1);
  watcher_ = std::make_unique<MetadataWatcher>(&B(), &fake_, &kernel_);
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(B().feed_healthy());
  EXPECT_EQ(B().AttrTtl(B().CacheTicket()), kShort);
  EXPECT_EQ(fake_.Calls("WatchScope"), 1u);
}

TEST_F(MetadataWatcherTest, StoppingFallsBackToShortTimes) {
  Follow();
  watcher_->Stop();
  EXPECT_FALSE(B().feed_healthy());
  EXPECT_EQ(B().EntryTtl(B().CacheTicket()), kShort);
  EXPECT_EQ(fake_.FeedWatchers(scope_), 0u);
}

TEST_F(MetadataWatcherTest, ZeroMetadataTtlKeepsShortTimes) {
  FilesystemOptions options;
  options.staging_dir = dir_.Sub("staging-c");
  options.metadata_ttl = 0ms;
  Filesystem c(scope_, &fake_, b_->fetcher.get(), b_->tier.get(), options);
  ASSERT_TRUE(c.Init().ok());
  c.SetFeedHealthy(true);
  EXPECT_EQ(c.EntryTtl(c.CacheTicket()), options.entry_ttl);
}

}  // namespace
}  // namespace traincache::node
