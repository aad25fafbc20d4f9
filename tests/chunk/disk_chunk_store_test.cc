// What only the disk store can get wrong: its file layout, corruption on disk,
// crash leftovers, reopening, a full disk and other I/O errors. The contract
// every store shares is in chunk_store_test.cc.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/chunk/test_util.h"
#include "traincache/chunk_store.h"
#include "traincache/status.h"

namespace traincache {
namespace {

namespace fs = std::filesystem;
using ::traincache::testing::CountEntries;
using ::traincache::testing::RandomBytes;
using ::traincache::testing::S;
using ::traincache::testing::TempDir;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

class DiskChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<ChunkStore>> store = OpenDiskChunkStore(root_);
    ASSERT_OK(store);
    store_ = std::move(*store);
  }

  std::string ChunkPath(const Scope& scope, const ChunkId& id) const {
    std::string hex = id.ToHex();
    return root_ + "/" + std::string(scope.kind_name()) + "/" + scope.id() + "/" +
           hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex;
  }

  ChunkId PutOk(const Scope& scope, const std::string& data) {
    ChunkId id = ChunkId::Of(data);
    EXPECT_OK(store_->Put(scope, id, data));
    return id;
  }

  std::set<ChunkId> ListIds(const Scope& scope) {
    std::set<ChunkId> ids;
    EXPECT_OK(store_->List(scope, [&](const ChunkInfo& info) {
      ids.insert(info.id);
      return absl::OkStatus();
    }));
    return ids;
  }

  TempDir dir_;
  const std::string root_ = dir_.path() + "/root";
  std::unique_ptr<ChunkStore> store_;
  const Scope project_ = S("project:p1");
};

TEST_F(DiskChunkStoreTest, FilesLandInShardedPaths) {
  const std::string data = RandomBytes(5000, 1);
  ChunkId id = PutOk(project_, data);
  const std::string hex = id.ToHex();
  const std::string path =
      root_ + "/project/p1/" + hex.substr(0, 2) + "/" + hex.substr(2, 2) + "/" + hex;
  ASSERT_TRUE(fs::is_regular_file(path)) << path;
  EXPECT_TRUE(ReadFile(path) == data);

  const Scope team = S("team:t-1.x");
  ChunkId team_id = PutOk(team, "team bytes");
  std::string team_hex = team_id.ToHex();
  EXPECT_TRUE(fs::is_regular_file(root_ + "/team/t-1.x/" + team_hex.substr(0, 2) + "/" +
                                  team_hex.substr(2, 2) + "/" + team_hex));
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
}

// The block-aligned part goes through O_DIRECT, the tail through the page
// cache: every split reads back whole, in a file of exactly the chunk's size.
TEST_F(DiskChunkStoreTest, ChunksOfEverySizeAroundTheBlockSizeReadBackWhole) {
  const Scope scope = S("project:sizes");
  uint64_t seed = 1;
  for (size_t n : {size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{3 * 4096 + 100},
                   size_t{1} << 20, (size_t{4} << 20) + 1}) {
    const std::string data = RandomBytes(n, seed++);
    const ChunkId id = PutOk(scope, data);
    absl::StatusOr<std::string> back = store_->Get(scope, id);
    ASSERT_OK(back);
    EXPECT_TRUE(*back == data) << n << " bytes";
    EXPECT_EQ(fs::file_size(ChunkPath(scope, id)), n);
  }
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
}

