// What every ClusterClient must do: the namespace, content (upload, commit,
// read back), the errno of each kind of refusal, pagination and concurrency.
#include "rpc/cluster_client_conformance.h"

#include <fmt/format.h>
#include <gmock/gmock.h>

#include <atomic>
#include <cerrno>
#include <random>
#include <set>
#include <thread>

#include "traincache/status.h"

namespace traincache::testing {
namespace {

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng());
  return out;
}

// The node's write path in miniature: chunk, upload what is missing, commit.
absl::StatusOr<InodeAttr> WriteContent(ClusterClient& c, const Scope& scope, InodeId ino,
                                       uint64_t expected_version, const std::string& data,
                                       uint32_t chunk_size) {
  std::vector<std::string_view> pieces;
  std::vector<ChunkId> ids;
  std::vector<ChunkRef> refs;
  for (size_t off = 0; off < data.size(); off += chunk_size) {
    std::string_view piece = std::string_view(data).substr(off, chunk_size);
    pieces.push_back(piece);
    ids.push_back(ChunkId::Of(piece));
    refs.push_back(ChunkRef{ids.back(), static_cast<uint32_t>(piece.size())});
  }
  ASSIGN_OR_RETURN(auto present, c.HasChunks(scope, ids));
  std::vector<std::string_view> missing;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (!present[i]) missing.push_back(pieces[i]);
  }
  RETURN_IF_ERROR(c.PutChunks(scope, missing));
  return c.CommitContent(scope, ino, expected_version, data.size(), chunk_size, refs, Now());
}

absl::StatusOr<std::string> ReadContent(ClusterClient& c, const Scope& scope, InodeId ino) {
  ASSIGN_OR_RETURN(ChunkMap map, c.GetChunkMap(scope, ino));
  std::string out;
  for (const ChunkRef& ref : map.chunks) {
    std::string bytes;
    if (ref.id) {
      ASSIGN_OR_RETURN(bytes, c.GetChunk(scope, *ref.id, 0, ref.length));
    }
    bytes.resize(ref.length, '\0');
    out += bytes;
  }
  return out;
}

}  // namespace

void ClusterClientConformanceTest::SetUp() {
  env_ = GetParam().make();
  ASSERT_NE(env_, nullptr);
  auto root = client().OpenScope(scope_, /*create=*/true);
  ASSERT_TRUE(root.ok()) << root.status();
}

TEST_P(ClusterClientConformanceTest, OpensScopes) {
  Scope other = *Scope::Parse("team:other");
  auto absent = client().OpenScope(other, /*create=*/false);
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  auto made = client().OpenScope(other, /*create=*/true);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->root.ino, kRootInode);
  EXPECT_TRUE(made->root.is_dir());
  auto again = client().OpenScope(other, /*create=*/false);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->generation, made->generation);

  auto usage = client().StatFs(other);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->inodes, 1u);
  EXPECT_EQ(usage->bytes, 0u);
  EXPECT_GT(usage->quota_bytes, 0u);
}

