#include "node/filesystem.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "traincache/status.h"

namespace traincache::node {
namespace {

// The server's bound on a file's chunk count (metadata_store.h: 2^21); a
// write past it is EFBIG here rather than at the commit.
constexpr uint64_t kMaxFileChunks = uint64_t{1} << 21;
constexpr uint32_t kStatFsBlock = 4096;
// ESTALE answered by re-committing at most this often before giving up.
constexpr int kMaxCommitAttempts = 8;
// Extended-attribute names remembered absent per inode.
constexpr size_t kMaxAbsentXattrs = 8;

bool AllZero(const std::string& s) {
  return s.empty() || (s[0] == 0 && std::memcmp(s.data(), s.data() + 1, s.size() - 1) == 0);
}

// Same bytes: the commit that was based on `a` may be based on `b` instead.
bool SameContent(const ChunkMap& a, const ChunkMap& b) {
  if (a.size != b.size) return false;
  return a.size == 0 || (a.chunk_size == b.chunk_size && a.chunks == b.chunks);
}

bool HasNonSize(const SetAttrRequest& r) { return r.mode || r.uid || r.gid || r.atime || r.mtime; }

// An operation addressed by inode number found the inode gone on the server
// (another node unlinked or renamed over its last name): ESTALE, not ENOENT.
// The kernel answers ESTALE from open, stat, readlink, ... by looking the
// path up again (LOOKUP_REVAL), so a name this node still caches for the old
// inode resolves to what the name is now (a file replaced by rename on
// another node opens as the new file) instead of failing with ENOENT.
absl::Status StaleIfGone(absl::Status status, InodeId ino) {
  if (ErrnoOf(status) != ENOENT) return status;
  return PosixError(ESTALE, fmt::format("ino {} is gone: {}", ino, status.message()));
}

// Disjoint, non-touching byte ranges [start, end): the bytes written since
// the base version.
class RangeSet {
 public:
  void Add(uint64_t a, uint64_t b) {
    if (a >= b) return;
    auto it = ranges_.upper_bound(a);
    if (it != ranges_.begin() && std::prev(it)->second >= a) --it;
    while (it != ranges_.end() && it->first <= b) {
      a = std::min(a, it->first);
      b = std::max(b, it->second);
      it = ranges_.erase(it);
    }
    ranges_.emplace(a, b);
  }
  // Forgets everything at or past `size`.
  void ClipAt(uint64_t size) {
    auto it = ranges_.lower_bound(size);
    ranges_.erase(it, ranges_.end());
    if (!ranges_.empty() && ranges_.rbegin()->second > size) ranges_.rbegin()->second = size;
  }
  void Clear() { ranges_.clear(); }
  // The parts of [a, b) that are in the set, in order.
  std::vector<std::pair<uint64_t, uint64_t>> Pieces(uint64_t a, uint64_t b) const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    if (a >= b) return out;
    auto it = ranges_.upper_bound(a);
    if (it != ranges_.begin() && std::prev(it)->second > a) --it;
    for (; it != ranges_.end() && it->first < b; ++it) {
      out.emplace_back(std::max(a, it->first), std::min(b, it->second));
    }
    return out;
  }
  // The parts of [a, b) that are not.
  std::vector<std::pair<uint64_t, uint64_t>> Gaps(uint64_t a, uint64_t b) const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    uint64_t cur = a;
    for (auto [x, y] : Pieces(a, b)) {
      if (x > cur) out.emplace_back(cur, x);
      cur = y;
    }
    if (cur < b) out.emplace_back(cur, b);
    return out;
  }
  bool Overlaps(uint64_t a, uint64_t b) const { return !Pieces(a, b).empty(); }
  bool Covers(uint64_t a, uint64_t b) const { return a >= b || Gaps(a, b).empty(); }

 private:
  std::map<uint64_t, uint64_t> ranges_;
};

// --- staging journal ---
// <staging file>.journal says which bytes of the staging file are staged, so
// that a restarted daemon can commit what a crashed one had not (DESIGN.md:
// staged data survives a daemon crash). It is a sequence of records
//   [u32 payload length][u32 CRC-32 of payload][payload]
// in host byte order (only this machine reads it back). The first record is
// 'B' (the base chunk map plus the staged scalars); each later one is 'S'
// (the scalars after one staged change, plus the range it wrote, if any).
// Reading stops at the first short or bad record: a torn tail is ignored.
// Ordering keeps the journal from claiming bytes the staging file lacks: a
// write's data is pwritten before its record, a shrink's record is appended
// before the staging file is cut.
constexpr char kJournalBase = 'B';
constexpr char kJournalState = 'S';
constexpr std::string_view kJournalSuffix = ".journal";

uint32_t Crc32(std::string_view s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

template <typename T>
void Put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(v));
}

