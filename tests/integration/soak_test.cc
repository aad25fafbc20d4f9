// Issue 7's soak and server-restart checks, against a real server and two real
// node daemons used through their FUSE mounts.
//
// The soak: workers on both nodes create, overwrite, rename, delete and read
// files and take a cross-node flock around a shared counter, while the server
// is restarted every minute (SIGTERM and SIGKILL in turn) and node B is
// killed with SIGKILL once and started again. Each worker owns a folder and
// keeps a manifest of what each of its names may hold: exactly one version
// once an operation was acknowledged, several while one failed midway (the
// old or the new bytes, or an empty file after O_TRUNC). Reads go through the
// other node (close-to-open across nodes) and must return one of the
// versions the manifest allows, whole; at the end every name is read through
// both nodes, after a clean restart of everything, and checked again.
//
// No error may reach a program except from the node that was killed, while
// it was down: the server's outages are shorter than the nodes' outage
// timeout. TRAINCACHE_SOAK_SECONDS sets the length (default 300, at most 600).
#include <fmt/format.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "integration/mount_fixture.h"

namespace traincache::testing {
namespace {

using Clock = std::chrono::steady_clock;

// One content a name may hold: RandomBytes(size, seed).
struct Version {
  uint64_t size = 0;
  uint64_t seed = 0;
  auto operator<=>(const Version&) const = default;
};
// What a name may hold; nullopt: the name may be absent.
using Allowed = std::set<std::optional<Version>>;

std::string Describe(const Allowed& allowed) {
  std::string out;
  for (const auto& v : allowed) {
    out += v ? fmt::format("{}b/seed{} ", v->size, v->seed) : "absent ";
  }
  return out;
}

// The end of a log, for a failure message (the test's folder goes with it).
std::string Tail(const std::string& log) {
  return log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
}

// A node's liveness as the workers see it (Shared::epoch): odd while it is
// down. An operation that failed is forgiven only if the epoch of the node it
// used moved while it ran (or the node was down when it started).

class SoakTest : public MountTest {
 protected:
  // Server outages (a restart takes a second or two) are well inside the
  // nodes' outage timeout: programs must never see them.
  std::vector<std::string> NodeArgs() const override { return {"--outage-timeout-seconds", "60"}; }

  static int SoakSeconds() {
    const char* env = std::getenv("TRAINCACHE_SOAK_SECONDS");
    int s = env ? std::atoi(env) : 300;
    return std::clamp(s, 20, 600);
  }
};

constexpr int kWorkersPerNode = 3;
constexpr int kNamesPerWorker = 12;
// A failure's bytes are looked for among this many first writes of each worker.
constexpr uint64_t kMaxWritesLooked = 20'000;

// Counters shared by the worker processes and the test (in a MAP_SHARED
// mapping made before they fork): lock-free atomics only.
struct Shared {
  std::atomic<uint64_t> epoch[2];  // NodeState of A and B
  std::atomic<bool> stop;
  std::atomic<uint64_t> writes, reads, renames, unlinks, locks;
  std::atomic<uint64_t> forgiven;        // failures while the node was down
  std::atomic<uint64_t> lock_acked;      // increments acknowledged
  std::atomic<uint64_t> lock_attempted;  // increments that may have landed
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);

class Worker {
 public:
  Worker(int id, int node, std::vector<std::string> mounts, Shared* shared)
      : id_(id), node_(node), mounts_(std::move(mounts)), shared_(shared), rng_(1000 + id) {
    for (int i = 0; i < kNamesPerWorker; ++i) files_[i] = {std::nullopt};
  }

  std::string Path(int node, int name) const {
    return fmt::format("{}/w{}/f{}", mounts_[node], id_, name);
  }
  std::string Dir(int node) const { return fmt::format("{}/w{}", mounts_[node], id_); }
  const std::map<int, Allowed>& files() const { return files_; }

  // Runs until Shared::stop, then writes the manifest and the failures to
  // `out` for the test (the worker is a process of its own: see the test).
  void Run(const std::string& out) {
    while (!shared_->stop.load()) {
      if (shared_->epoch[node_].load() % 2 == 1) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      int op = static_cast<int>(rng_() % 100);
      if (op < 40) {
        Write();
      } else if (op < 70) {
        Read();
      } else if (op < 80) {
        Rename();
      } else if (op < 88) {
        Unlink();
      } else {
        Increment();
      }
    }
    Save(out);
  }

