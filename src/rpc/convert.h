// Conversions between the wire messages (traincache.v1) and the core value
// types (types.h). Pure functions; thread-safe.
#ifndef TRAINCACHE_RPC_CONVERT_H_
#define TRAINCACHE_RPC_CONVERT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "traincache/types.h"
#include "traincache/v1/common.pb.h"

namespace traincache::rpc {

void ToProto(const Timespec& in, v1::Timespec* out);
Timespec FromProto(const v1::Timespec& in);
void ToProto(const InodeAttr& in, v1::Attr* out);
InodeAttr FromProto(const v1::Attr& in);
void ToProto(const DirEntry& in, v1::DirEntry* out);
DirEntry FromProto(const v1::DirEntry& in);
void ToProto(const ChunkRef& in, v1::ChunkRef* out);
// INVALID_ARGUMENT if the id is neither empty nor 32 bytes.
absl::StatusOr<ChunkRef> FromProto(const v1::ChunkRef& in);
absl::StatusOr<std::vector<ChunkRef>> FromProto(
    const google::protobuf::RepeatedPtrField<v1::ChunkRef>& in);

// The method names ("Lookup", "GetChunk", ...) of the services named by their
// full names (v1::Namespace::service_full_name(), ...), from the generated
// descriptors: every method, including ones added later.
std::vector<std::string> MethodNames(const std::vector<const char*>& service_full_names);

}  // namespace traincache::rpc

#endif  // TRAINCACHE_RPC_CONVERT_H_
