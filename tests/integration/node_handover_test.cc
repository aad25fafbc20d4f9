// Issue 7, part 2: restarts of traincache-node that keep the FUSE connection,
// so a container holding the mount never sees "Transport endpoint is not
// connected". A real server, a real node daemon, a real mount, and this test
// in systemd's part: it owns $NOTIFY_SOCKET, keeps the descriptors the
// daemon stores there (FDSTORE=1, FDNAME=...) and passes them to the next
// daemon as systemd does ($LISTEN_FDS, $LISTEN_FDNAMES, $LISTEN_PID).
//
// A reader process reads a 64 MiB file over and over through one open
// descriptor, checking every byte, while the daemon hands over (SIGUSR2) and
// is restarted, then is killed (SIGKILL) and restarted. The reader must
// never see an error or a wrong byte, must go on reading after each
// restart, and new opens, stats, writes and listings must work after them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "integration/mount_fixture.h"

namespace traincache::testing {
namespace {

using Clock = std::chrono::steady_clock;

// systemd's side of sd_notify(3) for one service: READY=1 counted, and the
// fd store (FDSTORE=1 / FDSTOREREMOVE=1 with FDNAME=) kept by name.
class FdStoreEmulator {
 public:
  explicit FdStoreEmulator(std::string path) : path_(std::move(path)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    unlink(path_.c_str());
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    if (ok_) thread_ = std::thread([this] { Loop(); });
  }
  ~FdStoreEmulator() {
    if (ok_) {
      // An empty datagram from ourselves ends the loop.
      stop_ = true;
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
      int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sendto(s, "", 0, 0, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      close(s);
      thread_.join();
    }
    CloseAll();
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }

  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }
  int ready_count() {
    std::lock_guard lock(mu_);
    return ready_;
  }
  std::vector<std::pair<std::string, int>> Fds() {
    std::lock_guard lock(mu_);
    return {stored_.begin(), stored_.end()};
  }
  // The service manager lets go of everything: what it held closes.
  void CloseAll() {
    std::lock_guard lock(mu_);
    for (auto& [name, fd] : stored_) close(fd);
    stored_.clear();
  }
  // Waits until READY=1 came `n` times in all.
  bool WaitReady(int n, std::chrono::seconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (ready_count() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

 private:
  void Loop() {
    for (;;) {
      char buf[4096];
      char control[CMSG_SPACE(sizeof(int) * 16)];
      iovec iov{buf, sizeof(buf) - 1};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || stop_) return;
      std::vector<int> fds;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            fds.push_back(fd);
          }
        }
      }
      std::map<std::string, std::string> fields;
      std::string text(buf, static_cast<size_t>(n));
      size_t at = 0;
      while (at < text.size()) {
        size_t end = text.find('\n', at);
        if (end == std::string::npos) end = text.size();
        std::string line = text.substr(at, end - at);
        if (size_t eq = line.find('='); eq != std::string::npos) {
          fields[line.substr(0, eq)] = line.substr(eq + 1);
        }
        at = end + 1;
      }
      std::lock_guard lock(mu_);
      if (fields["READY"] == "1") ++ready_;
      const std::string name = fields.count("FDNAME") ? fields["FDNAME"] : "stored";
      if (fields["FDSTORE"] == "1" && fds.size() == 1) {
        if (auto it = stored_.find(name); it != stored_.end()) close(it->second);
        stored_[name] = fds[0];
        fds.clear();
      }
      if (fields["FDSTOREREMOVE"] == "1") {
        if (auto it = stored_.find(name); it != stored_.end()) {
          close(it->second);
          stored_.erase(it);
        }
      }
      for (int fd : fds) close(fd);  // Not kept (as systemd without FDSTORE=1).
    }
  }

  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  int ready_ = 0;                      // guarded by mu_
  std::map<std::string, int> stored_;  // guarded by mu_
};