class JournalReader {
 public:
  explicit JournalReader(std::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T& v) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(&v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetBytes(size_t n, std::string_view& v) {
    if (in_.size() < n) return false;
    v = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

}  // namespace

// The staged content of one inode: `base` (a committed version) with the
// `written` ranges replaced by the staging file's bytes, bytes at or past
// `base_limit` (cut by a truncate) reading as zeros, `size` long.
struct Filesystem::WriteState {
  ChunkMap base;
  uint32_t chunk_size = kDefaultChunkSize;  // Layout of the staged content.
  uint64_t size = 0;
  uint64_t base_limit = 0;  // <= base.size: base bytes below it still show.
  RangeSet written;
  bool dirty = false;  // Something differs from `base`.
  // A commit lost a conflict: `base` is superseded by content this state
  // depends on, so no later commit can succeed either.
  bool conflicted = false;
  // A staged write failed for want of space (ENOSPC or EDQUOT, kept here):
  // what is staged is not what the writer meant, so no commit may publish
  // it (a half-written file). Every commit answers this errno until the last
  // writer closes and the changes are dropped; a truncate to 0 starts over.
  int lost_write = 0;
  // Staged by an earlier run that died before a close or fsync returned:
  // never acknowledged to its writer, so never published over a change
  // another node committed (and acknowledged) meanwhile (Commit).
  bool from_earlier_run = false;
  Timespec mtime;  // Of the last staged change.
  int fd = -1;     // The staging file, opened at the first staged change.
  std::string path;
  int journal_fd = -1;  // Its journal (path + ".journal"), opened with it.
  std::string journal_path;
  uint64_t journal_len = 0;  // Bytes of whole records in the journal.
  // Background uploads by chunk index (of the `chunk_size` layout). An entry
  // says: every byte of the chunk was written, and nothing changed the chunk
  // since its upload was queued (a change drops the entry first, DropUploads),
  // so the ticket's ref names exactly the chunk's staged bytes. Not in the
  // journal: a recovery hashes the staged bytes again (and the server's
  // HasChunks spares their upload).
  std::map<uint64_t, std::shared_ptr<ChunkUploader::Ticket>> uploads;
  // Closes removed staging files (CloseFiles); nullptr: inline.
  ThreadPool* janitor = nullptr;

  WriteState(ChunkMap map, uint32_t default_chunk_size) {
    Reset(std::move(map), default_chunk_size);
  }
  // Only when the Filesystem goes away with changes not committed (a daemon
  // stopping while the server is unreachable): the files are kept, like after
  // a crash, and the next Init commits them. Everything else that drops a
  // write state removes its files first (DropWriteState, Reset).
  ~WriteState() {
    DropUploads(0, UINT64_MAX);
    CloseFiles(/*remove=*/!dirty || conflicted || lost_write != 0);
  }

  // Forgets (and cancels, if not started) the background uploads of chunks
  // [first, last): their bytes are about to change. Returns how many.
  uint64_t DropUploads(uint64_t first, uint64_t last) {
    uint64_t n = 0;
    auto it = uploads.lower_bound(first);
    while (it != uploads.end() && it->first < last) {
      it->second->Cancel();
      it = uploads.erase(it);
      ++n;
    }
    return n;
  }

  // Starts over on `map`: nothing staged.
  void Reset(ChunkMap map, uint32_t default_chunk_size) {
    DropUploads(0, UINT64_MAX);
    base = std::move(map);
    chunk_size = base.size == 0 ? default_chunk_size : base.chunk_size;
    size = base.size;
    base_limit = base.size;
    written.Clear();
    dirty = false;
    conflicted = false;
    lost_write = 0;
    RemoveFile();
  }
  void RemoveFile() { CloseFiles(/*remove=*/true); }
  void CloseFiles(bool remove) {
    if (fd < 0 && journal_fd < 0) return;
    if (remove) {
      // The journal first: a staging file without one is never read back.
      // Both names go now (a new staging file of the inode may take them at
      // once); the data file's pages are freed when its last descriptor
      // closes, which `janitor` does off the caller's thread: for a
      // multi-GiB checkpoint that is most of a second a close need not wait.
      for (const std::string* p : {&journal_path, &path}) {
        if (unlink(p->c_str()) != 0 && errno != ENOENT) {
          spdlog::warn("staging file {} not removed: {}", *p, std::strerror(errno));
        }
      }
    }
    if (journal_fd >= 0) close(journal_fd);
    if (fd >= 0) {
      if (remove && janitor != nullptr) {
        janitor->Submit([f = fd] { close(f); });
      } else {
        close(fd);
      }
    }
    fd = journal_fd = -1;
    journal_len = 0;
  }
  struct Scalars {
    uint32_t chunk_size;
    uint64_t size, base_limit;
    Timespec mtime;
  };
  Scalars GetScalars() const { return {chunk_size, size, base_limit, mtime}; }
  void SetScalars(const Scalars& v) {
    chunk_size = v.chunk_size;
    size = v.size;
    base_limit = v.base_limit;
    mtime = v.mtime;
  }
  // The scalars of the staged view (what a journal record carries).
  void PutState(std::string& out) const {
    Put<uint32_t>(out, chunk_size);
    Put<uint64_t>(out, size);
    Put<uint64_t>(out, base_limit);
    Put<int64_t>(out, mtime.sec);
    Put<uint32_t>(out, mtime.nsec);
  }
  bool GetState(JournalReader& r) {
    return r.Get(chunk_size) && r.Get(size) && r.Get(base_limit) && r.Get(mtime.sec) &&
           r.Get(mtime.nsec);
  }
  // Appends one record; on failure the journal is cut back to whole records.
  absl::Status AppendJournal(char type, const std::string& body) {
    std::string payload(1, type);
    payload += body;
    std::string rec;
    Put<uint32_t>(rec, static_cast<uint32_t>(payload.size()));
    Put<uint32_t>(rec, Crc32(payload));
    rec += payload;
    size_t done = 0;
    while (done < rec.size()) {
      ssize_t w = write(journal_fd, rec.data() + done, rec.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        const int err = errno;
        if (ftruncate(journal_fd, static_cast<off_t>(journal_len)) != 0) {
          spdlog::warn("journal {} not cut back: {}", journal_path, std::strerror(errno));
        }
        return ErrnoStatus(err, fmt::format("write to staging journal {}", journal_path));
      }
      done += static_cast<size_t>(w);
    }
    journal_len += rec.size();
    return absl::OkStatus();
  }
  // A state record after a change that wrote [a, b) (none if a == b).
  absl::Status JournalChange(uint64_t a, uint64_t b) {
    std::string body;
    Put<uint64_t>(body, a);
    Put<uint64_t>(body, b);
    PutState(body);
    return AppendJournal(kJournalState, body);
  }
  // The staged bytes do not depend on the base's: every base byte that would
  // still show was overwritten (or none would: truncated to 0).
  bool IndependentOfBase() const { return written.Covers(0, std::min(base_limit, size)); }
};

struct Filesystem::Inode {
  explicit Inode(InodeId i) : ino(i) {}
  const InodeId ino;

  // Guarded by Filesystem::mu_.
  uint64_t nlookup = 0;
  uint32_t open_handles = 0;  // Open handles, plus opens in progress.
  bool orphaned = false;      // Unlinked while open: ReleaseInode at last close.
  std::optional<InodeAttr> attr;
  Clock::time_point attr_expiry;
  std::optional<uint64_t> staged_size;  // Shown instead of the server's while dirty.
  Timespec staged_mtime;
  // Extended attributes known absent, so that GetXattr answers ENODATA
  // without asking (the kernel asks for security.capability before every
  // write): none at all until `no_xattrs_until` (created here), and names
  // the server said were absent, each until its expiry. Both expire like
  // attrs and go with them (InvalidateAttr).
  Clock::time_point no_xattrs_until;
  std::vector<std::pair<std::string, Clock::time_point>> absent_xattrs;
  // Bumped by InvalidateAttr: an answer asked for before a change here is
  // not noted after it.
  uint64_t xattr_generation = 0;
  // The entries naming it that the kernel was handed (Filesystem::names_).
  std::vector<std::pair<InodeId, std::string>> names;

  absl::Mutex mu;                                      // Acquire before Filesystem::mu_.
  std::unique_ptr<WriteState> ws ABSL_GUARDED_BY(mu);  // While open for write or dirty.
  uint32_t writers ABSL_GUARDED_BY(mu) = 0;
  // The newest content this node committed, or learned under a lock
  // (RevalidateUnderLock): handles opened before it read it.
  std::shared_ptr<const ChunkMap> committed ABSL_GUARDED_BY(mu);
  // keep_cache: the version the kernel may hold pages of, and whether this
  // node changed the file since that open.
  std::optional<uint64_t> kernel_version ABSL_GUARDED_BY(mu);
  bool changed_since_open ABSL_GUARDED_BY(mu) = false;
  // The handle of an open told not to keep the cache: the kernel drops its
  // pages in that open's own path, after the reply. Until a request through
  // that handle shows the open returned, no other open is told to keep the
  // cache (it could read pages the first is about to drop). 0: none.
  std::atomic<uint64_t> unsettled_fh{0};
};

struct Filesystem::Handle {
  std::shared_ptr<Inode> inode;
  bool writable = false;
  bool append = false;
  std::shared_ptr<const ChunkMap> map;  // The content at open.
};

struct Filesystem::DirHandle {
  InodeId ino = 0;
  uint64_t ticket = 0;            // Taken before the listing was read.
  std::vector<DirEntry> entries;  // "." and ".." first.
};

Filesystem::Filesystem(Scope scope, ClusterClient* client, ChunkFetcher* fetcher, NodeTier* tier,
                       FilesystemOptions options)
    : scope_(std::move(scope)),
      client_(client),
      fetcher_(fetcher),
      tier_(tier),
      options_(std::move(options)),
      uploader_(std::make_unique<ChunkUploader>(
          scope_, client_,
          ChunkUploader::Options{.threads = options_.upload_threads,
                                 .budget_bytes = options_.upload_budget_bytes})),
      janitor_(std::make_unique<ThreadPool>(1)) {}

Filesystem::~Filesystem() = default;

std::unique_ptr<Filesystem::WriteState> Filesystem::NewWriteState(ChunkMap map) {
  auto ws = std::make_unique<WriteState>(std::move(map), options_.chunk_size);
  ws->janitor = janitor_.get();
  return ws;
}

absl::StatusOr<InodeAttr> Filesystem::Init() {
  const uint32_t cs = options_.chunk_size;
  if (cs < kMinChunkSize || cs > kMaxChunkSize || (cs & (cs - 1)) != 0) {
    return absl::InvalidArgumentError(fmt::format("chunk_size {} is not a power of two in [{}, {}]",
                                                  cs, kMinChunkSize, kMaxChunkSize));
  }
  if (options_.staging_dir.empty()) return absl::InvalidArgumentError("staging_dir is empty");
  const std::string dir = StagingDir();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return PosixError(ec.value(), fmt::format("staging dir {}: {}", dir, ec.message()));
  }
  ASSIGN_OR_RETURN(OpenScopeResult r, client_->OpenScope(scope_, options_.create_scope));
  generation_ = r.generation;
  {
    absl::MutexLock lock(&mu_);
    std::shared_ptr<Inode>& root = inodes_[kRootInode];
    if (!root) root = std::make_shared<Inode>(kRootInode);
    root->nlookup = std::max<uint64_t>(root->nlookup, 1);
    root->attr = r.root;
    root->attr_expiry = Clock::now() + options_.attr_ttl;
    next_fh_ = std::max<uint64_t>(next_fh_, options_.first_handle);
  }
  RecoverStaged(dir);
  return r.root;
}

void Filesystem::RecoverStaged(const std::string& dir) {
  std::error_code ec;
  std::vector<std::pair<InodeId, std::string>> found;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(kJournalSuffix)) continue;
    const std::string stem = name.substr(0, name.size() - kJournalSuffix.size());
    // Only "<ino>.journal": files moved aside for an operator do not parse.
    if (stem.empty() || stem.size() > 19 ||
        !std::all_of(stem.begin(), stem.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    found.emplace_back(std::stoull(stem), fmt::format("{}/{}", dir, stem));
  }
  if (ec) {
    spdlog::error("[{}] staging dir {} not scanned for uncommitted data: {}", scope_.ToString(),
                  dir, ec.message());
    return;
  }
  for (const auto& [ino, path] : found) {
    absl::Status s = RecoverInode(ino, path);
    if (!s.ok()) {
      spdlog::error(
          "[{}] ino {}: staged data of an earlier run not committed, left in {} and {}{} for an "
          "operator: {}",
          scope_.ToString(), ino, path, path, kJournalSuffix, s.ToString());
    }
  }
}

absl::Status Filesystem::RecoverInode(InodeId ino, const std::string& path) {
  const std::string journal_path = path + std::string(kJournalSuffix);
  std::string data;
  {
    int jfd = open(journal_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (jfd < 0) return ErrnoStatus(errno, fmt::format("staging journal {}", journal_path));
    char buf[1 << 16];
    for (;;) {
      ssize_t r = read(jfd, buf, sizeof(buf));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        const int err = errno;
        close(jfd);
        return ErrnoStatus(err, fmt::format("read of staging journal {}", journal_path));
      }
      if (r == 0) break;
      data.append(buf, static_cast<size_t>(r));
    }
    close(jfd);
  }

  // Replay the whole records; stop at the first torn or corrupt one.
  std::unique_ptr<WriteState> ws;
  uint64_t records = 0;
  JournalReader file(data);
  for (;;) {
    uint32_t len = 0, crc = 0;
    std::string_view payload;
    if (!file.Get(len) || !file.Get(crc) || !file.GetBytes(len, payload) || payload.empty() ||
        Crc32(payload) != crc) {
      break;
    }
    JournalReader r(payload.substr(1));
    bool ok = false;
    if (payload[0] == kJournalBase && !ws) {
      ChunkMap base;
      uint64_t n = 0;
      ok = r.Get(base.version) && r.Get(base.size) && r.Get(base.chunk_size) && r.Get(n) &&
           n <= kMaxFileChunks;
      for (uint64_t i = 0; ok && i < n; ++i) {
        uint8_t has = 0;
        ChunkRef ref;
        std::string_view id;
        ok = r.Get(has) && (!has || r.GetBytes(ChunkId::kSize, id)) && r.Get(ref.length);
        if (ok && has) {
          absl::StatusOr<ChunkId> cid = ChunkId::FromBytes(id);
          ok = cid.ok();
          if (ok) ref.id = *cid;
        }
        base.chunks.push_back(ref);
      }
      if (ok) {
        ws = NewWriteState(std::move(base));
        ok = ws->GetState(r);
      }
    } else if (payload[0] == kJournalState && ws) {
      uint64_t a = 0, b = 0;
      ok = r.Get(a) && r.Get(b) && ws->GetState(r);
      if (ok) {
        // As StageTruncate and Write did: a shrink forgets what is past the
        // end, a write adds its range.
        ws->written.ClipAt(ws->size);
        ws->written.Add(a, b);
        ws->dirty = true;
      }
    }
    if (!ok || !r.done()) break;
    ++records;
  }
  if (!ws || !ws->dirty) {
    // Nothing staged was ever recorded (the base record alone, or not even
    // that): nothing to commit.
    spdlog::info("[{}] ino {}: staging journal {} holds no staged change; removed",
                 scope_.ToString(), ino, journal_path);
    unlink(journal_path.c_str());
    unlink(path.c_str());
    return absl::OkStatus();
  }
  // Not O_TRUNC: these are the bytes the journal claims.
  ws->fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (ws->fd < 0) return ErrnoStatus(errno, fmt::format("staging file {}", path));
  ws->path = path;
  ws->journal_path = journal_path;

  // The same commit as a close's, conditional on the recorded base version,
  // but not rebased over another node's change: that change was
  // acknowledged, these bytes never were (the files stay for an operator).
  // The inode is not in the table (nothing of this run knows it yet), a
  // private entry carries it.
  ws->from_earlier_run = true;
  Inode inode(ino);
  absl::Status s;
  {
    absl::MutexLock lock(&inode.mu);
    s = Commit(inode, *ws);
  }
  if (!s.ok()) {
    ws->CloseFiles(/*remove=*/false);  // Left for an operator.
    return s;
  }
  // Commit reset the state, which removed both files.
  spdlog::info("[{}] ino {}: committed data staged by an earlier run ({} journal records)",
               scope_.ToString(), ino, records);
  return absl::OkStatus();
}

FilesystemStats Filesystem::Stats() const {
  const UploaderStats u = uploader_->Stats();
  absl::MutexLock lock(&mu_);
  FilesystemStats s = stats_;  // Its upload counts are the small chunks sent with commits.
  s.uploaded_chunks += u.uploaded_chunks;
  s.uploaded_bytes += u.uploaded_bytes;
  s.background_uploaded_chunks = u.background_uploaded_chunks;
  s.background_uploaded_bytes = u.background_uploaded_bytes;
  s.upload_peak_bytes = u.peak_held_bytes;
  return s;
}

// --- table helpers ---

std::shared_ptr<Filesystem::Inode> Filesystem::FindInode(InodeId ino) {
  absl::MutexLock lock(&mu_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second;
}

std::shared_ptr<Filesystem::Inode> Filesystem::GetOrAddInode(InodeId ino) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Inode>& slot = inodes_[ino];
  if (!slot) slot = std::make_shared<Inode>(ino);
  // Pinned as an open in progress, so a Forget cannot drop it meanwhile;
  // the caller ends the pin by registering a handle or with UnpinLocked.
  ++slot->open_handles;
  return slot;
}

void Filesystem::MaybeEraseLocked(InodeId ino) {
  auto it = inodes_.find(ino);
  if (it == inodes_.end() || ino == kRootInode) return;
  if (it->second->nlookup != 0 || it->second->open_handles != 0) return;
  // The kernel holds no entry of an inode it forgot.
  for (const auto& [parent, name] : it->second->names) {
    auto n = names_.find(NameKey{parent, name});
    if (n != names_.end() && n->second == ino) names_.erase(n);
  }
  inodes_.erase(it);
}

void Filesystem::Unpin(Inode& inode) {
  bool release = false;
  {
    absl::MutexLock lock(&mu_);
    --inode.open_handles;
    if (inode.open_handles == 0 && inode.orphaned) {
      inode.orphaned = false;
      release = true;
    }
    MaybeEraseLocked(inode.ino);
  }
  if (release) ReleaseOrphan(inode.ino);
}

void Filesystem::ReleaseOrphan(InodeId ino) {
  absl::Status s = client_->ReleaseInode(scope_, ino);
  if (!s.ok()) {
    spdlog::warn("[{}] ino {}: release of unlinked inode failed (the orphan sweep frees it): {}",
                 scope_.ToString(), ino, s.ToString());
  }
}

bool Filesystem::KeepsNewerLocked(const Inode& inode, const InodeAttr& attr) const {
  // Every change bumps the version: of two answers that cross (two creates
  // in one directory), the older never replaces the newer while it is
  // fresh. (Once expired, the server's answer wins whatever its version.)
  return inode.attr && inode.attr->version > attr.version && Clock::now() < inode.attr_expiry;
}

InodeAttr Filesystem::AddLookup(const InodeAttr& attr, uint64_t ticket, InodeId parent,
                                std::string_view name) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Inode>& slot = inodes_[attr.ino];
  if (!slot) slot = std::make_shared<Inode>(attr.ino);
  ++slot->nlookup;
  if (!KeepsNewerLocked(*slot, attr)) {
    slot->attr = attr;
    slot->attr_expiry = ExpiryLocked(ticket);
  }
  AddNameLocked(parent, name, attr.ino);
  InodeAttr out = *slot->attr;
  OverlayLocked(out);
  return out;
}

