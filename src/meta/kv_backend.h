// KvBackend: the few ordered key-value operations the metadata store needs —
// point reads, bounded range scans, consistent snapshots and atomic batches.
// The POSIX logic (kv_metadata_store.h) is written once against this
// interface; a std::map (memory_metadata_store.cc) and RocksDB
// (rocks_metadata_store.cc) implement it, so the in-memory twin and the real
// store are the same code over different backends.
//
// Keys compare bytewise (unsigned), as RocksDB's default comparator and
// std::string's operator< both do.
//
// Thread-safe: every method may be called concurrently; so may the reads of
// the shared Latest() view. A snapshot view and every iterator are used by
// one thread at a time; an iterator must not outlive its view.
#ifndef TRAINCACHE_META_KV_BACKEND_H_
#define TRAINCACHE_META_KV_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace traincache::meta {

// Changes applied together or not at all.
class KvBatch {
 public:
  enum class Kind { kPut, kDelete, kDeleteRange };
  struct Op {
    Kind kind;
    std::string key;    // kDeleteRange: begin (inclusive).
    std::string value;  // kDeleteRange: end (exclusive).
  };

  void Put(std::string key, std::string value) {
    ops_.push_back({Kind::kPut, std::move(key), std::move(value)});
  }
  void Delete(std::string key) { ops_.push_back({Kind::kDelete, std::move(key), {}}); }
  void DeleteRange(std::string begin, std::string end) {
    ops_.push_back({Kind::kDeleteRange, std::move(begin), std::move(end)});
  }
  // In order; a later op on the same key wins.
  const std::vector<Op>& ops() const { return ops_; }
  bool empty() const { return ops_.empty(); }

 private:
  std::vector<Op> ops_;
};

// Walks keys in [lower, upper) in order. Starts unpositioned: call Seek.
class KvIterator {
 public:
  virtual ~KvIterator() = default;
  // Positions at the first key >= max(key, lower).
  virtual void Seek(std::string_view key) = 0;
  virtual bool Valid() const = 0;
  virtual void Next() = 0;  // Requires Valid().
  virtual std::string_view key() const = 0;
  virtual std::string_view value() const = 0;
  // OK, or the error that made Valid() false early.
  virtual absl::Status status() const = 0;
};

class KvView {
 public:
  virtual ~KvView() = default;
  // The value of `key`, nullopt if absent; INTERNAL/DATA_LOSS on failure.
  virtual absl::StatusOr<std::optional<std::string>> Get(std::string_view key) = 0;
  // Iterator over [lower, upper); an empty `upper` means no upper bound.
  virtual std::unique_ptr<KvIterator> NewIterator(std::string lower, std::string upper) = 0;
};

class KvBackend {
 public:
  virtual ~KvBackend() = default;

  // A consistent point-in-time view for read-only operations that read
  // several keys. Hold it briefly, and never call Write while holding one
  // (the memory backend's snapshot is a reader lock).
  virtual std::unique_ptr<KvView> NewSnapshot() = 0;
  // A view whose every read sees the latest written state. Mutations read
  // through it: the per-scope mutex keeps their scope's keys still meanwhile.
  virtual KvView& Latest() = 0;

  // Applies `batch` atomically. Visible to all readers on return, not yet
  // necessarily durable: returns a token to pass to WaitDurable.
  virtual absl::StatusOr<uint64_t> Write(const KvBatch& batch) = 0;
  // Returns once every write up to `token` is durable (concurrent callers
  // share one sync).
  virtual absl::Status WaitDurable(uint64_t token) = 0;
  // The token of the newest visible write (to make a read-only answer
  // durable before returning it).
  virtual uint64_t LastToken() = 0;
  // Best effort: reclaim the space of the (deleted) range [begin, end).
  virtual void CompactRange(const std::string& begin, const std::string& end) {}
};

// The std::map backend (memory_metadata_store.cc). Never fails.
std::unique_ptr<KvBackend> NewMemoryKvBackend();
// Opens (creating) a RocksDB at `path` (rocks_metadata_store.cc): writes
// unsynced, WaitDurable syncs the WAL (shared by concurrent callers).
// INTERNAL/DATA_LOSS naming the path if it cannot be opened.
absl::StatusOr<std::unique_ptr<KvBackend>> OpenRocksKvBackend(const std::string& path);

}  // namespace traincache::meta

#endif  // TRAINCACHE_META_KV_BACKEND_H_
