// NewSmallChunkAwareStore: small chunks from the metadata store, the rest
// from the base store (chunk_store.h).
#include <fmt/format.h>

#include "traincache/chunk_store.h"
#include "traincache/metadata_store.h"
#include "traincache/status.h"

namespace traincache {
namespace {

class SmallChunkAwareStore final : public ChunkStore {
 public:
  SmallChunkAwareStore(MetadataStore* meta, ChunkStore* base) : meta_(meta), base_(base) {}

  absl::Status Put(const Scope& scope, const ChunkId& id, std::string_view data) override {
    return base_->Put(scope, id, data);
  }

  absl::StatusOr<std::string> Get(const Scope& scope, const ChunkId& id, uint64_t offset,
                                  uint64_t length) override {
    ASSIGN_OR_RETURN(std::optional<std::string> small, meta_->GetSmallChunk(scope, id));
    if (!small) return base_->Get(scope, id, offset, length);
    // Verified like a chunk file: never the wrong bytes.
    if (ChunkId::Of(*small) != id) {
      return absl::DataLossError(fmt::format("small chunk {} of {}: content does not match its id",
                                             id.ToHex(), scope.ToString()));
    }
    ASSIGN_OR_RETURN(uint64_t n, ChunkSliceLength(scope, id, small->size(), offset, length));
    if (offset == 0 && n == small->size()) return *std::move(small);
    return small->substr(offset, n);
  }

  // Chunk files unhashed (the caller verifies); a small chunk is small
  // enough to hand out checked.
  absl::StatusOr<std::string> GetUnverified(const Scope& scope, const ChunkId& id) override {
    ASSIGN_OR_RETURN(std::optional<std::string> small, meta_->GetSmallChunk(scope, id));
    if (!small) return base_->GetUnverified(scope, id);
    return Get(scope, id, 0, 0);
  }

  absl::StatusOr<uint64_t> Stat(const Scope& scope, const ChunkId& id) override {
    ASSIGN_OR_RETURN(std::optional<std::string> small, meta_->GetSmallChunk(scope, id));
    if (small) return small->size();
    return base_->Stat(scope, id);
  }

  absl::Status Delete(const Scope& scope, const ChunkId& id) override {
    RETURN_IF_ERROR(meta_->DeleteSmallChunk(scope, id));
    return base_->Delete(scope, id);
  }

  absl::Status DeleteScope(const Scope& scope) override { return base_->DeleteScope(scope); }

  absl::Status List(const Scope& scope,
                    const std::function<absl::Status(const ChunkInfo&)>& fn) override {
    return base_->List(scope, fn);
  }

 private:
  MetadataStore* const meta_;
  ChunkStore* const base_;
};

}  // namespace

std::unique_ptr<ChunkStore> NewSmallChunkAwareStore(MetadataStore* meta, ChunkStore* base) {
  return std::make_unique<SmallChunkAwareStore>(meta, base);
}

}  // namespace traincache
