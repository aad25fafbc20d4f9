#include "cli/fsck_command.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/data_dir_lock.h"
#include "traincache/chunk_store.h"
#include "traincache/metadata_store.h"
#include "traincache/status.h"

namespace traincache::cli {
namespace {

// Holds <data_dir>/server.lock (as a server does) for fsck's lifetime, so no
// server starts on the data dir meanwhile; closes it at the end.
class DataDirLock {
 public:
  static absl::StatusOr<DataDirLock> Take(const std::string& data_dir) {
    struct stat st;
    if (stat(data_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::NotFoundError(fmt::format("{} is not a directory", data_dir));
    }
    absl::StatusOr<int> fd = TakeDataDirLock(data_dir, /*create=*/false);
    if (absl::IsNotFound(fd.status())) {
      return absl::NotFoundError(fmt::format("{} is not a traincache-server data dir ({})",
                                             data_dir, fd.status().message()));
    }
    if (absl::IsFailedPrecondition(fd.status())) {
      return absl::FailedPreconditionError(
          fmt::format("data dir {} is in use by a running traincache-server ({}); stop it first: "
                      "fsck checks a stopped server's data",
                      data_dir, fd.status().message()));
    }
    RETURN_IF_ERROR(fd.status());
    return DataDirLock(*fd);
  }
  DataDirLock(DataDirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;
  DataDirLock& operator=(DataDirLock&&) = delete;
  ~DataDirLock() {
    if (fd_ >= 0) IGNORE_ERROR(close(fd_));  // Read-only use; the lock goes with it.
  }

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

// One scope's files: inode -> its paths (several for hard links; an orphan,
// open but unlinked on some node, has none).
struct ScopeTree {
  std::map<InodeId, std::string> dir_paths;  // Filled from the entries.
  std::vector<InodeId> files;
  std::map<InodeId, std::vector<std::string>> file_paths;
};

absl::StatusOr<ScopeTree> ReadTree(MetadataStore& meta, const Scope& scope) {
  ScopeTree tree;
  std::set<InodeId> dirs;
  struct Entry {
    InodeId parent;
    std::string name;
    InodeId child;
  };
  std::vector<Entry> entries;
  RETURN_IF_ERROR(meta.ScanScope(
      scope,
      [&](const InodeAttr& attr) {
        if (attr.is_dir()) dirs.insert(attr.ino);
        if (attr.is_reg()) tree.files.push_back(attr.ino);
        return absl::OkStatus();
      },
      [&](InodeId parent, std::string_view name, InodeId child) {
        entries.push_back({parent, std::string(name), child});
        return absl::OkStatus();
      }));
  // A directory has one name; resolve each by walking up to the root.
  std::map<InodeId, std::pair<InodeId, std::string>> up;
  for (const Entry& e : entries) {
    if (dirs.contains(e.child)) up[e.child] = {e.parent, e.name};
  }
  auto dir_path = [&](InodeId dir) {
    std::vector<std::string> parts;
    for (int depth = 0; dir != kRootInode && depth < 4096; ++depth) {
      auto it = up.find(dir);
      if (it == up.end()) return fmt::format("<unreachable directory {}>", dir);
      parts.push_back(it->second.second);
      dir = it->second.first;
    }
    std::string path;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) path += "/" + *it;
    return path;
  };
  for (const Entry& e : entries) {
    if (!dirs.contains(e.child))
      tree.file_paths[e.child].push_back(dir_path(e.parent) + "/" + e.name);
  }
  return tree;
}

std::string Users(const Scope& scope, const std::set<std::string>& paths) {
  std::string out;
  for (const std::string& p : paths) {
    if (!out.empty()) out += ", ";
    out += scope.ToString() + ":" + p;
  }
  return out.empty() ? "no file" : out;
}

absl::Status CheckScope(MetadataStore& meta, ChunkStore& chunks, const Scope& scope,
                        std::ostream& out, FsckReport& report) {
  ASSIGN_OR_RETURN(ScopeTree tree, ReadTree(meta, scope));
  // Which files use each chunk.
  absl::flat_hash_map<ChunkId, std::set<std::string>> users;
  for (InodeId ino : tree.files) {
    ASSIGN_OR_RETURN(ChunkMap map, meta.GetChunkMap(scope, ino));
    bool any = false;
    auto named = tree.file_paths.find(ino);
    for (const ChunkRef& ref : map.chunks) {
      if (!ref.id) continue;
      any = true;
      std::set<std::string>& u = users[*ref.id];
      if (named == tree.file_paths.end()) {
        u.insert(fmt::format("<orphan inode {}>", ino));
      } else {
        u.insert(named->second.begin(), named->second.end());
      }
    }
    if (any) ++report.files;
  }
  report.referenced_chunks += users.size();

  // Every referenced chunk: a small chunk in the metadata, else a chunk file.
  for (const auto& [id, paths] : users) {
    ASSIGN_OR_RETURN(std::optional<std::string> small, meta.GetSmallChunk(scope, id));
    absl::StatusOr<std::string> bytes =
        small ? absl::StatusOr<std::string>(*std::move(small)) : chunks.GetUnverified(scope, id);
    if (absl::IsNotFound(bytes.status())) {
      ++report.missing;
      out << fmt::format("missing: {} chunk {}: used by {}\n", scope.ToString(), id.ToHex(),
                         Users(scope, paths));
      continue;
    }
    if (bytes.ok()) {
      ++report.checked_chunks;
      report.checked_bytes += bytes->size();
    }
    if (!bytes.ok() || ChunkId::Of(*bytes) != id) {
      ++report.corrupt;
      out << fmt::format("corrupt: {} chunk {} ({}): used by {}\n", scope.ToString(), id.ToHex(),
                         bytes.ok() ? "content does not match its id" : bytes.status().ToString(),
                         Users(scope, paths));
    }
  }

  // Chunk files no file uses are checked too (a commit may still come for a
  // fresh upload; the collector removes the rest).
  std::vector<ChunkId> unused;
  RETURN_IF_ERROR(chunks.List(scope, [&](const ChunkInfo& info) {
    if (!users.contains(info.id)) unused.push_back(info.id);
    return absl::OkStatus();
  }));
  report.unreferenced += unused.size();
  for (const ChunkId& id : unused) {
    absl::StatusOr<std::string> bytes = chunks.GetUnverified(scope, id);
    if (absl::IsNotFound(bytes.status())) continue;
    if (bytes.ok()) {
      ++report.checked_chunks;
      report.checked_bytes += bytes->size();
    }
    if (!bytes.ok() || ChunkId::Of(*bytes) != id) {
      ++report.corrupt;
      out << fmt::format("corrupt: {} chunk {} ({}): used by no file\n", scope.ToString(),
                         id.ToHex(),
                         bytes.ok() ? "content does not match its id" : bytes.status().ToString());
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FsckReport> RunFsck(const std::string& data_dir, std::ostream& out) {
  ASSIGN_OR_RETURN(DataDirLock lock, DataDirLock::Take(data_dir));
  struct stat st;
  if (stat((data_dir + "/meta").c_str(), &st) != 0) {
    return absl::NotFoundError(fmt::format(
        "{} has no metadata store (meta/): not a traincache-server data dir", data_dir));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<MetadataStore> meta, OpenRocksMetadataStore(data_dir + "/meta"));
  ASSIGN_OR_RETURN(std::unique_ptr<ChunkStore> chunks, OpenDiskChunkStore(data_dir + "/chunks"));
  FsckReport report;
  ASSIGN_OR_RETURN(std::vector<Scope> scopes, meta->ListScopes());
  for (const Scope& scope : scopes) {
    ++report.scopes;
    absl::Status checked = CheckScope(*meta, *chunks, scope, out, report);
    if (!checked.ok()) {
      // A scope whose metadata does not read is a problem to report, not a
      // reason to stop checking the others.
      ++report.corrupt;
      out << fmt::format("corrupt: {} metadata: {}\n", scope.ToString(), checked.ToString());
    }
  }
  out << fmt::format(
      "fsck {}: {} scopes, {} files, {} chunks referenced, {} chunks checked ({} bytes), "
      "{} unreferenced: {} corrupt, {} missing\n",
      data_dir, report.scopes, report.files, report.referenced_chunks, report.checked_chunks,
      report.checked_bytes, report.unreferenced, report.corrupt, report.missing);
  return report;
}

}  // namespace traincache::cli
