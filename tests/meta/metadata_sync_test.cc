// MetadataSync: which mutations wait for a durable write before they return.
// A backend that counts WaitDurable calls (over the std::map backend) shows
// it for both modes; a RocksDB store shows that what was applied without a
// sync is still there after the store is reopened.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <memory>
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
  CountingBackend(std::unique_ptr<KvBackend> base, std::atomic<int>* waits)
      : base_(std::move(base)), waits_(waits) {}
  std::unique_ptr<KvView> NewSnapshot() override { return base_->NewSnapshot(); }
  KvView& Latest() override { return base_->Latest(); }
  absl::StatusOr<uint64_t> Write(const KvBatch& batch) override { return base_->Write(batch); }
  absl::Status WaitDurable(uint64_t token) override {
    ++*waits_;
    return base_->WaitDurable(token);
  }
  uint64_t LastToken() override { return base_->LastToken(); }

 private:
  std::unique_ptr<KvBackend> base_;
  std::atomic<int>* waits_;
};

class MetadataSyncTest : public ::testing::TestWithParam<MetadataSync> {
 protected:
  void SetUp() override {
    store_ = std::make_unique<meta::KvMetadataStore>(
        std::make_unique<CountingBackend>(meta::NewMemoryKvBackend(), &waits_), GetParam());
    ASSERT_OK(store_->OpenScope(scope_, /*create=*/true).status());
  }
  bool Relaxed() const { return GetParam() == MetadataSync::kContentCommits; }
  // How many waits for durability `fn` made.
  template <typename Fn>
  int WaitsOf(Fn&& fn) {
    const int before = waits_.load();
    fn();
    return waits_.load() - before;
  }

  std::atomic<int> waits_{0};
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
  // Reads: a barrier only when every change is synced.
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->Lookup(scope_, kRootInode, "d").status()); }), 0);
  EXPECT_EQ(WaitsOf([&] { ASSERT_OK(store_->WaitReadsDurable()); }), Relaxed() ? 0 : 1);
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
