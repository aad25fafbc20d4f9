// Benchmark of traincache-server: metadata ops/s with a large scope and chunk
// transfer MB/s over loopback TCP, each beside a baseline measured in the
// same run (in-process calls to the same RocksDB store; a raw loopback TCP
// copy of the same bytes). Prints a table and the same figures as JSON.
//
//   server_bench [--inodes N] [--dir D] [--chunk-mib M] [--json FILE] [--transport tcp|unix]
//
// Not a test: nothing here passes or fails on speed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "common/malloc_tuning.h"
#include "integration/remote_fs.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "traincache/metadata_store.h"

namespace traincache::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs fn(thread, i) for i in [0, count) split over `threads`; returns ops/s.
// Any failure aborts the benchmark (a number from failed ops would lie).
double RunOps(int threads, uint64_t count,
              const std::function<absl::Status(int thread, uint64_t i)>& fn) {
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (uint64_t i; (i = next.fetch_add(1)) < count && !failed;) {
        absl::Status s = fn(t, i);
        if (!s.ok()) {
          std::cerr << "bench op failed: " << s << "\n";
          failed = true;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  if (failed) std::exit(1);
  return count / Seconds(start);
}

struct Row {
  std::string workload;
  double baseline;
  double traincache;
  std::string unit;
  std::string baseline_name;
  double server_cpu = 0;  // server CPU per op (us) or per MB (ms)
};

// CPU seconds (user + system) a process has used so far.
double CpuSeconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string line;
  std::getline(in, line);
  // Fields after the ")" that closes the command name; utime and stime are
  // the 12th and 13th of them.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 1; i <= 13 && rest >> field; ++i) {
    if (i >= 12) ticks += std::stod(field);
  }
  return ticks / sysconf(_SC_CLK_TCK);
}

std::string RandomChunk(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t r = rng();
    memcpy(&out[i], &r, 8);
  }
  return out;
}

// A raw loopback TCP copy of `bytes` per stream, `streams` at once: MB/s.
double RawTcpCopy(size_t bytes, int streams) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  listen(listener, streams);
  std::string buf(1 << 20, 'x');
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&] {  // sender
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      for (size_t sent = 0; sent < bytes;) {
        ssize_t n = write(fd, buf.data(), std::min(buf.size(), bytes - sent));
        if (n <= 0) break;
        sent += n;
      }
      close(fd);
    });
    threads.emplace_back([&] {  // receiver copies into a user buffer, as gRPC does
      int fd = accept(listener, nullptr, nullptr);
      std::string in(1 << 20, '\0');
      while (read(fd, in.data(), in.size()) > 0) {
      }
      close(fd);
    });
  }
  for (auto& t : threads) t.join();
  close(listener);
  return bytes * streams / Seconds(start) / 1e6;
}

