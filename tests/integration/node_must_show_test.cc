// The "Must show" list of issue 3 that node_test.cc does not cover, against
// a real server and two real node daemons used through their FUSE mounts:
// single-flight under 16 concurrent reader processes, the tier's capacity
// bound, repair of a corrupted tier image, a server outage, bad input.
// Each asserts the server's counters, the node's (GetNodeStats through its
// admin socket) and files on disk.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "integration/mount_fixture.h"
#include "traincache/v1/admin.grpc.pb.h"

namespace traincache::testing {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string PreadString(int fd, size_t n, off_t off) {
  std::string out(n, '\0');
  ssize_t got = pread(fd, out.data(), n, off);
  if (got < 0) return "<errno " + std::to_string(errno) + ">";
  out.resize(static_cast<size_t>(got));
  return out;
}

// --- 16 readers, one fetch per chunk ---------------------------------------

// Reads `path` whole in 1 MiB reads and compares it with `expected`; the
// exit code of a reader process: 0 right, 1 open failed, 2 read failed, 3
// wrong bytes or size.
int ReadAndCompare(const std::string& path, const std::string& expected) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return 1;
  std::string buf(1u << 20, '\0');
  uint64_t pos = 0;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 2;
    if (n == 0) break;
    if (pos + n > expected.size() || std::memcmp(buf.data(), expected.data() + pos, n) != 0) {
      return 3;
    }
    pos += static_cast<uint64_t>(n);
  }
  close(fd);
  return pos == expected.size() ? 0 : 3;
}

TEST_F(MountTest, SixteenProcessesReadingOneUncachedFileFetchEachChunkOnce) {
  constexpr uint64_t kSize = kGiB;
  const std::string data = RandomBytes(kSize, 16);
  ASSERT_EQ(WriteFile(A("big.bin"), data), 0);
  const uint64_t gets_before = server_->Counter("chunk.get.count");

  // Each reader is its own process with its own descriptor; they wait on a
  // pipe so that all of them start reading at once. They compare every byte
  // with `data` (shared with the parent by fork: no copy), which is stricter
  // than a checksum.
  constexpr int kReaders = 16;
  int gate[2];
  ASSERT_EQ(pipe(gate), 0);
  std::vector<pid_t> readers;
  for (int i = 0; i < kReaders; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      close(gate[1]);
      char c;
      // EOF when the parent closes its end: the start signal.
      while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(ReadAndCompare(B("big.bin"), data));
    }
    ASSERT_GT(pid, 0);
    readers.push_back(pid);
  }
  close(gate[0]);
  const auto start = Clock::now();
  close(gate[1]);
  for (pid_t pid : readers) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "reader " << pid << " status " << status << " (exit 3: wrong bytes)";
  }
  RecordProperty("read_seconds", std::to_string(SecondsSince(start)));

  // Every chunk came from the server exactly once: no reader, readahead or
  // retry fetched one twice.
  EXPECT_EQ(server_->Counter("chunk.get.count") - gets_before, kSize / kChunk);
  auto node = b_->Counters();
  EXPECT_EQ(node["fetch.fetches"], kSize / kChunk);
  EXPECT_GT(node["fetch.coalesced"] + node["tier.hits"], 0u);
}

// --- tier capacity -----------------------------------------------------------

class SmallTierTest : public MountTest {
 protected:
  std::vector<std::string> NodeArgs() const override {
    return {"--tier-capacity-bytes", std::to_string(kCapacity)};
  }
  static constexpr uint64_t kCapacity = 256 * kMiB;
};