  // The manifest ("<name> <size>:<seed>|absent ...") and the failures
  // ("! <text>"), one per line.
  void Save(const std::string& out) const {
    std::ofstream f(out);
    for (const auto& [name, allowed] : files_) {
      f << name;
      for (const auto& v : allowed) {
        if (v) {
          f << ' ' << v->size << ':' << v->seed;
        } else {
          f << " absent";
        }
      }
      f << '\n';
    }
    for (const std::string& failure : failures_) f << "! " << failure << '\n';
  }

  // Reads what Save wrote; the failures are returned.
  std::vector<std::string> Load(const std::string& in) {
    std::vector<std::string> failures;
    std::ifstream f(in);
    std::string line;
    while (std::getline(f, line)) {
      if (line.starts_with("! ")) {
        failures.push_back(line.substr(2));
        continue;
      }
      std::istringstream words(line);
      int name = 0;
      words >> name;
      Allowed allowed;
      std::string word;
      while (words >> word) {
        if (word == "absent") {
          allowed.insert(std::nullopt);
        } else {
          size_t colon = word.find(':');
          allowed.insert(
              Version{std::stoull(word.substr(0, colon)), std::stoull(word.substr(colon + 1))});
        }
      }
      files_[name] = std::move(allowed);
    }
    return failures;
  }

  void Fail(std::string what) {
    if (failures_.size() < 20) failures_.push_back(std::move(what));
  }

  // Whether `got` (or errno `err` when the read failed) is what the manifest
  // allows for `name`.
  bool Allows(int name, const std::string& got, int err, std::string* why) const {
    const Allowed& allowed = files_.at(name);
    if (err == ENOENT) {
      if (allowed.contains(std::nullopt)) return true;
      *why = "absent, expected " + Describe(allowed);
      return false;
    }
    for (const auto& v : allowed) {
      if (v && v->size == got.size() && RandomBytes(v->size, v->seed) == got) return true;
    }
    *why = fmt::format("{} bytes that are none of: {}", got.size(), Describe(allowed));
    return false;
  }

 private:
  // Runs `op` (0 or -errno) against `node`; true if it succeeded. A failure
  // is forgiven (false, counted) if that node went down meanwhile, else it
  // is recorded as a failure of the soak.
  template <typename F>
  bool Attempt(int node, const std::string& what, F op) {
    uint64_t before = shared_->epoch[node].load();
    int rc = op();
    if (rc == 0) return true;
    uint64_t after = shared_->epoch[node].load();
    if (before % 2 == 1 || before != after) {
      shared_->forgiven++;
    } else {
      Fail(fmt::format("worker {}: {} via node {}: {}", id_, what, node, strerror(-rc)));
    }
    return false;
  }

