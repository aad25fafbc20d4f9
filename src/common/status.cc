#include "traincache/status.h"

#include <cerrno>
#include <fmt/format.h>

#include <charconv>
#include <cstring>
#include <string>

#include "absl/strings/cord.h"

namespace traincache {
namespace {

absl::StatusCode CodeForErrno(int err) {
  switch (err) {
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EINVAL:
    case ENAMETOOLONG:
    case E2BIG:
    case ERANGE:
      return absl::StatusCode::kInvalidArgument;
    case EACCES:
    case EPERM:
      return absl::StatusCode::kPermissionDenied;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return absl::StatusCode::kResourceExhausted;
    case EIO:
      return absl::StatusCode::kInternal;
    case EAGAIN:
    case ETIMEDOUT:
      return absl::StatusCode::kUnavailable;
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::StatusCode::kUnimplemented;
    default:
      // ENOTDIR, EISDIR, ENOTEMPTY, ENODATA, ESTALE, EXDEV, EBUSY, EMLINK...
      return absl::StatusCode::kFailedPrecondition;
  }
}

}  // namespace

absl::Status PosixError(int err, std::string_view message) {
  absl::Status status(CodeForErrno(err), std::string(message));
  status.SetPayload(std::string(kErrnoPayload), absl::Cord(std::to_string(err)));
  return status;
}

absl::Status ErrnoStatus(int err, std::string_view what) {
  return PosixError(err, fmt::format("{}: {}", what, std::strerror(err)));
}

std::optional<int> ErrnoOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(std::string(kErrnoPayload));
  if (!payload) return std::nullopt;
  std::string text(*payload);
  int err = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), err);
  if (ec != std::errc() || ptr != text.data() + text.size() || err <= 0) return std::nullopt;
  return err;
}

int ToErrno(const absl::Status& status) {
  if (status.ok()) return 0;
  if (std::optional<int> err = ErrnoOf(status)) return *err;
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return ENOENT;
    case absl::StatusCode::kAlreadyExists:
      return EEXIST;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return EINVAL;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return EACCES;
    case absl::StatusCode::kResourceExhausted:
      return ENOSPC;
    case absl::StatusCode::kUnimplemented:
      return ENOSYS;
    case absl::StatusCode::kFailedPrecondition:
      return ESTALE;
    case absl::StatusCode::kCancelled:
      return EINTR;
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnavailable:
      return ETIMEDOUT;
    default:
      return EIO;
  }
}

}  // namespace traincache
