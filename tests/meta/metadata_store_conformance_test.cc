// One conformance suite for MetadataStore, run over every implementation:
// the in-memory twin and the RocksDB store (fresh temp dir per test).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

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

struct StoreFactory {
  std::string name;
  std::function<absl::StatusOr<std::unique_ptr<MetadataStore>>(const std::string& dir)> open;
};

constexpr uint32_t kCs = kMinChunkSize;  // Chunk size of the content tests.

ChunkId Id(int n) { return ChunkId::Of(fmt::format("chunk-{}", n)); }

// A well-formed chunk list of `size` bytes whose chunk i is Id(first + i)
// (or a hole where `holes` says so).
std::vector<ChunkRef> Chunks(uint64_t size, int first, std::set<int> holes = {}) {
  std::vector<ChunkRef> out;
  for (uint64_t pos = 0, i = 0; pos < size; pos += kCs, ++i) {
    ChunkRef c;
    if (!holes.count(static_cast<int>(i))) c.id = Id(first + static_cast<int>(i));
    c.length = static_cast<uint32_t>(std::min<uint64_t>(kCs, size - pos));
    out.push_back(c);
  }
  return out;
}

class MetadataStoreTest : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<MetadataStore>> store = GetParam().open(dir_.path() + "/db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ASSERT_OK(store_->OpenScope(scope_, /*create=*/true));
  }

  InodeAttr Create(InodeId parent, const std::string& name, uint32_t mode = 0644) {
    absl::StatusOr<CreateResult> r = store_->Create(scope_, parent, name, mode, caller_, true);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status();
    return r.ok() ? r->attr : InodeAttr{};
  }
  InodeAttr Mkdir(InodeId parent, const std::string& name, uint32_t mode = 0755) {
    absl::StatusOr<InodeAttr> r = store_->Mkdir(scope_, parent, name, mode, caller_);
    EXPECT_TRUE(r.ok()) << name << ": " << r.status();
    return r.ok() ? *r : InodeAttr{};
  }
  InodeAttr Attr(InodeId ino) {
    absl::StatusOr<InodeAttr> r = store_->GetAttr(scope_, ino);
    EXPECT_TRUE(r.ok()) << ino << ": " << r.status();
    return r.ok() ? *r : InodeAttr{};
  }
  InodeAttr Commit(InodeId ino, uint64_t size, int first, std::set<int> holes = {}) {
    absl::StatusOr<InodeAttr> r = store_->CommitContent(scope_, ino, Attr(ino).version, size, kCs,
                                                        Chunks(size, first, holes), Now());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : InodeAttr{};
  }
  uint64_t Refs(const ChunkId& id) {
    absl::StatusOr<uint64_t> r = store_->ChunkRefCount(scope_, id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ~0ull;
  }
  std::set<ChunkId> Garbage() {
    absl::StatusOr<std::vector<ChunkId>> r = store_->ListGarbage(scope_, 0);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::set<ChunkId>(r->begin(), r->end()) : std::set<ChunkId>{};
  }
  ScopeUsage Usage() {
    absl::StatusOr<ScopeUsage> r = store_->GetUsage(scope_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ScopeUsage{};
  }
  std::vector<std::string> Names(InodeId dir) {
    std::vector<std::string> names;
    std::string after;
    while (true) {
      absl::StatusOr<ReadDirPage> page = store_->ReadDir(scope_, dir, after, 0, false);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      for (const DirEntry& e : page->entries) names.push_back(e.name);
      if (!page->more) break;
      after = page->entries.back().name;
    }
    return names;
  }
  std::string DumpScope() { return Dump(*store_, scope_); }

  TempDir dir_;
  std::unique_ptr<MetadataStore> store_;
  Scope scope_ = *Scope::Parse("project:alpha");
  Caller caller_{1000, 100};
};

// --- scopes ---

TEST_P(MetadataStoreTest, OpenScopeMakesRoot) {
  InodeAttr root = Attr(kRootInode);
  EXPECT_EQ(root.ino, kRootInode);
  EXPECT_EQ(root.mode, S_IFDIR | 0755u);
  EXPECT_EQ(root.uid, 0u);
  EXPECT_EQ(root.gid, 0u);
  EXPECT_EQ(root.nlink, 2u);
  EXPECT_EQ(root.version, 1u);
  ScopeUsage usage = Usage();
  EXPECT_EQ(usage.bytes, 0u);
  EXPECT_EQ(usage.inodes, 1u);
  EXPECT_EQ(usage.quota_bytes, kDefaultQuotaBytes);
}

TEST_P(MetadataStoreTest, OpenScopeExistingKeepsGeneration) {
  ASSERT_OK_AND_ASSIGN(ScopeInfo a, store_->OpenScope(scope_, false));
  ASSERT_OK_AND_ASSIGN(ScopeInfo b, store_->OpenScope(scope_, true));
  EXPECT_NE(a.generation, 0u);
  EXPECT_EQ(a.generation, b.generation);
  EXPECT_EQ(a.scope, scope_);
  EXPECT_EQ(a.usage.inodes, 1u);
}

TEST_P(MetadataStoreTest, MissingScopeIsNotFoundEverywhere) {
  Scope other = *Scope::Parse("team:nobody");
  EXPECT_ERRNO(store_->OpenScope(other, false), ENOENT);
  EXPECT_ERRNO(store_->GetAttr(other, kRootInode), ENOENT);
  EXPECT_ERRNO(store_->GetUsage(other), ENOENT);
  EXPECT_ERRNO(store_->SetQuota(other, 5), ENOENT);
  EXPECT_ERRNO(store_->DeleteScope(other), ENOENT);
  EXPECT_ERRNO(store_->Create(other, kRootInode, "f", 0644, caller_, true), ENOENT);
  EXPECT_ERRNO(store_->Lookup(other, kRootInode, "f"), ENOENT);
  EXPECT_ERRNO(store_->ReadDir(other, kRootInode, "", 10, false), ENOENT);
  EXPECT_ERRNO(store_->ListOrphans(other), ENOENT);
  EXPECT_ERRNO(store_->ListGarbage(other, 10), ENOENT);
  EXPECT_ERRNO(store_->ChunkRefCount(other, Id(1)), ENOENT);
  EXPECT_ERRNO(store_->ReleaseInode(other, 5), ENOENT);
  ASSERT_OK_AND_ASSIGN(std::vector<Scope> scopes, store_->ListScopes());
  EXPECT_EQ(scopes, std::vector<Scope>{scope_});
}

TEST_P(MetadataStoreTest, ScopesAreIsolated) {
  // "project:alpha" must not see keys of "project:alpha.b" or "team:alpha".
  Scope dotted = *Scope::Parse("project:alpha.b");
  Scope team = *Scope::Parse("team:alpha");
  ASSERT_OK(store_->OpenScope(dotted, true));
  ASSERT_OK(store_->OpenScope(team, true));
  Create(kRootInode, "mine");
  ASSERT_OK(store_->Create(dotted, kRootInode, "theirs", 0644, caller_, true));
  ASSERT_OK(store_->Create(team, kRootInode, "team-file", 0644, caller_, true));
  EXPECT_EQ(Names(kRootInode), std::vector<std::string>{"mine"});
  EXPECT_ERRNO(store_->Lookup(scope_, kRootInode, "theirs"), ENOENT);
  EXPECT_ERRNO(store_->Lookup(dotted, kRootInode, "mine"), ENOENT);
  ASSERT_OK_AND_ASSIGN(std::vector<Scope> scopes, store_->ListScopes());
  EXPECT_EQ(std::set<Scope>(scopes.begin(), scopes.end()), (std::set<Scope>{scope_, dotted, team}));
  EXPECT_EQ(scopes.size(), 3u);

  std::string dotted_before = Dump(*store_, dotted);
  std::string team_before = Dump(*store_, team);
  ASSERT_OK(store_->DeleteScope(scope_));
  EXPECT_EQ(Dump(*store_, dotted), dotted_before);
  EXPECT_EQ(Dump(*store_, team), team_before);
  ASSERT_OK_AND_ASSIGN(scopes, store_->ListScopes());
  EXPECT_EQ(std::set<Scope>(scopes.begin(), scopes.end()), (std::set<Scope>{dotted, team}));
}

TEST_P(MetadataStoreTest, DeleteScopeRemovesEverything) {
  ASSERT_OK_AND_ASSIGN(ScopeInfo before, store_->OpenScope(scope_, false));
  InodeAttr d = Mkdir(kRootInode, "d");
  InodeAttr f = Create(d.ino, "f");
  Commit(f.ino, 3 * kCs, 1);
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.k", "v", 0));
  ASSERT_OK(store_->SetQuota(scope_, 12345678));
  ASSERT_OK(store_->DeleteScope(scope_));

  EXPECT_ERRNO(store_->GetAttr(scope_, kRootInode), ENOENT);
  EXPECT_ERRNO(store_->GetAttr(scope_, f.ino), ENOENT);
  EXPECT_ERRNO(store_->OpenScope(scope_, false), ENOENT);
  EXPECT_ERRNO(store_->Create(scope_, kRootInode, "x", 0644, caller_, true), ENOENT);
  EXPECT_ERRNO(store_->DeleteScope(scope_), ENOENT);
  ASSERT_OK_AND_ASSIGN(std::vector<Scope> scopes, store_->ListScopes());
  EXPECT_TRUE(scopes.empty());

  // Made again: a new, empty scope with a new generation and default quota.
  ASSERT_OK_AND_ASSIGN(ScopeInfo again, store_->OpenScope(scope_, true));
  EXPECT_NE(again.generation, before.generation);
  EXPECT_EQ(again.usage.inodes, 1u);
  EXPECT_EQ(again.usage.bytes, 0u);
  EXPECT_EQ(again.usage.quota_bytes, kDefaultQuotaBytes);
  EXPECT_TRUE(Names(kRootInode).empty());
  EXPECT_EQ(Refs(Id(1)), 0u);
  EXPECT_TRUE(Garbage().empty());
  EXPECT_ERRNO(store_->GetAttr(scope_, f.ino), ENOENT);
}

TEST_P(MetadataStoreTest, SetQuota) {
  ASSERT_OK(store_->SetQuota(scope_, 42));
  EXPECT_EQ(Usage().quota_bytes, 42u);
  ASSERT_OK_AND_ASSIGN(ScopeInfo info, store_->OpenScope(scope_, false));
  EXPECT_EQ(info.usage.quota_bytes, 42u);
}

TEST_P(MetadataStoreTest, QuotaGivenAtCreationAppliesOnlyToANewScope) {
  Scope fresh = *Scope::Parse("team:fresh");
  ASSERT_OK_AND_ASSIGN(ScopeInfo made, store_->OpenScope(fresh, true, 5'000'000));
  EXPECT_EQ(made.usage.quota_bytes, 5'000'000u);
  // Opening an existing scope never changes its quota.
  ASSERT_OK_AND_ASSIGN(ScopeInfo again, store_->OpenScope(fresh, true, 7));
  EXPECT_EQ(again.usage.quota_bytes, 5'000'000u);
}

// --- create, lookup, mkdir ---

TEST_P(MetadataStoreTest, CreateFile) {
  InodeAttr root0 = Attr(kRootInode);
  ASSERT_OK_AND_ASSIGN(CreateResult r,
                       store_->Create(scope_, kRootInode, "f", S_IFDIR | 04644, caller_, true));
  EXPECT_TRUE(r.created);
  EXPECT_EQ(r.attr.mode, S_IFREG | 04644u);  // Type forced to regular.
  EXPECT_EQ(r.attr.uid, 1000u);
  EXPECT_EQ(r.attr.gid, 100u);
  EXPECT_EQ(r.attr.nlink, 1u);
  EXPECT_EQ(r.attr.size, 0u);
  EXPECT_GT(r.attr.ino, kRootInode);
  EXPECT_GE(r.attr.version, 1u);
  EXPECT_EQ(Attr(r.attr.ino), r.attr);
  ASSERT_OK_AND_ASSIGN(InodeAttr looked, store_->Lookup(scope_, kRootInode, "f"));
  EXPECT_EQ(looked, r.attr);

  InodeAttr root1 = Attr(kRootInode);
  EXPECT_GT(root1.version, root0.version);
  EXPECT_GE(root1.mtime, root0.mtime);
  EXPECT_EQ(root1.mtime, r.attr.ctime);
  EXPECT_EQ(root1.ctime, r.attr.ctime);
  EXPECT_EQ(root1.nlink, 2u);  // Files do not count.
  EXPECT_EQ(Usage().inodes, 2u);
}

TEST_P(MetadataStoreTest, CreateExisting) {
  InodeAttr f = Create(kRootInode, "f");
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Create(scope_, kRootInode, "f", 0600, caller_, true), EEXIST);
  ASSERT_OK_AND_ASSIGN(CreateResult r,
                       store_->Create(scope_, kRootInode, "f", 0600, Caller{7, 7}, false));
  EXPECT_FALSE(r.created);
  EXPECT_EQ(r.attr, f);
  EXPECT_EQ(DumpScope(), before);  // Nothing changed, not even versions.

  Mkdir(kRootInode, "d");
  before = DumpScope();
  EXPECT_ERRNO(store_->Create(scope_, kRootInode, "d", 0644, caller_, false), EISDIR);
  EXPECT_ERRNO(store_->Create(scope_, kRootInode, "d", 0644, caller_, true), EEXIST);
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, CreateInMissingOrNonDirectory) {
  InodeAttr f = Create(kRootInode, "f");
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Create(scope_, 999, "x", 0644, caller_, true), ENOENT);
  EXPECT_ERRNO(store_->Create(scope_, f.ino, "x", 0644, caller_, true), ENOTDIR);
  EXPECT_ERRNO(store_->Mkdir(scope_, f.ino, "x", 0755, caller_), ENOTDIR);
  EXPECT_ERRNO(store_->Symlink(scope_, f.ino, "x", "t", caller_), ENOTDIR);
  EXPECT_ERRNO(store_->Lookup(scope_, f.ino, "x"), ENOTDIR);
  EXPECT_ERRNO(store_->Lookup(scope_, 999, "x"), ENOENT);
  EXPECT_ERRNO(store_->Lookup(scope_, kRootInode, "nope"), ENOENT);
  EXPECT_ERRNO(store_->ReadDir(scope_, f.ino, "", 10, false), ENOTDIR);
  EXPECT_ERRNO(store_->ReadDir(scope_, 999, "", 10, false), ENOENT);
  EXPECT_ERRNO(store_->GetAttr(scope_, 999), ENOENT);
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, MkdirAndNlink) {
  InodeAttr a = Mkdir(kRootInode, "a", 0700);
  EXPECT_EQ(a.mode, S_IFDIR | 0700u);
  EXPECT_EQ(a.nlink, 2u);
  EXPECT_EQ(a.uid, 1000u);
  EXPECT_EQ(Attr(kRootInode).nlink, 3u);
  Mkdir(a.ino, "b");
  Mkdir(a.ino, "c");
  Create(a.ino, "file");
  EXPECT_EQ(Attr(a.ino).nlink, 4u);
  EXPECT_EQ(Attr(kRootInode).nlink, 3u);
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Mkdir(scope_, kRootInode, "a", 0755, caller_), EEXIST);
  EXPECT_ERRNO(store_->Mkdir(scope_, a.ino, "file", 0755, caller_), EEXIST);
  EXPECT_ERRNO(store_->Mkdir(scope_, 999, "z", 0755, caller_), ENOENT);
  EXPECT_EQ(DumpScope(), before);
  EXPECT_EQ(Usage().inodes, 5u);
}

