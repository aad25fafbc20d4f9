// The disk chunk store: one file per chunk.
//
//   <root>/LOCK                               flock'd while a store has the root open
//   <root>/tmp/                               temp files and scopes being deleted
//   <root>/<kind>/<id>/<hh>/<hh>/<64 hex>     chunk files (hh: id bytes 0 and 1)
//
// Durability: a chunk is written to a fresh temp file, fsync'd, renamed into
// its shard directory and the shard directory fsync'd before Put returns, so a
// chunk file either is absent or holds the whole chunk, and an acknowledged
// Put survives a crash. Whatever a crash leaves in tmp/ is removed at open.
//
// The block-aligned part of a chunk is written with O_DIRECT, the tail (if
// any) through the page cache. A page-cache write followed at once by fsync
// costs far more CPU than the copy it is (measured on the dev VM: 2.7 s of
// system time per GiB written in 4 MiB write+fsync steps, 0.16 s with
// O_DIRECT), and the server reads a chunk back rarely (nodes keep their own
// tier). Where the file system refuses O_DIRECT (EINVAL), every write goes
// through the page cache from then on.
//
// Concurrency: the store keeps no state besides the root, so there is no lock.
// Concurrent Puts of one chunk each write their own temp file and rename it
// over the other's (the same bytes); concurrent creation of a shard directory
// is settled by mkdir's EEXIST.
//
// Every system call is in the "OS access" section below, which is also the
// one place errno becomes a status: ENOSPC/EDQUOT -> RESOURCE_EXHAUSTED with
// ENOSPC payload, ENOENT -> NOT_FOUND with ENOENT payload, anything else ->
// INTERNAL naming the operation, the path and the error text.

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/aligned_buffer.h"
#include "traincache/chunk_store.h"
#include "traincache/status.h"

namespace traincache {
namespace {

// ---------------------------------------------------------------------------
// OS access.

absl::Status OsError(std::string_view op, std::string_view path, int err) {
  std::string message = fmt::format("{} {}: {}", op, path, std::system_category().message(err));
  if (err == ENOSPC || err == EDQUOT) return PosixError(ENOSPC, message);
  if (err == ENOENT) return PosixError(ENOENT, message);
  return absl::InternalError(message);
}

// Owns a file descriptor; closes it (ignoring errors) unless Close() was
// called. Only read-only and directory descriptors rely on the destructor:
// a written file is closed with Close() so its error is seen.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    Reset();
    fd_ = std::exchange(other.fd_, -1);
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }

  absl::Status Close(std::string_view path) {
    int fd = std::exchange(fd_, -1);
    // Linux releases the descriptor even when close fails; never retry.
    if (::close(fd) != 0) return OsError("close", path, errno);
    return absl::OkStatus();
  }

 private:
  void Reset() {
    if (fd_ >= 0) IGNORE_ERROR(::close(fd_));
    fd_ = -1;
  }
  int fd_ = -1;
};

absl::StatusOr<UniqueFd> OpenForRead(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return OsError("open", path, errno);
  return UniqueFd(fd);
}

absl::StatusOr<struct stat> StatFd(int fd, std::string_view path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return OsError("fstat", path, errno);
  return st;
}

absl::StatusOr<struct stat> StatPath(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return OsError("stat", path, errno);
  return st;
}

