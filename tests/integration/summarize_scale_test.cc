// `traincache summarize` on a scope of 1,000,000 entries (1,000 directories
// of 999 files each): the real server walks it and streams it, the real CLI
// prints it as CSV and JSON. Checks the counts and totals and prints the
// times and peak memory of both sides. Labelled `slow`: filling the store
// takes a minute or two on this project's 2-core VM.
//
// TRAINCACHE_SCALE_DIRS overrides the number of directories (each holds 999
// files) for a quicker look.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "traincache/metadata_store.h"

namespace traincache::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Concurrent creates share WAL syncs (group commit): more threads, fewer syncs.
constexpr int kFillThreads = 32;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// VmHWM of a live process, in MiB (0 if unreadable).
uint64_t PeakRssMiB(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmHWM:")) return std::strtoull(line.c_str() + 6, nullptr, 10) / 1024;
  }
  return 0;
}

size_t CountLines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

TEST(SummarizeScaleTest, MillionEntries) {
  const char* env = std::getenv("TRAINCACHE_SCALE_DIRS");
  const uint64_t dirs = env ? std::strtoull(env, nullptr, 10) : 1000;
  const uint64_t per_dir = 999;
  const uint64_t files = dirs * per_dir;
  const uint64_t entries = dirs + files;
  TempDir dir;
  const Scope scope = *Scope::Parse("project:big");

  // Filled in-process through the same store the server opens: the server's
  // gRPC path is not what this test measures.
  auto fill_start = Clock::now();
  uint64_t want_size = 0, want_d0000 = 0;
  {
    std::filesystem::create_directories(dir.Sub("data"));
    auto opened = OpenRocksMetadataStore(dir.Sub("data") + "/meta");
    ASSERT_TRUE(opened.ok()) << opened.status();
    MetadataStore& meta = **opened;
    ASSERT_TRUE(meta.OpenScope(scope, /*create=*/true).ok());
    std::vector<InodeId> dir_inos;
    for (uint64_t d = 0; d < dirs; ++d) {
      auto attr = meta.Mkdir(scope, kRootInode, fmt::format("d{:04d}", d), 0755, {});
      ASSERT_TRUE(attr.ok()) << attr.status();
      dir_inos.push_back(attr->ino);
    }
    // One file in 1,000 gets a size (a hole), so the sums have something to add.
    for (uint64_t i = 0; i < files; i += 1000) {
      want_size += i + 1;
      if (i % dirs == 0) want_d0000 += i + 1;
    }
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kFillThreads; ++t) {
      threads.emplace_back([&] {
        for (uint64_t i = next++; i < files && !failed; i = next++) {
          auto created = meta.Create(scope, dir_inos[i % dirs], fmt::format("file-{:07d}", i),
                                     0644, {}, /*exclusive=*/true);
          if (!created.ok()) {
            failed = true;
            ADD_FAILURE() << created.status();
            return;
          }
          if (i % 1000 == 0) {
            SetAttrRequest set;
            set.size = i + 1;
            if (!meta.SetAttr(scope, created->attr.ino, set).ok()) failed = true;
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    ASSERT_FALSE(failed);
  }
  double fill_s = SecondsSince(fill_start);

  ServerProcess server(dir.Sub("data"), dir.path());
  auto start_start = Clock::now();
  ASSERT_TRUE(server.Start().ok()) << "see " << server.log_file();
  double start_s = SecondsSince(start_start);
  auto run = [&](const std::string& format, double* seconds, long* cli_rss_mib) {
    auto start = Clock::now();
    int code = RunProgramSplit({CliBinary(), "--server", server.address(), "--token-file",
                                server.token_file(), "summarize", "big", "-o", format},
                               dir.Sub("out." + format), dir.Sub("err." + format), 600);
    *seconds = SecondsSince(start);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);  // Peak of every child waited for so far.
    *cli_rss_mib = ru.ru_maxrss / 1024;
    return code;
  };
  double csv_s = 0, json_s = 0;
  long csv_rss = 0, json_rss = 0;
  ASSERT_EQ(run("csv", &csv_s, &csv_rss), 0) << std::ifstream(dir.Sub("err.csv")).rdbuf();
  EXPECT_EQ(CountLines(dir.Sub("out.csv")), entries + 1);  // Header line + one per entry.
  ASSERT_EQ(run("json", &json_s, &json_rss), 0) << std::ifstream(dir.Sub("err.json")).rdbuf();
  {
    // The header, then d0000 first (sorted by path) with its sum.
    std::ifstream in(dir.Sub("out.json"));
    std::string head(4096, '\0');
    in.read(head.data(), head.size());
    EXPECT_NE(head.find(fmt::format("\"total_files\": {},", files)), std::string::npos) << head;
    EXPECT_NE(head.find(fmt::format("\"total_size_bytes\": {},", want_size)), std::string::npos);
    EXPECT_NE(head.find(fmt::format("{{\"path\": \"d0000\", \"size_bytes\": {}, ", want_d0000)),
              std::string::npos)
        << head;
  }
  EXPECT_EQ(CountLines(dir.Sub("out.json")), entries + 9);  // 9 lines of frame, one per entry.
  uint64_t server_rss = PeakRssMiB(server.pid());
  std::string log;
  {
    std::ifstream in(server.log_file());
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("summarized") != std::string::npos) log += line + "\n";
    }
  }
  std::printf(
      "summarize of %llu entries: fill %.1f s (in-process), server start %.1f s; csv %.1f s, "
      "json %.1f s end to end; peak RSS server %llu MiB, CLI %ld MiB\n%s",
      static_cast<unsigned long long>(entries), fill_s, start_s, csv_s, json_s,
      static_cast<unsigned long long>(server_rss), std::max(csv_rss, json_rss), log.c_str());
  auto stop_start = Clock::now();
  EXPECT_EQ(server.Stop(), 0);  // Exit status 0 on SIGTERM.
  std::printf("server stop %.1f s\n", SecondsSince(stop_start));
}

}  // namespace
}  // namespace traincache::testing
