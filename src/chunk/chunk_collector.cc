// CollectGarbage: deletes the chunks of a scope that nothing references.
//
// Two passes. (a) The metadata store's garbage list names chunks whose count
// reached 0; each one still at 0 is deleted, then the page is forgotten
// (including ids whose count went back up: they are not garbage any more, and
// the store lists them again if they drop to 0 again). (b) A sweep over the
// chunk store catches chunks no commit ever referenced (an upload whose commit
// never came) and deletions a crash undid; the grace period spares uploads
// whose commit may still be on its way.
//
// Each count check and its delete run under the commit lock (exclusive), so a
// count read here stays true until the delete; listing runs without it.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <optional>
#include <vector>

#include "traincache/chunk_store.h"
#include "traincache/metadata_store.h"
#include "traincache/status.h"

namespace traincache {
namespace {

constexpr uint32_t kGarbagePage = 1024;

// Deletes `id` if its reference count is 0. Returns whether a stored chunk was
// deleted (false if it was referenced or not stored).
absl::StatusOr<bool> DeleteIfUnreferenced(const Scope& scope, const ChunkId& id,
                                          MetadataStore& meta, ChunkStore& chunks,
                                          std::shared_mutex* commit_lock) {
  std::unique_lock<std::shared_mutex> lock;
  if (commit_lock) lock = std::unique_lock(*commit_lock);
  ASSIGN_OR_RETURN(uint64_t refs, meta.ChunkRefCount(scope, id));
  if (refs != 0) return false;
  // What dropped the last reference (a release, a truncate, a commit) may
  // still be syncing: a crash must not bring back a reference to a chunk
  // that is gone.
  RETURN_IF_ERROR(meta.Sync());
  absl::StatusOr<uint64_t> size = chunks.Stat(scope, id);
  if (absl::IsNotFound(size.status())) return false;
  if (!size.ok()) return size.status();
  RETURN_IF_ERROR(chunks.Delete(scope, id));
  return true;
}

}  // namespace

absl::StatusOr<uint64_t> CollectGarbage(const Scope& scope, MetadataStore& meta, ChunkStore& chunks,
                                        int64_t grace_seconds, std::shared_mutex* commit_lock) {
  if (grace_seconds < 0) {
    return absl::InvalidArgumentError(
        fmt::format("grace period must not be negative, got {}", grace_seconds));
  }
  uint64_t deleted = 0;

  // (a) The garbage list, a page at a time. Each page is forgotten before the
  // next is read, so the list shrinks; a page that does not start past the
  // previous one means the store did not forget it, and we stop rather than
  // loop (the sweep and the next run still get those chunks).
  std::optional<ChunkId> last;
  while (true) {
    ASSIGN_OR_RETURN(std::vector<ChunkId> page, meta.ListGarbage(scope, kGarbagePage));
    if (page.empty()) break;
    if (last.has_value() && page.front() <= *last) {
      spdlog::warn("collector {}: garbage list did not advance past {}; stopping pass",
                   scope.ToString(), last->ToHex());
      break;
    }
    for (const ChunkId& id : page) {
      ASSIGN_OR_RETURN(bool gone, DeleteIfUnreferenced(scope, id, meta, chunks, commit_lock));
      if (gone) ++deleted;
    }
    RETURN_IF_ERROR(meta.ForgetGarbage(scope, page));
    last = page.back();
    if (page.size() < kGarbagePage) break;
  }

  // (b) The sweep. Ids first, deletes after: a store need not support
  // deleting while it lists.
  Timespec cutoff = Now();
  cutoff.sec -= grace_seconds;
  std::vector<ChunkId> old_chunks;
  RETURN_IF_ERROR(chunks.List(scope, [&](const ChunkInfo& info) {
    if (info.mtime < cutoff) old_chunks.push_back(info.id);
    return absl::OkStatus();
  }));
  for (const ChunkId& id : old_chunks) {
    ASSIGN_OR_RETURN(bool gone, DeleteIfUnreferenced(scope, id, meta, chunks, commit_lock));
    if (gone) ++deleted;
  }

  if (deleted > 0) {
    spdlog::info("collector {}: deleted {} unreferenced chunks", scope.ToString(), deleted);
  }
  return deleted;
}

}  // namespace traincache
