// AttachmentStore: which jobs each node identity has attached, and the
// scopes each job uses — what traincache-server checks data-plane calls
// against under `require_attached_scopes` (cluster.proto, "Attached
// scopes"). One small ordered key-value space of its own (a RocksDB in
// <data_dir>/attachments on the server, the std::map backend in tests),
// apart from the scopes' metadata, as the pins are (pin_store.h): listing,
// deleting or checking scopes never meets an attachment.
//
// Keys: "job/" <identity length: 1 byte> <identity> <job id>. Identities
// are 1..255 bytes of anything (a certificate's CN); the length byte keeps
// "ab"+"c" and "a"+"bc" apart. Values: format byte 1, a count byte, then
// each scope's text ("project:<id>", "team:<id>") as one length byte and its
// bytes. A value or key that does not decode is DATA_LOSS naming the key.
//
// Every change is durable on return. Thread-safe (the backend is); callers
// serialize read-modify-write sequences themselves (AttachmentTable does).
#ifndef TRAINCACHE_META_ATTACHMENT_STORE_H_
#define TRAINCACHE_META_ATTACHMENT_STORE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "meta/kv_backend.h"
#include "traincache/scope.h"

namespace traincache::meta {

struct AttachmentRecord {
  std::string identity;  // the node's certificate CN
  std::string job_id;
  std::vector<Scope> scopes;  // 1 or 2: the project's, then the team's
  bool operator==(const AttachmentRecord&) const = default;
};

class AttachmentStore {
 public:
  explicit AttachmentStore(std::unique_ptr<KvBackend> backend) : backend_(std::move(backend)) {}

  // Records (or replaces) one job of one identity. INVALID_ARGUMENT for an
  // identity of 0 or over 255 bytes, or a record of no scope or over 255.
  absl::Status Put(const AttachmentRecord& record);
  // Forgets one job of one identity; OK if it was not there.
  absl::Status Delete(const std::string& identity, const std::string& job_id);
  // Every record, ordered by key.
  absl::StatusOr<std::vector<AttachmentRecord>> List();

  // The encodings (exposed for tests and fuzzing).
  static absl::StatusOr<std::string> Key(const std::string& identity, const std::string& job_id);
  static std::string EncodeValue(const std::vector<Scope>& scopes);
  static absl::StatusOr<AttachmentRecord> Decode(std::string_view key, std::string_view value);

 private:
  std::unique_ptr<KvBackend> backend_;
};

}  // namespace traincache::meta

#endif  // TRAINCACHE_META_ATTACHMENT_STORE_H_