// Reads up to `n` bytes at offset 0 into `buf`; fewer only at end of file.
absl::StatusOr<size_t> ReadFull(int fd, std::string_view path, char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd, buf + done, n - done, static_cast<off_t>(done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return OsError("read", path, errno);
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

// Writes `data` at `offset`.
absl::Status WriteFull(int fd, std::string_view path, std::string_view data, uint64_t offset = 0) {
  while (!data.empty()) {
    ssize_t put = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (put < 0) {
      if (errno == EINTR) continue;
      return OsError("write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(put));
    offset += static_cast<uint64_t>(put);
  }
  return absl::OkStatus();
}

// Offset, length and memory alignment of O_DIRECT writes: the largest
// logical block size in common use, so that any disk takes it.
constexpr size_t kDirectAlign = 4096;

// Writes the block-aligned prefix of `data` at offset 0 of the (new, empty)
// file `path` through an O_DIRECT descriptor of its own, from a bounce
// buffer. Returns how many bytes it wrote: 0 if the file system refuses
// O_DIRECT (EINVAL), less than the prefix only after an odd short write; the
// caller writes the rest through the page cache.
absl::StatusOr<size_t> WriteDirectPrefix(const std::string& path, std::string_view data) {
  const size_t aligned = data.size() / kDirectAlign * kDirectAlign;
  if (aligned == 0) return 0;
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == EINVAL) return 0;
    return OsError("open", path, errno);
  }
  UniqueFd file(fd);
  char* bounce = ThreadAlignedBuffer(aligned, kDirectAlign);
  if (bounce == nullptr) return 0;  // No memory for it: written buffered.
  std::memcpy(bounce, data.data(), aligned);
  size_t done = 0;
  while (done < aligned) {
    ssize_t put =
        ::pwrite(file.get(), bounce + done, aligned - done, static_cast<off_t>(done));
    if (put < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL) break;  // Refused after all: the rest goes buffered.
      return OsError("write", path, errno);
    }
    done += static_cast<size_t>(put);
    if (put == 0 || done % kDirectAlign != 0) break;  // Odd; the rest goes buffered.
  }
  RETURN_IF_ERROR(file.Close(path));
  return done;
}

absl::Status Fsync(int fd, std::string_view path) {
  if (::fsync(fd) != 0) return OsError("fsync", path, errno);
  return absl::OkStatus();
}

// Makes the entries of directory `path` durable.
absl::Status SyncDir(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return OsError("open directory", path, errno);
  UniqueFd dir(fd);
  RETURN_IF_ERROR(Fsync(dir.get(), path));
  return absl::OkStatus();
}

// Creates directory `path`. Returns true if this call created it, false if it
// already existed as a directory.
absl::StatusOr<bool> MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return true;
  int err = errno;
  if (err == EEXIST) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return false;
    return absl::InternalError(fmt::format("mkdir {}: exists and is not a directory", path));
  }
  return OsError("mkdir", path, err);
}

absl::Status Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    int err = errno;  // Before fmt::format, which may allocate and touch errno.
    return OsError("rename", fmt::format("{} to {}", from, to), err);
  }
  return absl::OkStatus();
}

absl::Status Unlink(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return OsError("unlink", path, errno);
  return absl::OkStatus();
}

// Sets the file's mtime to now.
absl::Status Touch(const std::string& path) {
  if (::utimensat(AT_FDCWD, path.c_str(), nullptr, AT_SYMLINK_NOFOLLOW) != 0) {
    return OsError("utimensat", path, errno);
  }
  return absl::OkStatus();
}

// A new, uniquely named, empty file `<dir>/<prefix>.XXXXXX` open for writing.
struct TempFile {
  UniqueFd fd;
  std::string path;
};

absl::StatusOr<TempFile> CreateTempFile(const std::string& dir, std::string_view prefix) {
  std::string name = fmt::format("{}/{}.XXXXXX", dir, prefix);
  int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return OsError("create temp file", name, errno);
  return TempFile{UniqueFd(fd), std::move(name)};
}

// A new, uniquely named, empty directory `<dir>/<prefix>.XXXXXX`.
absl::StatusOr<std::string> CreateTempDir(const std::string& dir, std::string_view prefix) {
  std::string name = fmt::format("{}/{}.XXXXXX", dir, prefix);
  if (::mkdtemp(name.data()) == nullptr) return OsError("create temp directory", name, errno);
  return name;
}

struct DirEntryName {
  std::string name;
  bool is_dir = false;
  bool is_reg = false;
};

