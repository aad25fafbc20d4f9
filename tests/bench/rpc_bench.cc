// Benchmark of one small call from traincache-node to traincache-server: the
// round trip of a unary GetAttr (what a FUSE lookup or getattr costs on the
// wire), from 1 and 2 client threads sharing one client as the node's FUSE
// threads do, beside a baseline measured in the same run: a plain blocking
// socket ping-pong of the same payload sizes between this process and a
// child (over the same transport, TCP loopback or a Unix socket). The ratio
// of the two is gRPC's overhead on this machine.
//
// Rows: GetAttr through the node's client (1 and 2 threads); Ping through a
// bare stub; 4 MiB chunk fetches (1 and 4 threads, MB/s); GetAttr while this process also serves
// gRPC, as the node does (1 and 2 threads); GetAttr beside a chunk stream and beside a writer (one
// more thread fetching 4 MiB chunks, or creating and removing files, through
// the same client).
//
//   rpc_bench [--transport unix|tcp|both] [--calls N] [--baseline yes|no]
//             [--rows getattr,ping,bulk,serving,beside] [--json FILE]
//   rpc_bench --server ADDR --token-file F [--server-pid PID] ...
//
// Without --server it starts a traincache-server of its own per transport
// (the build's, on a temp dir) and stops it by PID. With --server it talks to
// that one; --server-pid lets it count that server's CPU and context switches.
//
// Per row: p50, p99 and mean of the round trip, calls/s over all threads,
// and per call the CPU time and context switches of each side (client: this
// process, gRPC's own threads included; server: every thread of it).
// Not a test: nothing here passes or fails on speed.
#include <arpa/inet.h>
#include <dirent.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#include "rpc/convert.h"
#include "rpc/grpc_cluster_client.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "traincache/v1/node_admin.grpc.pb.h"

namespace traincache::bench {
namespace {

using Clock = std::chrono::steady_clock;

// CPU seconds and context switches (voluntary + involuntary) of one side.
struct Usage {
  double cpu_s = 0;
  uint64_t switches = 0;
};

Usage SelfUsage() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);  // All threads, those that ended included.
  return {
      ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
      static_cast<uint64_t>(ru.ru_nvcsw + ru.ru_nivcsw)};
}

// Another process's usage from /proc: CPU from its stat, context switches
// summed over its threads (each task's status counts only its own).
Usage ProcUsage(pid_t pid) {
  Usage u;
  if (pid <= 0) return u;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  std::getline(stat, line);
  if (size_t close = line.rfind(')'); close != std::string::npos) {
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    for (int i = 1; i <= 13 && rest >> field; ++i) {  // utime and stime: 12th and 13th
      if (i >= 12) u.cpu_s += std::stod(field) / sysconf(_SC_CLK_TCK);
    }
  }
  std::string tasks = fmt::format("/proc/{}/task", pid);
  if (DIR* dir = opendir(tasks.c_str())) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream status(tasks + "/" + e->d_name + "/status");
      for (std::string l; std::getline(status, l);) {
        if (l.find("ctxt_switches:") != std::string::npos) {
          u.switches += std::stoull(l.substr(l.find(':') + 1));
        }
      }
    }
    closedir(dir);
  }
  return u;
}

struct Row {
  std::string transport, what;
  int threads = 0;
  double p50_us = 0, p99_us = 0, mean_us = 0, calls_per_s = 0;
  double client_cpu_us = 0, server_cpu_us = 0, client_switches = 0, server_switches = 0;
  double mb_per_s = 0;  // Chunk rows only: MB (10^6 bytes) fetched per second.
};

double Percentile(const std::vector<double>& sorted, double p) {
  return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p / 100 * sorted.size()))];
}

