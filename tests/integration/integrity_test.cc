// Issue 7, parts 4 and 5: full disks and corruption, on real daemons and real
// mounts. Full disks are small tmpfs file systems the tests mount (as root)
// under their own temp dir, on the node tier, the node's staging folder or
// the server's chunk folder, and unmount at the end, also when a test fails
// (Tmpfs's destructor; the daemons using them are stopped before).
// Corruption is a byte flipped on disk in a server chunk file or a node tier
// image.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "integration/mount_fixture.h"
#include "testing/metrics_scrape.h"
#include "testing/node_process.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "traincache/types.h"

namespace traincache::testing {
namespace {

// A tmpfs of `bytes` mounted at `dir` (created) for the object's lifetime;
// lazily unmounted by the destructor, so a daemon that still holds a file
// there never blocks it.
class Tmpfs {
 public:
  Tmpfs(std::string dir, uint64_t bytes) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    std::string options = fmt::format("size={},mode=0755", bytes);
    if (mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = errno;
    }
  }
  ~Tmpfs() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
  }
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;

  bool mounted() const { return mounted_; }
  int error() const { return error_; }
  // Bytes in use on the file system.
  uint64_t Used() const {
    struct statvfs st {};
    if (statvfs(dir_.c_str(), &st) != 0) return ~0ull;
    return (st.f_blocks - st.f_bfree) * st.f_frsize;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
  int error_ = 0;
};

// Flips one byte of file `path` at `offset`; false if it cannot.
bool FlipByte(const std::string& path, off_t offset) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  char byte = 0;
  bool ok = pread(fd, &byte, 1, offset) == 1;
  byte = static_cast<char>(byte ^ 0x5a);
  ok = ok && pwrite(fd, &byte, 1, offset) == 1 && fsync(fd) == 0;
  close(fd);
  return ok;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The chunk file of `bytes` in scope project:p1 of a server data dir.
std::string ChunkFile(const std::string& data_dir, std::string_view bytes) {
  const std::string hex = ChunkId::Of(bytes).ToHex();
  return fmt::format("{}/chunks/project/p1/{}/{}/{}", data_dir, hex.substr(0, 2), hex.substr(2, 2),
                     hex);
}

// One server and two nodes mounting project:p1, each of their folders
// optionally on a small tmpfs mounted before the daemons start. Members are
// declared so that the daemons go (stopped by PID) before the tmpfs mounts.
class FullDiskTest : public ::testing::Test {
 protected:
  struct Sizes {
    uint64_t server_data = 0;    // 0: no tmpfs; the whole data dir (RocksDB too)
    uint64_t server_chunks = 0;  // 0: no tmpfs
    uint64_t a_staging = 0;
    uint64_t b_tier = 0;
  };

  void Start(const Sizes& sizes, std::vector<std::string> b_args = {},
             std::vector<std::string> server_args = {}) {
    const std::string data = dir_.Sub("server");
    if (sizes.server_data) mounts_.push_back(Mount(data, sizes.server_data));
    if (sizes.server_chunks) mounts_.push_back(Mount(data + "/chunks", sizes.server_chunks));
    if (sizes.a_staging) mounts_.push_back(Mount(dir_.Sub("a") + "/staging", sizes.a_staging));
    if (sizes.b_tier) mounts_.push_back(Mount(dir_.Sub("b") + "/tier", sizes.b_tier));
    std::filesystem::create_directories(dir_.Sub("a"));
    std::filesystem::create_directories(dir_.Sub("b"));
    server_ = std::make_unique<ServerProcess>(data, dir_.path(), FreeLoopbackAddress());
    ASSERT_TRUE(server_->Start(server_args).ok()) << "see " << server_->log_file();
    a_ = std::make_unique<NodeProcess>(dir_.Sub("a"), server_->address(), server_->token_file());
    b_ = std::make_unique<NodeProcess>(dir_.Sub("b"), server_->address(), server_->token_file());
    ASSERT_TRUE(a_->Start({scope_}).ok()) << "see " << a_->log_file();
    ASSERT_TRUE(b_->Start({scope_}, b_args).ok()) << "see " << b_->log_file();
  }

