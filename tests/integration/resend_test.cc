// Namespace calls that are not idempotent (exclusive create, mkdir, rename,
// unlink, rmdir) made through a mount while the server is killed (SIGKILL)
// and started again, over and over: the node re-sends a call whose
// connection died with the same request id, the server applies it at most
// once, so no program sees an error and the tree ends exactly as the calls
// say (issue 7's soak saw EIO from unlink and rename here).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "mount_fixture.h"

namespace traincache::testing {
namespace {

class ResendTest : public MountTest {
 protected:
  // Long enough for a restart on a loaded machine (Start waits for Ping).
  std::vector<std::string> NodeArgs() const override {
    return {"--outage-timeout-seconds", "60"};
  }
};

// One round's calls, each an error if it fails: create f (O_EXCL), mkdir
// d, rename f into d as g, make h, rename h over d/g (replacing it), unlink
// d/g, rmdir d unless `keep` — which leaves d/ with nothing, or keeps d.
std::string Round(const std::string& root, int i, bool keep) {
  std::string f = fmt::format("{}/f{}", root, i);
  std::string d = fmt::format("{}/d{}", root, i);
  std::string h = fmt::format("{}/h{}", root, i);
  int fd = open(f.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("create {}: {}", f, strerror(errno));
  if (close(fd) != 0) return fmt::format("close {}: {}", f, strerror(errno));
  if (mkdir(d.c_str(), 0755) != 0) return fmt::format("mkdir {}: {}", d, strerror(errno));
  if (rename(f.c_str(), (d + "/g").c_str()) != 0) {
    return fmt::format("rename {}: {}", f, strerror(errno));
  }
  fd = open(h.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("create {}: {}", h, strerror(errno));
  if (close(fd) != 0) return fmt::format("close {}: {}", h, strerror(errno));
  if (rename(h.c_str(), (d + "/g").c_str()) != 0) {
    return fmt::format("rename {} over: {}", h, strerror(errno));
  }
  if (unlink((d + "/g").c_str()) != 0) return fmt::format("unlink {}/g: {}", d, strerror(errno));
  if (!keep && rmdir(d.c_str()) != 0) return fmt::format("rmdir {}: {}", d, strerror(errno));
  return "";
}

TEST_F(ResendTest, NamespaceCallsSeeNoErrorAcrossServerKills) {
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::vector<std::string> errors;
  std::thread worker([&] {
    for (int i = 0; !stop.load() && errors.size() < 10; ++i) {
      std::string err = Round(mnt_a_, i, /*keep=*/i % 3 == 0);
      if (!err.empty()) errors.push_back(err);
      rounds.store(i + 1);
    }
  });
  constexpr int kKills = 5;
  for (int k = 0; k < kKills; ++k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700 + 150 * k));
    server_->Kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // No ASSERT while the worker runs: it must be joined first.
    absl::Status started = server_->Start();
    EXPECT_TRUE(started.ok()) << started << "; see " << server_->log_file();
    if (!started.ok()) break;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  worker.join();
  for (const std::string& e : errors) ADD_FAILURE() << e;
  const int n = rounds.load();
  EXPECT_GT(n, 20) << "too few calls ran across the kills";
  std::printf("[ figures ] %d rounds (%d namespace calls) across %d server kills\n", n, n * 8,
              kKills);

  // Exactly the kept directories, each empty, seen from both nodes.
  std::set<std::string> want;
  for (int i = 0; i < n; ++i) {
    if (i % 3 == 0) want.insert(fmt::format("d{}", i));
  }
  for (const std::string& root : {mnt_a_, mnt_b_}) {
    std::set<std::string> got;
    for (const std::string& name : ListDir(root)) got.insert(name);
    EXPECT_EQ(got, want) << root;
    for (const std::string& d : want) EXPECT_TRUE(ListDir(root + "/" + d).empty()) << d;
  }
}

}  // namespace
}  // namespace traincache::testing
