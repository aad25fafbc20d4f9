#include "meta/attachment_store.h"

#include <fmt/format.h>

#include "traincache/status.h"

namespace traincache::meta {
namespace {

constexpr char kFormat = 1;
constexpr std::string_view kJobPrefix = "job/";

absl::Status CheckIdentity(const std::string& identity) {
  if (identity.empty() || identity.size() > 255) {
    return absl::InvalidArgumentError(
        fmt::format("a node identity must be 1..255 bytes, got {}", identity.size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> AttachmentStore::Key(const std::string& identity,
                                                 const std::string& job_id) {
  RETURN_IF_ERROR(CheckIdentity(identity));
  std::string key(kJobPrefix);
  key.push_back(static_cast<char>(identity.size()));
  key += identity;
  key += job_id;
  return key;
}

std::string AttachmentStore::EncodeValue(const std::vector<Scope>& scopes) {
  std::string out(1, kFormat);
  out.push_back(static_cast<char>(scopes.size()));
  for (const Scope& scope : scopes) {
    // "project:" + at most 128 id bytes: always under 256.
    std::string text = scope.ToString();
    out.push_back(static_cast<char>(text.size()));
    out += text;
  }
  return out;
}

absl::StatusOr<AttachmentRecord> AttachmentStore::Decode(std::string_view key,
                                                         std::string_view value) {
  auto corrupt = [&](std::string_view what) {
    return absl::DataLossError(fmt::format("attachment record {:?} is corrupt: {}",
                                           std::string(key), what));
  };
  if (!key.starts_with(kJobPrefix)) return corrupt("bad key prefix");
  std::string_view rest = key.substr(kJobPrefix.size());
  if (rest.empty()) return corrupt("no identity");
  size_t n = static_cast<uint8_t>(rest[0]);
  if (n == 0 || rest.size() < 1 + n) return corrupt("truncated identity");
  AttachmentRecord record;
  record.identity.assign(rest.substr(1, n));
  record.job_id.assign(rest.substr(1 + n));
  if (record.job_id.empty()) return corrupt("no job id");

  if (value.size() < 2 || value[0] != kFormat) return corrupt("bad header");
  size_t count = static_cast<uint8_t>(value[1]);
  value.remove_prefix(2);
  for (size_t i = 0; i < count; ++i) {
    if (value.empty()) return corrupt("truncated");
    size_t len = static_cast<uint8_t>(value[0]);
    if (value.size() < 1 + len) return corrupt("truncated");
    absl::StatusOr<Scope> scope = Scope::Parse(value.substr(1, len));
    if (!scope.ok()) return corrupt(std::string(scope.status().message()));
    record.scopes.push_back(*std::move(scope));
    value.remove_prefix(1 + len);
  }
  if (!value.empty()) return corrupt("trailing bytes");
  if (record.scopes.empty()) return corrupt("no scope");
  return record;
}

absl::Status AttachmentStore::Put(const AttachmentRecord& record) {
  ASSIGN_OR_RETURN(std::string key, Key(record.identity, record.job_id));
  if (record.scopes.empty() || record.scopes.size() > 255) {
    return absl::InvalidArgumentError(
        fmt::format("job {} must use 1..255 scopes, got {}", record.job_id, record.scopes.size()));
  }
  KvBatch batch;
  batch.Put(std::move(key), EncodeValue(record.scopes));
  ASSIGN_OR_RETURN(uint64_t token, backend_->Write(batch));
  return backend_->WaitDurable(token);
}

absl::Status AttachmentStore::Delete(const std::string& identity, const std::string& job_id) {
  ASSIGN_OR_RETURN(std::string key, Key(identity, job_id));
  KvBatch batch;
  batch.Delete(std::move(key));
  ASSIGN_OR_RETURN(uint64_t token, backend_->Write(batch));
  return backend_->WaitDurable(token);
}

absl::StatusOr<std::vector<AttachmentRecord>> AttachmentStore::List() {
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  std::unique_ptr<KvIterator> it =
      snap->NewIterator(std::string(kJobPrefix), "job0");  // '0' follows '/'
  std::vector<AttachmentRecord> out;
  for (it->Seek(kJobPrefix); it->Valid(); it->Next()) {
    ASSIGN_OR_RETURN(AttachmentRecord record, Decode(it->key(), it->value()));
    out.push_back(std::move(record));
  }
  RETURN_IF_ERROR(it->status());
  return out;
}

}  // namespace traincache::meta
