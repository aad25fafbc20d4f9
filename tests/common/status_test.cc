#include "traincache/status.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace traincache {
namespace {

TEST(StatusTest, PosixErrorKeepsErrnoAndCode) {
  absl::Status s = PosixError(ENOTEMPTY, "dir not empty");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrnoOf(s), ENOTEMPTY);
  EXPECT_EQ(ToErrno(s), ENOTEMPTY);
  EXPECT_EQ(PosixError(ENOENT, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(PosixError(EDQUOT, "x").code(), absl::StatusCode::kResourceExhausted);
}

TEST(StatusTest, ToErrnoFromCodes) {
  EXPECT_EQ(ToErrno(absl::OkStatus()), 0);
  EXPECT_EQ(ToErrno(absl::NotFoundError("x")), ENOENT);
  EXPECT_EQ(ToErrno(absl::AlreadyExistsError("x")), EEXIST);
  EXPECT_EQ(ToErrno(absl::InternalError("x")), EIO);
  EXPECT_EQ(ToErrno(absl::UnavailableError("x")), ETIMEDOUT);
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, Macros) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace traincache
