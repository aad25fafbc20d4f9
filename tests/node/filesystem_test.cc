// The node core (Filesystem) over the in-process fake server: two instances
// over one fake are two nodes of one cluster. Each node has its own memory
// tier, fetcher and staging folder. Chunks are 64 KiB to keep files small.

#include "node/filesystem.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "testing/fake_cluster_client.h"
#include "testing/temp_dir.h"
#include "traincache/status.h"

namespace traincache::node {
namespace {

using ::traincache::testing::FakeClusterClient;
using ::traincache::testing::TempDir;

constexpr uint32_t kChunk = kMinChunkSize;
constexpr int kRW = O_RDWR;

std::string Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Equal bytes; on a mismatch says where, instead of printing megabytes.
::testing::AssertionResult SameBytes(const std::string& got, const std::string& want) {
  if (got == want) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return ::testing::AssertionFailure()
         << "got " << got.size() << " bytes, want " << want.size() << ", first difference at " << i;
}

// Forwards to the fake, counting the bytes of PutChunks (what a node sends).
class CountingClient final : public ClusterClient {
 public:
  explicit CountingClient(FakeClusterClient* f) : f_(f) {}
  uint64_t put_bytes() const { return put_bytes_; }
  std::function<void()> after_get_chunk_map;

  absl::StatusOr<OpenScopeResult> OpenScope(const Scope& s, bool c) override {
    return f_->OpenScope(s, c);
  }
  absl::StatusOr<InodeAttr> Lookup(const Scope& s, InodeId p, std::string_view n) override {
    return f_->Lookup(s, p, n);
  }
  absl::StatusOr<InodeAttr> GetAttr(const Scope& s, InodeId i) override {
    return f_->GetAttr(s, i);
  }
  absl::StatusOr<InodeAttr> SetAttr(const Scope& s, InodeId i, const SetAttrRequest& r) override {
    return f_->SetAttr(s, i, r);
  }
  absl::StatusOr<ReadDirPage> ReadDir(const Scope& s, InodeId d, std::string_view a, uint32_t l,
                                      bool p) override {
    return f_->ReadDir(s, d, a, l, p);
  }
  absl::StatusOr<InodeAttr> Mkdir(const Scope& s, InodeId p, std::string_view n, uint32_t m,
                                  const Caller& c) override {
    return f_->Mkdir(s, p, n, m, c);
  }
  absl::StatusOr<CreateResult> Create(const Scope& s, InodeId p, std::string_view n, uint32_t m,
                                      const Caller& c, bool e) override {
    return f_->Create(s, p, n, m, c, e);
  }
  absl::StatusOr<UnlinkResult> Unlink(const Scope& s, InodeId p, std::string_view n) override {
    return f_->Unlink(s, p, n);
  }
  absl::Status Rmdir(const Scope& s, InodeId p, std::string_view n) override {
    return f_->Rmdir(s, p, n);
  }
  absl::StatusOr<UnlinkResult> Rename(const Scope& s, InodeId p, std::string_view n, InodeId np,
                                      std::string_view nn, uint32_t fl) override {
    return f_->Rename(s, p, n, np, nn, fl);
  }
  absl::StatusOr<InodeAttr> Symlink(const Scope& s, InodeId p, std::string_view n,
                                    std::string_view t, const Caller& c) override {
    return f_->Symlink(s, p, n, t, c);
  }
  absl::StatusOr<std::string> ReadLink(const Scope& s, InodeId i) override {
    return f_->ReadLink(s, i);
  }
  absl::StatusOr<InodeAttr> Link(const Scope& s, InodeId i, InodeId np,
                                 std::string_view nn) override {
    return f_->Link(s, i, np, nn);
  }
  absl::StatusOr<std::string> GetXattr(const Scope& s, InodeId i, std::string_view n) override {
    return f_->GetXattr(s, i, n);
  }
  absl::Status SetXattr(const Scope& s, InodeId i, std::string_view n, std::string_view v,
                        uint32_t fl) override {
    return f_->SetXattr(s, i, n, v, fl);
  }
  absl::StatusOr<std::vector<std::string>> ListXattr(const Scope& s, InodeId i) override {
    return f_->ListXattr(s, i);
  }
  absl::Status RemoveXattr(const Scope& s, InodeId i, std::string_view n) override {
    return f_->RemoveXattr(s, i, n);
  }
  absl::StatusOr<ScopeUsage> StatFs(const Scope& s) override { return f_->StatFs(s); }
  absl::Status Sync(const Scope& s) override { return f_->Sync(s); }
  absl::StatusOr<ChunkMap> GetChunkMap(const Scope& s, InodeId i) override {
    absl::StatusOr<ChunkMap> map = f_->GetChunkMap(s, i);
    // Run once, after the map is read and before the caller gets it: what
    // happens on the node between a request and its answer.
    if (std::function<void()> hook = std::exchange(after_get_chunk_map, nullptr)) hook();
    return map;
  }
  absl::StatusOr<InodeAttr> CommitContent(const Scope& s, InodeId i, uint64_t v, uint64_t size,
                                          uint32_t cs, const std::vector<ChunkRef>& c,
                                          Timespec m) override {
    return f_->CommitContent(s, i, v, size, cs, c, m);
  }
  absl::Status ReleaseInode(const Scope& s, InodeId i) override { return f_->ReleaseInode(s, i); }
  absl::StatusOr<std::vector<std::optional<uint64_t>>> HasChunks(
      const Scope& s, const std::vector<ChunkId>& ids) override {
    return f_->HasChunks(s, ids);
  }
  absl::Status PutChunks(const Scope& s, const std::vector<std::string_view>& chunks) override {
    for (std::string_view c : chunks) put_bytes_ += c.size();
    return f_->PutChunks(s, chunks);
  }
  absl::StatusOr<std::string> GetChunk(const Scope& s, const ChunkId& id, uint64_t off,
                                       uint64_t len) override {
    return f_->GetChunk(s, id, off, len);
  }

 private:
  FakeClusterClient* f_;
  std::atomic<uint64_t> put_bytes_{0};
};

// One node: its tier, fetcher, staging folder and Filesystem.
struct Node {
  std::unique_ptr<NodeTier> tier;
  std::unique_ptr<ChunkFetcher> fetcher;
  std::unique_ptr<Filesystem> fs;
};

class FilesystemTest : public ::testing::Test {
 protected:
  FilesystemTest() : client_(&fake_), scope_(*Scope::Parse("project:demo")) {}

  void SetUp() override {
    a_ = MakeNode("a");
    b_ = MakeNode("b");
  }

  std::unique_ptr<Node> MakeNode(const std::string& name,
                                 std::chrono::milliseconds ttl = std::chrono::milliseconds(0)) {
    auto node = std::make_unique<Node>();
    node->tier = NewMemoryTier(1ull << 30);
    node->fetcher =
        std::make_unique<ChunkFetcher>(&client_, node->tier.get(), ChunkFetcher::Options{});
    FilesystemOptions options;
    options.staging_dir = dir_.Sub("staging-" + name);
    options.chunk_size = kChunk;
    options.attr_ttl = ttl;
    options.entry_ttl = ttl;
    node->fs = std::make_unique<Filesystem>(scope_, &client_, node->fetcher.get(), node->tier.get(),
                                            options);
    EXPECT_TRUE(node->fs->Init().ok());
    return node;
  }

  Filesystem& A() { return *a_->fs; }
  Filesystem& B() { return *b_->fs; }

  // Opens `ino` read-only on `fs` and closes it again; the open's reply.
  OpenReply OpenAndClose(Filesystem& fs, InodeId ino) {
    absl::StatusOr<OpenReply> o = fs.Open(ino, O_RDONLY);
    EXPECT_TRUE(o.ok()) << o.status();
    if (!o.ok()) return {};
    fs.Release(ino, o->fh);
    return *o;
  }

  // Creates (or truncates) `name` in the root with `data` and closes it.
  InodeId WriteFile(Filesystem& fs, const std::string& name, const std::string& data) {
    absl::StatusOr<CreateReply> c = fs.Create(kRootInode, name, 0644, O_WRONLY | O_TRUNC, {});
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return 0;
    EXPECT_EQ(*fs.Write(c->attr.ino, c->fh, 0, data), data.size());
    EXPECT_TRUE(fs.Flush(c->attr.ino, c->fh).ok());
    fs.Release(c->attr.ino, c->fh);
    return c->attr.ino;
  }

  // Reads from `offset` to EOF through `fh`, in 256 KiB requests.
  static std::string ReadAll(Filesystem& fs, InodeId ino, uint64_t fh, uint64_t offset = 0) {
    std::string out;
    for (;;) {
      absl::StatusOr<std::string> r = fs.Read(ino, fh, offset + out.size(), 256 << 10);
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok() || r->empty()) return out;
      out += *r;
    }
  }

  // Opens `name` in the root read-only and reads it whole.
  std::string Cat(Filesystem& fs, const std::string& name) {
    absl::StatusOr<InodeAttr> attr = fs.Lookup(kRootInode, name);
    EXPECT_TRUE(attr.ok()) << attr.status();
    if (!attr.ok()) return "<missing>";
    absl::StatusOr<OpenReply> open = fs.Open(attr->ino, O_RDONLY);
    EXPECT_TRUE(open.ok()) << open.status();
    std::string out = ReadAll(fs, attr->ino, open->fh);
    fs.Release(attr->ino, open->fh);
    fs.Forget(attr->ino, 1);
    return out;
  }

