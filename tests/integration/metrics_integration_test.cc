// Prometheus metrics of the real daemons: a traincache-server and a
// traincache-node started with --metrics-listen on free loopback ports, file
// I/O through the FUSE mount, then /metrics scraped over HTTP and checked
// against what was done (bytes written, reads served) and against the
// daemons' own counters.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "integration/mount_fixture.h"
#include "testing/metrics_scrape.h"

namespace traincache::testing {
namespace {

std::string ReadLog(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

double Value(const MetricSamples& samples, const std::string& key) {
  std::optional<double> v = Sample(samples, key);
  EXPECT_TRUE(v.has_value()) << "no sample " << key;
  return v.value_or(-1);
}

TEST(MetricsIntegrationTest, BothDaemonsExportWhatTheMountDid) {
  TempDir dir;
  const std::string server_metrics = FreeLoopbackAddress();
  ServerProcess server(dir.Sub("server"), dir.path(), FreeLoopbackAddress());
  ASSERT_TRUE(server.Start({"--metrics-listen", server_metrics}).ok())
      << ReadLog(server.log_file());
  const std::string node_metrics = FreeLoopbackAddress();
  const Scope scope = *Scope::Parse("project:metrics");
  std::filesystem::create_directories(dir.Sub("node"));
  NodeProcess node(dir.Sub("node"), server.address(), server.token_file());
  ASSERT_TRUE(node.Start({scope}, {"--metrics-listen", node_metrics}).ok())
      << ReadLog(node.log_file());
  const std::string mnt = node.MountPoint(scope);

  // Two chunks and a small file: uploads, commits, creates and writes.
  const std::string big = RandomBytes(5 * kMiB + 4097, 11);
  const std::string small = "a small file\n";
  ASSERT_EQ(WriteFile(mnt + "/big.bin", big), 0);
  ASSERT_EQ(WriteFile(mnt + "/small.txt", small), 0);
  // First read: the tier misses and the chunks are fetched from the server.
  DropCaches();
  ASSERT_EQ(ReadFile(mnt + "/big.bin"), big);
  // Second read: served by the node (its fetcher's memory of recent chunks,
  // or its tier).
  DropCaches();
  ASSERT_EQ(ReadFile(mnt + "/big.bin"), big);
  ASSERT_EQ(ReadFile(mnt + "/small.txt"), small);

  MetricSamples n = ScrapeMetrics(node_metrics);
  ASSERT_FALSE(n.empty()) << "node endpoint " << node_metrics << " did not answer";
  for (const char* op : {"lookup", "create", "write", "read", "release", "getattr"}) {
    std::string key = fmt::format("traincache_node_fuse_op_duration_seconds_count{{op=\"{}\"}}", op);
    EXPECT_GT(Value(n, key), 0) << key;
  }
  EXPECT_GT(Value(n, "traincache_node_fuse_op_duration_seconds_sum{op=\"read\"}"), 0);
  EXPECT_EQ(Value(n, "traincache_node_fuse_op_duration_seconds_count{op=\"read\"}"),
            Value(n, "traincache_node_fuse_op_duration_seconds_bucket{op=\"read\",le=\"+Inf\"}"));
  // Tier and fetcher, against the bytes that went through them.
  EXPECT_GT(Value(n, "traincache_node_tier_hits_total") +
                Value(n, "traincache_node_fetch_memory_hits_total"),
            0);
  EXPECT_GT(Value(n, "traincache_node_tier_misses_total"), 0);
  EXPECT_GT(Value(n, "traincache_node_fetch_memory_bytes"), 0);
  EXPECT_GE(Value(n, "traincache_node_tier_used_bytes"), static_cast<double>(big.size()));
  EXPECT_GE(Value(n, "traincache_node_tier_images"), 1);
  EXPECT_GT(Value(n, "traincache_node_tier_capacity_bytes"), 0);
  EXPECT_GE(Value(n, "traincache_node_fetch_fetches_total"), 2);
  EXPECT_GE(Value(n, "traincache_node_fetch_fetched_bytes_total"), static_cast<double>(big.size()));
  EXPECT_EQ(Value(n, "traincache_node_tier_evicted_bytes_total"), 0);
  // Per scope: a label, not part of the name.
  EXPECT_EQ(Value(n, "traincache_node_scope_uploaded_bytes_total{scope=\"project:metrics\"}"),
            static_cast<double>(big.size() + small.size()));
  EXPECT_EQ(Value(n, "traincache_node_scope_commits_total{scope=\"project:metrics\"}"), 2);
  // The node's calls to the server.
  EXPECT_GE(Value(n, "traincache_node_rpc_duration_seconds_count{method=\"CommitContent\"}"), 2);
  EXPECT_GE(Value(n, "traincache_node_rpc_duration_seconds_count{method=\"GetChunk\"}"), 2);
  EXPECT_GE(Value(n, "traincache_node_rpc_duration_seconds_count{method=\"PutChunks\"}"), 1);
  // The same numbers as the admin endpoint's counters (nothing ran in between).
  std::map<std::string, uint64_t> counters = node.Counters();
  EXPECT_EQ(Value(n, "traincache_node_tier_hits_total"), counters["tier.hits"]);
  EXPECT_EQ(Value(n, "traincache_node_tier_used_bytes"), counters["tier.used_bytes"]);
  EXPECT_EQ(Value(n, "traincache_node_fetch_fetches_total"), counters["fetch.fetches"]);

  MetricSamples s = ScrapeMetrics(server_metrics);
  ASSERT_FALSE(s.empty()) << "server endpoint " << server_metrics << " did not answer";
  for (const char* method : {"CommitContent", "PutChunks", "GetChunk", "Create", "OpenScope"}) {
    std::string count =
        fmt::format("traincache_server_rpc_duration_seconds_count{{method=\"{}\"}}", method);
    std::string calls = fmt::format("traincache_server_rpc_calls_total{{method=\"{}\"}}", method);
    EXPECT_GT(Value(s, count), 0) << count;
    EXPECT_EQ(Value(s, count), Value(s, calls)) << method;
  }
  EXPECT_GE(Value(s, "traincache_server_rpc_errors_total{method=\"Lookup\",code=\"NOT_FOUND\"}"),
            1);
  EXPECT_GE(Value(s, "traincache_server_chunk_put_bytes_total"),
            static_cast<double>(big.size() + small.size()));
  // Usage per scope, computed at scrape time: exactly the bytes written.
  EXPECT_EQ(Value(s, "traincache_server_scope_used_bytes{scope=\"project:metrics\"}"),
            static_cast<double>(big.size() + small.size()));
  EXPECT_EQ(Value(s, "traincache_server_scope_inodes{scope=\"project:metrics\"}"), 3);
  EXPECT_GT(Value(s, "traincache_server_scope_quota_bytes{scope=\"project:metrics\"}"), 0);

  int status = node.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadLog(node.log_file());
  EXPECT_FALSE(IsMounted(mnt));
  // The endpoint went with the daemon.
  EXPECT_FALSE(HttpGet(node_metrics, "/metrics").ok());
}

// A listening socket on a loopback port, so that port is taken.
class BusyPort {
 public:
  BusyPort() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 1);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    address_ = fmt::format("127.0.0.1:{}", ntohs(addr.sin_port));
  }
  ~BusyPort() { close(fd_); }
  const std::string& address() const { return address_; }

