// MetricsEndpoint: the Prometheus scrape endpoint of one daemon — an HTTP
// server (prometheus-cpp's Exposer) answering GET /metrics on one listen
// address with the text format, rendered from one Registry (histograms and
// counters the daemon keeps itself) plus any number of Collectables that
// compute their families at scrape time (counter snapshots, usage per scope).
//
// Lifetime: the registry lives as long as the endpoint, so histogram
// references handed out from it (FuseMount, GrpcClusterClient, the server's
// ServiceContext) stay valid until the endpoint is destroyed; destroy the
// endpoint after everything that records into it. Stop() ends the HTTP server
// first, after which no collectable callback runs: call it before tearing
// down what the callbacks read.
//
// Thread-safe: Stop and AddCollectable may be called from any thread;
// scrapes run on the HTTP server's own threads.
#ifndef TRAINCACHE_METRICS_METRICS_ENDPOINT_H_
#define TRAINCACHE_METRICS_METRICS_ENDPOINT_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace traincache::metrics {

// True for "host:port" with a numeric port <= 65535 ("[::1]:9464" included):
// what MetricsEndpoint::Start accepts. For config checks.
bool IsListenAddress(const std::string& listen);

class MetricsEndpoint {
 public:
  // Listens on `listen` ("host:port"; "127.0.0.1:0" picks a free port).
  // INVALID_ARGUMENT for an address that is not host:port, UNAVAILABLE when
  // the port cannot be bound (in use, no such interface).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& listen);
  ~MetricsEndpoint();  // Stops, then frees the registry.

  // Where the histograms and counters of this daemon are registered.
  prometheus::Registry& registry() { return *registry_; }
  // "host:port" actually bound (the real port when asked for port 0).
  const std::string& address() const { return address_; }

  // Renders `collect()`'s families in every scrape from now on. `collect`
  // runs on an HTTP thread, concurrently with everything else, and never
  // after Stop() returned.
  void AddCollectable(std::function<std::vector<prometheus::MetricFamily>()> collect);

  // Stops serving; waits for running scrapes. Idempotent.
  void Stop();

 private:
  MetricsEndpoint() = default;

  std::shared_ptr<prometheus::Registry> registry_;
  std::string address_;
  std::mutex mu_;
  std::unique_ptr<prometheus::Exposer> exposer_;  // guarded by mu_; null once stopped
  // Owned here; the exposer holds weak references.
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;  // guarded by mu_
};

}  // namespace traincache::metrics

#endif  // TRAINCACHE_METRICS_METRICS_ENDPOINT_H_
