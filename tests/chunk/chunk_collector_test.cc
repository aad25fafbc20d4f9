// CollectGarbage over the in-memory chunk store (and the disk store where
// file times matter) with a fake metadata store.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <time.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/chunk/fake_metadata_store.h"
#include "tests/chunk/test_util.h"
#include "traincache/chunk_store.h"

namespace traincache {
namespace {

using ::traincache::testing::FakeMetadataStore;
using ::traincache::testing::RandomBytes;
using ::traincache::testing::S;
using ::traincache::testing::TempDir;

constexpr int64_t kHour = 3600;

class CollectorTest : public ::testing::Test {
 protected:
  ChunkId Store(const Scope& scope, const std::string& data) {
    ChunkId id = ChunkId::Of(data);
    EXPECT_OK(chunks_->Put(scope, id, data));
    return id;
  }
  bool Has(const Scope& scope, const ChunkId& id) { return chunks_->Stat(scope, id).ok(); }

  FakeMetadataStore meta_;
  std::unique_ptr<ChunkStore> chunks_ = NewMemoryChunkStore();
  const Scope scope_ = S("project:gc");
};

TEST_F(CollectorTest, DeletesGarbageStillUnreferenced) {
  ChunkId dead = Store(scope_, "dead");
  ChunkId revived = Store(scope_, "revived");
  ChunkId live = Store(scope_, "live");
  meta_.SetRefCount(scope_, dead, 1);
  meta_.SetRefCount(scope_, dead, 0);  // On the garbage list, count 0.
  meta_.SetRefCount(scope_, revived, 1);
  meta_.SetRefCount(scope_, revived, 0);
  meta_.SetRefCount(scope_, revived, 2);  // On the list, but referenced again.
  meta_.SetRefCount(scope_, live, 1);

  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope_, meta_, *chunks_, kHour);
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 1u);
  EXPECT_FALSE(Has(scope_, dead));
  EXPECT_TRUE(Has(scope_, revived));
  EXPECT_TRUE(Has(scope_, live));
  EXPECT_TRUE(meta_.Garbage(scope_).empty());  // Both forgotten.
}

TEST_F(CollectorTest, GarbageNotStoredIsForgottenNotCounted) {
  ChunkId ghost = ChunkId::Of("never uploaded");
  meta_.AddGarbage(scope_, ghost);
  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope_, meta_, *chunks_, kHour);
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 0u);
  EXPECT_TRUE(meta_.Garbage(scope_).empty());
}

TEST_F(CollectorTest, GarbageListIsReadInPages) {
  constexpr int kChunks = 2500;  // More than two pages.
  for (int i = 0; i < kChunks; ++i) {
    ChunkId id = Store(scope_, RandomBytes(16, i));
    meta_.AddGarbage(scope_, id);
  }
  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope_, meta_, *chunks_, kHour);
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, static_cast<uint64_t>(kChunks));
  EXPECT_TRUE(meta_.Garbage(scope_).empty());
  EXPECT_GE(meta_.list_garbage_calls(), 3);
  int left = 0;
  ASSERT_OK(chunks_->List(scope_, [&](const ChunkInfo&) {
    ++left;
    return absl::OkStatus();
  }));
  EXPECT_EQ(left, 0);
}

// A metadata store that does not drop forgotten ids must not hang the
// collector.
TEST_F(CollectorTest, StuckGarbageListDoesNotLoop) {
  for (int i = 0; i < 1500; ++i) meta_.AddGarbage(scope_, Store(scope_, RandomBytes(8, i)));
  meta_.IgnoreForgetGarbage();
  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope_, meta_, *chunks_, kHour);
  ASSERT_OK(deleted);
  // It deleted a first page, saw the list did not advance, and stopped; the
  // rest waits for the sweep once it is older than the grace period.
  EXPECT_GT(*deleted, 0u);
  EXPECT_LE(meta_.list_garbage_calls(), 3);
}

TEST_F(CollectorTest, SweepRespectsGracePeriod) {
  ChunkId orphan = Store(scope_, "uploaded, never committed");
  ChunkId referenced = Store(scope_, "committed");
  meta_.SetRefCount(scope_, referenced, 1);

  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope_, meta_, *chunks_, kHour);
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 0u);  // Young: its commit may still come.
  EXPECT_TRUE(Has(scope_, orphan));

  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  deleted = CollectGarbage(scope_, meta_, *chunks_, 0);
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 1u);
  EXPECT_FALSE(Has(scope_, orphan));
  EXPECT_TRUE(Has(scope_, referenced));  // Old but referenced.
}

TEST_F(CollectorTest, OnlyTouchesItsScope) {
  const Scope other = S("team:gc");
  const std::string data = "same bytes";
  ChunkId id = Store(scope_, data);
  Store(other, data);
  meta_.AddGarbage(scope_, id);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));

  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope_, meta_, *chunks_, 0);
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 1u);
  EXPECT_FALSE(Has(scope_, id));
  EXPECT_TRUE(Has(other, id));
}

TEST_F(CollectorTest, MetadataErrorsStopTheCollector) {
  ChunkId id = Store(scope_, "kept");
  meta_.AddGarbage(scope_, id);
  meta_.FailRefCountWith(absl::InternalError("rocksdb is unhappy"));
  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope_, meta_, *chunks_, 0);
  EXPECT_EQ(deleted.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(Has(scope_, id));                 // Unknown count: never deleted.
  EXPECT_EQ(meta_.Garbage(scope_).size(), 1u);  // Nor forgotten.
}

TEST_F(CollectorTest, NegativeGraceIsInvalid) {
  EXPECT_EQ(CollectGarbage(scope_, meta_, *chunks_, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// With the disk store the age is the chunk file's mtime.
TEST(CollectorDiskTest, SweepUsesFileMtime) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ChunkStore>> store = OpenDiskChunkStore(dir.path());
  ASSERT_OK(store);
  ChunkStore& chunks = **store;
  FakeMetadataStore meta;
  const Scope scope = S("project:disk-gc");

  const std::string old_data = "old upload";
  const std::string new_data = "new upload";
  ASSERT_OK(chunks.Put(scope, ChunkId::Of(old_data), old_data));
  ASSERT_OK(chunks.Put(scope, ChunkId::Of(new_data), new_data));
  std::string hex = ChunkId::Of(old_data).ToHex();
  std::string path =
      dir.path() + "/project/disk-gc/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex;
  struct timespec two_hours_ago[2];
  clock_gettime(CLOCK_REALTIME, &two_hours_ago[0]);
  two_hours_ago[0].tv_sec -= 2 * kHour;
  two_hours_ago[1] = two_hours_ago[0];
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), two_hours_ago, 0), 0);

  absl::StatusOr<uint64_t> deleted = CollectGarbage(scope, meta, chunks, kHour);
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 1u);
  EXPECT_EQ(chunks.Stat(scope, ChunkId::Of(old_data)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_OK(chunks.Stat(scope, ChunkId::Of(new_data)));
}

}  // namespace
}  // namespace traincache
