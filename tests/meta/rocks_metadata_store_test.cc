// Tests only the RocksDB store can have: persistence across reopen, what is
// left in the database files (scanned with RocksDB itself), the lock, group
// commit under concurrency, corrupt records.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "meta/key_codec.h"
#include "meta_test_util.h"
#include "traincache/metadata_store.h"
#include "traincache/status.h"

namespace traincache {
namespace {

using testing_util::Dump;
using testing_util::TempDir;
using testing_util::WithMode;
using testing_util::WithSize;
using testing_util::WithUid;

constexpr uint32_t kCs = kMinChunkSize;

// Every key starting with `prefix`, read through a read-only RocksDB handle
// (works while the store has the database open, and after).
std::vector<std::string> RawKeys(const std::string& path, const std::string& prefix) {
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(rocksdb::Options(), path, &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return {"<open failed>"};
  std::unique_ptr<rocksdb::DB> db(raw);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  std::vector<std::string> keys;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    keys.push_back(it->key().ToString());
  }
  EXPECT_TRUE(it->status().ok()) << it->status().ToString();
  return keys;
}

class RocksMetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    absl::StatusOr<std::unique_ptr<MetadataStore>> store = OpenRocksMetadataStore(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  void Close() { store_.reset(); }

  // A scope with a bit of everything in it.
  void Populate(const Scope& scope) {
    ASSERT_OK(store_->OpenScope(scope, true));
    ASSERT_OK_AND_ASSIGN(InodeAttr d, store_->Mkdir(scope, kRootInode, "d", 0755, caller_));
    ASSERT_OK_AND_ASSIGN(CreateResult f, store_->Create(scope, d.ino, "f", 0644, caller_, true));
    std::vector<ChunkRef> chunks = {
        {ChunkId::Of("one"), kCs}, {std::nullopt, kCs}, {ChunkId::Of("two"), 5}};
    ASSERT_OK(store_->CommitContent(scope, f.attr.ino, f.attr.version, 2 * kCs + 5, kCs, chunks,
                                    Timespec{1, 2}));
    ASSERT_OK(store_->SetXattr(scope, f.attr.ino, "user.k", "v", 0));
    ASSERT_OK(store_->Symlink(scope, d.ino, "l", "f", caller_));
    ASSERT_OK(store_->Link(scope, f.attr.ino, kRootInode, "hard"));
    ASSERT_OK_AND_ASSIGN(CreateResult o,
                         store_->Create(scope, kRootInode, "o", 0644, caller_, true));
    ASSERT_OK(store_->CommitContent(scope, o.attr.ino, o.attr.version, 1, kCs,
                                    {{ChunkId::Of("three"), 1}}, Now()));
    ASSERT_OK(store_->Unlink(scope, kRootInode, "o"));  // An orphan.
    ASSERT_OK_AND_ASSIGN(CreateResult g,
                         store_->Create(scope, kRootInode, "g", 0644, caller_, true));
    ASSERT_OK(store_->CommitContent(scope, g.attr.ino, g.attr.version, 1, kCs,
                                    {{ChunkId::Of("four"), 1}}, Now()));
    ASSERT_OK(store_->SetAttr(scope, g.attr.ino, WithSize(0)));  // Garbage.
    ASSERT_OK(store_->SetQuota(scope, 1 << 30));
  }

  TempDir dir_;
  std::string path_ = dir_.path() + "/db";
  std::unique_ptr<MetadataStore> store_;
  Caller caller_{1000, 1000};
};

TEST_F(RocksMetadataStoreTest, ReopenFindsEverything) {
  Scope a = *Scope::Parse("project:a");
  Scope t = *Scope::Parse("team:t");
  Populate(a);
  Populate(t);
  std::string dump_a = Dump(*store_, a), dump_t = Dump(*store_, t);
  ASSERT_OK_AND_ASSIGN(ScopeInfo info, store_->OpenScope(a, false));
  ASSERT_OK_AND_ASSIGN(InodeAttr last, store_->Mkdir(a, kRootInode, "last", 0755, caller_));
  dump_a = Dump(*store_, a);
  Close();
  Open();
  EXPECT_EQ(Dump(*store_, a), dump_a);
  EXPECT_EQ(Dump(*store_, t), dump_t);
  ASSERT_OK_AND_ASSIGN(ScopeInfo again, store_->OpenScope(a, false));
  EXPECT_EQ(again.generation, info.generation);
  ASSERT_OK_AND_ASSIGN(std::vector<Scope> scopes, store_->ListScopes());
  EXPECT_EQ(scopes, (std::vector<Scope>{a, t}));
  // Inode numbers go on from where they were, never reused.
  ASSERT_OK_AND_ASSIGN(CreateResult n, store_->Create(a, kRootInode, "new", 0644, caller_, true));
  EXPECT_GT(n.attr.ino, last.ino);
}

TEST_F(RocksMetadataStoreTest, RequestRecordsSurviveReopenAndExpireWhole) {
  Scope scope = *Scope::Parse("project:p");
  ASSERT_OK(store_->OpenScope(scope, true));
  const RequestId id{"node-a:1:cafe", 42};
  ASSERT_OK(store_->Create(scope, kRootInode, "f", 0644, Caller{}, true).status());
  ASSERT_OK_AND_ASSIGN(UnlinkResult first, store_->Unlink(scope, kRootInode, "f", id));
  ASSERT_OK_AND_ASSIGN(CreateResult made,
                       store_->Create(scope, kRootInode, "g", 0644, Caller{}, true,
                                      RequestId{"node-a:1:cafe", 43}));
  Close();
  Open();
  // A server restarted between the change and its answer answers the copy.
  ASSERT_OK_AND_ASSIGN(UnlinkResult again, store_->Unlink(scope, kRootInode, "f", id));
  EXPECT_EQ(again, first);
  ASSERT_OK_AND_ASSIGN(CreateResult made_again,
                       store_->Create(scope, kRootInode, "g", 0644, Caller{}, true,
                                      RequestId{"node-a:1:cafe", 43}));
  EXPECT_EQ(made_again, made);

  meta::ScopeKeys keys(scope);
  EXPECT_EQ(RawKeys(path_, keys.prefix() + std::string(1, meta::kTagRequest)).size(), 2u);
  EXPECT_EQ(RawKeys(path_, keys.RequestExpiryPrefix()).size(), 2u);
  ASSERT_OK_AND_ASSIGN(uint64_t dropped, store_->ExpireRequests(scope, Timespec{Now().sec + 2, 0}));
  EXPECT_EQ(dropped, 2u);
  // Both the record and its index key are gone.
  EXPECT_TRUE(RawKeys(path_, keys.prefix() + std::string(1, meta::kTagRequest)).empty());
  EXPECT_TRUE(RawKeys(path_, keys.RequestExpiryPrefix()).empty());
}

TEST_F(RocksMetadataStoreTest, DeleteScopeLeavesNoKeyWithItsPrefix) {
  Scope a = *Scope::Parse("project:a");
  Scope dotted = *Scope::Parse("project:a.b");  // Shares "project:a" as text prefix.
  Scope team = *Scope::Parse("team:a");
  Populate(a);
  Populate(dotted);
  Populate(team);
  // Many keys, so some reach the SST files: flushes happen on reopen.
  for (int i = 0; i < 500; ++i) {
    ASSERT_OK(store_->Create(a, kRootInode, fmt::format("file-{}", i), 0644, caller_, true));
  }
  Close();
  Open();
  const std::string prefix = meta::ScopePrefix(a);
  EXPECT_EQ(prefix, std::string("project:a\0", 10));
  EXPECT_GT(RawKeys(path_, prefix).size(), 500u);
  std::string dotted_dump = Dump(*store_, dotted);
  size_t dotted_keys = RawKeys(path_, meta::ScopePrefix(dotted)).size();
  size_t team_keys = RawKeys(path_, meta::ScopePrefix(team)).size();

  ASSERT_OK(store_->DeleteScope(a));
  // Seen by a second, read-only handle while the store is open...
  EXPECT_EQ(RawKeys(path_, prefix), std::vector<std::string>{});
  Close();
  // ...and in the files after close.
  EXPECT_EQ(RawKeys(path_, prefix), std::vector<std::string>{});
  EXPECT_EQ(RawKeys(path_, meta::ScopePrefix(dotted)).size(), dotted_keys);
  EXPECT_EQ(RawKeys(path_, meta::ScopePrefix(team)).size(), team_keys);
  Open();
  EXPECT_EQ(Dump(*store_, dotted), dotted_dump);
  ASSERT_OK_AND_ASSIGN(std::vector<Scope> scopes, store_->ListScopes());
  EXPECT_EQ(scopes, (std::vector<Scope>{dotted, team}));
  EXPECT_ERRNO(store_->GetAttr(a, kRootInode), ENOENT);
}

TEST_F(RocksMetadataStoreTest, FreeingEverythingLeavesOnlyScopeAndRoot) {
  // Nothing leaks: after every name is removed, every orphan released and
  // the garbage forgotten, the scope holds its meta record and root only.
  Scope a = *Scope::Parse("project:a");
  Populate(a);
  ASSERT_OK_AND_ASSIGN(InodeAttr d, store_->Lookup(a, kRootInode, "d"));
  ASSERT_OK(store_->SetXattr(a, d.ino, "user.dir", "x", 0));
  ASSERT_OK(store_->Unlink(a, d.ino, "l"));
  ASSERT_OK(store_->Unlink(a, d.ino, "f"));
  ASSERT_OK(store_->Rmdir(a, kRootInode, "d"));
  ASSERT_OK_AND_ASSIGN(UnlinkResult u, store_->Unlink(a, kRootInode, "hard"));
  ASSERT_TRUE(u.orphaned);
  ASSERT_OK(store_->ReleaseInode(a, u.ino));
  ASSERT_OK(store_->Unlink(a, kRootInode, "g"));
  Timespec later = Now();
  later.sec += 1;
  ASSERT_OK_AND_ASSIGN(uint64_t purged, store_->PurgeOrphans(a, later));
  EXPECT_EQ(purged, 2u);  // o and g.
  ASSERT_OK_AND_ASSIGN(std::vector<ChunkId> garbage, store_->ListGarbage(a, 0));
  EXPECT_EQ(garbage.size(), 4u);
  ASSERT_OK(store_->ForgetGarbage(a, garbage));
  ASSERT_OK_AND_ASSIGN(ScopeUsage usage, store_->GetUsage(a));
  EXPECT_EQ(usage.bytes, 0u);
  EXPECT_EQ(usage.inodes, 1u);
  meta::ScopeKeys keys(a);
  std::vector<std::string> want = {keys.Inode(kRootInode), keys.Meta()};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(RawKeys(path_, keys.prefix()), want);
}

TEST_F(RocksMetadataStoreTest, SecondOpenFailsNamingThePath) {
  absl::StatusOr<std::unique_ptr<MetadataStore>> second = OpenRocksMetadataStore(path_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(second.status().message().find(path_), std::string::npos) << second.status();
}

TEST_F(RocksMetadataStoreTest, OpenUnderAFileFails) {
  std::string file = dir_.path() + "/plain";
  std::ofstream(file) << "x";
  absl::StatusOr<std::unique_ptr<MetadataStore>> bad = OpenRocksMetadataStore(file + "/db");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(bad.status().message().find(file), std::string::npos) << bad.status();
}

TEST_F(RocksMetadataStoreTest, CorruptRecordIsDataLoss) {
  Scope a = *Scope::Parse("project:a");
  ASSERT_OK(store_->OpenScope(a, true));
  ASSERT_OK_AND_ASSIGN(CreateResult f, store_->Create(a, kRootInode, "f", 0644, caller_, true));
  Close();
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), path_, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    meta::ScopeKeys keys(a);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), keys.Inode(f.attr.ino), "\x01garbage").ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), keys.ChunkMap(f.attr.ino), "\x01\xff").ok());
  }
  Open();
  EXPECT_EQ(store_->GetAttr(a, f.attr.ino).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->Lookup(a, kRootInode, "f").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->Unlink(a, kRootInode, "f").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->ReadDir(a, kRootInode, "", 10, true).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_OK(store_->ReadDir(a, kRootInode, "", 10, false));
  EXPECT_OK(store_->GetAttr(a, kRootInode));
}