void Filesystem::CacheAttr(const InodeAttr& attr, uint64_t ticket) {
  absl::MutexLock lock(&mu_);
  auto it = inodes_.find(attr.ino);
  if (it == inodes_.end()) return;
  if (KeepsNewerLocked(*it->second, attr)) return;
  it->second->attr = attr;
  it->second->attr_expiry = ExpiryLocked(ticket);
}

Filesystem::Clock::time_point Filesystem::ExpiryLocked(uint64_t ticket) const {
  // Read under mu_: the feed's invalidations change cache_state_ before they
  // take mu_, so either this sees the change, or the invalidation comes
  // after this entry is stored and drops it.
  if (cache_state_.load() != ticket) {
    // A change arrived while this was fetched and may not be in it: kept
    // as the last known attributes (an outage serves them), never served
    // from the cache.
    return Clock::time_point::min();
  }
  return Clock::now() + AttrTtl(ticket);
}

std::chrono::milliseconds Filesystem::EntryTtl(uint64_t ticket) const {
  if ((ticket & 1) == 0 || options_.metadata_ttl.count() == 0 || cache_state_.load() != ticket) {
    return options_.entry_ttl;
  }
  return std::max(options_.metadata_ttl, options_.entry_ttl);
}

std::chrono::milliseconds Filesystem::AttrTtl(uint64_t ticket) const {
  if ((ticket & 1) == 0 || options_.metadata_ttl.count() == 0 || cache_state_.load() != ticket) {
    return options_.attr_ttl;
  }
  return std::max(options_.metadata_ttl, options_.attr_ttl);
}

void Filesystem::AddNameLocked(InodeId parent, std::string_view name, InodeId ino) {
  auto [it, added] = names_.try_emplace(NameKey{parent, std::string(name)}, ino);
  if (!added) {
    if (it->second == ino) return;
    DropNameLocked(parent, name);
    it = names_.emplace(NameKey{parent, std::string(name)}, ino).first;
  }
  auto inode = inodes_.find(ino);
  if (inode == inodes_.end()) {
    names_.erase(it);  // Not in the table: the kernel cannot hold it.
    return;
  }
  inode->second->names.emplace_back(parent, std::string(name));
}

InodeId Filesystem::DropNameLocked(InodeId parent, std::string_view name) {
  auto it = names_.find(NameKey{parent, std::string(name)});
  if (it == names_.end()) return 0;
  const InodeId ino = it->second;
  names_.erase(it);
  if (auto inode = inodes_.find(ino); inode != inodes_.end()) {
    auto& list = inode->second->names;
    for (auto n = list.begin(); n != list.end(); ++n) {
      if (n->first == parent && n->second == name) {
        list.erase(n);
        break;
      }
    }
  }
  return ino;
}

KernelInvalidation Filesystem::DropAllLocked() {
  KernelInvalidation out;
  out.entries.reserve(names_.size());
  for (auto& [key, ino] : names_) out.entries.emplace_back(key.parent, key.name);
  names_.clear();
  out.inodes.reserve(inodes_.size());
  for (auto& [ino, inode] : inodes_) {
    inode->names.clear();
    DropAttrLocked(*inode);
    out.inodes.push_back(ino);
  }
  return out;
}

KernelInvalidation Filesystem::SetFeedHealthy(bool healthy) {
  // The new state first: a reply whose ticket predates it gets short times.
  uint64_t state = cache_state_.load();
  while (!cache_state_.compare_exchange_weak(state, ((state >> 1) + 1) << 1 | (healthy ? 1 : 0))) {
  }
  absl::MutexLock lock(&mu_);
  if (!healthy) return DropAllLocked();
  // Cached while the feed was not followed (for attr_ttl): a change made
  // then would never be told.
  for (auto& [ino, inode] : inodes_) DropAttrLocked(*inode);
  return {};
}

KernelInvalidation Filesystem::ApplyChanges(const ScopeChanges& changes) {
  if (!changes.lost && changes.entries.empty() && changes.inodes.empty()) return {};
  // Before anything is dropped (see ExpiryLocked), and so that a reply
  // computed meanwhile is cached only briefly.
  cache_state_.fetch_add(2);
  absl::MutexLock lock(&mu_);
  if (changes.lost) {
    spdlog::warn("[{}] the change feed dropped changes: everything cached is dropped",
                 scope_.ToString());
    return DropAllLocked();
  }
  KernelInvalidation out;
  std::set<InodeId> inodes;
  auto drop_attr = [&](InodeId ino) {
    auto it = inodes_.find(ino);
    if (it == inodes_.end()) return;  // Neither this node nor its kernel knows it.
    DropAttrLocked(*it->second);
    if (inodes.insert(ino).second) out.inodes.push_back(ino);
  };
  for (const auto& [parent, name] : changes.entries) {
    if (DropNameLocked(parent, name) != 0) out.entries.emplace_back(parent, name);
    drop_attr(parent);  // Its mtime, and nlink for a directory.
  }
  for (InodeId ino : changes.inodes) drop_attr(ino);
  return out;
}

std::vector<InodeId> Filesystem::KnownInodes(const std::vector<InodeId>& inodes) {
  std::vector<InodeId> out;
  absl::MutexLock lock(&mu_);
  for (InodeId ino : inodes) {
    if (inodes_.count(ino) > 0) out.push_back(ino);
  }
  return out;
}

void Filesystem::InvalidateAttr(InodeId ino) {
  absl::MutexLock lock(&mu_);
  auto it = inodes_.find(ino);
  if (it != inodes_.end()) DropAttrLocked(*it->second);
}

void Filesystem::DropAttrLocked(Inode& inode) {
  // Expired, not erased: the last known attributes are what GetAttr serves
  // while the server is unreachable.
  inode.attr_expiry = Clock::time_point::min();
  inode.no_xattrs_until = Clock::time_point::min();
  inode.absent_xattrs.clear();
  ++inode.xattr_generation;
}

