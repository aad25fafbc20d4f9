// The ChunkStore conformance suite, run over every implementation: whatever
// the contract in chunk_store.h promises, each store must do.

#include "traincache/chunk_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/chunk/test_util.h"

namespace traincache {
namespace {

using ::traincache::testing::RandomBytes;
using ::traincache::testing::S;
using ::traincache::testing::TempDir;

enum class StoreKind { kMemory, kDisk };

class ChunkStoreConformance : public ::testing::TestWithParam<StoreKind> {
 protected:
  void SetUp() override {
    if (GetParam() == StoreKind::kDisk) {
      dir_.emplace();
      absl::StatusOr<std::unique_ptr<ChunkStore>> store =
          OpenDiskChunkStore(dir_->path() + "/chunks");
      ASSERT_OK(store);
      store_ = std::move(*store);
    } else {
      store_ = NewMemoryChunkStore();
    }
  }
  void TearDown() override { store_.reset(); }

  // Puts `data` under its own id and returns the id.
  ChunkId PutOk(const Scope& scope, const std::string& data) {
    ChunkId id = ChunkId::Of(data);
    EXPECT_OK(store_->Put(scope, id, data));
    return id;
  }

  std::vector<ChunkInfo> ListAll(const Scope& scope) {
    std::vector<ChunkInfo> out;
    EXPECT_OK(store_->List(scope, [&](const ChunkInfo& info) {
      out.push_back(info);
      return absl::OkStatus();
    }));
    return out;
  }

