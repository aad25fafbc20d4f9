// Bad input against a real server: every request below must fail with a clear
// status and change nothing, which each test checks by comparing the scope's
// listing, attributes and usage before and after.
#include <cerrno>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "integration/remote_fs.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace traincache::testing {
namespace {

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(dir_.Sub("data"), dir_.path());
    ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
    client_ = server_->Client();
    fs_ = std::make_unique<RemoteFs>(client_.get(), *Scope::Parse("project:p1"));
    ASSERT_TRUE(fs_->Open().ok());
    auto dir = fs_->Mkdir(kRootInode, "dir");
    ASSERT_TRUE(dir.ok());
    auto file = fs_->Create(dir->ino, "file");
    ASSERT_TRUE(file.ok());
    auto written = fs_->Write(file->ino, "original content");
    ASSERT_TRUE(written.ok()) << written.status();
    dir_ino_ = dir->ino;
    file_ = *written;
    before_ = Snapshot();
  }

  // Everything a bad request could have touched.
  std::string Snapshot() {
    std::string out;
    for (InodeId dir : {kRootInode, dir_ino_}) {
      auto entries = fs_->ReadDirAll(dir, 0, /*plus=*/true);
      EXPECT_TRUE(entries.ok());
      for (const DirEntry& e : *entries) {
        out += fmt::format("{}:{} ino={} v={} size={} nlink={}\n", dir, e.name, e.ino,
                           e.attr->version, e.attr->size, e.attr->nlink);
      }
    }
    auto root = fs_->GetAttr(kRootInode);
    auto dir = fs_->GetAttr(dir_ino_);
    out += fmt::format("root v={} dir v={}\n", root->version, dir->version);
    auto usage = fs_->Usage();
    out += fmt::format("usage {} {} {}\n", usage->used_bytes(), usage->inodes(),
                       usage->quota_bytes());
    auto content = fs_->Read(file_.ino);
    out += content.ok() ? *content : content.status().ToString();
    return out;
  }

  void ExpectUnchanged() { EXPECT_EQ(Snapshot(), before_); }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<rpc::ServerClient> client_;
  std::unique_ptr<RemoteFs> fs_;
  InodeId dir_ino_ = 0;
  InodeAttr file_;
  std::string before_;
};

TEST_F(BadInputTest, MalformedNamesAreRefusedEverywhere) {
  const std::vector<std::pair<std::string, int>> bad = {
      {"", EINVAL},     {".", EINVAL},   {"..", EINVAL}, {"a/b", EINVAL},
      {std::string("a\0b", 3), EINVAL}, {std::string(256, 'x'), ENAMETOOLONG}};
  for (const auto& [name, err] : bad) {
    SCOPED_TRACE(fmt::format("name of {} bytes", name.size()));
    EXPECT_EQ(ToErrno(fs_->Create(dir_ino_, name).status()), err);
    EXPECT_EQ(ToErrno(fs_->Mkdir(dir_ino_, name).status()), err);
    EXPECT_EQ(ToErrno(fs_->Symlink(dir_ino_, name, "target").status()), err);
    EXPECT_EQ(ToErrno(fs_->Link(file_.ino, dir_ino_, name).status()), err);
    EXPECT_EQ(ToErrno(fs_->Rename(dir_ino_, "file", dir_ino_, name)), err);
    if (!name.empty() && name != "." && name != "..") {
      EXPECT_EQ(ToErrno(fs_->Lookup(dir_ino_, name).status()), err);
    }
  }
  ExpectUnchanged();
}

TEST_F(BadInputTest, MalformedScopeIdsAreRefused) {
  for (const std::string& scope :
       {std::string(), std::string("project:"), std::string("project:-x"),
        std::string("project:a/b"), std::string("user:x"), std::string("project:x y"),
        std::string("project:\xc3\xa9"), std::string("team:.."), std::string("project:a:b"),
        // Over-long ids (the limit is 128 bytes), a NUL inside one.
        "project:" + std::string(129, 'a'), "team:" + std::string(4096, 'b'),
        std::string("project:a\0b", 11)}) {
    RemoteFs bad(client_.get(), fs_->scope());
    v1::OpenScopeRequest req;
    req.set_scope(scope);
    req.set_create(true);
    v1::OpenScopeResponse resp;
    absl::Status s = client_->Call(&v1::Namespace::Stub::OpenScope, client_->ns(), req, &resp);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << scope;
  }
  v1::ListScopesResponse scopes;
  ASSERT_TRUE(client_->Call(&v1::Admin::Stub::ListScopes, client_->admin(), {}, &scopes).ok());
  EXPECT_EQ(scopes.scopes_size(), 1);
  ExpectUnchanged();
}

