// libFuzzer target: the checks every server request and every mount goes
// through before anything is changed (include/traincache/scope.h,
// types.h): scope texts, entry names, ids, chunk ids, chunk map shapes. The
// first byte picks the check. Each must accept exactly what its rule says and
// refuse the rest with INVALID_ARGUMENT, never crash.
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "traincache/scope.h"
#include "traincache/status.h"
#include "traincache/types.h"

namespace traincache {
namespace {

// The id rule written out independently: [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
bool IdRule(std::string_view id) {
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (id.empty() || id.size() > 128 || !alnum(id[0])) return false;
  for (char c : id) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

bool NameRule(std::string_view name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

void CheckScope(std::string_view in) {
  absl::StatusOr<Scope> scope = Scope::Parse(in);
  bool rule = false;
  for (std::string_view kind : {"project:", "team:"}) {
    if (in.substr(0, kind.size()) == kind) rule = IdRule(in.substr(kind.size()));
  }
  FUZZ_CHECK(scope.ok() == rule);
  if (!scope.ok()) {
    FUZZ_CHECK(scope.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(scope->ToString() == in);
  FUZZ_CHECK(*Scope::Make(scope->kind(), scope->id()) == *scope);
}

void CheckName(std::string_view in) {
  absl::Status s = ValidateName(in);
  FUZZ_CHECK(s.ok() == NameRule(in));
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(ToErrno(s) == (in.size() > 255 ? ENAMETOOLONG : EINVAL));
  }
}

void CheckId(std::string_view in) {
  absl::Status s = ValidateId(in, "job id");
  FUZZ_CHECK(s.ok() == IdRule(in));
  FUZZ_CHECK(ValidateScopeId(in).ok() == s.ok());
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(s.message().substr(0, 6) == "job id");
  }
}

void CheckChunkId(std::string_view in) {
  absl::StatusOr<ChunkId> raw = ChunkId::FromBytes(in);
  FUZZ_CHECK(raw.ok() == (in.size() == ChunkId::kSize));
  if (raw.ok()) {
    FUZZ_CHECK(raw->bytes() == in);
    FUZZ_CHECK(*ChunkId::FromHex(raw->ToHex()) == *raw);
  }
  absl::StatusOr<ChunkId> hex = ChunkId::FromHex(in);
  bool hex_rule = in.size() == 2 * ChunkId::kSize &&
                  in.find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
  FUZZ_CHECK(hex.ok() == hex_rule);
  if (hex.ok()) {
    std::string lower(in);
    for (char& c : lower) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    FUZZ_CHECK(hex->ToHex() == lower);
  }
}

// size (8 bytes), chunk_size (4 bytes), then per chunk: a flag byte (hole or
// not) and a length (4 bytes).
void CheckChunkMapShape(std::string_view in) {
  if (in.size() < 12) return;
  uint64_t size;
  uint32_t chunk_size;
  std::memcpy(&size, in.data(), 8);
  std::memcpy(&chunk_size, in.data() + 8, 4);
  in.remove_prefix(12);
  std::vector<ChunkRef> chunks;
  while (in.size() >= 5 && chunks.size() < 4096) {
    ChunkRef ref;
    if (in[0] & 1) ref.id = ChunkId::Of(in.substr(0, 1));
    std::memcpy(&ref.length, in.data() + 1, 4);
    chunks.push_back(ref);
    in.remove_prefix(5);
  }
  absl::Status s = ValidateChunkMapShape(size, chunk_size, chunks);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  // What the shape rule promises: every chunk but the last is full, the
  // lengths add up to the size, and the chunk size is a power of two.
  FUZZ_CHECK(chunk_size != 0 && (chunk_size & (chunk_size - 1)) == 0);
  uint64_t total = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    FUZZ_CHECK(chunks[i].length <= chunk_size);
    if (i + 1 < chunks.size()) FUZZ_CHECK(chunks[i].length == chunk_size);
    total += chunks[i].length;
  }
  FUZZ_CHECK(total == size);
}

}  // namespace
}  // namespace traincache

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace traincache;
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      CheckScope(in);
      break;
    case 1:
      CheckName(in);
      break;
    case 2:
      CheckId(in);
      break;
    case 3:
      CheckChunkId(in);
      break;
    case 4:
      CheckChunkMapShape(in);
      break;
  }
  return 0;
}
