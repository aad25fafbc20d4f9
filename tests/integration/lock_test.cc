// File locks across two real node daemons mounting one project: flock(2)
// and fcntl(2) locks taken on node A are seen on node B, blocking waits end
// when the holder lets go, can be interrupted, and a dead node's locks are
// freed after its lease, not before.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <thread>

#include "integration/mount_fixture.h"

namespace traincache::testing {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kLeaseSeconds = 3;

class LockTest : public MountTest {
 protected:
  std::vector<std::string> ServerArgs() const override {
    std::string config = dir_.Sub("locks.toml");
    std::ofstream(config) << "lock_lease_seconds = " << kLeaseSeconds << "\n";
    return {"--config", config};
  }

  // An fd of `path`, created if needed.
  static int Open(const std::string& path) {
    return open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  }

  static int SetLk(int fd, short type, off_t start, off_t len, bool wait = false) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    return fcntl(fd, wait ? F_SETLKW : F_SETLK, &fl) == 0 ? 0 : errno;
  }
};

TEST_F(LockTest, FlockSerializesAcrossNodes) {
  int a = Open(A("f.lock"));
  int b = Open(B("f.lock"));
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_EQ(flock(a, LOCK_EX | LOCK_NB), 0);
  EXPECT_EQ(flock(b, LOCK_EX | LOCK_NB), -1);
  EXPECT_EQ(errno, EWOULDBLOCK);
  EXPECT_EQ(flock(b, LOCK_SH | LOCK_NB), -1);
  // A blocking waiter on B gets it once A unlocks, not before.
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    EXPECT_EQ(flock(b, LOCK_EX), 0);
    got = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(got.load());
  ASSERT_EQ(flock(a, LOCK_UN), 0);
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_EQ(flock(a, LOCK_SH | LOCK_NB), -1);
  // Shared locks share; close releases.
  ASSERT_EQ(flock(b, LOCK_SH), 0);
  EXPECT_EQ(flock(a, LOCK_SH | LOCK_NB), 0);
  EXPECT_EQ(flock(a, LOCK_UN), 0);
  // The last close gives the flock back, but FUSE sends that RELEASE after
  // close(2) returned (it is asynchronous): a moment later, not at once.
  close(b);
  bool got_it = false;
  for (int i = 0; i < 100 && !got_it; ++i) {
    got_it = flock(a, LOCK_EX | LOCK_NB) == 0;
    if (!got_it) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(got_it);
  close(a);
}

TEST_F(LockTest, PosixRangesConflictAndGetlkShowsTheHolder) {
  int a = Open(A("db"));
  int b = Open(B("db"));
  ASSERT_EQ(SetLk(a, F_WRLCK, 0, 100), 0);
  EXPECT_EQ(SetLk(b, F_WRLCK, 50, 10), EAGAIN);
  EXPECT_EQ(SetLk(b, F_RDLCK, 99, 1), EAGAIN);
  EXPECT_EQ(SetLk(b, F_WRLCK, 100, 100), 0);  // just past A's range
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  probe.l_start = 10;
  probe.l_len = 5;
  ASSERT_EQ(fcntl(b, F_GETLK, &probe), 0);
  EXPECT_EQ(probe.l_type, F_WRLCK);
  EXPECT_EQ(probe.l_start, 0);
  EXPECT_EQ(probe.l_len, 100);
  EXPECT_EQ(probe.l_pid, getpid());
  // Unlocking part of the range frees that part only.
  ASSERT_EQ(SetLk(a, F_UNLCK, 0, 50), 0);
  EXPECT_EQ(SetLk(b, F_WRLCK, 0, 50), 0);
  EXPECT_EQ(SetLk(b, F_WRLCK, 50, 1), EAGAIN);
  // F_SETLKW waits for the holder.
  auto waited = std::async(std::launch::async, [&] { return SetLk(b, F_WRLCK, 60, 10, true); });
  EXPECT_EQ(waited.wait_for(std::chrono::milliseconds(500)), std::future_status::timeout);
  ASSERT_EQ(SetLk(a, F_UNLCK, 0, 0), 0);
  EXPECT_EQ(waited.get(), 0);
  // Closing any descriptor drops the process's POSIX locks.
  ASSERT_EQ(SetLk(b, F_UNLCK, 0, 0), 0);
  ASSERT_EQ(SetLk(a, F_WRLCK, 0, 0), 0);
  int a2 = open(A("db").c_str(), O_RDONLY);
  close(a2);
  EXPECT_EQ(SetLk(b, F_WRLCK, 0, 0), 0);
  close(a);
  close(b);
}

TEST_F(LockTest, ExitingProcessReleasesItsLocks) {
  int b = Open(B("exit.lock"));
  pid_t child = fork();
  if (child == 0) {
    int fd = open(A("exit.lock").c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) _exit(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    _exit(0);  // no unlock, no close: the kernel's cleanup must do it
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto start = Clock::now();
  ASSERT_EQ(flock(b, LOCK_EX), 0);  // waits for the child's exit
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(kLeaseSeconds));
  close(b);
}

void Ignore(int) {}

TEST_F(LockTest, BlockingWaitIsInterruptedBySignal) {
  int a = Open(A("intr.lock"));
  ASSERT_EQ(flock(a, LOCK_EX), 0);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t child = fork();
  if (child == 0) {
    struct sigaction sa {};
    sa.sa_handler = Ignore;  // no SA_RESTART: flock must return EINTR
    sigaction(SIGUSR1, &sa, nullptr);
    int fd = open(B("intr.lock").c_str(), O_RDWR);
    char c = 'x';
    if (write(pipefd[1], &c, 1) != 1) _exit(3);
    int rc = flock(fd, LOCK_EX);
    _exit(rc == -1 && errno == EINTR ? 0 : 2);
  }
  char c;
  ASSERT_EQ(read(pipefd[0], &c, 1), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // it is waiting now
  kill(child, SIGUSR1);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // The interrupted wait left nothing behind: once A lets go, B takes it.
  ASSERT_EQ(flock(a, LOCK_UN), 0);
  int b = Open(B("intr.lock"));
  EXPECT_EQ(flock(b, LOCK_EX | LOCK_NB), 0);
  close(a);
  close(b);
  close(pipefd[0]);
  close(pipefd[1]);
}

TEST_F(LockTest, ManyWaitersDoNotHoldFuseThreads) {
  // More blocked waiters than the daemon has FUSE threads (16): the mount
  // must still answer other calls, and every waiter gets the lock in turn.
  int a = Open(A("crowd.lock"));
  ASSERT_EQ(flock(a, LOCK_EX), 0);
  constexpr int kWaiters = 24;
  std::vector<pid_t> kids;
  for (int i = 0; i < kWaiters; ++i) {
    pid_t child = fork();
    if (child == 0) {
      int fd = open(B("crowd.lock").c_str(), O_RDWR);
      if (fd < 0 || flock(fd, LOCK_EX) != 0) _exit(1);
      flock(fd, LOCK_UN);
      _exit(0);
    }
    kids.push_back(child);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  ASSERT_EQ(WriteFile(B("still-answers"), "yes"), 0);
  EXPECT_EQ(ReadFile(B("still-answers")), "yes");
  ASSERT_EQ(flock(a, LOCK_UN), 0);
  for (pid_t kid : kids) {
    int status = 0;
    waitpid(kid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  close(a);
}

// A node daemon stopped while a process on it waits for a lock (and another
// holds one) exits cleanly: the wait is answered before the FUSE session
// goes, and the held lock is given back for the other node at once.
TEST_F(LockTest, StoppingANodeWithWaitersAndHoldersIsClean) {
  int a = Open(A("stop.lock"));
  ASSERT_EQ(flock(a, LOCK_EX), 0);
  pid_t waiter = fork();
  if (waiter == 0) {
    int fd = open(B("stop.lock").c_str(), O_RDWR);
    _exit(fd >= 0 && flock(fd, LOCK_EX) == 0 ? 0 : 3);
  }
  int b_held = Open(B("other.lock"));
  ASSERT_EQ(flock(b_held, LOCK_EX), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the child waits now
  int status = b_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  int child_status = 0;
  waitpid(waiter, &child_status, 0);
  EXPECT_TRUE(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 3) << child_status;
  close(b_held);
  // B's lock went with B, at once (not after the lease).
  int a_other = Open(A("other.lock"));
  EXPECT_EQ(flock(a_other, LOCK_EX | LOCK_NB), 0);
  close(a_other);
  close(a);
}

TEST_F(LockTest, ExclusiveCreateHasOneWinnerAcrossNodes) {
  for (int round = 0; round < 20; ++round) {
    std::string name = "excl-" + std::to_string(round);
    auto create = [&](const std::string& path) {
      int fd = open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
      if (fd >= 0) {
        close(fd);
        return 0;
      }
      return errno;
    };
    auto ra = std::async(std::launch::async, create, A(name));
    auto rb = std::async(std::launch::async, create, B(name));
    int ea = ra.get(), eb = rb.get();
    EXPECT_TRUE((ea == 0 && eb == EEXIST) || (ea == EEXIST && eb == 0)) << ea << " " << eb;
  }
}

TEST_F(LockTest, DeadNodesLocksAreFreedAfterItsLeaseNotBefore) {
  int a = Open(A("lease.lock"));
  ASSERT_EQ(flock(a, LOCK_EX), 0);
  int b = Open(B("lease.lock"));
  auto start = Clock::now();
  a_->Kill();  // kill -9: no unlock, no session close
  close(a);    // (the dead mount answers ENOTCONN; nothing reaches the server)
  ASSERT_EQ(flock(b, LOCK_EX), 0);
  auto waited = Clock::now() - start;
  EXPECT_GE(waited, std::chrono::milliseconds(kLeaseSeconds * 1000 - 500));
  EXPECT_LT(waited, std::chrono::seconds(kLeaseSeconds + 5));
  close(b);
}

TEST_F(LockTest, ANodeThatLostItsLeaseIsToldAndCannotFreeTheNewHoldersLock) {
  int a = Open(A("partition.lock"));
  ASSERT_EQ(flock(a, LOCK_EX), 0);
  // Node A stops answering (a long pause, a partition): no renewals.
  ASSERT_EQ(kill(a_->pid(), SIGSTOP), 0);
  int b = Open(B("partition.lock"));
  auto start = Clock::now();
  EXPECT_EQ(flock(b, LOCK_EX), 0);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(kLeaseSeconds * 1000 - 1500));
  ASSERT_EQ(kill(a_->pid(), SIGCONT), 0);
  // A learns it lost the lease at its next renewal...
  bool told = false;
  for (int i = 0; i < 100 && !told; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream log(a_->log_file());
    std::string text((std::istreambuf_iterator<char>(log)), {});
    told = text.find("lost its lock lease") != std::string::npos;
  }
  EXPECT_TRUE(told) << "see " << a_->log_file();
  // ...and its unlock does not free B's lock.
  flock(a, LOCK_UN);
  int a2 = Open(A("partition.lock"));
  EXPECT_EQ(flock(a2, LOCK_EX | LOCK_NB), -1);
  EXPECT_EQ(errno, EWOULDBLOCK);
  close(b);
  EXPECT_EQ(flock(a2, LOCK_EX), 0);
  close(a2);
  close(a);
}

TEST_F(LockTest, ALockHeldThroughAServerRestartIsReclaimedAndStillExcludes) {
  // The holder is a process of its own: this one restarts the server, and a
  // child it forks must not inherit descriptors of a mount (see soak_test.cc).
  int ready[2], go[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(go), 0);
  pid_t holder = fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    int fd = Open(A("restart.lock"));
    char c = (fd >= 0 && flock(fd, LOCK_EX) == 0) ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    (void)!read(go[0], &c, 1);
    // Unlocking after the restart must not fail either.
    int rc = flock(fd, LOCK_UN) == 0 && close(fd) == 0 ? 0 : 1;
    _exit(rc);
  }
  close(ready[1]);
  close(go[0]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');

  ASSERT_GE(server_->Stop(), 0);
  ASSERT_TRUE(server_->Start(ServerArgs()).ok()) << "see " << server_->log_file();

  // Node B may not take it: A reclaims it in the server's grace period, and
  // B's try is answered once that period is over.
  int b = Open(B("restart.lock"));
  ASSERT_GE(b, 0);
  auto start = Clock::now();
  EXPECT_EQ(flock(b, LOCK_EX | LOCK_NB), -1);
  EXPECT_EQ(errno, EWOULDBLOCK);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2 * kLeaseSeconds + 5));

  // Once A's holder lets go, B's blocking wait ends.
  ASSERT_EQ(write(go[1], "g", 1), 1);
  EXPECT_EQ(flock(b, LOCK_EX), 0);
  int status = 0;
  ASSERT_EQ(waitpid(holder, &status, 0), holder);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  close(b);
  close(ready[0]);
  close(go[1]);
  std::ifstream log(a_->log_file());
  std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("reclaimed 1 of 1 locks"), std::string::npos) << "see " << a_->log_file();
}

}  // namespace
}  // namespace traincache::testing
