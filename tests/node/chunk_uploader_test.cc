// ChunkUploader over the fake server: what a ticket gives back, the byte
// budget, cancellation, and a staging file changing under a background task.

#include "node/chunk_uploader.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "testing/fake_cluster_client.h"
#include "testing/temp_dir.h"

namespace traincache::node {
namespace {

using ::traincache::testing::FakeClusterClient;
using ::traincache::testing::TempDir;

constexpr uint32_t kChunk = 64 << 10;

std::string Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Holds every PutChunks call until opened.
class Gate {
 public:
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void Open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void Pass() {
    std::unique_lock lock(mu_);
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
    --waiting_;
  }
  // Waits until `n` calls are held (false after 10 s).
  bool WaitForHeld(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return waiting_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int waiting_ = 0;
};

class ChunkUploaderTest : public ::testing::Test {
 protected:
  ChunkUploaderTest() : scope_(*Scope::Parse("project:up")) {
    EXPECT_TRUE(fake_.OpenScope(scope_, /*create=*/true).ok());
    fake_.SetHook([this](std::string_view op) {
      if (op == "PutChunks") gate_.Pass();
    });
  }
  ~ChunkUploaderTest() override { fake_.SetHook(nullptr); }

  // A staging file holding `data`; returns its fd (closed by the test).
  int StagingFile(const std::string& data) {
    const std::string path = dir_.Sub("staging");
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));
    return fd;
  }
  bool Stored(std::string_view bytes) {
    return fake_.chunks().Stat(scope_, ChunkId::Of(bytes)).ok();
  }

  TempDir dir_;
  FakeClusterClient fake_;
  Scope scope_;
  Gate gate_;
};

TEST_F(ChunkUploaderTest, UploadsWhatTheServerLacksAndNamesHolesWithoutSendingThem) {
  ChunkUploader up(scope_, &fake_, {.threads = 2, .budget_bytes = 4 * kChunk});
  const std::string a = Random(kChunk, 1);
  ASSERT_TRUE(fake_.PutChunks(scope_, {a}).ok());  // Already there.
  const std::string b = Random(kChunk, 2);
  const std::string zeros(kChunk, '\0');
  const uint64_t puts = fake_.Calls("PutChunks");

  absl::StatusOr<ChunkUploader::Result> ra = up.Upload(a)->Wait();
  absl::StatusOr<ChunkUploader::Result> rb = up.Upload(b)->Wait();
  absl::StatusOr<ChunkUploader::Result> rz = up.Upload(zeros)->Wait();
  ASSERT_TRUE(ra.ok() && rb.ok() && rz.ok());
  EXPECT_EQ(ra->ref.id, ChunkId::Of(a));
  EXPECT_FALSE(ra->uploaded);
  EXPECT_EQ(rb->ref.id, ChunkId::Of(b));
  EXPECT_EQ(rb->ref.length, kChunk);
  EXPECT_TRUE(rb->uploaded);
  EXPECT_FALSE(rz->ref.id.has_value());
  EXPECT_EQ(rz->ref.length, kChunk);
  EXPECT_FALSE(rz->uploaded);
  EXPECT_EQ(fake_.Calls("PutChunks"), puts + 1);  // b only.
  EXPECT_TRUE(Stored(b));
  EXPECT_EQ(up.Stats().uploaded_chunks, 1u);
  EXPECT_EQ(up.Stats().background_uploaded_chunks, 0u);
  EXPECT_EQ(up.Stats().held_bytes, 0u);
}

// A commit keeps the tickets of all its chunks until it has collected them:
// a finished ticket must not keep its chunk's bytes.
TEST_F(ChunkUploaderTest, FinishedTicketsHoldNoBytes) {
  ChunkUploader up(scope_, &fake_, {.threads = 2, .budget_bytes = 4 << 20});
  const size_t before = mallinfo2().uordblks;
  std::vector<std::shared_ptr<ChunkUploader::Ticket>> tickets;
  for (int i = 0; i < 32; ++i) tickets.push_back(up.Upload(Random(1 << 20, 100 + i)));
  for (auto& t : tickets) ASSERT_TRUE(t->Wait().ok());
  // 32 MiB went through; what stays (the fake's copies aside) is small.
  const size_t stored = 32u << 20;
  EXPECT_LT(mallinfo2().uordblks, before + stored + (4u << 20));
  tickets.clear();
}

TEST_F(ChunkUploaderTest, BackgroundTasksReadTheStagingFileWhenTheyRun) {
  ChunkUploader up(scope_, &fake_, {.threads = 1, .budget_bytes = 8 * kChunk});
  const std::string data = Random(3 * kChunk, 3);
  int fd = StagingFile(data);
  auto t = up.TryUploadFromFile(fd, kChunk, kChunk);
  ASSERT_NE(t, nullptr);
  close(fd);  // The task has its own descriptor.
  absl::StatusOr<ChunkUploader::Result> r = t->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->uploaded);
  EXPECT_EQ(r->ref.id, ChunkId::Of(std::string_view(data).substr(kChunk, kChunk)));
  EXPECT_TRUE(t->background());
  EXPECT_EQ(up.Stats().background_uploaded_chunks, 1u);
  EXPECT_EQ(up.Stats().background_uploaded_bytes, kChunk);

