// ChunkFetcher against the in-process fake server over a memory tier (and
// the disk tier where a restart matters): single-flight, tier hits, verified
// bytes, readahead, holes, outages.

#include "node/chunk_fetcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "testing/fake_cluster_client.h"
#include "tests/chunk/test_util.h"

namespace traincache::node {
namespace {

using ::traincache::testing::FakeClusterClient;
using ::traincache::testing::RandomBytes;
using ::traincache::testing::S;

constexpr uint32_t kChunk = kMinChunkSize;

// Answers GetChunk from another client with one byte flipped (a server, or a
// wire, that corrupts); every other method is unimplemented. With
// `only_unverified`, only GetChunkUnverified's answers are damaged: damage
// that a fetch the server verifies does not see.
class CorruptingClient final : public ClusterClient {
 public:
  explicit CorruptingClient(ClusterClient* inner, bool only_unverified = false)
      : inner_(inner), only_unverified_(only_unverified) {}
  absl::StatusOr<std::string> GetChunk(const Scope& scope, const ChunkId& id, uint64_t offset,
                                       uint64_t length) override {
    absl::StatusOr<std::string> got = inner_->GetChunk(scope, id, offset, length);
    if (got.ok() && !got->empty() && !only_unverified_) (*got)[got->size() / 2] ^= 1;
    return got;
  }
  absl::StatusOr<std::string> GetChunkUnverified(const Scope& scope, const ChunkId& id) override {
    ++unverified_calls;
    absl::StatusOr<std::string> got = inner_->GetChunk(scope, id, 0, 0);
    if (got.ok() && !got->empty()) (*got)[got->size() / 3] ^= 4;
    return got;
  }
  std::atomic<int> unverified_calls{0};

#define TC_UNIMPLEMENTED { return absl::UnimplementedError("CorruptingClient"); }
  absl::StatusOr<OpenScopeResult> OpenScope(const Scope&, bool) override TC_UNIMPLEMENTED
  absl::StatusOr<InodeAttr> Lookup(const Scope&, InodeId, std::string_view) override
      TC_UNIMPLEMENTED
  absl::StatusOr<InodeAttr> GetAttr(const Scope&, InodeId) override TC_UNIMPLEMENTED
  absl::StatusOr<InodeAttr> SetAttr(const Scope&, InodeId, const SetAttrRequest&) override
      TC_UNIMPLEMENTED
  absl::StatusOr<ReadDirPage> ReadDir(const Scope&, InodeId, std::string_view, uint32_t,
                                      bool) override TC_UNIMPLEMENTED
  absl::StatusOr<InodeAttr> Mkdir(const Scope&, InodeId, std::string_view, uint32_t,
                                  const Caller&) override TC_UNIMPLEMENTED
  absl::StatusOr<CreateResult> Create(const Scope&, InodeId, std::string_view, uint32_t,
                                      const Caller&, bool) override TC_UNIMPLEMENTED
  absl::StatusOr<UnlinkResult> Unlink(const Scope&, InodeId, std::string_view) override
      TC_UNIMPLEMENTED
  absl::Status Rmdir(const Scope&, InodeId, std::string_view) override TC_UNIMPLEMENTED
  absl::StatusOr<UnlinkResult> Rename(const Scope&, InodeId, std::string_view, InodeId,
                                      std::string_view, uint32_t) override TC_UNIMPLEMENTED
  absl::StatusOr<InodeAttr> Symlink(const Scope&, InodeId, std::string_view, std::string_view,
                                    const Caller&) override TC_UNIMPLEMENTED
  absl::StatusOr<std::string> ReadLink(const Scope&, InodeId) override TC_UNIMPLEMENTED
  absl::StatusOr<InodeAttr> Link(const Scope&, InodeId, InodeId, std::string_view) override
      TC_UNIMPLEMENTED
  absl::StatusOr<std::string> GetXattr(const Scope&, InodeId, std::string_view) override
      TC_UNIMPLEMENTED
  absl::Status SetXattr(const Scope&, InodeId, std::string_view, std::string_view,
                        uint32_t) override TC_UNIMPLEMENTED
  absl::StatusOr<std::vector<std::string>> ListXattr(const Scope&, InodeId) override
      TC_UNIMPLEMENTED
  absl::Status RemoveXattr(const Scope&, InodeId, std::string_view) override TC_UNIMPLEMENTED
  absl::StatusOr<ScopeUsage> StatFs(const Scope&) override TC_UNIMPLEMENTED
  absl::Status Sync(const Scope&) override TC_UNIMPLEMENTED
  absl::StatusOr<ChunkMap> GetChunkMap(const Scope&, InodeId) override TC_UNIMPLEMENTED
  absl::StatusOr<InodeAttr> CommitContent(const Scope&, InodeId, uint64_t, uint64_t, uint32_t,
                                          const std::vector<ChunkRef>&, Timespec) override
      TC_UNIMPLEMENTED
  absl::Status ReleaseInode(const Scope&, InodeId) override TC_UNIMPLEMENTED
  absl::StatusOr<std::vector<std::optional<uint64_t>>> HasChunks(
      const Scope&, const std::vector<ChunkId>&) override TC_UNIMPLEMENTED
  absl::Status PutChunks(const Scope&, const std::vector<std::string_view>&) override
      TC_UNIMPLEMENTED
#undef TC_UNIMPLEMENTED

