// A MetadataStore that only knows chunk reference counts and the garbage list:
// what CollectGarbage uses. Everything else answers UNIMPLEMENTED, so a
// collector that starts to depend on more shows up as a failing test.
//
// Kept here (not the real in-memory store from src/meta) so the chunk tests do
// not depend on tc_meta. Thread-safe.
#ifndef TRAINCACHE_TESTS_CHUNK_FAKE_METADATA_STORE_H_
#define TRAINCACHE_TESTS_CHUNK_FAKE_METADATA_STORE_H_

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "traincache/metadata_store.h"

namespace traincache::testing {

class FakeMetadataStore : public MetadataStore {
 public:
  // Sets the count of `id`; a count that drops to 0 puts it on the garbage
  // list, as CommitContent and ReleaseInode do.
  void SetRefCount(const Scope& scope, const ChunkId& id, uint64_t count) {
    absl::MutexLock lock(&mu_);
    uint64_t& current = refs_[scope][id];
    if (current > 0 && count == 0) garbage_[scope].insert(id);
    current = count;
  }
  // Puts `id` on the garbage list without touching its count.
  void AddGarbage(const Scope& scope, const ChunkId& id) {
    absl::MutexLock lock(&mu_);
    garbage_[scope].insert(id);
  }
  std::set<ChunkId> Garbage(const Scope& scope) {
    absl::MutexLock lock(&mu_);
    return garbage_[scope];
  }
  int list_garbage_calls() {
    absl::MutexLock lock(&mu_);
    return list_garbage_calls_;
  }
  // Fault injection.
  void FailRefCountWith(absl::Status status) {
    absl::MutexLock lock(&mu_);
    ref_count_error_ = std::move(status);
  }
  void IgnoreForgetGarbage() {
    absl::MutexLock lock(&mu_);
    ignore_forget_ = true;
  }

  absl::StatusOr<uint64_t> ChunkRefCount(const Scope& scope, const ChunkId& id) override {
    absl::MutexLock lock(&mu_);
    if (!ref_count_error_.ok()) return ref_count_error_;
    auto it = refs_[scope].find(id);
    return it == refs_[scope].end() ? 0 : it->second;
  }
  absl::StatusOr<std::vector<ChunkId>> ListGarbage(const Scope& scope, uint32_t limit) override {
    absl::MutexLock lock(&mu_);
    ++list_garbage_calls_;
    std::vector<ChunkId> out;
    for (const ChunkId& id : garbage_[scope]) {  // std::set: id order.
      if (out.size() >= limit) break;
      out.push_back(id);
    }
    return out;
  }
  absl::Status WaitReadsDurable() override { return absl::OkStatus(); }
  absl::Status Sync() override { return absl::OkStatus(); }
  absl::Status ForgetGarbage(const Scope& scope, const std::vector<ChunkId>& ids) override {
    absl::MutexLock lock(&mu_);
    if (ignore_forget_) return absl::OkStatus();
    for (const ChunkId& id : ids) garbage_[scope].erase(id);
    return absl::OkStatus();
  }

  // --- not needed by the collector ---
  absl::StatusOr<ScopeInfo> OpenScope(const Scope&, bool, uint64_t) override {
    return Unimplemented();
  }
  absl::Status DeleteScope(const Scope&) override { return Unimplemented(); }
  absl::StatusOr<std::vector<Scope>> ListScopes() override { return Unimplemented(); }
  absl::StatusOr<ScopeUsage> GetUsage(const Scope&) override { return Unimplemented(); }
  absl::Status SetQuota(const Scope&, uint64_t) override { return Unimplemented(); }
  absl::StatusOr<InodeAttr> Lookup(const Scope&, InodeId, std::string_view) override {
    return Unimplemented();
  }
  absl::StatusOr<InodeAttr> GetAttr(const Scope&, InodeId) override { return Unimplemented(); }
  absl::StatusOr<InodeAttr> SetAttr(const Scope&, InodeId, const SetAttrRequest&) override {
    return Unimplemented();
  }
  absl::StatusOr<ReadDirPage> ReadDir(const Scope&, InodeId, std::string_view, uint32_t,
                                      bool) override {
    return Unimplemented();
  }
  absl::StatusOr<CreateResult> Create(const Scope&, InodeId, std::string_view, uint32_t,
                                      const Caller&, bool, const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<InodeAttr> Mkdir(const Scope&, InodeId, std::string_view, uint32_t,
                                  const Caller&, const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<InodeAttr> Symlink(const Scope&, InodeId, std::string_view, std::string_view,
                                    const Caller&, const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::string> ReadLink(const Scope&, InodeId) override { return Unimplemented(); }
  absl::StatusOr<InodeAttr> Link(const Scope&, InodeId, InodeId, std::string_view,
                                 const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<UnlinkResult> Unlink(const Scope&, InodeId, std::string_view,
                                      const RequestId&) override {
    return Unimplemented();
  }
  absl::Status Rmdir(const Scope&, InodeId, std::string_view, const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<UnlinkResult> Rename(const Scope&, InodeId, std::string_view, InodeId,
                                      std::string_view, uint32_t, const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::string> GetXattr(const Scope&, InodeId, std::string_view) override {
    return Unimplemented();
  }
  absl::Status SetXattr(const Scope&, InodeId, std::string_view, std::string_view, uint32_t,
                        const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<std::vector<std::string>> ListXattr(const Scope&, InodeId) override {
    return Unimplemented();
  }
  absl::Status RemoveXattr(const Scope&, InodeId, std::string_view, const RequestId&) override {
    return Unimplemented();
  }
  absl::StatusOr<ChunkMap> GetChunkMap(const Scope&, InodeId) override { return Unimplemented(); }
  absl::StatusOr<InodeAttr> CommitContent(const Scope&, InodeId, uint64_t, uint64_t, uint32_t,
                                          const std::vector<ChunkRef>&, Timespec) override {
    return Unimplemented();
  }
  absl::Status ReleaseInode(const Scope&, InodeId) override { return Unimplemented(); }
  absl::StatusOr<uint64_t> PurgeOrphans(const Scope&, Timespec) override { return Unimplemented(); }
  absl::StatusOr<std::vector<InodeId>> ListOrphans(const Scope&) override {
    return Unimplemented();
  }
  absl::Status ScanScope(
      const Scope&, const std::function<absl::Status(const InodeAttr&)>&,
      const std::function<absl::Status(InodeId, std::string_view, InodeId)>&) override {
    return Unimplemented();
  }

 private:
  static absl::Status Unimplemented() {
    return absl::UnimplementedError("not implemented by FakeMetadataStore");
  }

  absl::Mutex mu_;
  std::map<Scope, std::map<ChunkId, uint64_t>> refs_ ABSL_GUARDED_BY(mu_);
  std::map<Scope, std::set<ChunkId>> garbage_ ABSL_GUARDED_BY(mu_);
  int list_garbage_calls_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status ref_count_error_ ABSL_GUARDED_BY(mu_);
  bool ignore_forget_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_CHUNK_FAKE_METADATA_STORE_H_
