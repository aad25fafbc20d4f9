#include "server/scope_summary.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "traincache/status.h"

namespace traincache::server {
namespace {

constexpr uint32_t kNoItem = std::numeric_limits<uint32_t>::max();

// What the summary keeps of an inode (40 bytes: a million take ~40 MB).
struct InodeFacts {
  InodeId ino = 0;
  uint64_t size = 0;
  Timespec mtime;
  uint32_t mode = 0;
  uint32_t nlink = 0;
};

// One directory entry as the scan gave it.
struct ScannedEntry {
  InodeId parent = 0;
  InodeId child = 0;
  std::string name;  // Moved into the summary's item when the walk reaches it.
};

// A directory met by the walk: where its entries are and where its sum goes.
struct WalkDir {
  InodeId ino = 0;
  uint32_t parent = 0;      // Index of the directory holding it (the root: 0, itself).
  uint32_t item = kNoItem;  // Its entry in ScopeSummary::items (the root has none).
  uint64_t sum = 0;         // Sizes below it; complete after Walker::AddUp.
};

// A regular file or symlink with more than one link: its size goes once into
// each directory above any of its names, so it waits until every name is known.
struct HardLinked {
  uint64_t size = 0;
  std::vector<uint32_t> dirs;  // The directory of each name.
};

// How often the scan looks at `cancelled`.
constexpr uint64_t kCancelCheckEvery = 4096;

// One summary in the making; used by one thread.
class Walker {
 public:
  Walker(MetadataStore& meta, const Scope& scope, const std::function<bool()>& cancelled)
      : meta_(meta), scope_(scope), cancelled_(cancelled) {
    dirs_.push_back(WalkDir{kRootInode, 0, kNoItem, 0});
    out_.dir_paths.push_back("");
    seen_dirs_.insert(kRootInode);
  }

  // Reads the whole scope in one ScanScope: inodes come in inode order and
  // entries in (parent, name) order, so both lists arrive sorted and are
  // searched by binary search, with no index built beside them.
  absl::Status Scan() {
    out_.captured_at = Now();
    uint64_t seen = 0;
    auto check = [&]() -> absl::Status {
      if (++seen % kCancelCheckEvery == 0 && Cancelled()) {
        return absl::CancelledError("summarize cancelled");
      }
      return absl::OkStatus();
    };
    return meta_.ScanScope(
        scope_,
        [&](const InodeAttr& attr) {
          inodes_.push_back(InodeFacts{attr.ino, attr.size, attr.mtime, attr.mode, attr.nlink});
          return check();
        },
        [&](InodeId parent, std::string_view name, InodeId child) {
          entries_.push_back(ScannedEntry{parent, child, std::string(name)});
          return check();
        });
  }

  // Breadth first from the root: a directory's subdirectories are appended
  // behind it, so every directory (and item) comes after the one holding it.
  absl::Status Walk() {
    // Each entry makes at most one item: no reallocation peak of twice the listing.
    out_.items.reserve(entries_.size());
    for (uint32_t d = 0; d < dirs_.size(); ++d) {
      if (Cancelled()) return absl::CancelledError("summarize cancelled");
      auto [first, last] = std::equal_range(
          entries_.begin(), entries_.end(), ScannedEntry{dirs_[d].ino, 0, {}},
          [](const ScannedEntry& a, const ScannedEntry& b) { return a.parent < b.parent; });
      for (auto e = first; e != last; ++e) RETURN_IF_ERROR(Add(d, *e));
    }
    // The scan's lists are done with; only the summary stays.
    inodes_ = {};
    entries_ = {};
    return absl::OkStatus();
  }

