// FakeClusterClient: the conformance suite, and the test hooks node tests use
// (call counts, injected errors, the before-call hook).
#include "testing/fake_cluster_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>

#include "rpc/cluster_client_conformance.h"
#include "traincache/status.h"

namespace traincache::testing {
namespace {

class FakeEnv : public ClusterClientEnv {
 public:
  ClusterClient& client() override { return fake_; }
  absl::Status SetQuota(const Scope& scope, uint64_t quota_bytes) override {
    return fake_.meta().SetQuota(scope, quota_bytes);
  }

 private:
  FakeClusterClient fake_;
};

INSTANTIATE_TEST_SUITE_P(Fake, ClusterClientConformanceTest,
                         ::testing::Values(ClusterClientImpl{
                             "fake", [] { return std::make_unique<FakeEnv>(); }}),
                         ClusterClientImpl::Name);

TEST(FakeClusterClientTest, CountsCallsAndInjectsErrors) {
  FakeClusterClient fake;
  Scope scope = *Scope::Parse("project:p");
  ASSERT_TRUE(fake.OpenScope(scope, true).ok());
  fake.FailNext("GetAttr", absl::UnavailableError("injected"), 2);
  EXPECT_EQ(fake.GetAttr(scope, kRootInode).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake.GetAttr(scope, kRootInode).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(fake.GetAttr(scope, kRootInode).ok());
  EXPECT_EQ(fake.Calls("GetAttr"), 3u);
  EXPECT_EQ(fake.Calls("Lookup"), 0u);

  // An injected error changes nothing.
  fake.FailNext("*", PosixError(EIO, "down"), -1);
  EXPECT_EQ(ToErrno(fake.Mkdir(scope, kRootInode, "d", 0755, {}).status()), EIO);
  EXPECT_EQ(ToErrno(fake.PutChunks(scope, {"x"})), EIO);
  fake.ClearFailures();
  EXPECT_EQ(ToErrno(fake.Lookup(scope, kRootInode, "d").status()), ENOENT);
  auto has = fake.HasChunks(scope, {ChunkId::Of("x")});
  ASSERT_TRUE(has.ok());
  EXPECT_FALSE((*has)[0].has_value());
}

TEST(FakeClusterClientTest, HookRunsBeforeEveryCall) {
  FakeClusterClient fake;
  Scope scope = *Scope::Parse("team:t");
  std::vector<std::string> seen;
  fake.SetHook([&](std::string_view op) { seen.emplace_back(op); });
  ASSERT_TRUE(fake.OpenScope(scope, true).ok());
  ASSERT_TRUE(fake.PutChunks(scope, {"abc"}).ok());
  ASSERT_TRUE(fake.GetChunk(scope, ChunkId::Of("abc"), 0, 0).ok());
  fake.SetHook(nullptr);
  ASSERT_TRUE(fake.StatFs(scope).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"OpenScope", "PutChunks", "GetChunk"}));
}

TEST(FakeClusterClientTest, NewScopesGetTheConfiguredQuota) {
  FakeClusterClient fake(FakeClusterClient::Options{.default_quota_bytes = 4096});
  Scope scope = *Scope::Parse("project:q");
  ASSERT_TRUE(fake.OpenScope(scope, true).ok());
  EXPECT_EQ(fake.StatFs(scope)->quota_bytes, 4096u);
}

}  // namespace
}  // namespace traincache::testing
