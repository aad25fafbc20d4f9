// The border between absl::Status and grpc::Status (the only one).
//
// A POSIX errno recorded in an absl::Status (PosixError) travels in the gRPC
// status details as a traincache.v1.ErrorDetail and is restored on the other
// side, so a node sees the server's ENOTEMPTY as ENOTEMPTY. Thread-safe.
#ifndef TRAINCACHE_RPC_STATUS_CONVERT_H_
#define TRAINCACHE_RPC_STATUS_CONVERT_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace traincache::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace traincache::rpc

#endif  // TRAINCACHE_RPC_STATUS_CONVERT_H_