bool Filesystem::XattrKnownAbsent(InodeId ino, std::string_view name, uint64_t* generation) {
  absl::MutexLock lock(&mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return false;
  *generation = it->second->xattr_generation;
  const Clock::time_point now = Clock::now();
  if (now < it->second->no_xattrs_until) return true;
  for (const auto& [absent, expiry] : it->second->absent_xattrs) {
    if (absent == name) return now < expiry;
  }
  return false;
}

void Filesystem::NoteXattrAbsent(InodeId ino, std::string_view name, uint64_t generation) {
  absl::MutexLock lock(&mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end() || it->second->xattr_generation != generation) return;
  auto& absent = it->second->absent_xattrs;
  const Clock::time_point expiry = Clock::now() + options_.attr_ttl;
  for (auto& [known, until] : absent) {
    if (known == name) {
      until = expiry;
      return;
    }
  }
  // A few names are asked about again and again (security.capability,
  // system.posix_acl_*): a short list, the oldest dropped first.
  if (absent.size() >= kMaxAbsentXattrs) absent.erase(absent.begin());
  absent.emplace_back(std::string(name), expiry);
}

void Filesystem::OverlayLocked(InodeAttr& attr) {
  auto it = inodes_.find(attr.ino);
  if (it == inodes_.end() || !it->second->staged_size) return;
  attr.size = *it->second->staged_size;
  attr.mtime = it->second->staged_mtime;
  attr.ctime = std::max(attr.ctime, attr.mtime);
}

std::shared_ptr<Filesystem::Handle> Filesystem::FindHandle(uint64_t fh) {
  absl::MutexLock lock(&mu_);
  auto it = handles_.find(fh);
  return it == handles_.end() ? nullptr : it->second;
}

std::shared_ptr<Filesystem::Handle> Filesystem::FindUsedHandle(InodeId ino, uint64_t fh) {
  std::shared_ptr<Handle> h = FindHandle(fh);
  if (!h || h->inode->ino != ino) return nullptr;
  Settled(*h->inode, fh);
  return h;
}

void Filesystem::Settled(Inode& inode, uint64_t fh) {
  // A request through the handle: its open(2) returned, so the kernel
  // dropped the pages that open told it to (Inode::unsettled_fh).
  uint64_t expected = fh;
  inode.unsettled_fh.compare_exchange_strong(expected, 0);
}

absl::Status Filesystem::CheckName(std::string_view name) const { return ValidateName(name); }

void Filesystem::HandleUnlinked(const UnlinkResult& r) {
  if (r.ino == 0) return;
  InvalidateAttr(r.ino);
  if (!r.orphaned) return;
  {
    absl::MutexLock lock(&mu_);
    auto it = inodes_.find(r.ino);
    if (it != inodes_.end() && it->second->open_handles > 0) {
      // Still open here: readable and writable until the last Release.
      it->second->orphaned = true;
      return;
    }
  }
  // Not open on this node. (Another node holding it open loses it to this
  // release; the server's orphan sweep is the only other way to free it.)
  ReleaseOrphan(r.ino);
}

void Filesystem::PublishOverlay(Inode& inode, const WriteState* ws) {
  absl::MutexLock lock(&mu_);
  if (ws != nullptr && ws->dirty) {
    inode.staged_size = ws->size;
    inode.staged_mtime = ws->mtime;
  } else {
    inode.staged_size.reset();
  }
}

// --- inodes ---

absl::StatusOr<InodeAttr> Filesystem::Lookup(InodeId parent, std::string_view name) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(name));
  const uint64_t ticket = CacheTicket();
  ASSIGN_OR_RETURN(InodeAttr attr, client_->Lookup(scope_, parent, name));
  return AddLookup(attr, ticket, parent, name);
}

void Filesystem::Forget(InodeId ino, uint64_t n) {
  absl::MutexLock lock(&mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  it->second->nlookup -= std::min(n, it->second->nlookup);
  MaybeEraseLocked(ino);
}

absl::StatusOr<InodeAttr> Filesystem::GetAttr(InodeId ino) {
  RETURN_IF_ERROR(CheckLive());
  {
    absl::MutexLock lock(&mu_);
    auto it = inodes_.find(ino);
    if (it != inodes_.end() && it->second->attr && Clock::now() < it->second->attr_expiry) {
      InodeAttr attr = *it->second->attr;
      OverlayLocked(attr);
      return attr;
    }
  }
  const Clock::time_point asked = Clock::now();
  const uint64_t ticket = CacheTicket();
  absl::StatusOr<InodeAttr> fetched = client_->GetAttr(scope_, ino);
  if (!fetched.ok() && fetched.status().code() == absl::StatusCode::kUnavailable) {
    // The server was unreachable for the whole outage timeout. An inode this
    // node knows keeps its last attributes, so that open files stay readable
    // through an outage (the kernel asks for attributes on reads once
    // attr_ttl has passed, and fails the read if that fails). They are then
    // served without asking for as long as this call waited, so a reader
    // that keeps going is not stalled by every attr_ttl.
    absl::MutexLock lock(&mu_);
    auto it = inodes_.find(ino);
    if (it != inodes_.end() && it->second->attr) {
      spdlog::warn("[{}] ino {}: server unreachable, serving the last known attributes",
                   scope_.ToString(), ino);
      const Clock::time_point now = Clock::now();
      it->second->attr_expiry = now + std::max<Clock::duration>(now - asked, options_.attr_ttl);
      InodeAttr attr = *it->second->attr;
      OverlayLocked(attr);
      return attr;
    }
  }
  if (!fetched.ok() && ErrnoOf(fetched.status()) == ENOENT) {
    // Gone from the server (replaced or removed on another node, which
    // released it) while open here: like an unlinked file open on a local
    // disk, fstat through the handle keeps working, with no links.
    absl::MutexLock lock(&mu_);
    auto it = inodes_.find(ino);
    if (it != inodes_.end() && it->second->open_handles > 0 && it->second->attr) {
      InodeAttr attr = *it->second->attr;
      attr.nlink = 0;
      OverlayLocked(attr);
      return attr;
    }
  }
  if (!fetched.ok()) return StaleIfGone(fetched.status(), ino);
  InodeAttr attr = *std::move(fetched);
  CacheAttr(attr, ticket);
  absl::MutexLock lock(&mu_);
  OverlayLocked(attr);
  return attr;
}

absl::StatusOr<InodeAttr> Filesystem::SetAttr(InodeId ino, const SetAttrRequest& req,
                                              std::optional<uint64_t> fh) {
  RETURN_IF_ERROR(CheckLive());
  SetAttrRequest rest = req;
  rest.size.reset();
  const uint64_t ticket = CacheTicket();
  std::shared_ptr<Inode> inode = GetOrAddInode(ino);  // Pinned; unpinned below.
  absl::StatusOr<InodeAttr> result = [&]() -> absl::StatusOr<InodeAttr> {
    absl::MutexLock lock(&inode->mu);
    bool temporary = false;
    if (!inode->ws && req.size) {
      // Not open for write here: the server truncates, unless the file's
      // last chunk was cut mid-chunk and this grows it (EOPNOTSUPP, see
      // metadata_store.h): then commit the new size with a re-made chunk.
      absl::StatusOr<InodeAttr> attr = client_->SetAttr(scope_, ino, req);
      if (attr.ok() || ErrnoOf(attr.status()) != EOPNOTSUPP) {
        if (attr.ok()) CacheAttr(*attr, ticket);
        return attr;
      }
      ASSIGN_OR_RETURN(ChunkMap map, client_->GetChunkMap(scope_, ino));
      inode->ws = NewWriteState(std::move(map));
      temporary = true;
    }
    if (inode->ws) {
      WriteState& ws = *inode->ws;
      absl::Status s;
      if (req.size) s = StageTruncate(*inode, ws, *req.size);
      // Commit staged data before other attributes change, so a given mtime
      // (futimens before close, as cp -p does) is not overwritten later.
      if (s.ok() && (temporary || HasNonSize(rest)) && ws.dirty) s = Commit(*inode, ws);
      if (temporary) DropWriteState(*inode);
      RETURN_IF_ERROR(s);
      if (!HasNonSize(rest)) {
        if (temporary) InvalidateAttr(ino);
        return GetAttr(ino);
      }
    }
    ASSIGN_OR_RETURN(InodeAttr attr, client_->SetAttr(scope_, ino, rest));
    CacheAttr(attr, ticket);
    return attr;
  }();
  Unpin(*inode);
  if (!result.ok()) return StaleIfGone(result.status(), ino);
  absl::MutexLock lock(&mu_);
  OverlayLocked(*result);
  return result;
}

// --- namespace ---

absl::StatusOr<InodeAttr> Filesystem::Mkdir(InodeId parent, std::string_view name, uint32_t mode,
                                            const Caller& caller) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(name));
  const uint64_t ticket = CacheTicket();
  ASSIGN_OR_RETURN(InodeAttr attr, client_->Mkdir(scope_, parent, name, mode, caller));
  InvalidateAttr(parent);
  return AddLookup(attr, ticket, parent, name);
}

absl::StatusOr<CreateReply> Filesystem::Create(InodeId parent, std::string_view name, uint32_t mode,
                                               int flags, const Caller& caller) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(name));
  const bool exclusive = (flags & O_EXCL) != 0;
  const uint64_t ticket = CacheTicket();
  ASSIGN_OR_RETURN(CreateResult r, client_->Create(scope_, parent, name, mode, caller, exclusive));
  // The kernel asks for the directory's attributes after every create (it
  // dropped its own): answer from what the create returned.
  if (r.parent && r.parent->ino == parent) {
    CacheAttr(*r.parent, ticket);
  } else {
    InvalidateAttr(parent);
  }
  ChunkMap map;
  if (r.created) {
    // Empty, at the version the create made: no need to ask.
    map.version = r.attr.version;
    map.size = 0;
    map.chunk_size = options_.chunk_size;
  } else {
    ASSIGN_OR_RETURN(map, client_->GetChunkMap(scope_, r.attr.ino));
  }
  std::shared_ptr<Inode> inode = GetOrAddInode(r.attr.ino);
  if (r.created) {
    absl::MutexLock lock(&mu_);
    inode->no_xattrs_until = Clock::now() + options_.attr_ttl;
  }
  ASSIGN_OR_RETURN(OpenReply open, OpenWithMap(inode, flags, std::move(map)));
  return CreateReply{AddLookup(r.attr, ticket, parent, name), open.fh};
}