// The entries of directory `path` except "." and "..".
absl::StatusOr<std::vector<DirEntryName>> ReadDir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return OsError("opendir", path, errno);
  std::unique_ptr<DIR, int (*)(DIR*)> closer(dir, &::closedir);
  std::vector<DirEntryName> entries;
  while (true) {
    errno = 0;
    struct dirent* ent = ::readdir(dir);
    if (ent == nullptr) {
      if (errno != 0) return OsError("readdir", path, errno);
      break;
    }
    std::string_view name = ent->d_name;
    if (name == "." || name == "..") continue;
    DirEntryName entry{std::string(name), ent->d_type == DT_DIR, ent->d_type == DT_REG};
    if (ent->d_type == DT_UNKNOWN) {
      // Some file systems do not fill d_type.
      struct stat st;
      if (::fstatat(::dirfd(dir), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        int err = errno;
        if (err == ENOENT) continue;  // Removed since readdir saw it.
        return OsError("stat", fmt::format("{}/{}", path, name), err);
      }
      entry.is_dir = S_ISDIR(st.st_mode);
      entry.is_reg = S_ISREG(st.st_mode);
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

// Removes `path` and, if it is a directory, everything below it. Returns how
// many non-directories were removed. NOT_FOUND if `path` does not exist.
absl::StatusOr<uint64_t> RemoveTree(const std::string& path) {
  ASSIGN_OR_RETURN(struct stat st, StatPath(path));
  if (!S_ISDIR(st.st_mode)) {
    RETURN_IF_ERROR(Unlink(path));
    return 1;
  }
  uint64_t removed = 0;
  ASSIGN_OR_RETURN(std::vector<DirEntryName> entries, ReadDir(path));
  for (const DirEntryName& entry : entries) {
    absl::StatusOr<uint64_t> n = RemoveTree(fmt::format("{}/{}", path, entry.name));
    if (absl::IsNotFound(n.status())) continue;  // Removed by someone else.
    if (!n.ok()) return n.status();
    removed += *n;
  }
  if (::rmdir(path.c_str()) != 0) return OsError("rmdir", path, errno);
  return removed;
}

// Creates `path` and its missing parents (mkdir -p), syncing the parent of
// every directory it creates.
absl::Status MakeDirs(const std::string& path) {
  for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
    std::string prefix = path.substr(0, pos);
    ASSIGN_OR_RETURN(bool created, MakeDir(prefix));
    if (created) {
      size_t slash = prefix.rfind('/');
      std::string parent = slash == std::string::npos ? "."
                           : slash == 0               ? "/"
                                                      : prefix.substr(0, slash);
      RETURN_IF_ERROR(SyncDir(parent));
    }
    if (pos == std::string::npos) break;
  }
  return absl::OkStatus();
}

// Takes an exclusive advisory lock on `path` (created if needed) for as long as
// the returned descriptor stays open.
absl::StatusOr<UniqueFd> LockFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return OsError("open", path, errno);
  UniqueFd lock(fd);
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::InternalError(
          fmt::format("lock {}: the chunk store is open in another process or store", path));
    }
    return OsError("flock", path, errno);
  }
  return lock;
}

// ---------------------------------------------------------------------------
// The store.

// Unlinks a temp file when it goes out of scope, unless Release()d (after
// the rename that moved it into place). Cleanup on every error path without
// writing it on every error path.
class TempFileRemover {
 public:
  explicit TempFileRemover(std::string path) : path_(std::move(path)) {}
  TempFileRemover(const TempFileRemover&) = delete;
  TempFileRemover& operator=(const TempFileRemover&) = delete;
  ~TempFileRemover() {
    if (path_.empty()) return;
    absl::Status status = Unlink(path_);
    if (!status.ok()) {
      // Not fatal: open removes every leftover temp file.
      spdlog::warn("chunk store: cannot remove temp file: {}", status.ToString());
    }
  }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

class DiskChunkStore final : public ChunkStore {
 public:
  DiskChunkStore(std::string root, UniqueFd lock)
      : root_(std::move(root)), tmp_dir_(root_ + "/tmp"), lock_(std::move(lock)) {}