  TempDir dir_;
  FakeClusterClient fake_;
  CountingClient client_;
  Scope scope_;
  std::unique_ptr<Node> a_, b_;
};

TEST_F(FilesystemTest, WrittenOnOneNodeIsReadWholeOnAnother) {
  const std::string data = Random(3 * kChunk + 1234, 1);
  WriteFile(A(), "f", data);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), data));
  absl::StatusOr<InodeAttr> attr = B().Lookup(kRootInode, "f");
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->size, data.size());
  EXPECT_TRUE(attr->is_reg());
}

TEST_F(FilesystemTest, OverwriteIsSeenWholeByTheNextOpenAndOldHandlesKeepTheirVersion) {
  const std::string v1 = Random(4 * kChunk, 1);
  const std::string v2 = Random(2 * kChunk + 7, 2);
  const InodeId ino = WriteFile(A(), "f", v1);

  absl::StatusOr<OpenReply> old = B().Open(ino, O_RDONLY);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(*B().Read(ino, old->fh, 0, 100), v1.substr(0, 100));

  WriteFile(A(), "f", v2);

  absl::StatusOr<OpenReply> fresh = B().Open(ino, O_RDONLY);
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->keep_cache);  // A new version: the kernel drops its pages.
  EXPECT_TRUE(SameBytes(ReadAll(B(), ino, fresh->fh), v2));
  // The handle opened before the overwrite reads the version it opened, whole.
  EXPECT_TRUE(SameBytes(ReadAll(B(), ino, old->fh), v1));
  B().Release(ino, old->fh);
  B().Release(ino, fresh->fh);
}

// A counter incremented under a lock by processes of one node: the next
// process's open reads the chunk map just before the last one's close
// commits (and drops the write state). The open must not stage on the
// older map, nor must revalidation under the lock leave it there: the
// increment would be read from, and then rebased over, old content.
TEST_F(FilesystemTest, AnOpenRacingThisNodesCommitStagesOnTheNewerContent) {
  const InodeId ino = WriteFile(A(), "counter", "0");
  absl::StatusOr<OpenReply> first = A().Open(ino, kRW);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(*A().Write(ino, first->fh, 0, "1"), 1u);
  client_.after_get_chunk_map = [&] {
    EXPECT_TRUE(A().Flush(ino, first->fh).ok());
    A().Release(ino, first->fh);
  };
  absl::StatusOr<OpenReply> second = A().Open(ino, kRW);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*A().Read(ino, second->fh, 0, 10), "1");
  ASSERT_TRUE(A().RevalidateUnderLock(ino).ok());
  EXPECT_EQ(*A().Read(ino, second->fh, 0, 10), "1");
  ASSERT_EQ(*A().Write(ino, second->fh, 0, "2"), 1u);
  ASSERT_TRUE(A().Flush(ino, second->fh).ok());
  A().Release(ino, second->fh);
  EXPECT_EQ(A().Stats().commit_rebases, 0u);
  EXPECT_EQ(Cat(B(), "counter"), "2");
}

// Under a lock, a write state with nothing staged moves to what another node
// committed even when this node's own commit is already the newest it knows
// of in other respects.
TEST_F(FilesystemTest, RevalidationUnderALockMovesAnIdleWriteStateForward) {
  const InodeId ino = WriteFile(A(), "counter", "0");
  absl::StatusOr<OpenReply> h = A().Open(ino, kRW);
  ASSERT_TRUE(h.ok());
  WriteFile(B(), "counter", "5");
  EXPECT_EQ(*A().Read(ino, h->fh, 0, 10), "0");  // Not under a lock: the open's view.
  absl::StatusOr<bool> changed = A().RevalidateUnderLock(ino);
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE(*changed);
  EXPECT_EQ(*A().Read(ino, h->fh, 0, 10), "5");
  A().Release(ino, h->fh);
}

TEST_F(FilesystemTest, KeepCacheOnlyWhileTheVersionIsUnchanged) {
  const InodeId ino = WriteFile(A(), "f", "one");
  // The kernel holds a lookup while it keeps the inode (and its pages).
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  auto open = [&] { return OpenAndClose(B(), ino).keep_cache; };
  EXPECT_FALSE(open());
  EXPECT_TRUE(open());
  WriteFile(A(), "f", "two");
  EXPECT_FALSE(open());
  EXPECT_TRUE(open());
}

// The kernel drops a file's pages in the open that was told not to keep
// them, after the reply: until a request through that handle shows the open
// returned, a second open must not be told to keep the cache (it could read
// the pages the first is about to drop).
TEST_F(FilesystemTest, NoOpenKeepsTheCacheWhileAnOpenThatDropsItHasNotReturned) {
  const InodeId ino = WriteFile(A(), "f", "one");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  EXPECT_FALSE(OpenAndClose(B(), ino).keep_cache);
  EXPECT_TRUE(OpenAndClose(B(), ino).keep_cache);
  WriteFile(A(), "f", "two");
  absl::StatusOr<OpenReply> first = B().Open(ino, O_RDONLY);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first->keep_cache);
  EXPECT_FALSE(OpenAndClose(B(), ino).keep_cache);  // `first` has not been used yet.
  EXPECT_EQ(*B().Read(ino, first->fh, 0, 10), "two");
  EXPECT_TRUE(OpenAndClose(B(), ino).keep_cache);
  B().Release(ino, first->fh);
}

// A handle opened before a change reads its own version, whose pages then
// sit in the kernel's one cache of the file: the next open drops them.
TEST_F(FilesystemTest, AnOldHandlesReadMakesTheNextOpenDropTheCache) {
  const InodeId ino = WriteFile(A(), "f", "one");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  absl::StatusOr<OpenReply> old = B().Open(ino, O_RDONLY);
  ASSERT_TRUE(old.ok());
  WriteFile(A(), "f", "two");
  EXPECT_FALSE(OpenAndClose(B(), ino).keep_cache);
  EXPECT_TRUE(OpenAndClose(B(), ino).keep_cache);
  EXPECT_EQ(*B().Read(ino, old->fh, 0, 10), "one");
  EXPECT_FALSE(OpenAndClose(B(), ino).keep_cache);
  B().Release(ino, old->fh);
}

TEST_F(FilesystemTest, OpenSaysWhenTheKernelsAttributesPredateTheContent) {
  const InodeId ino = WriteFile(A(), "f", "one");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  auto open = [&] { return OpenAndClose(B(), ino).attr_stale; };
  EXPECT_FALSE(open());  // The lookup's attributes are of this content.
  WriteFile(A(), "f", "longer");
  // B's kernel would read up to the old size: it is told to ask again, and
  // the next GetAttr is the new content's.
  EXPECT_TRUE(open());
  EXPECT_EQ(B().GetAttr(ino)->size, 6u);
  EXPECT_FALSE(open());
}

TEST_F(FilesystemTest, AnInodeGoneFromTheServerIsEstaleSoTheKernelLooksUpAgain) {
  const InodeId ino = WriteFile(A(), "f", "old");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  WriteFile(A(), "g", "new");
  ASSERT_TRUE(A().Rename(kRootInode, "g", kRootInode, "f", 0).ok());  // Over f: ino is gone.
  EXPECT_EQ(ToErrno(B().Open(ino, O_RDONLY).status()), ESTALE);
  EXPECT_EQ(ToErrno(B().GetAttr(ino).status()), ESTALE);
  EXPECT_EQ(Cat(B(), "f"), "new");
}

// Not only open and getattr: every call the kernel makes by inode number
// (readlink, opendir, setattr, link, xattrs) after a path walk through a name
// it still caches must answer ESTALE for an inode gone from the server, or
// the kernel fails the call with ENOENT instead of looking the name up again
// (a symlink or directory replaced on another node within entry_ttl).
// A file replaced on node A (os.replace: A releases the old inode at once)
// while B has it open: fstat through B's handle still answers, with no
// links, as for an unlinked open file on a local disk; B without a handle
// gets ESTALE (the kernel then looks the name up again).
TEST_F(FilesystemTest, GetAttrOfAFileOpenHereButGoneFromTheServerAnswersUnlinked) {
  const InodeId old = WriteFile(A(), "refs-main", "commit-1");
  ASSERT_TRUE(B().Lookup(kRootInode, "refs-main").ok());
  absl::StatusOr<OpenReply> h = B().Open(old, O_RDONLY);
  ASSERT_TRUE(h.ok());
  WriteFile(A(), "tmp", "commit-2");
  ASSERT_TRUE(A().Rename(kRootInode, "tmp", kRootInode, "refs-main", 0).ok());
  // Past the attribute cache: the next GetAttr asks the server.
  std::this_thread::sleep_for(B().options().attr_ttl + std::chrono::milliseconds(50));
  absl::StatusOr<InodeAttr> attr = B().GetAttr(old);
  ASSERT_TRUE(attr.ok()) << attr.status();
  EXPECT_EQ(attr->nlink, 0u);
  EXPECT_EQ(attr->size, 8u);
  B().Release(old, h->fh);
  EXPECT_EQ(ToErrno(B().GetAttr(old).status()), ESTALE);
}