 private:
  ClusterClient* inner_;
  const bool only_unverified_;
};

class ChunkFetcherTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(client_.OpenScope(scope_, /*create=*/true)); }

  // A content of `size` random bytes whose chunks are on the fake server.
  void MakeContent(uint64_t size, uint64_t seed) {
    bytes_ = RandomBytes(size, seed);
    map_ = ChunkMap{1, size, kChunk, {}};
    for (uint64_t off = 0; off < size; off += kChunk) {
      uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(kChunk, size - off));
      std::string_view chunk = std::string_view(bytes_).substr(off, len);
      map_.chunks.push_back(ChunkRef{ChunkId::Of(chunk), len});
      ASSERT_OK(client_.PutChunks(scope_, {chunk}));
    }
  }

  std::unique_ptr<ChunkFetcher> NewFetcher(ClusterClient* client, uint32_t readahead) {
    return std::make_unique<ChunkFetcher>(client, tier_.get(),
                                          ChunkFetcher::Options{4, readahead});
  }

  // Reads chunk `index` whole and checks its bytes.
  void ReadWholeChunk(ChunkFetcher& fetcher, uint64_t index) {
    std::string out(kChunk, 'x');
    absl::StatusOr<size_t> n = fetcher.Read(key_, map_, index * kChunk, kChunk, out.data());
    ASSERT_OK(n);
    ASSERT_EQ(*n, kChunk);
    ASSERT_EQ(out, bytes_.substr(index * kChunk, kChunk)) << index;
  }

  // Waits up to 10 s for `pred`.
  template <typename Pred>
  bool Eventually(Pred pred) {
    for (int i = 0; i < 1000; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  }

  FakeClusterClient client_;
  std::unique_ptr<NodeTier> tier_ = NewMemoryTier(1ull << 30);
  const Scope scope_ = S("project:p");
  const ContentKey key_{scope_, 2, 1};
  std::string bytes_;
  ChunkMap map_;
};

TEST_F(ChunkFetcherTest, SixteenConcurrentReadersCauseOneFetch) {
  MakeContent(3 * kChunk, 1);
  auto fetcher = NewFetcher(&client_, /*readahead=*/0);
  // A slow server, so that every reader arrives while the fetch is in flight.
  client_.SetHook([](std::string_view op) {
    if (op == "GetChunk") std::this_thread::sleep_for(std::chrono::milliseconds(200));
  });
  std::vector<std::thread> readers;
  std::atomic<int> right{0};
  for (int i = 0; i < 16; ++i) {
    readers.emplace_back([&, i] {
      std::string out(1000, 'x');
      absl::StatusOr<size_t> n = fetcher->Read(key_, map_, kChunk + i * 1000, 1000, out.data());
      if (n.ok() && *n == 1000 && out == bytes_.substr(kChunk + i * 1000, 1000)) ++right;
    });
  }
  for (std::thread& t : readers) t.join();
  client_.SetHook(nullptr);
  EXPECT_EQ(right.load(), 16);
  EXPECT_EQ(client_.Calls("GetChunk"), 1u);
  EXPECT_EQ(fetcher->Stats().fetches, 1u);
  EXPECT_EQ(fetcher->Stats().fetched_bytes, kChunk);
  EXPECT_GE(fetcher->Stats().coalesced, 1u);
}

