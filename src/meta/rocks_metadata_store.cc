// The RocksDB store: KvMetadataStore over one RocksDB holding every scope
// (key layout in key_codec.h). This file is the one border where
// rocksdb::Status becomes absl::Status.
//
// Durability: a mutation's batch is written with sync=false under its scope's
// mutex (so batches become visible in order), then the mutation waits outside
// the mutex until the WAL is synced past its write; concurrent mutations
// share one SyncWAL (WalSyncer). A mutation returns only once durable, except
// the ones MetadataSync::kContentCommits lets return once written to the OS.
#include <fmt/format.h>
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <memory>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "meta/kv_backend.h"
#include "meta/kv_metadata_store.h"
#include "meta/wal_syncer.h"
#include "traincache/metadata_store.h"
#include "traincache/status.h"

namespace traincache {
namespace meta {
namespace {

constexpr size_t kBlockCacheBytes = 128u << 20;
constexpr int kBloomBitsPerKey = 10;

absl::Status FromRocks(const rocksdb::Status& s, std::string_view op, const std::string& path) {
  if (s.ok()) return absl::OkStatus();
  std::string message = fmt::format("rocksdb {} in {}: {}", op, path, s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(message);
  // A full disk is ENOSPC at the mount, as for chunk files, not EIO.
  if (s.IsNoSpace()) return PosixError(ENOSPC, message);
  return absl::InternalError(message);
}

class RocksIterator : public KvIterator {
 public:
  RocksIterator(rocksdb::DB* db, const rocksdb::Snapshot* snapshot, std::string lower,
                std::string upper, const std::string& path)
      : path_(path), lower_(std::move(lower)), upper_(std::move(upper)) {
    lower_slice_ = rocksdb::Slice(lower_);
    upper_slice_ = rocksdb::Slice(upper_);
    rocksdb::ReadOptions options;
    options.snapshot = snapshot;
    // The bounds let RocksDB stop at the range's end instead of reading on
    // into the next range (and its tombstones).
    options.iterate_lower_bound = &lower_slice_;
    if (!upper_.empty()) options.iterate_upper_bound = &upper_slice_;
    it_.reset(db->NewIterator(options));
  }

  void Seek(std::string_view key) override {
    it_->Seek(key < lower_ ? rocksdb::Slice(lower_) : rocksdb::Slice(key.data(), key.size()));
  }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  std::string_view key() const override {
    rocksdb::Slice k = it_->key();
    return {k.data(), k.size()};
  }
  std::string_view value() const override {
    rocksdb::Slice v = it_->value();
    return {v.data(), v.size()};
  }
  absl::Status status() const override { return FromRocks(it_->status(), "iterate", path_); }

 private:
  const std::string& path_;
  // The slices point into the strings, which must outlive the iterator.
  const std::string lower_, upper_;
  rocksdb::Slice lower_slice_, upper_slice_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

// Reads at a snapshot (owned, released with the view) or, with none, at the
// latest state.
class RocksView : public KvView {
 public:
  RocksView(rocksdb::DB* db, const std::string& path, bool snapshot)
      : db_(db), path_(path), snapshot_(snapshot ? db->GetSnapshot() : nullptr) {}
  ~RocksView() override {
    if (snapshot_ != nullptr) db_->ReleaseSnapshot(snapshot_);
  }

  absl::StatusOr<std::optional<std::string>> Get(std::string_view key) override {
    rocksdb::ReadOptions options;
    options.snapshot = snapshot_;
    std::string value;
    rocksdb::Status s = db_->Get(options, rocksdb::Slice(key.data(), key.size()), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    RETURN_IF_ERROR(FromRocks(s, "get", path_));
    return std::optional<std::string>(std::move(value));
  }

  std::unique_ptr<KvIterator> NewIterator(std::string lower, std::string upper) override {
    return std::make_unique<RocksIterator>(db_, snapshot_, std::move(lower), std::move(upper),
                                           path_);
  }

 private:
  rocksdb::DB* const db_;
  const std::string& path_;
  const rocksdb::Snapshot* const snapshot_;
};

class RocksKvBackend : public KvBackend {
 public:
  RocksKvBackend(std::string path, std::unique_ptr<rocksdb::DB> db)
      : path_(std::move(path)),
        db_(std::move(db)),
        syncer_([this] { return db_->GetLatestSequenceNumber(); },
                [this] {
                  RETURN_IF_ERROR(WriteError());
                  return FromRocks(db_->SyncWAL(), "WAL sync", path_);
                }),
        latest_(db_.get(), path_, /*snapshot=*/false) {}

  std::unique_ptr<KvView> NewSnapshot() override {
    return std::make_unique<RocksView>(db_.get(), path_, /*snapshot=*/true);
  }
  KvView& Latest() override { return latest_; }

  absl::StatusOr<uint64_t> Write(const KvBatch& batch) override {
    rocksdb::WriteBatch wb;
    for (const KvBatch::Op& op : batch.ops()) {
      rocksdb::Status s;
      switch (op.kind) {
        case KvBatch::Kind::kPut:
          s = wb.Put(op.key, op.value);
          break;
        case KvBatch::Kind::kDelete:
          s = wb.Delete(op.key);
          break;
        case KvBatch::Kind::kDeleteRange:
          if (op.value.empty()) return absl::InternalError("unbounded range deletion");
          s = wb.DeleteRange(op.key, op.value);
          break;
      }
      RETURN_IF_ERROR(FromRocks(s, "batch", path_));
    }
    rocksdb::WriteOptions options;
    // Not synced here: the caller holds its scope mutex and syncs after
    // releasing it (WaitDurable), together with other writers.
    options.sync = false;
    RETURN_IF_ERROR(WriteError());
    rocksdb::Status written = db_->Write(options, &wb);
    if (!written.ok()) {
      absl::Status status = FromRocks(written, "write", path_);
      if (written.IsIOError()) {
        absl::MutexLock lock(&error_mu_);
        if (write_error_.ok()) {
          spdlog::error(
              "metadata store: {}; every write and sync fails from now on: free space and "
              "restart the server (nothing acknowledged is lost)",
              status.ToString());
          write_error_ = status;
        }
      }
      return status;
    }
    // At least this write's sequence number: it is visible now.
    return db_->GetLatestSequenceNumber();
  }

  absl::Status WaitDurable(uint64_t token) override { return syncer_.WaitSynced(token); }
  uint64_t LastToken() override { return db_->GetLatestSequenceNumber(); }

  // The error of the write that failed on I/O (a full disk), or OK. RocksDB
  // then refuses writes (a background error), and in this state (a WAL
  // append failed) neither its own recovery nor DB::Resume brought it back
  // in tests: the server needs a restart once space is freed, and this
  // says so rather than calling into the broken WAL writer.
  absl::Status WriteError() {
    absl::MutexLock lock(&error_mu_);
    return write_error_;
  }

  void CompactRange(const std::string& begin, const std::string& end) override {
    rocksdb::CompactRangeOptions options;
    // Rewrite the last level too, so the deleted keys leave the files.
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
    rocksdb::Slice b(begin), e(end);
    absl::Status s = FromRocks(db_->CompactRange(options, &b, &e), "compact range", path_);
    // The deletion itself is committed; compaction only frees space and is
    // retried by RocksDB's own compactions later.
    if (!s.ok()) spdlog::warn("metadata store: {}", std::string(s.message()));
    IGNORE_ERROR(s);
  }

 private:
  const std::string path_;
  const std::unique_ptr<rocksdb::DB> db_;
  // RocksDB 7.8 (Debian's, assertions on) aborts the process if SyncWAL
  // runs on a WAL writer that failed an append (a full disk): once a write
  // has failed on I/O, writes and the group sync answer that error instead
  // of calling into RocksDB. A SyncWAL that starts between the failed append
  // and the moment Write records it can still hit the assertion; the window
  // is the return path of one DB::Write.
  absl::Mutex error_mu_;
  absl::Status write_error_ ABSL_GUARDED_BY(error_mu_);
  WalSyncer syncer_;
  RocksView latest_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvBackend>> OpenRocksKvBackend(const std::string& path) {
  rocksdb::Options options;
  options.create_if_missing = true;
  // SyncWAL (the group sync) works only without mmap writes.
  options.allow_mmap_writes = false;
  options.max_background_jobs = 2;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(kBlockCacheBytes);
  // Most reads are point lookups of entries and inodes (and misses, for
  // create): a bloom filter answers most misses without a disk read.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(kBloomBitsPerKey));
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  rocksdb::DB* raw = nullptr;
  RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(options, path, &raw), "open", path));
  std::unique_ptr<rocksdb::DB> db(raw);
  return std::unique_ptr<KvBackend>(std::make_unique<RocksKvBackend>(path, std::move(db)));
}

}  // namespace meta

absl::StatusOr<std::unique_ptr<MetadataStore>> OpenRocksMetadataStore(const std::string& path,
                                                                      MetadataSync sync) {
  ASSIGN_OR_RETURN(std::unique_ptr<meta::KvBackend> backend, meta::OpenRocksKvBackend(path));
  return std::unique_ptr<MetadataStore>(
      std::make_unique<meta::KvMetadataStore>(std::move(backend), sync));
}

}  // namespace traincache
