// LatencyHistograms: one Prometheus histogram family of durations in seconds,
// split by one label whose values are all known up front (FUSE ops, RPC
// methods). Every histogram is created at construction, so recording is an
// array index (at) or a lookup in a map that never changes (Find) followed by
// Histogram::Observe: no registry lookup and no lock besides the histogram's
// own on the hot path.
//
// ScopedLatency records the time from its construction to its destruction
// into one histogram; a null histogram (metrics off) records nothing and
// costs no clock read.
//
// Thread-safe: immutable after construction; Observe is thread-safe.
#ifndef TRAINCACHE_METRICS_LATENCY_HISTOGRAMS_H_
#define TRAINCACHE_METRICS_LATENCY_HISTOGRAMS_H_

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace traincache::metrics {

// Bucket bounds in seconds, 50 µs to 60 s: a FUSE getattr answered from the
// node's cache and a chunk upload waiting out a server outage both land in a
// bucket of their own.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

class LatencyHistograms {
 public:
  // Registers (or finds: the registry merges families of the same name) the
  // family `name` and one histogram per value of `label`. Two instances with
  // the same name and values share the same histograms.
  LatencyHistograms(prometheus::Registry& registry, const std::string& name,
                    const std::string& help, const std::string& label,
                    const std::vector<std::string>& values);

  // The histogram of values[i]; i must be < values.size().
  prometheus::Histogram* at(size_t i) const { return by_index_[i]; }
  // The histogram of `value`, or nullptr if it was not among the values.
  prometheus::Histogram* Find(std::string_view value) const;

 private:
  std::vector<prometheus::Histogram*> by_index_;
  absl::flat_hash_map<std::string, prometheus::Histogram*> by_value_;
};

class ScopedLatency {
 public:
  explicit ScopedLatency(prometheus::Histogram* histogram) : histogram_(histogram) {
    if (histogram_) start_ = std::chrono::steady_clock::now();
  }
  ~ScopedLatency() {
    if (histogram_) {
      histogram_->Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
  }
  ScopedLatency(const ScopedLatency&) = delete;
  ScopedLatency& operator=(const ScopedLatency&) = delete;

 private:
  prometheus::Histogram* const histogram_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace traincache::metrics

#endif  // TRAINCACHE_METRICS_LATENCY_HISTOGRAMS_H_