TEST_F(FilesystemTest, EveryCallByInodeNumberIsEstaleForAnInodeGoneFromTheServer) {
  const Caller caller{0, 0};
  absl::StatusOr<InodeAttr> link = A().Symlink(kRootInode, "link", "target-one", caller);
  absl::StatusOr<InodeAttr> dir = A().Mkdir(kRootInode, "dir", 0755, caller);
  ASSERT_TRUE(link.ok() && dir.ok());
  const InodeId file = WriteFile(A(), "f", "data");
  for (const char* name : {"link", "dir", "f"}) {
    ASSERT_TRUE(B().Lookup(kRootInode, name).ok()) << name;
  }
  ASSERT_TRUE(A().Unlink(kRootInode, "link").ok());
  ASSERT_TRUE(A().Rmdir(kRootInode, "dir").ok());
  ASSERT_TRUE(A().Unlink(kRootInode, "f").ok());

  EXPECT_EQ(ToErrno(B().ReadLink(link->ino).status()), ESTALE);
  EXPECT_EQ(ToErrno(B().OpenDir(dir->ino).status()), ESTALE);
  SetAttrRequest chmod;
  chmod.mode = 0600;
  EXPECT_EQ(ToErrno(B().SetAttr(file, chmod, std::nullopt).status()), ESTALE);
  SetAttrRequest truncate;
  truncate.size = 0;
  EXPECT_EQ(ToErrno(B().SetAttr(file, truncate, std::nullopt).status()), ESTALE);
  EXPECT_EQ(ToErrno(B().Link(file, kRootInode, "again").status()), ESTALE);
  EXPECT_EQ(ToErrno(B().GetXattr(file, "user.k").status()), ESTALE);
  EXPECT_EQ(ToErrno(B().SetXattr(file, "user.k", "v", 0)), ESTALE);
  EXPECT_EQ(ToErrno(B().ListXattr(file).status()), ESTALE);
  EXPECT_EQ(ToErrno(B().RemoveXattr(file, "user.k")), ESTALE);

  // The kernel's second look finds what the names are now: a new link is
  // read; a name that is gone is ENOENT. A missing xattr stays ENODATA.
  absl::StatusOr<InodeAttr> relinked = A().Symlink(kRootInode, "link", "target-two", caller);
  ASSERT_TRUE(relinked.ok());
  absl::StatusOr<InodeAttr> again = B().Lookup(kRootInode, "link");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*B().ReadLink(again->ino), "target-two");
  EXPECT_EQ(ToErrno(B().Lookup(kRootInode, "dir").status()), ENOENT);
  EXPECT_EQ(ToErrno(B().GetXattr(again->ino, "user.none").status()), ENODATA);
}

TEST_F(FilesystemTest, KnownInodesKeepTheirAttributesWhileTheServerIsUnreachable) {
  const InodeId ino = WriteFile(A(), "f", "data");
  ASSERT_TRUE(B().Lookup(kRootInode, "f").ok());
  absl::StatusOr<OpenReply> o = B().Open(ino, O_RDONLY);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(ReadAll(B(), ino, o->fh), "data");  // Now in B's tier.
  fake_.FailNext("*", PosixError(EIO, "unreachable"), -1);
  // PosixError(EIO) is not UNAVAILABLE: only an outage is answered from cache.
  EXPECT_FALSE(B().GetAttr(ino).ok());
  fake_.ClearFailures();
  fake_.FailNext("*", absl::UnavailableError("server unreachable"), -1);
  absl::StatusOr<InodeAttr> attr = B().GetAttr(ino);
  ASSERT_TRUE(attr.ok()) << attr.status();
  EXPECT_EQ(attr->size, 4u);
  EXPECT_EQ(ReadAll(B(), ino, o->fh), "data");  // Still, from B's tier.
  EXPECT_EQ(B().GetAttr(ino + 1000).status().code(), absl::StatusCode::kUnavailable);
  fake_.ClearFailures();
  B().Release(ino, o->fh);
}

TEST_F(FilesystemTest, ReadsSeeStagedWritesBeforeAndAfterTheCommit) {
  const std::string base = Random(3 * kChunk, 3);
  const InodeId ino = WriteFile(A(), "f", base);
  absl::StatusOr<OpenReply> reader = A().Open(ino, O_RDONLY);
  absl::StatusOr<OpenReply> rw = A().Open(ino, kRW);
  ASSERT_TRUE(reader.ok() && rw.ok());
  ASSERT_TRUE(A().Write(ino, rw->fh, kChunk - 2, "XYZW").ok());
  std::string expected = base;
  expected.replace(kChunk - 2, 4, "XYZW");
  EXPECT_TRUE(SameBytes(ReadAll(A(), ino, rw->fh), expected));
  EXPECT_TRUE(SameBytes(ReadAll(A(), ino, reader->fh), expected));  // One node is coherent.
  EXPECT_EQ(A().GetAttr(ino)->size, base.size());
  ASSERT_TRUE(A().Fsync(ino, rw->fh, false).ok());
  EXPECT_TRUE(SameBytes(ReadAll(A(), ino, rw->fh), expected));
  A().Release(ino, rw->fh);
  EXPECT_TRUE(SameBytes(ReadAll(A(), ino, reader->fh), expected));
  A().Release(ino, reader->fh);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), expected));
}

TEST_F(FilesystemTest, PartialOverwriteUploadsOnlyTheChunksItTouched) {
  std::string data = Random(8 * kChunk, 4);
  const InodeId ino = WriteFile(A(), "f", data);
  EXPECT_EQ(client_.put_bytes(), data.size());

  const uint64_t before = client_.put_bytes();
  absl::StatusOr<OpenReply> o = A().Open(ino, kRW);
  ASSERT_TRUE(o.ok());
  const std::string patch = Random(100, 5);
  const uint64_t at = 3 * kChunk + kChunk - 50;  // Chunks 3 and 4.
  ASSERT_EQ(*A().Write(ino, o->fh, at, patch), patch.size());
  ASSERT_TRUE(A().Flush(ino, o->fh).ok());
  A().Release(ino, o->fh);
  EXPECT_EQ(client_.put_bytes() - before, 2 * kChunk);
  data.replace(at, patch.size(), patch);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), data));
}

TEST_F(FilesystemTest, AppendWritesAtTheEnd) {
  const InodeId ino = WriteFile(A(), "log", "hello");
  absl::StatusOr<OpenReply> o = A().Open(ino, O_WRONLY | O_APPEND);
  ASSERT_TRUE(o.ok());
  ASSERT_TRUE(A().Write(ino, o->fh, 0, " world").ok());
  ASSERT_TRUE(A().Write(ino, o->fh, 3, "!").ok());
  A().Release(ino, o->fh);
  EXPECT_TRUE(SameBytes(Cat(B(), "log"), "hello world!"));
  // An append on B, opened after A's close, lands after A's bytes.
  absl::StatusOr<OpenReply> ob = B().Open(ino, O_WRONLY | O_APPEND);
  ASSERT_TRUE(ob.ok());
  ASSERT_TRUE(B().Write(ino, ob->fh, 0, "?").ok());
  B().Release(ino, ob->fh);
  EXPECT_TRUE(SameBytes(Cat(A(), "log"), "hello world!?"));
}

TEST_F(FilesystemTest, TruncateShrinkAndExtend) {
  const std::string data = Random(3 * kChunk + 10, 6);
  const InodeId ino = WriteFile(A(), "f", data);
  const uint64_t half = kChunk + kChunk / 2;

  // ftruncate of a file open for write: staged until close.
  absl::StatusOr<OpenReply> o = A().Open(ino, kRW);
  ASSERT_TRUE(o.ok());
  SetAttrRequest shrink;
  shrink.size = half;
  absl::StatusOr<InodeAttr> attr = A().SetAttr(ino, shrink, o->fh);
  ASSERT_TRUE(attr.ok()) << attr.status();
  EXPECT_EQ(attr->size, half);
  EXPECT_EQ(fake_.GetAttr(scope_, ino)->size, data.size());  // Not sent yet.
  EXPECT_TRUE(SameBytes(ReadAll(A(), ino, o->fh), data.substr(0, half)));
  SetAttrRequest extend;
  extend.size = 2 * kChunk;
  ASSERT_TRUE(A().SetAttr(ino, extend, o->fh).ok());
  A().Release(ino, o->fh);
  std::string expected = data.substr(0, half) + std::string(2 * kChunk - half, '\0');
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), expected));

  // truncate of a file nobody has open: the server's, including growing a
  // file whose last chunk a truncate cut (the server asks for a commit).
  SetAttrRequest cut;
  cut.size = kChunk / 3;
  ASSERT_TRUE(B().SetAttr(ino, cut).ok());
  SetAttrRequest grow;
  grow.size = 2 * kChunk + 5;
  attr = B().SetAttr(ino, grow);
  ASSERT_TRUE(attr.ok()) << attr.status();
  EXPECT_EQ(attr->size, 2 * kChunk + 5);
  expected = data.substr(0, kChunk / 3) + std::string(2 * kChunk + 5 - kChunk / 3, '\0');
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), expected));
}

TEST_F(FilesystemTest, OTruncAndTruncateToZeroStartFresh) {
  const InodeId ino = WriteFile(A(), "f", Random(2 * kChunk, 7));
  absl::StatusOr<OpenReply> o = A().Open(ino, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(A().GetAttr(ino)->size, 0u);
  A().Release(ino, o->fh);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), ""));
  EXPECT_EQ(fake_.GetAttr(scope_, ino)->size, 0u);
}