absl::StatusOr<InodeAttr> Filesystem::Symlink(InodeId parent, std::string_view name,
                                              std::string_view target, const Caller& caller) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(name));
  const uint64_t ticket = CacheTicket();
  ASSIGN_OR_RETURN(InodeAttr attr, client_->Symlink(scope_, parent, name, target, caller));
  InvalidateAttr(parent);
  return AddLookup(attr, ticket, parent, name);
}

absl::StatusOr<InodeAttr> Filesystem::Link(InodeId ino, InodeId new_parent,
                                           std::string_view new_name) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(new_name));
  const uint64_t ticket = CacheTicket();
  absl::StatusOr<InodeAttr> attr = client_->Link(scope_, ino, new_parent, new_name);
  // Both are inodes the kernel named by number: ENOENT means one is gone.
  if (!attr.ok()) return StaleIfGone(attr.status(), ino);
  InvalidateAttr(new_parent);
  return AddLookup(*attr, ticket, new_parent, new_name);
}

absl::StatusOr<std::string> Filesystem::ReadLink(InodeId ino) {
  RETURN_IF_ERROR(CheckLive());
  absl::StatusOr<std::string> target = client_->ReadLink(scope_, ino);
  if (!target.ok()) return StaleIfGone(target.status(), ino);
  return target;
}

absl::Status Filesystem::Unlink(InodeId parent, std::string_view name) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(name));
  ASSIGN_OR_RETURN(UnlinkResult r, client_->Unlink(scope_, parent, name));
  InvalidateAttr(parent);
  {
    absl::MutexLock lock(&mu_);
    DropNameLocked(parent, name);  // The kernel drops its entry itself.
  }
  HandleUnlinked(r);
  return absl::OkStatus();
}

absl::Status Filesystem::Rmdir(InodeId parent, std::string_view name) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(name));
  RETURN_IF_ERROR(client_->Rmdir(scope_, parent, name));
  InvalidateAttr(parent);
  {
    absl::MutexLock lock(&mu_);
    DropNameLocked(parent, name);
  }
  return absl::OkStatus();
}

absl::Status Filesystem::Rename(InodeId parent, std::string_view name, InodeId new_parent,
                                std::string_view new_name, uint32_t flags) {
  RETURN_IF_ERROR(CheckLive());
  RETURN_IF_ERROR(CheckName(name));
  RETURN_IF_ERROR(CheckName(new_name));
  ASSIGN_OR_RETURN(UnlinkResult r,
                   client_->Rename(scope_, parent, name, new_parent, new_name, flags));
  InvalidateAttr(parent);
  InvalidateAttr(new_parent);
  {
    // The kernel moves its entries (swaps them for an exchange): so does
    // the name index.
    absl::MutexLock lock(&mu_);
    const InodeId moved = DropNameLocked(parent, name);
    const InodeId other = DropNameLocked(new_parent, new_name);
    if (moved != 0) AddNameLocked(new_parent, new_name, moved);
    if (other != 0 && (flags & kRenameExchange) != 0) AddNameLocked(parent, name, other);
  }
  HandleUnlinked(r);
  return absl::OkStatus();
}

// --- files ---

absl::StatusOr<OpenReply> Filesystem::Open(InodeId ino, int flags) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<Inode> inode = GetOrAddInode(ino);
  // Close-to-open: always the server's content now, never a cached map.
  absl::StatusOr<ChunkMap> map = client_->GetChunkMap(scope_, ino);
  if (!map.ok()) {
    Unpin(*inode);
    return StaleIfGone(map.status(), ino);
  }
  return OpenWithMap(inode, flags, *std::move(map));
}

absl::StatusOr<OpenReply> Filesystem::OpenWithMap(const std::shared_ptr<Inode>& inode, int flags,
                                                  ChunkMap map) {
  uint64_t fh;
  {
    absl::MutexLock table(&mu_);
    fh = next_fh_++;
  }
  auto handle = std::make_shared<Handle>();
  handle->inode = inode;
  handle->writable = (flags & O_ACCMODE) != O_RDONLY;
  handle->append = (flags & O_APPEND) != 0;
  OpenReply reply;
  absl::Status status;
  {
    absl::MutexLock lock(&inode->mu);
    // `map` may have been read before a commit of this node (another
    // process's close) landed: that commit is the newer content.
    if (inode->committed && inode->committed->version > map.version) map = *inode->committed;
    WriteState* ws = inode->ws.get();
    if (ws != nullptr && !ws->dirty && map.version > ws->base.version) {
      // Nothing staged: follow the server (another node committed). Only
      // forward: `map` may have been read before this node's own commit.
      ws->Reset(map, options_.chunk_size);
    }
    if (handle->writable) {
      if (ws == nullptr) {
        inode->ws = NewWriteState(map);
        ws = inode->ws.get();
      }
      if (flags & O_TRUNC) status = StageTruncate(*inode, *ws, 0);
      if (status.ok()) {
        ++inode->writers;
      } else if (inode->writers == 0) {
        DropWriteState(*inode);
      }
    }
    if (status.ok()) {
      reply.keep_cache = inode->kernel_version == map.version && !inode->changed_since_open &&
                         !(flags & O_TRUNC) && !(ws != nullptr && ws->dirty) &&
                         inode->unsettled_fh.load() == 0;
      if (!reply.keep_cache) inode->unsettled_fh = fh;
      {
        // Close-to-open holds for attributes too: if the content changed
        // since the attributes this node (and so its kernel) last handed out,
        // they are dropped here and in the kernel (OpenReply::attr_stale), or
        // the kernel would read the new content only up to the old size
        // until attr_ttl passed.
        absl::MutexLock table(&mu_);
        if (!inode->attr || inode->attr->version != map.version ||
            (inode->kernel_version && *inode->kernel_version != map.version)) {
          inode->attr_expiry = Clock::time_point::min();
          reply.attr_stale = true;
        }
      }
      inode->kernel_version = map.version;
      inode->changed_since_open = false;
      reply.version = map.version;
      handle->map = std::make_shared<const ChunkMap>(std::move(map));
    }
  }
  if (!status.ok()) {
    Unpin(*inode);  // The pin of GetOrAddInode.
    return status;
  }
  absl::MutexLock table(&mu_);
  // The pin of GetOrAddInode becomes this handle's count.
  reply.fh = fh;
  handles_.emplace(reply.fh, std::move(handle));
  return reply;
}

