// The disk NodeTier (node_tier.h): one sparse image file per content, an
// index file next to each image, LRU by bytes over whole images.
//
// Layout under options.dir:
//   <kind>/<scope id>/<ino>.<version>.img   the content's bytes, chunk i at
//                                           i*chunk_size, holes where absent
//   <kind>/<scope id>/<ino>.<version>.idx   which chunks the image holds
//   ....idx.tmp                             an index being written
//
// Index file (little-endian): "TCTIDX01", u32 chunk_size, u64 ino, u64
// version, u64 size, u64 last_used, u64 present count, then per present
// chunk: u64 index, u32 stored bytes, u8 whole (1: the stored bytes are the
// whole chunk, checked against the ref's id; 0: a prefix, followed by its own
// 32-byte SHA-256), and last the SHA-256 of everything before it. It is
// written to a temporary file and renamed over the old one, without fsync:
// after a crash it may be stale, but it never needs to be right, because
// every chunk it lists is checked against its hash the first time it is read
// after a restart (a stale entry reads as corrupt and is fetched again; a
// missing entry is fetched again). An index that does not parse drops its
// image. Indexes are written when an image becomes complete, at most once a
// second per image otherwise, and on close.
//
// Concurrency: one mutex (mu_) guards the index in memory, the LRU list and
// the counters; image I/O runs outside it on an image pinned by `pins`, as
// is an image lent out for passthrough (LeaseImage) while its lease lives
// (eviction skips pinned images; DropScope and DropOtherVersions do not, and
// mark the image `dropped` so the I/O in flight leaves no trace in the index).
// A chunk being stored is in state kStoring: reads see it absent and a second
// Store of it returns at once. A chunk loaded from an index is kUnverified
// until its first read (or Complete) hashes it; the state only changes under
// mu_, so a drop of a corrupt chunk cannot race a Store of it (only absent
// chunks are stored).

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "common/aligned_buffer.h"
#include "node/tier_common.h"
#include "traincache/node_tier.h"
#include "traincache/status.h"

namespace traincache {
namespace {

namespace fs = std::filesystem;
using node_internal::CheckChunkRange;
using node_internal::ImageName;
using node_internal::InodePrefix;
using node_internal::ScopePrefix;

constexpr char kIndexMagic[8] = {'T', 'C', 'T', 'I', 'D', 'X', '0', '1'};
constexpr auto kIndexFlushInterval = std::chrono::seconds(1);
// Offset, length and memory alignment of O_DIRECT writes: the largest
// logical block size in common use, so that any disk takes it.
constexpr size_t kDirectAlign = 4096;

absl::Status IoError(const std::string& what, const std::string& path, int err) {
  return absl::InternalError(fmt::format("{} {}: {}", what, path, std::strerror(err)));
}

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads up to n bytes at `offset`; returns the count (short only at end of
// file). NOT_FOUND if the file does not exist, INTERNAL on other errors.
absl::StatusOr<size_t> PreadFull(const std::string& path, uint64_t offset, size_t n, char* out) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return absl::NotFoundError(fmt::format("{} is missing", path));
    return IoError("open", path, errno);
  }
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd.get(), out + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return IoError("read", path, errno);
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

void PutU32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }

// Consumes fixed-size little-endian fields from a byte string.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  bool Get(T* v) {
    if (data_.size() < sizeof(T)) return false;
    std::memcpy(v, data_.data(), sizeof(T));
    data_.remove_prefix(sizeof(T));
    return true;
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (data_.size() < n) return false;
    *out = data_.substr(0, n);
    data_.remove_prefix(n);
    return true;
  }
  bool done() const { return data_.empty(); }

 private:
  std::string_view data_;
};

enum class ChunkState : uint8_t { kAbsent, kStoring, kUnverified, kPresent };

struct Slot {
  ChunkState state = ChunkState::kAbsent;
  uint32_t stored = 0;  // Bytes in the image (counted in `bytes` unless kAbsent).
  bool whole = true;    // The stored bytes are the whole chunk: they hash to the ref's id.
  ChunkId prefix_id;    // !whole: SHA-256 of the stored prefix.
};

struct Image {
  explicit Image(ContentKey k) : key(std::move(k)), name(ImageName(key)) {}
  ContentKey key;
  std::string name;  // ImageName(key)
  uint64_t size = 0;
  uint32_t chunk_size = 0;
  std::vector<Slot> slots;
  uint64_t bytes = 0;      // Sum of `stored` over non-absent slots.
  uint64_t last_used = 0;  // Tick of the last read or store (persisted: LRU order).
  int pins = 0;            // I/O calls and leases on the image; eviction skips it.
  bool dropped = false;    // No longer in the index; I/O in flight must not record.
  bool index_dirty = false;
  std::chrono::steady_clock::time_point last_flush;
  std::list<std::shared_ptr<Image>>::iterator lru;
};

