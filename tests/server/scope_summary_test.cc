// SummarizeScope over the in-memory metadata store: paths, directory sums,
// hard links counted once, symlinks, the never-created unknown scope,
// orphans left out, large directories and cancellation.
#include "server/scope_summary.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>

#include "traincache/metadata_store.h"
#include "traincache/status.h"

namespace traincache::server {
namespace {

struct Row {
  uint64_t size;
  uint32_t mode;
  bool operator==(const Row&) const = default;
};

// path -> (size, mode) of every item.
std::map<std::string, Row> Rows(const ScopeSummary& s) {
  std::map<std::string, Row> out;
  for (size_t i = 0; i < s.items.size(); ++i) {
    EXPECT_TRUE(out.emplace(s.PathOf(i), Row{s.items[i].size, s.items[i].mode}).second)
        << "listed twice: " << s.PathOf(i);
  }
  return out;
}

class ScopeSummaryTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(meta_->OpenScope(scope_, /*create=*/true).ok()); }

  InodeId Mkdir(InodeId parent, const std::string& name) {
    auto attr = meta_->Mkdir(scope_, parent, name, 0755, {});
    EXPECT_TRUE(attr.ok()) << attr.status();
    return attr.ok() ? attr->ino : 0;
  }
  // A file of `size` bytes (a hole: sizes need no chunks).
  InodeId File(InodeId parent, const std::string& name, uint64_t size, uint32_t mode = 0644) {
    auto created = meta_->Create(scope_, parent, name, mode, {}, /*exclusive=*/true);
    EXPECT_TRUE(created.ok()) << created.status();
    if (!created.ok()) return 0;
    SetAttrRequest set;
    set.size = size;
    EXPECT_TRUE(meta_->SetAttr(scope_, created->attr.ino, set).ok());
    return created->attr.ino;
  }

  std::unique_ptr<MetadataStore> meta_ = NewMemoryMetadataStore();
  Scope scope_ = *Scope::Parse("project:p1");
};

TEST_F(ScopeSummaryTest, EmptyScopeHasNoEntries) {
  auto s = SummarizeScope(*meta_, scope_);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->items.empty());
  EXPECT_EQ(s->total_files, 0u);
  EXPECT_EQ(s->total_size, 0u);
  EXPECT_GT(s->captured_at.sec, 0);
}

TEST_F(ScopeSummaryTest, DirectoriesAddUpEverythingBelowThem) {
  InodeId models = Mkdir(kRootInode, "models");
  InodeId llama = Mkdir(models, "llama");
  File(llama, "w.bin", 1000);
  File(llama, "tok.json", 24);
  File(models, "a.bin", 100);
  Mkdir(models, "empty");
  File(kRootInode, "top.txt", 7, 0600);
  ASSERT_TRUE(meta_->Symlink(scope_, kRootInode, "latest", "models/llama", {}).ok());

  auto s = SummarizeScope(*meta_, scope_);
  ASSERT_TRUE(s.ok()) << s.status();
  std::map<std::string, Row> want = {
      {"latest", {12, S_IFLNK | 0777}},  // A symlink's size is its target's length.
      {"models", {1124, S_IFDIR | 0755}},
      {"models/a.bin", {100, S_IFREG | 0644}},
      {"models/empty", {0, S_IFDIR | 0755}},
      {"models/llama", {1024, S_IFDIR | 0755}},
      {"models/llama/tok.json", {24, S_IFREG | 0644}},
      {"models/llama/w.bin", {1000, S_IFREG | 0644}},
      {"top.txt", {7, S_IFREG | 0600}},
  };
  EXPECT_EQ(Rows(*s), want);
  EXPECT_EQ(s->total_files, 5u);  // Four regular files and the symlink.
  EXPECT_EQ(s->total_size, 1000u + 24 + 100 + 7 + 12);
  // Breadth first: each item comes after the directory holding it.
  EXPECT_EQ(s->PathOf(0), "latest");
}

TEST_F(ScopeSummaryTest, HardLinkedFileCountsOncePerDirectory) {
  InodeId a = Mkdir(kRootInode, "a");
  InodeId b = Mkdir(a, "b");
  InodeId c = Mkdir(kRootInode, "c");
  InodeId f = File(b, "f", 500);
  ASSERT_TRUE(meta_->Link(scope_, f, b, "f2").ok());  // Two names in a/b.
  ASSERT_TRUE(meta_->Link(scope_, f, c, "f3").ok());  // And one in c.
  File(a, "g", 1);

  auto s = SummarizeScope(*meta_, scope_);
  ASSERT_TRUE(s.ok()) << s.status();
  std::map<std::string, Row> rows = Rows(*s);
  EXPECT_EQ(rows["a/b/f"].size, 500u);  // Every name shows the file's size...
  EXPECT_EQ(rows["a/b/f2"].size, 500u);
  EXPECT_EQ(rows["c/f3"].size, 500u);
  EXPECT_EQ(rows["a/b"].size, 500u);  // ...but a directory counts the inode once.
  EXPECT_EQ(rows["a"].size, 501u);
  EXPECT_EQ(rows["c"].size, 500u);
  EXPECT_EQ(s->total_files, 2u);  // f (three names) and g.
  EXPECT_EQ(s->total_size, 501u);
}

TEST_F(ScopeSummaryTest, UnknownScopeIsNotFoundAndNotCreated) {
  Scope other = *Scope::Parse("team:nope");
  auto s = SummarizeScope(*meta_, other);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.status().message(), "team nope has no cache on this cluster");
  EXPECT_EQ(meta_->OpenScope(other, /*create=*/false).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ScopeSummaryTest, ListsLargeDirectories) {
  InodeId d = Mkdir(kRootInode, "many");
  const int n = static_cast<int>(kMaxReadDirEntries) * 2 + 10;
  for (int i = 0; i < n; ++i) File(d, "f" + std::to_string(i), 3);
  auto s = SummarizeScope(*meta_, scope_);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->items.size(), static_cast<size_t>(n) + 1);
  EXPECT_EQ(s->total_files, static_cast<uint64_t>(n));
  EXPECT_EQ(Rows(*s)["many"].size, 3u * n);
}

TEST_F(ScopeSummaryTest, OpenUnlinkedFilesAreNotListed) {
  InodeId f = File(kRootInode, "open-then-unlinked", 50);
  ASSERT_TRUE(meta_->Unlink(scope_, kRootInode, "open-then-unlinked").ok());
  File(kRootInode, "kept", 5);
  auto s = SummarizeScope(*meta_, scope_);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Rows(*s), (std::map<std::string, Row>{{"kept", {5, S_IFREG | 0644}}}));
  EXPECT_EQ(s->total_size, 5u);
  EXPECT_TRUE(meta_->GetAttr(scope_, f).ok());  // Still an orphan, just not named.
}

TEST_F(ScopeSummaryTest, StopsWhenCancelled) {
  Mkdir(kRootInode, "a");
  int calls = 0;
  auto s = SummarizeScope(*meta_, scope_, [&] { return ++calls > 1; });
  EXPECT_EQ(s.status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace traincache::server
