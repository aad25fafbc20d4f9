// Integration tests against a real traincache-server process over gRPC on a
// Unix socket: the namespace, content, atomic rename, pagination, scope
// deletion down to RocksDB keys and chunk files, and durability across kill -9.
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "integration/leftovers.h"
#include "integration/remote_fs.h"
#include "meta/key_codec.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "traincache/status.h"

namespace traincache::testing {
namespace {

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng());
  return out;
}

Scope MustScope(const std::string& text) { return *Scope::Parse(text); }

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Loopback TCP, as nodes reach the server.
    server_ = std::make_unique<ServerProcess>(dir_.Sub("data"), dir_.path(), FreeLoopbackAddress());
    ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
    client_ = server_->Client();
    fs_ = std::make_unique<RemoteFs>(client_.get(), MustScope("project:p1"));
    ASSERT_TRUE(fs_->Open().ok());
  }
  void TearDown() override {
    fs_.reset();
    client_.reset();
    if (server_->running()) {
      int status = server_->Stop();
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "server did not exit cleanly on SIGTERM: " << status;
    }
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<rpc::ServerClient> client_;
  std::unique_ptr<RemoteFs> fs_;
};

TEST_F(ServerTest, BuildsATree) {
  auto a = fs_->Mkdir(kRootInode, "a");
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = fs_->Mkdir(a->ino, "b");
  ASSERT_TRUE(b.ok());
  auto f = fs_->Create(b->ino, "f.txt");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(S_ISREG(f->mode));
  EXPECT_EQ(f->mode & 07777, 0644u);

  auto looked = fs_->Lookup(b->ino, "f.txt");
  ASSERT_TRUE(looked.ok());
  EXPECT_EQ(looked->ino, f->ino);
  auto root_entries = fs_->ReadDirAll(kRootInode);
  ASSERT_TRUE(root_entries.ok());
  ASSERT_EQ(root_entries->size(), 1u);
  EXPECT_EQ((*root_entries)[0].name, "a");
  EXPECT_TRUE(S_ISDIR((*root_entries)[0].type));
  auto a_attr = fs_->GetAttr(a->ino);
  ASSERT_TRUE(a_attr.ok());
  EXPECT_EQ(a_attr->nlink, 3u);  // ".", its entry in root, "b/.."

  EXPECT_EQ(ToErrno(fs_->Create(b->ino, "f.txt", /*exclusive=*/true).status()), EEXIST);
  EXPECT_EQ(ToErrno(fs_->Lookup(b->ino, "missing").status()), ENOENT);
  v1::RmdirRequest rmdir;
  rmdir.set_scope("project:p1");
  rmdir.set_parent(kRootInode);
  rmdir.set_name("a");
  v1::Empty empty;
  EXPECT_EQ(ToErrno(client_->Call(&v1::Namespace::Stub::Rmdir, client_->ns(), rmdir, &empty)),
            ENOTEMPTY);
}

// A directory replaced on another node: names looked up, made or removed in
// the old one are ESTALE (the kernel then looks the directory up again), a
// name missing from a live directory stays ENOENT.
TEST_F(ServerTest, NameOperationsInAGoneDirectoryAreStale) {
  auto d = fs_->Mkdir(kRootInode, "out");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(fs_->Create(d->ino, "f").ok());
  ASSERT_TRUE(fs_->Unlink(d->ino, "f").ok());
  ASSERT_TRUE(fs_->Rename(kRootInode, "out", kRootInode, "old").ok());
  auto replacement = fs_->Mkdir(kRootInode, "out");
  ASSERT_TRUE(replacement.ok());
  EXPECT_EQ(ToErrno(fs_->Lookup(replacement->ino, "missing").status()), ENOENT);
  // Remove the old directory: its inode is gone now.
  v1::RmdirRequest rm;
  rm.set_scope(fs_->scope().ToString());
  rm.set_parent(kRootInode);
  rm.set_name("old");
  v1::Empty empty;
  ASSERT_TRUE(client_->Call(&v1::Namespace::Stub::Rmdir, client_->ns(), rm, &empty).ok());
  EXPECT_EQ(ToErrno(fs_->Lookup(d->ino, "g").status()), ESTALE);
  EXPECT_EQ(ToErrno(fs_->Create(d->ino, "g").status()), ESTALE);
  EXPECT_EQ(ToErrno(fs_->Mkdir(d->ino, "s").status()), ESTALE);
  EXPECT_EQ(ToErrno(fs_->Unlink(d->ino, "g")), ESTALE);
  EXPECT_EQ(ToErrno(fs_->Rename(kRootInode, "out", d->ino, "x")), ESTALE);
  EXPECT_EQ(ToErrno(fs_->Rename(kRootInode, "nope", kRootInode, "x")), ENOENT);
}

