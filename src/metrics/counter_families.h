// Counter families: how the daemons' snapshot counters (named by dotted keys,
// as `traincache stats` and `server-stats` print them) become Prometheus
// metric families at scrape time, so the hot paths keep their plain atomic
// counters and nothing is counted twice.
//
// Naming, for a key under a prefix ("traincache_node", "traincache_server"):
//   1. "scope.<scope>.<name>"      -> <prefix>_scope_<name>{scope="<scope>"}
//      (the scope is everything between "scope." and the last dot, so ids
//      with dots stay whole);
//   2. "rpc.<Method>"              -> <prefix>_rpc_calls_total{method="<Method>"}
//      "rpc.<Method>.error.<CODE>" -> <prefix>_rpc_errors_total{method=...,code="<CODE>"};
//   3. anything else               -> <prefix>_<key>.
// In the name, every character outside [A-Za-z0-9_] becomes '_' and a last
// component "count" is dropped ("chunk.put.count" -> chunk_put). Keys listed
// as gauges (levels such as tier.used_bytes) keep that name and are gauges;
// every other key is a counter and gets the suffix "_total".
//
// Thread-safe: pure functions.
#ifndef TRAINCACHE_METRICS_COUNTER_FAMILIES_H_
#define TRAINCACHE_METRICS_COUNTER_FAMILIES_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace traincache::metrics {

struct CounterNaming {
  std::string prefix;  // e.g. "traincache_node"
  // Keys that are levels, not counts. For per-scope keys, "scope.<name>"
  // (the scope left out).
  std::set<std::string, std::less<>> gauges;
  // Help text by pattern ("tier.hits", "scope.<scope>.commits",
  // "rpc.<method>"); others get "traincache stats counter <pattern>".
  std::map<std::string, std::string, std::less<>> help;
};

// traincache-node's counters (NodeDaemon::Counters): tier.capacity_bytes,
// tier.used_bytes and tier.images are gauges.
CounterNaming NodeCounterNaming();
// traincache-server's counters (ServiceContext::counters): all counts.
CounterNaming ServerCounterNaming();

// Where one key goes.
struct MappedCounter {
  std::string name;
  prometheus::MetricType type = prometheus::MetricType::Counter;
  std::vector<prometheus::ClientMetric::Label> labels;
  std::string pattern;  // the key with its label values as placeholders, for the help text
};
MappedCounter MapCounter(const CounterNaming& naming, std::string_view key);

// The families of one snapshot, sorted by name.
std::vector<prometheus::MetricFamily> CounterFamilies(
    const CounterNaming& naming, const std::map<std::string, uint64_t>& snapshot);

// A gauge family with one label: one sample per (label value, value) row.
prometheus::MetricFamily LabelledGauge(const std::string& name, const std::string& help,
                                       const std::string& label,
                                       const std::vector<std::pair<std::string, double>>& rows);

}  // namespace traincache::metrics

#endif  // TRAINCACHE_METRICS_COUNTER_FAMILIES_H_
