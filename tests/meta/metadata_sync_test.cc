// MetadataSync: which mutations wait for a durable write before they return.
// A backend that counts WaitDurable calls (over the std::map backend) shows
// it for both modes; a RocksDB store shows that what was applied without a
// sync is still there after the store is reopened.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "meta/kv_backend.h"
#include "meta/kv_metadata_store.h"
#include "meta_test_util.h"
#include "traincache/metadata_store.h"

namespace traincache {
namespace {

using meta::KvBackend;
using meta::KvBatch;
using meta::KvView;
using testing_util::TempDir;

// Forwards to a backend and counts the waits for durability.
class CountingBackend final : public KvBackend {
 public:
  CountingBackend(std::unique_ptr<KvBackend> base, std::atomic<int>* waits,
                  std::atomic<uint64_t>* last_waited)
      : base_(std::move(base)), waits_(waits), last_waited_(last_waited) {}
  std::unique_ptr<KvView> NewSnapshot() override { return base_->NewSnapshot(); }
  KvView& Latest() override { return base_->Latest(); }
  absl::StatusOr<uint64_t> Write(const KvBatch& batch) override { return base_->Write(batch); }
  absl::Status WaitDurable(uint64_t token) override {
    ++*waits_;
    *last_waited_ = token;
    return base_->WaitDurable(token);
  }
  uint64_t LastToken() override { return base_->LastToken(); }

 private:
  std::unique_ptr<KvBackend> base_;
  std::atomic<int>* waits_;
  std::atomic<uint64_t>* last_waited_;
};

class MetadataSyncTest : public ::testing::TestWithParam<MetadataSync> {
 protected:
  void SetUp() override {
    auto backend =
        std::make_unique<CountingBackend>(meta::NewMemoryKvBackend(), &waits_, &last_waited_);
    backend_ = backend.get();
    store_ = std::make_unique<meta::KvMetadataStore>(std::move(backend), GetParam());
    ASSERT_OK(store_->OpenScope(scope_, /*create=*/true).status());
    // The first inode made reserves a block of numbers: that write is always
    // synced (NumbersHandedOutBeforeAMachineCrashAreNeverReused).
    ASSERT_EQ(WaitsOf([&] {
                ASSERT_OK(store_->Create(scope_, kRootInode, "first", 0644, caller_, true).status());
              }),
              1);
  }
  bool Relaxed() const { return GetParam() == MetadataSync::kContentCommits; }
  uint64_t store_latest() const { return backend_->LastToken(); }
  // How many waits for durability `fn` made.
  template <typename Fn>
  int WaitsOf(Fn&& fn) {
    const int before = waits_.load();
    fn();
    return waits_.load() - before;
  }

  std::atomic<int> waits_{0};
  std::atomic<uint64_t> last_waited_{0};  // The token of the last wait.
  CountingBackend* backend_ = nullptr;  // Owned by store_.
  std::unique_ptr<MetadataStore> store_;
  const Scope scope_ = *Scope::Parse("project:sync");
  const Caller caller_{0, 0};
};

TEST_P(MetadataSyncTest, NamespaceChangesWaitOnlyUnderEveryChange) {
  const int expected = Relaxed() ? 0 : 1;
  InodeId ino = 0, dir = 0;
  EXPECT_EQ(WaitsOf([&] {
              auto r = store_->Create(scope_, kRootInode, "f", 0644, caller_, true);
              ASSERT_OK(r.status());
              ino = r->attr.ino;
            }),
            expected);
  EXPECT_EQ(WaitsOf([&] {
              auto r = store_->Mkdir(scope_, kRootInode, "d", 0755, caller_);
              ASSERT_OK(r.status());
              dir = r->ino;
            }),
            expected);
  SetAttrRequest chmod;
  chmod.mode = 0600;
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->SetAttr(scope_, ino, chmod).status()); }), expected);
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->SetXattr(scope_, ino, "user.a", "1", 0)); }),
            expected);
  EXPECT_EQ(WaitsOf([&] {
              ASSERT_OK(store_->Rename(scope_, kRootInode, "f", dir, "g", 0).status());
            }),
            expected);
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->Unlink(scope_, dir, "g").status()); }), expected);
  // Reads: the barrier covers every change only when every change is synced;
  // else only the last synced one (here the first create's).
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->Lookup(scope_, kRootInode, "d").status()); }), 0);
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->WaitReadsDurable()); }), 1);
  if (Relaxed()) {
    EXPECT_LT(last_waited_, store_latest());
  } else {
    EXPECT_EQ(last_waited_, store_latest());
  }
}

TEST_P(MetadataSyncTest, CommitsTruncatesAndSyncAlwaysWait) {
  ASSERT_OK_AND_ASSIGN(CreateResult f,
                       store_->Create(scope_, kRootInode, "f", 0644, caller_, true));
  // A commit of holes only: no chunk needed.
  EXPECT_EQ(WaitsOf([&] {
              ASSERT_OK(store_->CommitContent(scope_, f.attr.ino, f.attr.version, kMinChunkSize,
                                              kMinChunkSize, {ChunkRef{std::nullopt, kMinChunkSize}},
                                              Now())
                            .status());
            }),
            1);
  SetAttrRequest truncate;
  truncate.size = 10;
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->SetAttr(scope_, f.attr.ino, truncate).status()); }),
            1);
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->Sync()); }), 1);
}