TEST_F(ServerTest, WritesChunksAndReadsBackByteForByte) {
  auto f = fs_->Create(kRootInode, "data.bin");
  ASSERT_TRUE(f.ok());
  // 3.5 chunks of 1 MiB: the last chunk is short.
  std::string data = RandomBytes((7u << 20) / 2, 1);
  auto written = fs_->Write(f->ino, data, 1u << 20);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->size, data.size());
  EXPECT_GT(written->version, f->version);
  auto back = fs_->Read(f->ino);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == data);

  auto map = fs_->ChunkMapOf(f->ino);
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(map->chunks_size(), 4);
  EXPECT_EQ(map->chunks(3).length(), 512u << 10);
  // A range inside one chunk, fetched directly.
  auto id = ChunkId::FromBytes(map->chunks(1).id());
  ASSERT_TRUE(id.ok());
  auto range = client_->GetChunk(fs_->scope(), *id, 1000, 5000);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(*range, data.substr((1u << 20) + 1000, 5000));

  auto usage = fs_->Usage();
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->used_bytes(), data.size());
  EXPECT_GE(server_->Counter("chunk.put.count"), 4u);
}

TEST_F(ServerTest, RenameOverExistingFileIsAtomicForAConcurrentReader) {
  const std::string a = RandomBytes(300'000, 2), b = RandomBytes(200'000, 3);
  auto target = fs_->Create(kRootInode, "target");
  ASSERT_TRUE(target.ok());
  ASSERT_TRUE(fs_->Write(target->ino, a, kMinChunkSize).ok());

  std::atomic<bool> done{false};
  std::atomic<int> reads{0}, bad{0};
  std::thread reader([&] {
    auto client = server_->Client();
    RemoteFs fs(client.get(), fs_->scope());
    while (!done) {
      auto attr = fs.Lookup(kRootInode, "target");
      if (!attr.ok()) {
        ++bad;  // The name must always exist.
        continue;
      }
      auto content = fs.Read(attr->ino);
      // The inode may be replaced (and freed) between lookup and read: then
      // NOT_FOUND is fine, a mixed or empty content is not.
      if (content.ok() && *content != a && *content != b) ++bad;
      ++reads;
    }
  });
  for (int i = 0; i < 30; ++i) {
    std::string name = "tmp" + std::to_string(i);
    auto tmp = fs_->Create(kRootInode, name);
    ASSERT_TRUE(tmp.ok());
    ASSERT_TRUE(fs_->Write(tmp->ino, i % 2 ? a : b, kMinChunkSize).ok());
    ASSERT_TRUE(fs_->Rename(kRootInode, name, kRootInode, "target").ok());
  }
  done = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
  auto final_attr = fs_->Lookup(kRootInode, "target");
  ASSERT_TRUE(final_attr.ok());
  EXPECT_EQ(*fs_->Read(final_attr->ino), a);  // i = 29 wrote a
  auto entries = fs_->ReadDirAll(kRootInode);
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), 1u);  // every tmp was renamed away
}

TEST_F(ServerTest, RenameFlags) {
  ASSERT_TRUE(fs_->Create(kRootInode, "x").ok());
  auto y = fs_->Create(kRootInode, "y");
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(ToErrno(fs_->Rename(kRootInode, "x", kRootInode, "y", kRenameNoReplace)), EEXIST);
  auto x = fs_->Lookup(kRootInode, "x");
  ASSERT_TRUE(fs_->Rename(kRootInode, "x", kRootInode, "y", kRenameExchange).ok());
  EXPECT_EQ(fs_->Lookup(kRootInode, "y")->ino, x->ino);
  EXPECT_EQ(fs_->Lookup(kRootInode, "x")->ino, y->ino);
  auto d = fs_->Mkdir(kRootInode, "d");
  ASSERT_TRUE(d.ok());
  auto sub = fs_->Mkdir(d->ino, "sub");
  EXPECT_EQ(ToErrno(fs_->Rename(kRootInode, "d", sub->ino, "loop")), EINVAL);
}