  void Write() {
    int name = static_cast<int>(rng_() % kNamesPerWorker);
    uint64_t pick = rng_() % 100;
    uint64_t size = pick < 70   ? rng_() % (64 << 10)
                    : pick < 95 ? (64 << 10) + rng_() % (1 << 20)
                                : 4 * kMiB + rng_() % (5 * kMiB);
    Version v{size, (static_cast<uint64_t>(id_) << 32) | ++writes_};
    const std::string data = RandomBytes(v.size, v.seed);
    bool sync = rng_() % 3 == 0;
    shared_->writes++;
    bool ok = Attempt(node_, "write f" + std::to_string(name), [&] {
      int fd = open(Path(node_, name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) return -errno;
      int rc = WriteAll(fd, data);
      if (rc == 0 && sync && fsync(fd) != 0) rc = -errno;
      if (close(fd) != 0 && rc == 0) rc = -errno;
      return rc;
    });
    if (ok) {
      files_[name] = {v};
    } else {
      // The old bytes, the new ones, or the empty file O_TRUNC left.
      files_[name].insert(v);
      files_[name].insert(Version{0, 0});
    }
  }

  void Read() {
    int name = static_cast<int>(rng_() % kNamesPerWorker);
    int other = 1 - node_;
    int via = shared_->epoch[other].load() % 2 == 0 ? other : node_;
    shared_->reads++;
    std::string got;
    int err = 0;
    const std::string started = WallClock();
    ReadNotes seen;
    bool ok = Attempt(via, "read f" + std::to_string(name), [&] {
      got = ReadFile(Path(via, name), &seen);
      if (got.starts_with("<errno ")) {
        err = std::atoi(got.c_str() + 7);
        if (err == ENOENT) return 0;
        return -err;
      }
      return 0;
    });
    if (!ok) return;
    std::string why;
    if (Allows(name, got, err, &why)) return;
    // The other node learns of a rename or unlink here through the server's
    // change feed, one network hop later (README, "metadata caching"): until
    // then its cached name may still lead to what the name held before.
    // Content is never mixed: it must still be a whole earlier version.
    if (via != node_) {
      auto it = renamed_.find(name);
      if (it != renamed_.end() && Clock::now() < it->second.first) {
        for (const auto& v : it->second.second) {
          if (v && v->size == got.size() && RandomBytes(v->size, v->seed) == got) return;
        }
      }
    }
    Fail(fmt::format("worker {}: f{} read via node {} at {} (ino {}, size {} at open, reads {}): "
                     "{}{}",
                     id_, name, via, started, seen.ino, seen.size, seen.reads, why, WhatItIs(got)));
  }

  // For a failure: whose version the bytes are, whole or as a prefix (as
  // stale pages of a cache would show), by their first eight bytes.
  std::string WhatItIs(const std::string& got) const {
    if (got.size() < 8) return "";
    if (got.find_first_not_of('\0') == std::string::npos) return "; they are all zeros";
    for (uint64_t worker = 0; worker < 2 * kWorkersPerNode; ++worker) {
      for (uint64_t n = 1; n <= kMaxWritesLooked; ++n) {
        const uint64_t seed = (worker << 32) | n;
        if (RandomBytes(8, seed) != got.substr(0, 8)) continue;
        const std::string want = RandomBytes(got.size() & ~size_t{7}, seed);
        return fmt::format("; they begin as seed {} (worker {}, write {}), and {} it{}", seed,
                           worker, n, got.compare(0, want.size(), want) == 0 ? "follow" : "leave",
                           worker == static_cast<uint64_t>(id_) ? "" : " (ANOTHER WORKER'S)");
      }
    }
    return "; they begin as no version any worker wrote";
  }

  static std::string WallClock() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm local{};
    localtime_r(&ts.tv_sec, &local);
    return fmt::format("{:02}:{:02}:{:02}.{:03}", local.tm_hour, local.tm_min, local.tm_sec,
                       ts.tv_nsec / 1000000);
  }

  // What `name` held before a rename or unlink moved it away, as the other
  // node may still show it for a moment.
  void NoteMovedAway(int name) {
    renamed_[name] = {Clock::now() + std::chrono::seconds(1), files_[name]};
  }

  void Rename() {
    int from = static_cast<int>(rng_() % kNamesPerWorker);
    int to = static_cast<int>(rng_() % kNamesPerWorker);
    if (from == to) return;
    shared_->renames++;
    int err = 0;
    bool ok = Attempt(node_, fmt::format("rename f{} f{}", from, to), [&] {
      if (rename(Path(node_, from).c_str(), Path(node_, to).c_str()) == 0) return 0;
      err = errno;
      return err == ENOENT ? 0 : -err;
    });
    if (ok && err == ENOENT) {
      if (!files_[from].contains(std::nullopt)) {
        Fail(fmt::format("worker {}: rename f{}: ENOENT, expected {}", id_, from,
                         Describe(files_[from])));
      }
      files_[from] = {std::nullopt};
    } else if (ok) {
      Allowed moved = files_[from];
      moved.erase(std::nullopt);
      if (moved.empty()) {
        Fail(fmt::format("worker {}: rename f{} succeeded but it was absent", id_, from));
      }
      NoteMovedAway(to);
      NoteMovedAway(from);
      files_[to] = moved;
      files_[from] = {std::nullopt};
    } else {
      for (const auto& v : files_[from]) files_[to].insert(v);
      files_[from].insert(std::nullopt);
    }
  }