absl::Status Filesystem::EnsureStagingFile(Inode& inode, WriteState& ws) {
  if (ws.fd >= 0) return absl::OkStatus();
  ws.path = fmt::format("{}/{}", StagingDir(), inode.ino);
  ws.journal_path = ws.path + std::string(kJournalSuffix);
  // A journal still here is staged data of an earlier run that Init could
  // not commit (it logged why): never write over it, move it aside for an
  // operator. The names do not parse as "<ino>.journal", so Init skips them.
  if (access(ws.journal_path.c_str(), F_OK) == 0) {
    const std::string aside = fmt::format("{}.kept-{}", ws.path, Now().sec);
    const std::string aside_journal = aside + std::string(kJournalSuffix);
    if (rename(ws.journal_path.c_str(), aside_journal.c_str()) != 0) {
      return ErrnoStatus(errno, fmt::format("moving aside staging journal {}", ws.journal_path));
    }
    if (rename(ws.path.c_str(), aside.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, fmt::format("moving aside staging file {}", ws.path));
    }
    spdlog::error("[{}] ino {}: uncommitted staged data of an earlier run moved to {} and {}",
                  scope_.ToString(), inode.ino, aside, aside_journal);
  }
  // O_TRUNC: with no journal, nothing of an old staging file is staged.
  int fd = open(ws.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, fmt::format("staging file {}", ws.path));
  int jfd =
      open(ws.journal_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (jfd < 0) {
    const int err = errno;
    close(fd);
    unlink(ws.path.c_str());
    return ErrnoStatus(err, fmt::format("staging journal {}", ws.journal_path));
  }
  ws.fd = fd;
  ws.journal_fd = jfd;
  ws.journal_len = 0;
  // The base record: what recovery needs to rebuild the staged view (the
  // base's chunk refs) and to apply the rebase rule (Commit).
  std::string body;
  Put<uint64_t>(body, ws.base.version);
  Put<uint64_t>(body, ws.base.size);
  Put<uint32_t>(body, ws.base.chunk_size);
  Put<uint64_t>(body, ws.base.chunks.size());
  for (const ChunkRef& ref : ws.base.chunks) {
    Put<uint8_t>(body, ref.id ? 1 : 0);
    if (ref.id) body += ref.id->bytes();
    Put<uint32_t>(body, ref.length);
  }
  ws.PutState(body);
  absl::Status s = ws.AppendJournal(kJournalBase, body);
  if (!s.ok()) ws.RemoveFile();
  return s;
}

absl::Status Filesystem::StageTruncate(Inode& inode, WriteState& ws, uint64_t size) {
  if (size > kMaxFileChunks * uint64_t{size == 0 ? options_.chunk_size : ws.chunk_size}) {
    return PosixError(EFBIG, fmt::format("size {} is over the file size limit", size));
  }
  if (size == ws.size) return absl::OkStatus();
  RETURN_IF_ERROR(EnsureStagingFile(inode, ws));
  // Chunks at or past the cut change (their tail reads as zeros, or they are
  // gone, or at size 0 the layout itself may change): their background
  // uploads no longer name their bytes. (Dropped even if the truncate fails
  // below: the commit then just redoes them.)
  if (const uint64_t dropped = ws.DropUploads(std::min(size, ws.size) / ws.chunk_size, UINT64_MAX);
      dropped > 0) {
    absl::MutexLock lock(&mu_);
    stats_.background_dropped_chunks += dropped;
  }
  // The record goes first, then the cut: the journal never claims bytes the
  // staging file lost. On failure nothing in memory changed.
  const WriteState::Scalars old = ws.GetScalars();
  const uint64_t old_journal_len = ws.journal_len;
  ws.size = size;
  ws.base_limit = std::min(ws.base_limit, size);
  // Nothing of the base is left at 0: a new layout.
  if (size == 0) ws.chunk_size = options_.chunk_size;
  ws.mtime = Now();
  absl::Status s = ws.JournalChange(0, 0);
  if (s.ok() && size < old.size && ftruncate(ws.fd, static_cast<off_t>(size)) != 0) {
    s = ErrnoStatus(errno, fmt::format("truncate of staging file {}", ws.path));
    if (ftruncate(ws.journal_fd, static_cast<off_t>(old_journal_len)) == 0) {
      ws.journal_len = old_journal_len;
    }
  }
  if (!s.ok()) {
    ws.SetScalars(old);
    return s;
  }
  // Bytes past the old end read as zeros: they are past base_limit and
  // nothing was written there.
  ws.written.ClipAt(size);
  if (size == 0) {
    // A lost conflict or a lost write no longer matters (the next commit
    // re-commits on whatever is there, and nothing staged is left).
    ws.conflicted = false;
    ws.lost_write = 0;
  }
  ws.dirty = true;
  inode.changed_since_open = true;
  PublishOverlay(inode, &ws);
  return absl::OkStatus();
}

absl::Status Filesystem::ReadStaged(Inode& inode, WriteState& ws, uint64_t offset, size_t n,
                                    char* out) {
  const uint64_t end = offset + n;
  // Zeros first, unless every byte comes from the staging file (a commit
  // reading written chunks: no need to clear megabytes it overwrites).
  if (!ws.written.Covers(offset, end)) std::memset(out, 0, n);
  // Base bytes that still show and were not overwritten.
  const uint64_t base_end = std::min({end, ws.base_limit, ws.base.size});
  if (offset < base_end) {
    const ContentKey key{scope_, inode.ino, ws.base.version};
    for (auto [a, b] : ws.written.Gaps(offset, base_end)) {
      ASSIGN_OR_RETURN(size_t got, fetcher_->Read(key, ws.base, a, static_cast<size_t>(b - a),
                                                  out + (a - offset)));
      static_cast<void>(got);  // Short only at the base's end: the rest stays zero.
    }
  }
  for (auto [a, b] : ws.written.Pieces(offset, end)) {
    uint64_t pos = a;
    while (pos < b) {
      ssize_t r =
          pread(ws.fd, out + (pos - offset), static_cast<size_t>(b - pos), static_cast<off_t>(pos));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoStatus(errno, fmt::format("read of staging file {}", ws.path));
      if (r == 0) {  // Cannot happen for written bytes; zeros then.
        std::memset(out + (pos - offset), 0, static_cast<size_t>(b - pos));
        break;
      }
      pos += static_cast<uint64_t>(r);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Filesystem::Read(InodeId ino, uint64_t fh, uint64_t offset,
                                             size_t size) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<Handle> h = FindUsedHandle(ino, fh);
  if (!h) return PosixError(EBADF, fmt::format("no handle {}", fh));
  Inode& inode = *h->inode;
  std::shared_ptr<const ChunkMap> map;
  {
    absl::MutexLock lock(&inode.mu);
    if (inode.ws) {
      // This node has (or may soon have) staged changes: the staged view is
      // what every reader of this node sees.
      WriteState& ws = *inode.ws;
      if (offset >= ws.size) return std::string();
      std::string out(static_cast<size_t>(std::min<uint64_t>(size, ws.size - offset)), '\0');
      RETURN_IF_ERROR(ReadStaged(inode, ws, offset, out.size(), out.data()));
      return out;
    }
    map = h->map;
    if (inode.committed && inode.committed->version > map->version) map = inode.committed;
    // A handle reading another version than the last open's puts its pages
    // in the kernel's one cache of the file: the next open must not keep it.
    if (inode.kernel_version != map->version) inode.changed_since_open = true;
  }
  // Outside the inode lock: readers of one file fetch in parallel.
  if (offset >= map->size) return std::string();
  std::string out(static_cast<size_t>(std::min<uint64_t>(size, map->size - offset)), '\0');
  ASSIGN_OR_RETURN(size_t got, fetcher_->Read(ContentKey{scope_, ino, map->version}, *map, offset,
                                              out.size(), out.data()));
  out.resize(got);
  return out;
}

absl::StatusOr<std::unique_ptr<ImageLease>> Filesystem::LeaseImage(InodeId ino, uint64_t fh) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<Handle> h = FindHandle(fh);
  if (!h || h->inode->ino != ino) return PosixError(EBADF, fmt::format("no handle {}", fh));
  if (!ReadsFixedVersion(ino, fh)) {
    return absl::NotFoundError(
        fmt::format("handle {} of ino {} reads through the daemon", fh, ino));
  }
  // A handle's map never changes: read outside the inode lock.
  return tier_->LeaseImage(ContentKey{scope_, ino, h->map->version}, *h->map);
}

bool Filesystem::ReadsFixedVersion(InodeId ino, uint64_t fh) {
  std::shared_ptr<Handle> h = FindHandle(fh);
  if (!h || h->inode->ino != ino || h->writable) return false;
  absl::MutexLock lock(&h->inode->mu);
  // A writer here, or a version newer than the handle's committed here:
  // reads of this node follow the daemon's view, not a fixed image.
  return h->inode->ws == nullptr &&
         !(h->inode->committed && h->inode->committed->version > h->map->version);
}

absl::StatusOr<bool> Filesystem::RevalidateUnderLock(InodeId ino) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<Inode> inode = FindInode(ino);
  if (!inode) return false;  // Nothing of it cached here.
  ASSIGN_OR_RETURN(ChunkMap map, client_->GetChunkMap(scope_, ino));
  absl::MutexLock lock(&inode->mu);
  bool changed = false;
  // A write state holding nothing staged follows the server, whatever the
  // rest of the inode knows: its base is what the lock holder reads.
  if (inode->ws && !inode->ws->dirty && map.version > inode->ws->base.version) {
    inode->ws->Reset(map, options_.chunk_size);
    changed = true;
  }
  uint64_t known = inode->kernel_version.value_or(0);
  if (inode->committed) known = std::max(known, inode->committed->version);
  if (map.version <= known) return changed;
  inode->kernel_version = map.version;
  // Handles opened before read the newest content (Read).
  inode->committed = std::make_shared<const ChunkMap>(std::move(map));
  absl::MutexLock table(&mu_);
  DropAttrLocked(*inode);
  return true;
}

void Filesystem::DistrustImage(InodeId ino, uint64_t version) {
  tier_->Distrust(ContentKey{scope_, ino, version});
}

absl::StatusOr<size_t> Filesystem::Write(InodeId ino, uint64_t fh, uint64_t offset,
                                         std::string_view data) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<Handle> h = FindUsedHandle(ino, fh);
  if (!h) return PosixError(EBADF, fmt::format("no handle {}", fh));
  if (!h->writable) return PosixError(EBADF, fmt::format("handle {} is read-only", fh));
  Inode& inode = *h->inode;
  absl::MutexLock lock(&inode.mu);
  if (!inode.ws) return PosixError(EBADF, fmt::format("handle {} has no write state", fh));
  WriteState& ws = *inode.ws;
  if (h->append) offset = ws.size;
  if (data.empty()) return size_t{0};
  const uint64_t end = offset + data.size();
  if (end < offset || end > kMaxFileChunks * uint64_t{ws.chunk_size}) {
    return PosixError(EFBIG, fmt::format("write to {} is past the file size limit", end));
  }
  RETURN_IF_ERROR(EnsureStagingFile(inode, ws));
  // Before the bytes land: a background upload of a chunk this write changes
  // may be reading it right now, and its ref must not be used.
  if (const uint64_t dropped =
          ws.DropUploads(offset / ws.chunk_size, (end - 1) / ws.chunk_size + 1);
      dropped > 0) {
    absl::MutexLock lock(&mu_);
    stats_.background_dropped_chunks += dropped;
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w =
        pwrite(ws.fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      // Whatever part landed is not recorded: the staged view is unchanged.
      // Out of space, the writer's file would be left half-written: refuse
      // to commit it (WriteState::lost_write).
      const int err = errno;
      if (err == ENOSPC || err == EDQUOT) ws.lost_write = err;
      return ErrnoStatus(err, fmt::format("write to staging file {}", ws.path));
    }
    done += static_cast<size_t>(w);
  }
  // The data is in the staging file; now the journal may claim it.
  const WriteState::Scalars old = ws.GetScalars();
  ws.size = std::max(ws.size, end);
  ws.mtime = Now();
  if (absl::Status s = ws.JournalChange(offset, end); !s.ok()) {
    ws.SetScalars(old);
    if (std::optional<int> err = ErrnoOf(s); err == ENOSPC || err == EDQUOT) ws.lost_write = *err;
    return s;
  }
  ws.written.Add(offset, end);
  ws.dirty = true;
  inode.changed_since_open = true;
  PublishOverlay(inode, &ws);
  if (options_.background_upload) ScheduleUploads(ws, offset, end);
  return data.size();
}

void Filesystem::ScheduleUploads(WriteState& ws, uint64_t offset, uint64_t end) {
  // The chunks this write finished: whole chunks that end at or before the
  // write's end (the writer has moved past them) and are written whole. A
  // chunk finished by a write that ends inside it (a hole filled backwards)
  // is left to the commit, as is a short last chunk.
  const uint64_t cs = ws.chunk_size;
  for (uint64_t i = offset / cs; (i + 1) * cs <= end; ++i) {
    const uint64_t start = i * cs;
    if (ws.uploads.contains(i) || !ws.written.Covers(start, start + cs)) continue;
    std::shared_ptr<ChunkUploader::Ticket> t =
        uploader_->TryUploadFromFile(ws.fd, start, static_cast<uint32_t>(cs));
    if (!t) return;  // No room now: the commit sends it.
    ws.uploads.emplace(i, std::move(t));
  }
}

