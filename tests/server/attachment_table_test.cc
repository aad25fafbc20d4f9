// The attachment table of require_attached_scopes over the std::map
// backend: which scopes a node identity may use as its jobs attach and
// detach, what a reload from the store (a server restart) brings back, the
// record encoding, and the config key's rule.
#include "server/attachment_table.h"

#include <gtest/gtest.h>

#include "meta/attachment_store.h"
#include "meta/kv_backend.h"
#include "server/config.h"

namespace traincache::server {
namespace {

Scope S(const std::string& text) { return *Scope::Parse(text); }

// The table, and a way to reopen it over the same backend (a restart).
class AttachmentTableTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    table_.reset();
    auto opened = AttachmentTable::Open(std::make_unique<meta::AttachmentStore>(
        std::unique_ptr<meta::KvBackend>(new SharedBackend(backend_.get()))));
    ASSERT_TRUE(opened.ok()) << opened.status();
    table_ = *std::move(opened);
  }

  // Lets each reopened store use the one backend the test keeps.
  class SharedBackend : public meta::KvBackend {
   public:
    explicit SharedBackend(meta::KvBackend* b) : b_(b) {}
    std::unique_ptr<meta::KvView> NewSnapshot() override { return b_->NewSnapshot(); }
    meta::KvView& Latest() override { return b_->Latest(); }
    absl::StatusOr<uint64_t> Write(const meta::KvBatch& batch) override { return b_->Write(batch); }
    absl::Status WaitDurable(uint64_t token) override { return b_->WaitDurable(token); }
    uint64_t LastToken() override { return b_->LastToken(); }

   private:
    meta::KvBackend* b_;
  };

  std::unique_ptr<meta::KvBackend> backend_ = meta::NewMemoryKvBackend();
  std::unique_ptr<AttachmentTable> table_;
};

TEST_F(AttachmentTableTest, NothingIsAllowedBeforeAnAttach) {
  EXPECT_FALSE(table_->Allows("node-a", S("project:p1")));
  EXPECT_EQ(table_->jobs(), 0u);
}

TEST_F(AttachmentTableTest, AttachAllowsTheJobsScopesToThatIdentityOnly) {
  ASSERT_TRUE(table_->Attach("node-a", "j1", {S("project:p1"), S("team:t1")}).ok());
  EXPECT_TRUE(table_->Allows("node-a", S("project:p1")));
  EXPECT_TRUE(table_->Allows("node-a", S("team:t1")));
  EXPECT_FALSE(table_->Allows("node-a", S("project:p2")));
  // Same id, other kind: another scope.
  EXPECT_FALSE(table_->Allows("node-a", S("team:p1")));
  EXPECT_FALSE(table_->Allows("node-b", S("project:p1")));
  EXPECT_FALSE(table_->Allows("", S("project:p1")));
}

TEST_F(AttachmentTableTest, DetachKeepsScopesAnotherJobOfTheNodeStillUses) {
  ASSERT_TRUE(table_->Attach("node-a", "j1", {S("project:p1"), S("team:t1")}).ok());
  ASSERT_TRUE(table_->Attach("node-a", "j2", {S("project:p1")}).ok());
  // The same job id on another node (a multi-node job) is another attachment.
  ASSERT_TRUE(table_->Attach("node-b", "j1", {S("project:p1")}).ok());

  auto d = table_->Detach("node-a", "j1");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->existed);
  ASSERT_EQ(d->released.size(), 1u);
  EXPECT_EQ(d->released[0], S("team:t1"));
  EXPECT_TRUE(table_->Allows("node-a", S("project:p1")));
  EXPECT_FALSE(table_->Allows("node-a", S("team:t1")));
  EXPECT_TRUE(table_->Allows("node-b", S("project:p1")));

  d = table_->Detach("node-a", "j2");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->released.size(), 1u);
  EXPECT_FALSE(table_->Allows("node-a", S("project:p1")));
  EXPECT_TRUE(table_->Allows("node-b", S("project:p1")));
}

