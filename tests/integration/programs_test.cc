// Issue 5 "Must show": the real programs a training job runs against its
// cache, on two node daemons mounting one project (MountTest: node A at
// mnt_a_, node B at mnt_b_). Python's filelock, the Hugging Face hub and
// datasets cache protocols, pip's cache writes, torch.save/load and a
// DataLoader, SQLite, git and tar, and O_CREAT|O_EXCL races between the nodes.
//
// The Python programs are in tests/integration/programs/ (each says what it
// reproduces and what its exit codes mean); they run under /usr/bin/python3,
// which has Debian's python3-filelock and python3-torch. Every test checks
// outcomes: bytes, counts, exit codes, attributes. Where a protocol step
// races between the nodes only now and then (a snapshot link re-created, a
// dataset directory renamed over), a test of its own repeats that step
// deterministically, within the other node's entry_ttl. Every program the tests
// start is the leader of its own process group and is killed by that id if it
// outlives its deadline, so a hang fails the test instead of stalling it.
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "integration/mount_fixture.h"
#include "traincache/types.h"

extern char** environ;

namespace traincache::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kPython[] = "/usr/bin/python3";  // Debian's, with python3-torch & co.
constexpr std::chrono::seconds kDeadline{300};

// A program a test runs: argv, where its output goes, its working directory
// ("" for the test's), and environment entries ("NAME=value") that override
// the test's own.
struct Program {
  std::vector<std::string> argv;
  std::string log;
  std::string cwd;
  std::vector<std::string> env;
};

// Programs started together and waited for together. Gated programs get the
// read end of one pipe as fd 3 and wait for its EOF (programs/gate.py), so a
// race starts only when every racer is up. Each child leads its own process
// group: what it forks (DataLoader workers, git's helpers) is killed with it,
// by the group's id, which is the PID this object holds.
class Programs {
 public:
  Programs() {
    if (pipe2(gate_, O_CLOEXEC) != 0) gate_[0] = gate_[1] = -1;
  }
  ~Programs() {
    OpenGate();
    if (gate_[0] >= 0) close(gate_[0]);
    KillRunning();
  }
  Programs(const Programs&) = delete;
  Programs& operator=(const Programs&) = delete;

