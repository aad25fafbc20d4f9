// The metrics library: how snapshot counters are named and typed, latency
// histograms shared by name, and the /metrics endpoint over real HTTP.
#include <prometheus/text_serializer.h>

#include <atomic>
#include <cmath>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "metrics/counter_families.h"
#include "metrics/latency_histograms.h"
#include "metrics/metrics_endpoint.h"
#include "testing/metrics_scrape.h"

namespace traincache::metrics {
namespace {

using ::testing::ElementsAre;
using testing::ParseMetrics;
using testing::Sample;

std::string Render(const std::vector<prometheus::MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

TEST(CounterNamingTest, PlainKeysBecomeCountersWithTotal) {
  MappedCounter m = MapCounter(NodeCounterNaming(), "tier.hits");
  EXPECT_EQ(m.name, "traincache_node_tier_hits_total");
  EXPECT_EQ(m.type, prometheus::MetricType::Counter);
  EXPECT_TRUE(m.labels.empty());
  m = MapCounter(NodeCounterNaming(), "fetch.fetched_bytes");
  EXPECT_EQ(m.name, "traincache_node_fetch_fetched_bytes_total");
}

TEST(CounterNamingTest, LevelsAreGaugesWithoutTotal) {
  for (const char* key : {"tier.used_bytes", "tier.capacity_bytes", "tier.images"}) {
    MappedCounter m = MapCounter(NodeCounterNaming(), key);
    EXPECT_EQ(m.type, prometheus::MetricType::Gauge) << key;
    EXPECT_EQ(m.name.find("_total"), std::string::npos) << m.name;
  }
  EXPECT_EQ(MapCounter(NodeCounterNaming(), "tier.used_bytes").name,
            "traincache_node_tier_used_bytes");
}

TEST(CounterNamingTest, ScopeBecomesALabelAndKeepsItsDots) {
  MappedCounter m = MapCounter(NodeCounterNaming(), "scope.project:my.model-1.uploaded_bytes");
  EXPECT_EQ(m.name, "traincache_node_scope_uploaded_bytes_total");
  ASSERT_EQ(m.labels.size(), 1u);
  EXPECT_EQ(m.labels[0].name, "scope");
  EXPECT_EQ(m.labels[0].value, "project:my.model-1");
  EXPECT_EQ(m.pattern, "scope.<scope>.uploaded_bytes");
}

TEST(CounterNamingTest, RpcCallsAndErrorsGetMethodAndCodeLabels) {
  MappedCounter calls = MapCounter(ServerCounterNaming(), "rpc.Lookup");
  EXPECT_EQ(calls.name, "traincache_server_rpc_calls_total");
  ASSERT_EQ(calls.labels.size(), 1u);
  EXPECT_EQ(calls.labels[0].value, "Lookup");
  MappedCounter errors = MapCounter(ServerCounterNaming(), "rpc.Lookup.error.NOT_FOUND");
  EXPECT_EQ(errors.name, "traincache_server_rpc_errors_total");
  ASSERT_EQ(errors.labels.size(), 2u);
  EXPECT_EQ(errors.labels[0].name, "method");
  EXPECT_EQ(errors.labels[0].value, "Lookup");
  EXPECT_EQ(errors.labels[1].name, "code");
  EXPECT_EQ(errors.labels[1].value, "NOT_FOUND");
}

TEST(CounterNamingTest, CountSuffixIsDroppedAndOddCharactersReplaced) {
  EXPECT_EQ(MapCounter(ServerCounterNaming(), "chunk.put.count").name,
            "traincache_server_chunk_put_total");
  EXPECT_EQ(MapCounter(ServerCounterNaming(), "gc.chunks_deleted").name,
            "traincache_server_gc_chunks_deleted_total");
  EXPECT_EQ(MapCounter(ServerCounterNaming(), "weird-key/x").name,
            "traincache_server_weird_key_x_total");
  // Not the rpc pattern: plain naming.
  EXPECT_EQ(MapCounter(ServerCounterNaming(), "rpc.A.b.c").name,
            "traincache_server_rpc_A_b_c_total");
}

TEST(CounterFamiliesTest, OneFamilyPerNameWithOneSamplePerLabelSet) {
  std::map<std::string, uint64_t> snapshot = {
      {"tier.hits", 7},
      {"tier.used_bytes", 4096},
      {"scope.project:a.commits", 2},
      {"scope.team:b.commits", 3},
  };
  std::vector<prometheus::MetricFamily> families = CounterFamilies(NodeCounterNaming(), snapshot);
  std::vector<std::string> names;
  for (const auto& f : families) names.push_back(f.name);
  EXPECT_THAT(names, ElementsAre("traincache_node_scope_commits_total",
                                 "traincache_node_tier_hits_total",
                                 "traincache_node_tier_used_bytes"));
  auto samples = ParseMetrics(Render(families));
  EXPECT_EQ(Sample(samples, "traincache_node_tier_hits_total"), 7);
  EXPECT_EQ(Sample(samples, "traincache_node_tier_used_bytes"), 4096);
  EXPECT_EQ(Sample(samples, "traincache_node_scope_commits_total{scope=\"project:a\"}"), 2);
  EXPECT_EQ(Sample(samples, "traincache_node_scope_commits_total{scope=\"team:b\"}"), 3);
  std::string text = Render(families);
  EXPECT_NE(text.find("# TYPE traincache_node_tier_used_bytes gauge"), std::string::npos);
  EXPECT_NE(text.find("# TYPE traincache_node_tier_hits_total counter"), std::string::npos);
  EXPECT_NE(text.find("# HELP traincache_node_tier_hits_total Chunk reads served from the node "
                      "tier (stats counter tier.hits)"),
            std::string::npos)
      << text;
}

TEST(CounterFamiliesTest, LabelledGaugeHasOneSamplePerRow) {
  auto f = LabelledGauge("x_bytes", "help", "scope", {{"project:a", 10}, {"team:b", 20}});
  auto samples = ParseMetrics(Render({f}));
  EXPECT_EQ(Sample(samples, "x_bytes{scope=\"project:a\"}"), 10);
  EXPECT_EQ(Sample(samples, "x_bytes{scope=\"team:b\"}"), 20);
}

TEST(LatencyHistogramsTest, SameNameSharesHistogramsAndUnknownValuesAreNull) {
  prometheus::Registry registry;
  LatencyHistograms a(registry, "op_seconds", "h", "op", {"read", "write"});
  LatencyHistograms b(registry, "op_seconds", "h", "op", {"read", "write"});
  EXPECT_EQ(a.at(0), b.at(0));
  EXPECT_EQ(a.Find("write"), a.at(1));
  EXPECT_EQ(a.Find("nope"), nullptr);
  { ScopedLatency t(a.at(0)); }
  { ScopedLatency t(nullptr); }  // Metrics off: nothing recorded, nothing crashes.
  a.at(0)->Observe(2.0);
  auto samples = ParseMetrics(Render(registry.Collect()));
  EXPECT_EQ(Sample(samples, "op_seconds_count{op=\"read\"}"), 2);
  EXPECT_EQ(Sample(samples, "op_seconds_count{op=\"write\"}"), 0);
  EXPECT_EQ(Sample(samples, "op_seconds_bucket{op=\"read\",le=\"1\"}"), 1);
  EXPECT_EQ(Sample(samples, "op_seconds_bucket{op=\"read\",le=\"+Inf\"}"), 2);
}

TEST(MetricsEndpointTest, ServesRegistryAndCollectablesOverHttp) {
  auto endpoint = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  EXPECT_THAT((*endpoint)->address(), ::testing::StartsWith("127.0.0.1:"));
  EXPECT_NE((*endpoint)->address(), "127.0.0.1:0");
  LatencyHistograms h((*endpoint)->registry(), "traincache_test_seconds", "h", "op", {"x"});
  h.at(0)->Observe(0.001);
  std::atomic<int> calls{0};
  (*endpoint)->AddCollectable([&] {
    ++calls;
    return CounterFamilies(NodeCounterNaming(), {{"tier.hits", 5}});
  });
  auto samples = testing::ScrapeMetrics((*endpoint)->address());
  EXPECT_EQ(Sample(samples, "traincache_test_seconds_count{op=\"x\"}"), 1);
  EXPECT_EQ(Sample(samples, "traincache_node_tier_hits_total"), 5);
  EXPECT_EQ(calls.load(), 1);

  (*endpoint)->Stop();
  EXPECT_FALSE(testing::HttpGet((*endpoint)->address(), "/metrics").ok());
  EXPECT_EQ(calls.load(), 1);
}

TEST(MetricsEndpointTest, BadAddressIsInvalidAndABusyPortUnavailable) {
  EXPECT_EQ(MetricsEndpoint::Start("nonsense").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsEndpoint::Start("127.0.0.1:99999").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsEndpoint::Start("unix:/tmp/x").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok());
  auto second = MetricsEndpoint::Start((*first)->address());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()),
              ::testing::HasSubstr((*first)->address()));
}

}  // namespace
}  // namespace traincache::metrics