// Times `calls` calls of call(thread) on each of `threads` threads (after a
// warm-up of its own on each). A failed call aborts: a figure over failures
// would lie.
Row Measure(int threads, int calls, pid_t server_pid, const std::function<bool(int)>& call) {
  for (int t = 0; t < threads; ++t) {
    for (int i = 0; i < std::max(100, calls / 20); ++i) {
      if (!call(t)) {
        std::cerr << "warm-up call failed\n";
        std::exit(1);
      }
    }
  }
  std::vector<std::vector<double>> lat(threads, std::vector<double>(calls));
  std::atomic<bool> failed{false};
  std::atomic<int> ready{0};
  Usage client0 = SelfUsage(), server0 = ProcUsage(server_pid);
  Clock::time_point start;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < threads) {
      }
      for (int i = 0; i < calls; ++i) {
        Clock::time_point s = Clock::now();
        if (!call(t)) failed = true;
        lat[t][i] = std::chrono::duration<double, std::micro>(Clock::now() - s).count();
      }
    });
  }
  start = Clock::now();
  for (auto& th : pool) th.join();
  double wall = std::chrono::duration<double>(Clock::now() - start).count();
  Usage client1 = SelfUsage(), server1 = ProcUsage(server_pid);
  if (failed) {
    std::cerr << "a timed call failed\n";
    std::exit(1);
  }
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  double n = all.size();
  Row r;
  r.threads = threads;
  r.p50_us = Percentile(all, 50);
  r.p99_us = Percentile(all, 99);
  for (double x : all) r.mean_us += x / n;
  r.calls_per_s = n / wall;
  r.client_cpu_us = (client1.cpu_s - client0.cpu_s) / n * 1e6;
  r.client_switches = (client1.switches - client0.switches) / n;
  if (server_pid > 0) {
    r.server_cpu_us = (server1.cpu_s - server0.cpu_s) / n * 1e6;
    r.server_switches = (server1.switches - server0.switches) / n;
  }
  return r;
}

bool ReadFull(int fd, char* buf, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) return false;
    got += r;
  }
  return true;
}

bool WriteFull(int fd, const char* buf, size_t n) {
  for (size_t put = 0; put < n;) {
    ssize_t r = write(fd, buf + put, n - put);
    if (r <= 0) return false;
    put += r;
  }
  return true;
}

// The baseline: `pairs` connections to a forked child that answers each
// `req` bytes read with `resp` bytes, one thread per connection on each side,
// blocking reads and writes, TCP_NODELAY as gRPC sets it. Rows for 1..pairs.
// Runs before any gRPC object exists, so the fork copies no gRPC threads.
std::vector<Row> PingPong(const std::string& transport, const std::string& unix_path, int pairs,
                          int calls, size_t req, size_t resp) {
  bool tcp = transport == "tcp";
  int listener = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM, 0);
  sockaddr_storage addr{};
  socklen_t len;
  if (tcp) {
    auto* in = reinterpret_cast<sockaddr_in*>(&addr);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*in);
  } else {
    auto* un = reinterpret_cast<sockaddr_un*>(&addr);
    un->sun_family = AF_UNIX;
    snprintf(un->sun_path, sizeof(un->sun_path), "%s", unix_path.c_str());
    unlink(unix_path.c_str());
    len = sizeof(*un);
  }
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(listener, 8) != 0) {
    perror("ping-pong listener");
    std::exit(1);
  }
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  std::vector<Row> rows;
  for (int threads = 1; threads <= pairs; ++threads) {
    pid_t child = fork();
    if (child == 0) {
      std::vector<std::thread> echo;
      for (int t = 0; t < threads; ++t) {
        int fd = accept(listener, nullptr, nullptr);
        echo.emplace_back([fd, req, resp] {
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // fails on Unix: fine
          std::string in(req, '\0'), out(resp, 'y');
          while (ReadFull(fd, in.data(), req) && WriteFull(fd, out.data(), resp)) {
          }
          close(fd);
        });
      }
      for (auto& th : echo) th.join();
      _exit(0);
    }
    std::vector<int> fds;
    for (int t = 0; t < threads; ++t) {
      int fd = socket(tcp ? AF_INET : AF_UNIX, SOCK_STREAM, 0);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
        perror("ping-pong connect");
        std::exit(1);
      }
      fds.push_back(fd);
    }
    std::string out(req, 'x');
    std::vector<std::string> in(threads, std::string(resp, '\0'));
    Row r = Measure(threads, calls, child, [&](int t) {
      return WriteFull(fds[t], out.data(), req) && ReadFull(fds[t], in[t].data(), resp);
    });
    r.transport = transport;
    r.what = fmt::format("socket ping-pong {}+{} B", req, resp);
    rows.push_back(r);
    for (int fd : fds) close(fd);
    waitpid(child, nullptr, 0);
  }
  close(listener);
  if (!tcp) unlink(unix_path.c_str());
  return rows;
}