  absl::Status Put(const Scope& scope, const ChunkId& id, std::string_view data) override {
    RETURN_IF_ERROR(ValidateChunkBytes(scope, id, data));
    const std::string hex = id.ToHex();
    const std::string dir = ShardDir(scope, hex);
    const std::string path = fmt::format("{}/{}", dir, hex);

    absl::StatusOr<struct stat> existing = StatPath(path);
    if (existing.ok() && S_ISREG(existing->st_mode) &&
        static_cast<uint64_t>(existing->st_size) == data.size() &&
        !StoredBytesDiffer(scope, hex, path, data)) {
      // Already stored. Refresh the mtime so the sweep's grace period counts
      // from this upload, whose commit may follow. Sync the directory: the
      // file may have been renamed in by a concurrent Put that has not synced
      // it yet, and our caller may commit as soon as we return.
      absl::Status touched = Touch(path);
      if (touched.ok()) {
        RETURN_IF_ERROR(SyncDir(dir));
        return EnsureDirChainDurable(dir);
      }
      if (!absl::IsNotFound(touched)) return touched;
      // Deleted meanwhile: store it again below.
    } else if (existing.ok()) {
      spdlog::warn(
          "chunk {} of {}: {} is not the chunk's file (mode {:o}, size {}, want a "
          "regular file of {} bytes); replacing it",
          hex, scope.ToString(), path, existing->st_mode, existing->st_size, data.size());
    } else if (!absl::IsNotFound(existing.status())) {
      return existing.status();
    }

    ASSIGN_OR_RETURN(TempFile tmp, CreateTempFile(tmp_dir_, hex));
    TempFileRemover remover(tmp.path);
    size_t direct = 0;
    if (direct_writes_.load(std::memory_order_relaxed)) {
      ASSIGN_OR_RETURN(direct, WriteDirectPrefix(tmp.path, data));
      if (direct == 0 && data.size() >= kDirectAlign) DirectRefused();
    }
    RETURN_IF_ERROR(WriteFull(tmp.fd.get(), tmp.path, data.substr(direct), direct));
    RETURN_IF_ERROR(Fsync(tmp.fd.get(), tmp.path));
    RETURN_IF_ERROR(tmp.fd.Close(tmp.path));

    absl::Status renamed = Rename(tmp.path, path);
    // ENOENT: a shard directory is missing (new shard, or a concurrent
    // DeleteScope removed it). Create and retry; a few rounds are enough.
    for (int attempt = 0; absl::IsNotFound(renamed) && attempt < 3; ++attempt) {
      absl::Status made = MakeShardDirs(scope, hex);
      if (!made.ok() && !absl::IsNotFound(made)) return made;
      renamed = Rename(tmp.path, path);
    }
    if (absl::IsNotFound(renamed)) {
      // Never NOT_FOUND from Put: that would read as "no such chunk".
      return absl::InternalError(
          fmt::format("{} (shard directories kept disappearing; is the scope being deleted?)",
                      std::string(renamed.message())));
    }
    RETURN_IF_ERROR(renamed);
    remover.Release();
    RETURN_IF_ERROR(SyncDir(dir));
    return EnsureDirChainDurable(dir);
  }

  absl::StatusOr<std::string> Get(const Scope& scope, const ChunkId& id, uint64_t offset,
                                  uint64_t length) override {
    ASSIGN_OR_RETURN(std::string buf, ReadWhole(scope, id, /*verify=*/true));
    ASSIGN_OR_RETURN(uint64_t n, ChunkSliceLength(scope, id, buf.size(), offset, length));
    if (offset == 0 && n == buf.size()) return buf;
    return buf.substr(offset, n);
  }

  absl::StatusOr<std::string> GetUnverified(const Scope& scope, const ChunkId& id) override {
    return ReadWhole(scope, id, /*verify=*/false);
  }

  absl::StatusOr<uint64_t> Stat(const Scope& scope, const ChunkId& id) override {
    const std::string hex = id.ToHex();
    const std::string path = ChunkPath(scope, hex);
    absl::StatusOr<struct stat> st = StatPath(path);
    if (absl::IsNotFound(st.status())) return NotFound(scope, hex);
    if (!st.ok()) return st.status();
    if (!S_ISREG(st->st_mode)) {
      return absl::InternalError(fmt::format("{} is not a regular file", path));
    }
    return static_cast<uint64_t>(st->st_size);
  }

  absl::Status Delete(const Scope& scope, const ChunkId& id) override {
    // Not synced: a delete undone by a crash leaves an unreferenced chunk,
    // which the collector's sweep removes again.
    absl::Status status = Unlink(ChunkPath(scope, id.ToHex()));
    if (absl::IsNotFound(status)) return absl::OkStatus();
    return status;
  }