class DiskTier final : public NodeTier {
 public:
  DiskTier(DiskTierOptions options, uint64_t capacity)
      : options_(std::move(options)), direct_writes_(options_.direct_writes) {
    stats_.capacity_bytes = capacity;
  }

  ~DiskTier() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, image] : images_) {
      if (image->index_dirty) IGNORE_ERROR(WriteIndexLocked(*image));
    }
  }

  // Loads every index under the tier folder; removes leftovers.
  absl::Status Load() {
    std::error_code ec;
    for (const char* kind_name : {"project", "team"}) {
      fs::path kind_dir = fs::path(options_.dir) / kind_name;
      fs::create_directories(kind_dir, ec);
      if (ec) return IoError("mkdir", kind_dir.string(), ec.value());
      const ScopeKind kind = std::string_view(kind_name) == "project" ? ScopeKind::kProject
                                                                       : ScopeKind::kTeam;
      for (const fs::directory_entry& scope_dir : fs::directory_iterator(kind_dir, ec)) {
        absl::StatusOr<Scope> scope = Scope::Make(kind, scope_dir.path().filename().string());
        if (!scope.ok()) {
          spdlog::warn("node tier: removing {}: not a scope folder", scope_dir.path().string());
          fs::remove_all(scope_dir.path(), ec);
          continue;
        }
        LoadScope(*scope, scope_dir.path());
      }
      if (ec) return IoError("list", kind_dir.string(), ec.value());
    }
    // Least recently used at the back.
    std::vector<std::shared_ptr<Image>> order;
    for (auto& [name, image] : images_) order.push_back(image);
    std::sort(order.begin(), order.end(),
              [](const auto& a, const auto& b) { return a->last_used > b->last_used; });
    for (auto& image : order) {
      lru_.push_back(image);
      image->lru = std::prev(lru_.end());
      tick_ = std::max(tick_, image->last_used);
    }
    spdlog::info("node tier {}: {} images, {} bytes, capacity {} bytes", options_.dir,
                 images_.size(), stats_.used_bytes, stats_.capacity_bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Read(const ContentKey& key, const ChunkMap& map, uint64_t index,
                            uint64_t offset, size_t n, char* out) override {
    RETURN_IF_ERROR(CheckChunkRange(map, index, offset, n));
    const ChunkRef& ref = map.chunks[index];
    if (!ref.id) {
      std::memset(out, 0, n);
      return true;
    }
    std::shared_ptr<Image> image;
    Slot slot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      image = FindLocked(key, map);
      if (image == nullptr || !Readable(image->slots[index].state)) {
        ++stats_.misses;
        return false;
      }
      TouchLocked(*image);
      slot = image->slots[index];
      ++image->pins;
    }
    Unpin unpin(this, image.get());
    const std::string path = ImagePath(key);
    const uint64_t base = index * uint64_t{map.chunk_size};

    if (slot.state == ChunkState::kUnverified) {
      ASSIGN_OR_RETURN(std::string bytes, VerifyChunk(image, index, ref, slot));
      if (bytes.size() != slot.stored) return false;  // Dropped (and counted) by VerifyChunk.
      CopyOut(bytes, offset, n, out);
    } else {
      size_t want = offset < slot.stored ? std::min<size_t>(n, slot.stored - offset) : 0;
      absl::StatusOr<size_t> got = PreadFull(path, base + offset, want, out);
      if (got.status().code() == absl::StatusCode::kNotFound || (got.ok() && *got < want)) {
        // The image lost bytes under us (deleted or truncated from outside).
        DropChunk(image, index, /*corrupt=*/true);
        return false;
      }
      RETURN_IF_ERROR(got.status());
      std::memset(out + want, 0, n - want);
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.hits;
    stats_.hit_bytes += n;
    return true;
  }

  absl::Status Store(const ContentKey& key, const ChunkMap& map, uint64_t index,
                     std::string_view bytes) override {
    RETURN_IF_ERROR(CheckChunkRange(map, index, 0, 0));
    const ChunkRef& ref = map.chunks[index];
    if (!ref.id) return absl::InvalidArgumentError(fmt::format("chunk {} is a hole", index));
    const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(bytes.size(), ref.length));
    const bool whole = len == bytes.size();
    const ChunkId prefix_id = whole ? ChunkId() : ChunkId::Of(bytes.substr(0, len));

    std::shared_ptr<Image> image;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ASSIGN_OR_RETURN(image, FindOrCreateLocked(key, map));
      TouchLocked(*image);
      if (image->slots[index].state != ChunkState::kAbsent) return absl::OkStatus();
      MakeRoomLocked(len, image.get());
      if (stats_.used_bytes + len > stats_.capacity_bytes) {
        return PosixError(ENOSPC, fmt::format("node tier {} full: {} of {} bytes used and "
                                              "nothing more to evict for {} bytes",
                                              options_.dir, stats_.used_bytes,
                                              stats_.capacity_bytes, len));
      }
      // Reserve the bytes now, so that concurrent stores evict for each other.
      Slot& slot = image->slots[index];
      slot.state = ChunkState::kStoring;
      slot.stored = len;
      image->bytes += len;
      stats_.used_bytes += len;
      ++image->pins;
    }
    Unpin unpin(this, image.get());
    absl::Status written =
        WriteChunk(image.get(), index * uint64_t{map.chunk_size}, bytes.substr(0, len));

    std::lock_guard<std::mutex> lock(mu_);
    if (image->dropped) return absl::OkStatus();  // Dropped meanwhile: nothing to record.
    Slot& slot = image->slots[index];
    if (!written.ok()) {
      slot.state = ChunkState::kAbsent;
      image->bytes -= len;
      stats_.used_bytes -= len;
      return written;
    }
    slot.state = ChunkState::kPresent;
    slot.whole = whole;
    slot.prefix_id = prefix_id;
    image->index_dirty = true;
    if (CompleteLocked(*image, map) ||
        std::chrono::steady_clock::now() - image->last_flush >= kIndexFlushInterval) {
      IGNORE_ERROR(WriteIndexLocked(*image));  // Logged; the next flush tries again.
    }
    return absl::OkStatus();
  }

  bool Contains(const ContentKey& key, const ChunkMap& map, uint64_t index) override {
    if (index >= map.chunks.size()) return false;
    if (!map.chunks[index].id) return true;
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<Image> image = FindLocked(key, map);
    return image != nullptr && Readable(image->slots[index].state);
  }

  bool Complete(const ContentKey& key, const ChunkMap& map) override {
    std::shared_ptr<Image> image;
    std::vector<uint64_t> unverified;
    {
      std::lock_guard<std::mutex> lock(mu_);
      image = FindLocked(key, map);
      if (image == nullptr) {
        return std::none_of(map.chunks.begin(), map.chunks.end(),
                            [](const ChunkRef& ref) { return ref.id.has_value(); });
      }
      if (!CompleteLocked(*image, map)) return false;
      for (size_t i = 0; i < image->slots.size(); ++i) {
        if (image->slots[i].state == ChunkState::kUnverified) unverified.push_back(i);
      }
      if (unverified.empty()) return true;
      ++image->pins;
    }
    Unpin unpin(this, image.get());
    for (uint64_t i : unverified) {
      Slot slot;
      {
        std::lock_guard<std::mutex> lock(mu_);
        slot = image->slots[i];
      }
      if (slot.state != ChunkState::kUnverified) continue;
      absl::StatusOr<std::string> bytes = VerifyChunk(image, i, map.chunks[i], slot);
      if (!bytes.ok() || bytes->size() != slot.stored) return false;
    }
    std::lock_guard<std::mutex> lock(mu_);
    return !image->dropped && CompleteLocked(*image, map);
  }

  std::string ImagePath(const ContentKey& key) const override {
    return options_.dir + "/" + ImageName(key) + ".img";
  }

  absl::StatusOr<std::unique_ptr<ImageLease>> LeaseImage(const ContentKey& key,
                                                         const ChunkMap& map) override {
    if (!Complete(key, map)) {
      return absl::NotFoundError(fmt::format("{} is not complete in the tier", ImageName(key)));
    }
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<Image> image = FindLocked(key, map);
    // Complete with no image: holes only, nothing to hand out. (Checked again
    // under the lock, and the file opened under it: a drop and a new Store
    // of the same key in between would leave a partial file at the path.)
    if (image == nullptr || image->dropped || !CompleteLocked(*image, map) ||
        std::any_of(image->slots.begin(), image->slots.end(),
                    [](const Slot& s) { return s.state == ChunkState::kUnverified; })) {
      return absl::NotFoundError(fmt::format("{} has no complete image", ImageName(key)));
    }
    const std::string path = ImagePathOf(image->name);
    // Writable only so that DropScope can empty it (ftruncate).
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return IoError("open", path, errno);
    TouchLocked(*image);
    ++image->pins;
    auto lease = std::make_unique<Lease>(this, std::move(image), fd);
    leases_.insert(lease.get());
    return lease;
  }

  void Distrust(const ContentKey& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = images_.find(ImageName(key));
    if (it == images_.end()) return;
    for (Slot& slot : it->second->slots) {
      if (slot.state == ChunkState::kPresent) slot.state = ChunkState::kUnverified;
    }
  }

  absl::Status DropScope(const Scope& scope) override {
    std::lock_guard<std::mutex> lock(mu_);
    // A deleted scope's bytes must not outlive it in a file the kernel still
    // holds open (a passthrough backing file): leased images, even ones
    // already unlinked as superseded, are emptied through their lease.
    const std::string prefix = ScopePrefix(scope);
    for (const Lease* lease : leases_) {
      if (lease->image().name.compare(0, prefix.size(), prefix) != 0) continue;
      if (ftruncate(lease->fd(), 0) != 0) {
        spdlog::warn("node tier: emptying {}: {}", ImagePathOf(lease->image().name),
                     std::strerror(errno));
      }
    }
    DropPrefixLocked(prefix, "");
    // Also whatever the index does not know (leftovers of a crash).
    std::error_code ec;
    fs::path dir = fs::path(options_.dir) / std::string(scope.kind_name()) / scope.id();
    fs::remove_all(dir, ec);
    if (ec) return IoError("remove", dir.string(), ec.value());
    return absl::OkStatus();
  }

  absl::Status DropOtherVersions(const Scope& scope, InodeId ino, uint64_t keep_version) override {
    std::lock_guard<std::mutex> lock(mu_);
    DropPrefixLocked(InodePrefix(scope, ino), ImageName(ContentKey{scope, ino, keep_version}));
    return absl::OkStatus();
  }

  TierStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    TierStats stats = stats_;
    stats.images = images_.size();
    return stats;
  }

 private:
  // Unpins an image when the I/O on it is over.
  class Unpin {
   public:
    Unpin(DiskTier* tier, Image* image) : tier_(tier), image_(image) {}
    ~Unpin() {
      std::lock_guard<std::mutex> lock(tier_->mu_);
      --image_->pins;
    }

   private:
    DiskTier* tier_;
    Image* image_;
  };

  // An image lent out for passthrough: pinned and open until destroyed.
  class Lease final : public ImageLease {
   public:
    Lease(DiskTier* tier, std::shared_ptr<Image> image, int fd)
        : tier_(tier), image_(std::move(image)), fd_(fd) {}
    ~Lease() override {
      close(fd_);
      std::lock_guard<std::mutex> lock(tier_->mu_);
      --image_->pins;
      tier_->leases_.erase(this);
    }
    int fd() const override { return fd_; }
    const Image& image() const { return *image_; }

   private:
    DiskTier* tier_;
    std::shared_ptr<Image> image_;
    const int fd_;
  };

  static bool Readable(ChunkState s) {
    return s == ChunkState::kPresent || s == ChunkState::kUnverified;
  }

  std::string IndexPath(const std::string& name) const {
    return options_.dir + "/" + name + ".idx";
  }
  std::string ImagePathOf(const std::string& name) const {
    return options_.dir + "/" + name + ".img";
  }

  static void CopyOut(const std::string& bytes, uint64_t offset, size_t n, char* out) {
    size_t have = offset < bytes.size() ? std::min<size_t>(n, bytes.size() - offset) : 0;
    if (have > 0) std::memcpy(out, bytes.data() + offset, have);
    std::memset(out + have, 0, n - have);
  }

  // Reads the stored bytes of an unverified chunk and checks them against
  // their hash. Returns them if they match (the chunk becomes kPresent);
  // otherwise drops the chunk, counts it corrupt and returns an empty string
  // (a chunk always has at least one stored byte). INTERNAL on I/O errors.
  absl::StatusOr<std::string> VerifyChunk(const std::shared_ptr<Image>& image, uint64_t index,
                                          const ChunkRef& ref, const Slot& slot) {
    std::string bytes(slot.stored, '\0');
    absl::StatusOr<size_t> got = PreadFull(ImagePathOf(image->name),
                                           index * uint64_t{image->chunk_size}, slot.stored,
                                           bytes.data());
    if (!got.ok() && got.status().code() != absl::StatusCode::kNotFound) return got.status();
    bool ok = got.ok() && *got == slot.stored &&
              ChunkId::Of(bytes) == (slot.whole ? *ref.id : slot.prefix_id);
    if (!ok) {
      spdlog::warn("node tier: chunk {} of {} does not match its id after a restart; dropped",
                   index, image->name);
      DropChunk(image, index, /*corrupt=*/true);
      return std::string();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (image->slots[index].state == ChunkState::kUnverified) {
      image->slots[index].state = ChunkState::kPresent;
    }
    return bytes;
  }

  // Marks a readable chunk absent, punches its range out of the image and
  // counts a miss (and a corrupt chunk).
  void DropChunk(const std::shared_ptr<Image>& image, uint64_t index, bool corrupt) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.misses;
    Slot& slot = image->slots[index];
    if (image->dropped || !Readable(slot.state)) return;  // Someone else did.
    if (corrupt) ++stats_.corrupt_chunks;
    const std::string path = ImagePathOf(image->name);
    Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() >= 0 &&
        fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(index * uint64_t{image->chunk_size}), slot.stored) != 0) {
      // The chunk is absent in the index either way; its next Store overwrites it.
      spdlog::warn("node tier: punching chunk {} out of {}: {}", index, path,
                   std::strerror(errno));
    }
    slot.state = ChunkState::kAbsent;
    image->bytes -= slot.stored;
    stats_.used_bytes -= slot.stored;
    image->index_dirty = true;
  }

  // Writes `bytes` at `offset` of the image, creating it (sparse, at its
  // full size) if needed: the block-aligned part with O_DIRECT if
  // options_.direct_writes (falling back to buffered writes for good where
  // the file system refuses O_DIRECT), the rest buffered. On ENOSPC evicts
  // another image and retries; RESOURCE_EXHAUSTED (ENOSPC) when there is none
  // left, with the range punched out again.
  absl::Status WriteChunk(Image* image, uint64_t offset, std::string_view bytes) {
    const std::string path = ImagePathOf(image->name);
    Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (fd.get() < 0) return IoError("open", path, errno);
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return IoError("stat", path, errno);
    if (static_cast<uint64_t>(st.st_size) < image->size &&
        ftruncate(fd.get(), static_cast<off_t>(image->size)) != 0) {
      return IoError("truncate", path, errno);
    }
    size_t done = 0;
    if (direct_writes_ && offset % kDirectAlign == 0 && bytes.size() >= kDirectAlign) {
      absl::StatusOr<size_t> direct = WriteDirect(image, path, offset, bytes);
      if (!direct.ok()) return Unwrite(fd.get(), path, offset, bytes.size(), direct.status());
      done = *direct;
    }
    while (done < bytes.size()) {
      ssize_t w = pwrite(fd.get(), bytes.data() + done, bytes.size() - done,
                         static_cast<off_t>(offset + done));
      if (w >= 0) {
        done += static_cast<size_t>(w);
        continue;
      }
      if (errno == EINTR) continue;
      int err = errno;
      if ((err == ENOSPC || err == EDQUOT) && EvictOne(image)) continue;
      return Unwrite(fd.get(), path, offset, bytes.size(), WriteError(path, bytes.size(), err));
    }
    return absl::OkStatus();
  }

  // Writes the block-aligned prefix of `bytes` at `offset` (aligned) through
  // an O_DIRECT descriptor, from a bounce buffer if `bytes` is not aligned in
  // memory. Returns how many bytes it wrote: 0 if the file system refuses
  // O_DIRECT (then direct writes are off from now on), less than the prefix
  // only after an odd short write (the caller writes the rest buffered).
  absl::StatusOr<size_t> WriteDirect(Image* image, const std::string& path, uint64_t offset,
                                     std::string_view bytes) {
    const size_t aligned = bytes.size() / kDirectAlign * kDirectAlign;
    Fd fd(open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
    if (fd.get() < 0) {
      if (errno != EINVAL) return IoError("open", path, errno);
      DirectRefused();
      return 0;
    }
    const char* src = bytes.data();
    if (reinterpret_cast<uintptr_t>(src) % kDirectAlign != 0) {
      char* bounce = ThreadAlignedBuffer(aligned, kDirectAlign);
      if (bounce == nullptr) return 0;  // No memory for it: written buffered.
      std::memcpy(bounce, src, aligned);
      src = bounce;
    }
    size_t done = 0;
    while (done < aligned) {
      ssize_t w = pwrite(fd.get(), src + done, aligned - done, static_cast<off_t>(offset + done));
      if (w >= 0) {
        done += static_cast<size_t>(w);
        if (done % kDirectAlign != 0) break;  // Odd; the rest goes buffered.
        continue;
      }
      if (errno == EINTR) continue;
      const int err = errno;
      if ((err == ENOSPC || err == EDQUOT) && EvictOne(image)) continue;
      if (err != EINVAL) return WriteError(path, bytes.size(), err);
      DirectRefused();
      break;
    }
    return done;
  }

  // The file system refused O_DIRECT: buffered writes from now on.
  void DirectRefused() {
    // IGNORE_ERROR: buffered writes do the same job, only at a higher cost.
    if (direct_writes_.exchange(false)) {
      spdlog::warn("node tier {}: the file system refuses O_DIRECT; writing through the page "
                   "cache",
                   options_.dir);
    }
  }

  absl::Status WriteError(const std::string& path, size_t n, int err) {
    if (err == ENOSPC || err == EDQUOT) {
      return PosixError(ENOSPC, fmt::format("node tier {}: disk full storing {} bytes into {} "
                                            "and nothing more to evict",
                                            options_.dir, n, path));
    }
    return IoError("write", path, err);
  }

  // Punches a failed write's range out of the image (so that no stale bytes
  // stay allocated) and returns `error`.
  absl::Status Unwrite(int fd, const std::string& path, uint64_t offset, size_t n,
                       absl::Status error) {
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(n)) != 0) {
      spdlog::warn("node tier: punching a failed write out of {}: {}", path,
                   std::strerror(errno));
    }
    return error;
  }

  // Evicts the least recently used unpinned image other than `keep`; false
  // if there is none.
  bool EvictOne(const Image* keep) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      if (it->get() != keep && (*it)->pins == 0) {
        std::shared_ptr<Image> victim = *it;
        stats_.evicted_bytes += victim->bytes;
        DropLocked(victim);
        return true;
      }
    }
    return false;
  }

  // Evicts least recently used images (never `keep`, never a pinned one)
  // if storing `len` more bytes would cross the high watermark, down to the
  // low one.
  void MakeRoomLocked(uint64_t len, const Image* keep) {
    const double capacity = static_cast<double>(stats_.capacity_bytes);
    if (stats_.used_bytes + len <= options_.high_watermark * capacity) return;
    // Victims are chosen first: dropping one erases its node of lru_.
    const double target = options_.low_watermark * capacity;
    uint64_t used = stats_.used_bytes;
    std::vector<std::shared_ptr<Image>> victims;
    for (auto it = lru_.rbegin(); it != lru_.rend() && used + len > target; ++it) {
      if (it->get() == keep || (*it)->pins > 0) continue;
      victims.push_back(*it);
      used -= (*it)->bytes;
    }
    for (const std::shared_ptr<Image>& victim : victims) {
      stats_.evicted_bytes += victim->bytes;
      DropLocked(victim);
    }
  }

  bool CompleteLocked(const Image& image, const ChunkMap& map) const {
    for (size_t i = 0; i < map.chunks.size(); ++i) {
      if (map.chunks[i].id && !Readable(image.slots[i].state)) return false;
    }
    return true;
  }

  void TouchLocked(Image& image) {
    image.last_used = ++tick_;
    image.index_dirty = true;  // Recency is persisted too (at the latest on close).
    lru_.splice(lru_.begin(), lru_, image.lru);
  }

  // The image of `key` if it has `map`'s shape. A content never changes, so
  // another shape means a caller's bug; such an image reads as absent.
  std::shared_ptr<Image> FindLocked(const ContentKey& key, const ChunkMap& map) {
    auto it = images_.find(ImageName(key));
    if (it == images_.end()) return nullptr;
    const Image& image = *it->second;
    if (image.size != map.size || image.chunk_size != map.chunk_size ||
        image.slots.size() != map.chunks.size()) {
      return nullptr;
    }
    return it->second;
  }

  absl::StatusOr<std::shared_ptr<Image>> FindOrCreateLocked(const ContentKey& key,
                                                            const ChunkMap& map) {
    std::string name = ImageName(key);
    if (auto it = images_.find(name); it != images_.end()) {
      if (std::shared_ptr<Image> image = FindLocked(key, map)) return image;
      spdlog::warn("node tier: {} changed shape; dropping the old image", name);
      DropLocked(it->second);
    }
    std::error_code ec;
    fs::path dir = fs::path(options_.dir) / std::string(key.scope.kind_name()) / key.scope.id();
    fs::create_directories(dir, ec);
    if (ec) return IoError("mkdir", dir.string(), ec.value());
    auto image = std::make_shared<Image>(key);
    image->size = map.size;
    image->chunk_size = map.chunk_size;
    image->slots.resize(map.chunks.size());
    lru_.push_front(image);
    image->lru = lru_.begin();
    images_.emplace(name, image);
    return image;
  }

  // Removes an image from the index and its files from the disk.
  void DropLocked(const std::shared_ptr<Image>& image) {
    image->dropped = true;
    stats_.used_bytes -= image->bytes;
    lru_.erase(image->lru);
    images_.erase(image->name);
    for (const std::string& path : {ImagePathOf(image->name), IndexPath(image->name)}) {
      if (unlink(path.c_str()) != 0 && errno != ENOENT) {
        spdlog::warn("node tier: removing {}: {}", path, std::strerror(errno));
      }
    }
  }

  void DropPrefixLocked(const std::string& prefix, const std::string& keep) {
    for (auto it = images_.lower_bound(prefix);
         it != images_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
      std::shared_ptr<Image> image = (it++)->second;
      if (image->name != keep) DropLocked(image);
    }
  }

  absl::Status WriteIndexLocked(Image& image) {
    std::string data(kIndexMagic, sizeof(kIndexMagic));
    PutU32(data, image.chunk_size);
    PutU64(data, image.key.ino);
    PutU64(data, image.key.version);
    PutU64(data, image.size);
    PutU64(data, image.last_used);
    uint64_t present = 0;
    for (const Slot& slot : image.slots) present += Readable(slot.state) ? 1 : 0;
    PutU64(data, present);
    for (size_t i = 0; i < image.slots.size(); ++i) {
      const Slot& slot = image.slots[i];
      if (!Readable(slot.state)) continue;
      PutU64(data, i);
      PutU32(data, slot.stored);
      data.push_back(slot.whole ? 1 : 0);
      if (!slot.whole) data.append(slot.prefix_id.bytes());
    }
    data.append(ChunkId::Of(data).bytes());

    const std::string path = IndexPath(image.name);
    const std::string tmp = path + ".tmp";
    image.last_flush = std::chrono::steady_clock::now();
    absl::Status status = [&]() -> absl::Status {
      Fd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (fd.get() < 0) return IoError("open", tmp, errno);
      size_t done = 0;
      while (done < data.size()) {
        ssize_t w = write(fd.get(), data.data() + done, data.size() - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return IoError("write", tmp, errno);
        done += static_cast<size_t>(w);
      }
      if (rename(tmp.c_str(), path.c_str()) != 0) return IoError("rename", path, errno);
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      unlink(tmp.c_str());  // IGNORE_ERROR: best effort.
      spdlog::warn("node tier: writing the index of {}: {}", image.name, status.message());
      return status;
    }
    image.index_dirty = false;
    return absl::OkStatus();
  }

  // Loads the images of one scope folder; removes files no valid index owns.
  void LoadScope(const Scope& scope, const fs::path& dir) {
    std::error_code ec;
    std::vector<fs::path> images, indexes, junk;
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
      const std::string file = entry.path().filename().string();
      if (file.ends_with(".img")) {
        images.push_back(entry.path());
      } else if (file.ends_with(".idx")) {
        indexes.push_back(entry.path());
      } else {
        junk.push_back(entry.path());
      }
    }
    for (const fs::path& idx : indexes) {
      fs::path img = idx;
      img.replace_extension(".img");
      if (!LoadImage(scope, idx, img)) {
        junk.push_back(idx);
        junk.push_back(img);
      }
    }
    for (const fs::path& img : images) {
      fs::path idx = img;
      idx.replace_extension(".idx");
      if (!fs::exists(idx, ec)) junk.push_back(img);
    }
    for (const fs::path& path : junk) fs::remove(path, ec);  // IGNORE_ERROR: leftovers.
  }

  // Loads one index; false if it (or its image) is unusable.
  bool LoadImage(const Scope& scope, const fs::path& idx, const fs::path& img) {
    // "<ino>.<version>.idx"
    std::string stem = idx.stem().string();
    size_t dot = stem.find('.');
    uint64_t ino = 0, version = 0;
    if (dot == std::string::npos || !absl::SimpleAtoi(stem.substr(0, dot), &ino) ||
        !absl::SimpleAtoi(stem.substr(dot + 1), &version)) {
      return false;
    }
    std::string data;
    {
      std::error_code ec;
      uint64_t size = fs::file_size(idx, ec);
      if (ec || size < sizeof(kIndexMagic) + ChunkId::kSize || size > (256u << 20)) return false;
      data.resize(size);
      absl::StatusOr<size_t> got = PreadFull(idx.string(), 0, size, data.data());
      if (!got.ok() || *got != size) return false;
    }
    std::string_view body(data.data(), data.size() - ChunkId::kSize);
    if (ChunkId::Of(body).bytes() != std::string_view(data).substr(body.size())) {
      spdlog::warn("node tier: {} fails its checksum; dropping the image", idx.string());
      return false;
    }
    Reader r(body);
    std::string_view magic;
    auto image = std::make_shared<Image>(ContentKey{scope, ino, version});
    uint64_t idx_ino = 0, idx_version = 0, present = 0;
    if (!r.Bytes(sizeof(kIndexMagic), &magic) ||
        magic != std::string_view(kIndexMagic, sizeof(kIndexMagic)) ||
        !r.Get(&image->chunk_size) || !r.Get(&idx_ino) || !r.Get(&idx_version) ||
        !r.Get(&image->size) || !r.Get(&image->last_used) || !r.Get(&present) ||
        idx_ino != ino || idx_version != version || image->chunk_size < kMinChunkSize ||
        image->chunk_size > kMaxChunkSize) {
      return false;
    }
    const uint64_t chunks =
        image->size / image->chunk_size + (image->size % image->chunk_size != 0 ? 1 : 0);
    if (chunks > (uint64_t{1} << 32)) return false;
    image->slots.resize(chunks);
    for (uint64_t p = 0; p < present; ++p) {
      uint64_t index = 0;
      uint32_t stored = 0;
      uint8_t whole = 0;
      if (!r.Get(&index) || !r.Get(&stored) || !r.Get(&whole) || index >= chunks ||
          stored == 0 || stored > image->chunk_size) {
        return false;
      }
      Slot& slot = image->slots[index];
      slot.state = ChunkState::kUnverified;
      slot.stored = stored;
      slot.whole = whole != 0;
      if (!slot.whole) {
        std::string_view id;
        if (!r.Bytes(ChunkId::kSize, &id)) return false;
        slot.prefix_id = *ChunkId::FromBytes(std::string(id));
      }
      image->bytes += stored;
    }
    if (!r.done()) return false;

    struct stat st;
    if (stat(img.c_str(), &st) != 0) return false;  // A missing image: all absent.
    if (static_cast<uint64_t>(st.st_size) != image->size &&
        truncate(img.c_str(), static_cast<off_t>(image->size)) != 0) {
      return false;
    }
    stats_.used_bytes += image->bytes;
    images_.emplace(image->name, std::move(image));
    return true;
  }

  const DiskTierOptions options_;
  mutable std::mutex mu_;
  // guarded by mu_; by name, so that a scope's or an inode's images are a range.
  std::map<std::string, std::shared_ptr<Image>> images_;
  std::set<const Lease*> leases_;  // Images lent out (LeaseImage), guarded by mu_.
  std::list<std::shared_ptr<Image>> lru_;  // guarded by mu_; front: most recently used
  uint64_t tick_ = 0;                      // guarded by mu_; recency clock
  TierStats stats_;                        // guarded by mu_ (images is computed)
  std::atomic<bool> direct_writes_;        // Off once the file system refused O_DIRECT.
};

}  // namespace

absl::StatusOr<std::unique_ptr<NodeTier>> OpenDiskTier(const DiskTierOptions& options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("node tier: no folder given");
  if (!(options.low_watermark > 0 && options.low_watermark <= options.high_watermark &&
        options.high_watermark <= 1)) {
    return absl::InvalidArgumentError(
        fmt::format("node tier: watermarks must satisfy 0 < low ({}) <= high ({}) <= 1",
                    options.low_watermark, options.high_watermark));
  }
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return IoError("mkdir", options.dir, ec.value());
  uint64_t capacity = options.capacity_bytes;
  if (capacity == 0) {
    struct statvfs vfs;
    if (statvfs(options.dir.c_str(), &vfs) != 0) return IoError("statvfs", options.dir, errno);
    capacity = static_cast<uint64_t>(0.9 * static_cast<double>(vfs.f_blocks) *
                                     static_cast<double>(vfs.f_frsize));
  }
  auto tier = std::make_unique<DiskTier>(options, capacity);
  RETURN_IF_ERROR(tier->Load());
  return std::unique_ptr<NodeTier>(std::move(tier));
}

}  // namespace traincache