TEST_F(FilesystemTest, SparseWriteFarPastFourGiB) {
  const uint64_t far = (5ull << 30) + 123;
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "sparse", 0644, O_RDWR, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  ASSERT_TRUE(A().Write(ino, c->fh, 0, "head").ok());
  ASSERT_TRUE(A().Write(ino, c->fh, far, "tail").ok());
  EXPECT_EQ(A().GetAttr(ino)->size, far + 4);
  EXPECT_EQ(*A().Read(ino, c->fh, far - 2, 100), std::string(2, '\0') + "tail");
  const uint64_t before = client_.put_bytes();
  ASSERT_TRUE(A().Flush(ino, c->fh).ok());
  A().Release(ino, c->fh);
  EXPECT_LE(client_.put_bytes() - before, 2 * kChunk);  // Holes are not uploaded.

  absl::StatusOr<OpenReply> o = B().Open(ino, O_RDONLY);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(B().GetAttr(ino)->size, far + 4);
  EXPECT_EQ(*B().Read(ino, o->fh, 0, 4), "head");
  EXPECT_EQ(*B().Read(ino, o->fh, far, 100), "tail");
  EXPECT_EQ(*B().Read(ino, o->fh, 3ull << 30, 1000), std::string(1000, '\0'));
  B().Release(ino, o->fh);
}

TEST_F(FilesystemTest, ExclusiveCreateRaceHasOneWinner) {
  for (int round = 0; round < 20; ++round) {
    const std::string name = "lock" + std::to_string(round);
    absl::StatusOr<CreateReply> ra, rb;
    std::thread ta([&] { ra = A().Create(kRootInode, name, 0644, O_WRONLY | O_EXCL, {}); });
    std::thread tb([&] { rb = B().Create(kRootInode, name, 0644, O_WRONLY | O_EXCL, {}); });
    ta.join();
    tb.join();
    ASSERT_NE(ra.ok(), rb.ok()) << name;
    const absl::Status& lost = ra.ok() ? rb.status() : ra.status();
    EXPECT_EQ(ToErrno(lost), EEXIST);
    if (ra.ok()) A().Release(ra->attr.ino, ra->fh);
    if (rb.ok()) B().Release(rb->attr.ino, rb->fh);
  }
}

TEST_F(FilesystemTest, NamespaceCallsPassThroughWithTheirErrno) {
  const Caller caller{1000, 1000};
  absl::StatusOr<InodeAttr> d = A().Mkdir(kRootInode, "d", 0755, caller);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->is_dir());
  EXPECT_EQ(d->uid, 1000u);
  EXPECT_EQ(ToErrno(A().Mkdir(kRootInode, "d", 0755, caller).status()), EEXIST);
  EXPECT_EQ(ToErrno(A().Lookup(kRootInode, "nope").status()), ENOENT);
  EXPECT_EQ(ToErrno(A().Lookup(kRootInode, std::string(256, 'x')).status()), ENAMETOOLONG);

  const InodeId f = WriteFile(A(), "f", "content");
  WriteFile(A(), "g", "other");
  EXPECT_EQ(ToErrno(A().Rename(kRootInode, "f", kRootInode, "g", kRenameNoReplace)), EEXIST);
  ASSERT_TRUE(A().Rename(kRootInode, "f", d->ino, "f2", 0).ok());
  EXPECT_EQ(ToErrno(A().Rmdir(kRootInode, "d")), ENOTEMPTY);
  ASSERT_TRUE(A().Rename(kRootInode, "g", d->ino, "f2", kRenameExchange).ok());
  EXPECT_TRUE(SameBytes(Cat(B(), "g"), "content"));
  ASSERT_TRUE(A().Rename(kRootInode, "g", kRootInode, "h", 0).ok());
  // Rename over an existing file: the replaced one is released.
  const uint64_t releases = fake_.Calls("ReleaseInode");
  ASSERT_TRUE(A().Rename(d->ino, "f2", kRootInode, "h", 0).ok());
  EXPECT_EQ(fake_.Calls("ReleaseInode"), releases + 1);
  EXPECT_TRUE(SameBytes(Cat(B(), "h"), "other"));
  EXPECT_EQ(ToErrno(A().Unlink(kRootInode, "nope")), ENOENT);
  EXPECT_EQ(ToErrno(A().Unlink(kRootInode, "d")), EISDIR);
  ASSERT_TRUE(A().Rmdir(kRootInode, "d").ok());
  EXPECT_EQ(ToErrno(B().Lookup(kRootInode, "d").status()), ENOENT);

  absl::StatusOr<InodeAttr> s = A().Symlink(kRootInode, "s", "../x/y", caller);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->is_symlink());
  EXPECT_EQ(*B().ReadLink(s->ino), "../x/y");

  absl::StatusOr<InodeAttr> h = B().Lookup(kRootInode, "h");
  ASSERT_TRUE(h.ok());
  absl::StatusOr<InodeAttr> l = A().Link(h->ino, kRootInode, "h2");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->nlink, 2u);
  EXPECT_TRUE(SameBytes(Cat(B(), "h2"), "other"));
  static_cast<void>(f);

  ASSERT_TRUE(A().SetXattr(h->ino, "user.k", "v", 0).ok());
  EXPECT_EQ(*B().GetXattr(h->ino, "user.k"), "v");
  EXPECT_EQ(ToErrno(A().SetXattr(h->ino, "user.k", "w", kXattrCreate)), EEXIST);
  EXPECT_EQ(ToErrno(A().SetXattr(h->ino, "user.none", "w", kXattrReplace)), ENODATA);
  ASSERT_TRUE(A().SetXattr(h->ino, "user.a", "1", 0).ok());
  EXPECT_EQ(*B().ListXattr(h->ino), std::string("user.a\0user.k\0", 14));
  ASSERT_TRUE(B().RemoveXattr(h->ino, "user.k").ok());
  EXPECT_EQ(ToErrno(A().GetXattr(h->ino, "user.k").status()), ENODATA);
  EXPECT_EQ(ToErrno(A().RemoveXattr(h->ino, "user.k")), ENODATA);

  SetAttrRequest chmod;
  chmod.mode = 0600;
  absl::StatusOr<InodeAttr> m = A().SetAttr(h->ino, chmod);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->mode & 07777, 0600u);
  EXPECT_EQ(B().GetAttr(h->ino)->mode & 07777, 0600u);

  absl::StatusOr<struct statvfs> st = A().StatFs();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->f_blocks * st->f_frsize, kDefaultQuotaBytes / 4096 * 4096);
  EXPECT_EQ(st->f_namemax, kMaxNameBytes);
}

TEST_F(FilesystemTest, UnlinkedOpenFileStaysUsableUntilRelease) {
  const InodeId ino = WriteFile(A(), "f", "still here");
  absl::StatusOr<OpenReply> o = A().Open(ino, kRW);
  ASSERT_TRUE(o.ok());
  ASSERT_TRUE(A().Unlink(kRootInode, "f").ok());
  EXPECT_EQ(ToErrno(B().Lookup(kRootInode, "f").status()), ENOENT);
  EXPECT_EQ(fake_.Calls("ReleaseInode"), 0u);
  EXPECT_TRUE(SameBytes(ReadAll(A(), ino, o->fh), "still here"));
  ASSERT_TRUE(A().Write(ino, o->fh, 0, "STILL").ok());
  EXPECT_TRUE(SameBytes(ReadAll(A(), ino, o->fh), "STILL here"));
  A().Release(ino, o->fh);
  EXPECT_EQ(fake_.Calls("ReleaseInode"), 1u);
  EXPECT_EQ(ToErrno(fake_.GetAttr(scope_, ino).status()), ENOENT);

  // Unlinked with nothing open here: released at once.
  WriteFile(A(), "g", "x");
  ASSERT_TRUE(A().Unlink(kRootInode, "g").ok());
  EXPECT_EQ(fake_.Calls("ReleaseInode"), 2u);
}

TEST_F(FilesystemTest, ConflictingWritersNeverPublishAMix) {
  const std::string base = Random(3 * kChunk, 8);
  const InodeId ino = WriteFile(A(), "f", base);

  // A patches one chunk; B rewrites the file whole and closes first: A's
  // commit would publish B's bytes with A's patch, so A's close fails.
  absl::StatusOr<OpenReply> pa = A().Open(ino, kRW);
  ASSERT_TRUE(pa.ok());
  ASSERT_TRUE(A().Write(ino, pa->fh, 10, "patch").ok());
  const std::string whole = Random(2 * kChunk + 1, 9);
  WriteFile(B(), "f", whole);
  EXPECT_EQ(ToErrno(A().Flush(ino, pa->fh)), EIO);
  A().Release(ino, pa->fh);
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), whole));
  EXPECT_GE(A().Stats().commit_conflicts, 1u);

  // Now B patches and closes first, A rewrites whole and closes last: the
  // whole rewrite does not depend on what it replaced, so last close wins.
  absl::StatusOr<OpenReply> wa = A().Open(ino, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(wa.ok());
  const std::string mine = Random(kChunk + 3, 10);
  ASSERT_TRUE(A().Write(ino, wa->fh, 0, mine).ok());
  absl::StatusOr<OpenReply> pb = B().Open(ino, kRW);
  ASSERT_TRUE(pb.ok());
  ASSERT_TRUE(B().Write(ino, pb->fh, 5, "patch").ok());
  ASSERT_TRUE(B().Flush(ino, pb->fh).ok());
  B().Release(ino, pb->fh);
  ASSERT_TRUE(A().Flush(ino, wa->fh).ok());
  A().Release(ino, wa->fh);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), mine));
  EXPECT_GE(A().Stats().commit_rebases, 1u);
}