// What the reader shares with the test (a MAP_SHARED page).
struct ReaderState {
  std::atomic<uint64_t> bytes{0};  // read and checked so far
  std::atomic<int> error{0};       // errno of a failed call, or -1: wrong bytes
  std::atomic<uint64_t> error_at{0};
  std::atomic<int> stop{0};
};

class NodeHandoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ =
        std::make_unique<ServerProcess>(dir_.Sub("server"), dir_.path(), FreeLoopbackAddress());
    ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
    store_ = std::make_unique<FdStoreEmulator>(dir_.Sub("notify.sock"));
    ASSERT_TRUE(store_->ok());
    std::filesystem::create_directories(dir_.Sub("node"));
    node_ =
        std::make_unique<NodeProcess>(dir_.Sub("node"), server_->address(), server_->token_file());
    node_->set_env({"NOTIFY_SOCKET=" + store_->path()});
    ASSERT_TRUE(node_->Start({scope_}, NodeArgs()).ok()) << "see " << node_->log_file();
    ASSERT_TRUE(store_->WaitReady(1, std::chrono::seconds(30)));
    mnt_ = node_->MountPoint(scope_);
    void* shared = mmap(nullptr, sizeof(ReaderState), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(shared, MAP_FAILED);
    reader_state_ = new (shared) ReaderState();
  }

  void TearDown() override {
    if (HasFailure()) {
      // The folder goes with the test: show the daemon's log here.
      std::cout << "--- " << node_->log_file() << " (last 60 lines) ---\n";
      std::string log = ReadFile(node_->log_file());
      size_t at = log.size();
      for (int lines = 0; at > 0 && lines < 60; --at) lines += log[at - 1] == '\n';
      std::cout << log.substr(at) << "---\n";
    }
    if (reader_ > 0) {
      kill(reader_, SIGKILL);
      waitpid(reader_, nullptr, 0);
    }
    if (node_ && node_->pid() > 0) {
      int status = node_->Stop();
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "node did not stop cleanly: " << status << "; see " << node_->log_file();
    }
    EXPECT_FALSE(IsMounted(mnt_)) << mnt_;
    // Whatever is left (a test that failed between a hand-over and the
    // restart): the connections go with the store, the mounts with Kill.
    store_->CloseAll();
    node_->Kill();
    if (reader_state_) munmap(reader_state_, sizeof(ReaderState));
  }

  virtual std::vector<std::string> NodeArgs() const { return {"--fuse-passthrough=false"}; }

  // The reader: one open descriptor, the whole file read again and again
  // in 1 MiB reads, every byte compared, the page cache dropped after each
  // pass so that the reads reach the daemon.
  void StartReader(const std::string& path, const std::string& data) {
    reader_ = fork();
    ASSERT_GE(reader_, 0);
    if (reader_ != 0) return;
    // Not the store's copies of the connection: a reader that held one
    // would keep its own FLUSH at exit waiting forever on a connection
    // nobody serves.
    close_range(3, ~0u, 0);
    ReaderState& st = *reader_state_;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      st.error = errno;
      _exit(1);
    }
    static char buf[1 << 20];
    while (!st.stop) {
      for (uint64_t off = 0; off < data.size() && !st.stop;) {
        ssize_t n = pread(fd, buf, sizeof(buf), static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || std::memcmp(buf, data.data() + off, static_cast<size_t>(n)) != 0) {
          st.error = n < 0 ? errno : -1;
          st.error_at = off;
          _exit(1);
        }
        off += static_cast<uint64_t>(n);
        st.bytes += static_cast<uint64_t>(n);
      }
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    close(fd);
    _exit(0);
  }

  // Waits until the reader has read `more` bytes past what it had read at
  // the call (or failed).
  bool ReaderAdvances(uint64_t more, std::chrono::seconds timeout) {
    const uint64_t from = reader_state_->bytes;
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline && reader_state_->error == 0) {
      if (reader_state_->bytes >= from + more) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Starts the next daemon with the stored descriptors; it must take over
  // (READY=1) and leave the mount mounted all along.
  void RestartWithStore(int ready_before) {
    std::vector<std::pair<std::string, int>> fds = store_->Fds();
    ASSERT_EQ(fds.size(), 2u) << "fuse and state descriptors of the mount";
    node_->set_passed_fds(fds);
    const auto start = Clock::now();
    ASSERT_TRUE(node_->Start({scope_}, NodeArgs()).ok()) << "see " << node_->log_file();
    ASSERT_TRUE(store_->WaitReady(ready_before + 1, std::chrono::seconds(30)))
        << "see " << node_->log_file();
    std::cout << "restarted and serving in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()
              << " ms\n";
    ASSERT_TRUE(IsMounted(mnt_));
  }

  TempDir dir_;
  Scope scope_ = *Scope::Parse("project:handover");
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<FdStoreEmulator> store_;
  std::unique_ptr<NodeProcess> node_;
  std::string mnt_;
  ReaderState* reader_state_ = nullptr;
  pid_t reader_ = -1;
};