  // Fills the directory items' sizes and the totals.
  void AddUp() {
    // From the last directory to the first: a directory's sum is complete
    // before it is added to its parent's.
    for (size_t d = dirs_.size() - 1; d > 0; --d) dirs_[dirs_[d].parent].sum += dirs_[d].sum;
    // Hard-linked inodes: once into every directory above any of their names.
    // `mark[d] == g` says group g already counted in d; a walk up stops at a
    // marked directory (everything above it is marked too), so each group
    // costs at most the number of distinct directories above its names.
    std::vector<size_t> mark(hard_linked_.empty() ? 0 : dirs_.size(), 0);
    size_t g = 0;
    for (const auto& [ino, linked] : hard_linked_) {
      ++g;
      ++out_.total_files;
      out_.total_size += linked.size;
      for (uint32_t x : linked.dirs) {
        for (;; x = dirs_[x].parent) {
          if (mark[x] == g) break;
          mark[x] = g;
          dirs_[x].sum += linked.size;
          if (x == 0) break;
        }
      }
    }
    for (size_t d = 1; d < dirs_.size(); ++d) out_.items[dirs_[d].item].size = dirs_[d].sum;
  }

  ScopeSummary Take() { return std::move(out_); }

 private:
  bool Cancelled() const { return cancelled_ && cancelled_(); }

  absl::Status Add(uint32_t d, ScannedEntry& e) {
    auto facts = std::lower_bound(
        inodes_.begin(), inodes_.end(), e.child,
        [](const InodeFacts& f, InodeId ino) { return f.ino < ino; });
    if (facts == inodes_.end() || facts->ino != e.child) {
      return absl::DataLossError(fmt::format("{}: entry '{}' of directory {} names missing inode {}",
                                             scope_.ToString(), e.name, dirs_[d].ino, e.child));
    }
    if (out_.items.size() >= kNoItem - 1) {
      return absl::ResourceExhaustedError("scope has too many entries to summarize");
    }
    SummaryItem item;
    item.dir = d;
    item.mtime = facts->mtime;
    item.mode = facts->mode;
    if (S_ISDIR(facts->mode)) {
      // A directory has one name; a second one would be a damaged store, and
      // listing it once keeps the walk finite.
      if (!seen_dirs_.insert(facts->ino).second) return absl::OkStatus();
      dirs_.push_back(WalkDir{facts->ino, d, static_cast<uint32_t>(out_.items.size()), 0});
      const std::string& parent = out_.dir_paths[d];
      out_.dir_paths.push_back(parent.empty() ? e.name : parent + "/" + e.name);
    } else {
      item.size = facts->size;
      if (facts->nlink > 1) {
        HardLinked& linked = hard_linked_[facts->ino];
        linked.size = facts->size;
        linked.dirs.push_back(d);
      } else {
        dirs_[d].sum += facts->size;
        ++out_.total_files;
        out_.total_size += facts->size;
      }
    }
    item.name = std::move(e.name);
    out_.items.push_back(std::move(item));
    return absl::OkStatus();
  }

  MetadataStore& meta_;
  const Scope& scope_;
  const std::function<bool()>& cancelled_;
  std::vector<InodeFacts> inodes_;     // By inode number, as the scan gives them.
  std::vector<ScannedEntry> entries_;  // By parent, then name.
  ScopeSummary out_;
  std::vector<WalkDir> dirs_;  // [0] is the root; parallel to out_.dir_paths.
  std::unordered_set<InodeId> seen_dirs_;
  std::unordered_map<InodeId, HardLinked> hard_linked_;
};

}  // namespace

std::string ScopeSummary::PathOf(size_t i) const {
  const SummaryItem& item = items[i];
  const std::string& dir = dir_paths[item.dir];
  if (dir.empty()) return item.name;
  std::string path;
  path.reserve(dir.size() + 1 + item.name.size());
  path.append(dir).append("/").append(item.name);
  return path;
}

absl::StatusOr<ScopeSummary> SummarizeScope(MetadataStore& meta, const Scope& scope,
                                            const std::function<bool()>& cancelled) {
  Walker walker(meta, scope, cancelled);
  absl::Status scanned = walker.Scan();
  if (scanned.code() == absl::StatusCode::kNotFound) {
    // ScanScope's one NOT_FOUND: no such scope. It is not created here (a
    // summary of a mistyped id must not leave an empty cache behind), and the
    // message names it the way an operator thinks of it.
    return absl::NotFoundError(
        fmt::format("{} {} has no cache on this cluster", scope.kind_name(), scope.id()));
  }
  RETURN_IF_ERROR(scanned);
  RETURN_IF_ERROR(walker.Walk());
  walker.AddUp();
  return walker.Take();
}

}  // namespace traincache::server