TEST_F(BadInputTest, OverlongAndMalformedIdsInAttachAreRefused) {
  // The 128-byte id is the longest accepted; every refusal is INVALID_ARGUMENT
  // and pins nothing.
  for (const auto& [project, job] :
       std::vector<std::pair<std::string, std::string>>{{std::string(129, 'p'), "job-1"},
                                                        {"p1", std::string(129, 'j')},
                                                        {std::string("p\0x", 3), "job-1"},
                                                        {"p1", "../job"},
                                                        {"p1", "job/1"}}) {
    v1::AttachRequest req;
    req.set_project(project);
    req.set_job_id(job);
    req.set_gpu_type("H100");
    v1::AttachResponse resp;
    EXPECT_EQ(client_->Call(&v1::Cluster::Stub::Attach, client_->cluster(), req, &resp).code(),
              absl::StatusCode::kInvalidArgument)
        << project.size() << " " << job;
  }
  v1::AttachRequest longest;
  longest.set_project(std::string(128, 'p'));
  longest.set_job_id(std::string(128, 'j'));
  longest.set_gpu_type("H100");
  v1::AttachResponse resp;
  EXPECT_TRUE(client_->Call(&v1::Cluster::Stub::Attach, client_->cluster(), longest, &resp).ok());
  ExpectUnchanged();
}

// One tenant's scope names another's inode numbers and chunk ids (guessed,
// or learnt elsewhere): the server answers from the caller's scope only.
TEST_F(BadInputTest, AnotherScopeCannotReachThisScopesInodesOrChunks) {
  auto map = fs_->ChunkMapOf(file_.ino);
  ASSERT_TRUE(map.ok()) << map.status();
  ASSERT_EQ(map->chunks_size(), 1);
  auto id = ChunkId::FromBytes(map->chunks(0).id());
  ASSERT_TRUE(id.ok());
  RemoteFs other(client_.get(), *Scope::Parse("project:other-tenant"));
  ASSERT_TRUE(other.Open().ok());
  EXPECT_EQ(ToErrno(other.GetAttr(file_.ino).status()), ENOENT);
  EXPECT_EQ(ToErrno(other.GetAttr(dir_ino_).status()), ENOENT);
  // A parent unknown in this scope: ESTALE, as for a deleted directory.
  EXPECT_EQ(ToErrno(other.Lookup(dir_ino_, "file").status()), ESTALE);
  EXPECT_FALSE(other.Read(file_.ino).ok());
  EXPECT_EQ(ToErrno(other.ChunkMapOf(file_.ino).status()), ENOENT);
  auto chunk = client_->GetChunk(other.scope(), *id);
  EXPECT_EQ(chunk.status().code(), absl::StatusCode::kNotFound) << chunk.status();
  auto sizes = client_->HasChunks(other.scope(), {*id});
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  EXPECT_EQ((*sizes)[0], -1);
  // Nor can it change them.
  EXPECT_FALSE(other.Create(dir_ino_, "planted").ok());
  EXPECT_FALSE(other.Rename(dir_ino_, "file", kRootInode, "stolen").ok());
  ExpectUnchanged();
}

TEST_F(BadInputTest, ChunkWhoseBytesDoNotMatchItsIdIsNotStored) {
  rpc::ServerClient& c = *client_;
  auto ctx = c.NewContext();
  v1::PutChunksResponse resp;
  auto writer = c.chunks().PutChunks(ctx.get(), &resp);
  std::string claimed = std::string(ChunkId::Of("the real bytes").bytes());
  v1::PutChunksRequest header;
  header.set_scope("project:p1");
  header.mutable_header()->set_id(claimed);
  header.mutable_header()->set_size(14);
  writer->Write(header);
  v1::PutChunksRequest data;
  data.set_data("other bytes!!!");
  writer->Write(data);
  writer->WritesDone();
  absl::Status s = rpc::FromGrpcStatus(writer->Finish());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  v1::HasChunksRequest has;
  has.set_scope("project:p1");
  has.add_ids(claimed);
  v1::HasChunksResponse present;
  ASSERT_TRUE(c.Call(&v1::Chunks::Stub::HasChunks, c.chunks(), has, &present).ok());
  EXPECT_EQ(present.sizes(0), -1);
  ExpectUnchanged();
}

TEST_F(BadInputTest, ChunksForAScopeThatDoesNotExistAreRefused) {
  Scope ghost = *Scope::Parse("project:ghost");
  EXPECT_EQ(client_->PutChunks(ghost, {"orphan bytes"}).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(server_->data_dir() + "/chunks/project/ghost"));
  ExpectUnchanged();
}