 private:
  int fd_;
  std::string address_;
};

TEST(MetricsIntegrationTest, BadOrBusyMetricsAddressStopsTheDaemonsNamingIt) {
  TempDir dir;
  std::ofstream(dir.Sub("token")) << "0123456789abcdef0123\n";
  BusyPort busy;
  const std::string log = dir.Sub("out.log");
  auto run = [&](std::vector<std::string> argv) {
    std::ofstream(log, std::ios::trunc).close();
    return RunProgram(argv, log);
  };
  std::vector<std::string> server = {ServerBinary(), "--data-dir", dir.Sub("data"),
                                     "--listen", "unix:" + dir.Sub("s.sock"),
                                     "--token-file", dir.Sub("token")};
  auto with = [](std::vector<std::string> argv, std::vector<std::string> more) {
    argv.insert(argv.end(), more.begin(), more.end());
    return argv;
  };
  EXPECT_EQ(run(with(server, {"--metrics-listen", "nonsense"})), 2);
  EXPECT_NE(ReadLog(log).find("metrics_listen"), std::string::npos) << ReadLog(log);
  std::ofstream(dir.Sub("server.toml")) << "metrics_listen = 9464\n";
  EXPECT_EQ(run(with(server, {"--config", dir.Sub("server.toml")})), 2);
  EXPECT_NE(ReadLog(log).find("metrics_listen"), std::string::npos) << ReadLog(log);
  EXPECT_EQ(run(with(server, {"--metrics-listen", busy.address()})), 1);
  EXPECT_NE(ReadLog(log).find("metrics_listen"), std::string::npos) << ReadLog(log);
  EXPECT_NE(ReadLog(log).find(busy.address()), std::string::npos) << ReadLog(log);

  std::vector<std::string> node = {NodeBinary(),    "--server",       "unix:" + dir.Sub("s.sock"),
                                   "--token-file",  dir.Sub("token"), "--mount-root",
                                   dir.Sub("mnt"),  "--tier-dir",     dir.Sub("tier"),
                                   "--staging-dir", dir.Sub("staging"), "--admin-socket", "",
                                   "--scope",       "project:never"};
  EXPECT_EQ(run(with(node, {"--metrics-listen", "nonsense"})), 2);
  EXPECT_NE(ReadLog(log).find("--metrics-listen"), std::string::npos) << ReadLog(log);
  EXPECT_EQ(run(with(node, {"--metrics-listen", busy.address()})), 1);
  EXPECT_NE(ReadLog(log).find(busy.address()), std::string::npos) << ReadLog(log);
  EXPECT_FALSE(IsMounted(dir.Sub("mnt") + "/project/never"));
}

}  // namespace
}  // namespace traincache::testing