  // Starts `p`; false if fork failed.
  bool Start(const Program& p, bool gated = false) {
    // Everything the child needs is built before fork: after it, only
    // async-signal-safe calls.
    std::map<std::string, std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string kv = *e;
      env[kv.substr(0, kv.find('='))] = kv;
    }
    env["PYTHONDONTWRITEBYTECODE"] =
        "PYTHONDONTWRITEBYTECODE=1";  // No __pycache__ in the source tree.
    for (const std::string& kv : p.env) env[kv.substr(0, kv.find('='))] = kv;
    std::vector<std::string> env_storage;
    for (auto& [name, kv] : env) env_storage.push_back(kv);
    std::vector<char*> envp, argv;
    for (std::string& kv : env_storage) envp.push_back(kv.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_storage = p.argv;
    for (std::string& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int gate_fd = gated ? gate_[0] : -1;

    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
      setpgid(0, 0);
      umask(022);
      int devnull = open("/dev/null", O_RDONLY);
      if (devnull >= 0) dup2(devnull, 0);
      int log = open(p.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) {
        dup2(log, 1);
        dup2(log, 2);
      }
      if (gate_fd >= 0) dup2(gate_fd, 3);  // dup2 clears O_CLOEXEC on fd 3.
      if (!p.cwd.empty() && chdir(p.cwd.c_str()) != 0) _exit(126);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    setpgid(pid, pid);  // Also here: the group exists before we could kill it.
    pids_.push_back(pid);
    codes_.push_back(-1);
    return true;
  }

  // Every gated program sees EOF on fd 3 at once.
  void OpenGate() {
    if (gate_[1] >= 0) close(gate_[1]);
    gate_[1] = -1;
  }

  // Waits for every program up to `timeout`, kills those still running;
  // returns the exit codes in start order (128+signal if a signal ended it,
  // -1 if it was still running at the deadline).
  std::vector<int> Wait(std::chrono::seconds timeout = kDeadline) {
    OpenGate();
    const auto deadline = Clock::now() + timeout;
    for (size_t i = 0; i < pids_.size(); ++i) {
      while (pids_[i] > 0) {
        int status = 0;
        pid_t r = waitpid(pids_[i], &status, WNOHANG);
        if (r == pids_[i]) {
          codes_[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          pids_[i] = -1;
        } else if (r < 0 || Clock::now() > deadline) {
          break;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    }
    KillRunning();
    return codes_;
  }

 private:
  // SIGKILL to the group of every program not yet reaped (its leader is
  // still ours, so the group id is too), then reap it.
  void KillRunning() {
    for (pid_t& pid : pids_) {
      if (pid <= 0) continue;
      kill(-pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }

  int gate_[2] = {-1, -1};
  std::vector<pid_t> pids_;
  std::vector<int> codes_;
};

// Runs one program to completion; its exit code as Programs::Wait.
int RunToEnd(const Program& p, std::chrono::seconds timeout = kDeadline) {
  Programs one;
  if (!one.Start(p)) return -1;
  return one.Wait(timeout)[0];
}

int RunToEnd(std::vector<std::string> argv, std::string log, std::string cwd = "",
             std::vector<std::string> env = {}) {
  return RunToEnd(Program{std::move(argv), std::move(log), std::move(cwd), std::move(env)});
}

std::string Sha256Hex(std::string_view data) { return ChunkId::Of(data).ToHex(); }

std::string ReadLink(const std::string& path) {
  std::error_code ec;
  fs::path target = fs::read_symlink(path, ec);
  return ec ? "<" + ec.message() + ">" : target.string();
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class ProgramsTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    fs::create_directories(dir_.Sub("logs"));
  }

  static std::string Script(const std::string& name) {
    return std::string(TRAINCACHE_SOURCE_DIR) + "/tests/integration/programs/" + name;
  }
  // A log file of its own for each program a test runs.
  std::string Log(const std::string& name) { return dir_.Sub("logs/" + name + ".log"); }

  // /usr/bin/python3 <script> <args...>, its output in Log(log).
  Program Python(const std::string& script, std::vector<std::string> args, const std::string& log) {
    Program p{{kPython, Script(script)}, Log(log), "", {}};
    p.argv.insert(p.argv.end(), args.begin(), args.end());
    return p;
  }

  // Starts every program gated, opens the gate, waits; expects exit 0 from each.
  void RunRace(const std::vector<Program>& programs) {
    Programs group;
    for (const Program& p : programs) ASSERT_TRUE(group.Start(p, /*gated=*/true));
    group.OpenGate();
    std::vector<int> codes = group.Wait();
    for (size_t i = 0; i < codes.size(); ++i) {
      EXPECT_EQ(codes[i], 0) << programs[i].argv[1] << ": " << ReadFile(programs[i].log);
    }
  }
};

// --- filelock: a counter incremented under FileLock -------------------------

constexpr int kIncrements = 200;

TEST_F(ProgramsTest, FileLockCounterEightProcessesOnOneNode) {
  ASSERT_EQ(WriteFile(A("counter"), "0"), 0);
  std::vector<Program> racers;
  for (int i = 0; i < 8; ++i) {
    racers.push_back(
        Python("filelock_counter.py",
               {A("counter"), "--times", std::to_string(kIncrements), "--gate-fd", "3"},
               "counter-a" + std::to_string(i)));
  }
  RunRace(racers);
  EXPECT_EQ(ReadFile(A("counter")), "1600");
  EXPECT_EQ(ReadFile(B("counter")), "1600");
}

// The acceptance test of cross-node locks: until flock/fcntl reach a lock
// service on the server, each node's kernel keeps its own locks and the two
// nodes' increments interleave (lost updates, or a read of a half-written
// counter: exit 3).
TEST_F(ProgramsTest, FileLockCounterFourProcessesOnEachOfTwoNodes) {
  ASSERT_EQ(WriteFile(A("counter"), "0"), 0);
  std::vector<Program> racers;
  for (int i = 0; i < 8; ++i) {
    const bool on_a = i % 2 == 0;
    racers.push_back(Python("filelock_counter.py",
                            {on_a ? A("counter") : B("counter"), "--times",
                             std::to_string(kIncrements), "--gate-fd", "3"},
                            std::string(on_a ? "counter-a" : "counter-b") + std::to_string(i)));
  }
  RunRace(racers);
  EXPECT_EQ(ReadFile(A("counter")), "1600");
  EXPECT_EQ(ReadFile(B("counter")), "1600");
}

// --- Hugging Face hub download ----------------------------------------------

TEST_F(ProgramsTest, HuggingFaceHubDownloadsFromBothNodesIntoOneCache) {
  const std::string config = R"({"model_type": "bert", "hidden_size": 768})";
  const std::map<std::string, std::string> remote_files = {
      {"config.json", config},
      {"README.md", "# tiny model\n"},
      {"model.safetensors", RandomBytes(20 * kMiB + 12345, 51)},
      {"tokenizer/tokenizer.json", RandomBytes(300 << 10, 52)},
      {"onnx/fp16/model.onnx", RandomBytes(3 * kMiB + 1, 53)},
      {"configs/copy_of_config.json", config},  // Same etag: one blob, two pointers.
  };
  const std::string remote = dir_.Sub("remote");
  for (const auto& [rel, data] : remote_files) {
    fs::create_directories(fs::path(remote + "/" + rel).parent_path());
    ASSERT_EQ(WriteFile(remote + "/" + rel, data), 0);
  }
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";

  // Three processes on each node, each fetching the files in its own order.
  std::vector<Program> downloaders;
  for (int i = 0; i < 6; ++i) {
    const bool on_a = i < 3;
    downloaders.push_back(
        Python("hf_download.py",
               {"--hf-home", on_a ? A("hf") : B("hf"), "--repo", "org/tiny", "--remote", remote,
                "--commit", commit, "--seed", std::to_string(i), "--gate-fd", "3"},
               std::string("hf-") + (on_a ? "a" : "b") + std::to_string(i)));
  }
  RunRace(downloaders);
  // Who downloaded, linked or found each file (one line per process).
  std::string stats;
  for (const Program& p : downloaders) stats += Trim(ReadFile(p.log)) + "; ";
  RecordProperty("downloaders", stats);

  const std::string repo = "hf/hub/models--org--tiny";
  std::set<std::string> etags;
  for (const auto& [rel, data] : remote_files) etags.insert(Sha256Hex(data));
  for (const std::string& mnt : {mnt_a_, mnt_b_}) {
    SCOPED_TRACE(mnt);
    const std::string storage = mnt + "/" + repo;
    for (const auto& [rel, data] : remote_files) {
      const std::string pointer = storage + "/snapshots/" + commit + "/" + rel;
      std::string up = "../../";
      for (char c : rel) up += c == '/' ? "../" : "";
      EXPECT_EQ(ReadLink(pointer), up + "blobs/" + Sha256Hex(data)) << rel;
      const std::string seen = ReadFile(pointer);  // Through the symlink.
      EXPECT_EQ(seen.size(), data.size()) << rel;
      EXPECT_TRUE(seen == data) << rel << " read through its snapshot link differs";
    }
    EXPECT_EQ(ReadFile(storage + "/refs/main"), commit);
    EXPECT_EQ(ListDir(storage + "/blobs"), etags);
    for (const std::string& etag : etags) {
      struct stat st {};
      ASSERT_EQ(stat((storage + "/blobs/" + etag).c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0644u) << "chmod_and_replace gives the cache's mode";
      EXPECT_TRUE(fs::exists(mnt + "/hf/hub/.locks/models--org--tiny/" + etag + ".lock"));
    }
    EXPECT_EQ(ListDir(storage), (std::set<std::string>{"blobs", "refs", "snapshots"}))
        << "tmp_* files of chmod_and_replace or temp dirs left behind";
    EXPECT_EQ(FilesEndingWith(mnt + "/hf", ".incomplete"), std::vector<std::string>{});
    EXPECT_EQ(FilesEndingWith(mnt + "/hf", ".tmp"), std::vector<std::string>{});
  }
}

// The step of _create_symlink that two nodes race on, made deterministic:
// node B has the snapshot link cached (its kernel keeps the name for
// entry_ttl), node A removes and re-creates it (a new inode under the same
// name); B must follow the new link at once, not fail on the old inode.
TEST_F(ProgramsTest, HuggingFaceSnapshotLinkRecreatedOnTheOtherNodeIsFollowedAtOnce) {
  ASSERT_TRUE(fs::create_directories(A("snap/blobs")));
  ASSERT_TRUE(fs::create_directories(A("snap/snapshots/rev")));
  ASSERT_EQ(WriteFile(A("snap/blobs/etag1"), "one"), 0);
  ASSERT_EQ(WriteFile(A("snap/blobs/etag2"), "two"), 0);
  const std::string link = "snap/snapshots/rev/model.bin";
  ASSERT_EQ(symlink("../../blobs/etag1", A(link).c_str()), 0);
  ASSERT_EQ(ReadFile(B(link)), "one");  // B's kernel now holds the name.
  ASSERT_EQ(unlink(A(link).c_str()), 0);
  ASSERT_EQ(symlink("../../blobs/etag2", A(link).c_str()), 0);
  EXPECT_EQ(ReadLink(B(link)), "../../blobs/etag2");
  EXPECT_EQ(ReadFile(B(link)), "two");
}

// --- datasets: build into <dir>.incomplete, rename into place ----------------

// Compares `path` with `expected` through mmap(MAP_PRIVATE), as the C++ side
// of a reader would; "" if equal, else what differs.
std::string CompareThroughPrivateMap(const std::string& path, const std::string& expected) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "open: errno " + std::to_string(errno);
  struct stat st {};
  fstat(fd, &st);
  if (static_cast<size_t>(st.st_size) != expected.size()) {
    close(fd);
    return "size " + std::to_string(st.st_size);
  }
  void* map = mmap(nullptr, expected.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);  // The map keeps the file open.
  if (map == MAP_FAILED) return "mmap: errno " + std::to_string(errno);
  std::string result;
  if (std::memcmp(map, expected.data(), expected.size()) != 0) {
    const char* p = static_cast<const char*>(map);
    size_t i = 0;
    while (p[i] == expected[i]) ++i;
    result = "first difference at " + std::to_string(i);
  }
  munmap(map, expected.size());
  return result;
}

TEST_F(ProgramsTest, DatasetsDirectoryRenamedIntoPlaceIsReadThroughMmapOnTheOtherNode) {
  const std::string out = "datasets/squadish/default/0.0.0/0123456789abcdef";
  // Built on A, read on B; then rebuilt on A (the old directory removed, the
  // new one renamed over its name) and read on B again.
  for (int version : {1, 2}) {
    SCOPED_TRACE("version " + std::to_string(version));
    const std::string expect = dir_.Sub("expect-v" + std::to_string(version));
    ASSERT_EQ(RunToEnd(Python("datasets_build.py",
                              {"--cache-dir", A("datasets"), "--seed", std::to_string(version * 10),
                               "--expect-dir", expect},
                              "datasets-build-v" + std::to_string(version))),
              0)
        << ReadFile(Log("datasets-build-v" + std::to_string(version)));
    EXPECT_FALSE(fs::exists(A(out + ".incomplete")));
    EXPECT_FALSE(fs::exists(B(out + ".incomplete")));
    EXPECT_EQ(ListDir(B(out)), ListDir(expect));
    for (std::string split : {"squadish-train.arrow", "squadish-test.arrow"}) {
      const std::string log = "mmap-v" + std::to_string(version) + "-" + split;
      EXPECT_EQ(
          RunToEnd(Python("mmap_compare.py", {B(out + "/" + split), expect + "/" + split}, log)), 0)
          << ReadFile(Log(log));
      EXPECT_EQ(CompareThroughPrivateMap(B(out + "/" + split), ReadFile(expect + "/" + split)), "")
          << split;
    }
    for (std::string meta : {"dataset_info.json", "state.json"}) {
      EXPECT_EQ(ReadFile(B(out + "/" + meta)), ReadFile(expect + "/" + meta)) << meta;
    }
  }
}

// The rebuild step of incomplete_dir made deterministic: node B has listed
// the dataset directory (its kernel keeps the name for entry_ttl), node A
// removes it and renames a new directory over its name; B must list and read
// the new one at once, not fail on the old directory's inode.
TEST_F(ProgramsTest, DatasetsDirectoryReplacedOnTheOtherNodeIsListedAtOnce) {
  ASSERT_TRUE(fs::create_directories(A("ds/out")));
  ASSERT_EQ(WriteFile(A("ds/out/v1.arrow"), "v1"), 0);
  ASSERT_EQ(ListDir(B("ds/out")), std::set<std::string>{"v1.arrow"});
  ASSERT_TRUE(fs::create_directories(A("ds/out.incomplete")));
  ASSERT_EQ(WriteFile(A("ds/out.incomplete/v2.arrow"), "v2"), 0);
  fs::remove_all(A("ds/out"));
  ASSERT_EQ(rename(A("ds/out.incomplete").c_str(), A("ds/out").c_str()), 0);
  EXPECT_EQ(ListDir(B("ds/out")), std::set<std::string>{"v2.arrow"});
  EXPECT_EQ(ReadFile(B("ds/out/v2.arrow")), "v2");
}

// The same, read the way a datasets reader does it: straight to a file of
// the directory (dataset_info.json), no listing first. The kernel looks the
// new name up in the old directory's inode, which is gone from the server.
TEST_F(ProgramsTest, DatasetsFileInADirectoryReplacedOnTheOtherNodeOpensAtOnce) {
  ASSERT_TRUE(fs::create_directories(A("ds/out")));
  ASSERT_EQ(WriteFile(A("ds/out/dataset_info.json"), "v1"), 0);
  ASSERT_EQ(ReadFile(B("ds/out/dataset_info.json")), "v1");
  ASSERT_TRUE(fs::create_directories(A("ds/out.incomplete")));
  ASSERT_EQ(WriteFile(A("ds/out.incomplete/dataset_info.json"), "v2"), 0);
  ASSERT_EQ(WriteFile(A("ds/out.incomplete/state.json"), "{}"), 0);
  fs::remove_all(A("ds/out"));
  ASSERT_EQ(rename(A("ds/out.incomplete").c_str(), A("ds/out").c_str()), 0);
  EXPECT_EQ(ReadFile(B("ds/out/state.json")), "{}");  // A name the old directory never had.
  EXPECT_EQ(ReadFile(B("ds/out/dataset_info.json")), "v2");
}

// --- pip: adjacent temp file, fsync, os.replace; root-owned cache ------------

// st_uid of `path` as pip sees it: open(O_RDONLY|O_NOFOLLOW|O_DIRECTORY) + fstat.
int OwnerThroughNoFollowOpen(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st {};
  int rc = fstat(fd, &st);
  close(fd);
  return rc == 0 ? static_cast<int>(st.st_uid) : -errno;
}

TEST_F(ProgramsTest, PipCacheEntriesReplacedAtomicallyFromBothNodesInARootOwnedFolder) {
  // One writer per node at once, each with its own entries plus one entry
  // both replace; then each node verifies every entry.
  RunRace({Python("pip_cache.py",
                  {"write", "--cache-dir", A("pip"), "--writers", "node-a", "--gate-fd", "3"},
                  "pip-write-a"),
           Python("pip_cache.py",
                  {"write", "--cache-dir", B("pip"), "--writers", "node-b", "--gate-fd", "3"},
                  "pip-write-b")});
  for (const std::string& mnt : {mnt_a_, mnt_b_}) {
    SCOPED_TRACE(mnt);
    const std::string log = mnt == mnt_a_ ? "pip-verify-a" : "pip-verify-b";
    EXPECT_EQ(RunToEnd(Python("pip_cache.py",
                              {"verify", "--cache-dir", mnt + "/pip", "--writers", "node-a,node-b"},
                              log)),
              0)
        << ReadFile(Log(log));
    EXPECT_EQ(OwnerThroughNoFollowOpen(mnt + "/pip"), 0);
    EXPECT_EQ(OwnerThroughNoFollowOpen(mnt + "/pip/http-v2"), 0);
    EXPECT_EQ(FilesEndingWith(mnt + "/pip", ".tmp"), std::vector<std::string>{});
  }
}

// --- torch ------------------------------------------------------------------

TEST_F(ProgramsTest, TorchSaveOnNodeALoadOnNodeB) {
  fs::create_directories(A("checkpoints"));
  const std::string local = dir_.Sub("model.pt");
  ASSERT_EQ(RunToEnd(Python("torch_checkpoint.py",
                            {"save", A("checkpoints/model.pt"), "--local", local}, "torch-save")),
            0)
      << ReadFile(Log("torch-save"));
  EXPECT_EQ(RunToEnd(Python("torch_checkpoint.py",
                            {"load", B("checkpoints/model.pt"), "--local", local}, "torch-load")),
            0)
      << ReadFile(Log("torch-load"));
  const std::string saved = ReadFile(local);
  EXPECT_GT(saved.size(), 4 * kMiB);
  EXPECT_TRUE(ReadFile(B("checkpoints/model.pt")) == saved) << "torch.save wrote other bytes";
}

TEST_F(ProgramsTest, TorchDataLoaderWithFourWorkersOnNodeBReadsEveryFileOnce) {
  ASSERT_EQ(RunToEnd(Python("torch_dataloader.py", {"write", A("dataset"), "--files", "200"},
                            "dataloader-write")),
            0)
      << ReadFile(Log("dataloader-write"));
  EXPECT_EQ(RunToEnd(Python("torch_dataloader.py",
                            {"read", B("dataset"), "--files", "200", "--workers", "4"},
                            "dataloader-read")),
            0)
      << ReadFile(Log("dataloader-read"));
}

// --- sqlite3 ----------------------------------------------------------------

TEST_F(ProgramsTest, SqliteFourWritersOnOneNodeInRollbackJournalModeLoseNoRow) {
  fs::create_directories(A("db"));
  const std::string db = "db/app.sqlite";
  ASSERT_EQ(RunToEnd(Python("sqlite_writer.py", {"init", A(db)}, "sqlite-init")), 0)
      << ReadFile(Log("sqlite-init"));
  std::vector<Program> writers;
  for (int i = 0; i < 4; ++i) {
    writers.push_back(
        Python("sqlite_writer.py",
               {"write", A(db), "--writer", std::to_string(i), "--rows", "200", "--gate-fd", "3"},
               "sqlite-writer" + std::to_string(i)));
  }
  RunRace(writers);
  EXPECT_FALSE(fs::exists(A(db + "-journal")));

  // The sqlite3 program checks the database on both nodes.
  for (const std::string& mnt : {mnt_a_, mnt_b_}) {
    SCOPED_TRACE(mnt);
    const std::string log = Log(mnt == mnt_a_ ? "sqlite-check-a" : "sqlite-check-b");
    ASSERT_EQ(RunToEnd({"/usr/bin/sqlite3", mnt + "/" + db,
                        "PRAGMA integrity_check; SELECT count(*), count(DISTINCT "
                        "writer * 1000 + seq) FROM rows; SELECT writer, count(*) FROM rows "
                        "GROUP BY writer;"},
                       log),
              0)
        << ReadFile(log);
    EXPECT_EQ(ReadFile(log), "ok\n800|800\n0|200\n1|200\n2|200\n3|200\n");
  }
}

// --- git --------------------------------------------------------------------

TEST_F(ProgramsTest, GitCommitOnTheMountCloneToTheMountFromBothNodesAndFsck) {
  const std::string home = dir_.Sub("home");
  fs::create_directories(home);
  std::ofstream(home + "/.gitconfig") << "[user]\n\tname = Programs Test\n"
                                      << "\temail = programs@example.com\n"
                                      << "[safe]\n\tdirectory = *\n"
                                      << "[init]\n\tdefaultBranch = main\n";
  const std::vector<std::string> env = {"HOME=" + home, "GIT_CONFIG_GLOBAL=" + home + "/.gitconfig",
                                        "GIT_CONFIG_NOSYSTEM=1"};
  int n = 0;
  // git <args...> in `cwd`; its exit code, its output in *out.
  auto git = [&](const std::string& cwd, std::vector<std::string> args,
                 std::string* out = nullptr) {
    std::string log = Log("git-" + std::to_string(n++));
    args.insert(args.begin(), "/usr/bin/git");
    int code = RunToEnd(args, log, cwd, env);
    if (out != nullptr) *out = ReadFile(log);
    if (code != 0) ADD_FAILURE() << "git " << args[1] << " in " << cwd << ": " << ReadFile(log);
    return code;
  };

  std::map<std::string, std::string> files = {
      {"README.md", "# project\n"},
      {"src/main.cc", "int main() { return 0; }\n"},
      {"src/util/helper.py", "def helper():\n    return 42\n"},
      {"data/weights.bin", RandomBytes(kMiB + 3, 71)},
      {"run.sh", "#!/bin/sh\necho run\n"},
  };
  const std::string repo = A("repo");
  for (const auto& [rel, data] : files) {
    fs::create_directories(fs::path(repo + "/" + rel).parent_path());
    ASSERT_EQ(WriteFile(repo + "/" + rel, data), 0);
  }
  ASSERT_EQ(chmod((repo + "/run.sh").c_str(), 0755), 0);
  fs::create_symlink("README.md", repo + "/readme-link");
  ASSERT_EQ(git(mnt_a_, {"init", "-q", "repo"}), 0);
  ASSERT_EQ(git(repo, {"add", "-A"}), 0);
  ASSERT_EQ(git(repo, {"commit", "-q", "-m", "first"}), 0);
  files["src/main.cc"] = "int main() { return 1; }\n";
  files["docs/notes.txt"] = "second commit\n";
  for (std::string rel : {"src/main.cc", "docs/notes.txt"}) {
    fs::create_directories(fs::path(repo + "/" + rel).parent_path());
    ASSERT_EQ(WriteFile(repo + "/" + rel, files[rel]), 0);
  }
  ASSERT_EQ(git(repo, {"add", "-A"}), 0);
  ASSERT_EQ(git(repo, {"commit", "-q", "-m", "second"}), 0);
  // gc: packs the objects, prunes the loose ones, writes packed-refs (all
  // through *.lock files renamed into place).
  ASSERT_EQ(git(repo, {"gc", "-q"}), 0);
  std::string head;
  ASSERT_EQ(git(repo, {"rev-parse", "HEAD"}, &head), 0);
  head = Trim(head);
  ASSERT_EQ(head.size(), 40u) << head;

  // On B from B's view of the repo: a local clone (objects hardlinked). On
  // A: a clone through the pack protocol (upload-pack, index-pack).
  ASSERT_EQ(git(mnt_b_, {"clone", "-q", B("repo"), "clone-b"}), 0);
  ASSERT_EQ(git(mnt_a_, {"clone", "-q", "--no-local", A("repo"), "clone-a"}), 0);

  // Every repository checked by fsck on the node that did not write it.
  for (const std::string& r : {B("repo"), A("clone-b"), B("clone-a")}) {
    EXPECT_EQ(git(r, {"fsck", "--full", "--strict"}), 0) << r;
  }
  for (const std::string& clone : {B("clone-b"), A("clone-a"), A("clone-b"), B("clone-a")}) {
    SCOPED_TRACE(clone);
    std::string out;
    EXPECT_EQ(git(clone, {"rev-parse", "HEAD"}, &out), 0);
    EXPECT_EQ(Trim(out), head);
    EXPECT_EQ(git(clone, {"status", "--porcelain"}, &out), 0);
    EXPECT_EQ(out, "");
    for (const auto& [rel, data] : files) {
      EXPECT_TRUE(ReadFile(clone + "/" + rel) == data) << rel;
    }
    struct stat st {};
    ASSERT_EQ(stat((clone + "/run.sh").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0755u);
    EXPECT_EQ(ReadLink(clone + "/readme-link"), "README.md");
  }
}

// --- tar --------------------------------------------------------------------

// Sets `path`'s times (not following a symlink) to `sec`.`nsec`.
void SetTimes(const std::string& path, time_t sec, long nsec) {
  timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << path;
}

TEST_F(ProgramsTest, TarExtractedOntoTheMountKeepsModesOwnersTimesAndLinks) {
  const std::string src = dir_.Sub("tar-src");
  auto at = [&](const std::string& rel) { return src + "/" + rel; };
  auto dir = [&](const std::string& rel, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
    fs::create_directories(at(rel));
    ASSERT_EQ(chown(at(rel).c_str(), uid, gid), 0);
    ASSERT_EQ(chmod(at(rel).c_str(), mode), 0);
  };
  auto file = [&](const std::string& rel, std::string_view data, mode_t mode, uid_t uid = 0,
                  gid_t gid = 0) {
    ASSERT_EQ(WriteFile(at(rel), data), 0);
    ASSERT_EQ(chown(at(rel).c_str(), uid, gid), 0);
    ASSERT_EQ(chmod(at(rel).c_str(), mode), 0);  // After chown, which clears set-id bits.
  };
  dir("", 0755);
  dir("bin", 0755);
  file("bin/tool", "#!/bin/sh\necho tool\n", 0755);
  file("secret.key", "-----BEGIN KEY-----\n", 0600, 1000, 1000);
  file("readonly.txt", "read only\n", 0444);
  file("big.bin", RandomBytes(5 * kMiB + 7, 81), 0644);
  file("empty", "", 0644);
  file("setuid-tool", "suid\n", 04755);
  file("name with spaces \xc3\xbc.txt", "unicode\n", 0644);
  dir("private", 0700);
  file("private/notes.txt", "notes\n", 0640, 0, 100);
  dir("shared", 02775, 0, 100);  // setgid directory
  file("shared/group.txt", "group\n", 0664, 0, 100);
  dir("tmp", 01777);  // sticky
  dir("data", 0755);
  file("data/a.bin", RandomBytes(100000, 82), 0644, 1000, 100);
  dir("other", 0750, 1000, 1000);
  ASSERT_EQ(link(at("data/a.bin").c_str(), at("data/b.bin").c_str()), 0);
  ASSERT_EQ(link(at("data/a.bin").c_str(), at("other/c.bin").c_str()), 0);  // 3 names
  ASSERT_EQ(symlink("tool", at("bin/latest").c_str()), 0);
  ASSERT_EQ(symlink("/etc/hostname", at("abs-link").c_str()), 0);
  ASSERT_EQ(symlink("does/not/exist", at("dangling").c_str()), 0);
  ASSERT_EQ(symlink("private", at("dirlink").c_str()), 0);
  ASSERT_EQ(symlink("../secret.key", at("other/owned-link").c_str()), 0);
  ASSERT_EQ(lchown(at("other/owned-link").c_str(), 1000, 1000), 0);

  // Distinct past times, set once every entry exists (a creation would
  // change its directory's mtime again).
  std::vector<std::string> entries = {"."};
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator();
       ++it) {
    entries.push_back(it->path().lexically_relative(src).string());
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    SetTimes(at(entries[i]), 1'600'000'000 + static_cast<time_t>(i) * 3600, 123456789);
  }

  RecordProperty("entries", static_cast<int>(entries.size()));

  const std::string tarball = dir_.Sub("tree.tar");
  ASSERT_EQ(RunToEnd({"/usr/bin/tar", "-C", src, "-cf", tarball, "."}, Log("tar-c")), 0)
      << ReadFile(Log("tar-c"));
  fs::create_directories(A("untar"));
  ASSERT_EQ(
      RunToEnd({"/usr/bin/tar", "--same-owner", "-xpf", tarball, "-C", A("untar")}, Log("tar-x")),
      0)
      << ReadFile(Log("tar-x"));
  EXPECT_EQ(RunToEnd({"/usr/bin/diff", "-r", "--no-dereference", src, A("untar")}, Log("diff")), 0)
      << ReadFile(Log("diff"));

  for (const std::string& mnt : {mnt_a_, mnt_b_}) {
    SCOPED_TRACE(mnt);
    for (const std::string& rel : entries) {
      struct stat want {
      }, got{};
      ASSERT_EQ(lstat(at(rel).c_str(), &want), 0);
      ASSERT_EQ(lstat((mnt + "/untar/" + rel).c_str(), &got), 0) << rel;
      EXPECT_EQ(got.st_mode, want.st_mode) << rel;
      EXPECT_EQ(got.st_uid, want.st_uid) << rel;
      EXPECT_EQ(got.st_gid, want.st_gid) << rel;
      EXPECT_EQ(got.st_mtim.tv_sec, want.st_mtim.tv_sec) << rel;
      if (!S_ISDIR(want.st_mode)) {
        EXPECT_EQ(got.st_size, want.st_size) << rel;
      }
      if (S_ISLNK(want.st_mode)) {
        EXPECT_EQ(ReadLink(mnt + "/untar/" + rel), ReadLink(at(rel))) << rel;
      }
      if (S_ISREG(want.st_mode)) {
        EXPECT_EQ(got.st_nlink, want.st_nlink) << rel;
      }
    }
    struct stat a {
    }, b{}, c{};
    ASSERT_EQ(stat((mnt + "/untar/data/a.bin").c_str(), &a), 0);
    ASSERT_EQ(stat((mnt + "/untar/data/b.bin").c_str(), &b), 0);
    ASSERT_EQ(stat((mnt + "/untar/other/c.bin").c_str(), &c), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
    EXPECT_EQ(a.st_ino, c.st_ino);
    EXPECT_EQ(a.st_nlink, 3u);
  }
}

// --- O_CREAT|O_EXCL races between the nodes ----------------------------------

// One byte from `fd` within `timeout`; -1 on EOF, error or timeout.
int ReadByte(int fd, std::chrono::milliseconds timeout) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) return -1;
  unsigned char c;
  return read(fd, &c, 1) == 1 ? c : -1;
}

TEST_F(ProgramsTest, CreateExclusiveRacedFromBothNodesHasOneWinnerPerRound) {
  constexpr int kRounds = 300;
  ASSERT_TRUE(fs::create_directories(A("excl")));
  // A racer per node, each a process of its own: at each go byte it tries
  // O_CREAT|O_EXCL on the round's name and reports W (won, wrote its letter
  // and closed), E (EEXIST) or X (another errno, sent as the next byte).
  // Closing its go pipe makes it exit; one that does not is killed by PID.
  struct Racer {
    pid_t pid = -1;
    int go = -1, result = -1;
    ~Racer() {
      if (go >= 0) close(go);
      if (result >= 0) close(result);
      if (pid <= 0) return;
      auto deadline = Clock::now() + std::chrono::seconds(30);
      while (waitpid(pid, nullptr, WNOHANG) == 0) {
        if (Clock::now() > deadline) {
          kill(pid, SIGKILL);
          waitpid(pid, nullptr, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  };
  std::vector<std::unique_ptr<Racer>> racers;
  for (const std::string& mnt : {mnt_a_, mnt_b_}) {
    const char letter = mnt == mnt_a_ ? 'A' : 'B';
    std::vector<std::string> names;
    for (int r = 0; r < kRounds; ++r) names.push_back(mnt + "/excl/round-" + std::to_string(r));
    int go[2], result[2];
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(result, O_CLOEXEC), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(go[1]);
      close(result[0]);
      for (const std::string& name : names) {
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        int fd = open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        char reply[2] = {'W', 0};
        if (fd >= 0) {
          if (write(fd, &letter, 1) != 1 || close(fd) != 0) reply[0] = 'C';
        } else {
          reply[0] = errno == EEXIST ? 'E' : 'X';
          reply[1] = static_cast<char>(errno);
        }
        if (write(result[1], reply, reply[0] == 'X' ? 2 : 1) < 1) _exit(1);
      }
      _exit(0);
    }
    close(go[0]);
    close(result[1]);
    auto& racer = racers.emplace_back(std::make_unique<Racer>());
    racer->pid = pid;
    racer->go = go[1];
    racer->result = result[0];
  }

  // A racer that died must fail the test, not kill it with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  std::vector<char> winner(kRounds, '?');
  int bad_rounds = 0;
  for (int r = 0; r < kRounds && bad_rounds < 5; ++r) {
    for (auto& racer : racers) EXPECT_EQ(write(racer->go, "g", 1), 1);
    std::string replies;
    for (auto& racer : racers) {
      int c = ReadByte(racer->result, std::chrono::seconds(60));
      replies += c < 0 ? '?' : static_cast<char>(c);
      if (c == 'X') {
        replies +=
            "(errno " + std::to_string(ReadByte(racer->result, std::chrono::seconds(5))) + ")";
      }
    }
    if (replies == "WE") winner[r] = 'A';
    if (replies == "EW") winner[r] = 'B';
    if (winner[r] == '?') {
      ++bad_rounds;
      ADD_FAILURE() << "round " << r << ": A, B replied " << replies
                    << " (W won, E EEXIST, X other errno, C write/close failed, ? no answer)";
    }
  }
  racers.clear();  // Both exit (their go pipes closed) before the files are read.
  int a_wins = 0;
  for (int r = 0; r < kRounds; ++r) {
    if (winner[r] == '?') continue;
    a_wins += winner[r] == 'A';
    const std::string name = "excl/round-" + std::to_string(r);
    EXPECT_EQ(ReadFile(A(name)), std::string(1, winner[r])) << name;
    EXPECT_EQ(ReadFile(B(name)), std::string(1, winner[r])) << name;
  }
  RecordProperty("a_wins", a_wins);
}

}  // namespace
}  // namespace traincache::testing