TEST_F(BadInputTest, CommitNamingAMissingChunkChangesNothing) {
  v1::CommitRequest commit;
  commit.set_scope("project:p1");
  commit.set_ino(file_.ino);
  commit.set_expected_version(file_.version);
  commit.set_size(100);
  commit.set_chunk_size(kDefaultChunkSize);
  auto* ref = commit.add_chunks();
  ref->set_id(std::string(ChunkId::Of("never uploaded").bytes()));
  ref->set_length(100);
  v1::AttrResponse resp;
  absl::Status s = client_->Call(&v1::Namespace::Stub::CommitContent, client_->ns(), commit, &resp);
  EXPECT_EQ(ToErrno(s), ENOENT) << s;
  ExpectUnchanged();
}

TEST_F(BadInputTest, CommitWithAStaleVersionChangesNothing) {
  auto stale = client_->WriteFile(fs_->scope(), file_.ino, file_.version - 1, "newer content");
  EXPECT_EQ(ToErrno(stale.status()), ESTALE) << stale.status();
  ExpectUnchanged();
}

TEST_F(BadInputTest, MalformedChunkMapsAreRefused) {
  v1::CommitRequest commit;
  commit.set_scope("project:p1");
  commit.set_ino(file_.ino);
  commit.set_expected_version(file_.version);
  commit.set_size(10);
  commit.set_chunk_size(1000);  // not a power of two
  commit.add_chunks()->set_length(10);
  v1::AttrResponse resp;
  EXPECT_EQ(client_->Call(&v1::Namespace::Stub::CommitContent, client_->ns(), commit, &resp).code(),
            absl::StatusCode::kInvalidArgument);
  commit.set_chunk_size(kMinChunkSize);
  commit.mutable_chunks(0)->set_id("short id");
  EXPECT_EQ(client_->Call(&v1::Namespace::Stub::CommitContent, client_->ns(), commit, &resp).code(),
            absl::StatusCode::kInvalidArgument);
  commit.mutable_chunks(0)->clear_id();
  commit.set_size(kMinChunkSize * 5);  // five chunks' worth, one given
  EXPECT_EQ(client_->Call(&v1::Namespace::Stub::CommitContent, client_->ns(), commit, &resp).code(),
            absl::StatusCode::kInvalidArgument);
  ExpectUnchanged();
}

TEST_F(BadInputTest, OversizeMessagesAreRefused) {
  v1::XattrRequest req;
  req.set_scope("project:p1");
  req.set_ino(file_.ino);
  req.set_name("user.big");
  req.set_value(std::string(rpc::kMaxMessageBytes + 1, 'v'));
  v1::Empty empty;
  absl::Status s = client_->Call(&v1::Namespace::Stub::SetXattr, client_->ns(), req, &empty);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  // Under the message limit but over the xattr limit: the store refuses it.
  req.set_value(std::string(kMaxXattrValueBytes + 1, 'v'));
  s = client_->Call(&v1::Namespace::Stub::SetXattr, client_->ns(), req, &empty);
  EXPECT_FALSE(s.ok());
  // A chunk header over the chunk size limit.
  auto ctx = client_->NewContext();
  v1::PutChunksResponse put;
  auto writer = client_->chunks().PutChunks(ctx.get(), &put);
  v1::PutChunksRequest header;
  header.set_scope("project:p1");
  header.mutable_header()->set_id(std::string(ChunkId::Of("x").bytes()));
  header.mutable_header()->set_size(kMaxChunkSize + 1);
  writer->Write(header);
  writer->WritesDone();
  EXPECT_EQ(rpc::FromGrpcStatus(writer->Finish()).code(), absl::StatusCode::kInvalidArgument);
  v1::XattrRequest get;
  get.set_scope("project:p1");
  get.set_ino(file_.ino);
  get.set_name("user.big");
  v1::XattrResponse value;
  EXPECT_EQ(ToErrno(client_->Call(&v1::Namespace::Stub::GetXattr, client_->ns(), get, &value)),
            ENODATA);
  ExpectUnchanged();
}

TEST_F(BadInputTest, MissingOrWrongTokenIsUnauthenticated) {
  for (const std::string& token : {std::string(), std::string("wrong-token-0123456789"),
                                   server_->token() + "x"}) {
    auto client = server_->ClientWithToken(token);
    RemoteFs fs(client.get(), fs_->scope());
    EXPECT_EQ(fs.Create(kRootInode, "intruder").status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(fs.Read(file_.ino).status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(client->PutChunks(fs_->scope(), {"intruder bytes"}).code(),
              absl::StatusCode::kUnauthenticated);
    v1::ScopeRef ref;
    ref.set_scope("project:p1");
    v1::DeleteScopeResponse resp;
    EXPECT_EQ(client->Call(&v1::Admin::Stub::DeleteScope, client->admin(), ref, &resp).code(),
              absl::StatusCode::kUnauthenticated);
  }
  ExpectUnchanged();
}

}  // namespace
}  // namespace traincache::testing