  void Unlink() {
    int name = static_cast<int>(rng_() % kNamesPerWorker);
    shared_->unlinks++;
    int err = 0;
    bool ok = Attempt(node_, "unlink f" + std::to_string(name), [&] {
      if (unlink(Path(node_, name).c_str()) == 0) return 0;
      err = errno;
      return err == ENOENT ? 0 : -err;
    });
    if (ok && err == ENOENT && !files_[name].contains(std::nullopt)) {
      Fail(fmt::format("worker {}: unlink f{}: ENOENT, expected {}", id_, name,
                       Describe(files_[name])));
    }
    if (ok) {
      NoteMovedAway(name);
      files_[name] = {std::nullopt};
    } else {
      files_[name].insert(std::nullopt);
    }
  }

  // The shared counter: flock across both nodes, read, add one, write back,
  // close (which commits, then releases the lock).
  void Increment() {
    shared_->locks++;
    const std::string path = mounts_[node_] + "/shared/counter";
    bool ok = Attempt(node_, "locked increment", [&] {
      int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) return -errno;
      if (flock(fd, LOCK_EX) != 0) {
        int err = errno;
        close(fd);
        return -err;
      }
      char buf[32] = {};
      ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
      if (n < 0) {
        int err = errno;
        close(fd);
        return -err;
      }
      uint64_t value = std::strtoull(buf, nullptr, 10);
      std::string next = fmt::format("{:020d}", value + 1);
      shared_->lock_attempted++;
      if (pwrite(fd, next.data(), next.size(), 0) != static_cast<ssize_t>(next.size())) {
        int err = errno;
        close(fd);
        return -err;
      }
      return close(fd) == 0 ? 0 : -errno;
    });
    if (ok) shared_->lock_acked++;
  }

  const int id_;
  const int node_;
  const std::vector<std::string> mounts_;
  Shared* shared_;
  std::vector<std::string> failures_;
  std::mt19937_64 rng_;
  uint64_t writes_ = 0;
  std::map<int, Allowed> files_;
  // name -> until when, and what it held before a rename or unlink.
  std::map<int, std::pair<Clock::time_point, Allowed>> renamed_;
};

TEST_F(SoakTest, MixedWorkloadThroughServerRestartsAndANodeKillLosesAndMixesNothing) {
  const int seconds = SoakSeconds();
  ASSERT_TRUE(std::filesystem::create_directories(A("shared")));
  ASSERT_EQ(WriteFile(A("shared/counter"), fmt::format("{:020d}", 0)), 0);

  // The workers are processes of their own, forked before any of them
  // opens a file on the mounts. The test process, which starts and restarts
  // the daemons, must hold no descriptor of a mount: a child it forks would
  // inherit them, and closing them at exec (FLUSH, which commits) would wait
  // for the very server that child is meant to become.
  void* mem =
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  Shared* shared = new (mem) Shared{};
  auto unmap = absl::MakeCleanup([&] { munmap(mem, sizeof(Shared)); });
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 2 * kWorkersPerNode; ++i) {
    workers.push_back(
        std::make_unique<Worker>(i, i % 2, std::vector<std::string>{mnt_a_, mnt_b_}, shared));
    ASSERT_EQ(mkdir(workers.back()->Dir(i % 2).c_str(), 0755), 0) << strerror(errno);
  }
  auto out_of = [&](int i) { return fmt::format("{}/worker-{}.out", dir_.path(), i); };