TEST_F(FilesystemTest, AttributeChangesElsewhereDoNotFailAWriter) {
  const std::string base = Random(2 * kChunk, 11);
  const InodeId ino = WriteFile(A(), "f", base);
  absl::StatusOr<OpenReply> o = A().Open(ino, kRW);
  ASSERT_TRUE(o.ok());
  ASSERT_TRUE(A().Write(ino, o->fh, 1, "x").ok());
  SetAttrRequest chmod;
  chmod.mode = 0600;
  ASSERT_TRUE(B().SetAttr(ino, chmod).ok());
  ASSERT_TRUE(B().SetXattr(ino, "user.k", "v", 0).ok());
  ASSERT_TRUE(A().Flush(ino, o->fh).ok());
  A().Release(ino, o->fh);
  std::string expected = base;
  expected[1] = 'x';
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), expected));
  EXPECT_EQ(B().GetAttr(ino)->mode & 07777, 0600u);
}

TEST_F(FilesystemTest, TimesSetOnAnOpenFileSurviveItsClose) {
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "f", 0644, O_WRONLY, {});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(A().Write(c->attr.ino, c->fh, 0, "data").ok());
  SetAttrRequest times;
  times.mtime = Timespec{1000, 5};
  times.atime = Timespec{1000, 5};
  ASSERT_TRUE(A().SetAttr(c->attr.ino, times, c->fh).ok());  // futimens, as cp -p.
  A().Release(c->attr.ino, c->fh);
  absl::StatusOr<InodeAttr> attr = fake_.GetAttr(scope_, c->attr.ino);
  EXPECT_EQ(attr->mtime, (Timespec{1000, 5}));
  EXPECT_EQ(attr->size, 4u);
}

TEST_F(FilesystemTest, QuotaErrorsReachCloseAndKeepTheLastContent) {
  FakeClusterClient small(FakeClusterClient::Options{.default_quota_bytes = 3 * kChunk});
  auto tier = NewMemoryTier(1 << 30);
  ChunkFetcher fetcher(&small, tier.get(), {});
  FilesystemOptions options;
  options.staging_dir = dir_.Sub("staging-q");
  options.chunk_size = kChunk;
  Filesystem fs(scope_, &small, &fetcher, tier.get(), options);
  ASSERT_TRUE(fs.Init().ok());
  const InodeId ino = WriteFile(fs, "f", "small");
  absl::StatusOr<OpenReply> o = fs.Open(ino, kRW);
  ASSERT_TRUE(o.ok());
  ASSERT_TRUE(fs.Write(ino, o->fh, 0, Random(4 * kChunk, 12)).ok());
  EXPECT_EQ(ToErrno(fs.Flush(ino, o->fh)), EDQUOT);
  fs.Release(ino, o->fh);
  EXPECT_TRUE(SameBytes(Cat(fs, "f"), "small"));
}

TEST_F(FilesystemTest, CreateKeepsTheDirectorysNewAttributesAndKnowsTheFileHasNoXattrs) {
  auto node = MakeNode("c", std::chrono::hours(1));
  Filesystem& fs = *node->fs;
  auto before_or = fs.GetAttr(kRootInode);
  ASSERT_TRUE(before_or.ok()) << before_or.status();
  InodeAttr before = *before_or;
  auto c_or = fs.Create(kRootInode, "f", 0644, O_WRONLY, {});
  ASSERT_TRUE(c_or.ok()) << c_or.status();
  CreateReply c = *c_or;
  const uint64_t getattrs = fake_.Calls("GetAttr");
  const uint64_t getxattrs = fake_.Calls("GetXattr");
  // The kernel asks for the directory after each create: answered from the
  // create's reply, which is the server's state.
  auto after_or = fs.GetAttr(kRootInode);
  ASSERT_TRUE(after_or.ok()) << after_or.status();
  InodeAttr after = *after_or;
  EXPECT_GT(after.version, before.version);
  auto server_or = fake_.GetAttr(scope_, kRootInode);
  ASSERT_TRUE(server_or.ok()) << server_or.status();
  InodeAttr server = *server_or;
  EXPECT_EQ(after.version, server.version);
  EXPECT_EQ(after.mtime, server.mtime);
  EXPECT_EQ(fake_.Calls("GetAttr"), getattrs + 1);  // Only the line above.
  // The kernel asks for security.capability before a write.
  EXPECT_EQ(ToErrno(fs.GetXattr(c.attr.ino, "security.capability").status()), ENODATA);
  EXPECT_EQ(fake_.Calls("GetXattr"), getxattrs);
  // Set here: seen here at once.
  ASSERT_TRUE(fs.SetXattr(c.attr.ino, "security.capability", "v", 0).ok());
  auto value_or = fs.GetXattr(c.attr.ino, "security.capability");
  ASSERT_TRUE(value_or.ok()) << value_or.status();
  std::string value = *value_or;
  EXPECT_EQ(value, "v");
  fs.Release(c.attr.ino, c.fh);
}

TEST_F(FilesystemTest, AnAbsentXattrIsAskedForOncePerTtl) {
  auto node = MakeNode("c", std::chrono::hours(1));
  Filesystem& fs = *node->fs;
  WriteFile(A(), "f", "x");
  auto f_or = fs.Lookup(kRootInode, "f");
  ASSERT_TRUE(f_or.ok()) << f_or.status();
  InodeAttr f = *f_or;
  const uint64_t getxattrs = fake_.Calls("GetXattr");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ToErrno(fs.GetXattr(f.ino, "user.k").status()), ENODATA);
  }
  EXPECT_EQ(fake_.Calls("GetXattr"), getxattrs + 1);
  // Another name is asked for; a name set on this node is found.
  EXPECT_EQ(ToErrno(fs.GetXattr(f.ino, "user.other").status()), ENODATA);
  EXPECT_EQ(fake_.Calls("GetXattr"), getxattrs + 2);
  ASSERT_TRUE(fs.SetXattr(f.ino, "user.k", "1", 0).ok());
  auto value_or = fs.GetXattr(f.ino, "user.k");
  ASSERT_TRUE(value_or.ok()) << value_or.status();
  std::string value = *value_or;
  EXPECT_EQ(value, "1");
  // Without a TTL (node A), every call asks.
  const uint64_t now = fake_.Calls("GetXattr");
  EXPECT_EQ(ToErrno(A().GetXattr(f.ino, "user.none").status()), ENODATA);
  EXPECT_EQ(ToErrno(A().GetXattr(f.ino, "user.none").status()), ENODATA);
  EXPECT_EQ(fake_.Calls("GetXattr"), now + 2);
}

TEST_F(FilesystemTest, FsyncWithNothingStagedAndFsyncDirAskTheServerToSync) {
  auto c_or = A().Create(kRootInode, "f", 0644, O_WRONLY, {});
  ASSERT_TRUE(c_or.ok()) << c_or.status();
  CreateReply c = *c_or;
  const InodeId ino = c.attr.ino;
  uint64_t syncs = fake_.Calls("Sync");
  // Staged data: the commit is the sync.
  ASSERT_TRUE(A().Write(ino, c.fh, 0, "data").ok());
  ASSERT_TRUE(A().Fsync(ino, c.fh, false).ok());
  EXPECT_EQ(fake_.Calls("Sync"), syncs);
  // Nothing staged: the create and any attribute change must still be made
  // durable.
  ASSERT_TRUE(A().Fsync(ino, c.fh, false).ok());
  EXPECT_EQ(fake_.Calls("Sync"), syncs + 1);
  ASSERT_TRUE(A().FsyncDir(kRootInode).ok());
  EXPECT_EQ(fake_.Calls("Sync"), syncs + 2);
  // A failed sync is fsync's error.
  fake_.FailNext("Sync", absl::UnavailableError("server down"), 1);
  EXPECT_EQ(ToErrno(A().FsyncDir(kRootInode)), ToErrno(absl::UnavailableError("")));
  A().Release(ino, c.fh);
}

TEST_F(FilesystemTest, ForgetDropsTableEntries) {
  auto node = MakeNode("c", std::chrono::hours(1));
  Filesystem& fs = *node->fs;
  const InodeId ino = WriteFile(A(), "f", "x");
  ASSERT_TRUE(fs.Lookup(kRootInode, "f").ok());
  ASSERT_TRUE(fs.Lookup(kRootInode, "f").ok());
  const uint64_t calls = fake_.Calls("GetAttr");
  ASSERT_TRUE(fs.GetAttr(ino).ok());
  EXPECT_EQ(fake_.Calls("GetAttr"), calls);  // Cached with the entry.
  fs.Forget(ino, 1);
  ASSERT_TRUE(fs.GetAttr(ino).ok());
  EXPECT_EQ(fake_.Calls("GetAttr"), calls);  // One lookup is left.
  fs.Forget(ino, 1);
  ASSERT_TRUE(fs.GetAttr(ino).ok());
  EXPECT_EQ(fake_.Calls("GetAttr"), calls + 1);  // Entry gone: asked the server.
}

TEST_F(FilesystemTest, ReadDirOffsetsAreStableForTheHandle) {
  for (int i = 0; i < 10; ++i) WriteFile(A(), "f" + std::to_string(i), "x");
  absl::StatusOr<uint64_t> dh = B().OpenDir(kRootInode);
  ASSERT_TRUE(dh.ok());
  std::vector<std::string> names;
  uint64_t offset = 0;
  int attrs = 0;
  auto take = [&](int n) {
    int left = n;
    ASSERT_TRUE(B().ReadDir(*dh, offset, /*plus=*/true,
                            [&](const DirListEntry& e) {
                              if (left-- == 0) return false;
                              names.emplace_back(e.name);
                              if (e.attr != nullptr) ++attrs;
                              offset = e.next_offset;
                              return true;
                            })
                    .ok());
  };
  take(4);
  // Changes after OpenDir do not shift the handle's offsets.
  ASSERT_TRUE(A().Unlink(kRootInode, "f0").ok());
  WriteFile(A(), "a-new", "x");
  take(100);
  std::vector<std::string> expected = {".", ".."};
  for (int i = 0; i < 10; ++i) expected.push_back("f" + std::to_string(i));
  EXPECT_EQ(names, expected);
  EXPECT_EQ(attrs, 10);
  // Reading again from an offset gives the same entry.
  std::string at5;
  ASSERT_TRUE(B().ReadDir(*dh, 5, false,
                          [&](const DirListEntry& e) {
                            at5 = std::string(e.name);
                            return false;
                          })
                  .ok());
  EXPECT_EQ(at5, "f3");
  B().ReleaseDir(*dh);
  EXPECT_EQ(ToErrno(B().ReadDir(*dh, 0, false, [](const DirListEntry&) { return true; })), EBADF);
}