TEST_P(MetadataStoreTest, Rmdir) {
  InodeAttr a = Mkdir(kRootInode, "a");
  InodeAttr b = Mkdir(a.ino, "b");
  Create(kRootInode, "f");
  ASSERT_OK(store_->SetXattr(scope_, b.ino, "user.x", "1", 0));
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Rmdir(scope_, kRootInode, "a"), ENOTEMPTY);
  EXPECT_ERRNO(store_->Rmdir(scope_, kRootInode, "f"), ENOTDIR);
  EXPECT_ERRNO(store_->Rmdir(scope_, kRootInode, "nope"), ENOENT);
  EXPECT_ERRNO(store_->Rmdir(scope_, 999, "a"), ENOENT);
  EXPECT_EQ(DumpScope(), before);

  uint64_t v = Attr(a.ino).version;
  ASSERT_OK(store_->Rmdir(scope_, a.ino, "b"));
  EXPECT_ERRNO(store_->GetAttr(scope_, b.ino), ENOENT);
  EXPECT_ERRNO(store_->ListXattr(scope_, b.ino), ENOENT);
  EXPECT_EQ(Attr(a.ino).nlink, 2u);
  EXPECT_GT(Attr(a.ino).version, v);
  ASSERT_OK(store_->Rmdir(scope_, kRootInode, "a"));
  EXPECT_EQ(Attr(kRootInode).nlink, 2u);
  EXPECT_EQ(Usage().inodes, 2u);  // Root and f.
  EXPECT_EQ(Names(kRootInode), std::vector<std::string>{"f"});
}

// --- bad input ---

TEST_P(MetadataStoreTest, BadNamesChangeNothing) {
  InodeAttr d = Mkdir(kRootInode, "d");
  InodeAttr f = Create(d.ino, "f");
  std::string before = DumpScope();
  const std::vector<std::pair<std::string, int>> bad = {
      {"", EINVAL},
      {".", EINVAL},
      {"..", EINVAL},
      {"a/b", EINVAL},
      {"/", EINVAL},
      {std::string(256, 'x'), ENAMETOOLONG},
      {std::string("a\0b", 3), EINVAL},
  };
  for (const auto& [name, err] : bad) {
    SCOPED_TRACE(::testing::PrintToString(name));
    EXPECT_ERRNO(store_->Lookup(scope_, d.ino, name), err);
    EXPECT_ERRNO(store_->Create(scope_, d.ino, name, 0644, caller_, true), err);
    EXPECT_ERRNO(store_->Create(scope_, d.ino, name, 0644, caller_, false), err);
    EXPECT_ERRNO(store_->Mkdir(scope_, d.ino, name, 0755, caller_), err);
    EXPECT_ERRNO(store_->Symlink(scope_, d.ino, name, "target", caller_), err);
    EXPECT_ERRNO(store_->Link(scope_, f.ino, d.ino, name), err);
    EXPECT_ERRNO(store_->Unlink(scope_, d.ino, name), err);
    EXPECT_ERRNO(store_->Rmdir(scope_, d.ino, name), err);
    EXPECT_ERRNO(store_->Rename(scope_, d.ino, name, d.ino, "g", 0), err);
    EXPECT_ERRNO(store_->Rename(scope_, d.ino, "f", d.ino, name, 0), err);
    EXPECT_ERRNO(store_->Rename(scope_, d.ino, "f", d.ino, name, kRenameExchange), err);
    EXPECT_EQ(DumpScope(), before);
  }
  // The longest good name works.
  Create(d.ino, std::string(255, 'y'));
}

TEST_P(MetadataStoreTest, SymlinkTargetBounds) {
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Symlink(scope_, kRootInode, "l", "", caller_), EINVAL);
  EXPECT_ERRNO(store_->Symlink(scope_, kRootInode, "l", std::string(4096, 't'), caller_),
               ENAMETOOLONG);
  EXPECT_ERRNO(store_->Symlink(scope_, kRootInode, "l", std::string("a\0b", 3), caller_), EINVAL);
  EXPECT_EQ(DumpScope(), before);
  ASSERT_OK_AND_ASSIGN(InodeAttr l,
                       store_->Symlink(scope_, kRootInode, "l", std::string(4095, 't'), caller_));
  EXPECT_EQ(l.size, 4095u);
  ASSERT_OK_AND_ASSIGN(std::string t, store_->ReadLink(scope_, l.ino));
  EXPECT_EQ(t, std::string(4095, 't'));
}

// --- symlinks and links ---

TEST_P(MetadataStoreTest, SymlinkAndReadLink) {
  uint64_t v = Attr(kRootInode).version;
  ASSERT_OK_AND_ASSIGN(InodeAttr l,
                       store_->Symlink(scope_, kRootInode, "link", "../blobs/abc", caller_));
  EXPECT_EQ(l.mode, S_IFLNK | 0777u);
  EXPECT_EQ(l.size, 12u);
  EXPECT_EQ(l.nlink, 1u);
  EXPECT_EQ(l.uid, 1000u);
  EXPECT_GT(Attr(kRootInode).version, v);
  ASSERT_OK_AND_ASSIGN(std::string target, store_->ReadLink(scope_, l.ino));
  EXPECT_EQ(target, "../blobs/abc");
  ASSERT_OK_AND_ASSIGN(ReadDirPage page, store_->ReadDir(scope_, kRootInode, "", 10, false));
  ASSERT_EQ(page.entries.size(), 1u);
  EXPECT_EQ(page.entries[0].type, static_cast<uint32_t>(S_IFLNK));

  InodeAttr f = Create(kRootInode, "f");
  EXPECT_ERRNO(store_->ReadLink(scope_, f.ino), EINVAL);
  EXPECT_ERRNO(store_->ReadLink(scope_, kRootInode), EINVAL);
  EXPECT_ERRNO(store_->ReadLink(scope_, 999), ENOENT);
  EXPECT_ERRNO(store_->Symlink(scope_, kRootInode, "f", "x", caller_), EEXIST);
  EXPECT_ERRNO(store_->GetChunkMap(scope_, l.ino), EINVAL);

  // The last link of a symlink frees it at once: no orphan.
  ASSERT_OK_AND_ASSIGN(UnlinkResult u, store_->Unlink(scope_, kRootInode, "link"));
  EXPECT_EQ(u.ino, l.ino);
  EXPECT_EQ(u.nlink, 0u);
  EXPECT_FALSE(u.orphaned);
  EXPECT_ERRNO(store_->GetAttr(scope_, l.ino), ENOENT);
  EXPECT_ERRNO(store_->ReadLink(scope_, l.ino), ENOENT);
  ASSERT_OK_AND_ASSIGN(std::vector<InodeId> orphans, store_->ListOrphans(scope_));
  EXPECT_TRUE(orphans.empty());
  EXPECT_EQ(Usage().inodes, 2u);
}