absl::Status Filesystem::Commit(Inode& inode, WriteState& ws) {
  if (!ws.dirty) return absl::OkStatus();
  if (ws.lost_write != 0) {
    return PosixError(
        ws.lost_write,
        fmt::format("[{}] ino {}: a write to staging file {} failed ({}); the file "
                    "keeps its last committed content",
                    scope_.ToString(), inode.ino, ws.path, std::strerror(ws.lost_write)));
  }
  if (ws.conflicted) {
    return PosixError(EIO, fmt::format("ino {}: file changed on another node since open "
                                       "(base version {})",
                                       inode.ino, ws.base.version));
  }
  const uint64_t size = ws.size;
  const uint32_t cs = ws.chunk_size;
  const uint64_t count = size == 0 ? 0 : (size - 1) / cs + 1;
  if (count > kMaxFileChunks) return PosixError(EFBIG, fmt::format("{} chunks", count));
  const bool same_layout = cs == ws.base.chunk_size;
  std::vector<ChunkRef> refs(count);

  // Changed chunks are built whole here, one after the other, and handed to
  // the uploader, whose threads hash and send them while the next ones are
  // read (memory bounded by its budget: Upload waits for room). A chunk
  // whose background upload is still valid (WriteState::uploads) is not
  // read at all: its ticket gives the ref. A short last chunk (a whole small
  // file, or the tail of a big one) of at most kMaxSmallChunkBytes travels
  // with the commit instead: no HasChunks, no PutChunks. (Full chunks are
  // asked about first: they are the ones worth deduplicating.)
  struct Pending {
    uint64_t index;
    std::shared_ptr<ChunkUploader::Ticket> ticket;
  };
  std::vector<Pending> pending;
  // Tickets this commit queued and has not collected are dropped on the way
  // out (an error): their bytes are not needed any more.
  struct CancelOnExit {
    std::vector<Pending>& p;
    size_t collected = 0;
    ~CancelOnExit() {
      for (size_t k = collected; k < p.size(); ++k) {
        if (!p[k].ticket->background()) p[k].ticket->Cancel();
      }
    }
  } cancel_on_exit{pending};
  std::vector<std::string> small;
  uint64_t small_bytes = 0;
  uint64_t small_chunks_sent = 0;

  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t start = i * cs;
    const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(cs, size - start));
    const uint64_t end = start + len;
    if (!ws.written.Overlaps(start, end)) {
      // Untouched and still whole: keep the base's ref. (A ref whose length
      // would change is re-made: raising it could bring back bytes a
      // truncate cut, see ChunkRef.)
      if (same_layout && i < ws.base.chunks.size() && ws.base.chunks[i].length == len &&
          end <= ws.base_limit) {
        refs[i] = ws.base.chunks[i];
        continue;
      }
      if (start >= ws.base_limit) {
        refs[i] = ChunkRef{std::nullopt, len};
        continue;
      }
    }
    if (auto it = ws.uploads.find(i); it != ws.uploads.end()) {
      pending.push_back(Pending{i, it->second});
      continue;
    }
    std::string bytes(len, '\0');
    RETURN_IF_ERROR(ReadStaged(inode, ws, start, len, bytes.data()));
    if (AllZero(bytes)) {
      refs[i] = ChunkRef{std::nullopt, len};
      continue;
    }
    if (len < cs && len <= kMaxSmallChunkBytes && small_bytes + len <= kMaxSmallChunksBytes) {
      refs[i] = ChunkRef{ChunkId::Of(bytes), len};
      small_bytes += len;
      ++small_chunks_sent;
      small.push_back(std::move(bytes));
      continue;
    }
    pending.push_back(Pending{i, uploader_->Upload(std::move(bytes))});
  }

  uint64_t used_background = 0;
  for (Pending& p : pending) {
    absl::StatusOr<ChunkUploader::Result> r = p.ticket->Wait();
    if (r.ok() && r->ref.length != (p.index + 1 < count ? cs : size - p.index * cs)) {
      // Cannot happen (a change of the chunk's length drops its upload);
      // redone rather than trusted.
      r = absl::InternalError("background upload of the wrong length");
    }
    if (!r.ok() && p.ticket->background()) {
      // The background upload failed (or was cut short): redo the chunk now;
      // if that fails too, its error is the commit's.
      spdlog::info("[{}] ino {}: chunk {} is sent again: {}", scope_.ToString(), inode.ino, p.index,
                   r.status().ToString());
      const uint64_t start = p.index * cs;
      std::string bytes(static_cast<size_t>(std::min<uint64_t>(cs, size - start)), '\0');
      RETURN_IF_ERROR(ReadStaged(inode, ws, start, bytes.size(), bytes.data()));
      r = uploader_->Upload(std::move(bytes))->Wait();
    } else if (r.ok() && p.ticket->background()) {
      ++used_background;
    }
    ++cancel_on_exit.collected;
    if (!r.ok()) return r.status();
    refs[p.index] = r->ref;
  }
  // Two small chunks of one commit may be the same bytes: send them once.
  std::vector<std::string_view> small_chunks;
  {
    std::set<std::string_view> seen;
    for (const std::string& c : small) {
      if (seen.insert(c).second) small_chunks.push_back(c);
    }
  }

  uint64_t expected = ws.base.version;
  const uint64_t ticket = CacheTicket();
  absl::StatusOr<InodeAttr> attr;
  bool resent = false;
  for (int attempt = 1;; ++attempt) {
    attr = client_->CommitContentWithSmallChunks(scope_, inode.ino, expected, size, cs, refs,
                                                 ws.mtime, small_chunks);
    if (attr.ok()) break;
    if (ErrnoOf(attr.status()) == ENOENT && !resent) {
      // A chunk the commit names is not stored (or the inode is gone). The
      // server may have collected a chunk between its upload (or HasChunks)
      // and now: send what is missing, once, and commit again.
      resent = true;
      std::vector<uint64_t> indexes;
      for (const Pending& p : pending) indexes.push_back(p.index);
      ASSIGN_OR_RETURN(bool any, ResendMissing(inode, ws, refs, indexes));
      if (!any) return attr.status();
      absl::MutexLock lock(&mu_);
      ++stats_.commit_resends;
      continue;
    }
    if (ErrnoOf(attr.status()) != ESTALE) return attr.status();
    // Another change landed since the base. Re-committing on the new version
    // is safe only if that cannot publish a mix of two writers' bytes.
    ASSIGN_OR_RETURN(ChunkMap current, client_->GetChunkMap(scope_, inode.ino));
    const bool independent = ws.IndependentOfBase() && !ws.from_earlier_run;
    if (attempt < kMaxCommitAttempts && (independent || SameContent(current, ws.base))) {
      spdlog::info("[{}] ino {}: commit on version {} is stale, re-committing on {} ({})",
                   scope_.ToString(), inode.ino, expected, current.version,
                   independent ? "whole rewrite" : "only attributes changed");
      expected = current.version;
      absl::MutexLock lock(&mu_);
      ++stats_.commit_rebases;
      continue;
    }
    spdlog::error(
        "[{}] ino {}: commit lost a conflict: based on version {}, another node committed "
        "version {}; this node's changes depend on the old content and are not published",
        scope_.ToString(), inode.ino, ws.base.version, current.version);
    ws.conflicted = true;
    {
      absl::MutexLock lock(&mu_);
      ++stats_.commit_conflicts;
    }
    return PosixError(EIO, fmt::format("ino {}: file changed on another node since open "
                                       "(version {} -> {})",
                                       inode.ino, ws.base.version, current.version));
  }

  ChunkMap committed;
  committed.version = attr->version;
  committed.size = size;
  committed.chunk_size = cs;
  committed.chunks = std::move(refs);
  auto shared = std::make_shared<const ChunkMap>(committed);
  ws.Reset(std::move(committed), options_.chunk_size);
  inode.committed = std::move(shared);
  absl::Status dropped = tier_->DropOtherVersions(scope_, inode.ino, attr->version);
  if (!dropped.ok()) {
    spdlog::warn("[{}] ino {}: dropping old tier images failed: {}", scope_.ToString(), inode.ino,
                 dropped.ToString());
  }
  PublishOverlay(inode, &ws);
  CacheAttr(*attr, ticket);
  absl::MutexLock lock(&mu_);
  ++stats_.commits;
  // Chunks the uploader sent are counted by it; small ones went with the commit.
  stats_.uploaded_chunks += small_chunks_sent;
  stats_.uploaded_bytes += small_bytes;
  stats_.background_used_chunks += used_background;
  return absl::OkStatus();
}

absl::StatusOr<bool> Filesystem::ResendMissing(Inode& inode, WriteState& ws,
                                               const std::vector<ChunkRef>& refs,
                                               const std::vector<uint64_t>& indexes) {
  std::vector<uint64_t> asked;
  std::vector<ChunkId> ids;
  for (uint64_t i : indexes) {
    if (!refs[i].id) continue;
    asked.push_back(i);
    ids.push_back(*refs[i].id);
  }
  if (ids.empty()) return false;
  ASSIGN_OR_RETURN(std::vector<std::optional<uint64_t>> have, client_->HasChunks(scope_, ids));
  std::vector<std::shared_ptr<ChunkUploader::Ticket>> tickets;
  for (size_t k = 0; k < asked.size(); ++k) {
    if (k < have.size() && have[k]) continue;
    const uint64_t start = asked[k] * ws.chunk_size;
    std::string bytes(refs[asked[k]].length, '\0');
    RETURN_IF_ERROR(ReadStaged(inode, ws, start, bytes.size(), bytes.data()));
    tickets.push_back(uploader_->Upload(std::move(bytes)));
  }
  absl::Status first;
  for (size_t k = 0; k < tickets.size(); ++k) {
    absl::StatusOr<ChunkUploader::Result> r = tickets[k]->Wait();
    first.Update(r.status());
  }
  RETURN_IF_ERROR(first);
  if (!tickets.empty()) {
    spdlog::warn("[{}] ino {}: the server had lost {} chunks of this commit; sent again",
                 scope_.ToString(), inode.ino, tickets.size());
  }
  return !tickets.empty();
}

void Filesystem::DropWriteState(Inode& inode) {
  if (inode.ws) inode.ws->RemoveFile();  // Dropped on purpose: not for recovery.
  inode.ws.reset();
  PublishOverlay(inode, nullptr);
}

absl::Status Filesystem::Flush(InodeId ino, uint64_t fh) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<Handle> h = FindUsedHandle(ino, fh);
  if (!h) return PosixError(EBADF, fmt::format("no handle {}", fh));
  if (!h->writable) return absl::OkStatus();
  absl::MutexLock lock(&h->inode->mu);
  if (!h->inode->ws) return absl::OkStatus();
  return Commit(*h->inode, *h->inode->ws);
}

absl::Status Filesystem::Fsync(InodeId ino, uint64_t fh, bool datasync) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<Handle> h = FindUsedHandle(ino, fh);
  if (!h) return PosixError(EBADF, fmt::format("no handle {}", fh));
  // Like fsync(2) on a local disk, any descriptor syncs the whole file.
  return SyncInode(*h->inode, /*sync_if_clean=*/true);
}

