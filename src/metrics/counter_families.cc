#include "metrics/counter_families.h"

#include <fmt/format.h>

namespace traincache::metrics {
namespace {

// Lower-level name part: '.' and anything else Prometheus does not allow in
// a name become '_'; a last component "count" is dropped.
std::string NamePart(std::string_view key) {
  constexpr std::string_view kCount = ".count";
  if (key.size() > kCount.size() && key.substr(key.size() - kCount.size()) == kCount) {
    key.remove_suffix(kCount.size());
  }
  std::string out(key);
  for (char& c : out) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_';
    if (!ok) c = '_';
  }
  return out;
}

}  // namespace

CounterNaming NodeCounterNaming() {
  return CounterNaming{
      .prefix = "traincache_node",
      .gauges = {"tier.capacity_bytes", "tier.used_bytes", "tier.images", "fetch.memory_bytes",
                 "scope.feed_following", "scope.upload_peak_bytes"},
      .help = {
          {"tier.capacity_bytes", "Bytes the node tier may fill"},
          {"tier.used_bytes", "Bytes of chunks present in the node tier"},
          {"tier.images", "File images (one per cached file version) in the node tier"},
          {"tier.hits", "Chunk reads served from the node tier"},
          {"tier.misses", "Chunk reads that did not find the chunk in the node tier"},
          {"tier.evicted_bytes", "Bytes evicted from the node tier"},
          {"tier.corrupt_chunks", "Node tier chunks that failed verification and were dropped"},
          {"fetch.fetches", "Chunk fetches from the server"},
          {"fetch.fetched_bytes", "Bytes fetched from the server"},
          {"fetch.coalesced", "Reads that waited for another reader's fetch of the same chunk"},
          {"fetch.prefetches", "Chunks fetched ahead of sequential readers"},
          {"fetch.verify_failures", "Fetched chunks whose bytes did not match their id"},
          {"fetch.memory_hits", "Chunk reads served from verified chunks held in memory"},
          {"fetch.memory_bytes", "Bytes of verified chunks held in memory for readers"},
          {"scope.<scope>.commits", "File content commits that succeeded"},
          {"scope.<scope>.commit_conflicts", "Commits that failed (EIO) on a concurrent change"},
          {"scope.<scope>.commit_rebases", "Commits redone after a concurrent change"},
          {"scope.<scope>.uploaded_chunks", "Chunks uploaded to the server"},
          {"scope.<scope>.uploaded_bytes", "Bytes of chunks uploaded to the server"},
          {"scope.<scope>.feed_following",
           "1 while the scope's change feed is followed (entries and attributes cached long)"},
          {"scope.<scope>.feed_subscriptions", "Change feed streams started"},
          {"scope.<scope>.feed_breaks", "Change feed streams that ended or went silent"},
          {"scope.<scope>.feed_messages", "Change feed messages received (heartbeats included)"},
          {"scope.<scope>.feed_changes", "Entry and inode changes received on the change feed"},
          {"scope.<scope>.feed_lost", "Change feed messages saying changes were dropped"},
          {"scope.<scope>.background_uploaded_chunks",
           "Chunks uploaded while their file was still being written"},
          {"scope.<scope>.background_uploaded_bytes",
           "Bytes of chunks uploaded while their file was still being written"},
          {"scope.<scope>.background_used_chunks",
           "Chunks a commit took from a background upload instead of sending them"},
          {"scope.<scope>.background_dropped_chunks",
           "Background uploads made useless by a later write or truncate of their chunk"},
          {"scope.<scope>.upload_peak_bytes",
           "Most bytes of written chunks queued or being uploaded at once (bounded by "
           "--upload-budget-bytes)"},
          {"scope.<scope>.commit_resends",
           "Commits that sent chunks again because the server no longer had them"},
      }};
}