TEST_P(MetadataStoreTest, HardLinks) {
  InodeAttr d = Mkdir(kRootInode, "d");
  InodeAttr f = Create(kRootInode, "f");
  uint64_t dv = Attr(d.ino).version;
  ASSERT_OK_AND_ASSIGN(InodeAttr linked, store_->Link(scope_, f.ino, d.ino, "g"));
  EXPECT_EQ(linked.ino, f.ino);
  EXPECT_EQ(linked.nlink, 2u);
  EXPECT_GT(linked.version, f.version);
  EXPECT_EQ(Attr(f.ino), linked);
  EXPECT_GT(Attr(d.ino).version, dv);
  ASSERT_OK_AND_ASSIGN(InodeAttr via_g, store_->Lookup(scope_, d.ino, "g"));
  EXPECT_EQ(via_g.ino, f.ino);
  EXPECT_EQ(Usage().inodes, 3u);

  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Link(scope_, d.ino, kRootInode, "dd"), EPERM);
  EXPECT_ERRNO(store_->Link(scope_, f.ino, kRootInode, "d"), EEXIST);
  EXPECT_ERRNO(store_->Link(scope_, f.ino, f.ino, "x"), ENOTDIR);
  EXPECT_ERRNO(store_->Link(scope_, f.ino, 999, "x"), ENOENT);
  EXPECT_ERRNO(store_->Link(scope_, 999, kRootInode, "x"), ENOENT);
  EXPECT_EQ(DumpScope(), before);

  ASSERT_OK_AND_ASSIGN(UnlinkResult u, store_->Unlink(scope_, kRootInode, "f"));
  EXPECT_EQ(u.ino, f.ino);
  EXPECT_EQ(u.nlink, 1u);
  EXPECT_FALSE(u.orphaned);
  EXPECT_EQ(Attr(f.ino).nlink, 1u);
  ASSERT_OK_AND_ASSIGN(u, store_->Unlink(scope_, d.ino, "g"));
  EXPECT_EQ(u.nlink, 0u);
  EXPECT_TRUE(u.orphaned);
  // An unlinked file can not get a name again.
  EXPECT_ERRNO(store_->Link(scope_, f.ino, kRootInode, "back"), ENOENT);
}

TEST_P(MetadataStoreTest, UnlinkErrors) {
  InodeAttr d = Mkdir(kRootInode, "d");
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "d"), EISDIR);
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "nope"), ENOENT);
  EXPECT_ERRNO(store_->Unlink(scope_, 999, "d"), ENOENT);
  InodeAttr f = Create(d.ino, "f");
  before = DumpScope();
  EXPECT_ERRNO(store_->Unlink(scope_, f.ino, "x"), ENOTDIR);
  EXPECT_EQ(DumpScope(), before);
}

// --- orphans, references, garbage ---

TEST_P(MetadataStoreTest, UnlinkedFileIsOrphanUntilReleased) {
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, 2 * kCs + 10, 1);  // Chunks 1, 2, 3.
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.a", "b", 0));
  EXPECT_EQ(Usage().bytes, 2 * kCs + 10);
  ASSERT_OK_AND_ASSIGN(UnlinkResult u, store_->Unlink(scope_, kRootInode, "f"));
  EXPECT_EQ(u.ino, f.ino);
  EXPECT_EQ(u.nlink, 0u);
  EXPECT_TRUE(u.orphaned);
  ASSERT_OK_AND_ASSIGN(std::vector<InodeId> orphans, store_->ListOrphans(scope_));
  EXPECT_EQ(orphans, std::vector<InodeId>{f.ino});

  // Still usable through open handles: attrs, content, xattrs, commits.
  InodeAttr orphan = Attr(f.ino);
  EXPECT_EQ(orphan.nlink, 0u);
  ASSERT_OK_AND_ASSIGN(ChunkMap map, store_->GetChunkMap(scope_, f.ino));
  EXPECT_EQ(map.size, 2 * kCs + 10);
  EXPECT_EQ(Refs(Id(1)), 1u);
  EXPECT_TRUE(Garbage().empty());
  EXPECT_EQ(Usage().bytes, 2 * kCs + 10);  // Space is held until released.
  EXPECT_EQ(Usage().inodes, 2u);
  Commit(f.ino, kCs, 10);  // Chunk 10 replaces 1..3.
  EXPECT_EQ(Garbage(), (std::set<ChunkId>{Id(1), Id(2), Id(3)}));

  ASSERT_OK(store_->ReleaseInode(scope_, f.ino));
  EXPECT_ERRNO(store_->GetAttr(scope_, f.ino), ENOENT);
  EXPECT_ERRNO(store_->GetChunkMap(scope_, f.ino), ENOENT);
  EXPECT_ERRNO(store_->ListXattr(scope_, f.ino), ENOENT);
  ASSERT_OK_AND_ASSIGN(orphans, store_->ListOrphans(scope_));
  EXPECT_TRUE(orphans.empty());
  EXPECT_EQ(Refs(Id(10)), 0u);
  EXPECT_EQ(Garbage(), (std::set<ChunkId>{Id(1), Id(2), Id(3), Id(10)}));
  EXPECT_EQ(Usage().bytes, 0u);
  EXPECT_EQ(Usage().inodes, 1u);
  // Again, or on an inode that never existed: OK, nothing happens.
  std::string before = DumpScope();
  EXPECT_OK(store_->ReleaseInode(scope_, f.ino));
  EXPECT_OK(store_->ReleaseInode(scope_, 12345));
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, ReleaseOfLinkedInodeIsNoop) {
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, 10, 1);
  std::string before = DumpScope();
  EXPECT_OK(store_->ReleaseInode(scope_, f.ino));
  EXPECT_OK(store_->ReleaseInode(scope_, kRootInode));
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, PurgeOrphans) {
  std::vector<InodeId> inos;
  for (int i = 0; i < 3; ++i) {
    InodeAttr f = Create(kRootInode, fmt::format("f{}", i));
    Commit(f.ino, 100, 100 + i);
    inos.push_back(f.ino);
    ASSERT_OK(store_->Unlink(scope_, kRootInode, fmt::format("f{}", i)));
  }
  Timespec before_all{0, 0};
  ASSERT_OK_AND_ASSIGN(uint64_t n, store_->PurgeOrphans(scope_, before_all));
  EXPECT_EQ(n, 0u);
  ASSERT_OK_AND_ASSIGN(std::vector<InodeId> orphans, store_->ListOrphans(scope_));
  EXPECT_EQ(orphans, inos);
  Timespec later = Now();
  later.sec += 1;
  ASSERT_OK_AND_ASSIGN(n, store_->PurgeOrphans(scope_, later));
  EXPECT_EQ(n, 3u);
  ASSERT_OK_AND_ASSIGN(orphans, store_->ListOrphans(scope_));
  EXPECT_TRUE(orphans.empty());
  for (InodeId ino : inos) EXPECT_ERRNO(store_->GetAttr(scope_, ino), ENOENT);
  EXPECT_EQ(Garbage(), (std::set<ChunkId>{Id(100), Id(101), Id(102)}));
  EXPECT_EQ(Usage().bytes, 0u);
  EXPECT_EQ(Usage().inodes, 1u);
}

TEST_P(MetadataStoreTest, PurgeManyOrphansInSeveralBatches) {
  constexpr int kFiles = 1100;  // More than one purge batch.
  for (int i = 0; i < kFiles; ++i) {
    std::string name = fmt::format("f{}", i);
    InodeAttr f = Create(kRootInode, name);
    if (i % 2) Commit(f.ino, 1, i);
    ASSERT_OK(store_->Unlink(scope_, kRootInode, name));
  }
  Timespec later = Now();
  later.sec += 1;
  ASSERT_OK_AND_ASSIGN(uint64_t n, store_->PurgeOrphans(scope_, later));
  EXPECT_EQ(n, static_cast<uint64_t>(kFiles));
  ASSERT_OK_AND_ASSIGN(std::vector<InodeId> orphans, store_->ListOrphans(scope_));
  EXPECT_TRUE(orphans.empty());
  EXPECT_EQ(Usage().inodes, 1u);
  EXPECT_EQ(Usage().bytes, 0u);
  EXPECT_EQ(Garbage().size(), static_cast<size_t>(kFiles / 2));
}

TEST_P(MetadataStoreTest, RefCountsAndGarbage) {
  InodeAttr a = Create(kRootInode, "a");
  InodeAttr b = Create(kRootInode, "b");
  Commit(a.ino, 2 * kCs, 1);      // 1, 2
  Commit(b.ino, 2 * kCs + 1, 2);  // 2, 3, 4
  EXPECT_EQ(Refs(Id(1)), 1u);
  EXPECT_EQ(Refs(Id(2)), 2u);
  EXPECT_EQ(Refs(Id(3)), 1u);
  EXPECT_EQ(Refs(Id(99)), 0u);
  // The same chunk twice in one file counts twice.
  InodeAttr c = Create(kRootInode, "c");
  std::vector<ChunkRef> twice = {{Id(7), kCs}, {Id(7), kCs}};
  ASSERT_OK(store_->CommitContent(scope_, c.ino, Attr(c.ino).version, 2 * kCs, kCs, twice, Now()));
  EXPECT_EQ(Refs(Id(7)), 2u);
  EXPECT_TRUE(Garbage().empty());

  // Replacing a's content with one sharing chunk 2: 2 never reaches 0.
  ASSERT_OK(
      store_->CommitContent(scope_, a.ino, Attr(a.ino).version, kCs, kCs, {{Id(2), kCs}}, Now()));
  EXPECT_EQ(Refs(Id(1)), 0u);
  EXPECT_EQ(Refs(Id(2)), 2u);
  EXPECT_EQ(Garbage(), std::set<ChunkId>{Id(1)});

  // A garbage chunk referenced again leaves the garbage list.
  ASSERT_OK(
      store_->CommitContent(scope_, c.ino, Attr(c.ino).version, kCs, kCs, {{Id(1), kCs}}, Now()));
  EXPECT_EQ(Refs(Id(1)), 1u);
  EXPECT_EQ(Refs(Id(7)), 0u);
  EXPECT_EQ(Garbage(), std::set<ChunkId>{Id(7)});

  ASSERT_OK(store_->ForgetGarbage(scope_, {Id(7), Id(12345)}));
  EXPECT_TRUE(Garbage().empty());
  EXPECT_EQ(Usage().bytes, kCs + (2 * kCs + 1) + kCs);
}

