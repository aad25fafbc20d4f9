// RemoteFs: typed helpers over a ServerClient for tests and benchmarks, one
// scope at a time. Each returns the server's status with errno restored.
#ifndef TRAINCACHE_TESTS_INTEGRATION_REMOTE_FS_H_
#define TRAINCACHE_TESTS_INTEGRATION_REMOTE_FS_H_

#include <string>
#include <vector>

#include "rpc/client.h"
#include "rpc/convert.h"
#include "traincache/metadata_store.h"
#include "traincache/status.h"

namespace traincache::testing {

class RemoteFs {
 public:
  RemoteFs(rpc::ServerClient* client, Scope scope) : c_(client), scope_(std::move(scope)) {}

  const Scope& scope() const { return scope_; }

  absl::StatusOr<InodeAttr> Open(bool create = true) {
    v1::OpenScopeRequest req;
    req.set_scope(scope_.ToString());
    req.set_create(create);
    v1::OpenScopeResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::OpenScope, c_->ns(), req, &resp));
    return rpc::FromProto(resp.root());
  }
  absl::StatusOr<InodeAttr> Mkdir(InodeId parent, const std::string& name, uint32_t mode = 0755) {
    v1::MkdirRequest req;
    req.set_scope(scope_.ToString());
    req.set_parent(parent);
    req.set_name(name);
    req.set_mode(mode);
    v1::AttrResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::Mkdir, c_->ns(), req, &resp));
    return rpc::FromProto(resp.attr());
  }
  absl::StatusOr<InodeAttr> Create(InodeId parent, const std::string& name, bool exclusive = true,
                                   uint32_t mode = 0644) {
    v1::CreateRequest req;
    req.set_scope(scope_.ToString());
    req.set_parent(parent);
    req.set_name(name);
    req.set_mode(mode);
    req.set_exclusive(exclusive);
    v1::CreateResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::Create, c_->ns(), req, &resp));
    return rpc::FromProto(resp.attr());
  }
  absl::StatusOr<InodeAttr> Lookup(InodeId parent, const std::string& name) {
    v1::LookupRequest req;
    req.set_scope(scope_.ToString());
    req.set_parent(parent);
    req.set_name(name);
    v1::AttrResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::Lookup, c_->ns(), req, &resp));
    return rpc::FromProto(resp.attr());
  }
  absl::StatusOr<InodeAttr> GetAttr(InodeId ino) {
    v1::GetAttrRequest req;
    req.set_scope(scope_.ToString());
    req.set_ino(ino);
    v1::AttrResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::GetAttr, c_->ns(), req, &resp));
    return rpc::FromProto(resp.attr());
  }
  absl::Status Unlink(InodeId parent, const std::string& name) {
    v1::UnlinkRequest req;
    req.set_scope(scope_.ToString());
    req.set_parent(parent);
    req.set_name(name);
    v1::UnlinkResponse resp;
    return c_->Call(&v1::Namespace::Stub::Unlink, c_->ns(), req, &resp);
  }
  absl::Status Rename(InodeId parent, const std::string& name, InodeId new_parent,
                      const std::string& new_name, uint32_t flags = 0) {
    v1::RenameRequest req;
    req.set_scope(scope_.ToString());
    req.set_parent(parent);
    req.set_name(name);
    req.set_new_parent(new_parent);
    req.set_new_name(new_name);
    req.set_flags(flags);
    v1::UnlinkResponse resp;
    return c_->Call(&v1::Namespace::Stub::Rename, c_->ns(), req, &resp);
  }
  absl::StatusOr<InodeAttr> Symlink(InodeId parent, const std::string& name,
                                    const std::string& target) {
    v1::SymlinkRequest req;
    req.set_scope(scope_.ToString());
    req.set_parent(parent);
    req.set_name(name);
    req.set_target(target);
    v1::AttrResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::Symlink, c_->ns(), req, &resp));
    return rpc::FromProto(resp.attr());
  }
  absl::StatusOr<std::string> ReadLink(InodeId ino) {
    v1::GetAttrRequest req;
    req.set_scope(scope_.ToString());
    req.set_ino(ino);
    v1::ReadLinkResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::ReadLink, c_->ns(), req, &resp));
    return resp.target();
  }
  absl::StatusOr<InodeAttr> Link(InodeId ino, InodeId new_parent, const std::string& name) {
    v1::LinkRequest req;
    req.set_scope(scope_.ToString());
    req.set_ino(ino);
    req.set_new_parent(new_parent);
    req.set_new_name(name);
    v1::AttrResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::Link, c_->ns(), req, &resp));
    return rpc::FromProto(resp.attr());
  }
  // Every entry of a directory, in pages of `page` (readdirplus if `plus`).
  absl::StatusOr<std::vector<DirEntry>> ReadDirAll(InodeId dir, uint32_t page = 0,
                                                   bool plus = false, int* pages = nullptr) {
    std::vector<DirEntry> out;
    std::string after;
    for (;;) {
      v1::ReadDirRequest req;
      req.set_scope(scope_.ToString());
      req.set_ino(dir);
      req.set_after(after);
      req.set_limit(page);
      req.set_plus(plus);
      v1::ReadDirResponse resp;
      RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::ReadDir, c_->ns(), req, &resp));
      if (pages) ++*pages;
      for (const v1::DirEntry& e : resp.entries()) out.push_back(rpc::FromProto(e));
      if (!resp.more()) return out;
      if (resp.entries().empty()) return absl::InternalError("more=true on an empty page");
      after = out.back().name;
    }
  }
  absl::StatusOr<v1::ChunkMapResponse> ChunkMapOf(InodeId ino) {
    v1::GetAttrRequest req;
    req.set_scope(scope_.ToString());
    req.set_ino(ino);
    v1::ChunkMapResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Namespace::Stub::GetChunkMap, c_->ns(), req, &resp));
    return resp;
  }
  absl::StatusOr<InodeAttr> Write(InodeId ino, const std::string& data,
                                  uint32_t chunk_size = kDefaultChunkSize) {
    ASSIGN_OR_RETURN(InodeAttr attr, GetAttr(ino));
    return c_->WriteFile(scope_, ino, attr.version, data, chunk_size);
  }
  absl::StatusOr<std::string> Read(InodeId ino) { return c_->ReadFile(scope_, ino); }
  // The scope opened, then `name` in its root.
  absl::StatusOr<InodeAttr> LookupInRoot(const std::string& name) {
    RETURN_IF_ERROR(Open().status());
    return Lookup(kRootInode, name);
  }
  // The content of `name` in the scope's root.
  absl::StatusOr<std::string> ReadInRoot(const std::string& name) {
    ASSIGN_OR_RETURN(InodeAttr attr, LookupInRoot(name));
    return Read(attr.ino);
  }
  absl::StatusOr<v1::UsageResponse> Usage() {
    v1::ScopeRef req;
    req.set_scope(scope_.ToString());
    v1::UsageResponse resp;
    RETURN_IF_ERROR(c_->Call(&v1::Admin::Stub::GetUsage, c_->admin(), req, &resp));
    return resp;
  }

 private:
  rpc::ServerClient* c_;
  Scope scope_;
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_INTEGRATION_REMOTE_FS_H_