TEST_F(ServerTest, HardlinksAndSymlinks) {
  auto dir = fs_->Mkdir(kRootInode, "blobs");
  auto snap = fs_->Mkdir(kRootInode, "snapshots");
  ASSERT_TRUE(dir.ok() && snap.ok());
  auto blob = fs_->Create(dir->ino, "etag1");
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE(fs_->Write(blob->ino, "weights").ok());

  auto linked = fs_->Link(blob->ino, snap->ino, "hard");
  ASSERT_TRUE(linked.ok()) << linked.status();
  EXPECT_EQ(linked->nlink, 2u);
  EXPECT_EQ(fs_->Lookup(snap->ino, "hard")->ino, blob->ino);
  EXPECT_EQ(ToErrno(fs_->Link(dir->ino, snap->ino, "dirlink").status()), EPERM);

  auto sym = fs_->Symlink(snap->ino, "model.bin", "../blobs/etag1");
  ASSERT_TRUE(sym.ok());
  EXPECT_TRUE(S_ISLNK(sym->mode));
  EXPECT_EQ(sym->size, std::string("../blobs/etag1").size());
  EXPECT_EQ(*fs_->ReadLink(sym->ino), "../blobs/etag1");

  // Unlinking one name keeps the content reachable through the other.
  ASSERT_TRUE(fs_->Unlink(dir->ino, "etag1").ok());
  EXPECT_EQ(fs_->GetAttr(blob->ino)->nlink, 1u);
  EXPECT_EQ(*fs_->Read(blob->ino), "weights");
}

TEST_F(ServerTest, ReadDirOf10000EntriesThroughPagination) {
  auto dir = fs_->Mkdir(kRootInode, "big");
  ASSERT_TRUE(dir.ok());
  constexpr int kFiles = 10'000, kThreads = 8;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto client = server_->Client();
      RemoteFs fs(client.get(), fs_->scope());
      for (int i = t; i < kFiles; i += kThreads) {
        if (!fs.Create(dir->ino, fmt::format("file-{:05d}", i)).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);

  int pages = 0;
  auto entries = fs_->ReadDirAll(dir->ino, 1000, /*plus=*/false, &pages);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), static_cast<size_t>(kFiles));
  EXPECT_GE(pages, 10);
  std::set<std::string> names;
  std::set<InodeId> inos;
  for (const DirEntry& e : *entries) {
    names.insert(e.name);
    inos.insert(e.ino);
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(kFiles));
  EXPECT_EQ(inos.size(), static_cast<size_t>(kFiles));
  EXPECT_EQ(*names.begin(), "file-00000");
  EXPECT_EQ(*names.rbegin(), "file-09999");

  auto plus = fs_->ReadDirAll(dir->ino, 4096, /*plus=*/true);
  ASSERT_TRUE(plus.ok());
  ASSERT_EQ(plus->size(), static_cast<size_t>(kFiles));
  for (const DirEntry& e : *plus) {
    ASSERT_TRUE(e.attr.has_value());
    EXPECT_EQ(e.attr->ino, e.ino);
  }
}