TEST_F(NodeHandoverTest, AReaderReadsOnThroughAHandOverAndThroughAKillAndRestart) {
  const std::string data = RandomBytes(64 * kMiB, 7);
  ASSERT_EQ(WriteFile(mnt_ + "/big.bin", data), 0);
  ASSERT_EQ(WriteFile(mnt_ + "/small.txt", "before"), 0);
  std::vector<std::pair<std::string, int>> stored = store_->Fds();
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].first, "fuse-project-handover");
  EXPECT_EQ(stored[1].first, "state-project-handover");

  StartReader(mnt_ + "/big.bin", data);
  ASSERT_TRUE(ReaderAdvances(data.size() + kMiB, std::chrono::seconds(60)))
      << "reader error " << reader_state_->error;

  // 1. A hand-over (an upgrade): SIGUSR2, exit 75 (the unit restarts on
  // it), the mount stays.
  auto signalled = Clock::now();
  int status = node_->SignalAndWait(SIGUSR2);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 75) << status;
  std::cout
      << "handed over and exited in "
      << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - signalled).count()
      << " ms\n";
  ASSERT_TRUE(IsMounted(mnt_));
  RestartWithStore(1);
  EXPECT_TRUE(ReaderAdvances(data.size() + kMiB, std::chrono::seconds(60)))
      << "reader error " << reader_state_->error << " at " << reader_state_->error_at;

  // 2. A crash: SIGKILL while the reader reads; the store keeps the
  // connection, so the mount is not dead, and the next daemon serves on
  // (what the dead one had read and not answered is resent to it).
  status = node_->SignalAndWait(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  ASSERT_TRUE(IsMounted(mnt_));
  RestartWithStore(2);
  EXPECT_TRUE(ReaderAdvances(data.size() + kMiB, std::chrono::seconds(60)))
      << "reader error " << reader_state_->error << " at " << reader_state_->error_at;

  // New calls after the restarts: stat, open, read, write, list.
  struct stat st {};
  ASSERT_EQ(stat((mnt_ + "/big.bin").c_str(), &st), 0) << strerror(errno);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), data.size());
  EXPECT_EQ(ReadFile(mnt_ + "/small.txt"), "before");
  ASSERT_EQ(WriteFile(mnt_ + "/after.txt", "after the restarts"), 0);
  EXPECT_EQ(ReadFile(mnt_ + "/after.txt"), "after the restarts");
  EXPECT_EQ(ListDir(mnt_), (std::set<std::string>{"after.txt", "big.bin", "small.txt"}));

  reader_state_->stop = 1;
  int rstatus = 0;
  ASSERT_EQ(waitpid(reader_, &rstatus, 0), reader_);
  reader_ = -1;
  EXPECT_TRUE(WIFEXITED(rstatus) && WEXITSTATUS(rstatus) == 0)
      << "reader error " << reader_state_->error << " at " << reader_state_->error_at;
  EXPECT_EQ(reader_state_->error, 0);
  std::cout << "the reader read " << reader_state_->bytes / kMiB << " MiB through two restarts\n";
}

}  // namespace
}  // namespace traincache::testing