TEST_F(SmallTierTest, ReadingFourTimesTheCapacityKeepsTheTierWithinItAndBytesRight) {
  constexpr int kFiles = 8;
  constexpr uint64_t kFileSize = 128 * kMiB;  // 1 GiB in all.
  std::vector<std::string> files;
  for (int i = 0; i < kFiles; ++i) {
    files.push_back(RandomBytes(kFileSize, 100 + i));
    ASSERT_EQ(WriteFile(A("f" + std::to_string(i)), files.back()), 0);
  }
  const std::string tier = dir_.Sub("b") + "/tier";

  // Sample the tier folder's allocated bytes while B reads everything.
  std::atomic<bool> done{false};
  std::atomic<uint64_t> peak{0};
  std::thread sampler([&] {
    while (!done) {
      uint64_t now = AllocatedBytesUnder(tier);
      if (now > peak) peak = now;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const uint64_t gets_before = server_->Counter("chunk.get.count");
  for (int i = 0; i < kFiles; ++i) {
    EXPECT_TRUE(ReadFile(B("f" + std::to_string(i))) == files[i]) << "file " << i;
  }
  done = true;
  sampler.join();

  const uint64_t bound = kCapacity + kChunk;
  EXPECT_LE(peak.load(), bound) << "peak allocated bytes under " << tier;
  const uint64_t after = AllocatedBytesUnder(tier);
  EXPECT_LE(after, bound);
  EXPECT_GT(after, 64 * kMiB) << "the tier should hold the most recent files";
  EXPECT_EQ(server_->Counter("chunk.get.count") - gets_before, kFiles * kFileSize / kChunk);

  // The first file was evicted to make room: reading it again fetches it
  // again (from the server, not from stale tier bytes), and it is still right.
  DropCaches();
  const uint64_t gets_mid = server_->Counter("chunk.get.count");
  EXPECT_TRUE(ReadFile(B("f0")) == files[0]);
  EXPECT_GT(server_->Counter("chunk.get.count"), gets_mid);
  EXPECT_LE(AllocatedBytesUnder(tier), bound);
  auto node = b_->Counters();
  EXPECT_LE(node["tier.used_bytes"], node["tier.capacity_bytes"]);
  EXPECT_GE(node["tier.evicted_bytes"], 768 * kMiB);
}

// --- corrupted tier image ----------------------------------------------------

TEST_F(MountTest, CorruptedTierImageIsRefetchedAndReadsRight) {
  const std::string data = RandomBytes(3 * kChunk + 12345, 3);  // 4 chunks, the last short.
  ASSERT_EQ(WriteFile(A("weights.bin"), data), 0);
  ASSERT_TRUE(ReadFile(B("weights.bin")) == data);  // Now in B's tier.

  // The tier verifies a chunk when it first reads it after a restart
  // (disk_tier.cc, kUnverified): stop B, damage its image, start it again.
  int status = b_->Stop();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << b_->log_file();
  const std::vector<std::string> images = FilesEndingWith(dir_.Sub("b") + "/tier", ".img");
  ASSERT_EQ(images.size(), 1u);
  const off_t bad = static_cast<off_t>(kChunk + 4321);  // Inside chunk 1.
  {
    int fd = open(images[0].c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char byte = 0;
    ASSERT_EQ(pread(fd, &byte, 1, bad), 1);
    ASSERT_EQ(byte, data[bad]) << "the image does not hold chunk 1 at its offset";
    byte = static_cast<char>(byte ^ 0x5a);
    ASSERT_EQ(pwrite(fd, &byte, 1, bad), 1);
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  DropCaches();
  ASSERT_TRUE(b_->Start({scope_}, NodeArgs()).ok()) << "see " << b_->log_file();

  const uint64_t gets_before = server_->Counter("chunk.get.count");
  EXPECT_TRUE(ReadFile(B("weights.bin")) == data);
  // Exactly the damaged chunk was fetched again; the other three were
  // verified in the tier and served from it.
  EXPECT_EQ(server_->Counter("chunk.get.count") - gets_before, 1u);
  // The repair is on disk: the image holds the right byte again.
  {
    int fd = open(images[0].c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    char byte = 0;
    EXPECT_EQ(pread(fd, &byte, 1, bad), 1);
    EXPECT_EQ(byte, data[bad]);
    close(fd);
  }
  // ... and in the daemon's log.
  EXPECT_NE(ReadFile(b_->log_file()).find("does not match its id after a restart"),
            std::string::npos);
  EXPECT_EQ(b_->Counters()["tier.corrupt_chunks"], 1u);
}

// --- server outage -----------------------------------------------------------

class OutageTest : public MountTest {
 protected:
  std::vector<std::string> NodeArgs() const override {
    return {"--outage-timeout-seconds", std::to_string(kOutageSeconds)};
  }
  static constexpr int kOutageSeconds = 3;
  // Time allowed beyond the outage timeout (a lookup and the operation may
  // each wait it out once, plus scheduling on a busy 2-core machine).
  static constexpr double kSlackSeconds = kOutageSeconds + 4.0;
};

TEST_F(OutageTest, CachedFilesStayReadableServerOpsFailWithEioAndTheMountRecovers) {
  const std::string one = RandomBytes(6 * kMiB, 41);
  const std::string two = RandomBytes(1 * kMiB + 7, 42);
  ASSERT_TRUE(std::filesystem::create_directories(A("d")));
  ASSERT_EQ(WriteFile(A("d/one"), one), 0);
  ASSERT_EQ(WriteFile(A("two"), two), 0);
  for (int pass = 0; pass < 2; ++pass) {
    ASSERT_TRUE(ReadFile(B("d/one")) == one);
    ASSERT_TRUE(ReadFile(B("two")) == two);
  }
  // Descriptors held across the outage. O_CLOEXEC: the restarted server is
  // forked from this process and must not inherit (and pin) B's mount.
  int held_one = open(B("d/one").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held_one, 0);
  int held_two = open(B("two").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held_two, 0);

  ASSERT_GE(server_->Stop(), 0);
  DropCaches();  // Reads must reach B's daemon, and its tier's disk.

  // Cached files stay readable, at tier speed (no outage wait).
  {
    auto t = Clock::now();
    EXPECT_TRUE(PreadString(held_one, one.size(), 0) == one);
    EXPECT_TRUE(PreadString(held_two, two.size(), 0) == two);
    EXPECT_LT(SecondsSince(t), 1.0);
  }

  // What needs the server fails with EIO after the outage timeout, no hang.
  {
    auto t = Clock::now();
    errno = 0;
    int fd = open(B("new-file").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int err = errno;
    double took = SecondsSince(t);
    EXPECT_EQ(fd, -1);
    if (fd >= 0) close(fd);
    EXPECT_EQ(err, EIO) << strerror(err);
    EXPECT_GE(took, kOutageSeconds - 0.5);
    EXPECT_LT(took, kSlackSeconds) << "create took " << took << " s";
  }
  {
    auto t = Clock::now();
    struct stat st {};
    errno = 0;
    EXPECT_EQ(stat(B("never-looked-up").c_str(), &st), -1);
    int err = errno;
    double took = SecondsSince(t);
    EXPECT_EQ(err, EIO) << strerror(err);
    EXPECT_LT(took, kSlackSeconds) << "stat took " << took << " s";
  }
  // The held descriptors still read after those failures.
  {
    std::string got = PreadString(held_one, 4096, 4 * kMiB);
    EXPECT_TRUE(got == one.substr(4 * kMiB, 4096)) << got.size() << " bytes: " << got.substr(0, 20);
  }

  // The server comes back on the same data and address: the same mounts work
  // again, no remount.
  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
  // (The server's counters start over with it.)
  const uint64_t gets_after_restart = server_->Counter("chunk.get.count");
  EXPECT_TRUE(ReadFile(B("d/one")) == one);
  EXPECT_TRUE(ReadFile(B("two")) == two);
  EXPECT_TRUE(PreadString(held_one, one.size(), 0) == one);
  // All of that came from B's tier: no chunk was fetched again.
  EXPECT_EQ(server_->Counter("chunk.get.count"), gets_after_restart);
  EXPECT_EQ(WriteFile(B("after"), "back"), 0);
  EXPECT_EQ(ReadFile(A("after")), "back");
  struct stat st {};
  errno = 0;
  EXPECT_EQ(stat(B("never-looked-up").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(stat(B("new-file").c_str(), &st), -1);  // The failed create made nothing.
  close(held_one);
  close(held_two);
}

TEST_F(OutageTest, CachedFilesCanBeOpenedAnewDuringTheOutage) {
  GTEST_SKIP() << "not implemented: every open asks the server for the file's chunk map "
                  "(close-to-open) and every lookup past entry_ttl asks it for the name, "
                  "so during an outage a cached file that is not already open fails with "
                  "EIO after the outage timeout. Serving it needs a node-side name/attr/"
                  "chunk-map cache that outlives the kernel's lookups (FORGET), used only "
                  "while the server is unreachable.";
  const std::string one = RandomBytes(6 * kMiB, 43);
  ASSERT_EQ(WriteFile(A("one"), one), 0);
  for (int pass = 0; pass < 2; ++pass) ASSERT_TRUE(ReadFile(B("one")) == one);
  ASSERT_GE(server_->Stop(), 0);
  DropCaches();
  auto t = Clock::now();
  EXPECT_TRUE(ReadFile(B("one")) == one);
  EXPECT_LT(SecondsSince(t), 1.0);
  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
}

// --- bad input ---------------------------------------------------------------

TEST_F(MountTest, NameOf256BytesIsENAMETOOLONGAndChangesNothing) {
  const std::string long_name(256, 'n');
  errno = 0;
  EXPECT_EQ(open(A(long_name).c_str(), O_WRONLY | O_CREAT, 0644), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  errno = 0;
  EXPECT_EQ(mkdir(A(long_name).c_str(), 0755), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  errno = 0;
  EXPECT_EQ(symlink("target", A(long_name).c_str()), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  ASSERT_EQ(WriteFile(A("short"), "x"), 0);
  errno = 0;
  EXPECT_EQ(rename(A("short").c_str(), A(long_name).c_str()), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);

  // 255 bytes is allowed.
  const std::string longest(255, 'm');
  EXPECT_EQ(WriteFile(A(longest), "ok"), 0);
  EXPECT_EQ(ReadFile(B(longest)), "ok");

  std::set<std::string> names;
  for (auto& e : std::filesystem::directory_iterator(mnt_b_)) names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"short", longest}));
}

TEST_F(MountTest, WritingPastTheQuotaFailsAndTheFileKeepsItsCommittedContent) {
  {
    auto client = server_->Client();
    v1::SetQuotaRequest req;
    req.set_scope(scope_.ToString());
    req.set_quota_bytes(8 * kMiB);
    v1::QuotaResponse resp;
    ASSERT_TRUE(client->Call(&v1::Admin::Stub::SetQuota, client->admin(), req, &resp).ok());
  }
  const std::string v1 = RandomBytes(2 * kMiB, 51);
  ASSERT_EQ(WriteFile(A("ckpt"), v1), 0);

  // 16 MiB over an 8 MiB quota: write, fsync or close must say so.
  const std::string v2 = RandomBytes(16 * kMiB, 52);
  int fd = open(A("ckpt").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  std::vector<int> errors;
  int rc = WriteAll(fd, v2);
  if (rc != 0) errors.push_back(-rc);
  if (fsync(fd) != 0) errors.push_back(errno);
  if (close(fd) != 0) errors.push_back(errno);
  ASSERT_FALSE(errors.empty()) << "16 MiB written into an 8 MiB quota without an error";
  for (int err : errors) {
    EXPECT_TRUE(err == EDQUOT || err == ENOSPC) << strerror(err);
  }

  // The last committed content, on both nodes, whole.
  EXPECT_TRUE(ReadFile(A("ckpt")) == v1);
  EXPECT_TRUE(ReadFile(B("ckpt")) == v1);
  struct stat st {};
  ASSERT_EQ(stat(B("ckpt").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), v1.size());

  // A new file past the quota fails too, and is left empty, not partial.
  EXPECT_LT(WriteFile(A("other"), v2), 0);
  EXPECT_EQ(ReadFile(B("other")), "");
}

}  // namespace
// --- staged writes survive a daemon crash ----------------------------------

// Bytes written through B's mount but never closed (so never committed) are
// in B's staging file and journal; B is killed (SIGKILL: no release, no
// flush) and started again, and its Init commits them: A reads them.
TEST_F(MountTest, WritesStagedOnANodeKilledBeforeCloseAreCommittedWhenItRestarts) {
  const std::string base = RandomBytes(2 * kChunk + 100, 11);
  ASSERT_EQ(WriteFile(A("staged.bin"), base), 0);
  const std::string patch = RandomBytes(5000, 12);
  const std::string tail = RandomBytes(kChunk / 2, 13);
  int fd = open(B("staged.bin").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, patch.data(), patch.size(), kChunk + 7),
            static_cast<ssize_t>(patch.size()));
  ASSERT_EQ(pwrite(fd, tail.data(), tail.size(), static_cast<off_t>(base.size())),
            static_cast<ssize_t>(tail.size()));
  EXPECT_TRUE(ReadFile(A("staged.bin")) == base);  // Not committed yet.
  ASSERT_FALSE(FilesEndingWith(dir_.Sub("b"), ".journal").empty());

  b_->Kill();
  close(fd);  // A descriptor of the dead mount: nothing to commit any more.
  ASSERT_TRUE(b_->Start({scope_}, NodeArgs()).ok()) << "see " << b_->log_file();

  std::string want = base;
  want.replace(kChunk + 7, patch.size(), patch);
  want += tail;
  EXPECT_TRUE(ReadFile(A("staged.bin")) == want);
  EXPECT_TRUE(ReadFile(B("staged.bin")) == want);
  EXPECT_TRUE(FilesEndingWith(dir_.Sub("b"), ".journal").empty());
  EXPECT_NE(ReadFile(b_->log_file()).find("committed data staged by an earlier run"),
            std::string::npos);
}

}  // namespace traincache::testing