TEST_F(FilesystemTest, BadHandlesAreEbadf) {
  const InodeId ino = WriteFile(A(), "f", "x");
  absl::StatusOr<OpenReply> o = A().Open(ino, O_RDONLY);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(ToErrno(A().Write(ino, o->fh, 0, "y").status()), EBADF);
  EXPECT_EQ(ToErrno(A().Read(ino, 9999, 0, 1).status()), EBADF);
  A().Release(ino, o->fh);
  EXPECT_EQ(ToErrno(A().Read(ino, o->fh, 0, 1).status()), EBADF);
}

TEST_F(FilesystemTest, ConcurrentWritersAndReadersOfDifferentFiles) {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Filesystem& fs = t % 2 ? A() : B();
      const std::string name = "t" + std::to_string(t);
      const std::string data = Random(2 * kChunk + t, 20 + t);
      for (int round = 0; round < 5; ++round) {
        absl::StatusOr<CreateReply> c = fs.Create(kRootInode, name, 0644, kRW | O_TRUNC, {});
        if (!c.ok()) {
          ++failures;
          return;
        }
        for (uint64_t off = 0; off < data.size(); off += 4096) {
          if (!fs.Write(c->attr.ino, c->fh, off, std::string_view(data).substr(off, 4096)).ok()) {
            ++failures;
          }
        }
        if (ReadAll(fs, c->attr.ino, c->fh) != data) ++failures;
        if (!fs.Flush(c->attr.ino, c->fh).ok()) ++failures;
        fs.Release(c->attr.ino, c->fh);
        fs.Forget(c->attr.ino, 1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < 4; ++t) {
    EXPECT_TRUE(SameBytes(Cat(A(), "t" + std::to_string(t)), Random(2 * kChunk + t, 20 + t)));
  }
}

TEST_F(FilesystemTest, ChunksTheServerHasAreNotSentAgain) {
  const std::string data = Random(3 * kChunk + 5, 30);
  WriteFile(A(), "a", data);
  const uint64_t before = client_.put_bytes();
  WriteFile(B(), "b", data);  // Same bytes, other node, other file.
  // Only the 5-byte last chunk travels again: small chunks go with the
  // commit without asking (cheaper than a HasChunks round trip).
  EXPECT_EQ(client_.put_bytes(), before + 5);
  EXPECT_TRUE(SameBytes(Cat(A(), "b"), data));
}

TEST_F(FilesystemTest, ConcurrentHandlesOfOneFileOnOneNode) {
  constexpr int kThreads = 4;
  constexpr uint64_t kPart = kChunk + 1000;  // Parts straddle chunk borders.
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "shared", 0644, kRW, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      absl::StatusOr<OpenReply> o = A().Open(ino, kRW);
      if (!o.ok()) {
        ++failures;
        return;
      }
      const std::string part = Random(kPart, 40 + t);
      for (uint64_t off = 0; off < kPart; off += 3000) {
        std::string_view piece = std::string_view(part).substr(off, 3000);
        if (!A().Write(ino, o->fh, t * kPart + off, piece).ok()) ++failures;
        if (!A().Read(ino, o->fh, t * kPart, 100).ok()) ++failures;
      }
      if (!A().Flush(ino, o->fh).ok()) ++failures;
      A().Release(ino, o->fh);
    });
  }
  for (auto& t : threads) t.join();
  A().Release(ino, c->fh);
  EXPECT_EQ(failures.load(), 0);
  std::string expected;
  for (int t = 0; t < kThreads; ++t) expected += Random(kPart, 40 + t);
  EXPECT_TRUE(SameBytes(Cat(B(), "shared"), expected));
}

}  // namespace
// --- staged data across a daemon crash ---
// A node's Filesystem destroyed without Flush/Release is what a kill -9
// leaves: nothing committed, the staging file and its journal on disk (the
// destructor keeps dirty state; a crash keeps it trivially). A new instance
// over the same staging folder commits it at Init.

class StagedRecoveryTest : public FilesystemTest {
 protected:
  std::string StagingFolder(const std::string& node) {
    return dir_.Sub("staging-" + node) + "/" + std::string(scope_.kind_name()) + "/" +
           scope_.id();
  }
  static bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }
  // Opens `name` on `fs` for writing and writes `patches` (offset, bytes)
  // without closing.
  InodeId WriteOpen(Filesystem& fs, const std::string& name, int flags,
                    const std::vector<std::pair<uint64_t, std::string>>& patches) {
    absl::StatusOr<InodeAttr> attr = fs.Lookup(kRootInode, name);
    EXPECT_TRUE(attr.ok()) << attr.status();
    if (!attr.ok()) return 0;
    absl::StatusOr<OpenReply> open = fs.Open(attr->ino, flags);
    EXPECT_TRUE(open.ok()) << open.status();
    if (!open.ok()) return 0;
    for (const auto& [off, bytes] : patches) {
      absl::StatusOr<size_t> w = fs.Write(attr->ino, open->fh, off, bytes);
      EXPECT_TRUE(w.ok()) << w.status();
    }
    return attr->ino;
  }
};

TEST_F(StagedRecoveryTest, WritesStagedBeforeACrashAreCommittedAtRestart) {
  const std::string base = Random(3 * kChunk, 20);
  WriteFile(A(), "f", base);
  std::unique_ptr<Node> c = MakeNode("c");
  const std::string tail = Random(kChunk + 5, 21);
  const InodeId ino = WriteOpen(*c->fs, "f", kRW, {{kChunk + 10, "patch"}, {base.size(), tail}});
  ASSERT_NE(ino, 0u);
  c.reset();  // The crash: no flush, no release.
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), base));  // Nothing was committed.
  const std::string folder = StagingFolder("c");
  EXPECT_TRUE(Exists(folder + "/" + std::to_string(ino) + ".journal"));

  c = MakeNode("c");  // Init commits what was staged.
  std::string want = base;
  want.replace(kChunk + 10, 5, "patch");
  want += tail;
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), want));
  EXPECT_TRUE(SameBytes(Cat(*c->fs, "f"), want));
  EXPECT_EQ(c->fs->Stats().commits, 1u);
  EXPECT_FALSE(Exists(folder + "/" + std::to_string(ino)));
  EXPECT_FALSE(Exists(folder + "/" + std::to_string(ino) + ".journal"));

  // A truncate is staged (and recovered) as well.
  WriteOpen(*c->fs, "f", kRW, {});
  c.reset();
  c = MakeNode("c");
  absl::StatusOr<InodeAttr> attr = c->fs->Lookup(kRootInode, "f");
  ASSERT_TRUE(attr.ok());
  SetAttrRequest req;
  req.size = 100;
  absl::StatusOr<OpenReply> w = c->fs->Open(ino, kRW);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(c->fs->SetAttr(ino, req, w->fh).ok());
  ASSERT_TRUE(c->fs->Write(ino, w->fh, 200, "x").ok());
  c.reset();
  c = MakeNode("c");
  want.resize(100);
  want += std::string(100, '\0') + "x";
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), want));
}

TEST_F(StagedRecoveryTest, ANewFileWrittenBeforeACrashIsCommittedAtRestart) {
  std::unique_ptr<Node> c = MakeNode("c");
  absl::StatusOr<CreateReply> cr = c->fs->Create(kRootInode, "g", 0644, O_WRONLY, {});
  ASSERT_TRUE(cr.ok());
  const std::string data = Random(2 * kChunk + 77, 22);
  ASSERT_TRUE(c->fs->Write(cr->attr.ino, cr->fh, 0, data).ok());
  c.reset();
  EXPECT_EQ(Cat(A(), "g"), "");
  c = MakeNode("c");
  EXPECT_TRUE(SameBytes(Cat(A(), "g"), data));
}

TEST_F(StagedRecoveryTest, ATornJournalTailIsIgnored) {
  const std::string base = Random(2 * kChunk, 23);
  WriteFile(A(), "f", base);
  std::unique_ptr<Node> c = MakeNode("c");
  const InodeId ino = WriteOpen(*c->fs, "f", kRW, {{10, "first"}, {kChunk + 10, "second"}});
  c.reset();
  // The last record was cut mid-way by the crash.
  const std::string journal = StagingFolder("c") + "/" + std::to_string(ino) + ".journal";
  struct stat st;
  ASSERT_EQ(stat(journal.c_str(), &st), 0);
  ASSERT_EQ(truncate(journal.c_str(), st.st_size - 3), 0);

  c = MakeNode("c");
  std::string want = base;
  want.replace(10, 5, "first");
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), want));

  // Garbage past the last whole record (a torn append of junk) is ignored too.
  WriteOpen(*c->fs, "f", kRW, {{20, "third"}});
  c.reset();
  {
    int fd = open(journal.c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0);
    const std::string junk = "\x10\0\0\0garbage-garbage-garbage";
    ASSERT_EQ(write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    close(fd);
  }
  c = MakeNode("c");
  want.replace(20, 5, "third");
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), want));
}