TEST_P(ClusterClientConformanceTest, BuildsAndChangesATree) {
  const Caller caller{1000, 1000};
  auto a = client().Mkdir(scope(), kRootInode, "a", 0750, caller);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->is_dir());
  EXPECT_EQ(a->mode & 07777, 0750u);
  EXPECT_EQ(a->uid, 1000u);
  auto f = client().Create(scope(), a->ino, "f", 0640, caller, /*exclusive=*/true);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(f->created);
  EXPECT_TRUE(f->attr.is_reg());
  auto again = client().Create(scope(), a->ino, "f", 0600, caller, /*exclusive=*/false);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->attr.ino, f->attr.ino);

  auto looked = client().Lookup(scope(), a->ino, "f");
  ASSERT_TRUE(looked.ok());
  EXPECT_EQ(looked->ino, f->attr.ino);
  auto got = client().GetAttr(scope(), f->attr.ino);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, *looked);

  SetAttrRequest set;
  set.mode = 0600;
  set.size = 12345;
  set.mtime = Timespec{1'700'000'000, 5};
  auto changed = client().SetAttr(scope(), f->attr.ino, set);
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(changed->mode & 07777, 0600u);
  EXPECT_EQ(changed->size, 12345u);
  EXPECT_EQ(changed->mtime, (Timespec{1'700'000'000, 5}));
  EXPECT_GT(changed->version, f->attr.version);

  auto sym = client().Symlink(scope(), kRootInode, "link", "a/f", caller);
  ASSERT_TRUE(sym.ok()) << sym.status();
  EXPECT_TRUE(sym->is_symlink());
  EXPECT_EQ(*client().ReadLink(scope(), sym->ino), "a/f");

  auto hard = client().Link(scope(), f->attr.ino, kRootInode, "hard");
  ASSERT_TRUE(hard.ok()) << hard.status();
  EXPECT_EQ(hard->nlink, 2u);

  auto renamed = client().Rename(scope(), kRootInode, "hard", a->ino, "g", 0);
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  EXPECT_EQ(renamed->ino, 0u);  // Nothing replaced.
  // Over an existing name: the replaced name's inode loses a link.
  auto over = client().Rename(scope(), a->ino, "g", a->ino, "f", 0);
  ASSERT_TRUE(over.ok());  // Two names of one inode: a no-op.
  auto x = client().Create(scope(), kRootInode, "x", 0644, caller, true);
  ASSERT_TRUE(x.ok());
  auto replaced = client().Rename(scope(), kRootInode, "x", a->ino, "g", 0);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(replaced->ino, f->attr.ino);
  EXPECT_EQ(replaced->nlink, 1u);
  EXPECT_FALSE(replaced->orphaned);
  auto swapped = client().Rename(scope(), a->ino, "f", a->ino, "g", kRenameExchange);
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  EXPECT_EQ(client().Lookup(scope(), a->ino, "f")->ino, x->attr.ino);
  EXPECT_EQ(client().Lookup(scope(), a->ino, "g")->ino, f->attr.ino);

  ASSERT_TRUE(client().SetXattr(scope(), f->attr.ino, "user.b", "2", 0).ok());
  ASSERT_TRUE(client().SetXattr(scope(), f->attr.ino, "user.a", "1", kXattrCreate).ok());
  EXPECT_EQ(*client().GetXattr(scope(), f->attr.ino, "user.a"), "1");
  EXPECT_THAT(*client().ListXattr(scope(), f->attr.ino),
              ::testing::ElementsAre("user.a", "user.b"));
  ASSERT_TRUE(client().RemoveXattr(scope(), f->attr.ino, "user.a").ok());
  EXPECT_THAT(*client().ListXattr(scope(), f->attr.ino), ::testing::ElementsAre("user.b"));

  auto unlinked = client().Unlink(scope(), a->ino, "g");
  ASSERT_TRUE(unlinked.ok()) << unlinked.status();
  EXPECT_EQ(unlinked->ino, f->attr.ino);
  EXPECT_EQ(unlinked->nlink, 0u);
  EXPECT_TRUE(unlinked->orphaned);
  // An orphan lives on until the node releases it.
  EXPECT_TRUE(client().GetChunkMap(scope(), f->attr.ino).ok());
  ASSERT_TRUE(client().ReleaseInode(scope(), f->attr.ino).ok());
  EXPECT_EQ(ToErrno(client().GetAttr(scope(), f->attr.ino).status()), ENOENT);
  EXPECT_TRUE(client().ReleaseInode(scope(), f->attr.ino).ok());  // Gone: still OK.

  ASSERT_TRUE(client().Unlink(scope(), a->ino, "f").ok());
  ASSERT_TRUE(client().Rmdir(scope(), kRootInode, "a").ok());
  auto page = client().ReadDir(scope(), kRootInode, "", 0, false);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->entries.size(), 1u);
  EXPECT_EQ(page->entries[0].name, "link");
}

TEST_P(ClusterClientConformanceTest, KeepsTheErrnoOfEachRefusal) {
  const Caller caller;
  auto dir = client().Mkdir(scope(), kRootInode, "d", 0755, caller);
  ASSERT_TRUE(dir.ok());
  auto file = client().Create(scope(), dir->ino, "f", 0644, caller, true);
  ASSERT_TRUE(file.ok());

  absl::Status notempty = client().Rmdir(scope(), kRootInode, "d");
  EXPECT_EQ(notempty.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrnoOf(notempty), ENOTEMPTY);
  absl::Status exists = client().Create(scope(), dir->ino, "f", 0644, caller, true).status();
  EXPECT_EQ(exists.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(ErrnoOf(exists), EEXIST);
  EXPECT_EQ(ErrnoOf(client().Mkdir(scope(), kRootInode, "d", 0755, caller).status()), EEXIST);
  absl::Status missing = client().Lookup(scope(), kRootInode, "missing").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoOf(missing), ENOENT);
  EXPECT_EQ(ErrnoOf(client().Lookup(scope(), file->attr.ino, "x").status()), ENOTDIR);
  EXPECT_EQ(ErrnoOf(client().Unlink(scope(), kRootInode, "d").status()), EISDIR);
  EXPECT_EQ(ErrnoOf(client().Link(scope(), dir->ino, kRootInode, "l").status()), EPERM);
  EXPECT_EQ(ErrnoOf(client().Rename(scope(), kRootInode, "d", dir->ino, "in", 0).status()), EINVAL);
  EXPECT_EQ(ErrnoOf(client().GetXattr(scope(), file->attr.ino, "user.none").status()), ENODATA);
  EXPECT_EQ(ErrnoOf(client().GetAttr(scope(), 0).status()), EINVAL);
  absl::Status long_name =
      client().Create(scope(), kRootInode, std::string(256, 'n'), 0644, caller, true).status();
  EXPECT_EQ(long_name.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrnoOf(long_name), ENAMETOOLONG);
  EXPECT_EQ(ToErrno(client().Lookup(*Scope::Parse("project:nobody"), kRootInode, "x").status()),
            ENOENT);

  // A commit from a stale version changes nothing.
  auto v1 = WriteContent(client(), scope(), file->attr.ino, file->attr.version, "one", 65536);
  ASSERT_TRUE(v1.ok()) << v1.status();
  absl::Status stale =
      WriteContent(client(), scope(), file->attr.ino, file->attr.version, "two", 65536).status();
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ErrnoOf(stale), ESTALE);
  EXPECT_EQ(*ReadContent(client(), scope(), file->attr.ino), "one");
}

TEST_P(ClusterClientConformanceTest, WritesChunksCommitsAndReadsBack) {
  auto f = client().Create(scope(), kRootInode, "data", 0644, {}, true);
  ASSERT_TRUE(f.ok());
  // 3.5 chunks of 256 KiB: the last one short.
  const uint32_t chunk = 256u << 10;
  std::string data = RandomBytes(7 * chunk / 2, 1);
  std::vector<ChunkId> ids;
  for (size_t off = 0; off < data.size(); off += chunk) {
    ids.push_back(ChunkId::Of(std::string_view(data).substr(off, chunk)));
  }
  auto before = client().HasChunks(scope(), ids);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_THAT(*before, ::testing::Each(std::nullopt));

  auto written = WriteContent(client(), scope(), f->attr.ino, f->attr.version, data, chunk);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->size, data.size());
  EXPECT_GT(written->version, f->attr.version);

  auto after = client().HasChunks(scope(), ids);
  ASSERT_TRUE(after.ok());
  EXPECT_THAT(*after, ::testing::ElementsAre(chunk, chunk, chunk, chunk / 2));
  auto map = client().GetChunkMap(scope(), f->attr.ino);
  ASSERT_TRUE(map.ok());
  EXPECT_EQ(map->version, written->version);
  EXPECT_EQ(map->size, data.size());
  EXPECT_EQ(map->chunk_size, chunk);
  ASSERT_EQ(map->chunks.size(), 4u);
  EXPECT_EQ(map->chunks[3], (ChunkRef{ids[3], chunk / 2}));

  EXPECT_EQ(*ReadContent(client(), scope(), f->attr.ino), data);
  auto range = client().GetChunk(scope(), ids[1], 1000, 5000);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(*range, data.substr(chunk + 1000, 5000));
  auto tail = client().GetChunk(scope(), ids[3], chunk / 2 - 10, 0);  // To the end.
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(*tail, data.substr(data.size() - 10));
  auto usage = client().StatFs(scope());
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->bytes, data.size());

  // A second version replaces the first whole.
  std::string v2 = RandomBytes(chunk + 7, 2);
  auto rewritten = WriteContent(client(), scope(), f->attr.ino, written->version, v2, chunk);
  ASSERT_TRUE(rewritten.ok()) << rewritten.status();
  EXPECT_EQ(*ReadContent(client(), scope(), f->attr.ino), v2);

  EXPECT_EQ(client().GetChunk(scope(), ChunkId::Of("never stored"), 0, 0).status().code(),
            absl::StatusCode::kNotFound);
  // What the node's fetcher asks (it verifies the bytes itself).
  auto whole = client().GetChunkUnverified(scope(), ids[3]);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(*whole, data.substr(3 * chunk));
  EXPECT_EQ(client().GetChunkUnverified(scope(), ChunkId::Of("never stored")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(ClusterClientConformanceTest, MovesChunksLargerThanOneMessagePiece) {
  std::string big = RandomBytes(6u << 20, 3);  // Over the 4 MiB piece size.
  ASSERT_TRUE(client().PutChunks(scope(), {big}).ok());
  auto back = client().GetChunk(scope(), ChunkId::Of(big), 0, 0);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == big);
  std::string too_big(kMaxChunkSize + 1, 'x');
  EXPECT_EQ(client().PutChunks(scope(), {too_big}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client().PutChunks(*Scope::Parse("project:nobody"), {"abc"}).code(),
            absl::StatusCode::kNotFound);
}

TEST_P(ClusterClientConformanceTest, StoresChunksUnderTheIdsTheCallerHashedAndChecksThem) {
  const std::string a = RandomBytes(100 << 10, 4), b = RandomBytes(7, 5);
  ASSERT_TRUE(client().PutHashedChunks(scope(), {ChunkId::Of(a), ChunkId::Of(b)}, {a, b}).ok());
  auto have = client().HasChunks(scope(), {ChunkId::Of(a), ChunkId::Of(b)});
  ASSERT_TRUE(have.ok()) << have.status();
  EXPECT_EQ(*have, (std::vector<std::optional<uint64_t>>{a.size(), b.size()}));
  EXPECT_EQ(*client().GetChunk(scope(), ChunkId::Of(b), 0, 0), b);
  // A wrong id is refused, and nothing is stored under it.
  const std::string c = RandomBytes(1000, 6);
  EXPECT_EQ(client().PutHashedChunks(scope(), {ChunkId::Of(a)}, {c}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client().PutHashedChunks(scope(), {ChunkId::Of(c)}, {c, c}).code(),
            absl::StatusCode::kInvalidArgument);
  have = client().HasChunks(scope(), {ChunkId::Of(c)});
  ASSERT_TRUE(have.ok());
  EXPECT_EQ(*have, (std::vector<std::optional<uint64_t>>{std::nullopt}));
}

TEST_P(ClusterClientConformanceTest, AnswersHasChunksForMoreIdsThanOneCall) {
  std::vector<std::string> stored = {"a", "bb", "ccc"};
  ASSERT_TRUE(client().PutChunks(scope(), {stored[0], stored[1], stored[2]}).ok());
  std::vector<ChunkId> ids;
  for (int i = 0; i < 2500; ++i) ids.push_back(ChunkId::Of("absent " + std::to_string(i)));
  ids[0] = ChunkId::Of(stored[0]);
  ids[1500] = ChunkId::Of(stored[1]);
  ids[2499] = ChunkId::Of(stored[2]);
  auto sizes = client().HasChunks(scope(), ids);
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  ASSERT_EQ(sizes->size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    std::optional<uint64_t> want;
    if (i == 0) want = 1;
    if (i == 1500) want = 2;
    if (i == 2499) want = 3;
    ASSERT_EQ((*sizes)[i], want) << i;
  }
}

TEST_P(ClusterClientConformanceTest, CommitChecksEveryChunkAndChangesNothingOnError) {
  auto f = client().Create(scope(), kRootInode, "f", 0644, {}, true);
  ASSERT_TRUE(f.ok());
  std::string stored = RandomBytes(1000, 4);
  ASSERT_TRUE(client().PutChunks(scope(), {stored}).ok());
  ChunkId absent = ChunkId::Of("not uploaded");

  absl::Status missing = client()
                             .CommitContent(scope(), f->attr.ino, f->attr.version, 1000,
                                            kMinChunkSize, {{absent, 1000}}, Now())
                             .status();
  EXPECT_EQ(ErrnoOf(missing), ENOENT) << missing;
  absl::Status length = client()
                            .CommitContent(scope(), f->attr.ino, f->attr.version, 999,
                                           kMinChunkSize, {{ChunkId::Of(stored), 999}}, Now())
                            .status();
  EXPECT_EQ(length.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrnoOf(length), EINVAL);
  auto unchanged = client().GetAttr(scope(), f->attr.ino);
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(unchanged->version, f->attr.version);
  EXPECT_EQ(unchanged->size, 0u);

  // Holes need no chunk.
  auto sparse = client().CommitContent(
      scope(), f->attr.ino, f->attr.version, 2 * kMinChunkSize, kMinChunkSize,
      {{std::nullopt, kMinChunkSize}, {std::nullopt, kMinChunkSize}}, Now());
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  EXPECT_EQ(*ReadContent(client(), scope(), f->attr.ino), std::string(2 * kMinChunkSize, '\0'));
}

TEST_P(ClusterClientConformanceTest, CommitsSmallChunksInOneCall) {
  auto f = client().Create(scope(), kRootInode, "f", 0644, {}, true);
  ASSERT_TRUE(f.ok()) << f.status();
  // A big chunk uploaded first, then the file's short last chunk with the
  // commit: both read back.
  const std::string big = RandomBytes(kMinChunkSize, 8);
  const std::string tail = RandomBytes(5000, 9);
  ASSERT_TRUE(client().PutChunks(scope(), {big}).ok());
  const std::vector<ChunkRef> refs = {{ChunkId::Of(big), kMinChunkSize},
                                      {ChunkId::Of(tail), static_cast<uint32_t>(tail.size())}};
  auto committed = client().CommitContentWithSmallChunks(
      scope(), f->attr.ino, f->attr.version, big.size() + tail.size(), kMinChunkSize, refs, Now(),
      {tail});
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(committed->size, big.size() + tail.size());
  EXPECT_EQ(*ReadContent(client(), scope(), f->attr.ino), big + tail);
  auto have = client().HasChunks(scope(), {ChunkId::Of(tail)});
  ASSERT_TRUE(have.ok()) << have.status();
  EXPECT_EQ((*have)[0], std::optional<uint64_t>(tail.size()));
  auto piece = client().GetChunk(scope(), ChunkId::Of(tail), 10, 20);
  ASSERT_TRUE(piece.ok()) << piece.status();
  EXPECT_EQ(*piece, tail.substr(10, 20));
  // The node's unhashed read (tier misses) finds small chunks too.
  auto raw = client().GetChunkUnverified(scope(), ChunkId::Of(tail));
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(*raw, tail);

  // A small chunk the commit does not reference is refused; nothing changes.
  auto stray = client().CommitContentWithSmallChunks(
      scope(), f->attr.ino, committed->version, big.size() + tail.size(), kMinChunkSize, refs,
      Now(), {tail, "stray"});
  EXPECT_EQ(stray.status().code(), absl::StatusCode::kInvalidArgument) << stray.status();
  auto unchanged = client().GetAttr(scope(), f->attr.ino);
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(unchanged->version, committed->version);
}

TEST_P(ClusterClientConformanceTest, CommitOverQuotaIsEdquot) {
  ASSERT_TRUE(env_->SetQuota(scope(), 100'000).ok());
  auto usage = client().StatFs(scope());
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->quota_bytes, 100'000u);
  auto f = client().Create(scope(), kRootInode, "big", 0644, {}, true);
  ASSERT_TRUE(f.ok());
  auto small = WriteContent(client(), scope(), f->attr.ino, f->attr.version, "fits", 65536);
  ASSERT_TRUE(small.ok()) << small.status();
  absl::Status over =
      WriteContent(client(), scope(), f->attr.ino, small->version, RandomBytes(150'000, 5), 65536)
          .status();
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoOf(over), EDQUOT);
  EXPECT_EQ(*ReadContent(client(), scope(), f->attr.ino), "fits");
}

TEST_P(ClusterClientConformanceTest, ReadsDirectoriesPageByPage) {
  auto dir = client().Mkdir(scope(), kRootInode, "many", 0755, {});
  ASSERT_TRUE(dir.ok());
  std::set<std::string> names;
  for (int i = 0; i < 25; ++i) {
    std::string name = "entry-" + std::to_string(100 + i);
    names.insert(name);
    if (i % 5 == 0) {
      ASSERT_TRUE(client().Mkdir(scope(), dir->ino, name, 0755, {}).ok());
    } else {
      ASSERT_TRUE(client().Create(scope(), dir->ino, name, 0644, {}, true).ok());
    }
  }
  for (bool plus : {false, true}) {
    std::vector<std::string> seen;
    std::vector<size_t> page_sizes;
    std::string after;
    for (;;) {
      auto page = client().ReadDir(scope(), dir->ino, after, 7, plus);
      ASSERT_TRUE(page.ok()) << page.status();
      page_sizes.push_back(page->entries.size());
      for (const DirEntry& e : page->entries) {
        seen.push_back(e.name);
        EXPECT_EQ(e.attr.has_value(), plus);
        if (e.attr) {
          EXPECT_EQ(e.attr->ino, e.ino);
          EXPECT_EQ(e.attr->mode & S_IFMT, e.type);
        }
        EXPECT_EQ(e.type, e.name.back() == '0' || e.name.back() == '5' ? S_IFDIR : S_IFREG)
            << e.name;
      }
      if (!page->more) break;
      ASSERT_FALSE(page->entries.empty());
      after = page->entries.back().name;
    }
    EXPECT_THAT(page_sizes, ::testing::ElementsAre(7, 7, 7, 4));
    EXPECT_EQ(seen, std::vector<std::string>(names.begin(), names.end()));
  }
  // Past the last name: empty, no more.
  auto end = client().ReadDir(scope(), dir->ino, "zzz", 0, false);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->entries.empty());
  EXPECT_FALSE(end->more);
  EXPECT_EQ(ErrnoOf(client().ReadDir(scope(), dir->ino, std::string(256, 'a'), 0, false).status()),
            ENAMETOOLONG);
}

TEST_P(ClusterClientConformanceTest, ServesManyThreadsAtOnce) {
  constexpr int kThreads = 8, kFiles = 20;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto dir = client().Mkdir(scope(), kRootInode, "t" + std::to_string(t), 0755, {});
      if (!dir.ok()) {
        ++failures;
        return;
      }
      for (int i = 0; i < kFiles; ++i) {
        auto f = client().Create(scope(), dir->ino, std::to_string(i), 0644, {}, true);
        std::string data = fmt::format("thread {} file {}", t, i);
        if (!f.ok() ||
            !WriteContent(client(), scope(), f->attr.ino, f->attr.version, data, kMinChunkSize)
                 .ok() ||
            *ReadContent(client(), scope(), f->attr.ino) != data) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto usage = client().StatFs(scope());
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->inodes, 1u + kThreads * (1 + kFiles));
}

}  // namespace traincache::testing