  void TearDown() override {
    for (auto* node : {a_.get(), b_.get()}) {
      if (node && node->pid() > 0) {
        int status = node->Stop();
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "node did not stop cleanly: " << status << "; see " << node->log_file();
        for (const std::string& m : {node->MountPoint(scope_)}) EXPECT_FALSE(IsMounted(m)) << m;
      }
    }
    b_.reset();
    a_.reset();
    server_.reset();
    mounts_.clear();
  }

  std::unique_ptr<Tmpfs> Mount(const std::string& dir, uint64_t bytes) {
    auto fs = std::make_unique<Tmpfs>(dir, bytes);
    EXPECT_TRUE(fs->mounted()) << "mount tmpfs on " << dir << ": " << std::strerror(fs->error());
    return fs;
  }

  std::string A(const std::string& rel) const { return a_->MountPoint(scope_) + "/" + rel; }
  std::string B(const std::string& rel) const { return b_->MountPoint(scope_) + "/" + rel; }

  TempDir dir_;
  Scope scope_ = *Scope::Parse("project:p1");
  std::vector<std::unique_ptr<Tmpfs>> mounts_;  // Destroyed after the daemons below.
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<NodeProcess> a_, b_;
};

// --- 4a: the node tier on a small file system --------------------------------

TEST_F(FullDiskTest, NodeTierOnASmallDiskKeepsReadsRightByEviction) {
  // The tier is told it may fill 1 GiB, but its disk holds 32 MiB: the file
  // system's ENOSPC, not the tier's own accounting, forces the evictions.
  constexpr uint64_t kTierDisk = 32 * kMiB;
  Start({.b_tier = kTierDisk}, {"--tier-capacity-bytes", std::to_string(kGiB)});
  ASSERT_FALSE(HasFailure());
  constexpr int kFiles = 6;
  constexpr uint64_t kFileSize = 24 * kMiB;  // 144 MiB in all: 4.5 times the disk.
  std::vector<std::string> files;
  for (int i = 0; i < kFiles; ++i) {
    files.push_back(RandomBytes(kFileSize, 700 + i));
    ASSERT_EQ(WriteFile(A("f" + std::to_string(i)), files.back()), 0);
  }
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kFiles; ++i) {
      EXPECT_TRUE(ReadFile(B("f" + std::to_string(i))) == files[i])
          << "round " << round << " file " << i;
    }
    DropCaches();
  }
  auto node = b_->Counters();
  EXPECT_GT(node["tier.evicted_bytes"], 2 * kTierDisk);
  EXPECT_LE(node["tier.used_bytes"], kTierDisk);
  EXPECT_GT(node["tier.hits"] + node["fetch.memory_hits"], 0u);
  EXPECT_FALSE(Contains(ReadFile(b_->log_file()), "replying EIO")) << "see " << b_->log_file();
}

// --- 4b: the node's staging folder on a small file system ------------------