TEST_F(ChunkFetcherTest, SecondReadIsServedFromTheTier) {
  MakeContent(2 * kChunk + 10, 2);
  auto fetcher = NewFetcher(&client_, 0);
  std::string out(bytes_.size(), 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  EXPECT_EQ(out, bytes_);
  EXPECT_EQ(client_.Calls("GetChunk"), 3u);
  std::string again(bytes_.size(), 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, again.size(), again.data()));
  EXPECT_EQ(again, bytes_);
  EXPECT_EQ(client_.Calls("GetChunk"), 3u);
  EXPECT_TRUE(tier_->Complete(key_, map_));
}

TEST_F(ChunkFetcherTest, ReadsClipAtTheEndAndAcrossChunks) {
  MakeContent(2 * kChunk + 10, 3);
  auto fetcher = NewFetcher(&client_, 0);
  std::string out(kChunk, 'x');
  absl::StatusOr<size_t> n = fetcher->Read(key_, map_, kChunk - 5, 20, out.data());
  ASSERT_OK(n);
  EXPECT_EQ(*n, 20u);
  EXPECT_EQ(out.substr(0, 20), bytes_.substr(kChunk - 5, 20));
  n = fetcher->Read(key_, map_, 2 * kChunk, kChunk, out.data());
  ASSERT_OK(n);
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(out.substr(0, 10), bytes_.substr(2 * kChunk, 10));
  n = fetcher->Read(key_, map_, 5 * kChunk, 10, out.data());
  ASSERT_OK(n);
  EXPECT_EQ(*n, 0u);
}