TEST_F(ServerTest, DeleteScopeLeavesNoKeysAndNoChunkFiles) {
  Scope doomed = MustScope("project:doomed");
  RemoteFs fs(client_.get(), doomed);
  ASSERT_TRUE(fs.Open().ok());
  auto d = fs.Mkdir(kRootInode, "d");
  for (int i = 0; i < 5; ++i) {
    auto f = fs.Create(d->ino, "f" + std::to_string(i));
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(fs.Write(f->ino, RandomBytes(200'000, i), kMinChunkSize).ok());
  }
  // The neighbour scope must survive the deletion untouched.
  auto keep = fs_->Create(kRootInode, "keep");
  ASSERT_TRUE(fs_->Write(keep->ino, "still here").ok());

  client_.reset();
  ASSERT_TRUE(server_->Stop() == 0);
  Leftovers before = LeftoversOf(server_->data_dir(), doomed);
  EXPECT_GT(before.keys, 10u);
  EXPECT_GT(before.chunk_files, 10u);
  ASSERT_TRUE(server_->Start().ok());
  client_ = server_->Client();

  v1::ScopeRef ref;
  ref.set_scope("project:doomed");
  v1::DeleteScopeResponse resp;
  ASSERT_TRUE(client_->Call(&v1::Admin::Stub::DeleteScope, client_->admin(), ref, &resp).ok());
  EXPECT_EQ(resp.chunks_deleted(), before.chunk_files);
  RemoteFs after_fs(client_.get(), doomed);
  EXPECT_EQ(ToErrno(after_fs.Open(/*create=*/false).status()), ENOENT);

  client_.reset();
  ASSERT_TRUE(server_->Stop() == 0);
  Leftovers after = LeftoversOf(server_->data_dir(), doomed);
  EXPECT_EQ(after.keys, 0u);
  EXPECT_EQ(after.chunk_files, 0u);
  Leftovers neighbour = LeftoversOf(server_->data_dir(), fs_->scope());
  EXPECT_GT(neighbour.keys, 0u);
  ASSERT_TRUE(server_->Start().ok());
  client_ = server_->Client();
  RemoteFs p1(client_.get(), fs_->scope());
  EXPECT_EQ(*p1.Read(p1.Lookup(kRootInode, "keep")->ino), "still here");
}

TEST_F(ServerTest, AcknowledgedCommitSurvivesKillMinus9) {
  auto f = fs_->Create(kRootInode, "ckpt.pt");
  ASSERT_TRUE(f.ok());
  std::string data = RandomBytes(5u << 20, 4);
  auto written = fs_->Write(f->ino, data, 1u << 20);
  ASSERT_TRUE(written.ok());
  ASSERT_TRUE(fs_->Mkdir(kRootInode, "after-commit").ok());
  server_->Kill();  // SIGKILL right after the acknowledgements.

  ASSERT_TRUE(server_->Start().ok());
  client_ = server_->Client();
  RemoteFs fs(client_.get(), fs_->scope());
  auto attr = fs.Lookup(kRootInode, "ckpt.pt");
  ASSERT_TRUE(attr.ok()) << attr.status();
  EXPECT_EQ(attr->size, data.size());
  EXPECT_EQ(attr->version, written->version);
  EXPECT_EQ(attr->mtime, written->mtime);
  auto back = fs.Read(attr->ino);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == data);
  EXPECT_TRUE(fs.Lookup(kRootInode, "after-commit").ok());
}

// Namespace changes return before their disk sync (metadata_sync =
// content-commits, the default), but they are written to the OS first: a
// crash of the server process loses none of them.
TEST_F(ServerTest, NamespaceChangesWithoutACommitSurviveKillMinus9) {
  auto dir = fs_->Mkdir(kRootInode, "d");
  ASSERT_TRUE(dir.ok()) << dir.status();
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(fs_->Create(dir->ino, "f" + std::to_string(i)).ok());
  }
  ASSERT_TRUE(fs_->Rename(dir->ino, "f0", kRootInode, "moved").ok());
  ASSERT_TRUE(fs_->Unlink(dir->ino, "f1").ok());
  ASSERT_TRUE(fs_->Symlink(kRootInode, "link", "d/f2").ok());
  server_->Kill();

  ASSERT_TRUE(server_->Start().ok());
  client_ = server_->Client();
  RemoteFs fs(client_.get(), fs_->scope());
  auto entries = fs.ReadDirAll(dir->ino);
  ASSERT_TRUE(entries.ok()) << entries.status();
  std::set<std::string> names;
  for (const DirEntry& e : *entries) {
    if (e.name != "." && e.name != "..") names.insert(e.name);
  }
  EXPECT_EQ(names.size(), 48u);  // f2..f49.
  EXPECT_TRUE(names.count("f49"));
  EXPECT_FALSE(names.count("f0"));
  EXPECT_FALSE(names.count("f1"));
  EXPECT_TRUE(fs.Lookup(kRootInode, "moved").ok());
  auto link = fs.Lookup(kRootInode, "link");
  ASSERT_TRUE(link.ok());
  EXPECT_EQ(*fs.ReadLink(link->ino), "d/f2");
}

TEST_F(ServerTest, ACopyOfAnAppliedRequestGetsTheRecordedAnswerAcrossKillMinus9) {
  auto f = fs_->Create(kRootInode, "f");
  ASSERT_TRUE(f.ok()) << f.status();
  v1::UnlinkRequest unlink;
  unlink.set_scope("project:p1");
  unlink.set_parent(kRootInode);
  unlink.set_name("f");
  unlink.mutable_request()->set_client("node-x:1:feed");
  unlink.mutable_request()->set_seq(9);
  v1::UnlinkResponse first;
  ASSERT_TRUE(client_->Call(&v1::Namespace::Stub::Unlink, client_->ns(), unlink, &first).ok());
  EXPECT_EQ(first.ino(), f->ino);
  v1::CreateRequest create;
  create.set_scope("project:p1");
  create.set_parent(kRootInode);
  create.set_name("x");
  create.set_mode(0600);
  create.set_exclusive(true);
  create.mutable_request()->set_client("node-x:1:feed");
  create.mutable_request()->set_seq(10);
  v1::CreateResponse made;
  ASSERT_TRUE(client_->Call(&v1::Namespace::Stub::Create, client_->ns(), create, &made).ok());
  ASSERT_TRUE(made.created());

  // The answers were lost with the server; the copies come to the new one.
  server_->Kill();
  ASSERT_TRUE(server_->Start().ok());
  client_ = server_->Client();
  v1::UnlinkResponse again;
  absl::Status st = client_->Call(&v1::Namespace::Stub::Unlink, client_->ns(), unlink, &again);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  v1::CreateResponse made_again;
  st = client_->Call(&v1::Namespace::Stub::Create, client_->ns(), create, &made_again);
  ASSERT_TRUE(st.ok()) << st;  // O_EXCL: the file it made, not EEXIST.
  EXPECT_EQ(made_again.SerializeAsString(), made.SerializeAsString());

  // Without the id (or with another) the same calls are new calls.
  unlink.mutable_request()->set_seq(11);
  EXPECT_EQ(ErrnoOf(client_->Call(&v1::Namespace::Stub::Unlink, client_->ns(), unlink, &again)),
            ENOENT);
  create.clear_request();
  EXPECT_EQ(ErrnoOf(client_->Call(&v1::Namespace::Stub::Create, client_->ns(), create, &made_again)),
            EEXIST);
}

TEST_F(ServerTest, GarbageCollectionDeletesReplacedChunksAndKeepsFreshUploads) {
  auto f = fs_->Create(kRootInode, "f");
  const std::string old_data = RandomBytes(3 * kMinChunkSize, 7);
  ASSERT_TRUE(fs_->Write(f->ino, old_data, kMinChunkSize).ok());
  ASSERT_TRUE(fs_->Write(f->ino, RandomBytes(kMinChunkSize, 8), kMinChunkSize).ok());
  // Uploaded, never committed: within the grace period it must survive.
  const std::string pending = RandomBytes(1000, 9);
  ASSERT_TRUE(client_->PutChunks(fs_->scope(), {pending}).ok());

  v1::ScopeRef ref;
  ref.set_scope("project:p1");
  v1::CollectGarbageResponse resp;
  ASSERT_TRUE(client_->Call(&v1::Admin::Stub::CollectGarbage, client_->admin(), ref, &resp).ok());
  EXPECT_EQ(resp.chunks_deleted(), 3u);  // the three chunks of the first version
  for (size_t i = 0; i < 3; ++i) {
    std::string piece = old_data.substr(i * kMinChunkSize, kMinChunkSize);
    EXPECT_EQ(client_->GetChunk(fs_->scope(), ChunkId::Of(piece)).status().code(),
              absl::StatusCode::kNotFound);
  }
  EXPECT_TRUE(client_->GetChunk(fs_->scope(), ChunkId::Of(pending)).ok());
  EXPECT_EQ(fs_->Read(f->ino)->size(), kMinChunkSize);
}

TEST_F(ServerTest, QuotaIsEnforcedAtCommit) {
  v1::SetQuotaRequest set;
  set.set_scope("project:p1");
  set.set_quota_bytes(1'000'000);
  v1::QuotaResponse q;
  ASSERT_TRUE(client_->Call(&v1::Admin::Stub::SetQuota, client_->admin(), set, &q).ok());
  auto f = fs_->Create(kRootInode, "f");
  ASSERT_TRUE(fs_->Write(f->ino, RandomBytes(600'000, 5), kMinChunkSize).ok());
  auto g = fs_->Create(kRootInode, "g");
  auto over = fs_->Write(g->ino, RandomBytes(600'000, 6), kMinChunkSize);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ToErrno(over.status()), EDQUOT);
  EXPECT_EQ(fs_->GetAttr(g->ino)->size, 0u);
  EXPECT_EQ(fs_->Usage()->used_bytes(), 600'000u);
}

}  // namespace
}  // namespace traincache::testing
