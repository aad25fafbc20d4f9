// Status helpers shared by every module.
//
// Errors travel as absl::Status / absl::StatusOr<T>. A status that stands for a
// POSIX condition (ENOTEMPTY, EISDIR, ...) carries the errno as a payload so the
// FUSE adapter can reply with the exact number; the canonical code still says
// what kind of failure it is for callers that only look at codes.
//
// Thread-safe: all functions are pure.
#ifndef TRAINCACHE_STATUS_H_
#define TRAINCACHE_STATUS_H_

#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace traincache {

// Payload type URL under which PosixError stores the errno (decimal text).
inline constexpr std::string_view kErrnoPayload = "traincache.dev/errno";

// Returns a status whose code is the canonical code for `err` (ENOENT ->
// NOT_FOUND, EEXIST -> ALREADY_EXISTS, ...) and whose payload records `err`.
absl::Status PosixError(int err, std::string_view message);

// PosixError(err, "<what>: <strerror(err)>"): a failed system call.
absl::Status ErrnoStatus(int err, std::string_view what);

// Returns the errno recorded by PosixError, if any.
std::optional<int> ErrnoOf(const absl::Status& status);

// Returns the errno a POSIX caller should see for `status`: the recorded one,
// else one derived from the canonical code. OK maps to 0.
int ToErrno(const absl::Status& status);

}  // namespace traincache

#ifndef ABSL_USES_STD_STRING_VIEW
// Debian's abseil has its own string_view (status messages are one); let fmt
// and spdlog print it like any string.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename FormatContext>
  auto format(absl::string_view s, FormatContext& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};
#endif

#define TC_CONCAT_INNER_(a, b) a##b
#define TC_CONCAT_(a, b) TC_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                         \
  do {                                                \
    ::absl::Status tc_status_ = (expr);               \
    if (!tc_status_.ok()) return tc_status_;          \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` declares x from an OK StatusOr or returns
// its error from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(TC_CONCAT_(tc_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()

// Marks an error that is deliberately dropped; grep for IGNORE_ERROR.
#define IGNORE_ERROR(expr) static_cast<void>(expr)

#endif  // TRAINCACHE_STATUS_H_