absl::Status Filesystem::CommitAll() {
  RETURN_IF_ERROR(CheckLive());
  std::vector<std::shared_ptr<Inode>> inodes;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [ino, inode] : inodes_) inodes.push_back(inode);
  }
  absl::Status first;
  for (const auto& inode : inodes) first.Update(SyncInode(*inode, /*sync_if_clean=*/false));
  first.Update(client_->Sync(scope_));
  return first;
}

absl::Status Filesystem::FsyncDir(InodeId ino) {
  RETURN_IF_ERROR(CheckLive());
  return StaleIfGone(client_->Sync(scope_), ino);
}

std::string Filesystem::StagingDir() const {
  return fmt::format("{}/{}/{}", options_.staging_dir, scope_.kind_name(), scope_.id());
}

absl::Status Filesystem::CheckLive() const {
  if (!deleted_.load(std::memory_order_acquire)) return absl::OkStatus();
  return PosixError(ENOENT, fmt::format("scope {} was deleted", scope_.ToString()));
}

std::vector<InodeId> Filesystem::MarkScopeDeleted() {
  deleted_.store(true, std::memory_order_release);
  // Nothing of the scope is worth sending any more (an upload already
  // running fails at the server: the scope is gone).
  uploader_->CancelAll();
  std::vector<InodeId> known;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [ino, inode] : inodes_) known.push_back(ino);
  }
  // What was staged belongs to a cache that no longer exists: nothing to
  // commit at the next mount. (Open staging files stay writable, unlinked.)
  std::error_code ec;
  std::filesystem::remove_all(StagingDir(), ec);
  if (ec)
    spdlog::warn("scope {}: cannot remove its staging folder: {}", scope_.ToString(), ec.message());
  spdlog::warn("scope {}: deleted on the server; the mount now answers ENOENT", scope_.ToString());
  return known;
}

absl::Status Filesystem::SyncInode(Inode& inode, bool sync_if_clean) {
  absl::MutexLock lock(&inode.mu);
  // Nothing to commit: the file's create and attribute changes may still
  // wait for the server's next sync (MetadataSync::kContentCommits).
  if (!inode.ws || !inode.ws->dirty) {
    return sync_if_clean ? client_->Sync(scope_) : absl::OkStatus();
  }
  WriteState& ws = *inode.ws;
  if (ws.fd >= 0 && ws.dirty) {
    // The commit below is what makes the data durable; syncing the staged
    // files first means that if it fails (server unreachable), a crash after
    // this fsync still finds the data staged for the next start. Data before
    // journal, as they were written.
    if (fdatasync(ws.fd) != 0) return ErrnoStatus(errno, fmt::format("fsync of {}", ws.path));
    if (fdatasync(ws.journal_fd) != 0) {
      return ErrnoStatus(errno, fmt::format("fsync of {}", ws.journal_path));
    }
  }
  return Commit(inode, ws);
}

void Filesystem::Release(InodeId ino, uint64_t fh) {
  std::shared_ptr<Handle> h;
  {
    absl::MutexLock lock(&mu_);
    auto it = handles_.find(fh);
    if (it == handles_.end() || it->second->inode->ino != ino) return;
    h = std::move(it->second);
    handles_.erase(it);
  }
  Inode& inode = *h->inode;
  Settled(inode, fh);
  {
    absl::MutexLock lock(&inode.mu);
    if (h->writable && --inode.writers == 0 && inode.ws) {
      bool unreachable;
      {
        absl::MutexLock table(&mu_);
        unreachable = inode.orphaned && inode.open_handles == 1;
      }
      if (inode.ws->dirty && !inode.ws->conflicted && !unreachable) {
        absl::Status s = Commit(inode, *inode.ws);
        if (!s.ok()) {
          // Nobody is left to tell. A server that could not be reached (or
          // that may not have applied the commit) is no reason to lose the
          // data: the staging file and its journal stay and the next Init
          // commits them. A refusal (conflict, quota, bad input) drops them.
          bool transient =
              absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsUnknown(s);
          if (transient && !inode.ws->conflicted) {
            spdlog::error(
                "[{}] ino {}: commit at last close failed, staged changes kept in {} for the "
                "next mount: {}",
                scope_.ToString(), ino, inode.ws->path, s.ToString());
            inode.ws->CloseFiles(/*remove=*/false);
          } else {
            spdlog::error("[{}] ino {}: commit at last close failed, staged changes dropped: {}",
                          scope_.ToString(), ino, s.ToString());
          }
        }
      }
      DropWriteState(inode);
    }
  }
  Unpin(inode);  // This handle's count.
}

// --- directories ---

absl::StatusOr<uint64_t> Filesystem::OpenDir(InodeId ino) {
  RETURN_IF_ERROR(CheckLive());
  auto dh = std::make_shared<DirHandle>();
  dh->ino = ino;
  dh->ticket = CacheTicket();
  // ".." names the parent, which the table does not track; the kernel
  // ignores the number (the root's is itself).
  dh->entries.push_back(DirEntry{".", ino, S_IFDIR, std::nullopt});
  dh->entries.push_back(
      DirEntry{"..", ino == kRootInode ? kRootInode : ino, S_IFDIR, std::nullopt});
  std::string after;
  for (;;) {
    absl::StatusOr<ReadDirPage> read =
        client_->ReadDir(scope_, ino, after, kMaxReadDirEntries, /*plus=*/true);
    if (!read.ok()) return StaleIfGone(read.status(), ino);
    ReadDirPage& page = *read;
    if (page.entries.empty()) break;
    after = page.entries.back().name;
    for (DirEntry& e : page.entries) dh->entries.push_back(std::move(e));
    if (!page.more) break;
  }
  absl::MutexLock lock(&mu_);
  const uint64_t fh = next_fh_++;
  dir_handles_.emplace(fh, std::move(dh));
  return fh;
}

absl::Status Filesystem::ReadDir(uint64_t fh, uint64_t offset, bool plus,
                                 const std::function<bool(const DirListEntry&)>& add) {
  RETURN_IF_ERROR(CheckLive());
  std::shared_ptr<DirHandle> dh;
  {
    absl::MutexLock lock(&mu_);
    auto it = dir_handles_.find(fh);
    if (it == dir_handles_.end()) return PosixError(EBADF, fmt::format("no dir handle {}", fh));
    dh = it->second;
  }
  for (uint64_t i = offset; i < dh->entries.size(); ++i) {
    const DirEntry& e = dh->entries[i];
    DirListEntry out{e.name, e.ino, e.type, nullptr, i + 1, dh->ticket};
    const bool entry = plus && i >= 2 && e.attr.has_value();
    InodeAttr attr;
    if (entry) {
      attr = *e.attr;
      absl::MutexLock lock(&mu_);
      OverlayLocked(attr);
      out.attr = &attr;
    }
    if (!add(out)) break;
    if (entry) {
      // The kernel now holds a lookup of it. The snapshot's attributes may
      // be older than the cache's: count the lookup, keep the cache.
      absl::MutexLock lock(&mu_);
      std::shared_ptr<Inode>& slot = inodes_[e.ino];
      if (!slot) slot = std::make_shared<Inode>(e.ino);
      ++slot->nlookup;
      AddNameLocked(dh->ino, e.name, e.ino);
    }
  }
  return absl::OkStatus();
}

void Filesystem::ReleaseDir(uint64_t fh) {
  absl::MutexLock lock(&mu_);
  dir_handles_.erase(fh);
}

// --- xattrs ---

absl::StatusOr<std::string> Filesystem::GetXattr(InodeId ino, std::string_view name) {
  RETURN_IF_ERROR(CheckLive());
  uint64_t generation = 0;
  if (XattrKnownAbsent(ino, name, &generation)) {
    return PosixError(ENODATA, fmt::format("ino {} has no attribute '{}'", ino, name));
  }
  absl::StatusOr<std::string> value = client_->GetXattr(scope_, ino, name);
  if (!value.ok() && ErrnoOf(value.status()) == ENODATA) NoteXattrAbsent(ino, name, generation);
  if (!value.ok()) return StaleIfGone(value.status(), ino);  // A missing name is ENODATA.
  return value;
}

absl::Status Filesystem::SetXattr(InodeId ino, std::string_view name, std::string_view value,
                                  uint32_t flags) {
  RETURN_IF_ERROR(CheckLive());
  // Before and after, whatever the answer (an unanswered call may have been
  // applied): no GetXattr running meanwhile notes the name absent.
  InvalidateAttr(ino);
  absl::Status s = client_->SetXattr(scope_, ino, name, value, flags);
  InvalidateAttr(ino);
  return StaleIfGone(s, ino);
}

absl::StatusOr<std::string> Filesystem::ListXattr(InodeId ino) {
  RETURN_IF_ERROR(CheckLive());
  absl::StatusOr<std::vector<std::string>> names = client_->ListXattr(scope_, ino);
  if (!names.ok()) return StaleIfGone(names.status(), ino);
  std::string out;
  for (const std::string& n : *names) {
    out += n;
    out.push_back('\0');
  }
  return out;
}

absl::Status Filesystem::RemoveXattr(InodeId ino, std::string_view name) {
  RETURN_IF_ERROR(CheckLive());
  InvalidateAttr(ino);  // As SetXattr.
  absl::Status s = client_->RemoveXattr(scope_, ino, name);
  InvalidateAttr(ino);
  return StaleIfGone(s, ino);
}

absl::StatusOr<struct statvfs> Filesystem::StatFs() {
  RETURN_IF_ERROR(CheckLive());
  ASSIGN_OR_RETURN(ScopeUsage usage, client_->StatFs(scope_));
  struct statvfs st {};
  st.f_bsize = kStatFsBlock;
  st.f_frsize = kStatFsBlock;
  st.f_blocks = usage.quota_bytes / kStatFsBlock;
  const uint64_t free_bytes = usage.quota_bytes > usage.bytes ? usage.quota_bytes - usage.bytes : 0;
  st.f_bfree = free_bytes / kStatFsBlock;
  st.f_bavail = st.f_bfree;
  // Inodes are not limited: report plenty free.
  constexpr uint64_t kInodes = uint64_t{1} << 32;
  st.f_files = std::max(kInodes, usage.inodes);
  st.f_ffree = st.f_files - usage.inodes;
  st.f_favail = st.f_ffree;
  st.f_namemax = kMaxNameBytes;
  return st;
}

}  // namespace traincache::node
