// PinStore: the cluster affinity pins of the pin registry — which cluster
// each project's cache lives on (proto/traincache/v1/cluster.proto says what
// a pin means). One small ordered key-value space of its own (a RocksDB in
// <data_dir>/registry on the server, the std::map backend in tests), apart
// from the scopes' metadata so that deleting or listing scopes never meets a
// pin.
//
// Keys: "pin/" <project id>. Values: format byte 1, pinned_at as 8 bytes
// big-endian (two's complement), then the cluster name and the job id, each
// one length byte and its bytes (both are ids of at most 128 bytes). A value
// that does not decode is DATA_LOSS naming the project.
//
// Claim is atomic: of two concurrent first jobs of a project exactly one
// pins it, and both get that pin. Every change is durable on return.
// Thread-safe.
#ifndef TRAINCACHE_META_PIN_STORE_H_
#define TRAINCACHE_META_PIN_STORE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "meta/kv_backend.h"

namespace traincache::meta {

struct PinRecord {
  std::string project;
  std::string cluster;
  int64_t pinned_at = 0;  // unix seconds
  std::string job_id;     // "" when an operator set it
  bool operator==(const PinRecord&) const = default;
};

class PinStore {
 public:
  explicit PinStore(std::unique_ptr<KvBackend> backend) : backend_(std::move(backend)) {}

  // nullopt if the project is not pinned.
  absl::StatusOr<std::optional<PinRecord>> Get(const std::string& project);
  // Pins `pin.project` as `pin` unless it is pinned already. Returns the
  // pin in force and whether this call created it.
  absl::StatusOr<std::pair<PinRecord, bool>> Claim(const PinRecord& pin);
  // Sets (or moves) the pin.
  absl::Status Set(const PinRecord& pin);
  // Removes the pin; returns whether there was one.
  absl::StatusOr<bool> Clear(const std::string& project);
  absl::StatusOr<std::vector<PinRecord>> List();

  // The value encoding (exposed for tests and fuzzing).
  static std::string Encode(const PinRecord& pin);
  static absl::StatusOr<PinRecord> Decode(const std::string& project, std::string_view value);

 private:
  absl::Status WriteDurable(const KvBatch& batch);

  std::unique_ptr<KvBackend> backend_;
  std::mutex mu_;  // Serializes read-modify-write of pins (Claim vs Set/Clear).
};

}  // namespace traincache::meta

#endif  // TRAINCACHE_META_PIN_STORE_H_