TEST_P(MetadataStoreTest, SmallChunksAreKeptWithTheirCommit) {
  InodeAttr f = Create(kRootInode, "f");
  const std::string a = "small file bytes";
  const std::string b(3000, 'b');
  const ChunkId ida = ChunkId::Of(a), idb = ChunkId::Of(b);
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> none, store_->GetSmallChunk(scope_, ida));
  EXPECT_FALSE(none.has_value());

  // Bad input changes nothing: too big, wrong hash, not in the commit.
  const std::vector<ChunkRef> refs = {{ida, static_cast<uint32_t>(a.size())}};
  auto commit = [&](const std::vector<MetadataStore::SmallChunk>& small) {
    return store_->CommitContentWithSmallChunks(scope_, f.ino, Attr(f.ino).version, a.size(), kCs,
                                                refs, Now(), small);
  };
  const std::string big(kMaxSmallChunkBytes + 1, 'x');
  EXPECT_EQ(commit({{ChunkId::Of(big), big}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(commit({{idb, a}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(commit({{ida, a}, {idb, b}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Attr(f.ino).version, f.version);
  ASSERT_OK_AND_ASSIGN(none, store_->GetSmallChunk(scope_, ida));
  EXPECT_FALSE(none.has_value());

  ASSERT_OK_AND_ASSIGN(InodeAttr after, commit({{ida, a}}));
  EXPECT_EQ(after.size, a.size());
  ASSERT_OK_AND_ASSIGN(std::optional<std::string> got, store_->GetSmallChunk(scope_, ida));
  EXPECT_EQ(got, a);
  EXPECT_EQ(Refs(ida), 1u);
  ASSERT_OK_AND_ASSIGN(ChunkMap map, store_->GetChunkMap(scope_, f.ino));
  EXPECT_EQ(map.chunks, refs);

  // Unreferenced, it goes on the garbage list like any chunk, and stays
  // readable until the collector deletes it.
  Commit(f.ino, 0, 0);
  EXPECT_EQ(Garbage(), std::set<ChunkId>{ida});
  ASSERT_OK_AND_ASSIGN(got, store_->GetSmallChunk(scope_, ida));
  EXPECT_EQ(got, a);
  ASSERT_OK(store_->DeleteSmallChunk(scope_, ida));
  ASSERT_OK_AND_ASSIGN(got, store_->GetSmallChunk(scope_, ida));
  EXPECT_FALSE(got.has_value());

  // It leaves with its scope.
  InodeAttr g = Create(kRootInode, "g");
  ASSERT_OK(store_->CommitContentWithSmallChunks(scope_, g.ino, g.version, b.size(), kCs,
                                                 {{idb, static_cast<uint32_t>(b.size())}}, Now(),
                                                 {{idb, b}}));
  ASSERT_OK(store_->DeleteScope(scope_));
  ASSERT_OK(store_->OpenScope(scope_, /*create=*/true));
  ASSERT_OK_AND_ASSIGN(got, store_->GetSmallChunk(scope_, idb));
  EXPECT_FALSE(got.has_value());
}

TEST_P(MetadataStoreTest, ListGarbageInIdOrderWithLimit) {
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, 20 * kCs, 1);
  Commit(f.ino, 0, 0);
  ASSERT_OK_AND_ASSIGN(std::vector<ChunkId> all, store_->ListGarbage(scope_, 1000));
  EXPECT_EQ(all.size(), 20u);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
  ASSERT_OK_AND_ASSIGN(std::vector<ChunkId> some, store_->ListGarbage(scope_, 5));
  EXPECT_EQ(some, std::vector<ChunkId>(all.begin(), all.begin() + 5));
  ASSERT_OK(store_->ForgetGarbage(scope_, some));
  ASSERT_OK_AND_ASSIGN(std::vector<ChunkId> rest, store_->ListGarbage(scope_, 0));
  EXPECT_EQ(rest, std::vector<ChunkId>(all.begin() + 5, all.end()));
}

// --- content ---

TEST_P(MetadataStoreTest, CommitContent) {
  InodeAttr f = Create(kRootInode, "f");
  ASSERT_OK_AND_ASSIGN(ChunkMap empty, store_->GetChunkMap(scope_, f.ino));
  EXPECT_EQ(empty.version, f.version);
  EXPECT_EQ(empty.size, 0u);
  EXPECT_TRUE(empty.chunks.empty());

  Timespec mtime{1700000000, 5};
  std::vector<ChunkRef> chunks = Chunks(3 * kCs + 7, 1, {1});  // Chunk 1 is a hole.
  ASSERT_OK_AND_ASSIGN(InodeAttr after, store_->CommitContent(scope_, f.ino, f.version, 3 * kCs + 7,
                                                              kCs, chunks, mtime));
  EXPECT_EQ(after.size, 3 * kCs + 7);
  EXPECT_EQ(after.mtime, mtime);
  EXPECT_GT(after.version, f.version);
  EXPECT_GE(after.ctime, f.ctime);
  EXPECT_EQ(Attr(f.ino), after);
  ASSERT_OK_AND_ASSIGN(ChunkMap map, store_->GetChunkMap(scope_, f.ino));
  EXPECT_EQ(map.version, after.version);
  EXPECT_EQ(map.size, 3 * kCs + 7);
  EXPECT_EQ(map.chunk_size, kCs);
  EXPECT_EQ(map.chunks, chunks);
  // Holes do not count against the quota.
  EXPECT_EQ(Usage().bytes, 2 * kCs + 7);
}

TEST_P(MetadataStoreTest, CommitContentStaleVersion) {
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, 10, 1);
  uint64_t v = Attr(f.ino).version;
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->CommitContent(scope_, f.ino, v - 1, 20, kCs, Chunks(20, 2), Now()), ESTALE);
  EXPECT_ERRNO(store_->CommitContent(scope_, f.ino, v + 1, 20, kCs, Chunks(20, 2), Now()), ESTALE);
  EXPECT_EQ(DumpScope(), before);
  // Any attribute change moves the version too.
  ASSERT_OK(store_->SetAttr(scope_, f.ino, WithMode(0600)));
  EXPECT_ERRNO(store_->CommitContent(scope_, f.ino, v, 20, kCs, Chunks(20, 2), Now()), ESTALE);
  EXPECT_OK(
      store_->CommitContent(scope_, f.ino, Attr(f.ino).version, 20, kCs, Chunks(20, 2), Now()));
}

TEST_P(MetadataStoreTest, CommitContentBadInput) {
  InodeAttr f = Create(kRootInode, "f");
  InodeAttr d = Mkdir(kRootInode, "d");
  ASSERT_OK_AND_ASSIGN(InodeAttr l, store_->Symlink(scope_, kRootInode, "l", "f", caller_));
  std::string before = DumpScope();
  uint64_t v = f.version;
  auto commit = [&](uint64_t size, uint32_t cs, std::vector<ChunkRef> chunks) {
    return store_->CommitContent(scope_, f.ino, v, size, cs, chunks, Now());
  };
  EXPECT_EQ(commit(10, 1000, {{Id(1), 10}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(commit(10, 3 * kCs, {{Id(1), 10}}).status().code(),
            absl::StatusCode::kInvalidArgument);  // Not a power of two.
  EXPECT_EQ(commit(10, 2 * kMaxChunkSize, {{Id(1), 10}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(commit(10, kCs, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(commit(10, kCs, {{Id(1), 9}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(commit(kCs + 1, kCs, {{Id(1), kCs - 1}, {Id(2), 2}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(commit(0, kCs, {{Id(1), 0}}).status().code(), absl::StatusCode::kInvalidArgument);
  // Sizes whose shape arithmetic would overflow.
  EXPECT_ERRNO(commit(~0ull, kCs, {}), EFBIG);
  EXPECT_ERRNO(commit(~0ull - kCs + 2, kCs, {}), EFBIG);
  EXPECT_ERRNO(store_->CommitContent(scope_, d.ino, d.version, 10, kCs, Chunks(10, 1), Now()),
               EISDIR);
  EXPECT_ERRNO(store_->CommitContent(scope_, l.ino, l.version, 10, kCs, Chunks(10, 1), Now()),
               EINVAL);
  EXPECT_ERRNO(store_->CommitContent(scope_, 999, 1, 10, kCs, Chunks(10, 1), Now()), ENOENT);
  EXPECT_ERRNO(store_->GetChunkMap(scope_, d.ino), EISDIR);
  EXPECT_ERRNO(store_->GetChunkMap(scope_, 999), ENOENT);
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, QuotaRefusesGrowthAndChangesNothing) {
  ASSERT_OK(store_->SetQuota(scope_, 3 * kCs));
  InodeAttr a = Create(kRootInode, "a");
  InodeAttr b = Create(kRootInode, "b");
  Commit(a.ino, 2 * kCs, 1);
  std::string before = DumpScope();
  EXPECT_ERRNO(
      store_->CommitContent(scope_, b.ino, b.version, kCs + 1, kCs, Chunks(kCs + 1, 10), Now()),
      EDQUOT);
  EXPECT_EQ(DumpScope(), before);
  EXPECT_EQ(Refs(Id(10)), 0u);
  // Exactly up to the quota is fine; holes are free.
  Commit(b.ino, 5 * kCs, 10, {1, 2, 3, 4});
  EXPECT_EQ(Usage().bytes, 3 * kCs);
  // Now at the quota: any new chunk is over.
  InodeAttr c = Create(kRootInode, "c");
  before = DumpScope();
  EXPECT_ERRNO(store_->CommitContent(scope_, c.ino, c.version, 1, kCs, Chunks(1, 20), Now()),
               EDQUOT);
  EXPECT_EQ(DumpScope(), before);
  // Shrinking is always allowed, even over quota.
  ASSERT_OK(store_->SetQuota(scope_, 0));
  Commit(a.ino, kCs, 1);
  EXPECT_EQ(Usage().bytes, 2 * kCs);
  Commit(c.ino, 0, 0);
}

// --- setattr ---

TEST_P(MetadataStoreTest, SetAttrFields) {
  InodeAttr f = Create(kRootInode, "f");
  SetAttrRequest req;
  req.mode = S_IFDIR | 0600;  // The type bits are ignored.
  req.uid = 5;
  req.gid = 6;
  req.atime = Timespec{100, 1};
  req.mtime = Timespec{200, 2};
  ASSERT_OK_AND_ASSIGN(InodeAttr a, store_->SetAttr(scope_, f.ino, req));
  EXPECT_EQ(a.mode, S_IFREG | 0600u);
  EXPECT_EQ(a.uid, 5u);
  EXPECT_EQ(a.gid, 6u);
  EXPECT_EQ(a.atime, (Timespec{100, 1}));
  EXPECT_EQ(a.mtime, (Timespec{200, 2}));
  EXPECT_GE(a.ctime, f.ctime);
  EXPECT_GT(a.version, f.version);
  EXPECT_EQ(Attr(f.ino), a);

  // An empty request changes nothing.
  std::string before = DumpScope();
  ASSERT_OK_AND_ASSIGN(InodeAttr same, store_->SetAttr(scope_, f.ino, SetAttrRequest{}));
  EXPECT_EQ(same, a);
  EXPECT_EQ(DumpScope(), before);

  InodeAttr d = Mkdir(kRootInode, "d");
  ASSERT_OK_AND_ASSIGN(InodeAttr dm, store_->SetAttr(scope_, d.ino, WithMode(01777)));
  EXPECT_EQ(dm.mode, S_IFDIR | 01777u);
  ASSERT_OK_AND_ASSIGN(InodeAttr l, store_->Symlink(scope_, kRootInode, "l", "f", caller_));
  before = DumpScope();
  EXPECT_ERRNO(store_->SetAttr(scope_, d.ino, WithSize(0)), EISDIR);
  EXPECT_ERRNO(store_->SetAttr(scope_, l.ino, WithSize(0)), EINVAL);
  EXPECT_ERRNO(store_->SetAttr(scope_, 999, WithUid(1)), ENOENT);
  SetAttrRequest bad_time;
  bad_time.mtime = Timespec{1, 1'000'000'000};
  EXPECT_ERRNO(store_->SetAttr(scope_, f.ino, bad_time), EINVAL);
  bad_time.mtime.reset();
  bad_time.atime = Timespec{1, 2'000'000'000};
  EXPECT_ERRNO(store_->SetAttr(scope_, f.ino, bad_time), EINVAL);
  EXPECT_ERRNO(store_->CommitContent(scope_, f.ino, Attr(f.ino).version, 0, kCs, {},
                                     Timespec{1, 1'000'000'000}),
               EINVAL);
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, TruncateShrinks) {
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, 3 * kCs + 100, 1);  // 1, 2, 3, 4(100)
  ASSERT_OK_AND_ASSIGN(InodeAttr a, store_->SetAttr(scope_, f.ino, WithSize(kCs + 5)));
  EXPECT_EQ(a.size, kCs + 5);
  ASSERT_OK_AND_ASSIGN(ChunkMap map, store_->GetChunkMap(scope_, f.ino));
  EXPECT_EQ(map.size, kCs + 5);
  EXPECT_EQ(map.version, a.version);
  ASSERT_EQ(map.chunks.size(), 2u);
  EXPECT_EQ(map.chunks[0], (ChunkRef{Id(1), kCs}));
  EXPECT_EQ(map.chunks[1], (ChunkRef{Id(2), 5}));  // A prefix of chunk 2.
  EXPECT_EQ(Refs(Id(2)), 1u);
  EXPECT_EQ(Garbage(), (std::set<ChunkId>{Id(3), Id(4)}));
  EXPECT_EQ(Usage().bytes, kCs + 5);

  // Truncate to the same size: nothing but ctime/version.
  ASSERT_OK_AND_ASSIGN(InodeAttr b, store_->SetAttr(scope_, f.ino, WithSize(kCs + 5)));
  EXPECT_EQ(b.mtime, a.mtime);

  ASSERT_OK_AND_ASSIGN(a, store_->SetAttr(scope_, f.ino, WithSize(0)));
  EXPECT_EQ(a.size, 0u);
  ASSERT_OK_AND_ASSIGN(map, store_->GetChunkMap(scope_, f.ino));
  EXPECT_TRUE(map.chunks.empty());
  EXPECT_EQ(Garbage(), (std::set<ChunkId>{Id(1), Id(2), Id(3), Id(4)}));
  EXPECT_EQ(Usage().bytes, 0u);
}

TEST_P(MetadataStoreTest, TruncateExtends) {
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, kCs + 10, 1);  // 1, 2(10)
  ASSERT_OK_AND_ASSIGN(InodeAttr a, store_->SetAttr(scope_, f.ino, WithSize(3 * kCs + 1)));
  EXPECT_EQ(a.size, 3 * kCs + 1);
  ASSERT_OK_AND_ASSIGN(ChunkMap map, store_->GetChunkMap(scope_, f.ino));
  std::vector<ChunkRef> want = {{Id(1), kCs}, {Id(2), kCs}, {std::nullopt, kCs}, {std::nullopt, 1}};
  EXPECT_EQ(map.chunks, want);
  EXPECT_EQ(Usage().bytes, 2 * kCs);  // The raised last chunk counts; holes do not.
  // Within the last chunk only.
  InodeAttr g = Create(kRootInode, "g");
  Commit(g.ino, 10, 5);
  ASSERT_OK(store_->SetAttr(scope_, g.ino, WithSize(20)));
  ASSERT_OK_AND_ASSIGN(map, store_->GetChunkMap(scope_, g.ino));
  EXPECT_EQ(map.chunks, (std::vector<ChunkRef>{{Id(5), 20}}));
  // An empty file grows by holes in default-size chunks.
  InodeAttr h = Create(kRootInode, "h");
  ASSERT_OK(store_->SetAttr(scope_, h.ino, WithSize(uint64_t{kDefaultChunkSize} + 1)));
  ASSERT_OK_AND_ASSIGN(map, store_->GetChunkMap(scope_, h.ino));
  EXPECT_EQ(map.chunk_size, kDefaultChunkSize);
  EXPECT_EQ(map.chunks,
            (std::vector<ChunkRef>{{std::nullopt, kDefaultChunkSize}, {std::nullopt, 1}}));
}

TEST_P(MetadataStoreTest, TruncateThenExtendWithinChunkIsRefused) {
  // Chunk 1 holds 100 bytes; after truncating to 10, growing again must read
  // zeros past 10, which a longer prefix of chunk 1 would not.
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, 100, 1);
  ASSERT_OK(store_->SetAttr(scope_, f.ino, WithSize(10)));
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->SetAttr(scope_, f.ino, WithSize(50)), EOPNOTSUPP);
  EXPECT_ERRNO(store_->SetAttr(scope_, f.ino, WithSize(5 * kCs)), EOPNOTSUPP);
  EXPECT_EQ(DumpScope(), before);
  // Shrinking more is fine; new content made from bytes is fine to extend.
  ASSERT_OK(store_->SetAttr(scope_, f.ino, WithSize(5)));
  Commit(f.ino, 5, 2);
  ASSERT_OK(store_->SetAttr(scope_, f.ino, WithSize(50)));
  // Reusing the cut chunk as is keeps the mark.
  InodeAttr g = Create(kRootInode, "g");
  Commit(g.ino, 100, 3);
  ASSERT_OK(store_->SetAttr(scope_, g.ino, WithSize(10)));
  ASSERT_OK_AND_ASSIGN(ChunkMap map, store_->GetChunkMap(scope_, g.ino));
  ASSERT_OK(store_->CommitContent(scope_, g.ino, map.version, 10, kCs, map.chunks, Now()));
  EXPECT_ERRNO(store_->SetAttr(scope_, g.ino, WithSize(20)), EOPNOTSUPP);
}

TEST_P(MetadataStoreTest, TruncateQuotaAndLimits) {
  ASSERT_OK(store_->SetQuota(scope_, kCs + 10));
  InodeAttr f = Create(kRootInode, "f");
  Commit(f.ino, 10, 1);
  // Extending raises the last chunk to a full chunk: kCs bytes counted.
  ASSERT_OK(store_->SetAttr(scope_, f.ino, WithSize(3 * kCs)));
  EXPECT_EQ(Usage().bytes, kCs);
  InodeAttr g = Create(kRootInode, "g");
  Commit(g.ino, 10, 2);
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->SetAttr(scope_, g.ino, WithSize(20)), EDQUOT);
  EXPECT_ERRNO(store_->SetAttr(scope_, g.ino, WithSize(~0ull)), EFBIG);
  EXPECT_EQ(DumpScope(), before);
}

// --- readdir ---

TEST_P(MetadataStoreTest, ReadDirPagination) {
  InodeAttr d = Mkdir(kRootInode, "big");
  constexpr int kEntries = 10000;
  std::set<std::string> want;
  for (int i = 0; i < kEntries; ++i) want.insert(fmt::format("entry-{:05}", i));
  // Created in a scrambled order, by 8 threads (sharing syncs keeps it quick).
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kEntries; i += 8) {
        std::string name = fmt::format("entry-{:05}", (i * 7919) % kEntries);
        EXPECT_OK(store_->Create(scope_, d.ino, name, 0644, caller_, true));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  std::vector<std::string> got;
  std::string after;
  int pages = 0;
  while (true) {
    ASSERT_OK_AND_ASSIGN(ReadDirPage page, store_->ReadDir(scope_, d.ino, after, 1000, false));
    ++pages;
    ASSERT_LE(page.entries.size(), 1000u);
    for (const DirEntry& e : page.entries) {
      got.push_back(e.name);
      EXPECT_EQ(e.type, static_cast<uint32_t>(S_IFREG));
      EXPECT_FALSE(e.attr.has_value());
    }
    if (!page.more) break;
    ASSERT_EQ(page.entries.size(), 1000u);
    after = got.back();
  }
  EXPECT_EQ(pages, 10);
  EXPECT_EQ(got, std::vector<std::string>(want.begin(), want.end()));  // Sorted, complete.
  // Limits are capped.
  ASSERT_OK_AND_ASSIGN(ReadDirPage capped, store_->ReadDir(scope_, d.ino, "", 100000, false));
  EXPECT_EQ(capped.entries.size(), kMaxReadDirEntries);
  EXPECT_TRUE(capped.more);
  ASSERT_OK_AND_ASSIGN(ReadDirPage zero, store_->ReadDir(scope_, d.ino, "", 0, false));
  EXPECT_EQ(zero.entries.size(), kMaxReadDirEntries);
  // A cursor between names, and one past the end.
  ASSERT_OK_AND_ASSIGN(ReadDirPage mid, store_->ReadDir(scope_, d.ino, "entry-00099x", 2, false));
  ASSERT_EQ(mid.entries.size(), 2u);
  EXPECT_EQ(mid.entries[0].name, "entry-00100");
  ASSERT_OK_AND_ASSIGN(ReadDirPage end, store_->ReadDir(scope_, d.ino, "entry-09999", 10, false));
  EXPECT_TRUE(end.entries.empty());
  EXPECT_FALSE(end.more);
  // Exactly `limit` left: more is false.
  ASSERT_OK_AND_ASSIGN(ReadDirPage last, store_->ReadDir(scope_, d.ino, "entry-09997", 2, false));
  EXPECT_EQ(last.entries.size(), 2u);
  EXPECT_FALSE(last.more);
  EXPECT_EQ(Attr(d.ino).nlink, 2u);
  EXPECT_EQ(Usage().inodes, static_cast<uint64_t>(kEntries + 2));
}

TEST_P(MetadataStoreTest, ReadDirPlus) {
  InodeAttr f = Create(kRootInode, "f");
  InodeAttr d = Mkdir(kRootInode, "d");
  ASSERT_OK_AND_ASSIGN(InodeAttr l, store_->Symlink(scope_, kRootInode, "l", "x", caller_));
  ASSERT_OK_AND_ASSIGN(ReadDirPage page, store_->ReadDir(scope_, kRootInode, "", 10, true));
  ASSERT_EQ(page.entries.size(), 3u);
  EXPECT_FALSE(page.more);
  EXPECT_EQ(page.entries[0].name, "d");
  EXPECT_EQ(page.entries[0].ino, d.ino);
  EXPECT_EQ(page.entries[0].type, static_cast<uint32_t>(S_IFDIR));
  EXPECT_EQ(page.entries[0].attr, Attr(d.ino));
  EXPECT_EQ(page.entries[1].name, "f");
  EXPECT_EQ(page.entries[1].attr, Attr(f.ino));
  EXPECT_EQ(page.entries[2].name, "l");
  EXPECT_EQ(page.entries[2].attr, Attr(l.ino));
  ASSERT_OK_AND_ASSIGN(ReadDirPage empty, store_->ReadDir(scope_, d.ino, "", 10, true));
  EXPECT_TRUE(empty.entries.empty());
  EXPECT_FALSE(empty.more);
}

// --- rename ---

TEST_P(MetadataStoreTest, RenameWithinDirectory) {
  InodeAttr f = Create(kRootInode, "a");
  uint64_t v = Attr(kRootInode).version;
  ASSERT_OK_AND_ASSIGN(UnlinkResult r, store_->Rename(scope_, kRootInode, "a", kRootInode, "b", 0));
  EXPECT_EQ(r.ino, 0u);
  EXPECT_ERRNO(store_->Lookup(scope_, kRootInode, "a"), ENOENT);
  ASSERT_OK_AND_ASSIGN(InodeAttr b, store_->Lookup(scope_, kRootInode, "b"));
  EXPECT_EQ(b.ino, f.ino);
  EXPECT_EQ(b.nlink, 1u);
  EXPECT_GT(b.version, f.version);  // ctime changed.
  InodeAttr root = Attr(kRootInode);
  EXPECT_EQ(root.version, v + 1);  // Once, though it is both parents.
  EXPECT_EQ(root.nlink, 2u);
  EXPECT_EQ(Usage().inodes, 2u);
}

TEST_P(MetadataStoreTest, RenameDirectoryAcrossParents) {
  InodeAttr a = Mkdir(kRootInode, "a");
  InodeAttr b = Mkdir(kRootInode, "b");
  InodeAttr sub = Mkdir(a.ino, "sub");
  Create(sub.ino, "file");
  uint64_t av = Attr(a.ino).version, bv = Attr(b.ino).version;
  ASSERT_OK(store_->Rename(scope_, a.ino, "sub", b.ino, "moved", 0));
  EXPECT_EQ(Attr(a.ino).nlink, 2u);
  EXPECT_EQ(Attr(b.ino).nlink, 3u);
  EXPECT_EQ(Attr(kRootInode).nlink, 4u);
  EXPECT_GT(Attr(a.ino).version, av);
  EXPECT_GT(Attr(b.ino).version, bv);
  EXPECT_EQ(Names(b.ino), std::vector<std::string>{"moved"});
  EXPECT_EQ(Names(sub.ino), std::vector<std::string>{"file"});
  // The moved directory's parent pointer follows: b can no longer go into it.
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "b", sub.ino, "loop", 0), EINVAL);
  EXPECT_EQ(DumpScope(), before);
  // ...but a can.
  ASSERT_OK(store_->Rename(scope_, kRootInode, "a", sub.ino, "a2", 0));
  EXPECT_EQ(Attr(kRootInode).nlink, 3u);
  EXPECT_EQ(Attr(sub.ino).nlink, 3u);
}

TEST_P(MetadataStoreTest, RenameIntoOwnSubtree) {
  InodeAttr a = Mkdir(kRootInode, "a");
  InodeAttr b = Mkdir(a.ino, "b");
  InodeAttr c = Mkdir(b.ino, "c");
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "a", a.ino, "x", 0), EINVAL);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "a", b.ino, "x", 0), EINVAL);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "a", c.ino, "x", 0), EINVAL);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "a", c.ino, "x", kRenameNoReplace), EINVAL);
  // Exchanging a directory with one inside it, either way round.
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "a", b.ino, "c", kRenameExchange), EINVAL);
  EXPECT_ERRNO(store_->Rename(scope_, b.ino, "c", kRootInode, "a", kRenameExchange), EINVAL);
  // Replacing an ancestor (non-empty) of the source.
  EXPECT_ERRNO(store_->Rename(scope_, b.ino, "c", kRootInode, "a", 0), ENOTEMPTY);
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, RenameReplacesFile) {
  InodeAttr src = Create(kRootInode, "src");
  InodeAttr dst = Create(kRootInode, "dst");
  Commit(dst.ino, 10, 1);
  ASSERT_OK_AND_ASSIGN(UnlinkResult r,
                       store_->Rename(scope_, kRootInode, "src", kRootInode, "dst", 0));
  EXPECT_EQ(r.ino, dst.ino);
  EXPECT_EQ(r.nlink, 0u);
  EXPECT_TRUE(r.orphaned);
  EXPECT_EQ(Names(kRootInode), std::vector<std::string>{"dst"});
  ASSERT_OK_AND_ASSIGN(InodeAttr now, store_->Lookup(scope_, kRootInode, "dst"));
  EXPECT_EQ(now.ino, src.ino);
  ASSERT_OK_AND_ASSIGN(std::vector<InodeId> orphans, store_->ListOrphans(scope_));
  EXPECT_EQ(orphans, std::vector<InodeId>{dst.ino});
  EXPECT_EQ(Refs(Id(1)), 1u);  // Kept with the orphan.

  // A target with another link is not orphaned.
  InodeAttr t = Create(kRootInode, "t");
  ASSERT_OK(store_->Link(scope_, t.ino, kRootInode, "t2"));
  ASSERT_OK_AND_ASSIGN(r, store_->Rename(scope_, kRootInode, "dst", kRootInode, "t", 0));
  EXPECT_EQ(r.ino, t.ino);
  EXPECT_EQ(r.nlink, 1u);
  EXPECT_FALSE(r.orphaned);
  EXPECT_EQ(Attr(t.ino).nlink, 1u);

  // A symlink target is freed at once.
  ASSERT_OK_AND_ASSIGN(InodeAttr l, store_->Symlink(scope_, kRootInode, "l", "x", caller_));
  ASSERT_OK_AND_ASSIGN(r, store_->Rename(scope_, kRootInode, "t", kRootInode, "l", 0));
  EXPECT_EQ(r.ino, l.ino);
  EXPECT_FALSE(r.orphaned);
  EXPECT_ERRNO(store_->GetAttr(scope_, l.ino), ENOENT);
}

TEST_P(MetadataStoreTest, RenameReplacesEmptyDirectory) {
  InodeAttr a = Mkdir(kRootInode, "a");
  InodeAttr p = Mkdir(kRootInode, "p");
  InodeAttr b = Mkdir(p.ino, "b");
  Create(a.ino, "inside");
  uint64_t inodes = Usage().inodes;
  ASSERT_OK_AND_ASSIGN(UnlinkResult r, store_->Rename(scope_, kRootInode, "a", p.ino, "b", 0));
  EXPECT_EQ(r.ino, b.ino);
  EXPECT_FALSE(r.orphaned);
  EXPECT_ERRNO(store_->GetAttr(scope_, b.ino), ENOENT);
  EXPECT_EQ(Usage().inodes, inodes - 1);
  EXPECT_EQ(Attr(kRootInode).nlink, 3u);  // p only.
  EXPECT_EQ(Attr(p.ino).nlink, 3u);       // The moved a replaced b.
  ASSERT_OK_AND_ASSIGN(InodeAttr moved, store_->Lookup(scope_, p.ino, "b"));
  EXPECT_EQ(moved.ino, a.ino);
  EXPECT_EQ(Names(a.ino), std::vector<std::string>{"inside"});
  // Within one directory.
  Mkdir(kRootInode, "x");
  Mkdir(kRootInode, "y");
  ASSERT_OK(store_->Rename(scope_, kRootInode, "x", kRootInode, "y", 0));
  EXPECT_EQ(Attr(kRootInode).nlink, 4u);
}

TEST_P(MetadataStoreTest, RenameTypeMismatchesAndErrors) {
  InodeAttr d = Mkdir(kRootInode, "d");
  InodeAttr full = Mkdir(kRootInode, "full");
  Create(full.ino, "x");
  Create(kRootInode, "f");
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "d", kRootInode, "f", 0), ENOTDIR);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "f", kRootInode, "d", 0), EISDIR);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "d", kRootInode, "full", 0), ENOTEMPTY);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "nope", kRootInode, "z", 0), ENOENT);
  EXPECT_ERRNO(store_->Rename(scope_, 999, "f", kRootInode, "z", 0), ENOENT);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "f", 999, "z", 0), ENOENT);
  InodeAttr f = Attr(store_->Lookup(scope_, kRootInode, "f")->ino);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "d", f.ino, "z", 0), ENOTDIR);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "f", kRootInode, "d", kRenameNoReplace), EEXIST);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "f", kRootInode, "f", kRenameNoReplace), EEXIST);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "f", kRootInode, "z", kRenameExchange), ENOENT);
  EXPECT_ERRNO(
      store_->Rename(scope_, kRootInode, "f", kRootInode, "z", kRenameExchange | kRenameNoReplace),
      EINVAL);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "f", kRootInode, "z", 4), EINVAL);
  EXPECT_EQ(DumpScope(), before);
  EXPECT_OK(store_->Rename(scope_, kRootInode, "f", d.ino, "f", kRenameNoReplace));
}