// The gRPC rows against one server: GetAttr of a scope's root through
// GrpcClusterClient (the node's client: outage check, context, deadline,
// token) from 1..threads threads sharing it, and Ping through the bare stub.
// Then GetAttr again while this process also serves gRPC on `local_socket`,
// as traincache-node does (its admin socket): that server's polling threads
// share gRPC's one epoll set with the calling threads. `only`: the groups
// of rows to measure ("getattr,ping,bulk,serving,beside"), empty for all.
std::vector<Row> GrpcRows(const std::string& transport, const std::string& target,
                          const std::string& token, pid_t server_pid, int max_threads, int calls,
                          const std::string& local_socket, const std::string& only) {
  auto wanted = [&](std::string_view group) {
    return only.empty() || ("," + only + ",").find(fmt::format(",{},", group)) != std::string::npos;
  };
  rpc::GrpcClusterClient client({.target = target, .token = token});
  Scope scope = *Scope::Parse("project:rpc-bench");
  auto opened = client.OpenScope(scope, /*create=*/true);
  if (!opened.ok()) {
    std::cerr << "OpenScope: " << opened.status() << "\n";
    std::exit(1);
  }
  InodeId root = opened->root.ino;
  std::vector<Row> rows;
  for (int threads = 1; threads <= max_threads && wanted("getattr"); ++threads) {
    Row r =
        Measure(threads, calls, server_pid, [&](int) { return client.GetAttr(scope, root).ok(); });
    r.transport = transport;
    r.what = "gRPC GetAttr (node client)";
    rows.push_back(r);
  }
  if (wanted("ping")) {
    rpc::ServerClient bare({.target = target, .token = token});
    Row r = Measure(1, calls, server_pid, [&](int) {
      v1::PingResponse resp;
      return bare.Call(&v1::Admin::Stub::Ping, bare.admin(), {}, &resp).ok();
    });
    r.transport = transport;
    r.what = "gRPC Ping (bare stub)";
    rows.push_back(r);
  }
  if (wanted("bulk")) {
    // Big transfers must not pay for what small calls gain: 4 MiB chunk
    // fetches from 1 and 4 threads (the node's fetcher reads ahead in
    // parallel), as MB/s.
    std::string chunk(kDefaultChunkSize, 'b');
    for (size_t i = 0; i < chunk.size(); i += 4096) chunk[i] = static_cast<char>(i >> 12);
    if (absl::Status put = client.PutChunks(scope, {chunk}); !put.ok()) {
      std::cerr << "PutChunks: " << put << "\n";
      std::exit(1);
    }
    for (int threads : {1, 4}) {
      Row r = Measure(threads, std::max(20, calls / 100), server_pid, [&](int) {
        auto got = client.GetChunk(scope, ChunkId::Of(chunk), 0, 0);
        return got.ok() && got->size() == chunk.size();
      });
      r.transport = transport;
      r.what = "gRPC GetChunk 4 MiB";
      r.mb_per_s = r.calls_per_s * chunk.size() / 1e6;
      rows.push_back(r);
    }
  }
  if (!wanted("serving") && !wanted("beside")) return rows;

  v1::NodeAdmin::CallbackService idle;  // Never called: there for its threads.
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + local_socket, grpc::InsecureServerCredentials());
  builder.RegisterService(&idle);
  std::unique_ptr<grpc::Server> local = builder.BuildAndStart();
  if (!local) {
    std::cerr << "cannot serve on " << local_socket << "\n";
    std::exit(1);
  }
  for (int threads = 1; threads <= max_threads && wanted("serving"); ++threads) {
    Row r =
        Measure(threads, calls, server_pid, [&](int) { return client.GetAttr(scope, root).ok(); });
    r.transport = transport;
    r.what = "gRPC GetAttr, client serves too";
    rows.push_back(r);
  }
  if (!wanted("beside")) {
    local->Shutdown(std::chrono::system_clock::now());
    return rows;
  }

  // A node reading a file it lacks fetches chunks while its FUSE threads ask
  // for attributes: GetAttr from one thread while another fetches a 4 MiB
  // chunk over and over through the same client. (The CPU and switches per
  // call of this row include the fetches'.)
  std::string chunk(kDefaultChunkSize, 'c');
  for (size_t i = 0; i < chunk.size(); i += 4096) chunk[i] = static_cast<char>(i >> 12);
  if (absl::Status put = client.PutChunks(scope, {chunk}); !put.ok()) {
    std::cerr << "PutChunks: " << put << "\n";
    std::exit(1);
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> fetched{0};
  std::thread fetcher([&] {
    while (!stop) {
      if (client.GetChunk(scope, ChunkId::Of(chunk), 0, 0).ok()) fetched += chunk.size();
    }
  });
  Row r = Measure(1, calls, server_pid, [&](int) { return client.GetAttr(scope, root).ok(); });
  stop = true;
  fetcher.join();
  r.transport = transport;
  r.what = "gRPC GetAttr beside a chunk stream";
  rows.push_back(r);
  std::cerr << fmt::format("  (chunk stream alongside: {:.0f} MB fetched)\n", fetched.load() / 1e6);

  // The same beside a writer: another thread creates and removes a file
  // over and over, each a durable write (a WAL sync) on the server, which
  // reads made meanwhile wait for.
  stop = false;
  std::atomic<uint64_t> writes{0};
  std::thread writer([&] {
    for (uint64_t i = 0; !stop; ++i) {
      std::string name = fmt::format("w{}", i);
      if (client.Create(scope, root, name, 0644, {}, /*exclusive=*/true).ok() &&
          client.Unlink(scope, root, name).ok()) {
        writes += 2;
      }
    }
  });
  r = Measure(1, calls, server_pid, [&](int) { return client.GetAttr(scope, root).ok(); });
  stop = true;
  writer.join();
  r.transport = transport;
  r.what = "gRPC GetAttr beside a writer";
  rows.push_back(r);
  std::cerr << fmt::format("  (writer alongside: {} durable writes)\n", writes.load());
  local->Shutdown(std::chrono::system_clock::now());
  return rows;
}