int Main(int argc, char** argv) {
  TuneMallocForChunkBuffers();
  uint64_t inodes = 1'000'000;
  std::string dir_base, json_path;
  size_t chunk_mib = 256;  // per stream
  bool unix_socket = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--inodes") inodes = std::stoull(argv[i + 1]);
    if (a == "--dir") dir_base = argv[i + 1];
    if (a == "--chunk-mib") chunk_mib = std::stoull(argv[i + 1]);
    if (a == "--json") json_path = argv[i + 1];
    if (a == "--transport") unix_socket = std::string(argv[i + 1]) == "unix";
  }
  if (!dir_base.empty()) setenv("TMPDIR", dir_base.c_str(), 1);
  testing::TempDir dir;
  std::vector<Row> rows;
  const uint64_t kDirs = 1000;  // inodes spread over 1,000 directories
  const uint64_t kProbe = 100'000;
  const uint64_t kCreate1 = 20'000;
  auto name_of = [](uint64_t i) { return fmt::format("file-{:08d}", i); };

  // ---- baseline: in-process calls to the RocksDB store on the same disk ----
  std::cerr << "baseline: in-process RocksDB store\n";
  double base_create1, base_create8, base_lookup1, base_lookup8, base_getattr1, base_getattr8;
  std::vector<InodeId> base_dirs;
  {
    auto store = OpenRocksMetadataStore(dir.Sub("baseline-meta"));
    if (!store.ok()) {
      std::cerr << store.status() << "\n";
      return 1;
    }
    MetadataStore& m = **store;
    Scope scope = *Scope::Parse("project:bench");
    if (!m.OpenScope(scope, true).ok()) return 1;
    for (uint64_t d = 0; d < kDirs; ++d) {
      base_dirs.push_back(m.Mkdir(scope, kRootInode, fmt::format("d{}", d), 0755, {})->ino);
    }
    uint64_t n_base = std::min<uint64_t>(inodes, 200'000);
    base_create1 = RunOps(1, kCreate1, [&](int, uint64_t i) {
      return m.Create(scope, base_dirs[i % kDirs], name_of(i), 0644, {}, true).status();
    });
    base_create8 = RunOps(8, n_base - kCreate1, [&](int, uint64_t i) {
      i += kCreate1;
      return m.Create(scope, base_dirs[i % kDirs], name_of(i), 0644, {}, true).status();
    });
    auto lookup = [&](int, uint64_t i) {
      uint64_t k = (i * 2654435761u) % n_base;
      return m.Lookup(scope, base_dirs[k % kDirs], name_of(k)).status();
    };
    base_lookup1 = RunOps(1, kProbe, lookup);
    base_lookup8 = RunOps(8, kProbe, lookup);
    auto getattr = [&](int, uint64_t i) {
      return m.GetAttr(scope, base_dirs[(i * 7919) % kDirs]).status();
    };
    base_getattr1 = RunOps(1, kProbe, getattr);
    base_getattr8 = RunOps(8, kProbe, getattr);
  }

  // ---- traincache-server over loopback TCP ----
  testing::ServerProcess server(dir.Sub("server-data"), dir.path(),
                                unix_socket ? "" : testing::FreeLoopbackAddress());
  if (absl::Status s = server.Start(); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  Scope scope = *Scope::Parse("project:bench");
  std::vector<std::unique_ptr<rpc::ServerClient>> clients;
  std::vector<std::unique_ptr<testing::RemoteFs>> fss;
  for (int t = 0; t < 8; ++t) {
    clients.push_back(server.Client());
    fss.push_back(std::make_unique<testing::RemoteFs>(clients.back().get(), scope));
  }
  if (!fss[0]->Open().ok()) return 1;
  std::vector<InodeId> dirs;
  for (uint64_t d = 0; d < kDirs; ++d) dirs.push_back(fss[0]->Mkdir(kRootInode, fmt::format("d{}", d))->ino);
  std::cerr << "server: creating " << inodes << " inodes\n";
  // Server CPU per operation: what a dedicated server core would spend, apart
  // from the client threads that share this machine's cores in the run.
  const pid_t spid = server.pid();
  double cpu0 = CpuSeconds(spid);
  auto cpu_per_op = [&](uint64_t ops) {
    double now = CpuSeconds(spid), used = now - cpu0;
    cpu0 = now;
    return used / ops * 1e6;
  };
  double create1 = RunOps(1, kCreate1, [&](int t, uint64_t i) {
    return fss[t]->Create(dirs[i % kDirs], name_of(i)).status();
  });
  double create1_cpu = cpu_per_op(kCreate1);
  double create8 = RunOps(8, inodes - kCreate1 - kDirs, [&](int t, uint64_t i) {
    i += kCreate1;
    return fss[t]->Create(dirs[i % kDirs], name_of(i)).status();
  });
  double create8_cpu = cpu_per_op(inodes - kCreate1 - kDirs);
  uint64_t files = inodes - kDirs;
  auto lookup = [&](int t, uint64_t i) {
    uint64_t k = (i * 2654435761u) % files;
    return fss[t]->Lookup(dirs[k % kDirs], name_of(k)).status();
  };
  std::cerr << "server: lookups and getattrs\n";
  double lookup1 = RunOps(1, kProbe / 2, lookup);
  double lookup1_cpu = cpu_per_op(kProbe / 2);
  double lookup8 = RunOps(8, kProbe, lookup);
  double lookup8_cpu = cpu_per_op(kProbe);
  auto getattr = [&](int t, uint64_t i) { return fss[t]->GetAttr(dirs[(i * 7919) % kDirs]).status(); };
  double getattr1 = RunOps(1, kProbe / 2, getattr);
  double getattr1_cpu = cpu_per_op(kProbe / 2);
  double getattr8 = RunOps(8, kProbe, getattr);
  double getattr8_cpu = cpu_per_op(kProbe);

  rows.push_back({"create, 1 thread", base_create1, create1, "ops/s", "in-process store", create1_cpu});
  rows.push_back({"create, 8 threads", base_create8, create8, "ops/s", "in-process store", create8_cpu});
  rows.push_back({"lookup, 1 thread", base_lookup1, lookup1, "ops/s", "in-process store", lookup1_cpu});
  rows.push_back({"lookup, 8 threads", base_lookup8, lookup8, "ops/s", "in-process store", lookup8_cpu});
  rows.push_back({"getattr, 1 thread", base_getattr1, getattr1, "ops/s", "in-process store", getattr1_cpu});
  rows.push_back({"getattr, 8 threads", base_getattr8, getattr8, "ops/s", "in-process store", getattr8_cpu});

  // ---- chunks: 4 MiB each, `chunk_mib` per stream ----
  std::cerr << "server: chunk put/get\n";
  const size_t kChunk = kDefaultChunkSize;
  const size_t per_stream = chunk_mib / 4;
  for (int streams : {1, 4}) {
    std::vector<std::vector<std::string>> data(streams);
    for (int s = 0; s < streams; ++s) {
      for (size_t c = 0; c < per_stream; ++c) {
        data[s].push_back(RandomChunk(kChunk, streams * 1'000'000 + s * 10'000 + c));
      }
    }
    double bytes = double(streams) * per_stream * kChunk;
    auto start = Clock::now();
    std::vector<std::thread> threads;
    std::atomic<bool> failed{false};
    for (int s = 0; s < streams; ++s) {
      threads.emplace_back([&, s] {
        // 16 chunks (64 MiB) per PutChunks stream, as a writer would batch them.
        for (size_t c = 0; c < per_stream; c += 16) {
          std::vector<std::string_view> batch(data[s].begin() + c,
                                              data[s].begin() + std::min(per_stream, c + 16));
          if (!clients[s]->PutChunks(scope, batch).ok()) failed = true;
        }
      });
    }
    for (auto& t : threads) t.join();
    double put = bytes / Seconds(start) / 1e6;
    threads.clear();
    std::cerr << "server: chunk get, " << streams << " streams\n";
    start = Clock::now();
    for (int s = 0; s < streams; ++s) {
      threads.emplace_back([&, s] {
        for (size_t c = 0; c < per_stream; ++c) {
          auto got = clients[s]->GetChunk(scope, ChunkId::Of(data[s][c]));
          if (!got.ok() || got->size() != kChunk) failed = true;
        }
      });
    }
    for (auto& t : threads) t.join();
    double get = bytes / Seconds(start) / 1e6;
    if (failed) {
      std::cerr << "chunk transfer failed\n";
      return 1;
    }
    double raw = RawTcpCopy(per_stream * kChunk, streams);
    rows.push_back({fmt::format("chunk put, {} stream{}", streams, streams > 1 ? "s" : ""), raw,
                    put, "MB/s", "raw loopback TCP copy"});
    rows.push_back({fmt::format("chunk get, {} stream{}", streams, streams > 1 ? "s" : ""), raw,
                    get, "MB/s", "raw loopback TCP copy"});
  }
  server.Stop();

  std::printf("\ntraincache-server benchmark (%llu inodes in one scope, 4 MiB chunks)\n",
              static_cast<unsigned long long>(inodes));
  std::printf("%-22s %16s %16s %7s %14s  %s\n", "workload", "baseline", "traincache", "ratio",
              "server CPU/op", "baseline is");
  for (const Row& r : rows) {
    std::string cpu = r.server_cpu > 0 ? fmt::format("{:.0f} us", r.server_cpu) : "-";
    std::printf("%-22s %10.0f %-5s %10.0f %-5s %7.2f %14s  %s\n", r.workload.c_str(), r.baseline,
                r.unit.c_str(), r.traincache, r.unit.c_str(), r.traincache / r.baseline,
                cpu.c_str(), r.baseline_name.c_str());
  }
  std::string json = "{\"inodes\": " + std::to_string(inodes) + ", \"rows\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    json += fmt::format(
        "{}{{\"workload\": \"{}\", \"baseline\": {:.1f}, \"traincache\": {:.1f}, \"unit\": \"{}\", "
        "\"ratio\": {:.3f}, \"server_cpu_us_per_op\": {:.1f}, \"baseline_is\": \"{}\"}}",
        i ? ", " : "", rows[i].workload, rows[i].baseline, rows[i].traincache, rows[i].unit,
        rows[i].traincache / rows[i].baseline, rows[i].server_cpu, rows[i].baseline_name);
  }
  json += "]}";
  std::printf("\n%s\n", json.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << json << "\n";
  return 0;
}

}  // namespace
}  // namespace traincache::bench

int main(int argc, char** argv) { return traincache::bench::Main(argc, argv); }
