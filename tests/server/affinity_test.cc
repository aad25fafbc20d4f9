// The affinity decision and the server config's cluster keys, over the
// in-memory pin store (the gRPC path is in tests/integration/cluster_test.cc).
#include "server/affinity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "server/config.h"

namespace traincache::server {
namespace {

using ::testing::HasSubstr;

class AffinityTest : public ::testing::Test {
 protected:
  meta::PinStore store_{meta::NewMemoryKvBackend()};
  std::unique_ptr<PinRegistry> registry_ = NewLocalPinRegistry(&store_);
  ClusterTopology east_{.cluster = "east",
                        .gpu_types = {"H100", "A100"},
                        .others = {{"west", {"A10G"}}, {"anywhere", {}}}};
};

TEST_F(AffinityTest, FirstJobPinsThenWarmThenRefusedOrElsewhere) {
  auto first = DecideAttach(east_, *registry_, "p", "t", "H100", true, "j1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->pinned_now);
  auto again = DecideAttach(east_, *registry_, "p", "", "H100", true, "j2");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->warm);
  EXPECT_FALSE(again->pinned_now);

  ClusterTopology west{.cluster = "west", .gpu_types = {"A10G"}, .others = {{"east", {"H100", "A100"}}}};
  auto refused = DecideAttach(west, *registry_, "p", "", "A10G", true, "j3");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("east does not offer A10G"));
  auto elsewhere = DecideAttach(west, *registry_, "p", "", "A10G", false, "j4");
  ASSERT_TRUE(elsewhere.ok());
  EXPECT_FALSE(elsewhere->warm);
  EXPECT_EQ(elsewhere->pinned_cluster, "east");
  EXPECT_EQ((*store_.Get("p"))->cluster, "east");
  EXPECT_EQ((*store_.Get("p"))->job_id, "j1");
}

TEST_F(AffinityTest, RefusalSaysWhenThePinnedClusterCouldRunIt) {
  ASSERT_TRUE(store_.Set({.project = "p", .cluster = "west", .pinned_at = 1, .job_id = ""}).ok());
  // east offers H100; west does not -> "does not offer"; a cluster listing no
  // types offers any.
  auto refused = DecideAttach(east_, *registry_, "p", "", "H100", true, "j");
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("west does not offer H100"));
  ASSERT_TRUE(store_.Set({.project = "q", .cluster = "anywhere", .pinned_at = 1, .job_id = ""}).ok());
  auto could = DecideAttach(east_, *registry_, "q", "", "H100", true, "j");
  EXPECT_THAT(std::string(could.status().message()), HasSubstr("anywhere offers H100: run the job there"));
}

TEST_F(AffinityTest, BadRequestsPinNothing) {
  // "anywhere" lists no types, so every well-formed GPU type is known; a
  // topology without such a cluster has unknown types.
  ClusterTopology strict{.cluster = "east", .gpu_types = {"H100"}, .others = {{"west", {"A10G"}}}};
  EXPECT_EQ(DecideAttach(strict, *registry_, "p", "", "B200", true, "j").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecideAttach(strict, *registry_, "p", "", "A10G", false, "j").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(DecideAttach(strict, *registry_, "p/q", "", "H100", true, "j").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecideAttach(strict, *registry_, "p", "t t", "H100", true, "j").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecideAttach(strict, *registry_, "p", "", "H100", true, std::string(129, 'j'))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store_.List()->empty());
}

TEST_F(AffinityTest, ConcurrentFirstJobsPinExactlyOnce) {
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      ClusterTopology t{.cluster = i % 2 ? "east" : "west", .gpu_types = {}, .others = {{i % 2 ? "west" : "east", {}}}};
      auto d = DecideAttach(t, *registry_, "race", "", "H100", false, "j" + std::to_string(i));
      ASSERT_TRUE(d.ok());
      if (d->pinned_now) ++created;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(store_.List()->size(), 1u);
}

TEST(PinStoreTest, EncodingRoundTripsAndCorruptValuesAreDataLoss) {
  meta::PinRecord pin{.project = "p", .cluster = "east", .pinned_at = -5, .job_id = "job-1"};
  std::string bytes = meta::PinStore::Encode(pin);
  auto back = meta::PinStore::Decode("p", bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, pin);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_EQ(meta::PinStore::Decode("p", bytes.substr(0, cut)).status().code(),
              absl::StatusCode::kDataLoss);
  }
  EXPECT_EQ(meta::PinStore::Decode("p", bytes + "x").status().code(), absl::StatusCode::kDataLoss);
  std::string bad_format = bytes;
  bad_format[0] = 9;
  EXPECT_EQ(meta::PinStore::Decode("p", bad_format).status().code(), absl::StatusCode::kDataLoss);
}

TEST(PinStoreTest, ClearAndSet) {
  meta::PinStore store(meta::NewMemoryKvBackend());
  EXPECT_FALSE(*store.Clear("p"));
  ASSERT_TRUE(store.Set({.project = "p", .cluster = "a", .pinned_at = 1, .job_id = ""}).ok());
  ASSERT_TRUE(store.Set({.project = "p2", .cluster = "b", .pinned_at = 2, .job_id = ""}).ok());
  EXPECT_EQ(store.List()->size(), 2u);
  EXPECT_TRUE(*store.Clear("p"));
  EXPECT_FALSE(store.Get("p")->has_value());
  EXPECT_EQ((*store.Get("p2"))->cluster, "b");
}