std::string ReadToken(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  in >> token;
  return token;
}

int Main(int argc, char** argv) {
  std::string transports = "both", server, token_file, json_path, only;
  pid_t server_pid = -1;
  int calls = 20'000;
  bool baseline = true;
  const int kThreads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--transport")
      transports = argv[i + 1];
    else if (a == "--calls")
      calls = std::stoi(argv[i + 1]);
    else if (a == "--json")
      json_path = argv[i + 1];
    else if (a == "--server")
      server = argv[i + 1];
    else if (a == "--token-file")
      token_file = argv[i + 1];
    else if (a == "--server-pid")
      server_pid = std::stoi(argv[i + 1]);
    else if (a == "--baseline")
      baseline = std::string(argv[i + 1]) != "no";
    else if (a == "--rows")
      only = argv[i + 1];
    else {
      std::cerr << "unknown option " << a << "\n";
      return 2;
    }
  }
  std::vector<std::string> list;
  if (!server.empty()) {
    list = {server.rfind("unix:", 0) == 0 ? "unix" : "tcp"};
  } else if (transports == "both") {
    list = {"unix", "tcp"};
  } else {
    list = {transports};
  }
  testing::TempDir dir;

  // The payload sizes of the baseline are those of the GetAttr messages; they
  // do not depend on the server, so a message built here gives them.
  v1::GetAttrRequest req;
  req.set_scope("project:rpc-bench");
  req.set_ino(kRootInode);
  v1::AttrResponse resp;
  Timespec now = Now();
  rpc::ToProto(InodeAttr{.ino = kRootInode,
                         .mode = 040755,
                         .nlink = 2,
                         .atime = now,
                         .mtime = now,
                         .ctime = now,
                         .version = 1},
               resp.mutable_attr());
  std::vector<Row> rows;
  for (const std::string& t : baseline ? list : std::vector<std::string>{}) {
    std::cerr << t << ": socket ping-pong\n";
    auto base = PingPong(t, dir.Sub("pingpong.sock"), kThreads, calls, req.ByteSizeLong(),
                         resp.ByteSizeLong());
    rows.insert(rows.end(), base.begin(), base.end());
  }
  for (const std::string& t : list) {
    std::cerr << t << ": gRPC\n";
    std::vector<Row> got;
    if (!server.empty()) {
      got = GrpcRows(t, server, ReadToken(token_file), server_pid, kThreads, calls,
                     dir.Sub("local.sock"), only);
    } else {
      testing::ServerProcess proc(dir.Sub("data-" + t), dir.path(),
                                  t == "tcp" ? testing::FreeLoopbackAddress() : "");
      if (absl::Status s = proc.Start(); !s.ok()) {
        std::cerr << s << "\n";
        return 1;
      }
      got = GrpcRows(t, proc.address(), proc.token(), proc.pid(), kThreads, calls,
                     dir.Sub("local.sock"), only);
      proc.Stop();
    }
    rows.insert(rows.end(), got.begin(), got.end());
  }

  std::printf("\nsmall-call round trip, %d calls per thread per row\n", calls);
  std::printf("%-5s %-30s %3s %8s %8s %8s %9s %11s %11s %9s %9s\n", "", "", "thr", "p50 us",
              "p99 us", "mean us", "calls/s", "cli CPU us", "srv CPU us", "cli cs", "srv cs");
  for (const Row& r : rows) {
    std::printf("%-5s %-30s %3d %8.1f %8.1f %8.1f %9.0f %11.1f %11.1f %9.2f %9.2f\n",
                r.transport.c_str(), r.what.c_str(), r.threads, r.p50_us, r.p99_us, r.mean_us,
                r.calls_per_s, r.client_cpu_us, r.server_cpu_us, r.client_switches,
                r.server_switches);
  }
  // gRPC over the ping-pong of the same transport and thread count.
  for (const Row& r : rows) {
    if (r.mb_per_s > 0) {
      std::printf("%-5s %-30s %3d: %.0f MB/s\n", r.transport.c_str(), r.what.c_str(), r.threads,
                  r.mb_per_s);
    }
  }
  std::printf("\np50 ratio to the socket ping-pong of the same transport and threads:\n");
  for (const Row& g : rows) {
    if (g.what.rfind("gRPC", 0) != 0) continue;
    for (const Row& b : rows) {
      if (b.what.rfind("socket", 0) == 0 && b.transport == g.transport && b.threads == g.threads) {
        std::printf("  %-5s %-30s %d thread%s: %.1fx\n", g.transport.c_str(), g.what.c_str(),
                    g.threads, g.threads > 1 ? "s" : "", g.p50_us / b.p50_us);
      }
    }
  }
  std::string json = "{\"calls_per_thread\": " + std::to_string(calls) + ", \"rows\": [";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    json += fmt::format(
        "{}{{\"transport\": \"{}\", \"what\": \"{}\", \"threads\": {}, \"p50_us\": {:.1f}, "
        "\"p99_us\": {:.1f}, \"mean_us\": {:.1f}, \"calls_per_s\": {:.0f}, "
        "\"client_cpu_us\": {:.1f}, \"server_cpu_us\": {:.1f}, \"client_switches\": {:.2f}, "
        "\"server_switches\": {:.2f}, \"mb_per_s\": {:.1f}}}",
        i ? ", " : "", r.transport, r.what, r.threads, r.p50_us, r.p99_us, r.mean_us, r.calls_per_s,
        r.client_cpu_us, r.server_cpu_us, r.client_switches, r.server_switches, r.mb_per_s);
  }
  json += "]}";
  std::printf("\n%s\n", json.c_str());
  if (!json_path.empty()) std::ofstream(json_path) << json << "\n";
  return 0;
}

}  // namespace
}  // namespace traincache::bench

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);  // A dead echo child shows as a failed write.
  return traincache::bench::Main(argc, argv);
}