TEST_P(MetadataStoreTest, RenameOntoItselfIsNoop) {
  InodeAttr f = Create(kRootInode, "f");
  ASSERT_OK(store_->Link(scope_, f.ino, kRootInode, "g"));
  Mkdir(kRootInode, "d");
  std::string before = DumpScope();
  ASSERT_OK_AND_ASSIGN(UnlinkResult r, store_->Rename(scope_, kRootInode, "f", kRootInode, "f", 0));
  EXPECT_EQ(r.ino, 0u);
  EXPECT_OK(store_->Rename(scope_, kRootInode, "d", kRootInode, "d", 0));
  EXPECT_OK(store_->Rename(scope_, kRootInode, "f", kRootInode, "f", kRenameExchange));
  // Two names of one inode: rename(2) does nothing, both names stay.
  EXPECT_OK(store_->Rename(scope_, kRootInode, "f", kRootInode, "g", 0));
  EXPECT_EQ(DumpScope(), before);
}

TEST_P(MetadataStoreTest, RenameExchange) {
  InodeAttr a = Mkdir(kRootInode, "a");
  InodeAttr b = Mkdir(kRootInode, "b");
  InodeAttr file = Create(a.ino, "file");
  InodeAttr dir = Mkdir(b.ino, "dir");
  Create(dir.ino, "inside");
  ASSERT_OK_AND_ASSIGN(UnlinkResult r,
                       store_->Rename(scope_, a.ino, "file", b.ino, "dir", kRenameExchange));
  EXPECT_EQ(r.ino, 0u);
  ASSERT_OK_AND_ASSIGN(InodeAttr in_a, store_->Lookup(scope_, a.ino, "file"));
  ASSERT_OK_AND_ASSIGN(InodeAttr in_b, store_->Lookup(scope_, b.ino, "dir"));
  EXPECT_EQ(in_a.ino, dir.ino);
  EXPECT_EQ(in_b.ino, file.ino);
  EXPECT_EQ(Attr(a.ino).nlink, 3u);  // Gained the directory.
  EXPECT_EQ(Attr(b.ino).nlink, 2u);
  ASSERT_OK_AND_ASSIGN(ReadDirPage page, store_->ReadDir(scope_, a.ino, "", 10, false));
  ASSERT_EQ(page.entries.size(), 1u);
  EXPECT_EQ(page.entries[0].type, static_cast<uint32_t>(S_IFDIR));
  // The directory's parent pointer moved to a.
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "a", dir.ino, "x", 0), EINVAL);
  EXPECT_EQ(DumpScope(), before);
  EXPECT_OK(store_->Rename(scope_, kRootInode, "b", dir.ino, "x", 0));
  // Two files in one directory.
  InodeAttr x = Create(kRootInode, "x");
  InodeAttr y = Create(kRootInode, "y");
  ASSERT_OK(store_->Rename(scope_, kRootInode, "x", kRootInode, "y", kRenameExchange));
  EXPECT_EQ(store_->Lookup(scope_, kRootInode, "x")->ino, y.ino);
  EXPECT_EQ(store_->Lookup(scope_, kRootInode, "y")->ino, x.ino);
  EXPECT_EQ(Attr(x.ino).nlink, 1u);
}