  std::vector<pid_t> pids;
  // Stopped and waited for (by PID) on every way out, a failed ASSERT
  // included; a worker that does not finish within a minute is killed.
  auto reap = absl::MakeCleanup([&] {
    shared->stop = true;
    auto give_up = Clock::now() + std::chrono::seconds(60);
    for (pid_t pid : pids) {
      int status = 0;
      while (waitpid(pid, &status, WNOHANG) == 0) {
        if (Clock::now() > give_up) {
          kill(pid, SIGKILL);
          waitpid(pid, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "worker " << pid << ": " << status;
    }
    pids.clear();
  });
  for (size_t i = 0; i < workers.size(); ++i) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      workers[i]->Run(out_of(static_cast<int>(i)));
      _exit(0);
    }
    pids.push_back(pid);
  }

  // The disturbances: a server restart every minute (SIGTERM and SIGKILL in
  // turn), node B killed once, half-way between two server restarts.
  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  const auto kill_b_at = start + std::chrono::seconds(std::min(90, seconds / 2));
  auto next_restart = start + std::chrono::seconds(std::min(60, seconds / 3));
  int restarts = 0;
  bool killed_b = false;
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (Clock::now() >= next_restart) {
      if (restarts % 2 == 0) {
        EXPECT_GE(server_->Stop(), 0);
      } else {
        server_->Kill();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      absl::Status started = server_->Start();
      ASSERT_TRUE(started.ok()) << started << "\n" << Tail(ReadFile(server_->log_file()));
      ++restarts;
      next_restart += std::chrono::seconds(60);
    }
    if (!killed_b && Clock::now() >= kill_b_at) {
      shared->epoch[1]++;  // odd: down
      b_->Kill();
      std::this_thread::sleep_for(std::chrono::seconds(1));
      ASSERT_TRUE(b_->Start({scope_}, NodeArgs()).ok()) << "see " << b_->log_file();
      shared->epoch[1]++;  // even: up again
      killed_b = true;
    }
  }
  std::move(reap).Invoke();
  EXPECT_GE(restarts, 1);
  EXPECT_TRUE(killed_b);
  std::vector<std::string> failures;
  for (size_t i = 0; i < workers.size(); ++i) {
    std::vector<std::string> some = workers[i]->Load(out_of(static_cast<int>(i)));
    failures.insert(failures.end(), some.begin(), some.end());
  }

  // Every name, through both nodes.
  auto check_all = [&](const std::string& when) {
    for (auto& w : workers) {
      for (int node = 0; node < 2; ++node) {
        for (const auto& [name, allowed] : w->files()) {
          std::string got = ReadFile(w->Path(node, name));
          int err = got.starts_with("<errno ") ? std::atoi(got.c_str() + 7) : 0;
          std::string why;
          EXPECT_TRUE(w->Allows(name, got, err, &why))
              << when << ": " << w->Path(node, name) << ": " << why;
        }
        // Nothing but the worker's own names.
        for (const std::string& entry : ListDir(w->Dir(node))) {
          EXPECT_TRUE(entry.size() >= 2 && entry[0] == 'f' &&
                      std::atoi(entry.c_str() + 1) < kNamesPerWorker)
              << when << ": unexpected " << w->Dir(node) << "/" << entry;
        }
      }
    }
    uint64_t counter = std::strtoull(ReadFile(B("shared/counter")).c_str(), nullptr, 10);
    EXPECT_GE(counter, shared->lock_acked.load()) << when << ": a locked increment was lost";
    EXPECT_LE(counter, shared->lock_attempted.load()) << when;
  };
  check_all("after the soak");

  // Everything again after a clean restart of every process: nothing was
  // acknowledged from memory only.
  for (auto* node : {a_.get(), b_.get()}) {
    int status = node->Stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see " << node->log_file();
  }
  EXPECT_GE(server_->Stop(), 0);
  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
  ASSERT_TRUE(a_->Start({scope_}, NodeArgs()).ok()) << "see " << a_->log_file();
  ASSERT_TRUE(b_->Start({scope_}, NodeArgs()).ok()) << "see " << b_->log_file();
  check_all("after restarting everything");

  for (const std::string& f : failures) ADD_FAILURE() << f;
  std::printf(
      "soak: %d s, %d server restarts, node B killed once; writes %lu, reads %lu, renames %lu, "
      "unlinks %lu, locked increments %lu (acknowledged %lu); failures forgiven while B was "
      "down: %lu; failures: %zu\n",
      seconds, restarts, shared->writes.load(), shared->reads.load(), shared->renames.load(),
      shared->unlinks.load(), shared->locks.load(), shared->lock_acked.load(),
      shared->forgiven.load(), failures.size());
}

}  // namespace
}  // namespace traincache::testing
