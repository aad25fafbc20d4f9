// ScopeSummary: the listing of one scope with its directory sizes and totals,
// as the Summarize call streams it (proto/traincache/v1/admin.proto says
// what each number counts: hard-linked files once, directories as the sum of
// the distinct files and symlinks below them).
//
// SummarizeScope reads the scope with one MetadataStore::ScanScope (one
// snapshot, two sequential range scans: linear whatever the order the
// inodes were made in), keeping 40 bytes per inode and each entry's name,
// then walks the tree breadth first from the root in memory (binary search
// in the two sorted lists), so every directory precedes its entries.
// Directory sizes then take one pass from the last directory to the first;
// hard-linked files add their size once to each directory above any of
// their names, visiting each such directory once. O(n log n) time, O(n)
// memory: about 200 bytes per entry at the peak (a scope of 1,000,000
// entries takes ~200-300 MB while one Summarize runs). Orphans (open
// unlinked files) have no name and are not listed.
//
// The summary is the tree at one instant (the scan's snapshot): a rename
// during the call shows either before or after, never half.
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

// Reads `scope` and adds up its sizes. NOT_FOUND ("project x has no cache on
// this cluster") if the scope does not exist; it is never created. CANCELLED
// soon after `cancelled` (may be empty; checked every few thousand records
// and once per directory) returns true. The store's error otherwise
// (DATA_LOSS for an entry naming a missing inode).
absl::StatusOr<ScopeSummary> SummarizeScope(MetadataStore& meta, const Scope& scope,
                                            const std::function<bool()>& cancelled = nullptr);

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_SCOPE_SUMMARY_H_
