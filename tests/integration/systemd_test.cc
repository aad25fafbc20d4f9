// Deployment under systemd, tested without a running systemd (nothing here
// calls systemctl or touches the machine's units):
//   - the units in deploy/systemd pass `systemd-analyze verify` (copies whose
//     binary paths point at this build), and broken copies do not;
//   - the node unit keeps the host's mount namespace and reaches /dev/fuse;
//   - deploy/tmpfiles.d creates every folder the example configs name;
//   - the daemons speak sd_notify: READY=1 only once they serve (the node:
//     once its mounts answer), STOPPING=1 on SIGTERM;
//   - the node unit's own command line, filled from deploy/config/node.env,
//     starts a node with the unit's capability bounding set and
//     NoNewPrivileges (against a server with its unit's: none), and its
//     ExecStopPost clears the dead mounts a killed daemon leaves, touching
//     nothing else.
// Every process is stopped by PID; every mount is detached even on failure.
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/mount_fixture.h"
#include "testing/metrics_scrape.h"

namespace traincache::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kSource = TRAINCACHE_SOURCE_DIR;
const std::string kServerUnit = kSource + "/deploy/systemd/traincache-server.service";
const std::string kNodeUnit = kSource + "/deploy/systemd/traincache-node.service";
const std::string kNodeEnv = kSource + "/deploy/config/node.env";
const std::string kServerToml = kSource + "/deploy/config/server.toml";
const std::string kTmpfiles = kSource + "/deploy/tmpfiles.d/traincache.conf";
const std::string kUnmountScript = kSource + "/deploy/traincache-unmount-leftovers";
// Where the units expect the installed programs.
const std::string kInstalledServer = "/usr/local/bin/traincache-server";
const std::string kInstalledNode = "/usr/local/bin/traincache-node";
const std::string kInstalledScript = "/usr/local/libexec/traincache-unmount-leftovers";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteAll(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// An installed program, or "" (then the test is skipped).
std::string Program(const std::string& name) {
  for (const char* dir : {"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"}) {
    std::string path = dir + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// A unit file's [Service]/[Unit] settings as "Key" -> values (in order), with
// continuation lines joined and comments dropped.
std::multimap<std::string, std::string> UnitSettings(const std::string& text) {
  std::multimap<std::string, std::string> out;
  std::istringstream in(text);
  std::string line, joined;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\\') {
      joined += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    joined += line;
    if (!joined.empty() && joined[0] != '#' && joined[0] != ';' && joined[0] != '[') {
      size_t eq = joined.find('=');
      if (eq != std::string::npos) out.emplace(joined.substr(0, eq), joined.substr(eq + 1));
    }
    joined.clear();
  }
  return out;
}

std::string Setting(const std::multimap<std::string, std::string>& settings,
                    const std::string& key) {
  auto it = settings.find(key);
  return it == settings.end() ? "" : it->second;
}

// KEY=value lines of an EnvironmentFile (no quotes in ours).
std::map<std::string, std::string> EnvFile(const std::string& path) {
  std::map<std::string, std::string> out;
  std::istringstream in(ReadAll(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    size_t eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

// A command line the way systemd expands it: words split at spaces; a word
// "${VAR}" is the value as one argument, a word "$VAR" the value split at
// whitespace (zero or more arguments).
std::vector<std::string> ExpandCommand(const std::string& line,
                                       const std::map<std::string, std::string>& env) {
  std::vector<std::string> argv;
  std::istringstream words(line);
  std::string word;
  auto value = [&](const std::string& name) {
    auto it = env.find(name);
    EXPECT_NE(it, env.end()) << "the unit uses $" << name << ", the env file does not set it";
    return it == env.end() ? std::string() : it->second;
  };
  while (words >> word) {
    if (word.size() > 3 && word.starts_with("${") && word.back() == '}') {
      argv.push_back(value(word.substr(2, word.size() - 3)));
    } else if (word.size() > 1 && word[0] == '$') {
      std::istringstream parts(value(word.substr(1)));
      for (std::string part; parts >> part;) argv.push_back(part);
    } else {
      argv.push_back(word);
    }
  }
  return argv;
}

// Every variable a unit line refers to.
std::set<std::string> VariablesOf(const std::string& line) {
  std::set<std::string> out;
  std::regex var(R"(\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?)");
  for (auto it = std::sregex_iterator(line.begin(), line.end(), var); it != std::sregex_iterator();
       ++it) {
    out.insert((*it)[1]);
  }
  return out;
}

// The unit with its installed paths pointing at this build and source tree.
std::string UnitForThisBuild(const std::string& unit_path) {
  std::string text = ReadAll(unit_path);
  text = ReplaceAll(text, kInstalledServer, ServerBinary());
  text = ReplaceAll(text, kInstalledNode, NodeBinary());
  return ReplaceAll(text, kInstalledScript, kUnmountScript);
}

struct Verified {
  int code;
  std::string output;
};

Verified Verify(const std::string& analyze, const std::string& unit_file, const TempDir& dir) {
  std::string log = dir.Sub("verify.log");
  std::ofstream(log, std::ios::trunc).close();
  int code = RunProgram({analyze, "verify", unit_file}, log, 60);
  return {code, ReadAll(log)};
}

TEST(SystemdUnitTest, UnitsPassSystemdAnalyzeVerifyAndBrokenCopiesDoNot) {
  std::string analyze = Program("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed";
  TempDir dir;
  for (const std::string& unit : {kServerUnit, kNodeUnit}) {
    std::string name = fs::path(unit).filename();
    std::string text = UnitForThisBuild(unit);
    // Not vacuous: the copy names this build's binaries, which exist.
    ASSERT_THAT(text, HasSubstr(name.find("server") != std::string::npos ? ServerBinary()
                                                                           : NodeBinary()));
    for (const auto& [key, value] : UnitSettings(text)) {
      EXPECT_EQ(value.find("/usr/local/"), std::string::npos) << name << ": " << key;
    }
    WriteAll(dir.Sub(name), text);
    Verified ok = Verify(analyze, dir.Sub(name), dir);
    EXPECT_EQ(ok.code, 0) << name << ":\n" << ok.output;
    // verify only warns (exit 0) on unknown keys and bad values: none allowed.
    EXPECT_EQ(ok.output, "") << name;

    // A program that is not there fails.
    std::string missing = ReplaceAll(text, ServerBinary(), dir.Sub("no-such-program"));
    missing = ReplaceAll(missing, NodeBinary(), dir.Sub("no-such-program"));
    fs::create_directories(dir.Sub("broken"));
    WriteAll(dir.Sub("broken/" + name), missing);
    Verified bad = Verify(analyze, dir.Sub("broken/" + name), dir);
    EXPECT_NE(bad.code, 0) << name;
    EXPECT_THAT(bad.output, HasSubstr("no-such-program"));
    // A misspelled key is reported, which the check above catches.
    WriteAll(dir.Sub("broken/" + name), ReplaceAll(text, "Type=notify", "Tpye=notify"));
    bad = Verify(analyze, dir.Sub("broken/" + name), dir);
    EXPECT_THAT(bad.output, HasSubstr("Tpye"));
  }
}

TEST(SystemdUnitTest, HardeningExposureStaysLow) {
  std::string analyze = Program("systemd-analyze");
  if (analyze.empty()) GTEST_SKIP() << "systemd-analyze is not installed";
  TempDir dir;
  // systemd's exposure score (0 best, 10 worst) times 10. The node cannot
  // have a mount namespace of its own, so it scores worse than the server.
  for (auto [unit, threshold] : {std::pair{kServerUnit, 30}, std::pair{kNodeUnit, 50}}) {
    std::string name = fs::path(unit).filename();
    WriteAll(dir.Sub(name), UnitForThisBuild(unit));
    std::string log = dir.Sub("security.log");
    int code = RunProgram({analyze, "security", "--offline=true", "--no-pager",
                           "--threshold=" + std::to_string(threshold), dir.Sub(name)},
                          log, 60);
    EXPECT_EQ(code, 0) << name << " exposure above " << threshold / 10.0 << ":\n" << ReadAll(log);
  }
}

TEST(SystemdUnitTest, NodeUnitKeepsTheHostMountNamespaceAndReachesDevFuse) {
  auto node = UnitSettings(ReadAll(kNodeUnit));
  auto server = UnitSettings(ReadAll(kServerUnit));
  for (const auto* unit : {&node, &server}) {
    EXPECT_EQ(Setting(*unit, "Type"), "notify");
    EXPECT_EQ(Setting(*unit, "Restart"), "on-failure");
    EXPECT_NE(Setting(*unit, "LimitNOFILE"), "");
  }
  // Each of these gives the service a mount namespace of its own: its FUSE
  // mounts would be invisible to the containers that bind-mount them.
  for (const char* key :
       {"PrivateMounts", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
        "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
        "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
        "ProcSubset", "PrivateNetwork", "PrivateIPC", "NetworkNamespacePath", "RootDirectory",
        "RootImage", "MountFlags", "DynamicUser", "PrivateUsers", "ProtectHostname"}) {
    EXPECT_EQ(node.count(key), 0u) << "the node unit sets " << key;
  }
  if (node.count("DevicePolicy") > 0 || node.count("DeviceAllow") > 0) {
    EXPECT_EQ(Setting(node, "DeviceAllow"), "/dev/fuse rw");
  }
  EXPECT_THAT(Setting(node, "CapabilityBoundingSet"), HasSubstr("CAP_SYS_ADMIN"));
  EXPECT_THAT(Setting(node, "SystemCallFilter"), HasSubstr("@mount"));
  EXPECT_THAT(Setting(node, "ExecStopPost"), HasSubstr(kInstalledScript));
  EXPECT_EQ(Setting(node, "EnvironmentFile"), "/etc/traincache/node.env");
  // The example env file sets every variable the unit uses, and no other.
  std::set<std::string> used = VariablesOf(Setting(node, "ExecStart"));
  for (const std::string& v : VariablesOf(Setting(node, "ExecStopPost"))) used.insert(v);
  std::set<std::string> set;
  for (const auto& [key, value] : EnvFile(kNodeEnv)) set.insert(key);
  EXPECT_EQ(used, set);
}

TEST(SystemdUnitTest, TmpfilesCreateEveryFolderTheExampleConfigsName) {
  std::string tmpfiles = Program("systemd-tmpfiles");
  if (tmpfiles.empty()) GTEST_SKIP() << "systemd-tmpfiles is not installed";
  TempDir root;
  std::string log = root.Sub("tmpfiles.log");
  ASSERT_EQ(RunProgram({tmpfiles, "--create", "--root=" + root.path(), kTmpfiles}, log), 0)
      << ReadAll(log);
  std::map<std::string, std::string> env = EnvFile(kNodeEnv);
  std::smatch data_dir;
  std::string toml = ReadAll(kServerToml);
  ASSERT_TRUE(std::regex_search(toml, data_dir, std::regex(R"(\ndata_dir = "([^"]+)\")")));
  for (const std::string& folder :
       {env["TRAINCACHE_MOUNT_ROOT"], env["TRAINCACHE_TIER_DIR"], env["TRAINCACHE_STAGING_DIR"],
        env["TRAINCACHE_SCRATCH_DIR"],
        fs::path(env["TRAINCACHE_ADMIN_SOCKET"]).parent_path().string(),
        fs::path(env["TRAINCACHE_TOKEN_FILE"]).parent_path().string(), data_dir[1].str()}) {
    struct stat st {};
    EXPECT_EQ(stat((root.path() + folder).c_str(), &st), 0) << folder << " is not created";
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << folder;
  }
  struct stat staging {};
  ASSERT_EQ(stat((root.path() + env["TRAINCACHE_STAGING_DIR"]).c_str(), &staging), 0);
  EXPECT_EQ(staging.st_mode & 07777, 0700u);  // Uncommitted user data: root only.
}

// A bound Unix datagram socket standing in for systemd's $NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    bound_ = bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~NotifySocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  bool bound() const { return bound_; }
  const std::string& path() const { return path_; }

  // Messages until one holds `what` (returned with everything before it), or
  // nullopt after `timeout`.
  std::optional<std::string> WaitFor(const std::string& what, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string seen;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) continue;
      seen.append(buf, static_cast<size_t>(n)).append("\n");
      if (std::string_view(buf, static_cast<size_t>(n)).find(what) != std::string_view::npos) {
        return seen;
      }
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

// Sets an environment variable of this process (inherited by the daemons
// the test forks) for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST(ServiceNotifyTest, ServerIsReadyOnceItAnswersAndSaysWhenItStops) {
  TempDir dir;
  NotifySocket notify(dir.Sub("notify.sock"));
  ASSERT_TRUE(notify.bound());
  ServerProcess server(dir.Sub("data"), dir.path());
  // Checked the moment READY=1 arrives, while Start still polls on its own.
  auto at_ready = std::async(std::launch::async, [&]() -> std::string {
    std::optional<std::string> ready = notify.WaitFor("READY=1", std::chrono::seconds(30));
    if (!ready) return "no READY=1";
    auto client = server.Client();
    v1::PingResponse pong;
    absl::Status ping = client->Call(&v1::Admin::Stub::Ping, client->admin(), {}, &pong);
    return ping.ok() ? *ready : "READY=1 before the server answered: " + ping.ToString();
  });
  {
    ScopedEnv env("NOTIFY_SOCKET", notify.path());
    ASSERT_TRUE(server.Start().ok()) << ReadAll(server.log_file());
  }
  std::string ready = at_ready.get();
  EXPECT_THAT(ready, HasSubstr("READY=1"));
  EXPECT_THAT(ready, HasSubstr("STATUS=serving on " + server.address()));
  int status = server.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(notify.WaitFor("STOPPING=1", std::chrono::seconds(5)).has_value());
}

TEST(ServiceNotifyTest, NodeIsReadyOnlyOnceItsMountsAnswer) {
  TempDir dir;
  ServerProcess server(dir.Sub("data"), dir.path());
  ASSERT_TRUE(server.Start().ok()) << ReadAll(server.log_file());
  const Scope project = *Scope::Parse("project:ready");
  const Scope team = *Scope::Parse("team:ready");
  {
    // A file written before, through another node.
    fs::create_directories(dir.Sub("writer"));
    NodeProcess writer(dir.Sub("writer"), server.address(), server.token_file());
    ASSERT_TRUE(writer.Start({project}).ok()) << ReadAll(writer.log_file());
    ASSERT_EQ(WriteFile(writer.MountPoint(project) + "/before.txt", "written before"), 0);
    int status = writer.Stop();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  NotifySocket notify(dir.Sub("notify.sock"));
  ASSERT_TRUE(notify.bound());
  fs::create_directories(dir.Sub("node"));
  NodeProcess node(dir.Sub("node"), server.address(), server.token_file());
  const std::string mp = node.MountPoint(project);
  const std::string team_mp = node.MountPoint(team);
  // What the mounts answer the moment READY=1 arrives (no waiting first).
  auto at_ready = std::async(std::launch::async, [&]() -> std::string {
    std::optional<std::string> ready = notify.WaitFor("READY=1", std::chrono::seconds(60));
    if (!ready) return "no READY=1";
    if (!IsMounted(mp) || !IsMounted(team_mp)) return "READY=1 before the mounts";
    struct stat st {};
    if (stat(team_mp.c_str(), &st) != 0) return "stat of the team mount failed";
    return *ready + "read: " + ReadFile(mp + "/before.txt");
  });
  {
    ScopedEnv env("NOTIFY_SOCKET", notify.path());
    ASSERT_TRUE(node.Start({project, team}).ok()) << ReadAll(node.log_file());
  }
  std::string ready = at_ready.get();
  EXPECT_THAT(ready, HasSubstr("read: written before"));
  // Progress while mounting, then what it serves.
  EXPECT_THAT(ready, HasSubstr("STATUS=mounting project:ready"));
  EXPECT_THAT(ready, HasSubstr("STATUS=serving 2 scope(s) under " + dir.Sub("node") + "/mnt"));
  int status = node.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadAll(node.log_file());
  EXPECT_TRUE(notify.WaitFor("STOPPING=1", std::chrono::seconds(5)).has_value());
  EXPECT_FALSE(IsMounted(mp));
}

// A child process started from an argv and environment additions (the way
// systemd starts a unit's ExecStart), stopped by PID; the mounts it leaves
// under `mount_root` are detached when the object goes, whatever happened.
class Child {
 public:
  Child(std::vector<std::string> argv, std::vector<std::string> env, std::string log,
        std::string mount_root)
      : log_(std::move(log)), mount_root_(std::move(mount_root)) {
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      for (std::string& e : env) putenv(e.data());
      std::vector<char*> args;
      for (std::string& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      if (Wait(std::chrono::seconds(30)) == -1) Kill();
    }
    DetachMountsUnder(mount_root_);
  }
  pid_t pid() const { return pid_; }
  // SIGKILL and reap (after which the PID is never signalled again).
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    Wait(std::chrono::seconds(15));
  }
  // The wait status, or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || r < 0) {
        pid_ = -1;
        return status;
      }
      if (std::chrono::steady_clock::now() > deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }
  static void DetachMountsUnder(const std::string& root) {
    std::ifstream in("/proc/self/mounts");
    std::vector<std::string> found;
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string device, mountpoint;
      fields >> device >> mountpoint;
      mountpoint = UnescapeMountPath(mountpoint);
      if (mountpoint.rfind(root + "/", 0) == 0) found.push_back(mountpoint);
    }
    for (const std::string& mp : found) umount2(mp.c_str(), MNT_DETACH);
  }

 private:
  std::string log_, mount_root_;
  pid_t pid_ = -1;
};

// The prefix that gives a process what the unit grants: setpriv with the
// unit's CapabilityBoundingSet and NoNewPrivileges.
std::vector<std::string> UnitPrivileges(const std::multimap<std::string, std::string>& unit,
                                        const std::string& setpriv) {
  std::string bounding = "-all";
  std::istringstream caps(Setting(unit, "CapabilityBoundingSet"));
  for (std::string cap; caps >> cap;) {
    std::string name = cap.substr(cap.rfind("CAP_", 0) == 0 ? 4 : 0);
    for (char& c : name) c = static_cast<char>(std::tolower(c));
    bounding += ",+" + name;
  }
  std::vector<std::string> prefix = {setpriv, "--bounding-set", bounding, "--inh-caps", "-all"};
  if (Setting(unit, "NoNewPrivileges") == "yes") prefix.push_back("--no-new-privs");
  prefix.push_back("--");
  return prefix;
}

TEST(ServiceNotifyTest, NodeUnitCommandLineServesAndItsStopPostClearsADeadDaemonsMounts) {
  std::string setpriv = Program("setpriv");
  if (setpriv.empty()) GTEST_SKIP() << "setpriv (util-linux) is not installed";
  TempDir dir;
  // The server with what its unit grants: no capabilities at all.
  ServerProcess server(dir.Sub("data"), dir.path());
  server.set_command_prefix(UnitPrivileges(UnitSettings(ReadAll(kServerUnit)), setpriv));
  ASSERT_TRUE(server.Start().ok()) << ReadAll(server.log_file());
  std::string server_status = ReadAll(fmt::format("/proc/{}/status", server.pid()));
  EXPECT_THAT(server_status, HasSubstr("CapBnd:\t0000000000000000"));
  EXPECT_THAT(server_status, HasSubstr("NoNewPrivs:\t1"));
  // The unit as installed, its variables from the example node.env, with the
  // machine paths moved into this test's folder (a space included, as
  // mountinfo escapes it).
  auto unit = UnitSettings(UnitForThisBuild(kNodeUnit));
  std::map<std::string, std::string> env = EnvFile(kNodeEnv);
  const std::string root = dir.Sub("unit mnt");
  const std::string metrics = FreeLoopbackAddress();
  env["TRAINCACHE_SERVER"] = server.address();
  env["TRAINCACHE_TOKEN_FILE"] = server.token_file();
  env["TRAINCACHE_MOUNT_ROOT"] = root;
  env["TRAINCACHE_TIER_DIR"] = dir.Sub("tier");
  env["TRAINCACHE_STAGING_DIR"] = dir.Sub("staging");
  env["TRAINCACHE_SCRATCH_DIR"] = dir.Sub("scratch");
  env["TRAINCACHE_ADMIN_SOCKET"] = dir.Sub("node.sock");
  env["TRAINCACHE_METRICS_LISTEN"] = metrics;
  env["TRAINCACHE_NODE_ARGS"] = "--scope project:unit --outage-timeout-seconds 10";
  std::vector<std::string> argv = ExpandCommand(Setting(unit, "ExecStart"), env);
  ASSERT_EQ(argv.front(), NodeBinary());
  std::vector<std::string> privileges = UnitPrivileges(unit, setpriv);
  argv.insert(argv.begin(), privileges.begin(), privileges.end());

  // Another node's live mount whose path merely starts like the root, and a
  // non-traincache mount under the root: both must survive ExecStopPost.
  fs::create_directories(dir.Sub("unit mnt2"));
  NodeProcess neighbour(dir.Sub("unit mnt2"), server.address(), server.token_file());
  const Scope other = *Scope::Parse("project:other");
  ASSERT_TRUE(neighbour.Start({other}).ok()) << ReadAll(neighbour.log_file());
  fs::create_directories(root + "/scratch");
  ASSERT_EQ(mount("tmpfs", (root + "/scratch").c_str(), "tmpfs", 0, "size=1m"), 0)
      << strerror(errno);

  NotifySocket notify(dir.Sub("notify.sock"));
  ASSERT_TRUE(notify.bound());
  const std::string mp = root + "/project/unit";
  {
    Child node(argv, {"NOTIFY_SOCKET=" + notify.path()}, dir.Sub("node.log"), root);
    std::optional<std::string> ready = notify.WaitFor("READY=1", std::chrono::seconds(60));
    ASSERT_TRUE(ready.has_value()) << ReadAll(dir.Sub("node.log"));
    ASSERT_TRUE(IsMounted(mp));
    ASSERT_EQ(WriteFile(mp + "/f.txt", "through the unit's command line"), 0);
    EXPECT_EQ(ReadFile(mp + "/f.txt"), "through the unit's command line");
    // Only the unit's capabilities, and no gaining more.
    std::string proc_status = ReadAll(fmt::format("/proc/{}/status", node.pid()));
    // Bit 21: CAP_SYS_ADMIN, the unit's whole CapabilityBoundingSet.
    EXPECT_THAT(proc_status, HasSubstr("CapBnd:\t0000000000200000"));
    EXPECT_THAT(proc_status, HasSubstr("NoNewPrivs:\t1"));
    EXPECT_FALSE(ScrapeMetrics(metrics).empty());

    // Killed: the mount stays, dead (a name the kernel has not cached needs
    // the daemon).
    node.Kill();
    ASSERT_TRUE(IsMounted(mp));
    struct stat st {};
    EXPECT_EQ(stat((mp + "/never-looked-up").c_str(), &st), -1);
    EXPECT_EQ(errno, ENOTCONN);

    std::vector<std::string> post = ExpandCommand(Setting(unit, "ExecStopPost"), env);
    ASSERT_EQ(post.front(), kUnmountScript);
    std::string log = dir.Sub("stop-post.log");
    EXPECT_EQ(RunProgram(post, log), 0) << ReadAll(log);
    EXPECT_THAT(ReadAll(log), HasSubstr("unmounted leftover " + mp));
    EXPECT_FALSE(IsMounted(mp));
    EXPECT_EQ(stat(mp.c_str(), &st), 0) << "the mountpoint is a plain folder again";
    EXPECT_TRUE(IsMounted(root + "/scratch"));
    EXPECT_TRUE(IsMounted(neighbour.MountPoint(other)));
    // Nothing left: a second run has nothing to do.
    EXPECT_EQ(RunProgram(post, log), 0);
  }
  umount2((root + "/scratch").c_str(), MNT_DETACH);
  std::string log = dir.Sub("usage.log");
  EXPECT_EQ(RunProgram({kUnmountScript}, log), 2);
  EXPECT_EQ(RunProgram({kUnmountScript, "/"}, log), 2);
  EXPECT_EQ(RunProgram({kUnmountScript, "relative/path"}, log), 2);
}

}  // namespace
}  // namespace traincache::testing
