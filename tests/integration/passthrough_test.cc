// FUSE passthrough through real node daemons and the kernel (src/fuse/
// passthrough.h): a file complete in a node's tier is read by the kernel from
// the tier image; opens that cannot share the inode's I/O mode fall back to
// direct I/O instead of failing; an image in use is not evicted; with
// passthrough off, or refused by the kernel, the daemon serves every read.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "integration/mount_fixture.h"

namespace traincache::testing {
namespace {


// Reads `n` bytes at `offset` of an open file, or "<errno N>".
std::string PreadString(int fd, size_t n, off_t offset) {
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, out.data() + done, n - done, offset + static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return "<errno " + std::to_string(errno) + ">";
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  out.resize(done);
  return out;
}

// Reads the daemon served from this node: from the tier or from its
// fetcher's memory of recent chunks.
uint64_t DaemonHits(const NodeProcess& node) {
  std::map<std::string, uint64_t> c = node.Counters();
  return c["tier.hits"] + c["fetch.memory_hits"];
}

class PassthroughTest : public MountTest {
 protected:
  uint64_t B(const std::string& counter) {
    return b_->Counters()["scope." + scope_.ToString() + "." + counter];
  }
  uint64_t BTier(const std::string& counter) { return b_->Counters()["tier." + counter]; }
  // Written on A, read once on B (which fills B's tier), page cache dropped.
  std::string PutInBsTier(const std::string& name, size_t size, uint64_t seed) {
    std::string data = RandomBytes(size, seed);
    EXPECT_EQ(WriteFile(A(name), data), 0);
    EXPECT_EQ(ReadFile(MountTest::B(name)), data);
    DropCaches();
    return data;
  }
};

TEST_F(PassthroughTest, AFileCompleteInTheTierIsReadByTheKernel) {
  ASSERT_EQ(B("passthrough_enabled"), 1u) << "see " << b_->log_file();
  const std::string data = PutInBsTier("w.safetensors", 3 * kChunk + 12345, 1);
  const uint64_t hits = BTier("hits"), fetches = b_->Counters()["fetch.fetches"];
  const uint64_t opens = B("passthrough_opens");

  EXPECT_EQ(ReadFile(MountTest::B("w.safetensors")), data);
  EXPECT_EQ(MmapFile(MountTest::B("w.safetensors")), data);
  // Two opens, both by the kernel from the image: the daemon read nothing.
  EXPECT_EQ(B("passthrough_opens"), opens + 2);
  EXPECT_EQ(BTier("hits"), hits);
  EXPECT_EQ(b_->Counters()["fetch.fetches"], fetches);
  EXPECT_EQ(B("passthrough_refusals"), 0u);
}

TEST_F(PassthroughTest, ManyOpensOfOneFileShareOneBackingFile) {
  const std::string data = PutInBsTier("shared.bin", kChunk + 7, 2);
  const uint64_t backing = B("passthrough_backing_files");
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    int fd = open(MountTest::B("shared.bin").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << strerror(errno);
    fds.push_back(fd);
  }
  for (int fd : fds) EXPECT_EQ(PreadString(fd, data.size(), 0), data);
  for (int fd : fds) close(fd);
  EXPECT_EQ(B("passthrough_backing_files"), backing + 1);
  // Closed and opened again at once, many times: never the kernel's EIO of
  // an open that meets the previous file's I/O mode.
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(ReadFile(MountTest::B("shared.bin")), data) << "round " << i;
  }
}

TEST_F(PassthroughTest, OpensThatCannotShareTheKernelsModeGetDirectIo) {
  const std::string v1 = PutInBsTier("ckpt.bin", 2 * kChunk, 3);
  int reader = open(MountTest::B("ckpt.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  ASSERT_EQ(PreadString(reader, 100, 0), v1.substr(0, 100));
  const uint64_t direct = B("passthrough_direct_opens");

  // A writer on the same node while the kernel reads the image: no EIO.
  const std::string v2 = RandomBytes(kChunk + 99, 4);
  ASSERT_EQ(WriteFile(MountTest::B("ckpt.bin"), v2), 0);
  EXPECT_EQ(B("passthrough_direct_opens"), direct + 1);
  // A new open sees the new version (served by the daemon: the kernel still
  // reads the old image for `reader`).
  EXPECT_EQ(ReadFile(MountTest::B("ckpt.bin")), v2);
  // The open reader keeps the version it opened, whole.
  EXPECT_EQ(PreadString(reader, v1.size(), 0), v1);

  // Another node commits a third version: B's next open reads it.
  const std::string v3 = RandomBytes(3 * kChunk, 5);
  ASSERT_EQ(WriteFile(A("ckpt.bin"), v3), 0);
  EXPECT_EQ(ReadFile(MountTest::B("ckpt.bin")), v3);
  close(reader);

  // Once the old reader is gone, the new version goes through passthrough
  // after it is complete in the tier.
  DropCaches();
  const uint64_t opens = B("passthrough_opens");
  EXPECT_EQ(ReadFile(MountTest::B("ckpt.bin")), v3);
  EXPECT_EQ(B("passthrough_opens"), opens + 1);
}

TEST_F(PassthroughTest, ANewReaderSeesWritesStagedOnItsNodeNotTheImage) {
  const std::string v1 = PutInBsTier("s.bin", kChunk, 30);
  int reader = open(MountTest::B("s.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  int writer = open(MountTest::B("s.bin").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(pwrite(writer, "staged", 6, 0), 6);
  // Not committed yet, but this node reads what it staged (as a local disk).
  std::string seen = ReadFile(MountTest::B("s.bin"));
  EXPECT_EQ(seen.substr(0, 6), "staged");
  EXPECT_EQ(seen.size(), v1.size());
  ASSERT_EQ(close(writer), 0);
  close(reader);
}

// A writer opened while the kernel reads the inode through passthrough gets
// the image as its backing file; a shared writable mmap writes into it. The
// tier does not keep such bytes: once the writer is gone the image is
// verified again and the damaged chunk fetched anew.
TEST_F(PassthroughTest, AWritersSharedMmapDoesNotCorruptTheTier) {
  const std::string data = PutInBsTier("m.bin", 2 * kChunk, 31);
  int reader = open(MountTest::B("m.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  int rw = open(MountTest::B("m.bin").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(rw, 0);
  void* p = mmap(nullptr, data.size(), PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
  EXPECT_NE(p, MAP_FAILED) << strerror(errno);
  if (p != MAP_FAILED) {
    std::memcpy(p, "XXXX", 4);
    msync(p, data.size(), MS_SYNC);
    munmap(p, data.size());
  }
  close(rw);
  close(reader);
  DropCaches();
  const uint64_t corrupt = BTier("corrupt_chunks");
  EXPECT_EQ(ReadFile(MountTest::B("m.bin")), data);
  if (p != MAP_FAILED) {
    EXPECT_GT(BTier("corrupt_chunks"), corrupt);
  }
  EXPECT_EQ(ReadFile(A("m.bin")), data);
}

TEST_F(PassthroughTest, TruncateAndRenameOverAFileInPassthroughAreSeenByNewOpens) {
  const std::string data = PutInBsTier("t.bin", kChunk + 5, 6);
  int reader = open(MountTest::B("t.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  ASSERT_EQ(truncate(MountTest::B("t.bin").c_str(), 10), 0) << strerror(errno);
  EXPECT_EQ(ReadFile(MountTest::B("t.bin")), data.substr(0, 10));
  struct stat st {};
  ASSERT_EQ(stat(MountTest::B("t.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 10);

  const std::string other = RandomBytes(5000, 7);
  ASSERT_EQ(WriteFile(MountTest::B("t.new"), other), 0);
  ASSERT_EQ(rename(MountTest::B("t.new").c_str(), MountTest::B("t.bin").c_str()), 0);
  EXPECT_EQ(ReadFile(MountTest::B("t.bin")), other);
  EXPECT_EQ(PreadString(reader, data.size(), 0), data);
  close(reader);
}

// A small tier: an image the kernel reads is pinned while others are
// evicted around it.
class SmallTierPassthroughTest : public PassthroughTest {
 protected:
  std::vector<std::string> NodeArgs() const override {
    return {"--tier-capacity-bytes", std::to_string(6 * kChunk)};
  }
};

TEST_F(SmallTierPassthroughTest, AnImageInUseIsNotEvicted) {
  const std::string kept = PutInBsTier("kept.bin", 2 * kChunk, 8);
  int reader = open(MountTest::B("kept.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  ASSERT_EQ(B("passthrough_opens"), 1u);
  for (int i = 0; i < 4; ++i) {
    const std::string name = "other" + std::to_string(i);
    std::string other = RandomBytes(2 * kChunk, 10 + i);
    ASSERT_EQ(WriteFile(A(name), other), 0);
    ASSERT_EQ(ReadFile(MountTest::B(name)), other);
  }
  EXPECT_GT(BTier("evicted_bytes"), 0u);
  DropCaches();
  EXPECT_EQ(PreadString(reader, kept.size(), 0), kept);
  close(reader);
  // Still in the tier: read again without a fetch.
  const uint64_t fetches = b_->Counters()["fetch.fetches"];
  EXPECT_EQ(ReadFile(MountTest::B("kept.bin")), kept);
  EXPECT_EQ(b_->Counters()["fetch.fetches"], fetches);
}

class PassthroughOffTest : public PassthroughTest {
 protected:
  std::vector<std::string> NodeArgs() const override { return {"--fuse-passthrough=false"}; }
};

TEST_F(PassthroughOffTest, TheDaemonServesEveryRead) {
  const std::string data = PutInBsTier("f.bin", kChunk + 1, 20);
  const uint64_t hits = DaemonHits(*b_);
  EXPECT_EQ(ReadFile(MountTest::B("f.bin")), data);
  EXPECT_EQ(MmapFile(MountTest::B("f.bin")), data);
  EXPECT_GT(DaemonHits(*b_), hits);
  EXPECT_EQ(B("passthrough_enabled"), 0u);
  EXPECT_EQ(B("passthrough_opens"), 0u);
}

// The kernel refuses a backing file on a filesystem stacked as deep as the
// mount allows (ELOOP): node C keeps its tier on node A's FUSE mount. The
// refusal is logged once and the daemon serves the reads.
TEST_F(PassthroughTest, WhereTheKernelRefusesTheDaemonServesTheReads) {
  const Scope other = *Scope::Parse("project:p2");
  NodeProcess c(dir_.Sub("c"), server_->address(), server_->token_file());
  std::filesystem::create_directories(dir_.Sub("c"));
  c.set_tier_dir(A("tier-of-c"));
  ASSERT_TRUE(c.Start({other}).ok()) << "see " << c.log_file();
  const std::string mnt = c.MountPoint(other);
  const std::string data = RandomBytes(kChunk + 3, 21);
  ASSERT_EQ(WriteFile(mnt + "/f.bin", data), 0);
  EXPECT_EQ(ReadFile(mnt + "/f.bin"), data);  // Fills C's tier (on A's mount).
  DropCaches();
  EXPECT_EQ(ReadFile(mnt + "/f.bin"), data);
  EXPECT_EQ(MmapFile(mnt + "/f.bin"), data);
  auto counters = c.Counters();
  const std::string prefix = "scope." + other.ToString() + ".";
  EXPECT_GE(counters[prefix + "passthrough_refusals"], 1u);
  EXPECT_EQ(counters[prefix + "passthrough_opens"], 0u);
  EXPECT_EQ(counters[prefix + "passthrough_enabled"], 0u);
  EXPECT_GT(DaemonHits(c), 0u);
  int status = c.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << c.log_file();
}

}  // namespace
}  // namespace traincache::testing
