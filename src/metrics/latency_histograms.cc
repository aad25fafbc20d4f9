#include "metrics/latency_histograms.h"

#include "absl/strings/string_view.h"

namespace traincache::metrics {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,     0.25,   0.5,     1,      2.5,   5,      10,    30,   60};
  return *buckets;
}

LatencyHistograms::LatencyHistograms(prometheus::Registry& registry, const std::string& name,
                                     const std::string& help, const std::string& label,
                                     const std::vector<std::string>& values) {
  auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
  by_index_.reserve(values.size());
  for (const std::string& value : values) {
    prometheus::Histogram* h = &family.Add({{label, value}}, LatencyBuckets());
    by_index_.push_back(h);
    by_value_.emplace(value, h);
  }
}

prometheus::Histogram* LatencyHistograms::Find(std::string_view value) const {
  // Debian's abseil has its own string_view: convert for the heterogeneous lookup.
  auto it = by_value_.find(absl::string_view(value.data(), value.size()));
  return it == by_value_.end() ? nullptr : it->second;
}

}  // namespace traincache::metrics