  // A range the file no longer has (a truncate cut it) is an error, never a
  // ref of made-up bytes.
  fd = StagingFile(data.substr(0, kChunk + 10));
  t = up.TryUploadFromFile(fd, kChunk, kChunk);
  close(fd);
  ASSERT_NE(t, nullptr);
  EXPECT_FALSE(t->Wait().ok());
}

TEST_F(ChunkUploaderTest, TheBudgetBoundsTheBytesHeldAndBackgroundWorkNeverWaits) {
  ChunkUploader up(scope_, &fake_, {.threads = 2, .budget_bytes = 3 * kChunk});
  const std::string data = Random(10 * kChunk, 4);
  const int fd = StagingFile(data);
  gate_.Close();
  std::vector<std::shared_ptr<ChunkUploader::Ticket>> tickets;
  int refused = 0;
  for (int i = 0; i < 10; ++i) {
    auto t = up.TryUploadFromFile(fd, i * kChunk, kChunk);  // Returns at once either way.
    if (t) {
      tickets.push_back(t);
    } else {
      ++refused;
    }
  }
  EXPECT_EQ(tickets.size(), 3u);
  EXPECT_EQ(refused, 7);
  EXPECT_EQ(up.Stats().background_refused, 7u);
  ASSERT_TRUE(gate_.WaitForHeld(2));  // Two threads, both in PutChunks.
  EXPECT_EQ(up.Stats().held_bytes, 3 * kChunk);

  // A commit's chunk waits for room (it is not refused).
  std::atomic<bool> admitted{false};
  std::shared_ptr<ChunkUploader::Ticket> commit_ticket;
  std::thread committer([&] {
    commit_ticket = up.Upload(Random(2 * kChunk, 5));
    admitted = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(admitted.load());
  EXPECT_EQ(up.TryUploadFromFile(fd, 0, kChunk), nullptr);
  gate_.Open();
  committer.join();
  ASSERT_TRUE(commit_ticket->Wait().ok());
  for (auto& t : tickets) EXPECT_TRUE(t->Wait().ok());
  EXPECT_LE(up.Stats().peak_held_bytes, 3 * kChunk);
  EXPECT_EQ(up.Stats().held_bytes, 0u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(Stored(std::string_view(data).substr(i * kChunk, kChunk)));
  }
  close(fd);
}

TEST_F(ChunkUploaderTest, CancelDropsQueuedTasksAndGivesTheirBudgetBack) {
  ChunkUploader up(scope_, &fake_, {.threads = 1, .budget_bytes = 4 * kChunk});
  const std::string data = Random(4 * kChunk, 6);
  const int fd = StagingFile(data);
  gate_.Close();
  auto running = up.TryUploadFromFile(fd, 0, kChunk);
  ASSERT_TRUE(gate_.WaitForHeld(1));
  auto queued = up.TryUploadFromFile(fd, kChunk, kChunk);
  ASSERT_NE(queued, nullptr);
  EXPECT_EQ(up.Stats().held_bytes, 2 * kChunk);
  queued->Cancel();
  EXPECT_TRUE(absl::IsCancelled(queued->Wait().status()));
  EXPECT_EQ(up.Stats().held_bytes, kChunk);
  running->Cancel();  // Started: it finishes, its result stays readable.
  gate_.Open();
  EXPECT_TRUE(running->Wait().ok());
  EXPECT_FALSE(Stored(std::string_view(data).substr(kChunk, kChunk)));

  // The destructor drops what has not started and waits for the rest.
  gate_.Close();
  std::shared_ptr<ChunkUploader::Ticket> first, second;
  std::thread opener;
  {
    ChunkUploader other(scope_, &fake_, {.threads = 1, .budget_bytes = 4 * kChunk});
    first = other.TryUploadFromFile(fd, 2 * kChunk, kChunk);
    ASSERT_TRUE(gate_.WaitForHeld(1));
    second = other.TryUploadFromFile(fd, 3 * kChunk, kChunk);
    opener = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      gate_.Open();
    });
  }  // ~ChunkUploader: returns once `first` is through the gate.
  opener.join();
  EXPECT_TRUE(first->Wait().ok());
  EXPECT_TRUE(absl::IsCancelled(second->Wait().status()));
  second->Cancel();  // After the uploader is gone: a no-op.
  close(fd);
}

}  // namespace
}  // namespace traincache::node
