// GrpcClusterClient against a real traincache-server process (loopback TCP,
// as nodes reach it): the conformance suite, then outages — a restart is
// waited out, a long outage becomes UNAVAILABLE right after the timeout, a
// wrong token is UNAUTHENTICATED at once.
#include "rpc/grpc_cluster_client.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <thread>

#include "rpc/cluster_client_conformance.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "traincache/status.h"

namespace traincache::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class GrpcEnv : public ClusterClientEnv {
 public:
  GrpcEnv() : server_(dir_.Sub("data"), dir_.path(), FreeLoopbackAddress()) {}

  absl::Status Start() {
    RETURN_IF_ERROR(server_.Start());
    client_ = std::make_unique<rpc::GrpcClusterClient>(
        rpc::GrpcClusterClientOptions{.target = server_.address(),
                                      .token = server_.token(),
                                      .outage_timeout = milliseconds(10'000)});
    return absl::OkStatus();
  }
  ClusterClient& client() override { return *client_; }
  absl::Status SetQuota(const Scope& scope, uint64_t quota_bytes) override {
    auto admin = server_.Client();
    v1::SetQuotaRequest req;
    req.set_scope(scope.ToString());
    req.set_quota_bytes(quota_bytes);
    v1::QuotaResponse resp;
    return admin->Call(&v1::Admin::Stub::SetQuota, admin->admin(), req, &resp);
  }
  const ServerProcess& server() const { return server_; }

 private:
  // Destroyed in reverse: the client's connection closes before the server
  // stops (gRPC 1.51's server waits on connected idle clients when stopping).
  TempDir dir_;
  ServerProcess server_;
  std::unique_ptr<rpc::GrpcClusterClient> client_;
};

std::unique_ptr<ClusterClientEnv> MakeGrpcEnv() {
  auto env = std::make_unique<GrpcEnv>();
  absl::Status started = env->Start();
  if (!started.ok()) {
    ADD_FAILURE() << started << "; see " << env->server().log_file();
    return nullptr;
  }
  return env;
}

INSTANTIATE_TEST_SUITE_P(Grpc, ClusterClientConformanceTest,
                         ::testing::Values(ClusterClientImpl{"grpc", MakeGrpcEnv}),
                         ClusterClientImpl::Name);

class GrpcOutageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(dir_.Sub("data"), dir_.path(), FreeLoopbackAddress());
    ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
  }

  std::unique_ptr<rpc::GrpcClusterClient> NewClient(milliseconds outage_timeout,
                                                    std::string token = "") {
    return std::make_unique<rpc::GrpcClusterClient>(
        rpc::GrpcClusterClientOptions{.target = server_->address(),
                                      .token = token.empty() ? server_->token() : token,
                                      .call_deadline = milliseconds(10'000),
                                      .outage_timeout = outage_timeout});
  }

  const Scope scope_ = *Scope::Parse("project:outage");
  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;  // Stopped by PID in its destructor.
};

// The server stops; calls made while it is down, repeatable or not, wait;
// it comes back on the same data and address 2 s later; every call succeeds.
// A reader running throughout never sees an error either.
TEST_F(GrpcOutageTest, RestartIsWaitedOutWithoutAnError) {
  auto client = NewClient(milliseconds(30'000));
  ASSERT_TRUE(client->OpenScope(scope_, true).ok());
  auto f = client->Create(scope_, kRootInode, "f", 0644, {}, true);
  ASSERT_TRUE(f.ok());
  const std::string content = "checkpoint bytes";
  ASSERT_TRUE(client->PutChunks(scope_, {content}).ok());
  auto committed = client->CommitContent(scope_, f->attr.ino, f->attr.version, content.size(),
                                         kMinChunkSize, {{ChunkId::Of(content), 16}}, Now());
  ASSERT_TRUE(committed.ok()) << committed.status();

  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::vector<std::string> reader_errors;
  std::thread reader([&] {
    while (!stop) {
      auto attr = client->GetAttr(scope_, f->attr.ino);
      auto bytes = client->GetChunk(scope_, ChunkId::Of(content), 0, 0);
      if (!attr.ok()) reader_errors.push_back(attr.status().ToString());
      if (!bytes.ok()) reader_errors.push_back(bytes.status().ToString());
      ++reads;
    }
  });
  std::this_thread::sleep_for(milliseconds(200));
  ASSERT_NE(server_->Stop(), -1);

  // Issued while the server is down.
  Clock::time_point issued = Clock::now();
  absl::StatusOr<InodeAttr> dir;
  absl::StatusOr<CreateResult> created;
  absl::StatusOr<InodeAttr> commit;
  double waited = 0;
  std::thread writer([&] {
    dir = client->Mkdir(scope_, kRootInode, "made-during-outage", 0755, {});
    created = client->Create(scope_, kRootInode, "g", 0644, {}, /*exclusive=*/true);
    const std::string more = "written during the outage";
    absl::Status put = client->PutChunks(scope_, {more});
    commit = put.ok() ? client->CommitContent(scope_, f->attr.ino, committed->version, more.size(),
                                              kMinChunkSize,
                                              {{ChunkId::Of(more), uint32_t(more.size())}}, Now())
                      : absl::StatusOr<InodeAttr>(put);
    waited = SecondsSince(issued);
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
  writer.join();
  std::this_thread::sleep_for(milliseconds(200));
  stop = true;
  reader.join();

  EXPECT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(commit.ok()) << commit.status();
  EXPECT_GE(waited, 1.5) << "the calls should have waited for the server";
  EXPECT_TRUE(reader_errors.empty()) << reader_errors.front();
  EXPECT_GT(reads.load(), 0);
  auto listed = client->ReadDir(scope_, kRootInode, "", 0, false);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->entries.size(), 3u);  // f, g, made-during-outage: each once.
}

// A crash (SIGKILL) while a reader streams chunks: the reader never sees it.
TEST_F(GrpcOutageTest, CrashAndRestartIsWaitedOutByReaders) {
  auto client = NewClient(milliseconds(30'000));
  ASSERT_TRUE(client->OpenScope(scope_, true).ok());
  std::string chunk(8u << 20, 'c');
  ASSERT_TRUE(client->PutChunks(scope_, {chunk}).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, errors{0};
  std::thread reader([&] {
    while (!stop) {
      auto bytes = client->GetChunk(scope_, ChunkId::Of(chunk), 0, 0);
      if (!bytes.ok() || *bytes != chunk) ++errors;
      ++reads;
    }
  });
  std::this_thread::sleep_for(milliseconds(300));
  server_->Kill();
  std::this_thread::sleep_for(milliseconds(1'500));
  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
  int before = reads.load();
  while (reads.load() < before + 3) std::this_thread::sleep_for(milliseconds(20));
  stop = true;
  reader.join();
  EXPECT_EQ(errors.load(), 0);
}

// Crashes (SIGKILL) with non-idempotent calls in flight from four threads:
// each is re-sent with its request id, so none fails and none is applied
// twice (a second unlink would be ENOENT, a second O_EXCL create EEXIST,
// a second mkdir EEXIST, a second rename ENOENT).
TEST_F(GrpcOutageTest, CrashesWithNamespaceCallsInFlightAreWaitedOutExactlyOnce) {
  auto client = NewClient(milliseconds(30'000));
  ASSERT_TRUE(client->OpenScope(scope_, true).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::mutex mu;
  std::vector<std::string> errors;
  auto fail = [&](const std::string& what, const absl::Status& st) {
    std::lock_guard lock(mu);
    errors.push_back(what + ": " + st.ToString());
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; !stop; ++i) {
        std::string n = fmt::format("w{}-{}", w, i);
        auto made = client->Create(scope_, kRootInode, n, 0644, {}, /*exclusive=*/true);
        if (!made.ok()) return fail("create " + n, made.status());
        auto dir = client->Mkdir(scope_, kRootInode, "d" + n, 0755, {});
        if (!dir.ok()) return fail("mkdir d" + n, dir.status());
        auto moved = client->Rename(scope_, kRootInode, n, dir->ino, "f", 0);
        if (!moved.ok()) return fail("rename " + n, moved.status());
        auto gone = client->Unlink(scope_, dir->ino, "f");
        if (!gone.ok()) return fail("unlink d" + n + "/f", gone.status());
        if (gone->ino != made->attr.ino) return fail("unlink d" + n + "/f: wrong inode", {});
        absl::Status rm = client->Rmdir(scope_, kRootInode, "d" + n);
        if (!rm.ok()) return fail("rmdir d" + n, rm);
        ++rounds;
      }
    });
  }
  for (int k = 0; k < 4; ++k) {
    std::this_thread::sleep_for(milliseconds(400));
    server_->Kill();
    std::this_thread::sleep_for(milliseconds(200));
    // No ASSERT while the workers run: they must be joined first.
    absl::Status started = server_->Start();
    EXPECT_TRUE(started.ok()) << started << "; see " << server_->log_file();
    if (!started.ok()) break;
  }
  std::this_thread::sleep_for(milliseconds(300));
  stop = true;
  for (std::thread& t : workers) t.join();
  for (const std::string& e : errors) ADD_FAILURE() << e;
  EXPECT_GT(rounds.load(), 20);
  auto listed = client->ReadDir(scope_, kRootInode, "", 0, false);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->entries.empty()) << listed->entries.size() << " names left, first "
                                       << listed->entries.front().name;
}

// Down longer than the outage timeout: UNAVAILABLE (EIO) once it has passed,
// not before and not much after; a request that must not be repeated was
// never sent. The same client works again once the server is back.
TEST_F(GrpcOutageTest, LongOutageIsUnavailableRightAfterTheTimeout) {
  auto client = NewClient(milliseconds(1'000));
  ASSERT_TRUE(client->OpenScope(scope_, true).ok());
  ASSERT_NE(server_->Stop(), -1);

  Clock::time_point start = Clock::now();
  absl::Status read = client->GetAttr(scope_, kRootInode).status();
  double read_took = SecondsSince(start);
  EXPECT_EQ(read.code(), absl::StatusCode::kUnavailable) << read;
  EXPECT_EQ(ToErrno(read), EIO);
  EXPECT_GE(read_took, 0.95);
  EXPECT_LT(read_took, 2.5);

  start = Clock::now();
  absl::Status mkdir = client->Mkdir(scope_, kRootInode, "never", 0755, {}).status();
  double mkdir_took = SecondsSince(start);
  EXPECT_EQ(mkdir.code(), absl::StatusCode::kUnavailable) << mkdir;
  EXPECT_GE(mkdir_took, 0.95);
  EXPECT_LT(mkdir_took, 2.5);

  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
  auto root = client->GetAttr(scope_, kRootInode);
  EXPECT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(ToErrno(client->Lookup(scope_, kRootInode, "never").status()), ENOENT);
}

TEST_F(GrpcOutageTest, WrongTokenIsUnauthenticatedAtOnce) {
  auto client = NewClient(milliseconds(30'000), "not-the-token");
  Clock::time_point start = Clock::now();
  absl::Status open = client->OpenScope(scope_, true).status();
  EXPECT_EQ(open.code(), absl::StatusCode::kUnauthenticated) << open;
  absl::Status mkdir = client->Mkdir(scope_, kRootInode, "x", 0755, {}).status();
  EXPECT_EQ(mkdir.code(), absl::StatusCode::kUnauthenticated) << mkdir;
  absl::Status put = client->PutChunks(scope_, {"x"});
  EXPECT_EQ(put.code(), absl::StatusCode::kUnauthenticated) << put;
  EXPECT_LT(SecondsSince(start), 1.0);
}

// A chunk file damaged on the server's disk: the unverified fetch (the node
// verifies) gets the damaged bytes as they are; the verified one is
// DATA_LOSS, never the bytes, and the server sets the file aside.
TEST_F(GrpcOutageTest, CorruptChunkOnTheServerIsDataLossOnlyWhenTheServerVerifies) {
  auto client = NewClient(milliseconds(10'000));
  ASSERT_TRUE(client->OpenScope(scope_, /*create=*/true).ok());
  std::string chunk(300'000, '\0');
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>(i * 7919 + i / 251);
  const ChunkId id = ChunkId::Of(chunk);
  ASSERT_TRUE(client->PutChunks(scope_, {chunk}).ok());
  const std::string hex = id.ToHex();
  const std::string path = fmt::format("{}/chunks/project/outage/{}/{}/{}", dir_.Sub("data"),
                                       hex.substr(0, 2), hex.substr(2, 2), hex);
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
  char byte = chunk[1234] ^ 0x40;
  ASSERT_EQ(pwrite(fd, &byte, 1, 1234), 1);
  close(fd);

  auto raw = client->GetChunkUnverified(scope_, id);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->size(), chunk.size());
  EXPECT_NE(ChunkId::Of(*raw), id);
  EXPECT_EQ(client->GetChunk(scope_, id, 0, 0).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(client->GetChunkUnverified(scope_, id).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace traincache::testing