std::string ShippedConfig() {
  std::ifstream in(std::string(TRAINCACHE_SOURCE_DIR) + "/deploy/config/server.toml");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServerConfigTest, ShippedExampleParsesWithItsClusters) {
  auto c = ParseServerConfig(ShippedConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cluster, "us-east-1");
  EXPECT_EQ(c->gpu_types, (std::vector<std::string>{"H100", "A100"}));
  ASSERT_EQ(c->other_clusters.count("eu-west-1"), 1u);
  EXPECT_EQ(c->other_clusters.at("eu-west-1"), (std::vector<std::string>{"A10G", "L4"}));
  c->token = "0123456789abcdef0123";
  EXPECT_TRUE(FinalizeServerConfig(*c).ok());
}

TEST(ServerConfigTest, ClusterKeysAreCheckedAndNamed) {
  struct Case {
    std::string toml, key;
  };
  for (const Case& bad : std::vector<Case>{
           {"gpu_types = \"H100\"", "gpu_types"},
           {"gpu_types = [1]", "gpu_types"},
           {"[clusters.west]\ncolour = 1", "clusters.west.colour"},
           {"[clusters.west]\ngpu_types = [\"a b\"]", "clusters.west.gpu_types"},
           {"clusters = 3", "clusters"},
       }) {
    auto c = ParseServerConfig(bad.toml);
    if (c.ok()) {
      c->data_dir = "/d";
      c->token = "0123456789abcdef0123";
      auto f = FinalizeServerConfig(*c);
      ASSERT_FALSE(f.ok()) << bad.toml;
      EXPECT_THAT(std::string(f.status().message()), HasSubstr("'" + bad.key + "'")) << bad.toml;
    } else {
      EXPECT_THAT(std::string(c.status().message()), HasSubstr("'" + bad.key + "'")) << bad.toml;
    }
  }
  for (const Case& bad : std::vector<Case>{
           {"cluster = \"x/y\"", "cluster"},
           {"cluster = \"west\"\n[clusters.west]\ngpu_types = []", "clusters.west"},
           {"registry_token = \"abc\"", "registry_token"},
           {"registry = \"nohostport\"", "registry"},
       }) {
    auto c = ParseServerConfig(bad.toml);
    ASSERT_TRUE(c.ok()) << bad.toml << ": " << c.status();
    c->data_dir = "/d";
    c->token = "0123456789abcdef0123";
    auto f = FinalizeServerConfig(*c);
    ASSERT_FALSE(f.ok()) << bad.toml;
    EXPECT_THAT(std::string(f.status().message()), HasSubstr("'" + bad.key + "'")) << bad.toml;
  }
  // A remote registry without its own token uses the server's.
  auto c = ParseServerConfig("registry = \"10.0.0.1:7070\"\nregistry_tls_ca_file = \"/ca.crt\"");
  c->data_dir = "/d";
  c->token = "0123456789abcdef0123";
  auto f = FinalizeServerConfig(*c);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->registry_token, c->token);
}

// Plaintext only where nothing leaves the machine; TLS keys that go together.
TEST(ServerConfigTest, TlsKeysAreCheckedAndNamed) {
  struct Case {
    std::string toml, key;
  };
  for (const Case& bad : std::vector<Case>{
           {"listen = \"0.0.0.0:7070\"", "listen"},
           {"listen = \"10.1.2.3:7070\"", "listen"},
           {"listen = \"127.0.0.1.evil.example:7070\"", "listen"},
           // The message names the key that is missing.
           {"tls_cert_file = \"/c\"", "tls_key_file"},
           {"tls_key_file = \"/k\"", "tls_cert_file"},
           {"tls_client_ca_file = \"/ca\"", "tls_client_ca_file"},
           {"registry_tls_ca_file = \"/ca\"", "registry_tls_ca_file"},
           {"registry = \"10.0.0.1:7070\"", "registry"},
           {"allow_insecure = 1", "allow_insecure"},
       }) {
    auto c = ParseServerConfig(bad.toml);
    absl::Status s = c.status();
    if (c.ok()) {
      c->data_dir = "/d";
      c->token = "0123456789abcdef0123";
      s = FinalizeServerConfig(*c).status();
    }
    ASSERT_FALSE(s.ok()) << bad.toml;
    EXPECT_THAT(std::string(s.message()), HasSubstr("'" + bad.key + "'")) << bad.toml;
  }
  for (const std::string& good : {
           "listen = \"127.0.0.1:7070\"",
           "listen = \"localhost:7070\"",
           "listen = \"[::1]:7070\"",
           "listen = \"unix:/run/traincache/server.sock\"",
           "listen = \"0.0.0.0:7070\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"",
           "listen = \"0.0.0.0:7070\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"\n"
           "tls_client_ca_file = \"/ca\"",
           "listen = \"0.0.0.0:7070\"\nallow_insecure = true",
           "registry = \"10.0.0.1:7070\"\nallow_insecure = true",
       }) {
    auto c = ParseServerConfig(good);
    ASSERT_TRUE(c.ok()) << good << ": " << c.status();
    c->data_dir = "/d";
    c->token = "0123456789abcdef0123";
    EXPECT_TRUE(FinalizeServerConfig(*c).ok()) << good << ": " << FinalizeServerConfig(*c).status();
  }
}

}  // namespace
}  // namespace traincache::server