CounterNaming ServerCounterNaming() {
  return CounterNaming{
      .prefix = "traincache_server",
      .gauges = {},
      .help = {
          {"rpc.<method>", "Calls finished"},
          {"rpc.<method>.error.<code>", "Calls that failed, by status code"},
          {"chunk.put.count", "Chunks stored (PutChunks, and small chunks sent with commits)"},
          {"chunk.put.bytes", "Bytes of chunks stored (PutChunks, and small chunks with commits)"},
          {"chunk.put.small_count", "Small chunks stored with their commit (no chunk file)"},
          {"chunk.get.count", "Chunk reads served through GetChunk"},
          {"chunk.get.bytes", "Bytes served through GetChunk"},
          {"chunk.get.store_micros", "Microseconds GetChunk spent reading and verifying chunks"},
          {"chunk.corrupt",
           "Chunks found corrupt on a verified read (never served; set aside in "
           "<data_dir>/chunks/quarantine)"},
          {"bad_scope", "Requests naming a malformed scope"},
          {"scope_denied",
           "Data-plane calls refused under require_attached_scopes: the caller (client "
           "certificate CN) has no attached job that uses the scope"},
          {"gc.chunks_deleted", "Unreferenced chunks deleted by garbage collection"},
          {"feed.watches", "Change feed streams (WatchScope) started"},
          {"feed.messages", "Change feed messages sent (heartbeats included)"},
          {"feed.changes", "Entry and inode changes sent on change feeds"},
          {"feed.lost", "Change feed messages saying changes were dropped (a watcher fell behind)"},
      }};
}

MappedCounter MapCounter(const CounterNaming& naming, std::string_view key) {
  MappedCounter m;
  constexpr std::string_view kScope = "scope.";
  constexpr std::string_view kRpc = "rpc.";
  constexpr std::string_view kError = ".error.";
  std::string_view rest = key;
  std::string gauge_key(key);
  if (key.substr(0, kScope.size()) == kScope && key.rfind('.') > kScope.size()) {
    size_t last = key.rfind('.');
    std::string_view scope = key.substr(kScope.size(), last - kScope.size());
    rest = key.substr(last + 1);
    m.labels.push_back({"scope", std::string(scope)});
    m.pattern = fmt::format("scope.<scope>.{}", rest);
    gauge_key = fmt::format("scope.{}", rest);
    m.name = fmt::format("{}_scope_{}", naming.prefix, NamePart(rest));
  } else if (key.substr(0, kRpc.size()) == kRpc && key.size() > kRpc.size()) {
    std::string_view method = key.substr(kRpc.size());
    size_t error = method.find(kError);
    if (method.find('.') == std::string_view::npos) {
      m.labels.push_back({"method", std::string(method)});
      m.name = naming.prefix + "_rpc_calls";
      m.pattern = "rpc.<method>";
    } else if (error != std::string_view::npos && error > 0 &&
               method.find('.') == error && error + kError.size() < method.size()) {
      m.labels.push_back({"method", std::string(method.substr(0, error))});
      m.labels.push_back({"code", std::string(method.substr(error + kError.size()))});
      m.name = naming.prefix + "_rpc_errors";
      m.pattern = "rpc.<method>.error.<code>";
    }
  }
  if (m.name.empty()) {
    m.name = fmt::format("{}_{}", naming.prefix, NamePart(key));
    m.pattern = std::string(key);
  }
  if (naming.gauges.count(gauge_key) > 0) {
    m.type = prometheus::MetricType::Gauge;
  } else {
    m.type = prometheus::MetricType::Counter;
    m.name += "_total";
  }
  return m;
}

std::vector<prometheus::MetricFamily> CounterFamilies(
    const CounterNaming& naming, const std::map<std::string, uint64_t>& snapshot) {
  std::map<std::string, prometheus::MetricFamily> families;
  for (const auto& [key, value] : snapshot) {
    MappedCounter m = MapCounter(naming, key);
    prometheus::MetricFamily& f = families[m.name];
    if (f.name.empty()) {
      f.name = m.name;
      f.type = m.type;
      auto help = naming.help.find(m.pattern);
      f.help = help != naming.help.end()
                   ? fmt::format("{} (stats counter {})", help->second, m.pattern)
                   : fmt::format("traincache stats counter {}", m.pattern);
    } else if (f.type != m.type) {
      continue;  // Two keys collided on one name with different types: keep the first.
    }
    prometheus::ClientMetric sample;
    sample.label = std::move(m.labels);
    if (m.type == prometheus::MetricType::Gauge) {
      sample.gauge.value = static_cast<double>(value);
    } else {
      sample.counter.value = static_cast<double>(value);
    }
    f.metric.push_back(std::move(sample));
  }
  std::vector<prometheus::MetricFamily> out;
  out.reserve(families.size());
  for (auto& [name, f] : families) out.push_back(std::move(f));
  return out;
}

prometheus::MetricFamily LabelledGauge(const std::string& name, const std::string& help,
                                       const std::string& label,
                                       const std::vector<std::pair<std::string, double>>& rows) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  for (const auto& [value, level] : rows) {
    prometheus::ClientMetric sample;
    sample.label.push_back({label, value});
    sample.gauge.value = level;
    f.metric.push_back(std::move(sample));
  }
  return f;
}

}  // namespace traincache::metrics
