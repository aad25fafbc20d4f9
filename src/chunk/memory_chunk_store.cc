// The in-memory twin of the disk chunk store: same contract, no I/O.
//
// Chunks are held as shared immutable strings, so Get and List copy bytes and
// call back without holding the lock, and a List callback may call back into
// the store (the collector deletes while it lists).

#include <fmt/format.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "traincache/chunk_store.h"
#include "traincache/status.h"

namespace traincache {
namespace {

class MemoryChunkStore final : public ChunkStore {
 public:
  absl::Status Put(const Scope& scope, const ChunkId& id, std::string_view data) override {
    // Hash outside the lock: it is the expensive part.
    RETURN_IF_ERROR(ValidateChunkBytes(scope, id, data));
    absl::MutexLock lock(&mu_);
    Entry& entry = scopes_[scope][id];
    // An existing entry keeps its bytes; its mtime is refreshed so the sweep's
    // grace period counts from the latest upload (as the disk store does).
    if (entry.data == nullptr) entry.data = std::make_shared<const std::string>(data);
    entry.mtime = Now();
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(const Scope& scope, const ChunkId& id, uint64_t offset,
                                  uint64_t length) override {
    std::shared_ptr<const std::string> data;
    {
      absl::MutexLock lock(&mu_);
      const Entry* entry = Find(scope, id);
      if (entry == nullptr) return NotFound(scope, id);
      data = entry->data;
    }
    // No hash check: the bytes were verified by Put and nothing can change
    // them in memory.
    ASSIGN_OR_RETURN(uint64_t n, ChunkSliceLength(scope, id, data->size(), offset, length));
    return data->substr(offset, n);
  }

  absl::StatusOr<uint64_t> Stat(const Scope& scope, const ChunkId& id) override {
    absl::MutexLock lock(&mu_);
    const Entry* entry = Find(scope, id);
    if (entry == nullptr) return NotFound(scope, id);
    return entry->data->size();
  }

  absl::Status Delete(const Scope& scope, const ChunkId& id) override {
    absl::MutexLock lock(&mu_);
    auto it = scopes_.find(scope);
    if (it == scopes_.end()) return absl::OkStatus();
    it->second.erase(id);
    if (it->second.empty()) scopes_.erase(it);
    return absl::OkStatus();
  }

  absl::Status DeleteScope(const Scope& scope) override {
    absl::MutexLock lock(&mu_);
    scopes_.erase(scope);
    return absl::OkStatus();
  }

  absl::Status List(const Scope& scope,
                    const std::function<absl::Status(const ChunkInfo&)>& fn) override {
    std::vector<ChunkInfo> infos;
    {
      absl::MutexLock lock(&mu_);
      auto it = scopes_.find(scope);
      if (it == scopes_.end()) return absl::OkStatus();
      infos.reserve(it->second.size());
      for (const auto& [id, entry] : it->second) {
        infos.push_back(ChunkInfo{id, entry.data->size(), entry.mtime});
      }
    }
    for (const ChunkInfo& info : infos) {
      absl::Status status = fn(info);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

 private:
  struct Entry {
    std::shared_ptr<const std::string> data;
    Timespec mtime;
  };

  static absl::Status NotFound(const Scope& scope, const ChunkId& id) {
    return absl::NotFoundError(
        fmt::format("chunk {} of {} not found", id.ToHex(), scope.ToString()));
  }

  const Entry* Find(const Scope& scope, const ChunkId& id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = scopes_.find(scope);
    if (it == scopes_.end()) return nullptr;
    auto chunk = it->second.find(id);
    return chunk == it->second.end() ? nullptr : &chunk->second;
  }

  absl::Mutex mu_;
  // A scope with no chunks has no entry, so the map stays as small as the data.
  std::map<Scope, absl::flat_hash_map<ChunkId, Entry>> scopes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<ChunkStore> NewMemoryChunkStore() { return std::make_unique<MemoryChunkStore>(); }

}  // namespace traincache