TEST_F(RocksMetadataStoreTest, ConcurrentCreatesShareSyncs) {
  // The benchmark's shape: 8 threads creating in one directory. All succeed
  // with unique inode numbers, and they share WAL syncs (group commit).
  Scope a = *Scope::Parse("project:a");
  ASSERT_OK(store_->OpenScope(a, true));
  ASSERT_OK_AND_ASSIGN(InodeAttr d, store_->Mkdir(a, kRootInode, "d", 0755, caller_));
  constexpr int kThreads = 8;
  constexpr int kPerThread = 1000;
  std::vector<std::vector<InodeId>> inos(kThreads);
  std::atomic<int> failures{0};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<CreateResult> r =
            store_->Create(a, d.ino, fmt::format("t{}-{}", t, i), 0644, caller_, true);
        if (!r.ok()) {
          ++failures;
          continue;
        }
        inos[t].push_back(r->attr.ino);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%d creates in %.2f s: %.0f creates/s\n", kThreads * kPerThread, seconds,
              kThreads * kPerThread / seconds);
  EXPECT_EQ(failures.load(), 0);
  std::set<InodeId> unique;
  for (const auto& v : inos) unique.insert(v.begin(), v.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kThreads * kPerThread));
  // Durable: all there after reopen.
  Close();
  Open();
  ASSERT_OK_AND_ASSIGN(ScopeUsage usage, store_->GetUsage(a));
  EXPECT_EQ(usage.inodes, static_cast<uint64_t>(kThreads * kPerThread + 2));
}

}  // namespace
}  // namespace traincache
