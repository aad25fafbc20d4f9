#include "server/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "metrics/metrics_endpoint.h"
#include "traincache/status.h"

namespace traincache::server {
namespace {

absl::Status KeyError(std::string_view key, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("config key '{}': {}", key, what));
}

absl::Status ReadString(const toml::node& node, std::string_view key, std::string* out) {
  auto v = node.value<std::string>();
  if (!node.is_string() || !v) return KeyError(key, "must be a string");
  *out = *v;
  return absl::OkStatus();
}

template <typename T>
absl::Status ReadUnsigned(const toml::node& node, std::string_view key, uint64_t max, T* out) {
  if (!node.is_integer()) return KeyError(key, "must be an integer");
  int64_t v = *node.value<int64_t>();
  if (v < 0 || static_cast<uint64_t>(v) > max) {
    return KeyError(key, fmt::format("must be in [0, {}], got {}", max, v));
  }
  *out = static_cast<T>(v);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(std::string_view toml_text, ServerConfig base) {
  toml::table table;
  try {
    table = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(fmt::format("config is not valid TOML (line {}): {}",
                                                  e.source().begin.line, e.description()));
  }
  ServerConfig c = std::move(base);
  for (const auto& [key_node, node] : table) {
    std::string key(key_node.str());
    if (key == "data_dir") {
      RETURN_IF_ERROR(ReadString(node, key, &c.data_dir));
    } else if (key == "listen") {
      RETURN_IF_ERROR(ReadString(node, key, &c.listen));
    } else if (key == "token") {
      RETURN_IF_ERROR(ReadString(node, key, &c.token));
    } else if (key == "token_file") {
      RETURN_IF_ERROR(ReadString(node, key, &c.token_file));
    } else if (key == "log_level") {
      RETURN_IF_ERROR(ReadString(node, key, &c.log_level));
    } else if (key == "default_quota_bytes") {
      RETURN_IF_ERROR(ReadUnsigned(node, key, INT64_MAX, &c.default_quota_bytes));
    } else if (key == "worker_threads") {
      RETURN_IF_ERROR(ReadUnsigned(node, key, 1024, &c.worker_threads));
    } else if (key == "gc_interval_seconds") {
      RETURN_IF_ERROR(ReadUnsigned(node, key, 86400 * 7, &c.gc_interval_seconds));
    } else if (key == "gc_grace_seconds") {
      RETURN_IF_ERROR(ReadUnsigned(node, key, 86400 * 30, &c.gc_grace_seconds));
    } else if (key == "orphan_grace_seconds") {
      RETURN_IF_ERROR(ReadUnsigned(node, key, 86400 * 30, &c.orphan_grace_seconds));
    } else if (key == "metrics_listen") {
      RETURN_IF_ERROR(ReadString(node, key, &c.metrics_listen));
    } else {
      return KeyError(key, "unknown key");
    }
  }
  return c;
}

absl::StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path, ServerConfig base) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("cannot read config file {}", path));
  std::stringstream text;
  text << in.rdbuf();
  auto config = ParseServerConfig(text.str(), std::move(base));
  if (!config.ok()) {
    return absl::InvalidArgumentError(fmt::format("{}: {}", path, config.status().message()));
  }
  return config;
}

absl::StatusOr<ServerConfig> FinalizeServerConfig(ServerConfig c) {
  if (c.data_dir.empty()) return KeyError("data_dir", "is required");
  if (c.listen.empty()) return KeyError("listen", "is required");
  if (c.listen.rfind("unix:", 0) != 0 && c.listen.find(':') == std::string::npos) {
    return KeyError("listen", "must be host:port or unix:/path");
  }
  if (!c.metrics_listen.empty() && !metrics::IsListenAddress(c.metrics_listen)) {
    return KeyError("metrics_listen", "must be host:port (e.g. 127.0.0.1:9464) or empty");
  }
  if (c.token.empty() && !c.token_file.empty()) {
    std::ifstream in(c.token_file);
    if (!in) return KeyError("token_file", fmt::format("cannot read {}", c.token_file));
    std::getline(in, c.token);
    while (!c.token.empty() && (c.token.back() == '\r' || c.token.back() == ' ')) c.token.pop_back();
  }
  if (c.token.empty()) return KeyError("token", "is required (or token_file)");
  if (c.token.size() < 16) return KeyError("token", "must be at least 16 characters");
  if (c.worker_threads == 0) return KeyError("worker_threads", "must be at least 1");
  static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels)) {
    return KeyError("log_level", "must be trace, debug, info, warn or error");
  }
  return c;
}

}  // namespace traincache::server
