#include "rpc/status_convert.h"

#include <string>

#include "traincache/status.h"
#include "traincache/v1/common.pb.h"

namespace traincache::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string details;
  if (std::optional<int> err = ErrnoOf(status)) {
    v1::ErrorDetail detail;
    detail.set_errno_value(*err);
    details = detail.SerializeAsString();
  }
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      details);
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  v1::ErrorDetail detail;
  if (!status.error_details().empty() && detail.ParseFromString(status.error_details()) &&
      detail.errno_value() > 0) {
    absl::Status posix = PosixError(detail.errno_value(), status.error_message());
    // Keep the server's code; PosixError picked one from the errno.
    absl::Status out(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
    out.SetPayload(std::string(kErrnoPayload), *posix.GetPayload(std::string(kErrnoPayload)));
    return out;
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace traincache::rpc