  absl::Status DeleteScope(const Scope& scope) override {
    // Move the scope's tree into tmp/ (one rename, synced) and remove it
    // there: the scope is gone at once and for good, even if a crash
    // interrupts the removal, whose leftovers open cleans up. Renaming onto
    // a fresh empty directory makes the name unique.
    const std::string kind_dir = fmt::format("{}/{}", root_, scope.kind_name());
    const std::string scope_dir = fmt::format("{}/{}", kind_dir, scope.id());
    {
      // Its shard directories go away: a Put that makes them again must sync
      // their chain again.
      absl::MutexLock lock(&durable_mu_);
      absl::erase_if(durable_dirs_, [&](const std::string& d) {
        return d.rfind(scope_dir + "/", 0) == 0;
      });
    }
    ASSIGN_OR_RETURN(
        std::string grave,
        CreateTempDir(tmp_dir_, fmt::format("deleted-{}-{}", scope.kind_name(), scope.id())));
    absl::Status moved = Rename(scope_dir, grave);
    if (!moved.ok()) {
      IGNORE_ERROR(RemoveTree(grave));  // Empty; open would remove it anyway.
      if (absl::IsNotFound(moved)) return absl::OkStatus();
      return moved;
    }
    RETURN_IF_ERROR(SyncDir(kind_dir));
    absl::StatusOr<uint64_t> removed = RemoveTree(grave);
    if (!removed.ok()) {
      spdlog::error(
          "chunk store: {} is deleted but its files are not all removed ({}); "
          "they are removed at the next open",
          scope.ToString(), removed.status().ToString());
      return removed.status();
    }
    spdlog::info("chunk store: deleted {} ({} chunks)", scope.ToString(), *removed);
    return absl::OkStatus();
  }