TEST_F(DiskChunkStoreTest, FlippedByteIsDataLoss) {
  // Capture the log: corruption must be logged as an error.
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto saved = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));

  const std::string data = RandomBytes(100000, 2);
  ChunkId id = PutOk(project_, data);
  const std::string path = ChunkPath(project_, id);
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << strerror(errno);
  char byte;
  ASSERT_EQ(pread(fd, &byte, 1, 54321), 1);
  byte ^= 0x01;
  ASSERT_EQ(pwrite(fd, &byte, 1, 54321), 1);
  close(fd);

  absl::StatusOr<std::string> got = store_->Get(project_, id);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find("project:p1"), absl::string_view::npos) << got.status();
  EXPECT_NE(got.status().message().find(id.ToHex()), absl::string_view::npos) << got.status();
  // The corrupt file is moved to quarantine: the chunk reads as missing (never
  // as bytes), and uploading the right bytes again heals it.
  EXPECT_EQ(store_->Get(project_, id, 0, 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stat(project_, id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::exists(
      fmt::format("{}/quarantine/project-p1-{}", root_, id.ToHex())));
  ASSERT_TRUE(store_->Put(project_, id, data).ok());
  EXPECT_EQ(*store_->Get(project_, id), data);

  std::vector<std::string> logged = sink->last_formatted();
  spdlog::set_default_logger(saved);
  bool found = false;
  for (const std::string& line : logged) {
    if (line.find("error") != std::string::npos && line.find(id.ToHex()) != std::string::npos) {
      found = true;
    }
  }
  EXPECT_TRUE(found) << "no error log naming the chunk";
}

TEST_F(DiskChunkStoreTest, GetUnverifiedReturnsCorruptBytesAndGetStillCatchesThem) {
  const std::string data = RandomBytes(100000, 4);
  ChunkId id = PutOk(project_, data);
  const std::string path = ChunkPath(project_, id);
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << strerror(errno);
  char byte = data[777] ^ 0x10;
  ASSERT_EQ(pwrite(fd, &byte, 1, 777), 1);
  close(fd);
  // The caller verifies: it gets what the disk holds, and nothing is moved.
  absl::StatusOr<std::string> raw = store_->GetUnverified(project_, id);
  ASSERT_OK(raw);
  EXPECT_EQ(raw->size(), data.size());
  EXPECT_NE(*raw, data);
  EXPECT_NE(ChunkId::Of(*raw), id);
  // A verifying Get (what a caller that found the mismatch asks next) still
  // reports and quarantines it.
  EXPECT_EQ(store_->Get(project_, id).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->GetUnverified(project_, id).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(DiskChunkStoreTest, TruncatedChunkIsDataLossAndPutRewritesIt) {
  const std::string data = RandomBytes(4096, 3);
  ChunkId id = PutOk(project_, data);
  const std::string path = ChunkPath(project_, id);
  ASSERT_EQ(truncate(path.c_str(), 1000), 0);
  // A range past the remaining bytes: still corruption, not a bad range.
  EXPECT_EQ(store_->Get(project_, id, 2000, 10).status().code(), absl::StatusCode::kDataLoss);
  // Quarantined: the chunk now reads as missing, and a new upload heals it.
  EXPECT_OK(store_->Put(project_, id, data));
  absl::StatusOr<std::string> got = store_->Get(project_, id);
  ASSERT_OK(got);
  EXPECT_TRUE(*got == data);
}

TEST_F(DiskChunkStoreTest, PutOverAnUndetectedCorruptFileOfTheRightSizeHealsIt) {
  // Nobody read the chunk since it rotted: Put of the same id must not take
  // the file of the right size for the chunk (dedup), or a re-upload could
  // never repair it.
  const std::string data = RandomBytes(300000, 5);
  ChunkId id = PutOk(project_, data);
  const std::string path = ChunkPath(project_, id);
  std::string bad = data;
  bad[123456] ^= 0x40;
  WriteFile(path, bad);
  ASSERT_EQ(ReadFile(path).size(), data.size());
  EXPECT_OK(store_->Put(project_, id, data));
  EXPECT_TRUE(ReadFile(path) == data);
  absl::StatusOr<std::string> got = store_->Get(project_, id);
  ASSERT_OK(got);
  EXPECT_TRUE(*got == data);
  // The rotten copy is kept aside for an operator.
  EXPECT_TRUE(ReadFile(fmt::format("{}/quarantine/project-p1-{}", root_, id.ToHex())) == bad);
  // A Put of an intact chunk leaves its file alone (same inode: not rewritten).
  struct stat before {
  }, after{};
  ASSERT_EQ(stat(path.c_str(), &before), 0);
  EXPECT_OK(store_->Put(project_, id, data));
  ASSERT_EQ(stat(path.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
}

TEST_F(DiskChunkStoreTest, LeftoverTempFilesRemovedAtOpen) {
  ChunkId id = PutOk(project_, "survivor");
  store_.reset();
  // What a crash leaves behind: a half-written temp file, and the tree of a
  // scope whose deletion was interrupted.
  WriteFile(root_ + "/tmp/" + id.ToHex() + ".a1b2c3", "half a chu");
  fs::create_directories(root_ + "/tmp/deleted-project-x.q1w2e3/ab/cd");
  WriteFile(root_ + "/tmp/deleted-project-x.q1w2e3/ab/cd/" + std::string(64, 'a'), "old");
  ASSERT_EQ(CountEntries(root_ + "/tmp"), 2u);

  Open();
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_EQ(*store_->Get(project_, id), "survivor");
}

TEST_F(DiskChunkStoreTest, ReopenFindsChunks) {
  std::set<ChunkId> ids;
  for (int i = 0; i < 5; ++i) ids.insert(PutOk(project_, RandomBytes(1000 * i, 10 + i)));
  Open();
  for (int i = 0; i < 5; ++i) {
    std::string data = RandomBytes(1000 * i, 10 + i);
    EXPECT_EQ(*store_->Get(project_, ChunkId::Of(data)), data);
  }
  EXPECT_EQ(ListIds(project_), ids);
}

TEST_F(DiskChunkStoreTest, RootIsLockedWhileOpen) {
  absl::StatusOr<std::unique_ptr<ChunkStore>> second = OpenDiskChunkStore(root_);
  EXPECT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find(root_), absl::string_view::npos) << second.status();
  store_.reset();
  second = OpenDiskChunkStore(root_ + "/");  // Trailing slash: same root.
  EXPECT_OK(second);
}

TEST_F(DiskChunkStoreTest, OpenCreatesNestedRoot) {
  store_.reset();
  const std::string nested = dir_.path() + "/a/b/c";
  absl::StatusOr<std::unique_ptr<ChunkStore>> store = OpenDiskChunkStore(nested);
  ASSERT_OK(store);
  EXPECT_TRUE(fs::is_directory(nested + "/tmp"));
  EXPECT_CODE(OpenDiskChunkStore(""), absl::StatusCode::kInvalidArgument);
}

TEST_F(DiskChunkStoreTest, ListSkipsMalformedNames) {
  ChunkId id = PutOk(project_, "real chunk");
  const std::string hex = id.ToHex();
  const std::string scope_dir = root_ + "/project/p1";
  const std::string shard = scope_dir + "/" + hex.substr(0, 2) + "/" + hex.substr(2, 2);
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(toupper(c));
  std::string other_prefix = std::string(4, hex[0] == 'f' ? '0' : 'f') + hex.substr(4);
  WriteFile(shard + "/not-a-chunk", "x");
  WriteFile(shard + "/" + upper, "x");
  WriteFile(shard + "/" + other_prefix, "x");                  // Well-formed id in the wrong shard.
  fs::create_directories(shard + "/" + std::string(64, 'b'));  // A directory.
  fs::create_directories(scope_dir + "/zz/00");
  WriteFile(scope_dir + "/zz/00/" + std::string(64, 'c'), "x");
  WriteFile(scope_dir + "/stray", "x");

  EXPECT_EQ(ListIds(project_), std::set<ChunkId>{id});
}

TEST_F(DiskChunkStoreTest, DeleteScopeRemovesTree) {
  for (int i = 0; i < 10; ++i) PutOk(project_, RandomBytes(100, 20 + i));
  ChunkId other = PutOk(S("project:p2"), "other");
  EXPECT_OK(store_->DeleteScope(project_));
  EXPECT_FALSE(fs::exists(root_ + "/project/p1"));
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_TRUE(fs::exists(ChunkPath(S("project:p2"), other)));
}

// The store is the one place I/O errors become statuses: anything but a full
// disk or a missing file is INTERNAL, naming the path and the error.
TEST_F(DiskChunkStoreTest, IoErrorIsInternalNamingPathAndLeavesNoTempFile) {
  const std::string data = "blocked";
  ChunkId id = ChunkId::Of(data);
  const std::string path = ChunkPath(project_, id);
  fs::create_directories(path + "/in-the-way");  // rename(file, non-empty dir) fails.

  absl::Status status = store_->Put(project_, id, data);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find(path), absl::string_view::npos) << status;
  EXPECT_NE(status.message().find(strerror(EISDIR)), absl::string_view::npos) << status;
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);

  EXPECT_EQ(store_->Stat(project_, id).status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(store_->Get(project_, id).status().code(), absl::StatusCode::kOk);
}

TEST_F(DiskChunkStoreTest, ConcurrentPutsLeaveNoTempFiles) {
  const std::string data = RandomBytes(kDefaultChunkSize, 4);
  const ChunkId id = ChunkId::Of(data);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] { EXPECT_OK(store_->Put(project_, id, data)); });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_TRUE(ReadFile(ChunkPath(project_, id)) == data);
}

// Disk full, for real: the store's root on a 1 MiB tmpfs.
class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_point_ = dir_.path() + "/small";
    ASSERT_EQ(mkdir(mount_point_.c_str(), 0755), 0) << strerror(errno);
    if (mount("tmpfs", mount_point_.c_str(), "tmpfs", 0, "size=1m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs at " << mount_point_
                   << " (needs root or CAP_SYS_ADMIN): " << strerror(errno);
    }
    mounted_ = true;
    root_ = mount_point_ + "/root";
    absl::StatusOr<std::unique_ptr<ChunkStore>> store = OpenDiskChunkStore(root_);
    ASSERT_OK(store);
    store_ = std::move(*store);
  }

  // Runs even when the test failed or SetUp stopped half way.
  void TearDown() override {
    store_.reset();  // It holds <root>/LOCK open, which would keep the mount busy.
    if (mounted_ && umount(mount_point_.c_str()) != 0) {
      ADD_FAILURE() << "umount " << mount_point_ << ": " << strerror(errno);
      umount2(mount_point_.c_str(), MNT_DETACH);
    }
  }

  TempDir dir_;
  std::string mount_point_;
  std::string root_;
  bool mounted_ = false;
  std::unique_ptr<ChunkStore> store_;
};

TEST_F(DiskFullTest, PutReturnsEnospcAndLeavesNothing) {
  const Scope scope = S("project:full");
  const std::string big = RandomBytes(kDefaultChunkSize, 5);
  const ChunkId id = ChunkId::Of(big);

  absl::Status status = store_->Put(scope, id, big);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(ErrnoOf(status), ENOSPC) << status;
  EXPECT_EQ(CountEntries(root_ + "/tmp"), 0u);
  EXPECT_EQ(store_->Stat(scope, id).status().code(), absl::StatusCode::kNotFound);
  int listed = 0;
  EXPECT_OK(store_->List(scope, [&](const ChunkInfo&) {
    ++listed;
    return absl::OkStatus();
  }));
  EXPECT_EQ(listed, 0);

  // The space of the failed write was given back: a smaller chunk fits.
  const std::string small = RandomBytes(512 << 10, 6);
  EXPECT_OK(store_->Put(scope, ChunkId::Of(small), small));
  EXPECT_EQ(*store_->Get(scope, ChunkId::Of(small)), small);
}

}  // namespace
}  // namespace traincache