// --- xattrs ---

TEST_P(MetadataStoreTest, Xattrs) {
  InodeAttr f = Create(kRootInode, "f");
  EXPECT_ERRNO(store_->GetXattr(scope_, f.ino, "user.a"), ENODATA);
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.b", "2", 0));
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.a", std::string("1\0x", 3), kXattrCreate));
  ASSERT_OK_AND_ASSIGN(std::string v, store_->GetXattr(scope_, f.ino, "user.a"));
  EXPECT_EQ(v, std::string("1\0x", 3));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> names, store_->ListXattr(scope_, f.ino));
  EXPECT_EQ(names, (std::vector<std::string>{"user.a", "user.b"}));
  InodeAttr before_attr = Attr(f.ino);
  EXPECT_GT(before_attr.version, f.version);

  std::string before = DumpScope();
  EXPECT_ERRNO(store_->SetXattr(scope_, f.ino, "user.a", "x", kXattrCreate), EEXIST);
  EXPECT_ERRNO(store_->SetXattr(scope_, f.ino, "user.c", "x", kXattrReplace), ENODATA);
  EXPECT_ERRNO(store_->SetXattr(scope_, f.ino, "user.c", "x", 4), EINVAL);
  EXPECT_ERRNO(store_->SetXattr(scope_, f.ino, "", "x", 0), ERANGE);
  EXPECT_ERRNO(store_->SetXattr(scope_, f.ino, std::string(256, 'n'), "x", 0), ERANGE);
  EXPECT_ERRNO(store_->SetXattr(scope_, f.ino, std::string("a\0b", 3), "x", 0), EINVAL);
  EXPECT_ERRNO(
      store_->SetXattr(scope_, f.ino, "user.big", std::string(kMaxXattrValueBytes + 1, 'v'), 0),
      E2BIG);
  EXPECT_ERRNO(store_->SetXattr(scope_, 999, "user.a", "x", 0), ENOENT);
  EXPECT_ERRNO(store_->GetXattr(scope_, 999, "user.a"), ENOENT);
  EXPECT_ERRNO(store_->GetXattr(scope_, f.ino, ""), ERANGE);
  EXPECT_ERRNO(store_->ListXattr(scope_, 999), ENOENT);
  EXPECT_ERRNO(store_->RemoveXattr(scope_, f.ino, "user.zz"), ENODATA);
  EXPECT_ERRNO(store_->RemoveXattr(scope_, 999, "user.a"), ENOENT);
  EXPECT_EQ(DumpScope(), before);

  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.a", "new", kXattrReplace));
  EXPECT_EQ(*store_->GetXattr(scope_, f.ino, "user.a"), "new");
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.big", std::string(kMaxXattrValueBytes, 'v'), 0));
  ASSERT_OK(store_->SetXattr(scope_, f.ino, std::string(255, 'n'), "", 0));
  EXPECT_EQ(*store_->GetXattr(scope_, f.ino, std::string(255, 'n')), "");
  ASSERT_OK(store_->RemoveXattr(scope_, f.ino, "user.b"));
  EXPECT_ERRNO(store_->GetXattr(scope_, f.ino, "user.b"), ENODATA);
  EXPECT_GT(Attr(f.ino).version, before_attr.version);
  // Directories and symlinks have xattrs too.
  ASSERT_OK(store_->SetXattr(scope_, kRootInode, "user.r", "1", 0));
  ASSERT_OK_AND_ASSIGN(names, store_->ListXattr(scope_, kRootInode));
  EXPECT_EQ(names, std::vector<std::string>{"user.r"});
}

