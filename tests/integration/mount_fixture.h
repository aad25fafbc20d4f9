// MountTest: one real traincache-server and two real traincache-node daemons
// ("node A" and "node B": two tier folders, two mount roots) mounting one
// scope, for integration tests that use the mounts with ordinary system
// calls. Plus the small file helpers those tests share.
//
// Every process is stopped by PID and every mount is unmounted in TearDown
// (and by the helpers' destructors if a test dies early), so a failing test
// leaves nothing behind. Needs root and /dev/fuse.
#ifndef TRAINCACHE_TESTS_INTEGRATION_MOUNT_FIXTURE_H_
#define TRAINCACHE_TESTS_INTEGRATION_MOUNT_FIXTURE_H_

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "testing/node_process.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace traincache::testing {

// `n` pseudo-random bytes (incompressible, distinct per seed).
inline std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t r = rng();
    std::memcpy(&out[i], &r, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<char>(rng());
  return out;
}

// Writes all of `data` to `fd` at the current offset; 0 or -errno.
inline int WriteAll(int fd, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, std::min<size_t>(data.size() - done, 1u << 20));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    done += static_cast<size_t>(n);
  }
  return 0;
}

// open(O_CREAT|O_TRUNC)/write/close; 0 or -errno of the first call that failed
// (close's error is the commit's).
inline int WriteFile(const std::string& path, std::string_view data, mode_t mode = 0644) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  int rc = WriteAll(fd, data);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  return close(fd) == 0 ? 0 : -errno;
}

// What a read saw besides the bytes, for a failure's message.
struct ReadNotes {
  uint64_t ino = 0;
  uint64_t size = 0;  // fstat after the open
  std::string reads;  // what each read(2) returned
};

// The whole file through open/read/close, or "<errno N>" if a call failed, so
// that a failure shows in the assertion that compares it.
inline std::string ReadFile(const std::string& path, ReadNotes* notes = nullptr) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<errno " + std::to_string(errno) + ">";
  struct stat st {};
  if (notes != nullptr && fstat(fd, &st) == 0) {
    notes->ino = st.st_ino;
    notes->size = static_cast<uint64_t>(st.st_size);
  }
  std::string out;
  std::string buf(1u << 20, '\0');
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return "<errno " + std::to_string(err) + ">";
    }
    if (notes != nullptr) notes->reads += std::to_string(n) + " ";
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// The names in `dir` (without "." and ".."), or {"<errno N>"} if it cannot
// be listed, so that a failure shows in the assertion that compares it.
inline std::set<std::string> ListDir(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return {"<errno " + std::to_string(errno) + ">"};
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.insert(name);
  }
  closedir(d);
  return names;
}

// The whole file through mmap (MAP_PRIVATE, as safetensors loads weights),
// or "<errno N>".
inline std::string MmapFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<errno " + std::to_string(errno) + ">";
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size == 0) {
    close(fd);
    return "";
  }
  void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd);
  if (p == MAP_FAILED) return "<errno " + std::to_string(err) + ">";
  std::string out(static_cast<const char*>(p), static_cast<size_t>(st.st_size));
  munmap(p, static_cast<size_t>(st.st_size));
  return out;
}

// Drops this machine's page cache (all of it: the kernel's pages of FUSE
// files and of the tier's image files), so the next read reaches the daemon
// and the daemon's next read reaches the disk.
inline void DropCaches() {
  sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
}

// Allocated bytes (st_blocks * 512) of every file under `dir`; files that
// vanish while it walks are skipped.
inline uint64_t AllocatedBytesUnder(const std::string& dir) {
  namespace fs = std::filesystem;
  uint64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

// Files under `dir` whose name ends with `suffix`.
inline std::vector<std::string> FilesEndingWith(const std::string& dir, const std::string& suffix) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().string().ends_with(suffix)) out.push_back(it->path().string());
  }
  return out;
}

inline constexpr uint64_t kMiB = 1ull << 20;
inline constexpr uint64_t kGiB = 1ull << 30;
inline constexpr uint64_t kChunk = 4 * kMiB;  // The node's default chunk size.

class MountTest : public ::testing::Test {
 protected:
  // Extra flags of both node daemons (a fixture overrides it).
  virtual std::vector<std::string> NodeArgs() const { return {}; }
  // Extra flags of the server (a fixture overrides it; dir_ exists by then).
  virtual std::vector<std::string> ServerArgs() const { return {}; }

  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(dir_.Sub("server"), dir_.path(),
                                              FreeLoopbackAddress());
    ASSERT_TRUE(server_->Start(ServerArgs()).ok()) << "see " << server_->log_file();
    std::filesystem::create_directories(dir_.Sub("a"));
    std::filesystem::create_directories(dir_.Sub("b"));
    a_ = std::make_unique<NodeProcess>(dir_.Sub("a"), server_->address(), server_->token_file());
    b_ = std::make_unique<NodeProcess>(dir_.Sub("b"), server_->address(), server_->token_file());
    ASSERT_TRUE(a_->Start({scope_}, NodeArgs()).ok()) << "see " << a_->log_file();
    ASSERT_TRUE(b_->Start({scope_}, NodeArgs()).ok()) << "see " << b_->log_file();
    mnt_a_ = a_->MountPoint(scope_);
    mnt_b_ = b_->MountPoint(scope_);
  }

  void TearDown() override {
    // Nodes first (their last commits need the server), each by PID; the
    // server goes with its object.
    for (auto* node : {a_.get(), b_.get()}) {
      if (node && node->pid() > 0) {
        int status = node->Stop();
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << "node did not stop cleanly: " << status << "; see " << node->log_file();
      }
    }
    EXPECT_FALSE(IsMounted(mnt_a_)) << mnt_a_;
    EXPECT_FALSE(IsMounted(mnt_b_)) << mnt_b_;
  }

  // Restarts node B (same folders, same flags): its tier index is reloaded
  // and its kernel page cache of the mount is gone with the old mount.
  void RestartB() {
    int status = b_->Stop();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << b_->log_file();
    ASSERT_TRUE(b_->Start({scope_}, NodeArgs()).ok()) << "see " << b_->log_file();
  }

  std::string A(const std::string& rel) const { return mnt_a_ + "/" + rel; }
  std::string B(const std::string& rel) const { return mnt_b_ + "/" + rel; }

  TempDir dir_;
  Scope scope_ = *Scope::Parse("project:p1");
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<NodeProcess> a_, b_;
  std::string mnt_a_, mnt_b_;
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_INTEGRATION_MOUNT_FIXTURE_H_
