#include "meta/pin_store.h"

#include <fmt/format.h>

#include "traincache/status.h"

namespace traincache::meta {
namespace {

constexpr char kFormat = 1;
constexpr std::string_view kPinPrefix = "pin/";

std::string PinKey(const std::string& project) { return std::string(kPinPrefix) + project; }

void PutShortString(std::string* out, const std::string& s) {
  out->push_back(static_cast<char>(s.size()));
  out->append(s);
}

}  // namespace

std::string PinStore::Encode(const PinRecord& pin) {
  std::string out(1, kFormat);
  uint64_t at = static_cast<uint64_t>(pin.pinned_at);
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(at >> shift));
  PutShortString(&out, pin.cluster);
  PutShortString(&out, pin.job_id);
  return out;
}

absl::StatusOr<PinRecord> PinStore::Decode(const std::string& project, std::string_view value) {
  auto corrupt = [&](std::string_view what) {
    return absl::DataLossError(fmt::format("pin of project {} is corrupt: {}", project, what));
  };
  if (value.size() < 9 || value[0] != kFormat) return corrupt("bad header");
  PinRecord pin;
  pin.project = project;
  uint64_t at = 0;
  for (size_t i = 1; i < 9; ++i) at = (at << 8) | static_cast<uint8_t>(value[i]);
  pin.pinned_at = static_cast<int64_t>(at);
  value.remove_prefix(9);
  for (std::string* field : {&pin.cluster, &pin.job_id}) {
    if (value.empty()) return corrupt("truncated");
    size_t n = static_cast<uint8_t>(value[0]);
    if (value.size() < 1 + n) return corrupt("truncated");
    field->assign(value.substr(1, n));
    value.remove_prefix(1 + n);
  }
  if (!value.empty()) return corrupt("trailing bytes");
  if (pin.cluster.empty()) return corrupt("no cluster");
  return pin;
}

absl::Status PinStore::WriteDurable(const KvBatch& batch) {
  ASSIGN_OR_RETURN(uint64_t token, backend_->Write(batch));
  return backend_->WaitDurable(token);
}

absl::StatusOr<std::optional<PinRecord>> PinStore::Get(const std::string& project) {
  ASSIGN_OR_RETURN(std::optional<std::string> value, backend_->Latest().Get(PinKey(project)));
  if (!value) return std::nullopt;
  ASSIGN_OR_RETURN(PinRecord pin, Decode(project, *value));
  // Answer only what is durable (a concurrent Claim may not be synced yet).
  RETURN_IF_ERROR(backend_->WaitDurable(backend_->LastToken()));
  return pin;
}

absl::StatusOr<std::pair<PinRecord, bool>> PinStore::Claim(const PinRecord& pin) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(std::optional<PinRecord> existing, Get(pin.project));
  if (existing) return std::make_pair(*existing, false);
  KvBatch batch;
  batch.Put(PinKey(pin.project), Encode(pin));
  RETURN_IF_ERROR(WriteDurable(batch));
  return std::make_pair(pin, true);
}

absl::Status PinStore::Set(const PinRecord& pin) {
  std::lock_guard lock(mu_);
  KvBatch batch;
  batch.Put(PinKey(pin.project), Encode(pin));
  return WriteDurable(batch);
}

absl::StatusOr<bool> PinStore::Clear(const std::string& project) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(std::optional<PinRecord> existing, Get(project));
  if (!existing) return false;
  KvBatch batch;
  batch.Delete(PinKey(project));
  RETURN_IF_ERROR(WriteDurable(batch));
  return true;
}

absl::StatusOr<std::vector<PinRecord>> PinStore::List() {
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  std::unique_ptr<KvIterator> it =
      snap->NewIterator(std::string(kPinPrefix), "pin0");  // '0' follows '/'
  std::vector<PinRecord> pins;
  for (it->Seek(kPinPrefix); it->Valid(); it->Next()) {
    std::string project(it->key().substr(kPinPrefix.size()));
    ASSIGN_OR_RETURN(PinRecord pin, Decode(project, it->value()));
    pins.push_back(std::move(pin));
  }
  RETURN_IF_ERROR(it->status());
  return pins;
}

}  // namespace traincache::meta