INSTANTIATE_TEST_SUITE_P(Modes, MetadataSyncTest,
                         ::testing::Values(MetadataSync::kEveryChange,
                                           MetadataSync::kContentCommits),
                         [](const ::testing::TestParamInfo<MetadataSync>& info) {
                           return info.param == MetadataSync::kEveryChange ? "EveryChange"
                                                                           : "ContentCommits";
                         });

// Keeps what a machine crash would: only the writes some sync covered (a
// sync covers every write made before it, as a WAL sync does).
class CrashableBackend final : public KvBackend {
 public:
  CrashableBackend() : base_(meta::NewMemoryKvBackend()) {}
  std::unique_ptr<KvView> NewSnapshot() override { return base_->NewSnapshot(); }
  KvView& Latest() override { return base_->Latest(); }
  absl::StatusOr<uint64_t> Write(const KvBatch& batch) override {
    std::lock_guard lock(mu_);
    absl::StatusOr<uint64_t> token = base_->Write(batch);
    if (token.ok()) log_.emplace_back(*token, batch);
    return token;
  }
  absl::Status WaitDurable(uint64_t) override {
    std::lock_guard lock(mu_);
    durable_ = std::max(durable_, base_->LastToken());
    return absl::OkStatus();
  }
  uint64_t LastToken() override { return base_->LastToken(); }
  // A backend holding what the disk would after a crash now.
  std::unique_ptr<KvBackend> AfterCrash() {
    std::lock_guard lock(mu_);
    std::unique_ptr<KvBackend> disk = meta::NewMemoryKvBackend();
    for (const auto& [token, batch] : log_) {
      if (token <= durable_) EXPECT_TRUE(disk->Write(batch).ok());
    }
    return disk;
  }

 private:
  std::mutex mu_;
  std::unique_ptr<KvBackend> base_;
  std::vector<std::pair<uint64_t, KvBatch>> log_;
  uint64_t durable_ = 0;
};

// Nodes outlive a crash of the server's machine and still hold inode numbers
// and versions the lost changes handed out: none may name something else.
TEST(MetadataSyncCrashTest, NumbersHandedOutBeforeAMachineCrashAreNeverReused) {
  const Scope scope = *Scope::Parse("project:crash");
  auto backend = std::make_unique<CrashableBackend>();
  CrashableBackend* disk = backend.get();
  auto store = std::make_unique<meta::KvMetadataStore>(std::move(backend),
                                                      MetadataSync::kContentCommits);
  ASSERT_OK(store->OpenScope(scope, true).status());
  ASSERT_OK_AND_ASSIGN(CreateResult a, store->Create(scope, kRootInode, "a", 0644, {}, true));
  ASSERT_OK(store->Sync());
  std::set<InodeId> lost;
  for (int i = 0; i < 10; ++i) {
    ASSERT_OK_AND_ASSIGN(CreateResult b,
                         store->Create(scope, kRootInode, "b" + std::to_string(i), 0644, {}, true));
    lost.insert(b.attr.ino);
  }
  SetAttrRequest chmod;
  chmod.mode = 0600;
  ASSERT_OK_AND_ASSIGN(InodeAttr lost_attr, store->SetAttr(scope, a.attr.ino, chmod));

  std::unique_ptr<KvBackend> after = disk->AfterCrash();
  store.reset();
  store = std::make_unique<meta::KvMetadataStore>(std::move(after), MetadataSync::kContentCommits);
  // The unsynced changes are gone (what this test is about)...
  EXPECT_EQ(ToErrno(store->Lookup(scope, kRootInode, "b0").status()), ENOENT);
  ASSERT_OK_AND_ASSIGN(InodeAttr back, store->GetAttr(scope, a.attr.ino));
  EXPECT_EQ(back.mode & 07777, 0644u);
  // ...and what comes next never reuses their numbers.
  for (int i = 0; i < 10; ++i) {
    ASSERT_OK_AND_ASSIGN(CreateResult c,
                         store->Create(scope, kRootInode, "c" + std::to_string(i), 0644, {}, true));
    EXPECT_FALSE(lost.count(c.attr.ino)) << "inode " << c.attr.ino << " handed out twice";
  }
  chmod.mode = 0640;
  ASSERT_OK_AND_ASSIGN(InodeAttr now, store->SetAttr(scope, a.attr.ino, chmod));
  EXPECT_GT(now.version, lost_attr.version);
}

// Applied without a sync is still applied: a reopened RocksDB store has it.
TEST(RocksMetadataSyncTest, UnsyncedChangesSurviveReopen) {
  TempDir dir;
  const Scope scope = *Scope::Parse("project:sync");
  const std::string path = dir.path() + "/meta";
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetadataStore> store,
                         OpenRocksMetadataStore(path, MetadataSync::kContentCommits));
    ASSERT_OK(store->OpenScope(scope, true).status());
    for (int i = 0; i < 20; ++i) {
      ASSERT_OK(store->Create(scope, kRootInode, "f" + std::to_string(i), 0640, Caller{}, true)
                    .status());
    }
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetadataStore> store,
                       OpenRocksMetadataStore(path, MetadataSync::kContentCommits));
  for (int i = 0; i < 20; ++i) {
    ASSERT_OK_AND_ASSIGN(InodeAttr a, store->Lookup(scope, kRootInode, "f" + std::to_string(i)));
    EXPECT_EQ(a.mode & 07777, 0640u);
  }
}

}  // namespace
}  // namespace traincache
