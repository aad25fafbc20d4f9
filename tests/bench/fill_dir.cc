// bench_fill_dir: fills one folder of a scope with N empty files, writing
// straight into a stopped server's metadata store (<data-dir>/meta), for the
// readdir workload of tests/bench/fs_bench.py.
//
//   bench_fill_dir --data-dir D --scope project:bench --dir NAME --entries N
//
// Why not through the mount: the kernel serializes creates in one directory
// (the parent's lock), so 100,000 creates through FUSE cost 100,000 server
// round trips one after the other, minutes on a small VM, while the workload
// only times the listing. Here 32 threads share WAL syncs (group commit).
// The server must not be running on D (RocksDB's lock refuses it).
// Exit codes: 0 done, 1 the store failed (message on stderr), 2 bad usage.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "traincache/metadata_store.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache::bench {
namespace {

constexpr int kThreads = 32;

int Usage() {
  std::fprintf(stderr,
               "usage: bench_fill_dir --data-dir D --scope project:ID --dir NAME --entries N\n");
  return 2;
}

int Main(int argc, char** argv) {
  std::string data_dir, scope_text, dir_name;
  uint64_t entries = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view flag = argv[i];
    if (flag == "--data-dir") {
      data_dir = argv[i + 1];
    } else if (flag == "--scope") {
      scope_text = argv[i + 1];
    } else if (flag == "--dir") {
      dir_name = argv[i + 1];
    } else if (flag == "--entries") {
      entries = std::strtoull(argv[i + 1], nullptr, 10);
    } else {
      return Usage();
    }
  }
  if (argc % 2 != 1 || data_dir.empty() || dir_name.empty() || entries == 0) return Usage();
  auto scope = Scope::Parse(scope_text);
  if (!scope.ok()) {
    std::fprintf(stderr, "bench_fill_dir: %s\n", scope.status().ToString().c_str());
    return 2;
  }

  auto start = std::chrono::steady_clock::now();
  auto opened = OpenRocksMetadataStore(data_dir + "/meta");
  if (!opened.ok()) {
    std::fprintf(stderr, "bench_fill_dir: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  MetadataStore& meta = **opened;
  if (auto s = meta.OpenScope(*scope, /*create=*/true); !s.ok()) {
    std::fprintf(stderr, "bench_fill_dir: %s\n", s.status().ToString().c_str());
    return 1;
  }
  auto dir = meta.Mkdir(*scope, kRootInode, dir_name, 0755, {});
  if (!dir.ok()) {
    std::fprintf(stderr, "bench_fill_dir: mkdir %s: %s\n", dir_name.c_str(),
                 dir.status().ToString().c_str());
    return 1;
  }
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (uint64_t i = next++; i < entries && !failed; i = next++) {
        auto created = meta.Create(*scope, dir->ino, fmt::format("entry-{:07d}", i), 0644, {},
                                   /*exclusive=*/true);
        if (!created.ok()) {
          // Only the first failure is printed; the others stop at `failed`.
          if (!failed.exchange(true)) {
            std::fprintf(stderr, "bench_fill_dir: create: %s\n",
                         created.status().ToString().c_str());
          }
          return;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (failed) return 1;
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("bench_fill_dir: %llu entries in %s/%s in %.1f s\n",
              static_cast<unsigned long long>(entries), scope_text.c_str(), dir_name.c_str(),
              seconds);
  return 0;
}

}  // namespace
}  // namespace traincache::bench

int main(int argc, char** argv) { return traincache::bench::Main(argc, argv); }
