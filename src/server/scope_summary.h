// ScopeSummary: the listing of one scope with its directory sizes and totals,
// as the Summarize call streams it (proto/traincache/v1/admin.proto says
// what each number counts: hard-linked files once, directories as the sum of
// the distinct files and symlinks below them).
//
// SummarizeScope walks the scope through MetadataStore::ReadDir (readdirplus
// pages), breadth first, and keeps every entry in memory (about 100 bytes
// plus the name each: a scope of 1,000,000 entries takes ~100-150 MB while
// one Summarize runs). Directory sizes then take one pass from the last entry
// to the first, since a directory's entries always come after it; hard-linked
// files add their size once to each directory above any of their names,
// visiting each such directory once. O(entries) time and memory; nothing is
// quadratic in the number of entries or the depth.
//
// The walk is not one snapshot: each ReadDir page is consistent on its own.
// A directory moved during the walk may be missed or seen under its old or
// new name; one that was already listed is never listed again (so no entry
// twice, no loop). A directory removed during the walk keeps its entry with
// size 0.
//
// Thread-safe: SummarizeScope may run concurrently with itself and with any
// mutation; a ScopeSummary is a plain value.
#ifndef TRAINCACHE_SERVER_SCOPE_SUMMARY_H_
#define TRAINCACHE_SERVER_SCOPE_SUMMARY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "traincache/metadata_store.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache::server {

// One directory, regular file or symlink of the scope (never the root).
struct SummaryItem {
  uint32_t dir = 0;   // Index in ScopeSummary::dir_paths of the directory holding it.
  std::string name;   // Its name in that directory.
  uint64_t size = 0;  // Directories: the sum below them; others: st_size.
  Timespec mtime;
  uint32_t mode = 0;  // st_mode, type bits included.
};

struct ScopeSummary {
  Timespec captured_at;      // When the walk started.
  uint64_t total_files = 0;  // Distinct regular files and symlinks.
  uint64_t total_size = 0;   // Their sizes, each inode once.
  std::vector<SummaryItem> items;  // Walk order: breadth first, by name in each directory.
  // Path of each directory relative to the root; [0] is the root itself ("").
  std::vector<std::string> dir_paths;

  // "models/a.bin": the path of items[i] relative to the root.
  std::string PathOf(size_t i) const;
};

// Walks `scope` and adds up its sizes. NOT_FOUND ("project x has no cache on
// this cluster") if the scope does not exist, also when it is deleted during
// the walk; it is never created. CANCELLED as soon as `cancelled` (checked
// once per ReadDir page; may be empty) returns true. The store's error
// otherwise.
absl::StatusOr<ScopeSummary> SummarizeScope(MetadataStore& meta, const Scope& scope,
                                            const std::function<bool()>& cancelled = nullptr);

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_SCOPE_SUMMARY_H_