// --- versions ---

TEST_P(MetadataStoreTest, VersionsStrictlyIncrease) {
  InodeAttr d = Mkdir(kRootInode, "d");
  InodeAttr f = Create(d.ino, "f");
  std::vector<uint64_t> fv = {f.version}, dv = {Attr(d.ino).version};
  auto step = [&] {
    fv.push_back(Attr(f.ino).version);
    dv.push_back(Attr(d.ino).version);
  };
  ASSERT_OK(store_->SetAttr(scope_, f.ino, WithMode(0600)));
  step();
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.a", "1", 0));
  step();
  Commit(f.ino, 10, 1);
  step();
  ASSERT_OK(store_->Link(scope_, f.ino, d.ino, "g"));
  step();
  ASSERT_OK(store_->Rename(scope_, d.ino, "g", d.ino, "h", 0));
  step();
  ASSERT_OK(store_->Unlink(scope_, d.ino, "h"));
  step();
  ASSERT_OK(store_->SetAttr(scope_, f.ino, WithSize(5)));
  step();
  ASSERT_OK(store_->RemoveXattr(scope_, f.ino, "user.a"));
  step();
  for (size_t i = 1; i < fv.size(); ++i) {
    EXPECT_GT(fv[i], fv[i - 1]) << "file step " << i;
  }
  // d changes on entry changes only: link, rename, unlink (steps 4..6).
  EXPECT_EQ(dv[1], dv[0]);
  EXPECT_GT(dv[4], dv[3]);
  EXPECT_GT(dv[5], dv[4]);
  EXPECT_GT(dv[6], dv[5]);
  uint64_t v = Attr(d.ino).version;
  Mkdir(d.ino, "sub");
  EXPECT_GT(Attr(d.ino).version, v);
  v = Attr(d.ino).version;
  ASSERT_OK(store_->Rmdir(scope_, d.ino, "sub"));
  EXPECT_GT(Attr(d.ino).version, v);
}

// --- concurrency ---

TEST_P(MetadataStoreTest, ConcurrentCreatesInOneDirectory) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  InodeAttr d = Mkdir(kRootInode, "d");
  std::vector<std::vector<InodeId>> inos(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<CreateResult> r =
            store_->Create(scope_, d.ino, fmt::format("t{}-{}", t, i), 0644, caller_, true);
        if (!r.ok() || !r->created) {
          ++failures;
          continue;
        }
        inos[t].push_back(r->attr.ino);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  std::set<InodeId> unique;
  for (const auto& v : inos) unique.insert(v.begin(), v.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(Names(d.ino).size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(Usage().inodes, static_cast<uint64_t>(kThreads * kPerThread + 2));
}

TEST_P(MetadataStoreTest, ConcurrentRenamesKeepTreeConsistent) {
  // Threads shuffle directories between two parents; nlinks must add up.
  InodeAttr a = Mkdir(kRootInode, "a");
  InodeAttr b = Mkdir(kRootInode, "b");
  constexpr int kDirs = 8;
  for (int i = 0; i < kDirs; ++i) Mkdir(a.ino, fmt::format("d{}", i));
  std::vector<std::thread> threads;
  for (int t = 0; t < kDirs; ++t) {
    threads.emplace_back([&, t] {
      std::string name = fmt::format("d{}", t);
      for (int i = 0; i < 30; ++i) {
        InodeId from = i % 2 ? b.ino : a.ino, to = i % 2 ? a.ino : b.ino;
        EXPECT_OK(store_->Rename(scope_, from, name, to, name, 0));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(Names(a.ino).size(), static_cast<size_t>(kDirs));
  EXPECT_EQ(Attr(a.ino).nlink, 2u + kDirs);
  EXPECT_EQ(Attr(b.ino).nlink, 2u);
}

// --- whole-scope scan ---

TEST_P(MetadataStoreTest, ScanScopeSeesEveryInodeAndEntryInKeyOrder) {
  InodeAttr d = Mkdir(kRootInode, "d");
  InodeAttr f = Create(d.ino, "f");
  Commit(f.ino, 3 * kCs, 1);
  ASSERT_OK(store_->Link(scope_, f.ino, kRootInode, "f-link"));
  ASSERT_OK(store_->Symlink(scope_, kRootInode, "s", "d/f", caller_));
  InodeAttr gone = Create(kRootInode, "gone");  // Orphaned below: an inode, no entry.
  ASSERT_OK(store_->Unlink(scope_, kRootInode, "gone"));
  Scope other = *Scope::Parse("project:alphabet");  // A scope whose name extends ours.
  ASSERT_OK(store_->OpenScope(other, /*create=*/true));
  ASSERT_OK(store_->Create(other, kRootInode, "not-ours", 0644, caller_, true));

  std::vector<InodeAttr> inodes;
  std::vector<std::tuple<InodeId, std::string, InodeId>> entries;
  ASSERT_OK(store_->ScanScope(
      scope_,
      [&](const InodeAttr& a) {
        EXPECT_TRUE(entries.empty()) << "inodes come first";
        inodes.push_back(a);
        return absl::OkStatus();
      },
      [&](InodeId parent, std::string_view name, InodeId child) {
        entries.emplace_back(parent, std::string(name), child);
        return absl::OkStatus();
      }));
  ASSERT_EQ(inodes.size(), 5u);  // Root, d, f, s and the orphan.
  for (size_t i = 0; i < inodes.size(); ++i) {
    EXPECT_EQ(inodes[i], Attr(inodes[i].ino)) << i;  // Whole attrs, as GetAttr has them.
    if (i > 0) {
      EXPECT_LT(inodes[i - 1].ino, inodes[i].ino);
    }
  }
  EXPECT_EQ(inodes[0].ino, kRootInode);
  EXPECT_EQ(inodes[2].size, 3 * kCs);
  EXPECT_EQ(inodes[4].ino, gone.ino);
  EXPECT_EQ(inodes[4].nlink, 0u);
  InodeId s = store_->Lookup(scope_, kRootInode, "s")->ino;
  std::vector<std::tuple<InodeId, std::string, InodeId>> want = {
      {kRootInode, "d", d.ino},
      {kRootInode, "f-link", f.ino},
      {kRootInode, "s", s},
      {d.ino, "f", f.ino},
  };
  EXPECT_EQ(entries, want);

  // A callback's error stops the scan and comes back.
  int calls = 0;
  absl::Status stop = store_->ScanScope(
      scope_,
      [&](const InodeAttr&) {
        return ++calls == 2 ? absl::CancelledError("enough") : absl::OkStatus();
      },
      [&](InodeId, std::string_view, InodeId) { return absl::OkStatus(); });
  EXPECT_EQ(stop.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 2);

  auto none = [](auto&&...) { return absl::OkStatus(); };
  EXPECT_ERRNO(store_->ScanScope(*Scope::Parse("team:nope"), none, none), ENOENT);
}

// --- request ids: at most once ---

RequestId Rid(uint64_t seq, std::string client = "node-a:1:cafe") {
  return RequestId{std::move(client), seq};
}

TEST_P(MetadataStoreTest, RequestIdAppliesUnlinkOnce) {
  InodeAttr f = Create(kRootInode, "f");
  ASSERT_OK_AND_ASSIGN(UnlinkResult first, store_->Unlink(scope_, kRootInode, "f", Rid(1)));
  EXPECT_EQ(first.ino, f.ino);
  EXPECT_TRUE(first.orphaned);
  std::string after = DumpScope();
  // A copy (same id) returns the first answer and changes nothing.
  ASSERT_OK_AND_ASSIGN(UnlinkResult again, store_->Unlink(scope_, kRootInode, "f", Rid(1)));
  EXPECT_EQ(again, first);
  EXPECT_EQ(DumpScope(), after);
  // Another call (another id, or another client) is applied as usual.
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "f", Rid(2)), ENOENT);
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "f", Rid(1, "node-b:1:beef")), ENOENT);
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "f"), ENOENT);
}

