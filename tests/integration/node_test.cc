// Two real traincache-node daemons (two tier folders, two mount roots: two
// "nodes") against one real traincache-server, used through the kernel's FUSE
// mounts with ordinary system calls.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "integration/mount_fixture.h"

namespace traincache::testing {
namespace {

namespace fs = std::filesystem;

// Server + two node daemons, as every mount test (mount_fixture.h).
using TwoNodeTest = MountTest;

TEST_F(TwoNodeTest, FileClosedOnAIsReadWholeOnBAndOverwritesAreSeenWhole) {
  const std::string v1 = RandomBytes(9u << 20, 1);  // three chunks, the last short
  ASSERT_EQ(WriteFile(mnt_a_ + "/model.bin", v1), 0);
  EXPECT_EQ(ReadFile(mnt_b_ + "/model.bin"), v1);

  const std::string v2 = RandomBytes(5u << 20, 2);
  ASSERT_EQ(WriteFile(mnt_a_ + "/model.bin", v2), 0);
  std::string seen = ReadFile(mnt_b_ + "/model.bin");
  EXPECT_EQ(seen.size(), v2.size());
  EXPECT_TRUE(seen == v2);
}

// A checkpoint's finished chunks reach the server while the file is still
// open (issue 6); a chunk rewritten after its upload is committed with its
// new bytes, and B reads the file whole.
TEST_F(TwoNodeTest, FinishedChunksUploadWhileTheFileIsOpenAndARewriteWins) {
  const std::string key = "scope." + scope_.ToString() + ".";
  std::string data = RandomBytes(13u << 20, 5);  // Three whole 4 MiB chunks and 1 MiB.
  const int fd = open(A("ckpt.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(WriteAll(fd, data), 0);  // 1 MiB writes.
  const uint64_t puts_before_close = [&] {
    for (int i = 0; i < 3000; ++i) {
      if (a_->Counters()[key + "background_uploaded_chunks"] >= 3) break;
      usleep(10'000);
    }
    return server_->Counter("chunk.put.count");
  }();
  EXPECT_EQ(a_->Counters()[key + "background_uploaded_chunks"], 3u);
  EXPECT_GE(puts_before_close, 3u);  // On the server before close.
  EXPECT_EQ(a_->Counters()[key + "commits"], 0u);

  const std::string patch = RandomBytes(4096, 6);
  ASSERT_EQ(pwrite(fd, patch.data(), patch.size(), (4u << 20) + 12345),
            static_cast<ssize_t>(patch.size()));
  data.replace((4u << 20) + 12345, patch.size(), patch);
  ASSERT_EQ(close(fd), 0);

  std::map<std::string, uint64_t> c = a_->Counters();
  EXPECT_EQ(c[key + "commits"], 1u);
  EXPECT_EQ(c[key + "background_used_chunks"], 2u);  // Chunks 0 and 2.
  EXPECT_EQ(c[key + "background_dropped_chunks"], 1u);
  EXPECT_LE(c[key + "upload_peak_bytes"], 32u << 20);
  const std::string seen = ReadFile(mnt_b_ + "/ckpt.bin");
  EXPECT_EQ(seen.size(), data.size());
  EXPECT_TRUE(seen == data);
}

TEST_F(TwoNodeTest, SecondReadOnBIsServedFromBsTier) {
  const std::string data = RandomBytes(6u << 20, 3);
  ASSERT_EQ(WriteFile(mnt_a_ + "/data.bin", data), 0);
  ASSERT_EQ(ReadFile(mnt_b_ + "/data.bin"), data);
  uint64_t gets = server_->Counter("chunk.get.count");
  // Drop B's page cache for the file so the read reaches the daemon.
  {
    int fd = open((mnt_b_ + "/data.bin").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
  std::ofstream("/proc/sys/vm/drop_caches") << "1\n";
  // Not from the server: from the tier by the daemon, from the fetcher's
  // memory of recent chunks, or by the kernel from the tier image
  // (passthrough, passthrough_test.cc).
  auto node_hits = [&] {
    std::map<std::string, uint64_t> c = b_->Counters();
    return c["tier.hits"] + c["fetch.memory_hits"] +
           c["scope." + scope_.ToString() + ".passthrough_opens"];
  };
  uint64_t hits = node_hits();
  EXPECT_EQ(ReadFile(mnt_b_ + "/data.bin"), data);
  EXPECT_EQ(server_->Counter("chunk.get.count"), gets);
  EXPECT_GT(node_hits(), hits);
}

TEST_F(TwoNodeTest, AdminSocketMountsUnmountsAndCounts) {
  const std::string log = dir_.Sub("cli.log");
  auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {CliBinary(), "--node-socket", b_->AdminSocket()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProgram(argv, log);
  };
  Scope team = *Scope::Parse("team:t1");
  std::string mp = b_->MountPoint(team);
  ASSERT_EQ(cli({"mount-scope", "team:t1"}), 0) << ReadFile(log);
  EXPECT_TRUE(IsMounted(mp));
  EXPECT_EQ(cli({"mount-scope", "team:t1"}), 0);  // Mounted already: same mountpoint.
  EXPECT_NE(ReadFile(log).find("already mounted at " + mp), std::string::npos) << ReadFile(log);
  ASSERT_EQ(WriteFile(mp + "/shared.txt", "team data"), 0);
  ASSERT_EQ(cli({"mounts"}), 0);
  EXPECT_NE(ReadFile(log).find("team:t1 " + mp), std::string::npos);
  ASSERT_EQ(cli({"stats"}), 0);
  EXPECT_NE(ReadFile(log).find("scope.team:t1.commits 1"), std::string::npos) << ReadFile(log);
  {
    // In use: refused, and the mount stays.
    int fd = open((mp + "/shared.txt").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(cli({"unmount-scope", "team:t1"}), 1);
    EXPECT_NE(ReadFile(log).find("in use"), std::string::npos) << ReadFile(log);
    EXPECT_TRUE(IsMounted(mp));
    close(fd);
  }
  ASSERT_EQ(cli({"unmount-scope", "team:t1"}), 0);
  EXPECT_FALSE(IsMounted(mp));
  EXPECT_EQ(cli({"unmount-scope", "team:t1"}), 1);  // Not mounted any more.
  EXPECT_EQ(cli({"mount-scope", "team:bad/id"}), 1);
  // The data stayed on the server: mount it again and read it.
  ASSERT_EQ(cli({"mount-scope", "team:t1", "--no-create"}), 0);
  EXPECT_EQ(ReadFile(mp + "/shared.txt"), "team data");
  ASSERT_EQ(cli({"unmount-scope", "team:t1"}), 0);
}

TEST_F(TwoNodeTest, NamespaceOperationsThroughTheMount) {
  ASSERT_TRUE(fs::create_directories(mnt_a_ + "/hub/blobs"));
  ASSERT_EQ(WriteFile(mnt_a_ + "/hub/blobs/etag.incomplete", "weights"), 0);
  fs::rename(mnt_a_ + "/hub/blobs/etag.incomplete", mnt_a_ + "/hub/blobs/etag");
  fs::create_directories(mnt_a_ + "/hub/snapshots/rev");
  fs::create_symlink("../../blobs/etag", mnt_a_ + "/hub/snapshots/rev/model.bin");
  EXPECT_EQ(ReadFile(mnt_b_ + "/hub/snapshots/rev/model.bin"), "weights");
  EXPECT_EQ(fs::read_symlink(mnt_b_ + "/hub/snapshots/rev/model.bin"), "../../blobs/etag");
  EXPECT_FALSE(fs::exists(mnt_b_ + "/hub/blobs/etag.incomplete"));

  fs::create_hard_link(mnt_a_ + "/hub/blobs/etag", mnt_a_ + "/hub/blobs/hard");
  struct stat st {};
  ASSERT_EQ(stat((mnt_b_ + "/hub/blobs/hard").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);

  // O_EXCL on an existing name, rmdir of a non-empty directory: real errnos.
  EXPECT_EQ(open((mnt_b_ + "/hub/blobs/etag").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(rmdir((mnt_b_ + "/hub").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);

  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(mnt_b_ + "/hub/blobs")) names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"etag", "hard"}));

  struct statvfs vfs {};
  ASSERT_EQ(statvfs(mnt_b_.c_str(), &vfs), 0);
  EXPECT_EQ(uint64_t{vfs.f_blocks} * vfs.f_frsize, 1'000'000'000'000ull / 4096 * 4096);
}

TEST_F(TwoNodeTest, SigtermStopsTheDaemonEvenWithAFileOpenOnItsMount) {
  ASSERT_EQ(WriteFile(mnt_b_ + "/held.txt", "held"), 0);
  int fd = open((mnt_b_ + "/held.txt").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto start = std::chrono::steady_clock::now();
  int status = b_->Stop();  // SIGTERM; -1 would mean it had to be killed
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  EXPECT_FALSE(IsMounted(mnt_b_));
  char c;
  EXPECT_EQ(read(fd, &c, 1), -1);  // The connection is gone (ENOTCONN).
  close(fd);
  EXPECT_EQ(ReadFile(mnt_a_ + "/held.txt"), "held");
}

}  // namespace
}  // namespace traincache::testing
