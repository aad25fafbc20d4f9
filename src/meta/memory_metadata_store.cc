// The in-memory twin: KvMetadataStore over a std::map. Same POSIX logic as
// the RocksDB store (kv_metadata_store.cc); only the backend differs.
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "meta/kv_backend.h"
#include "meta/kv_metadata_store.h"
#include "traincache/metadata_store.h"

namespace traincache {
namespace meta {
namespace {

class MemoryKvBackend;

// A view over the map. A snapshot view holds the map's reader lock for its
// whole life, so nothing changes under it (and its owner must not Write
// meanwhile); the Latest view locks for each read.
class MemoryView : public KvView {
 public:
  MemoryView(MemoryKvBackend* backend, bool snapshot);
  ~MemoryView() override;

  absl::StatusOr<std::optional<std::string>> Get(std::string_view key) override;
  std::unique_ptr<KvIterator> NewIterator(std::string lower, std::string upper) override;

  // Holds the reader lock for one read unless the view holds it already.
  class ReadGuard {
   public:
    explicit ReadGuard(const MemoryView& view);
    ~ReadGuard();

   private:
    absl::Mutex* mu_;
  };

  MemoryKvBackend* backend() const { return backend_; }

 private:
  MemoryKvBackend* const backend_;
  const bool snapshot_;
};

class MemoryKvBackend : public KvBackend {
 public:
  std::unique_ptr<KvView> NewSnapshot() override {
    return std::make_unique<MemoryView>(this, /*snapshot=*/true);
  }
  KvView& Latest() override { return latest_; }

  absl::StatusOr<uint64_t> Write(const KvBatch& batch) override {
    absl::WriterMutexLock lock(&mu_);
    for (const KvBatch::Op& op : batch.ops()) {
      switch (op.kind) {
        case KvBatch::Kind::kPut:
          data_.insert_or_assign(op.key, op.value);
          break;
        case KvBatch::Kind::kDelete:
          data_.erase(op.key);
          break;
        case KvBatch::Kind::kDeleteRange:
          data_.erase(data_.lower_bound(op.key),
                      op.value.empty() ? data_.end() : data_.lower_bound(op.value));
          break;
      }
    }
    return ++writes_;
  }
  // Memory has nothing to sync: a write is as durable as it will get.
  absl::Status WaitDurable(uint64_t token) override { return absl::OkStatus(); }
  uint64_t LastToken() override {
    absl::ReaderMutexLock lock(&mu_);
    return writes_;
  }

 private:
  friend class MemoryView;
  friend class MemoryIterator;

  absl::Mutex mu_;
  // std::less<>: look up by string_view without a copy. std::string compares
  // bytes as unsigned char, as RocksDB's comparator does.
  std::map<std::string, std::string, std::less<>> data_ ABSL_GUARDED_BY(mu_);
  uint64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  MemoryView latest_{this, /*snapshot=*/false};
};

// Copies the current entry so it stays valid while the map changes (Latest
// view); steps by key, so it never holds a map iterator across unlocks.
class MemoryIterator : public KvIterator {
 public:
  MemoryIterator(const MemoryView& view, std::string lower, std::string upper)
      : view_(view), lower_(std::move(lower)), upper_(std::move(upper)) {}

  void Seek(std::string_view key) override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    MemoryView::ReadGuard guard(view_);
    auto& data = view_.backend()->data_;
    Load(data.lower_bound(key < lower_ ? std::string_view(lower_) : key));
  }
  bool Valid() const override { return valid_; }
  void Next() override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    MemoryView::ReadGuard guard(view_);
    Load(view_.backend()->data_.upper_bound(key_));
  }
  std::string_view key() const override { return key_; }
  std::string_view value() const override { return value_; }
  absl::Status status() const override { return absl::OkStatus(); }

 private:
  template <typename It>
  void Load(It it) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    valid_ = it != view_.backend()->data_.end() && (upper_.empty() || it->first < upper_);
    if (valid_) {
      key_ = it->first;
      value_ = it->second;
    }
  }

  const MemoryView& view_;
  const std::string lower_, upper_;
  bool valid_ = false;
  std::string key_, value_;
};

MemoryView::MemoryView(MemoryKvBackend* backend, bool snapshot)
    : backend_(backend), snapshot_(snapshot) {
  if (snapshot_) backend_->mu_.ReaderLock();
}

MemoryView::~MemoryView() {
  if (snapshot_) backend_->mu_.ReaderUnlock();
}

MemoryView::ReadGuard::ReadGuard(const MemoryView& view)
    : mu_(view.snapshot_ ? nullptr : &view.backend_->mu_) {
  if (mu_ != nullptr) mu_->ReaderLock();
}

MemoryView::ReadGuard::~ReadGuard() {
  if (mu_ != nullptr) mu_->ReaderUnlock();
}

absl::StatusOr<std::optional<std::string>> MemoryView::Get(std::string_view key)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  ReadGuard guard(*this);
  auto it = backend_->data_.find(key);
  if (it == backend_->data_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

std::unique_ptr<KvIterator> MemoryView::NewIterator(std::string lower, std::string upper) {
  return std::make_unique<MemoryIterator>(*this, std::move(lower), std::move(upper));
}

}  // namespace

std::unique_ptr<KvBackend> NewMemoryKvBackend() { return std::make_unique<MemoryKvBackend>(); }

}  // namespace meta

std::unique_ptr<MetadataStore> NewMemoryMetadataStore() {
  return std::make_unique<meta::KvMetadataStore>(meta::NewMemoryKvBackend());
}

}  // namespace traincache