TEST_F(StagedRecoveryTest, AConflictingCommitMeanwhileKeepsTheFilesAndPublishesNothing) {
  const std::string base = Random(3 * kChunk, 24);
  const InodeId ino = WriteFile(A(), "f", base);
  std::unique_ptr<Node> c = MakeNode("c");
  WriteOpen(*c->fs, "f", kRW, {{10, "mine"}});
  c.reset();
  // While c is down, B patches the file: c's patch depends on the old bytes.
  absl::StatusOr<OpenReply> pb = B().Open(ino, kRW);
  ASSERT_TRUE(pb.ok());
  ASSERT_TRUE(B().Write(ino, pb->fh, kChunk, "theirs").ok());
  ASSERT_TRUE(B().Flush(ino, pb->fh).ok());
  B().Release(ino, pb->fh);
  std::string theirs = base;
  theirs.replace(kChunk, 6, "theirs");

  c = MakeNode("c");
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), theirs));
  EXPECT_EQ(c->fs->Stats().commits, 0u);
  EXPECT_GE(c->fs->Stats().commit_conflicts, 1u);
  const std::string staged = StagingFolder("c") + "/" + std::to_string(ino);
  EXPECT_TRUE(Exists(staged));
  EXPECT_TRUE(Exists(staged + ".journal"));

  // A later write of that inode on c moves the leftover aside, never over it.
  // (<ino> and <ino>.journal are then this run's new staging files.)
  WriteOpen(*c->fs, "f", kRW, {{0, "new"}});
  int kept = 0;
  for (const auto& e : std::filesystem::directory_iterator(StagingFolder("c"))) {
    if (e.path().filename().string().find(".kept-") != std::string::npos) ++kept;
  }
  EXPECT_EQ(kept, 2);
}

// A whole rewrite staged before the crash was never acknowledged (no close
// or fsync returned); B's change meanwhile was. Recovery does not publish
// the older, unacknowledged bytes over it (under a lock that died with the
// node, that was a lost update): they stay in the staging folder.
TEST_F(StagedRecoveryTest, AWholeRewriteIsNotPublishedOverAnAcknowledgedCommitMeanwhile) {
  const std::string base = Random(3 * kChunk, 25);
  const InodeId ino = WriteFile(A(), "f", base);
  std::unique_ptr<Node> c = MakeNode("c");
  const std::string mine = Random(kChunk + 9, 26);
  WriteOpen(*c->fs, "f", O_WRONLY | O_TRUNC, {{0, mine}});
  c.reset();
  absl::StatusOr<OpenReply> pb = B().Open(ino, kRW);
  ASSERT_TRUE(pb.ok());
  ASSERT_TRUE(B().Write(ino, pb->fh, 5, "theirs").ok());
  ASSERT_TRUE(B().Flush(ino, pb->fh).ok());
  B().Release(ino, pb->fh);
  std::string theirs = base;
  theirs.replace(5, 6, "theirs");

  c = MakeNode("c");
  EXPECT_TRUE(SameBytes(Cat(A(), "f"), theirs));
  EXPECT_EQ(c->fs->Stats().commits, 0u);
  EXPECT_EQ(c->fs->Stats().commit_rebases, 0u);
  EXPECT_GE(c->fs->Stats().commit_conflicts, 1u);
  EXPECT_TRUE(Exists(StagingFolder("c") + "/" + std::to_string(ino) + ".journal"));
}

}  // namespace traincache::node

// --- background upload of finished chunks ---
// Chunks a writer has finished go to the server while it writes on; the
// commit takes their refs, redoes any chunk changed since, and fails clearly
// only when it cannot send a chunk itself.

namespace traincache::node {
namespace {

// Holds the fake's PutChunks calls while closed.
class PutGate {
 public:
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void Open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void Pass() {
    std::unique_lock lock(mu_);
    ++held_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return open_; });
    --held_;
  }
  // Until `n` calls are held at once (false after 10 s).
  bool WaitForHeld(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return held_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int held_ = 0;
};

class BackgroundUploadTest : public FilesystemTest {
 protected:
  void SetUp() override {
    FilesystemTest::SetUp();
    fake_.SetHook([this](std::string_view op) {
      if (op == "PutChunks") gate_.Pass();
    });
  }
  void TearDown() override {
    gate_.Open();
    // The nodes' upload threads may still be in the hook: stop them while
    // the gate (destroyed before the base fixture) is there.
    a_.reset();
    b_.reset();
    fake_.SetHook(nullptr);
  }

  // Writes `data` at `offset` in pieces of `piece` bytes, as the kernel
  // hands a sequential writer's data over.
  static void WriteInPieces(Filesystem& fs, InodeId ino, uint64_t fh, uint64_t offset,
                            const std::string& data, size_t piece = kChunk / 4) {
    for (size_t off = 0; off < data.size(); off += piece) {
      std::string_view p = std::string_view(data).substr(off, piece);
      absl::StatusOr<size_t> w = fs.Write(ino, fh, offset + off, p);
      ASSERT_TRUE(w.ok()) << w.status();
    }
  }
  // Waits until `fs` has sent `n` chunks in the background (false after 10 s).
  static bool WaitForBackground(Filesystem& fs, uint64_t n) {
    for (int i = 0; i < 10000; ++i) {
      if (fs.Stats().background_uploaded_chunks >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  bool Stored(std::string_view bytes) {
    return fake_.chunks().Stat(scope_, ChunkId::Of(bytes)).ok();
  }
  static std::string_view ChunkOf(const std::string& data, uint64_t i) {
    return std::string_view(data).substr(i * kChunk, kChunk);
  }
  std::unique_ptr<Node> MakeNodeWith(const std::string& name,
                                     const std::function<void(FilesystemOptions&)>& edit) {
    auto node = std::make_unique<Node>();
    node->tier = NewMemoryTier(1ull << 30);
    node->fetcher =
        std::make_unique<ChunkFetcher>(&client_, node->tier.get(), ChunkFetcher::Options{});
    FilesystemOptions options;
    options.staging_dir = dir_.Sub("staging-" + name);
    options.chunk_size = kChunk;
    options.attr_ttl = options.entry_ttl = std::chrono::milliseconds(0);
    edit(options);
    node->fs = std::make_unique<Filesystem>(scope_, &client_, node->fetcher.get(),
                                            node->tier.get(), options);
    EXPECT_TRUE(node->fs->Init().ok());
    return node;
  }

  PutGate gate_;
};

TEST_F(BackgroundUploadTest, FinishedChunksAreOnTheServerBeforeClose) {
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "ckpt", 0644, O_WRONLY, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  const std::string data = Random(6 * kChunk + 100, 50);
  WriteInPieces(A(), ino, c->fh, 0, data);
  // Every whole chunk went up while the file stayed open; the short tail
  // waits for the commit.
  ASSERT_TRUE(WaitForBackground(A(), 6));
  for (uint64_t i = 0; i < 6; ++i) EXPECT_TRUE(Stored(ChunkOf(data, i))) << "chunk " << i;
  EXPECT_EQ(fake_.Calls("CommitContent"), 0u);
  EXPECT_EQ(Cat(B(), "ckpt"), "");  // Nothing published yet.

  const uint64_t puts = fake_.Calls("PutChunks");
  ASSERT_TRUE(A().Flush(ino, c->fh).ok());
  A().Release(ino, c->fh);
  // Nothing sent twice: the commit sends only the 100-byte tail (as a small
  // chunk, which this test client turns into one PutChunks).
  EXPECT_EQ(fake_.Calls("PutChunks"), puts + 1);
  EXPECT_EQ(client_.put_bytes(), data.size());
  const FilesystemStats s = A().Stats();
  EXPECT_EQ(s.background_uploaded_chunks, 6u);
  EXPECT_EQ(s.background_used_chunks, 6u);
  EXPECT_EQ(s.background_dropped_chunks, 0u);
  EXPECT_EQ(s.uploaded_chunks, 7u);  // Six in the background, the tail with the commit.
  EXPECT_TRUE(SameBytes(Cat(B(), "ckpt"), data));
}

TEST_F(BackgroundUploadTest, AChunkRewrittenAfterItsUploadIsCommittedWithTheNewBytes) {
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "f", 0644, kRW, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  std::string data = Random(4 * kChunk, 51);
  WriteInPieces(A(), ino, c->fh, 0, data);
  ASSERT_TRUE(WaitForBackground(A(), 4));
  // Chunk 1 changes after its upload finished; chunk 2 while its upload of
  // the old bytes is still in flight (held at PutChunks).
  const std::string patch = Random(300, 52);
  ASSERT_TRUE(A().Write(ino, c->fh, kChunk + 1000, patch).ok());
  data.replace(kChunk + 1000, patch.size(), patch);

  gate_.Close();
  const std::string chunk5 = Random(kChunk, 53);
  ASSERT_TRUE(A().Write(ino, c->fh, 4 * kChunk, chunk5).ok());  // Chunk 4: queued, held.
  data += chunk5;
  ASSERT_TRUE(gate_.WaitForHeld(1));
  const std::string patch2 = Random(50, 54);
  ASSERT_TRUE(A().Write(ino, c->fh, 4 * kChunk + 7, patch2).ok());
  data.replace(4 * kChunk + 7, patch2.size(), patch2);
  gate_.Open();

  ASSERT_TRUE(A().Flush(ino, c->fh).ok());
  A().Release(ino, c->fh);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), data));
  const FilesystemStats s = A().Stats();
  EXPECT_EQ(s.background_dropped_chunks, 2u);
  EXPECT_EQ(s.background_used_chunks, 3u);  // Chunks 0, 2 and 3.
  // The committed map names the new bytes of both rewritten chunks.
  absl::StatusOr<ChunkMap> map = fake_.GetChunkMap(scope_, ino);
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(map->chunks.size(), 5u);
  EXPECT_EQ(map->chunks[1].id, ChunkId::Of(ChunkOf(data, 1)));
  EXPECT_EQ(map->chunks[4].id, ChunkId::Of(ChunkOf(data, 4)));
}

TEST_F(BackgroundUploadTest, TruncateWhileUploadsAreInFlight) {
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "f", 0644, kRW, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  gate_.Close();
  std::string data = Random(4 * kChunk, 55);
  WriteInPieces(A(), ino, c->fh, 0, data);
  ASSERT_TRUE(gate_.WaitForHeld(1));
  // Cut inside chunk 1 while its upload (and those after it) is queued or
  // running, then grow the file again with a write past the cut.
  SetAttrRequest req;
  req.size = kChunk + kChunk / 2;
  ASSERT_TRUE(A().SetAttr(ino, req, c->fh).ok());
  const std::string tail = Random(kChunk, 56);
  ASSERT_TRUE(A().Write(ino, c->fh, 3 * kChunk, tail).ok());
  gate_.Open();
  ASSERT_TRUE(A().Fsync(ino, c->fh, false).ok());
  A().Release(ino, c->fh);

  std::string want = data.substr(0, kChunk + kChunk / 2);
  want.resize(3 * kChunk, '\0');
  want += tail;
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), want));
  EXPECT_GE(A().Stats().background_dropped_chunks, 3u);  // Chunks 1, 2 and 3.
}

