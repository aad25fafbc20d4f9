// libFuzzer target: the metadata key codec (src/meta/key_codec.h) on
// arbitrary bytes, as a corrupted or hostile RocksDB would hand them over.
// The first byte picks the decoder, the rest is its input (0xff: the
// attachment records of meta/attachment_store.h). Every decoder and
// key parser must return an error rather than crash or read out of bounds,
// and whatever one accepts must encode back to bytes that decode equal.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "meta/attachment_store.h"
#include "meta/key_codec.h"

namespace traincache::meta {
namespace {

template <typename T, typename Encode, typename Decode>
void RoundTrip(std::string_view in, Encode encode, Decode decode) {
  absl::StatusOr<T> value = decode(in);
  if (!value.ok()) {
    FUZZ_CHECK(value.status().code() == absl::StatusCode::kDataLoss);
    return;
  }
  std::string again = encode(*value);
  absl::StatusOr<T> back = decode(again);
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(*back == *value);
  // The encoding is canonical: encoding the decoded value again gives the same bytes.
  FUZZ_CHECK(encode(*back) == again);
}

void Keys(std::string_view in) {
  static const ScopeKeys keys(*Scope::Parse("project:fuzz"));
  auto scope_text = ScopeTextOfKey(in);
  if (scope_text.ok()) FUZZ_CHECK(scope_text->size() < in.size() && in[scope_text->size()] == '\0');
  std::string dentries = keys.DentriesPrefix();
  // Half the inputs get a valid prefix, so the parsers see their real shapes.
  std::string key = (in.size() % 2 == 0) ? dentries + std::string(in) : std::string(in);
  if (auto d = ParseDentryKey(key, dentries); d.ok()) {
    FUZZ_CHECK(keys.Dentry(d->parent, d->name) == key);
  }
  std::string orphans = keys.OrphanPrefix();
  key = (in.size() % 2 == 0) ? orphans + std::string(in) : std::string(in);
  if (auto ino = ParseInoKey(key, orphans); ino.ok()) FUZZ_CHECK(keys.Orphan(*ino) == key);
  std::string garbage = keys.GarbagePrefix();
  key = (in.size() % 2 == 0) ? garbage + std::string(in) : std::string(in);
  if (auto id = ParseChunkIdKey(key, garbage); id.ok()) FUZZ_CHECK(keys.Garbage(*id) == key);
  std::string expiry = keys.RequestExpiryPrefix();
  key = (in.size() % 2 == 0) ? expiry + std::string(in) : std::string(in);
  if (auto k = ParseRequestExpiryKey(key, expiry); k.ok()) {
    FUZZ_CHECK(k->id.client.size() <= kMaxRequestClientBytes);
    FUZZ_CHECK(keys.RequestExpiry(k->sec, k->id) == key);
    // The record key holds the same id after its own tag.
    FUZZ_CHECK(keys.Request(k->id).substr(keys.prefix().size() + 1) ==
               key.substr(expiry.size() + 8));
  }
  if (auto suffix = KeySuffix(in, dentries); suffix.ok()) {
    FUZZ_CHECK(dentries + std::string(*suffix) == in);
  }
}

// An attachment record: the first byte is the key's length, the rest of
// the key and then the value follow.
void AttachmentRecordOf(std::string_view in) {
  if (in.empty()) return;
  size_t key_size = std::min<size_t>(static_cast<uint8_t>(in[0]), in.size() - 1);
  std::string_view key = in.substr(1, key_size), value = in.substr(1 + key_size);
  absl::StatusOr<AttachmentRecord> r = AttachmentStore::Decode(key, value);
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() == absl::StatusCode::kDataLoss);
    return;
  }
  absl::StatusOr<std::string> again = AttachmentStore::Key(r->identity, r->job_id);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == key);
  FUZZ_CHECK(AttachmentStore::EncodeValue(r->scopes) == value);
}

void PrefixEndOf(std::string_view in) {
  std::string end = PrefixEnd(in);
  if (end.empty()) {
    FUZZ_CHECK(in.find_first_not_of('\xff') == std::string_view::npos);
    return;
  }
  // Greater than the prefix and than every key that starts with it.
  FUZZ_CHECK(std::string_view(end) > in);
  FUZZ_CHECK(std::string_view(end) > std::string(in) + std::string(8, '\xff'));
}

}  // namespace
}  // namespace traincache::meta

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace traincache;
  using namespace traincache::meta;
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  // Outside the switch, so the corpus's first bytes keep their decoders.
  if (data[0] == 0xff) {
    AttachmentRecordOf(in);
    return 0;
  }
  switch (data[0] % 8) {
    case 0:
      RoundTrip<ScopeMeta>(in, EncodeScopeMeta, DecodeScopeMeta);
      break;
    case 1:
      RoundTrip<InodeRecord>(in, EncodeInode,
                             [](std::string_view v) { return DecodeInode(InodeId{42}, v); });
      break;
    case 2:
      RoundTrip<DentryValue>(in, EncodeDentry, DecodeDentry);
      break;
    case 3:
      RoundTrip<StoredChunkMap>(in, EncodeChunkMap, DecodeChunkMap);
      break;
    case 4:
      RoundTrip<uint64_t>(in, EncodeRefCount, DecodeRefCount);
      break;
    case 5:
      RoundTrip<Timespec>(in, EncodeTimespec, DecodeTimespec);
      break;
    case 6:
      // 0xfe (6 modulo 8): request records; the other first bytes keep
      // the decoders the corpus was made for.
      if (data[0] == 0xfe) {
        RoundTrip<RequestRecord>(in, EncodeRequestRecord, DecodeRequestRecord);
        break;
      }
      Keys(in);  // Request expiry keys among them.
      break;
    case 7:
      PrefixEndOf(in);
      break;
  }
  return 0;
}
