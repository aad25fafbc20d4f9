#include "metrics/metrics_endpoint.h"

#include <fmt/format.h>
#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <exception>

namespace traincache::metrics {
namespace {

// A Collectable whose families come from a callback.
class FunctionCollectable final : public prometheus::Collectable {
 public:
  explicit FunctionCollectable(std::function<std::vector<prometheus::MetricFamily>()> collect)
      : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return collect_(); }

 private:
  const std::function<std::vector<prometheus::MetricFamily>()> collect_;
};

}  // namespace

bool IsListenAddress(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) return false;
  unsigned port = 0;
  const char* begin = listen.data() + colon + 1;
  const char* end = listen.data() + listen.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  return ec == std::errc() && ptr == end && port <= 65535;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& listen) {
  if (!IsListenAddress(listen)) {
    return absl::InvalidArgumentError(
        fmt::format("metrics listen address '{}' is not host:port", listen));
  }
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  e->registry_ = std::make_shared<prometheus::Registry>();
  try {
    e->exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/2);
  } catch (const std::exception& ex) {
    // civetweb only says "possible problem binding to port".
    return absl::UnavailableError(
        fmt::format("cannot serve metrics on {} (port in use or bad address): {}", listen,
                    ex.what()));
  }
  e->exposer_->RegisterCollectable(e->registry_);
  std::vector<int> ports = e->exposer_->GetListeningPorts();
  e->address_ = listen.substr(0, listen.rfind(':') + 1) +
                std::to_string(ports.empty() ? 0 : ports.front());
  spdlog::info("metrics on http://{}/metrics", e->address_);
  return e;
}

MetricsEndpoint::~MetricsEndpoint() { Stop(); }

void MetricsEndpoint::AddCollectable(
    std::function<std::vector<prometheus::MetricFamily>()> collect) {
  auto c = std::make_shared<FunctionCollectable>(std::move(collect));
  std::lock_guard lock(mu_);
  if (!exposer_) return;
  exposer_->RegisterCollectable(c);
  collectables_.push_back(std::move(c));
}

void MetricsEndpoint::Stop() {
  std::unique_ptr<prometheus::Exposer> exposer;
  {
    std::lock_guard lock(mu_);
    exposer = std::move(exposer_);
  }
  // The destructor stops civetweb and joins its threads, so no scrape (and no
  // collectable callback) runs after this line.
  exposer.reset();
}

}  // namespace traincache::metrics