  absl::Status List(const Scope& scope,
                    const std::function<absl::Status(const ChunkInfo&)>& fn) override {
    const std::string scope_dir = fmt::format("{}/{}/{}", root_, scope.kind_name(), scope.id());
    absl::StatusOr<std::vector<DirEntryName>> level1 = ReadDir(scope_dir);
    if (absl::IsNotFound(level1.status())) return absl::OkStatus();  // No chunks.
    if (!level1.ok()) return level1.status();
    for (const DirEntryName& d1 : *level1) {
      const std::string dir1 = fmt::format("{}/{}", scope_dir, d1.name);
      if (!IsShardName(d1)) {
        spdlog::warn("chunk store: {}: skipping {}, not a shard directory", scope.ToString(), dir1);
        continue;
      }
      absl::StatusOr<std::vector<DirEntryName>> level2 = ReadDir(dir1);
      if (absl::IsNotFound(level2.status())) continue;  // Concurrent DeleteScope.
      if (!level2.ok()) return level2.status();
      for (const DirEntryName& d2 : *level2) {
        const std::string dir2 = fmt::format("{}/{}", dir1, d2.name);
        if (!IsShardName(d2)) {
          spdlog::warn("chunk store: {}: skipping {}, not a shard directory", scope.ToString(),
                       dir2);
          continue;
        }
        absl::StatusOr<std::vector<DirEntryName>> files = ReadDir(dir2);
        if (absl::IsNotFound(files.status())) continue;
        if (!files.ok()) return files.status();
        const std::string prefix = d1.name + d2.name;
        for (const DirEntryName& f : *files) {
          const std::string path = fmt::format("{}/{}", dir2, f.name);
          absl::StatusOr<ChunkId> id = ChunkId::FromHex(f.name);
          if (!f.is_reg || !id.ok() || !IsLowerHex(f.name) || f.name.compare(0, 4, prefix) != 0) {
            spdlog::warn("chunk store: {}: skipping {}, not a chunk file", scope.ToString(), path);
            continue;
          }
          absl::StatusOr<struct stat> st = StatPath(path);
          if (absl::IsNotFound(st.status())) continue;  // Deleted since readdir.
          if (!st.ok()) return st.status();
          ChunkInfo info{*id, static_cast<uint64_t>(st->st_size),
                         Timespec{st->st_mtim.tv_sec, static_cast<uint32_t>(st->st_mtim.tv_nsec)}};
          RETURN_IF_ERROR(fn(info));
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  // The chunk file's bytes; with `verify`, checked against `id` first (a
  // mismatch is DATA_LOSS and the file is quarantined). Without, only the
  // size is checked: the caller hashes.
  absl::StatusOr<std::string> ReadWhole(const Scope& scope, const ChunkId& id, bool verify) {
    const std::string hex = id.ToHex();
    const std::string path = ChunkPath(scope, hex);
    absl::StatusOr<UniqueFd> fd = OpenForRead(path);
    if (absl::IsNotFound(fd.status())) return NotFound(scope, hex);
    if (!fd.ok()) return fd.status();
    ASSIGN_OR_RETURN(struct stat st, StatFd(fd->get(), path));
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (!S_ISREG(st.st_mode) || size > kMaxChunkSize) {
      return DataLoss(scope, hex, path, fmt::format("not a chunk file (size {})", size));
    }

    // One read straight into the string that is returned: for a whole-chunk
    // Get the bytes are never copied again (resize's zero fill is the only
    // extra pass, ~10x cheaper than the hash).
    std::string buf;
    buf.resize(size);
    ASSIGN_OR_RETURN(size_t got, ReadFull(fd->get(), path, buf.data(), size));
    if (got != size) {
      return DataLoss(scope, hex, path, fmt::format("read {} of {} bytes", got, size));
    }
    // Verify before any range check: a truncated chunk is corrupt, not a bad
    // request.
    if (verify && ChunkId::Of(buf) != id) {
      Quarantine(scope, hex, path);
      return DataLoss(scope, hex, path, "content does not match its id");
    }
    return buf;
  }

  // Whether the file of chunk `hex` holds other bytes than `data` (verified
  // against the id by Put): a Put of a chunk that is already stored must not
  // trust a file that rotted on disk, or a re-upload could never heal it.
  // Comparing costs a read of the file (rare: nodes ask HasChunks first and
  // upload only what is missing) and no hash. A file that differs is
  // quarantined and Put writes the chunk anew; a file that cannot be read is
  // treated the same way (Put then fails or succeeds on its own writes).
  bool StoredBytesDiffer(const Scope& scope, std::string_view hex, const std::string& path,
                         std::string_view data) {
    absl::StatusOr<UniqueFd> fd = OpenForRead(path);
    if (!fd.ok()) return !absl::IsNotFound(fd.status());  // Deleted meanwhile: Put stores it.
    std::string buf(data.size(), '\0');
    absl::StatusOr<size_t> got = ReadFull(fd->get(), path, buf.data(), buf.size());
    if (got.ok() && *got == data.size() && buf == data) return false;
    spdlog::error(
        "chunk store: chunk {} of {}: {} does not hold the chunk's bytes ({}); "
        "storing the uploaded copy",
        hex, scope.ToString(), path, got.ok() ? "content differs" : got.status().ToString());
    Quarantine(scope, hex, path);
    return true;
  }

  static bool IsShardName(const DirEntryName& entry) {
    return entry.is_dir && entry.name.size() == 2 && IsLowerHex(entry.name);
  }

  std::string ShardDir(const Scope& scope, std::string_view hex) const {
    return fmt::format("{}/{}/{}/{}/{}", root_, scope.kind_name(), scope.id(), hex.substr(0, 2),
                       hex.substr(2, 2));
  }

  std::string ChunkPath(const Scope& scope, std::string_view hex) const {
    return fmt::format("{}/{}", ShardDir(scope, hex), hex);
  }

  // Creates the directories on the way to the chunk's shard.
  absl::Status MakeShardDirs(const Scope& scope, std::string_view hex) const {
    const std::string levels[] = {
        fmt::format("{}/{}", root_, scope.kind_name()),
        fmt::format("{}/{}/{}", root_, scope.kind_name(), scope.id()),
        fmt::format("{}/{}/{}/{}", root_, scope.kind_name(), scope.id(), hex.substr(0, 2)),
        ShardDir(scope, hex),
    };
    std::string parent = root_;
    for (const std::string& dir : levels) {
      RETURN_IF_ERROR(MakeDir(dir).status());  // OK if it exists.
      // Sync the parent whether this call created `dir` or found it: a
      // concurrent Put may have created it and not synced its parent yet, and
      // our chunk must not depend on that Put's progress. This path only runs
      // when a shard is new, so the extra syncs are rare.
      RETURN_IF_ERROR(SyncDir(parent));
      parent = dir;
    }
    return absl::OkStatus();
  }

  // Moves a corrupt chunk file out of the way so that HasChunks reports it
  // missing and the next upload of those bytes heals it; the file is kept in
  // <root>/quarantine for an operator (and fsck) to look at.
  void Quarantine(const Scope& scope, std::string_view hex, const std::string& path) {
    std::string dest = fmt::format("{}/quarantine/{}-{}-{}", root_, scope.kind_name(), scope.id(),
                                   hex);
    absl::Status moved = MakeDir(root_ + "/quarantine").status();
    if (moved.ok()) moved = Rename(path, dest);
    if (moved.ok()) {
      spdlog::error("chunk store: moved corrupt chunk {} of {} to {}", hex, scope.ToString(), dest);
    } else {
      spdlog::error("chunk store: cannot quarantine corrupt chunk {}: {}", path, moved.ToString());
    }
  }

  static absl::Status NotFound(const Scope& scope, std::string_view hex) {
    return absl::NotFoundError(fmt::format("chunk {} of {} not found", hex, scope.ToString()));
  }

  static absl::Status DataLoss(const Scope& scope, std::string_view hex, std::string_view path,
                               std::string_view what) {
    std::string message =
        fmt::format("chunk {} of {} is corrupt: {}: {}", hex, scope.ToString(), path, what);
    spdlog::error("chunk store: {}", message);
    return absl::DataLossError(message);
  }

  // A chunk is durable only if every directory on its path is. The Put that
  // created a shard directory syncs its parents, but a concurrent Put may
  // rename into the new directory and return before that: so the first Put
  // into each shard directory (per process) syncs the whole chain up to the
  // root itself. Afterwards the directory is known durable.
  absl::Status EnsureDirChainDurable(const std::string& dir) {
    {
      absl::MutexLock lock(&durable_mu_);
      if (durable_dirs_.contains(dir)) return absl::OkStatus();
    }
    for (std::string p = dir; p.size() > root_.size();) {
      p = p.substr(0, p.rfind('/'));
      RETURN_IF_ERROR(SyncDir(p));
    }
    absl::MutexLock lock(&durable_mu_);
    durable_dirs_.insert(dir);
    return absl::OkStatus();
  }

  // The file system refused O_DIRECT: page-cache writes from now on.
  void DirectRefused() {
    // IGNORE_ERROR: buffered writes do the same job, only at a higher cost.
    if (direct_writes_.exchange(false)) {
      spdlog::warn("chunk store {}: the file system refuses O_DIRECT; writing through the page "
                   "cache",
                   root_);
    }
  }

  const std::string root_;
  const std::string tmp_dir_;
  UniqueFd lock_;  // Held for the store's lifetime; see LockFile.
  std::atomic<bool> direct_writes_{true};  // Off once the file system refused O_DIRECT.
  absl::Mutex durable_mu_;
  absl::flat_hash_set<std::string> durable_dirs_ ABSL_GUARDED_BY(durable_mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<ChunkStore>> OpenDiskChunkStore(const std::string& root_arg) {
  std::string root = root_arg;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (root.empty()) return absl::InvalidArgumentError("chunk store root is empty");

  RETURN_IF_ERROR(MakeDirs(root));
  // Only one store may use a root: each removes the other's temp files at open.
  ASSIGN_OR_RETURN(UniqueFd lock, LockFile(root + "/LOCK"));

  // Whatever is in tmp/ belongs to no live Put or DeleteScope (we hold the
  // lock): temp files of interrupted Puts, trees of interrupted DeleteScopes.
  const std::string tmp_dir = root + "/tmp";
  absl::StatusOr<std::vector<DirEntryName>> leftovers = ReadDir(tmp_dir);
  if (leftovers.ok()) {
    uint64_t removed = 0;
    for (const DirEntryName& entry : *leftovers) {
      absl::StatusOr<uint64_t> n = RemoveTree(fmt::format("{}/{}", tmp_dir, entry.name));
      if (!n.ok() && !absl::IsNotFound(n.status())) return n.status();
      removed += n.value_or(0);
    }
    if (removed > 0) {
      spdlog::info("chunk store {}: removed {} leftover temp files", root, removed);
    }
  } else if (absl::IsNotFound(leftovers.status())) {
    RETURN_IF_ERROR(MakeDir(tmp_dir).status());
    RETURN_IF_ERROR(SyncDir(root));
  } else {
    return leftovers.status();
  }
  return std::make_unique<DiskChunkStore>(std::move(root), std::move(lock));
}

}  // namespace traincache
