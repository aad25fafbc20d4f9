#include "server/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "traincache/scope.h"
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

absl::Status ReadBool(const toml::node& node, std::string_view key, bool* out) {
  if (!node.is_boolean()) return KeyError(key, "must be true or false");
  *out = *node.value<bool>();
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(std::string_view key, const std::string& path) {
  std::ifstream in(path);
  std::string token;
  if (!in) return KeyError(key, fmt::format("cannot read {}", path));
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  return token;
}

absl::Status ReadStringArray(const toml::node& node, std::string_view key,
                             std::vector<std::string>* out) {
  const toml::array* array = node.as_array();
  if (!array) return KeyError(key, "must be an array of strings");
  out->clear();
  for (const toml::node& item : *array) {
    auto v = item.value<std::string>();
    if (!item.is_string() || !v) return KeyError(key, "must be an array of strings");
    out->push_back(*v);
  }
  return absl::OkStatus();
}

// A cluster name or GPU type: the scope id alphabet, so it fits in messages,
// keys and labels unquoted.
absl::Status CheckName(std::string_view key, const std::string& name) {
  absl::Status valid = ValidateId(name, fmt::format("'{}'", name));
  if (!valid.ok()) return KeyError(key, std::string(valid.message()));
  return absl::OkStatus();
}

absl::Status ReadClusters(const toml::node& node,
                          std::map<std::string, std::vector<std::string>>* out) {
  const toml::table* clusters = node.as_table();
  if (!clusters) return KeyError("clusters", "must be a table of [clusters.<name>]");
  for (const auto& [name_node, cluster] : *clusters) {
    std::string name(name_node.str());
    std::string prefix = "clusters." + name;
    RETURN_IF_ERROR(CheckName(prefix, name));
    const toml::table* table = cluster.as_table();
    if (!table) return KeyError(prefix, "must be a table with gpu_types");
    std::vector<std::string>& gpus = (*out)[name];
    for (const auto& [key_node, value] : *table) {
      std::string key = prefix + "." + std::string(key_node.str());
      if (key_node.str() != "gpu_types") return KeyError(key, "unknown key");
      RETURN_IF_ERROR(ReadStringArray(value, key, &gpus));
    }
  }
  return absl::OkStatus();
}

// Does `address` stay on this machine: a Unix socket or loopback? (The same
// rule as rpc::IsLocalTarget, kept here so the config parser needs no gRPC.)
bool IsLocalAddress(std::string_view address) {
  if (address.rfind("unix:", 0) == 0) return true;
  std::string_view host = address.substr(0, address.rfind(':'));
  if (host == "localhost" || host == "[::1]") return true;
  if (host.rfind("127.", 0) != 0) return false;
  return std::count(host.begin(), host.end(), '.') == 3 &&
         host.find_first_not_of("0123456789.") == std::string_view::npos;
}

absl::Status CheckTls(const ServerConfig& c) {
  if (c.require_attached_scopes && c.tls_client_ca_file.empty()) {
    // Without client certificates every node looks the same (they share
    // the token): there would be nobody to check a scope against.
    return KeyError("require_attached_scopes",
                    "needs tls_client_ca_file (mutual TLS): a node is known by the CN of its "
                    "client certificate");
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return KeyError(c.tls_cert_file.empty() ? "tls_cert_file" : "tls_key_file",
                    "is required with the other of tls_cert_file and tls_key_file");
  }
  if (!c.tls_client_ca_file.empty() && c.tls_cert_file.empty()) {
    return KeyError("tls_client_ca_file", "needs tls_cert_file and tls_key_file");
  }
  if (c.tls_cert_file.empty() && !c.allow_insecure && !IsLocalAddress(c.listen)) {
    return KeyError("listen", fmt::format("{} is not a Unix socket or loopback address: set "
                                          "tls_cert_file and tls_key_file to serve TLS, or "
                                          "allow_insecure = true to take tokens in the clear",
                                          c.listen));
  }
  if (!c.registry_tls_ca_file.empty() && c.registry.empty()) {
    return KeyError("registry_tls_ca_file", "is only for a remote registry (set registry)");
  }
  if (!c.registry.empty() && c.registry_tls_ca_file.empty() && !c.allow_insecure &&
      !IsLocalAddress(c.registry)) {
    return KeyError("registry", fmt::format("{} is not a Unix socket or loopback address: set "
                                            "registry_tls_ca_file to reach it with TLS, or "
                                            "allow_insecure = true to send the token in the clear",
                                            c.registry));
  }
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
    } else if (key == "metadata_sync") {
      RETURN_IF_ERROR(ReadString(node, key, &c.metadata_sync));
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
    } else if (key == "lock_lease_seconds") {
      RETURN_IF_ERROR(ReadUnsigned(node, key, 3600, &c.lock_lease_seconds));
    } else if (key == "cluster") {
      RETURN_IF_ERROR(ReadString(node, key, &c.cluster));
    } else if (key == "gpu_types") {
      RETURN_IF_ERROR(ReadStringArray(node, key, &c.gpu_types));
    } else if (key == "clusters") {
      RETURN_IF_ERROR(ReadClusters(node, &c.other_clusters));
    } else if (key == "registry") {
      RETURN_IF_ERROR(ReadString(node, key, &c.registry));
    } else if (key == "registry_token") {
      RETURN_IF_ERROR(ReadString(node, key, &c.registry_token));
    } else if (key == "registry_token_file") {
      RETURN_IF_ERROR(ReadString(node, key, &c.registry_token_file));
    } else if (key == "metrics_listen") {
      RETURN_IF_ERROR(ReadString(node, key, &c.metrics_listen));
    } else if (key == "tls_cert_file") {
      RETURN_IF_ERROR(ReadString(node, key, &c.tls_cert_file));
    } else if (key == "tls_key_file") {
      RETURN_IF_ERROR(ReadString(node, key, &c.tls_key_file));
    } else if (key == "tls_client_ca_file") {
      RETURN_IF_ERROR(ReadString(node, key, &c.tls_client_ca_file));
    } else if (key == "registry_tls_ca_file") {
      RETURN_IF_ERROR(ReadString(node, key, &c.registry_tls_ca_file));
    } else if (key == "allow_insecure") {
      RETURN_IF_ERROR(ReadBool(node, key, &c.allow_insecure));
    } else if (key == "require_attached_scopes") {
      RETURN_IF_ERROR(ReadBool(node, key, &c.require_attached_scopes));
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
    ASSIGN_OR_RETURN(c.token, ReadTokenFile("token_file", c.token_file));
  }
  if (c.token.empty()) return KeyError("token", "is required (or token_file)");
  RETURN_IF_ERROR(CheckName("cluster", c.cluster));
  for (const std::string& gpu : c.gpu_types) RETURN_IF_ERROR(CheckName("gpu_types", gpu));
  for (const auto& [name, gpus] : c.other_clusters) {
    if (name == c.cluster) {
      return KeyError("clusters." + name, "names this server's own cluster");
    }
    for (const std::string& gpu : gpus) {
      RETURN_IF_ERROR(CheckName("clusters." + name + ".gpu_types", gpu));
    }
  }
  if (c.registry.empty()) {
    if (!c.registry_token.empty() || !c.registry_token_file.empty()) {
      return KeyError("registry_token", "is only for a remote registry (set registry)");
    }
  } else {
    if (c.registry.find(':') == std::string::npos) {
      return KeyError("registry", "must be host:port or unix:/path");
    }
    if (c.registry_token.empty() && !c.registry_token_file.empty()) {
      ASSIGN_OR_RETURN(c.registry_token,
                       ReadTokenFile("registry_token_file", c.registry_token_file));
    }
    if (c.registry_token.empty()) c.registry_token = c.token;
  }
  if (c.token.size() < 16) return KeyError("token", "must be at least 16 characters");
  RETURN_IF_ERROR(CheckTls(c));
  if (c.worker_threads == 0) return KeyError("worker_threads", "must be at least 1");
  if (c.lock_lease_seconds == 0) return KeyError("lock_lease_seconds", "must be at least 1");
  if (c.metadata_sync != "content-commits" && c.metadata_sync != "every-change") {
    return KeyError("metadata_sync", "must be content-commits or every-change");
  }
  static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error"};
  if (std::find(std::begin(kLevels), std::end(kLevels), c.log_level) == std::end(kLevels)) {
    return KeyError("log_level", "must be trace, debug, info, warn or error");
  }
  return c;
}

}  // namespace traincache::server