TEST_P(MetadataStoreTest, RequestIdAppliesRenameOnce) {
  InodeAttr a = Create(kRootInode, "a");
  InodeAttr b = Create(kRootInode, "b");
  // Over an existing target: the copy must not report (or drop) more.
  ASSERT_OK_AND_ASSIGN(UnlinkResult first,
                       store_->Rename(scope_, kRootInode, "a", kRootInode, "b", 0, Rid(7)));
  EXPECT_EQ(first.ino, b.ino);
  std::string after = DumpScope();
  ASSERT_OK_AND_ASSIGN(UnlinkResult again,
                       store_->Rename(scope_, kRootInode, "a", kRootInode, "b", 0, Rid(7)));
  EXPECT_EQ(again, first);
  EXPECT_EQ(DumpScope(), after);
  EXPECT_EQ(store_->Lookup(scope_, kRootInode, "b")->ino, a.ino);
  EXPECT_ERRNO(store_->Rename(scope_, kRootInode, "a", kRootInode, "b", 0, Rid(8)), ENOENT);
  // A name made again after the rename is not touched by a late copy.
  InodeAttr a2 = Create(kRootInode, "a");
  ASSERT_OK_AND_ASSIGN(again, store_->Rename(scope_, kRootInode, "a", kRootInode, "b", 0, Rid(7)));
  EXPECT_EQ(again, first);
  EXPECT_EQ(store_->Lookup(scope_, kRootInode, "a")->ino, a2.ino);
  EXPECT_EQ(store_->Lookup(scope_, kRootInode, "b")->ino, a.ino);
}

TEST_P(MetadataStoreTest, RequestIdAppliesMkdirAndRmdirOnce) {
  ASSERT_OK_AND_ASSIGN(InodeAttr first,
                       store_->Mkdir(scope_, kRootInode, "d", 0755, caller_, Rid(1)));
  std::string after = DumpScope();
  ASSERT_OK_AND_ASSIGN(InodeAttr again,
                       store_->Mkdir(scope_, kRootInode, "d", 0755, caller_, Rid(1)));
  EXPECT_EQ(again, first);
  EXPECT_EQ(DumpScope(), after);
  EXPECT_EQ(Attr(kRootInode).nlink, 3u);
  EXPECT_ERRNO(store_->Mkdir(scope_, kRootInode, "d", 0755, caller_, Rid(2)), EEXIST);

  ASSERT_OK(store_->Rmdir(scope_, kRootInode, "d", Rid(3)));
  after = DumpScope();
  ASSERT_OK(store_->Rmdir(scope_, kRootInode, "d", Rid(3)));
  EXPECT_EQ(DumpScope(), after);
  EXPECT_EQ(Attr(kRootInode).nlink, 2u);
  EXPECT_ERRNO(store_->Rmdir(scope_, kRootInode, "d", Rid(4)), ENOENT);
}

TEST_P(MetadataStoreTest, RequestIdAppliesExclusiveCreateOnce) {
  ASSERT_OK_AND_ASSIGN(CreateResult first,
                       store_->Create(scope_, kRootInode, "f", 0600, caller_, true, Rid(1)));
  EXPECT_TRUE(first.created);
  std::string after = DumpScope();
  // O_EXCL: the copy gets the file it created, not EEXIST.
  ASSERT_OK_AND_ASSIGN(CreateResult again,
                       store_->Create(scope_, kRootInode, "f", 0600, caller_, true, Rid(1)));
  EXPECT_EQ(again, first);
  EXPECT_TRUE(again.created);
  EXPECT_EQ(DumpScope(), after);
  EXPECT_ERRNO(store_->Create(scope_, kRootInode, "f", 0600, caller_, true, Rid(2)), EEXIST);
  EXPECT_EQ(Usage().inodes, 2u);
}

TEST_P(MetadataStoreTest, RequestIdAppliesLinkAndSymlinkOnce) {
  InodeAttr f = Create(kRootInode, "f");
  ASSERT_OK_AND_ASSIGN(InodeAttr first, store_->Link(scope_, f.ino, kRootInode, "g", Rid(1)));
  EXPECT_EQ(first.nlink, 2u);
  std::string after = DumpScope();
  ASSERT_OK_AND_ASSIGN(InodeAttr again, store_->Link(scope_, f.ino, kRootInode, "g", Rid(1)));
  EXPECT_EQ(again, first);
  EXPECT_EQ(DumpScope(), after);
  EXPECT_ERRNO(store_->Link(scope_, f.ino, kRootInode, "g", Rid(2)), EEXIST);

  ASSERT_OK_AND_ASSIGN(InodeAttr s1,
                       store_->Symlink(scope_, kRootInode, "s", "f", caller_, Rid(3)));
  after = DumpScope();
  ASSERT_OK_AND_ASSIGN(InodeAttr s2,
                       store_->Symlink(scope_, kRootInode, "s", "f", caller_, Rid(3)));
  EXPECT_EQ(s2, s1);
  EXPECT_EQ(DumpScope(), after);
  EXPECT_ERRNO(store_->Symlink(scope_, kRootInode, "s", "f", caller_, Rid(4)), EEXIST);
}

TEST_P(MetadataStoreTest, RequestIdAppliesXattrChangesOnce) {
  InodeAttr f = Create(kRootInode, "f");
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.k", "v1", kXattrCreate, Rid(1)));
  std::string after = DumpScope();
  ASSERT_OK(store_->SetXattr(scope_, f.ino, "user.k", "v1", kXattrCreate, Rid(1)));
  EXPECT_EQ(DumpScope(), after);
  EXPECT_ERRNO(store_->SetXattr(scope_, f.ino, "user.k", "v1", kXattrCreate, Rid(2)), EEXIST);

  ASSERT_OK(store_->RemoveXattr(scope_, f.ino, "user.k", Rid(3)));
  after = DumpScope();
  ASSERT_OK(store_->RemoveXattr(scope_, f.ino, "user.k", Rid(3)));
  EXPECT_EQ(DumpScope(), after);
  EXPECT_ERRNO(store_->RemoveXattr(scope_, f.ino, "user.k", Rid(4)), ENODATA);
}

TEST_P(MetadataStoreTest, RequestIdRefusalIsNotRecorded) {
  // A refusal changed nothing: a later copy is evaluated as a new call.
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "f", Rid(1)), ENOENT);
  InodeAttr f = Create(kRootInode, "f");
  ASSERT_OK_AND_ASSIGN(UnlinkResult r, store_->Unlink(scope_, kRootInode, "f", Rid(1)));
  EXPECT_EQ(r.ino, f.ino);
  // One id for two kinds of call is refused, changing nothing.
  ASSERT_OK(store_->Mkdir(scope_, kRootInode, "d", 0755, caller_, Rid(2)).status());
  std::string before = DumpScope();
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "d", Rid(2)), EINVAL);
  EXPECT_EQ(DumpScope(), before);
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "x", Rid(3, std::string(300, 'c'))), EINVAL);
}

TEST_P(MetadataStoreTest, RequestIdCopiesRacingAreAppliedOnce) {
  for (int round = 0; round < 20; ++round) {
    std::string name = fmt::format("f{}", round);
    InodeAttr f = Create(kRootInode, name);
    std::vector<absl::StatusOr<UnlinkResult>> results(4, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        results[t] = store_->Unlink(scope_, kRootInode, name, Rid(100 + round));
      });
    }
    for (std::thread& t : threads) t.join();
    for (const auto& r : results) {
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->ino, f.ino);
    }
  }
}

TEST_P(MetadataStoreTest, RequestRecordsExpire) {
  Create(kRootInode, "f");
  ASSERT_OK(store_->Unlink(scope_, kRootInode, "f", Rid(1)).status());
  ASSERT_OK(store_->Mkdir(scope_, kRootInode, "d", 0755, caller_, Rid(2)).status());
  Timespec now = Now();
  // Younger than the cut: kept.
  ASSERT_OK_AND_ASSIGN(uint64_t dropped,
                       store_->ExpireRequests(scope_, Timespec{now.sec - 60, 0}));
  EXPECT_EQ(dropped, 0u);
  EXPECT_OK(store_->Unlink(scope_, kRootInode, "f", Rid(1)).status());
  // Older: dropped, and a copy arriving after that is a new call.
  ASSERT_OK_AND_ASSIGN(dropped, store_->ExpireRequests(scope_, Timespec{now.sec + 2, 0}));
  EXPECT_EQ(dropped, 2u);
  EXPECT_ERRNO(store_->Unlink(scope_, kRootInode, "f", Rid(1)), ENOENT);
  EXPECT_ERRNO(store_->Mkdir(scope_, kRootInode, "d", 0755, caller_, Rid(2)), EEXIST);
  ASSERT_OK_AND_ASSIGN(dropped, store_->ExpireRequests(scope_, Timespec{now.sec + 2, 0}));
  EXPECT_EQ(dropped, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Stores, MetadataStoreTest,
    ::testing::Values(
        StoreFactory{"Memory",
                     [](const std::string&) -> absl::StatusOr<std::unique_ptr<MetadataStore>> {
                       return NewMemoryMetadataStore();
                     }},
        StoreFactory{"RocksDB",
                     [](const std::string& dir) { return OpenRocksMetadataStore(dir); }}),
    [](const ::testing::TestParamInfo<StoreFactory>& info) { return info.param.name; });

}  // namespace
}  // namespace traincache
