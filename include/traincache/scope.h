// A scope is one cache: `project:<id>` or `team:<id>`. Everything in the
// metadata and chunk stores lives inside exactly one scope; nothing is shared
// between scopes (no cross-tenant dedup, no cross-tenant reads).
//
// Ids match [A-Za-z0-9][A-Za-z0-9._-]{0,127}. Parsing is the only way to make a
// Scope, so a Scope value is always valid. Thread-safe (immutable value).
#ifndef TRAINCACHE_SCOPE_H_
#define TRAINCACHE_SCOPE_H_

#include <compare>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace traincache {

enum class ScopeKind { kProject = 1, kTeam = 2 };

class Scope {
 public:
  // Parses "project:<id>" or "team:<id>". INVALID_ARGUMENT naming the problem
  // on anything else.
  static absl::StatusOr<Scope> Parse(std::string_view text);
  // Builds a scope from a kind and an id; INVALID_ARGUMENT if the id is malformed.
  static absl::StatusOr<Scope> Make(ScopeKind kind, std::string_view id);

  ScopeKind kind() const { return kind_; }
  const std::string& id() const { return id_; }
  // "project" or "team".
  std::string_view kind_name() const;
  // "project:<id>" — the canonical text form, also the storage key prefix.
  std::string ToString() const;

  auto operator<=>(const Scope&) const = default;

 private:
  Scope(ScopeKind kind, std::string id) : kind_(kind), id_(std::move(id)) {}
  ScopeKind kind_;
  std::string id_;
};

// OK iff `id` matches [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
absl::Status ValidateScopeId(std::string_view id);
// The same rule for the other ids of the system (job ids, cluster names, GPU
// types); INVALID_ARGUMENT whose message starts with `what` ("job id").
absl::Status ValidateId(std::string_view id, std::string_view what);

// OK iff `name` can be one directory entry: 1..255 bytes, no '/', no NUL, not
// "." or "..". INVALID_ARGUMENT (ENAMETOOLONG payload for long names) else.
absl::Status ValidateName(std::string_view name);

}  // namespace traincache

#endif  // TRAINCACHE_SCOPE_H_
