// ServerConfig: what traincache-server reads from its TOML config file and
// flags. Parsing is strict: an unknown key, a value of the wrong type or out
// of range is an error whose message names the key, and the server does not
// start. Pure functions; thread-safe.
#ifndef TRAINCACHE_SERVER_CONFIG_H_
#define TRAINCACHE_SERVER_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "traincache/types.h"

namespace traincache::server {

struct ServerConfig {
  std::string data_dir;                   // RocksDB in <data_dir>/meta, chunks in <data_dir>/chunks
  std::string listen = "127.0.0.1:7070";  // "host:port" or "unix:/path"
  std::string token;                      // bearer token every call must carry
  std::string token_file;                 // alternative to `token`: read from this file
  uint64_t default_quota_bytes = kDefaultQuotaBytes;
  std::string log_level = "info";         // trace, debug, info, warn, error
  uint32_t worker_threads = 16;           // threads that run store operations
  uint32_t gc_interval_seconds = 300;     // how often unreferenced chunks are collected
  uint32_t gc_grace_seconds = 3600;       // an uncommitted upload is kept this long
  uint32_t orphan_grace_seconds = 86400;  // an unlinked file nobody released is kept this long
  uint32_t lock_lease_seconds = 15;       // a dead node's file locks are freed after this long
  // When metadata changes are durable (MetadataSync, metadata_store.h):
  // "content-commits" (close, fsync, fsyncdir; namespace changes ride along)
  // or "every-change" (each create, rename, chmod, ... waits for a disk sync).
  std::string metadata_sync = "content-commits";

  // Cluster affinity (proto/traincache/v1/cluster.proto).
  std::string cluster = "local";          // this server's cluster (an id)
  std::vector<std::string> gpu_types;     // GPU types it offers; empty: any
  // The other clusters: [clusters.<name>] gpu_types = [...]
  std::map<std::string, std::vector<std::string>> other_clusters;
  std::string registry;             // pin registry "host:port"; empty: this server
  std::string registry_token;       // token for the registry (default: `token`)
  std::string registry_token_file;  // alternative to registry_token
  std::string metrics_listen;       // "host:port" of the Prometheus endpoint; empty: none

  // TLS (rpc/tls.h). Without a certificate the server speaks plaintext, which
  // it does only on a Unix socket or a loopback address unless allow_insecure.
  std::string tls_cert_file;         // PEM certificate chain of this server
  std::string tls_key_file;          // PEM private key of tls_cert_file
  std::string tls_client_ca_file;    // set: clients must present a certificate this CA signed
  std::string registry_tls_ca_file;  // CA of a remote registry's certificate; empty: plaintext
  bool allow_insecure = false;       // plaintext on a non-loopback listen/registry address
  // Data-plane calls (Namespace, Chunks, Locks) only for scopes a job that
  // the caller attached (Cluster.Attach) and has not detached uses; the
  // caller is the CN of its client certificate, so tls_client_ca_file is
  // required (cluster.proto, "Attached scopes").
  bool require_attached_scopes = false;
};

// Parses TOML text into `base` (keys absent from the text keep base's value).
absl::StatusOr<ServerConfig> ParseServerConfig(std::string_view toml_text,
                                               ServerConfig base = {});
// Reads and parses a config file; NOT_FOUND/INVALID_ARGUMENT naming the file.
absl::StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path,
                                                  ServerConfig base = {});
// Checks a complete config (after flags): data_dir set, a token (reading
// token_file into token), a valid listen address, ranges, TLS keys that go
// together (the certificate files themselves are read by LoadServerTls,
// cache_server.h). Names the key.
absl::StatusOr<ServerConfig> FinalizeServerConfig(ServerConfig config);

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_CONFIG_H_
