// Scraping a Prometheus endpoint in tests: a tiny HTTP/1.0 GET over a plain
// TCP socket (no client library), and a parser of the text exposition format
// into sample values keyed the way the samples read ("name" or
// "name{label="value",...}", labels in the order the endpoint wrote them).
// Thread-safe: pure functions.
#ifndef TRAINCACHE_TESTS_TESTING_METRICS_SCRAPE_H_
#define TRAINCACHE_TESTS_TESTING_METRICS_SCRAPE_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace traincache::testing {

// GET http://<host_port><path>; the body of a 200 answer, else an error with
// the status line. Gives up after `timeout_seconds`.
absl::StatusOr<std::string> HttpGet(const std::string& host_port, const std::string& path,
                                    int timeout_seconds = 10);

using MetricSamples = std::map<std::string, double>;

// Every sample line of `text` (comments and blank lines skipped).
MetricSamples ParseMetrics(const std::string& text);

// HttpGet(host_port, "/metrics") parsed; empty if the scrape failed.
MetricSamples ScrapeMetrics(const std::string& host_port);

// The value of series `key` ("name" or "name{...}"), if present.
std::optional<double> Sample(const MetricSamples& samples, const std::string& key);

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_TESTING_METRICS_SCRAPE_H_