  std::optional<TempDir> dir_;
  std::unique_ptr<ChunkStore> store_;
  const Scope project_ = S("project:p1");
};

TEST_P(ChunkStoreConformance, PutGetRoundTrip) {
  const std::string data = "hello, chunk";
  ChunkId id = PutOk(project_, data);
  absl::StatusOr<std::string> got = store_->Get(project_, id);
  ASSERT_OK(got);
  EXPECT_EQ(*got, data);
  absl::StatusOr<uint64_t> size = store_->Stat(project_, id);
  ASSERT_OK(size);
  EXPECT_EQ(*size, data.size());
}

TEST_P(ChunkStoreConformance, GetUnverifiedReturnsTheWholeChunk) {
  const std::string data = RandomBytes(kDefaultChunkSize, 7);
  ChunkId id = PutOk(project_, data);
  absl::StatusOr<std::string> got = store_->GetUnverified(project_, id);
  ASSERT_OK(got);
  EXPECT_EQ(*got, data);
  EXPECT_EQ(store_->GetUnverified(project_, ChunkId::Of("never stored")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(ChunkStoreConformance, FourMiBChunk) {
  const std::string data = RandomBytes(kDefaultChunkSize, 1);
  ChunkId id = PutOk(project_, data);
  absl::StatusOr<std::string> got = store_->Get(project_, id);
  ASSERT_OK(got);
  EXPECT_TRUE(*got == data);  // Not EXPECT_EQ: 4 MiB in a failure message.
  EXPECT_EQ(*store_->Stat(project_, id), kDefaultChunkSize);
}

TEST_P(ChunkStoreConformance, MaxSizeChunkAcceptedOneMoreRejected) {
  std::string data = RandomBytes(kMaxChunkSize, 2);
  ChunkId id = PutOk(project_, data);
  EXPECT_EQ(*store_->Stat(project_, id), kMaxChunkSize);

  data.push_back('x');
  ChunkId too_big = ChunkId::Of(data);
  EXPECT_CODE(store_->Put(project_, too_big, data), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(store_->Stat(project_, too_big), absl::StatusCode::kNotFound);
}

TEST_P(ChunkStoreConformance, EmptyChunk) {
  ChunkId id = PutOk(project_, "");
  absl::StatusOr<std::string> got = store_->Get(project_, id);
  ASSERT_OK(got);
  EXPECT_EQ(*got, "");
  EXPECT_EQ(*store_->Stat(project_, id), 0u);
  EXPECT_EQ(*store_->Get(project_, id, 0, 10), "");
  EXPECT_CODE(store_->Get(project_, id, 1, 0), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(ListAll(project_).size(), 1u);
}

TEST_P(ChunkStoreConformance, Ranges) {
  const std::string data = RandomBytes(1000, 3);
  ChunkId id = PutOk(project_, data);
  struct Case {
    uint64_t offset, length;
    std::string want;
  } cases[] = {
      {0, 0, data},                                     // Length 0: to the end.
      {0, 1000, data},                                  // Exactly the chunk.
      {10, 20, data.substr(10, 20)},                    // Inside.
      {990, 100, data.substr(990)},                     // Clipped at the end.
      {500, 0, data.substr(500)},                       // From an offset to the end.
      {0, std::numeric_limits<uint64_t>::max(), data},  // No overflow.
      {999, std::numeric_limits<uint64_t>::max(), data.substr(999)},
      {1000, 0, ""},  // At the end: empty.
      {1000, 5, ""},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> got = store_->Get(project_, id, c.offset, c.length);
    ASSERT_OK(got);
    EXPECT_TRUE(*got == c.want) << "offset " << c.offset << " length " << c.length << ": got "
                                << got->size() << " bytes";
  }
  EXPECT_CODE(store_->Get(project_, id, 1001, 0), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(store_->Get(project_, id, std::numeric_limits<uint64_t>::max(), 1),
              absl::StatusCode::kInvalidArgument);
}

TEST_P(ChunkStoreConformance, IdempotentPut) {
  const std::string data = RandomBytes(70000, 4);
  ChunkId id = PutOk(project_, data);
  EXPECT_OK(store_->Put(project_, id, data));
  EXPECT_OK(store_->Put(project_, id, data));
  EXPECT_EQ(*store_->Get(project_, id), data);
  std::vector<ChunkInfo> all = ListAll(project_);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].id, id);
  EXPECT_EQ(all[0].size, data.size());
}

// A repeated Put counts as a fresh upload for the collector's grace period.
TEST_P(ChunkStoreConformance, RepeatedPutRefreshesMtime) {
  const std::string data = "refresh me";
  ChunkId id = PutOk(project_, data);
  Timespec first = ListAll(project_).at(0).mtime;
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_OK(store_->Put(project_, id, data));
  Timespec second = ListAll(project_).at(0).mtime;
  EXPECT_LT(first, second);
}

TEST_P(ChunkStoreConformance, HashMismatchChangesNothing) {
  const std::string a = "content A";
  const std::string b = "content B";
  ChunkId id_a = ChunkId::Of(a);
  ChunkId id_b = ChunkId::Of(b);

  EXPECT_CODE(store_->Put(project_, id_a, b), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(store_->Stat(project_, id_a), absl::StatusCode::kNotFound);
  EXPECT_CODE(store_->Stat(project_, id_b), absl::StatusCode::kNotFound);
  EXPECT_TRUE(ListAll(project_).empty());

  // Nor does it touch a stored chunk of that id.
  PutOk(project_, a);
  EXPECT_CODE(store_->Put(project_, id_a, b), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(store_->Put(project_, id_a, ""), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store_->Get(project_, id_a), a);
  EXPECT_EQ(ListAll(project_).size(), 1u);
}

TEST_P(ChunkStoreConformance, MissingChunk) {
  ChunkId id = ChunkId::Of("never stored");
  EXPECT_CODE(store_->Get(project_, id), absl::StatusCode::kNotFound);
  EXPECT_CODE(store_->Get(project_, id, 5, 5), absl::StatusCode::kNotFound);
  EXPECT_CODE(store_->Stat(project_, id), absl::StatusCode::kNotFound);
  PutOk(project_, "something else");
  EXPECT_CODE(store_->Get(project_, id), absl::StatusCode::kNotFound);
}

TEST_P(ChunkStoreConformance, Delete) {
  ChunkId keep = PutOk(project_, "keep");
  ChunkId drop = PutOk(project_, "drop");
  EXPECT_OK(store_->Delete(project_, drop));
  EXPECT_CODE(store_->Stat(project_, drop), absl::StatusCode::kNotFound);
  EXPECT_CODE(store_->Get(project_, drop), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->Get(project_, keep), "keep");
  // Absent: still OK, in a known scope and in an unknown one.
  EXPECT_OK(store_->Delete(project_, drop));
  EXPECT_OK(store_->Delete(S("team:nobody"), drop));
  // And it can come back.
  PutOk(project_, "drop");
  EXPECT_EQ(*store_->Get(project_, drop), "drop");
}

TEST_P(ChunkStoreConformance, DeleteScope) {
  const Scope other = S("project:p2");
  std::vector<ChunkId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(PutOk(project_, RandomBytes(100 + i, 10 + i)));
  ChunkId other_id = PutOk(other, "other scope");

  EXPECT_OK(store_->DeleteScope(project_));
  EXPECT_TRUE(ListAll(project_).empty());
  for (const ChunkId& id : ids) {
    EXPECT_CODE(store_->Get(project_, id), absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(*store_->Get(other, other_id), "other scope");

  EXPECT_OK(store_->DeleteScope(project_));  // Again: nothing there, OK.
  EXPECT_OK(store_->DeleteScope(S("team:never")));

  // The scope can be used again afterwards.
  ChunkId again = PutOk(project_, "again");
  EXPECT_EQ(*store_->Get(project_, again), "again");
  EXPECT_EQ(ListAll(project_).size(), 1u);
}

TEST_P(ChunkStoreConformance, List) {
  Timespec before = Now();
  before.sec -= 2;  // Some file systems keep coarser timestamps than the clock.
  std::set<ChunkId> want;
  for (int i = 0; i < 50; ++i) want.insert(PutOk(project_, RandomBytes(i, 100 + i)));
  Timespec after = Now();
  after.sec += 2;

  std::set<ChunkId> got;
  for (const ChunkInfo& info : ListAll(project_)) {
    EXPECT_TRUE(got.insert(info.id).second) << "listed twice: " << info.id.ToHex();
    EXPECT_EQ(info.size, *store_->Stat(project_, info.id));
    EXPECT_LE(before, info.mtime);
    EXPECT_LE(info.mtime, after);
  }
  EXPECT_EQ(got, want);
}

TEST_P(ChunkStoreConformance, ListEmptyAndUnknownScopes) {
  int calls = 0;
  auto count = [&](const ChunkInfo&) {
    ++calls;
    return absl::OkStatus();
  };
  EXPECT_OK(store_->List(S("team:unknown"), count));
  ChunkId id = PutOk(project_, "x");
  ASSERT_OK(store_->Delete(project_, id));
  EXPECT_OK(store_->List(project_, count));
  EXPECT_EQ(calls, 0);
}

TEST_P(ChunkStoreConformance, ListStopsOnCallbackError) {
  for (int i = 0; i < 10; ++i) PutOk(project_, RandomBytes(10, 200 + i));
  int calls = 0;
  absl::Status status = store_->List(project_, [&](const ChunkInfo&) {
    ++calls;
    return absl::CancelledError("enough");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 1);
}

// The collector lists first and deletes after, but other callers may delete
// from inside the callback.
TEST_P(ChunkStoreConformance, ListCallbackMayDelete) {
  for (int i = 0; i < 20; ++i) PutOk(project_, RandomBytes(10, 300 + i));
  int calls = 0;
  EXPECT_OK(store_->List(project_, [&](const ChunkInfo& info) {
    ++calls;
    return store_->Delete(project_, info.id);
  }));
  EXPECT_EQ(calls, 20);
  EXPECT_TRUE(ListAll(project_).empty());
}

TEST_P(ChunkStoreConformance, ScopesAreIsolated) {
  const Scope team = S("team:p1");  // Same id, other kind.
  const Scope project2 = S("project:p2");
  const std::string data = "the same bytes in three scopes";
  ChunkId id = ChunkId::Of(data);

  ASSERT_OK(store_->Put(project_, id, data));
  // Stored in one scope only: invisible to the others.
  EXPECT_CODE(store_->Get(team, id), absl::StatusCode::kNotFound);
  EXPECT_CODE(store_->Stat(project2, id), absl::StatusCode::kNotFound);
  EXPECT_TRUE(ListAll(team).empty());

  ASSERT_OK(store_->Put(team, id, data));
  ASSERT_OK(store_->Put(project2, id, data));
  EXPECT_OK(store_->Delete(project_, id));
  EXPECT_CODE(store_->Get(project_, id), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->Get(team, id), data);
  EXPECT_EQ(*store_->Get(project2, id), data);

  EXPECT_OK(store_->DeleteScope(team));
  EXPECT_CODE(store_->Get(team, id), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->Get(project2, id), data);
  EXPECT_EQ(ListAll(project2).size(), 1u);
}

TEST_P(ChunkStoreConformance, ConcurrentPutsOfSameChunk) {
  const std::string data = RandomBytes(1 << 20, 5);
  const ChunkId id = ChunkId::Of(data);
  constexpr int kThreads = 8;
  std::atomic<int> ready{0};
  std::vector<absl::Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // Start together.
      results[t] = store_->Put(project_, id, data);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const absl::Status& status : results) EXPECT_OK(status);
  absl::StatusOr<std::string> got = store_->Get(project_, id);
  ASSERT_OK(got);
  EXPECT_TRUE(*got == data);
  EXPECT_EQ(ListAll(project_).size(), 1u);
}

// Distinct chunks from many threads into a new scope: races on creating the
// same directories.
TEST_P(ChunkStoreConformance, ConcurrentPutsOfDistinctChunks) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  const Scope fresh = S("team:fresh");
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      for (int i = 0; i < kPerThread; ++i) {
        std::string data = RandomBytes(64, 1000 * t + i);
        if (!store_->Put(fresh, ChunkId::Of(data), data).ok()) failures.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ListAll(fresh).size(), static_cast<size_t>(kThreads * kPerThread));
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      std::string data = RandomBytes(64, 1000 * t + i);
      EXPECT_EQ(*store_->Get(fresh, ChunkId::Of(data)), data);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllStores, ChunkStoreConformance,
                         ::testing::Values(StoreKind::kMemory, StoreKind::kDisk),
                         [](const ::testing::TestParamInfo<StoreKind>& info) {
                           return info.param == StoreKind::kMemory ? "Memory" : "Disk";
                         });

}  // namespace
}  // namespace traincache