TEST_F(ChunkFetcherTest, CorruptBytesFromTheServerAreDataLossAndNotStored) {
  MakeContent(kChunk, 4);
  CorruptingClient corrupting(&client_);
  auto fetcher = NewFetcher(&corrupting, 0);
  std::string out(100, 'x');
  EXPECT_CODE(fetcher->Read(key_, map_, 0, out.size(), out.data()), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(tier_->Contains(key_, map_, 0));
  EXPECT_EQ(tier_->Stats().used_bytes, 0u);
  // The unverified copy, then the one the server verified: both wrong.
  EXPECT_EQ(fetcher->Stats().verify_failures, 2u);
  // The right server afterwards: the bytes arrive and are cached.
  auto good = NewFetcher(&client_, 0);
  ASSERT_OK(good->Read(key_, map_, 0, out.size(), out.data()));
  EXPECT_EQ(out, bytes_.substr(0, 100));
  EXPECT_TRUE(tier_->Contains(key_, map_, 0));
}

TEST_F(ChunkFetcherTest, BadUnverifiedBytesAreFetchedAgainVerifiedByTheServer) {
  MakeContent(kChunk, 12);
  CorruptingClient client(&client_, /*only_unverified=*/true);
  auto fetcher = NewFetcher(&client, 0);
  std::string out(bytes_.size(), 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  EXPECT_EQ(out, bytes_);
  EXPECT_EQ(client.unverified_calls.load(), 1);
  EXPECT_EQ(client_.Calls("GetChunk"), 2u);  // The unverified try and the verified one.
  EXPECT_EQ(fetcher->Stats().verify_failures, 1u);
  EXPECT_TRUE(tier_->Contains(key_, map_, 0));
  std::string again(bytes_.size(), 'x');
  ASSERT_TRUE(tier_->Read(key_, map_, 0, 0, again.size(), again.data()).value_or(false));
  EXPECT_EQ(again, bytes_);
}

TEST_F(ChunkFetcherTest, SequentialReadsFetchAhead) {
  MakeContent(8 * kChunk, 5);
  auto fetcher = NewFetcher(&client_, /*readahead=*/2);
  std::string out(kChunk / 4, 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  ASSERT_TRUE(Eventually([&] {
    return tier_->Contains(key_, map_, 1) && tier_->Contains(key_, map_, 2);
  }));
  EXPECT_FALSE(tier_->Contains(key_, map_, 3));
  // Read the whole file sequentially: every chunk is fetched exactly once,
  // most of them ahead of the reader.
  for (uint64_t off = out.size(); off < bytes_.size(); off += out.size()) {
    absl::StatusOr<size_t> n = fetcher->Read(key_, map_, off, out.size(), out.data());
    ASSERT_OK(n);
    ASSERT_EQ(out, bytes_.substr(off, out.size())) << off;
  }
  fetcher.reset();  // Waits for readahead in flight.
  EXPECT_EQ(client_.Calls("GetChunk"), 8u);
  EXPECT_TRUE(tier_->Complete(key_, map_));
}

TEST_F(ChunkFetcherTest, RandomReadsDoNotFetchAhead) {
  MakeContent(8 * kChunk, 6);
  auto fetcher = NewFetcher(&client_, 2);
  std::string out(100, 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 5 * kChunk + 7, out.size(), out.data()));
  ASSERT_OK(fetcher->Read(key_, map_, 2 * kChunk + 3, out.size(), out.data()));
  fetcher.reset();
  EXPECT_EQ(client_.Calls("GetChunk"), 2u);
  EXPECT_EQ(out, bytes_.substr(2 * kChunk + 3, 100));
}

TEST_F(ChunkFetcherTest, PrefetchWarmsTheTier) {
  MakeContent(5 * kChunk, 7);
  auto fetcher = NewFetcher(&client_, 0);
  fetcher->Prefetch(key_, map_, 0, map_.chunks.size());
  ASSERT_TRUE(Eventually([&] { return tier_->Complete(key_, map_); }));
  std::string out(bytes_.size(), 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  EXPECT_EQ(out, bytes_);
  EXPECT_EQ(client_.Calls("GetChunk"), 5u);
  EXPECT_EQ(fetcher->Stats().prefetches, 5u);
}

TEST_F(ChunkFetcherTest, HolesAndShortChunksReadZerosWithoutFetching) {
  // Chunk 0: a hole. Chunk 1: 100 stored bytes behind a whole-chunk ref.
  // Chunk 2: a hole at the end.
  const std::string short_bytes = RandomBytes(100, 8);
  ASSERT_OK(client_.PutChunks(scope_, {short_bytes}));
  map_ = ChunkMap{1, 3 * kChunk, kChunk,
                  {ChunkRef{std::nullopt, kChunk}, ChunkRef{ChunkId::Of(short_bytes), kChunk},
                   ChunkRef{std::nullopt, kChunk}}};
  auto fetcher = NewFetcher(&client_, 4);
  std::string out(3 * kChunk, 'x');
  absl::StatusOr<size_t> n = fetcher->Read(key_, map_, 0, out.size(), out.data());
  ASSERT_OK(n);
  EXPECT_EQ(*n, out.size());
  std::string want(3 * kChunk, '\0');
  want.replace(kChunk, 100, short_bytes);
  EXPECT_EQ(out, want);
  fetcher.reset();
  EXPECT_EQ(client_.Calls("GetChunk"), 1u);
  // A read of the hole alone fetches nothing.
  auto again = NewFetcher(&client_, 0);
  ASSERT_OK(again->Read(key_, map_, 2 * kChunk, 100, out.data()));
  EXPECT_EQ(client_.Calls("GetChunk"), 1u);
}

TEST_F(ChunkFetcherTest, OutageErrorsReachTheReaderAndNothingSticks) {
  MakeContent(kChunk, 9);
  auto fetcher = NewFetcher(&client_, 0);
  client_.FailNext("GetChunk", absl::UnavailableError("server unreachable"));
  std::string out(100, 'x');
  EXPECT_CODE(fetcher->Read(key_, map_, 0, out.size(), out.data()),
              absl::StatusCode::kUnavailable);
  EXPECT_FALSE(tier_->Contains(key_, map_, 0));
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  EXPECT_EQ(out, bytes_.substr(0, 100));
}

TEST_F(ChunkFetcherTest, AFullTierStillServesTheBytes) {
  MakeContent(2 * kChunk, 10);
  tier_ = NewMemoryTier(kChunk / 2);  // Holds nothing.
  auto fetcher = NewFetcher(&client_, 0);
  std::string out(bytes_.size(), 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  EXPECT_EQ(out, bytes_);
}

TEST_F(ChunkFetcherTest, CorruptTierChunkAfterRestartIsFetchedAgain) {
  ::traincache::testing::TempDir dir;
  DiskTierOptions options;
  options.dir = dir.path() + "/tier";
  MakeContent(2 * kChunk, 11);
  {
    absl::StatusOr<std::unique_ptr<NodeTier>> disk = OpenDiskTier(options);
    ASSERT_OK(disk);
    tier_ = std::move(*disk);
    auto fetcher = NewFetcher(&client_, 0);
    std::string out(bytes_.size(), 'x');
    ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  }
  const std::string image = tier_->ImagePath(key_);
  tier_.reset();
  {
    FILE* f = fopen(image.c_str(), "r+");
    ASSERT_NE(f, nullptr);
    fseek(f, kChunk + 9, SEEK_SET);
    fputc(bytes_[kChunk + 9] ^ 0x5a, f);
    fclose(f);
  }
  absl::StatusOr<std::unique_ptr<NodeTier>> disk = OpenDiskTier(options);
  ASSERT_OK(disk);
  tier_ = std::move(*disk);
  auto fetcher = NewFetcher(&client_, 0);
  const uint64_t calls = client_.Calls("GetChunk");
  std::string out(bytes_.size(), 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));
  EXPECT_EQ(out, bytes_);
  EXPECT_EQ(client_.Calls("GetChunk"), calls + 1);  // Only the corrupt chunk.
  EXPECT_EQ(tier_->Stats().corrupt_chunks, 1u);
}

TEST_F(ChunkFetcherTest, ReadersFollowingReadaheadCopyFromMemory) {
  MakeContent(8 * kChunk, 13);
  auto fetcher = NewFetcher(&client_, /*readahead=*/4);
  ReadWholeChunk(*fetcher, 0);
  ASSERT_TRUE(Eventually([&] { return client_.Calls("GetChunk") >= 5; }));
  ASSERT_TRUE(Eventually([&] { return tier_->Contains(key_, map_, 4); }));
  const uint64_t tier_hits = tier_->Stats().hits;
  for (uint64_t i = 1; i < 8; ++i) ReadWholeChunk(*fetcher, i);
  // Chunks 1-4 come from memory (or a flight), not the tier. Chunks 5-7 do
  // too unless the reader came after their tier store and their memory was
  // reused meanwhile (a slow machine): then a tier hit each, at most.
  EXPECT_LE(tier_->Stats().hits, tier_hits + 3);
  EXPECT_GE(fetcher->Stats().memory_hits, 4u);  // Chunks 1-4 at least were there in time.
  fetcher.reset();
  EXPECT_EQ(client_.Calls("GetChunk"), 8u);
  EXPECT_TRUE(tier_->Complete(key_, map_));  // Stored as well.
}

TEST_F(ChunkFetcherTest, ReadaheadWindowDoublesWhileTheReaderStaysSequential) {
  MakeContent(32 * kChunk, 14);
  auto fetcher = std::make_unique<ChunkFetcher>(
      &client_, tier_.get(),
      ChunkFetcher::Options{.threads = 4, .readahead_chunks = 1, .max_readahead_chunks = 8});
  // Windows: 1 (chunk 1), 2 (to 3), 4 (to 6), then 8 (to 11), the cap.
  for (uint64_t i = 0; i < 4; ++i) ReadWholeChunk(*fetcher, i);
  ASSERT_TRUE(Eventually([&] { return tier_->Contains(key_, map_, 11); }));
  fetcher.reset();
  EXPECT_EQ(client_.Calls("GetChunk"), 12u);
  EXPECT_EQ(tier_->Contains(key_, map_, 12), false);
}

TEST_F(ChunkFetcherTest, ReadaheadAndMemoryStayWithinTheMemoryBudget) {
  MakeContent(24 * kChunk, 15);
  auto fetcher = std::make_unique<ChunkFetcher>(
      &client_, tier_.get(),
      ChunkFetcher::Options{.threads = 4,
                            .readahead_chunks = 1,
                            .max_readahead_chunks = 16,
                            .memory_bytes = 4 * kChunk});
  // Half of 4 chunks for the one reader: a window of 2, however long it reads.
  for (uint64_t i = 0; i < 8; ++i) {
    ReadWholeChunk(*fetcher, i);
    EXPECT_LE(fetcher->Stats().memory_bytes, 4 * kChunk);
  }
  fetcher.reset();  // Drops readahead still queued.
  EXPECT_LE(client_.Calls("GetChunk"), 10u);  // Chunks 0-9 at most: 0-7, then a window of 2.
  EXPECT_GE(client_.Calls("GetChunk"), 8u);
}

TEST_F(ChunkFetcherTest, BadBytesAreNotKeptInMemory) {
  MakeContent(kChunk, 16);
  CorruptingClient corrupting(&client_);
  auto fetcher = NewFetcher(&corrupting, 0);
  std::string out(100, 'x');
  EXPECT_CODE(fetcher->Read(key_, map_, 0, out.size(), out.data()), absl::StatusCode::kDataLoss);
  EXPECT_CODE(fetcher->Read(key_, map_, 0, out.size(), out.data()), absl::StatusCode::kDataLoss);
  EXPECT_EQ(fetcher->Stats().memory_bytes, 0u);
  EXPECT_EQ(fetcher->Stats().memory_hits, 0u);
  EXPECT_EQ(tier_->Stats().used_bytes, 0u);
}

TEST_F(ChunkFetcherTest, DropScopeForgetsTheChunksInMemory) {
  MakeContent(2 * kChunk, 17);
  auto fetcher = NewFetcher(&client_, 0);
  ReadWholeChunk(*fetcher, 0);
  EXPECT_EQ(fetcher->Stats().memory_bytes, kChunk);
  fetcher->DropScope(S("project:other"));
  EXPECT_EQ(fetcher->Stats().memory_bytes, kChunk);
  fetcher->DropScope(scope_);
  EXPECT_EQ(fetcher->Stats().memory_bytes, 0u);
  const uint64_t tier_hits = tier_->Stats().hits;
  ReadWholeChunk(*fetcher, 0);
  EXPECT_EQ(tier_->Stats().hits, tier_hits + 1);
}

TEST_F(ChunkFetcherTest, WithoutMemoryChunksAreStoredBeforeReadersGetThem) {
  MakeContent(4 * kChunk, 18);
  auto fetcher = std::make_unique<ChunkFetcher>(
      &client_, tier_.get(), ChunkFetcher::Options{.threads = 2, .memory_bytes = 0});
  for (uint64_t i = 0; i < 4; ++i) {
    ReadWholeChunk(*fetcher, i);
    EXPECT_TRUE(tier_->Contains(key_, map_, i));
  }
  fetcher.reset();
  EXPECT_EQ(client_.Calls("GetChunk"), 4u);
}

TEST_F(ChunkFetcherTest, DestroyingTheFetcherDropsQueuedReadahead) {
  MakeContent(20 * kChunk, 19);
  client_.SetHook([](std::string_view op) {
    if (op == "GetChunk") std::this_thread::sleep_for(std::chrono::milliseconds(100));
  });
  auto fetcher = std::make_unique<ChunkFetcher>(
      &client_, tier_.get(),
      ChunkFetcher::Options{.threads = 1, .readahead_chunks = 16, .max_readahead_chunks = 16});
  std::string out(100, 'x');
  ASSERT_OK(fetcher->Read(key_, map_, 0, out.size(), out.data()));  // Queues 16 readaheads.
  const auto start = std::chrono::steady_clock::now();
  fetcher.reset();
  const auto took = std::chrono::steady_clock::now() - start;
  client_.SetHook(nullptr);
  // The one fetch running finishes; the queued ones never start.
  EXPECT_LE(client_.Calls("GetChunk"), 3u);
  EXPECT_LT(took, std::chrono::milliseconds(1000));
}

}  // namespace
}  // namespace traincache::node