TEST_F(BackgroundUploadTest, AFailedBackgroundUploadIsRedoneByTheCommit) {
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "f", 0644, O_WRONLY, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  // The first three PutChunks (the background uploads) fail.
  fake_.FailNext("PutChunks", absl::UnavailableError("server down"), 3);
  const std::string data = Random(3 * kChunk, 57);
  WriteInPieces(A(), ino, c->fh, 0, data);
  // All three failures go to the background uploads, not to the commit's.
  for (int i = 0; i < 10000 && fake_.Calls("PutChunks") < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(fake_.Calls("PutChunks"), 3u);
  ASSERT_TRUE(A().Flush(ino, c->fh).ok());
  A().Release(ino, c->fh);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), data));
  EXPECT_EQ(fake_.Calls("PutChunks"), 6u);
  EXPECT_EQ(A().Stats().background_uploaded_chunks, 0u);
  EXPECT_EQ(A().Stats().background_used_chunks, 0u);
}

TEST_F(BackgroundUploadTest, AnUploadTheCommitCannotRedoIsCloseSErrorAndTheDataStaysStaged) {
  const InodeId ino = WriteFile(A(), "f", "old");
  absl::StatusOr<OpenReply> o = A().Open(ino, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(o.ok());
  fake_.FailNext("PutChunks", absl::UnavailableError("server down"), -1);
  const std::string data = Random(2 * kChunk, 58);
  WriteInPieces(A(), ino, o->fh, 0, data);
  const absl::Status flushed = A().Flush(ino, o->fh);
  EXPECT_TRUE(absl::IsUnavailable(flushed)) << flushed;  // The client's error, as is.
  EXPECT_EQ(Cat(B(), "f"), "old");  // Nothing published.
  // The server is back: the same handle's fsync commits what was staged.
  fake_.ClearFailures();
  ASSERT_TRUE(A().Fsync(ino, o->fh, false).ok());
  A().Release(ino, o->fh);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), data));
}

TEST_F(BackgroundUploadTest, TheMemoryBudgetHoldsWhileTheServerIsSlow) {
  auto node = MakeNodeWith("c", [](FilesystemOptions& o) {
    o.upload_threads = 2;
    o.upload_budget_bytes = 3 * kChunk;
  });
  Filesystem& fs = *node->fs;
  absl::StatusOr<CreateReply> c = fs.Create(kRootInode, "big", 0644, O_WRONLY, {});
  ASSERT_TRUE(c.ok());
  gate_.Close();
  const std::string data = Random(20 * kChunk, 59);
  WriteInPieces(fs, c->attr.ino, c->fh, 0, data);  // Never waits on the server.
  ASSERT_TRUE(gate_.WaitForHeld(2));
  EXPECT_LE(fs.Stats().upload_peak_bytes, 3 * kChunk);
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gate_.Open();
  });
  ASSERT_TRUE(fs.Flush(c->attr.ino, c->fh).ok());  // The commit stays in the budget too.
  opener.join();
  fs.Release(c->attr.ino, c->fh);
  EXPECT_LE(fs.Stats().upload_peak_bytes, 3 * kChunk);
  EXPECT_EQ(fs.Stats().background_used_chunks, 3u);  // What fit; the commit sent the rest.
  EXPECT_EQ(client_.put_bytes(), data.size());
  EXPECT_TRUE(SameBytes(Cat(B(), "big"), data));
}

TEST_F(BackgroundUploadTest, UnlinkAndScopeDeletionWhileUploadsAreInFlight) {
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "gone", 0644, O_WRONLY, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  gate_.Close();
  WriteInPieces(A(), ino, c->fh, 0, Random(4 * kChunk, 60));
  ASSERT_TRUE(gate_.WaitForHeld(1));
  ASSERT_TRUE(A().Unlink(kRootInode, "gone").ok());
  const uint64_t commits = fake_.Calls("CommitContent");
  A().Release(ino, c->fh);  // The last handle of an orphan: nothing to commit.
  EXPECT_EQ(fake_.Calls("CommitContent"), commits);
  EXPECT_EQ(fake_.Calls("ReleaseInode"), 1u);

  // B writes, its uploads held; then the scope is deleted under it.
  absl::StatusOr<CreateReply> d = B().Create(kRootInode, "g", 0644, O_WRONLY, {});
  ASSERT_TRUE(d.ok());
  WriteInPieces(B(), d->attr.ino, d->fh, 0, Random(4 * kChunk, 61));
  B().MarkScopeDeleted();
  gate_.Open();
  EXPECT_EQ(ToErrno(B().Write(d->attr.ino, d->fh, 0, "x").status()), ENOENT);
  EXPECT_EQ(ToErrno(B().Flush(d->attr.ino, d->fh)), ENOENT);
  B().Release(d->attr.ino, d->fh);
  // No staging file is left behind for either.
  for (const char* n : {"a", "b"}) {
    const std::string folder = dir_.Sub(std::string("staging-") + n) + "/project/demo";
    if (!std::filesystem::exists(folder)) continue;
    EXPECT_TRUE(std::filesystem::is_empty(folder)) << folder;
  }
}

TEST_F(BackgroundUploadTest, ADaemonStoppingMidUploadKeepsTheDataForTheNextStart) {
  std::unique_ptr<Node> c = MakeNode("c");
  absl::StatusOr<CreateReply> cr = c->fs->Create(kRootInode, "ckpt", 0644, O_WRONLY, {});
  ASSERT_TRUE(cr.ok());
  gate_.Close();
  const std::string data = Random(5 * kChunk + 3, 62);
  WriteInPieces(*c->fs, cr->attr.ino, cr->fh, 0, data);
  ASSERT_TRUE(gate_.WaitForHeld(1));
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gate_.Open();
  });
  c.reset();  // Stops: cancels what has not started, waits for the rest.
  opener.join();
  EXPECT_EQ(Cat(A(), "ckpt"), "");
  c = MakeNode("c");  // Init commits the staged file.
  EXPECT_TRUE(SameBytes(Cat(A(), "ckpt"), data));
}

TEST_F(BackgroundUploadTest, ACommitSendsAgainTheChunksTheServerLostMeanwhile) {
  absl::StatusOr<CreateReply> c = A().Create(kRootInode, "f", 0644, O_WRONLY, {});
  ASSERT_TRUE(c.ok());
  const InodeId ino = c->attr.ino;
  const std::string data = Random(3 * kChunk, 63);
  WriteInPieces(A(), ino, c->fh, 0, data);
  ASSERT_TRUE(WaitForBackground(A(), 3));
  // The collector removes two of them before the commit comes (uploads
  // older than its grace period, or bytes it had listed as garbage).
  ASSERT_TRUE(fake_.chunks().Delete(scope_, ChunkId::Of(ChunkOf(data, 0))).ok());
  ASSERT_TRUE(fake_.chunks().Delete(scope_, ChunkId::Of(ChunkOf(data, 2))).ok());
  ASSERT_TRUE(A().Flush(ino, c->fh).ok());
  A().Release(ino, c->fh);
  EXPECT_EQ(A().Stats().commit_resends, 1u);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), data));
}

TEST_F(BackgroundUploadTest, OffMeansEverythingGoesWithTheCommit) {
  auto node = MakeNodeWith("c", [](FilesystemOptions& o) { o.background_upload = false; });
  const std::string data = Random(4 * kChunk, 64);
  WriteFile(*node->fs, "f", data);
  EXPECT_EQ(node->fs->Stats().background_uploaded_chunks, 0u);
  EXPECT_EQ(node->fs->Stats().uploaded_chunks, 4u);
  EXPECT_TRUE(SameBytes(Cat(B(), "f"), data));
}

}  // namespace
}  // namespace traincache::node