// Writes `n` bytes of `data` to `fd` from offset 0 in 1 MiB pwrites, then
// fsync and close; returns the errno of the first call that failed (0 if
// none) and closes `fd` in any case.
int WriteFsyncClose(int fd, std::string_view data) {
  int first = 0;
  for (size_t off = 0; off < data.size() && first == 0; off += kMiB) {
    size_t n = std::min<size_t>(kMiB, data.size() - off);
    if (pwrite(fd, data.data() + off, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      first = errno;
    }
  }
  if (first == 0 && fsync(fd) != 0) first = errno;
  if (close(fd) != 0 && first == 0) first = errno;
  return first;
}

TEST_F(FullDiskTest, StagingThatCannotGetSpaceIsEnospcAndNothingHalfWrittenIsSeen) {
  constexpr uint64_t kStagingDisk = 16 * kMiB;
  Start({.a_staging = kStagingDisk});
  ASSERT_FALSE(HasFailure());
  const std::string old_content = RandomBytes(2 * kMiB + 5, 800);
  ASSERT_EQ(WriteFile(A("old.bin"), old_content), 0);
  ASSERT_TRUE(ReadFile(B("old.bin")) == old_content);
  const std::string big = RandomBytes(40 * kMiB, 801);  // 2.5 times the staging disk.

  // Overwrite an existing file in place: some write, the fsync or the close
  // fails with ENOSPC ...
  int fd = open(A("old.bin").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_EQ(WriteFsyncClose(fd, big), ENOSPC);
  // ... and the file keeps its old content, on the other node, on the
  // server, and on this node too (the failed changes are dropped).
  EXPECT_TRUE(ReadFile(B("old.bin")) == old_content);
  DropCaches();
  EXPECT_TRUE(ReadFile(A("old.bin")) == old_content);

  // A new file: it is not seen half-written either (empty, as created).
  fd = open(A("new.bin").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_EQ(WriteFsyncClose(fd, big), ENOSPC);
  const std::string seen = ReadFile(B("new.bin"));
  EXPECT_TRUE(seen.empty() || seen == "<errno 2>") << seen.size() << " bytes";

  // A program sees it the same way: dd fails naming the error.
  const std::string dd_log = dir_.Sub("dd.log");
  EXPECT_NE(RunProgram({"/bin/dd", "if=/dev/zero", "of=" + A("dd.bin"), "bs=1M", "count=40",
                        "conv=fsync", "status=none"},
                       dd_log, 120),
            0);
  EXPECT_TRUE(Contains(ReadFile(dd_log), "No space left on device")) << ReadFile(dd_log);

  // The staging disk is free again once the files are released (the
  // kernel sends RELEASE after close returns, and removed staging files are
  // closed in the background: allow a few seconds), and the node keeps
  // working: a file that fits is written and read back on both nodes.
  Tmpfs* staging = mounts_[0].get();
  for (int i = 0; i < 100 && staging->Used() >= 2 * kMiB; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_LT(staging->Used(), 2 * kMiB);
  const std::string after = RandomBytes(6 * kMiB, 802);
  EXPECT_EQ(WriteFile(A("after.bin"), after), 0);
  EXPECT_TRUE(ReadFile(B("after.bin")) == after);
  EXPECT_TRUE(ReadFile(A("after.bin")) == after);
}

// --- 4c: the server's chunk disk full ----------------------------------------

TEST_F(FullDiskTest, ServerChunkDiskFullFailsTheCommitWithEnospcAndKeepsTheOldContent) {
  constexpr uint64_t kChunkDisk = 24 * kMiB;
  Start({.server_chunks = kChunkDisk});
  ASSERT_FALSE(HasFailure());
  const std::string old_content = RandomBytes(8 * kMiB, 900);
  ASSERT_EQ(WriteFile(A("old.bin"), old_content), 0);
  const std::string big = RandomBytes(40 * kMiB, 901);

  int fd = open(A("old.bin").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_EQ(WriteFsyncClose(fd, big), ENOSPC) << "see " << a_->log_file();
  // ENOSPC travelled as ENOSPC: not turned into EIO on the way.
  EXPECT_FALSE(Contains(ReadFile(a_->log_file()), "replying EIO")) << "see " << a_->log_file();

  EXPECT_TRUE(ReadFile(B("old.bin")) == old_content);
  DropCaches();
  EXPECT_TRUE(ReadFile(A("old.bin")) == old_content);
  // The server keeps serving: metadata changes and small files (kept with
  // the metadata, on another disk) still commit.
  ASSERT_TRUE(std::filesystem::create_directory(A("d")));
  const std::string small = RandomBytes(10000, 902);
  EXPECT_EQ(WriteFile(A("d/small"), small), 0);
  EXPECT_TRUE(ReadFile(B("d/small")) == small);
  EXPECT_GT(server_->Counter("rpc.PutChunks.error.RESOURCE_EXHAUSTED"), 0u);
}

TEST_F(FullDiskTest, ServerDataDiskFullWithItsMetadataIsEnospcNotACrashAndARestartRecovers) {
  // The default layout: RocksDB and the chunk files on one disk.
  constexpr uint64_t kDataDisk = 48 * kMiB;
  Start({.server_data = kDataDisk});
  ASSERT_FALSE(HasFailure());
  const std::string old_content = RandomBytes(8 * kMiB, 950);
  ASSERT_EQ(WriteFile(A("old.bin"), old_content), 0);

  const std::string big = RandomBytes(64 * kMiB, 951);
  int fd = open(A("old.bin").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  EXPECT_EQ(WriteFsyncClose(fd, big), ENOSPC) << "see " << a_->log_file();
  EXPECT_TRUE(ReadFile(B("old.bin")) == old_content);

  // Fill what is left of the disk: now RocksDB cannot append to its WAL
  // either. A small file (kept in RocksDB) fails with ENOSPC too, never EIO,
  // and the server does not die (RocksDB 7.8 aborted on an assertion when
  // the WAL was synced after a failed append).
  const std::string filler = dir_.Sub("server") + "/filler";
  {
    int f = open(filler.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(f, 0);
    const std::string block(kMiB, 'x');
    while (write(f, block.data(), block.size()) > 0) {
    }
    const std::string page(4096, 'x');
    while (write(f, page.data(), page.size()) > 0) {
    }
    close(f);
  }
  const std::string small = RandomBytes(10000, 952);
  EXPECT_EQ(WriteFile(A("small-while-full"), small), -ENOSPC) << "see " << server_->log_file();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(kill(server_->pid(), 0), 0) << "the server died; see " << server_->log_file();
  EXPECT_TRUE(Contains(ReadFile(server_->log_file()), "free space and restart the server"));

  // Space freed and the server restarted: nothing acknowledged is lost and
  // it takes writes again (the nodes wait out the restart). The restarted
  // server collects unreferenced chunks every second with no grace, so the
  // chunks the failed commit uploaded free their space too.
  ASSERT_EQ(unlink(filler.c_str()), 0);
  server_->Stop();
  const std::string config = dir_.Sub("server.toml");
  {
    std::ofstream out(config);
    out << "gc_interval_seconds = 1\ngc_grace_seconds = 0\n";
  }
  ASSERT_TRUE(server_->Start({"--config", config}).ok()) << "see " << server_->log_file();
  EXPECT_TRUE(ReadFile(B("old.bin")) == old_content);
  for (int i = 0; i < 100 && mounts_[0]->Used() > kDataDisk / 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string after = RandomBytes(6 * kMiB + 3, 953);
  EXPECT_EQ(WriteFile(A("after.bin"), after), 0) << "see " << server_->log_file();
  EXPECT_TRUE(ReadFile(B("after.bin")) == after);
  EXPECT_EQ(WriteFile(A("small"), small), 0);
  EXPECT_TRUE(ReadFile(B("small")) == small);
}

// --- 5a: a corrupt chunk on the server ---------------------------------------

TEST_F(FullDiskTest, CorruptServerChunkIsNeverServedIsCountedAndAReuploadHealsIt) {
  Start({});
  ASSERT_FALSE(HasFailure());
  const std::string data = RandomBytes(3 * kChunk + 12345, 1000);  // 4 chunks.
  ASSERT_EQ(WriteFile(A("weights.bin"), data), 0);
  const std::string chunk1 = data.substr(kChunk, kChunk);
  const std::string hex = ChunkId::Of(chunk1).ToHex();
  const std::string file = ChunkFile(server_->data_dir(), chunk1);
  ASSERT_TRUE(FlipByte(file, 4321)) << file;

  // B has nothing of the file in its tier: every chunk comes from the
  // server, and the corrupt one fails the read with EIO, never bad bytes.
  const uint64_t corrupt_before = server_->Counter("chunk.corrupt");
  EXPECT_EQ(ReadFile(B("weights.bin")), "<errno 5>");
  EXPECT_EQ(server_->Counter("chunk.corrupt") - corrupt_before, 1u);
  // Logged on both sides, naming the scope and the chunk.
  const std::string server_log = ReadFile(server_->log_file());
  EXPECT_TRUE(Contains(server_log, fmt::format("chunk {} of project:p1 is corrupt", hex)))
      << "see " << server_->log_file();
  const std::string node_log = ReadFile(b_->log_file());
  EXPECT_TRUE(Contains(node_log, hex) && Contains(node_log, "project:p1"))
      << "see " << b_->log_file();
  EXPECT_GE(b_->Counters()["fetch.verify_failures"], 1u);
  // Set aside, so that HasChunks says it is missing ...
  EXPECT_FALSE(std::filesystem::exists(file));
  EXPECT_TRUE(std::filesystem::exists(
      fmt::format("{}/chunks/quarantine/project-p1-{}", server_->data_dir(), hex)));
  // ... and a node that writes the same bytes again uploads it: healed.
  ASSERT_EQ(WriteFile(A("copy.bin"), data), 0);
  EXPECT_TRUE(ReadFile(file) == chunk1);
  EXPECT_TRUE(ReadFile(B("weights.bin")) == data);
  EXPECT_TRUE(ReadFile(B("copy.bin")) == data);
}

TEST_F(FullDiskTest, CorruptChunksAreCountedInTheServersPrometheusMetrics) {
  // As the test above, on a server exporting metrics.
  std::filesystem::create_directories(dir_.Sub("a"));
  const std::string data_dir = dir_.Sub("server");
  const std::string metrics = FreeLoopbackAddress();
  server_ = std::make_unique<ServerProcess>(data_dir, dir_.path(), FreeLoopbackAddress());
  ASSERT_TRUE(server_->Start({"--metrics-listen", metrics}).ok()) << "see " << server_->log_file();
  a_ = std::make_unique<NodeProcess>(dir_.Sub("a"), server_->address(), server_->token_file());
  ASSERT_TRUE(a_->Start({scope_}).ok()) << "see " << a_->log_file();
  const std::string data = RandomBytes(2 * kChunk, 1100);
  ASSERT_EQ(WriteFile(A("w.bin"), data), 0);
  ASSERT_TRUE(FlipByte(ChunkFile(data_dir, data.substr(0, kChunk)), 10));
  // A's own writes are not in its tier: the read goes to the server.
  EXPECT_EQ(ReadFile(A("w.bin")), "<errno 5>");
  MetricSamples samples = ScrapeMetrics(metrics);
  EXPECT_EQ(samples["traincache_server_chunk_corrupt_total"], 1.0);
}

// --- 5b: traincache fsck -----------------------------------------------------

TEST_F(FullDiskTest, FsckFindsCorruptAndMissingChunksAndTheFilesThatUseThem) {
  Start({});
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(std::filesystem::create_directory(A("d")));
  const std::string f1 = RandomBytes(2 * kChunk, 1200);
  const std::string f2 = RandomBytes(kChunk + 300000, 1201);
  const std::string small = RandomBytes(20000, 1202);  // Kept with the metadata.
  ASSERT_EQ(WriteFile(A("d/f1"), f1), 0);
  ASSERT_EQ(WriteFile(A("f2"), f2), 0);
  ASSERT_EQ(link(A("f2").c_str(), A("d/f2-link").c_str()), 0);
  ASSERT_EQ(WriteFile(A("small"), small), 0);
  const std::string data_dir = server_->data_dir();
  const std::string out = dir_.Sub("fsck.out"), err = dir_.Sub("fsck.err");
  auto fsck = [&](const std::string& dir) {
    return RunProgramSplit({CliBinary(), "fsck", "--data-dir", dir}, out, err, 120);
  };

  // Refused while the server runs on the data dir.
  EXPECT_EQ(fsck(data_dir), 1);
  EXPECT_TRUE(Contains(ReadFile(err), "in use by a running traincache-server")) << ReadFile(err);

  // The nodes are idle; stop the server for the offline check.
  int status = server_->Stop();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(fsck(data_dir), 0) << ReadFile(out) << ReadFile(err);
  EXPECT_TRUE(Contains(ReadFile(out), "0 corrupt, 0 missing")) << ReadFile(out);
  EXPECT_TRUE(Contains(ReadFile(out), "5 chunks checked")) << ReadFile(out);

  // One byte flipped in f1's second chunk, f2's first chunk file gone.
  const std::string bad = ChunkId::Of(f1.substr(kChunk)).ToHex();
  const std::string gone = ChunkId::Of(f2.substr(0, kChunk)).ToHex();
  ASSERT_TRUE(FlipByte(ChunkFile(data_dir, f1.substr(kChunk)), 1000));
  ASSERT_TRUE(std::filesystem::remove(ChunkFile(data_dir, f2.substr(0, kChunk))));
  EXPECT_EQ(fsck(data_dir), 1);
  const std::string report = ReadFile(out);
  EXPECT_TRUE(Contains(report, fmt::format("corrupt: project:p1 chunk {} (content does not match "
                                           "its id): used by project:p1:/d/f1\n",
                                           bad)))
      << report;
  EXPECT_TRUE(Contains(report, fmt::format("missing: project:p1 chunk {}: used by "
                                           "project:p1:/d/f2-link, project:p1:/f2\n",
                                           gone)))
      << report;
  EXPECT_TRUE(Contains(report, "1 corrupt, 1 missing")) << report;
  // fsck changes nothing: the corrupt file is where it was.
  EXPECT_TRUE(std::filesystem::exists(ChunkFile(data_dir, f1.substr(kChunk))));

  // Bad input: a clear error, exit 1; no --data-dir: usage, exit 2.
  EXPECT_EQ(fsck(dir_.Sub("nowhere")), 1);
  EXPECT_TRUE(Contains(ReadFile(err), "is not a directory")) << ReadFile(err);
  EXPECT_EQ(fsck(dir_.Sub("a")), 1);
  EXPECT_TRUE(Contains(ReadFile(err), "not a traincache-server data dir")) << ReadFile(err);
  EXPECT_EQ(RunProgramSplit({CliBinary(), "fsck"}, out, err), 2);

  // Back up for the nodes' clean stop.
  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
}

// --- 5c: a corrupt node tier image and FUSE passthrough ----------------------


TEST_F(FullDiskTest, ACorruptTierImageIsVerifiedBeforeTheKernelReadsItThroughPassthrough) {
  // With passthrough (the default) the kernel reads a complete image itself:
  // the daemon never sees those reads, so an image loaded from disk after a
  // restart must be verified when it is first opened, before it is handed
  // over (disk_tier.cc LeaseImage -> Complete).
  Start({});
  ASSERT_FALSE(HasFailure());
  const std::string opens_key = "scope.project:p1.passthrough_opens";
  ASSERT_EQ(b_->Counters()["scope.project:p1.passthrough_enabled"], 1u)
      << "no passthrough on this kernel; see " << b_->log_file();
  const std::string data = RandomBytes(3 * kChunk + 777, 1300);
  ASSERT_EQ(WriteFile(A("w.safetensors"), data), 0);
  ASSERT_TRUE(ReadFile(B("w.safetensors")) == data);  // Now in B's tier, complete.

  int status = b_->Stop();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << b_->log_file();
  const std::vector<std::string> images = FilesEndingWith(dir_.Sub("b") + "/tier", ".img");
  ASSERT_EQ(images.size(), 1u);
  ASSERT_TRUE(FlipByte(images[0], static_cast<off_t>(2 * kChunk + 99)));  // Chunk 2.
  DropCaches();
  ASSERT_TRUE(b_->Start({scope_}).ok()) << "see " << b_->log_file();

  const uint64_t gets = server_->Counter("chunk.get.count");
  // Mapped as a loader of weights does: the right bytes, the damaged chunk
  // fetched again (and only it), the repair counted.
  EXPECT_TRUE(MmapFile(B("w.safetensors")) == data);
  EXPECT_EQ(server_->Counter("chunk.get.count") - gets, 1u);
  EXPECT_EQ(b_->Counters()["tier.corrupt_chunks"], 1u);
  // Repaired and complete again: the next opens go to the kernel.
  DropCaches();
  const uint64_t opens = b_->Counters()[opens_key];
  EXPECT_TRUE(MmapFile(B("w.safetensors")) == data);
  EXPECT_TRUE(ReadFile(B("w.safetensors")) == data);
  EXPECT_EQ(b_->Counters()[opens_key], opens + 2);
  EXPECT_EQ(server_->Counter("chunk.get.count") - gets, 1u);
}

}  // namespace
}  // namespace traincache::testing
