#include "server/scope_summary.h"

#include <fmt/format.h>

#include <cerrno>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "traincache/status.h"

namespace traincache::server {
namespace {

constexpr uint32_t kNoItem = std::numeric_limits<uint32_t>::max();

// A directory met by the walk: where to read it and where its sum goes.
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

// One summary in the making; used by one thread.
class Walker {
 public:
  Walker(MetadataStore& meta, const Scope& scope, const std::function<bool()>& cancelled)
      : meta_(meta), scope_(scope), cancelled_(cancelled) {
    dirs_.push_back(WalkDir{kRootInode, 0, kNoItem, 0});
    out_.dir_paths.push_back("");
    seen_dirs_.insert(kRootInode);
  }

  // Breadth first: directory d's subdirectories are appended behind it, so
  // every directory (and item) comes after the directory that holds it.
  absl::Status Walk() {
    out_.captured_at = Now();
    for (uint32_t d = 0; d < dirs_.size(); ++d) RETURN_IF_ERROR(ListDir(d));
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
    std::vector<size_t> mark(dirs_.size(), 0);
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
  // Lists every entry of directory d, queueing the subdirectories not met before.
  absl::Status ListDir(uint32_t d) {
    std::string after;
    for (;;) {
      if (cancelled_ && cancelled_()) return absl::CancelledError("summarize cancelled");
      absl::StatusOr<ReadDirPage> page =
          meta_.ReadDir(scope_, dirs_[d].ino, after, /*limit=*/0, /*plus=*/true);
      if (!page.ok()) {
        // Below the root, a directory removed since its parent was listed is
        // not an error of the walk: its entry stays, with size 0.
        int err = ToErrno(page.status());
        if (d != 0 && (err == ENOENT || err == ENOTDIR)) return absl::OkStatus();
        return page.status();
      }
      for (DirEntry& e : page->entries) RETURN_IF_ERROR(Add(d, e));
      if (!page->more) return absl::OkStatus();
      if (page->entries.empty()) return absl::InternalError("ReadDir said more after an empty page");
      after = std::move(page->entries.back().name);
    }
  }

  absl::Status Add(uint32_t d, DirEntry& e) {
    if (!e.attr) return absl::InternalError("readdirplus gave an entry without attributes");
    const InodeAttr& attr = *e.attr;
    if (out_.items.size() >= kNoItem - 1) {
      return absl::ResourceExhaustedError("scope has too many entries to summarize");
    }
    SummaryItem item;
    item.dir = d;
    item.name = e.name;  // Copied: the caller still needs the last name of a page.
    item.mtime = attr.mtime;
    item.mode = attr.mode;
    if (attr.is_dir()) {
      // Listed already under another name (moved during the walk): once is enough.
      if (!seen_dirs_.insert(attr.ino).second) return absl::OkStatus();
      dirs_.push_back(WalkDir{attr.ino, d, static_cast<uint32_t>(out_.items.size()), 0});
      const std::string& parent = out_.dir_paths[d];
      out_.dir_paths.push_back(parent.empty() ? e.name : parent + "/" + e.name);
    } else {
      item.size = attr.size;
      if (attr.nlink > 1) {
        HardLinked& linked = hard_linked_[attr.ino];
        linked.size = attr.size;
        linked.dirs.push_back(d);
      } else {
        dirs_[d].sum += attr.size;
        ++out_.total_files;
        out_.total_size += attr.size;
      }
    }
    out_.items.push_back(std::move(item));
    return absl::OkStatus();
  }

  MetadataStore& meta_;
  const Scope& scope_;
  const std::function<bool()>& cancelled_;
  ScopeSummary out_;
  std::vector<WalkDir> dirs_;  // [0] is the root; parallel to out_.dir_paths.
  std::unordered_set<InodeId> seen_dirs_;
  std::unordered_map<InodeId, HardLinked> hard_linked_;
};

// Never creates the scope: a summary of a mistyped id must not leave an empty
// cache behind. The message names the scope the way an operator thinks of it.
absl::Status CheckExists(MetadataStore& meta, const Scope& scope) {
  absl::Status status = meta.OpenScope(scope, /*create=*/false).status();
  if (status.code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(
        fmt::format("{} {} has no cache on this cluster", scope.kind_name(), scope.id()));
  }
  return status;
}

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
  RETURN_IF_ERROR(CheckExists(meta, scope));
  RETURN_IF_ERROR(walker.Walk());
  // Deleted during the walk: its directories would all have looked vanished.
  RETURN_IF_ERROR(CheckExists(meta, scope));
  walker.AddUp();
  return walker.Take();
}

}  // namespace traincache::server
