#include "rpc/convert.h"

#include <google/protobuf/descriptor.h>

#include "traincache/status.h"

namespace traincache::rpc {

void ToProto(const Timespec& in, v1::Timespec* out) {
  out->set_sec(in.sec);
  out->set_nsec(in.nsec);
}

Timespec FromProto(const v1::Timespec& in) { return Timespec{in.sec(), in.nsec()}; }

void ToProto(const InodeAttr& in, v1::Attr* out) {
  out->set_ino(in.ino);
  out->set_mode(in.mode);
  out->set_uid(in.uid);
  out->set_gid(in.gid);
  out->set_nlink(in.nlink);
  out->set_size(in.size);
  out->set_rdev(in.rdev);
  ToProto(in.atime, out->mutable_atime());
  ToProto(in.mtime, out->mutable_mtime());
  ToProto(in.ctime, out->mutable_ctime());
  out->set_version(in.version);
}

InodeAttr FromProto(const v1::Attr& in) {
  InodeAttr out;
  out.ino = in.ino();
  out.mode = in.mode();
  out.uid = in.uid();
  out.gid = in.gid();
  out.nlink = in.nlink();
  out.size = in.size();
  out.rdev = in.rdev();
  out.atime = FromProto(in.atime());
  out.mtime = FromProto(in.mtime());
  out.ctime = FromProto(in.ctime());
  out.version = in.version();
  return out;
}

void ToProto(const DirEntry& in, v1::DirEntry* out) {
  out->set_name(in.name);
  out->set_ino(in.ino);
  out->set_type(in.type);
  if (in.attr) ToProto(*in.attr, out->mutable_attr());
}

DirEntry FromProto(const v1::DirEntry& in) {
  DirEntry out;
  out.name = in.name();
  out.ino = in.ino();
  out.type = in.type();
  if (in.has_attr()) out.attr = FromProto(in.attr());
  return out;
}

void ToProto(const ChunkRef& in, v1::ChunkRef* out) {
  if (in.id) out->set_id(std::string(in.id->bytes()));
  out->set_length(in.length);
}

absl::StatusOr<ChunkRef> FromProto(const v1::ChunkRef& in) {
  ChunkRef out;
  out.length = in.length();
  if (!in.id().empty()) {
    ASSIGN_OR_RETURN(out.id, ChunkId::FromBytes(in.id()));
  }
  return out;
}

absl::StatusOr<std::vector<ChunkRef>> FromProto(
    const google::protobuf::RepeatedPtrField<v1::ChunkRef>& in) {
  std::vector<ChunkRef> out;
  out.reserve(in.size());
  for (const v1::ChunkRef& ref : in) {
    ASSIGN_OR_RETURN(ChunkRef r, FromProto(ref));
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::string> MethodNames(const std::vector<const char*>& service_full_names) {
  std::vector<std::string> names;
  for (const char* service : service_full_names) {
    const google::protobuf::ServiceDescriptor* d =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    if (d == nullptr) continue;
    for (int i = 0; i < d->method_count(); ++i) names.push_back(d->method(i)->name());
  }
  return names;
}

}  // namespace traincache::rpc
