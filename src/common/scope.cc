#include "traincache/scope.h"

#include <cerrno>

#include <fmt/format.h>
#include "traincache/status.h"
#include "traincache/types.h"

namespace traincache {
namespace {

bool IsIdChar(char c, bool first) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  return !first && (c == '.' || c == '_' || c == '-');
}

}  // namespace

absl::Status ValidateId(std::string_view id, std::string_view what) {
  if (id.empty() || id.size() > 128) {
    return absl::InvalidArgumentError(
        fmt::format("{} must be 1..128 characters, got {}", what, id.size()));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    if (!IsIdChar(id[i], i == 0)) {
      return absl::InvalidArgumentError(
          fmt::format("{} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}", what));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateScopeId(std::string_view id) { return ValidateId(id, "scope id"); }

absl::Status ValidateName(std::string_view name) {
  if (name.empty()) return PosixError(EINVAL, "empty name");
  if (name.size() > kMaxNameBytes) {
    return PosixError(ENAMETOOLONG, fmt::format("name is {} bytes; at most 255", name.size()));
  }
  if (name == "." || name == "..") return PosixError(EINVAL, "name may not be . or ..");
  if (name.find('/') != std::string_view::npos) return PosixError(EINVAL, "name contains '/'");
  if (name.find('\0') != std::string_view::npos) return PosixError(EINVAL, "name contains NUL");
  return absl::OkStatus();
}

absl::StatusOr<Scope> Scope::Make(ScopeKind kind, std::string_view id) {
  if (kind != ScopeKind::kProject && kind != ScopeKind::kTeam) {
    return absl::InvalidArgumentError("scope kind must be project or team");
  }
  RETURN_IF_ERROR(ValidateScopeId(id));
  return Scope(kind, std::string(id));
}

absl::StatusOr<Scope> Scope::Parse(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return absl::InvalidArgumentError("scope must be project:<id> or team:<id>");
  }
  std::string_view kind = text.substr(0, colon);
  std::string_view id = text.substr(colon + 1);
  if (kind == "project") return Make(ScopeKind::kProject, id);
  if (kind == "team") return Make(ScopeKind::kTeam, id);
  return absl::InvalidArgumentError("scope must be project:<id> or team:<id>");
}

std::string_view Scope::kind_name() const {
  return kind_ == ScopeKind::kProject ? "project" : "team";
}

std::string Scope::ToString() const { return fmt::format("{}:{}", kind_name(), id_); }

}  // namespace traincache