TEST_F(AttachmentTableTest, DetachIsIdempotent) {
  ASSERT_TRUE(table_->Attach("node-a", "j1", {S("project:p1")}).ok());
  ASSERT_TRUE(table_->Detach("node-a", "j1").ok());
  auto again = table_->Detach("node-a", "j1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->existed);
  EXPECT_TRUE(again->released.empty());
  auto never = table_->Detach("node-z", "nope");
  ASSERT_TRUE(never.ok());
  EXPECT_FALSE(never->existed);
}

TEST_F(AttachmentTableTest, AttachingAJobAgainWithOtherScopesReplacesThem) {
  ASSERT_TRUE(table_->Attach("node-a", "j1", {S("project:p1"), S("team:t1")}).ok());
  ASSERT_TRUE(table_->Attach("node-a", "j1", {S("project:p1")}).ok());
  EXPECT_TRUE(table_->Allows("node-a", S("project:p1")));
  EXPECT_FALSE(table_->Allows("node-a", S("team:t1")));
  EXPECT_EQ(table_->jobs(), 1u);
  ASSERT_TRUE(table_->Detach("node-a", "j1").ok());
  EXPECT_FALSE(table_->Allows("node-a", S("project:p1")));
}

TEST_F(AttachmentTableTest, AReopenedTableHasWhatWasAttachedAndNotDetached) {
  ASSERT_TRUE(table_->Attach("node-a", "j1", {S("project:p1"), S("team:t1")}).ok());
  ASSERT_TRUE(table_->Attach("node-a", "j2", {S("project:p2")}).ok());
  ASSERT_TRUE(table_->Attach("node/b with spaces", "j3", {S("project:p3")}).ok());
  ASSERT_TRUE(table_->Detach("node-a", "j2").ok());
  Reopen();
  EXPECT_EQ(table_->jobs(), 2u);
  EXPECT_EQ(table_->identities(), 2u);
  EXPECT_TRUE(table_->Allows("node-a", S("project:p1")));
  EXPECT_TRUE(table_->Allows("node-a", S("team:t1")));
  EXPECT_FALSE(table_->Allows("node-a", S("project:p2")));
  EXPECT_TRUE(table_->Allows("node/b with spaces", S("project:p3")));
  // The counts came back too: one detach releases what one job held.
  auto d = table_->Detach("node-a", "j1");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->released.size(), 2u);
  EXPECT_FALSE(table_->Allows("node-a", S("project:p1")));
}

TEST_F(AttachmentTableTest, IdentitiesAreKeptApartWhateverTheirBytes) {
  // Without the length byte "ab"+"cj" and "abc"+"j" would be one key.
  ASSERT_TRUE(table_->Attach("ab", "cj", {S("project:p1")}).ok());
  ASSERT_TRUE(table_->Attach("abc", "j", {S("project:p2")}).ok());
  Reopen();
  EXPECT_TRUE(table_->Allows("ab", S("project:p1")));
  EXPECT_FALSE(table_->Allows("ab", S("project:p2")));
  EXPECT_TRUE(table_->Allows("abc", S("project:p2")));
  EXPECT_FALSE(table_->Allows("abc", S("project:p1")));
}

TEST_F(AttachmentTableTest, BadIdentitiesAreRefusedAndChangeNothing) {
  EXPECT_EQ(table_->Attach("", "j1", {S("project:p1")}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_->Attach(std::string(256, 'n'), "j1", {S("project:p1")}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_->jobs(), 0u);
  Reopen();
  EXPECT_EQ(table_->jobs(), 0u);
}

TEST_F(AttachmentTableTest, ACorruptRecordStopsTheOpenWithDataLoss) {
  ASSERT_TRUE(table_->Attach("node-a", "j1", {S("project:p1")}).ok());
  meta::KvBatch batch;
  batch.Put(*meta::AttachmentStore::Key("node-a", "j1"), std::string("\x01\x01\x05nope!", 8));
  ASSERT_TRUE(backend_->Write(batch).ok());
  auto opened = AttachmentTable::Open(std::make_unique<meta::AttachmentStore>(
      std::unique_ptr<meta::KvBackend>(new SharedBackend(backend_.get()))));
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss) << opened.status();
}

TEST(AttachmentStoreTest, RecordsRoundTrip) {
  meta::AttachmentRecord r{.identity = "gpu-node-17",
                           .job_id = "job-1",
                           .scopes = {S("project:p1"), S("team:t1")}};
  auto key = meta::AttachmentStore::Key(r.identity, r.job_id);
  ASSERT_TRUE(key.ok());
  auto back = meta::AttachmentStore::Decode(*key, meta::AttachmentStore::EncodeValue(r.scopes));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, r);
  // Truncated or padded values are DATA_LOSS, not garbage.
  std::string value = meta::AttachmentStore::EncodeValue(r.scopes);
  EXPECT_EQ(meta::AttachmentStore::Decode(*key, value.substr(0, value.size() - 1)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(meta::AttachmentStore::Decode(*key, value + "x").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(AttachedScopesConfigTest, RequireAttachedScopesNeedsAClientCa) {
  auto c = ParseServerConfig(
      "data_dir = \"/d\"\ntoken = \"0123456789abcdef0123\"\nrequire_attached_scopes = true\n"
      "tls_cert_file = \"/s.crt\"\ntls_key_file = \"/s.key\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->require_attached_scopes);
  auto f = FinalizeServerConfig(*c);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("'require_attached_scopes'"), std::string::npos)
      << f.status();
  c->tls_client_ca_file = "/ca.crt";
  EXPECT_TRUE(FinalizeServerConfig(*c).ok());
  EXPECT_FALSE(ParseServerConfig("require_attached_scopes = 1\n").ok());
  EXPECT_FALSE(ServerConfig{}.require_attached_scopes);
}

}  // namespace
}  // namespace traincache::server
