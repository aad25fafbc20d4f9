// The change feed end to end (issue 6): node B caches entries and attributes
// for the long metadata TTL (30 s) while it follows the server's WatchScope
// stream, and still sees what node A creates, renames, removes, overwrites
// and chmods within a few seconds (in practice milliseconds: the time is
// printed); a server that goes away breaks the feed, and B falls back and
// follows again once it is back; the stream checks tokens, node ids and
// scopes, and carries one scope's changes only.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "integration/mount_fixture.h"
#include "integration/remote_fs.h"
#include "traincache/v1/namespace.grpc.pb.h"

namespace traincache::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// How long another node's change may take to reach B: far below the 30 s B
// caches entries for, and loose enough for a loaded 2-core machine.
constexpr auto kBound = std::chrono::seconds(3);

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Polls `cond` every 2 ms until it holds or `timeout` passes; the time it
// took, or a negative number if it never held.
template <typename Cond>
double SecondsUntil(Cond cond, Clock::duration timeout = kBound) {
  const Clock::time_point start = Clock::now();
  while (Clock::now() - start < timeout) {
    if (cond()) return SecondsSince(start);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return cond() ? SecondsSince(start) : -1;
}

// stat(2): 0 and `st`, or the errno.
int Stat(const std::string& path, struct stat* st) {
  return stat(path.c_str(), st) == 0 ? 0 : errno;
}

class FeedTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_GE(SecondsUntil([&] { return Following(*a_) && Following(*b_); },
                           std::chrono::seconds(10)),
              0)
        << "the nodes do not follow the change feed; see " << b_->log_file();
  }

  uint64_t Count(NodeProcess& node, const std::string& what) {
    return node.Counters()["scope." + scope_.ToString() + "." + what];
  }
  bool Following(NodeProcess& node) { return Count(node, "feed_following") == 1; }
  // The server's namespace reads so far (what a stat not answered from a
  // cache costs).
  uint64_t ServerReads() {
    return server_->Counter("rpc.Lookup") + server_->Counter("rpc.GetAttr");
  }
};

TEST_F(FeedTest, ChangesOnAReachBWhoseEntriesAreCachedLong) {
  ASSERT_TRUE(fs::create_directories(A("d")));
  for (const char* name : {"keep", "gone", "old", "new", "over"}) {
    ASSERT_EQ(WriteFile(A(std::string("d/") + name), name), 0);
  }
  // Until those changes have reached B, what B looks up is cached briefly
  // (it may predate them): let them arrive.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // B looks everything up, then keeps it past the 1 s short time without
  // asking the server again.
  struct stat st {};
  for (const char* name : {"keep", "gone", "old", "new", "over"}) {
    ASSERT_EQ(Stat(B(std::string("d/") + name), &st), 0) << name;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const uint64_t reads = ServerReads();
  for (const char* name : {"keep", "gone", "old", "new", "over"}) {
    ASSERT_EQ(Stat(B(std::string("d/") + name), &st), 0) << name;
  }
  EXPECT_EQ(ServerReads(), reads) << "B's stats were not answered from its kernel's cache";

  // A changes each of them.
  const std::string bigger = RandomBytes(300'000, 7);
  ASSERT_EQ(WriteFile(A("d/over"), bigger), 0);
  ASSERT_EQ(unlink(A("d/gone").c_str()), 0);
  ASSERT_EQ(rename(A("d/new").c_str(), A("d/old").c_str()), 0);
  ASSERT_EQ(chmod(A("d/keep").c_str(), 0600), 0);
  ASSERT_EQ(mkdir(A("d/sub").c_str(), 0755), 0);
  struct stat moved {};
  ASSERT_EQ(Stat(A("d/old"), &moved), 0);
  const Clock::time_point changed = Clock::now();

  double worst = 0;
  auto expect_soon = [&](const char* what, auto cond) {
    double took = SecondsUntil(cond);
    EXPECT_GE(took, 0) << what << " did not reach B within " << kBound.count() << " s";
    worst = std::max(worst, took);
  };
  expect_soon("the overwrite's size", [&] {
    return Stat(B("d/over"), &st) == 0 && st.st_size == static_cast<off_t>(bigger.size());
  });
  expect_soon("the unlink", [&] { return Stat(B("d/gone"), &st) == ENOENT; });
  expect_soon("the rename's source", [&] { return Stat(B("d/new"), &st) == ENOENT; });
  expect_soon("the rename's target", [&] {
    return Stat(B("d/old"), &st) == 0 && st.st_ino == moved.st_ino && st.st_size == 3;
  });
  expect_soon("the chmod", [&] {
    return Stat(B("d/keep"), &st) == 0 && (st.st_mode & 07777) == 0600;
  });
  expect_soon("the mkdir", [&] { return Stat(B("d/sub"), &st) == 0 && S_ISDIR(st.st_mode); });
  std::printf("[ feed     ] every change seen on B %.1f ms after A's last call returned\n",
              worst * 1000);
  EXPECT_LT(SecondsSince(changed), 10.0);
  // Close-to-open: the content is the new version, whole.
  EXPECT_TRUE(ReadFile(B("d/over")) == bigger);
  EXPECT_EQ(ReadFile(B("d/old")), "new");
  EXPECT_GT(Count(*b_, "feed_changes"), 0u);
}

TEST_F(FeedTest, AFileCreatedAndRenamedIntoPlaceOnAIsFoundOnBAtOnce) {
  // The Hugging Face pattern: B looked for the name (not there), A writes a
  // temporary file and renames it into place; B's next open finds it.
  struct stat st {};
  ASSERT_EQ(Stat(B("model.safetensors"), &st), ENOENT);
  ASSERT_EQ(WriteFile(A("model.safetensors.tmp"), "weights v1"), 0);
  ASSERT_EQ(Stat(B("model.safetensors.tmp"), &st), 0);
  ASSERT_EQ(rename(A("model.safetensors.tmp").c_str(), A("model.safetensors").c_str()), 0);
  // No wait at all: a missing name is never cached, and an open of a
  // replaced inode is ESTALE, which the kernel retries with a fresh lookup.
  EXPECT_EQ(ReadFile(B("model.safetensors")), "weights v1");
  ASSERT_EQ(WriteFile(A("model.safetensors.tmp"), "weights v2"), 0);
  ASSERT_EQ(rename(A("model.safetensors.tmp").c_str(), A("model.safetensors").c_str()), 0);
  EXPECT_EQ(ReadFile(B("model.safetensors")), "weights v2");
}

TEST_F(FeedTest, ABrokenFeedFallsBackAndFollowsAgainOnceTheServerIsBack) {
  ASSERT_EQ(WriteFile(A("f"), "one"), 0);
  struct stat st {};
  ASSERT_EQ(Stat(B("f"), &st), 0);
  const uint64_t breaks = Count(*b_, "feed_breaks");
  const uint64_t subscriptions = Count(*b_, "feed_subscriptions");

  // A crash: no goodbye on the stream.
  server_->Kill();
  EXPECT_GE(SecondsUntil([&] { return !Following(*b_); }), 0)
      << "B still follows a feed whose server is gone";
  EXPECT_GT(Count(*b_, "feed_breaks"), breaks);
  ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
  ASSERT_GE(SecondsUntil([&] { return Following(*a_) && Following(*b_); },
                         std::chrono::seconds(20)),
            0)
      << "B does not follow the feed again; see " << b_->log_file();
  EXPECT_GT(Count(*b_, "feed_subscriptions"), subscriptions);

  // Coherent again: A's change reaches B's long-cached entry.
  ASSERT_EQ(WriteFile(A("f"), "a longer second version"), 0);
  EXPECT_GE(SecondsUntil([&] { return Stat(B("f"), &st) == 0 && st.st_size == 23; }), 0);
  EXPECT_EQ(ReadFile(B("f")), "a longer second version");
}

TEST_F(FeedTest, ANodeGetsNoChangesOfScopesItHasNotMounted) {
  // A mounts a second scope B does not have, and works in it.
  const Scope team = *Scope::Parse("team:t1");
  const std::string log = dir_.Sub("cli.log");
  ASSERT_EQ(RunProgram({CliBinary(), "--node-socket", a_->AdminSocket(), "mount-scope", "team:t1"},
                       log),
            0)
      << ReadFile(log);
  const std::string team_mnt = a_->MountPoint(team);
  const uint64_t before = Count(*b_, "feed_changes");
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(WriteFile(team_mnt + "/f" + std::to_string(i), "x"), 0);
  }
  // Then one change in the scope B has: only that one reaches B.
  ASSERT_EQ(WriteFile(A("marker"), "x"), 0);
  ASSERT_GE(SecondsUntil([&] { return Count(*b_, "feed_changes") > before; }), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // The create of `marker` (one entry) and its commit (one inode), maybe in
  // one message: never 40 more.
  EXPECT_LE(Count(*b_, "feed_changes") - before, 2u);
  std::map<std::string, uint64_t> counters = b_->Counters();
  EXPECT_EQ(counters.count("scope.team:t1.feed_changes"), 0u);
  ASSERT_EQ(RunProgram({CliBinary(), "--node-socket", a_->AdminSocket(), "unmount-scope",
                        "team:t1"},
                       log),
            0)
      << ReadFile(log);
}

// --- the stream itself, against the server alone -----------------------------

class WatchScopeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(dir_.Sub("data"), dir_.path());
    ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
    client_ = server_->Client();
    p1_ = std::make_unique<RemoteFs>(client_.get(), *Scope::Parse("project:p1"));
    p2_ = std::make_unique<RemoteFs>(client_.get(), *Scope::Parse("project:p2"));
    ASSERT_TRUE(p1_->Open().ok());
    ASSERT_TRUE(p2_->Open().ok());
  }

  // Opens a stream with `token` and reads until it ends or `seconds` pass;
  // returns the messages and the status it ended with (CANCELLED when this
  // side ended it).
  struct Watched {
    std::vector<v1::ScopeChanges> messages;
    grpc::Status status;
    double seconds = 0;  // From the call to its end.
  };
  Watched Watch(const std::string& scope, const std::string& node_id, const std::string& token,
                double seconds, const std::function<void()>& meanwhile = nullptr) {
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::WatchScopeRequest req;
    req.set_scope(scope);
    req.set_node_id(node_id);
    Watched out;
    const Clock::time_point called = Clock::now();
    auto reader = client_->ns().WatchScope(&ctx, req);
    std::atomic<bool> ended{false};
    std::thread cancel([&] {
      const Clock::time_point start = Clock::now();
      if (meanwhile) meanwhile();
      while (!ended.load() && SecondsSince(start) < seconds) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      ctx.TryCancel();
    });
    v1::ScopeChanges msg;
    while (reader->Read(&msg)) out.messages.push_back(msg);
    out.status = reader->Finish();
    out.seconds = SecondsSince(called);
    ended.store(true);
    cancel.join();
    return out;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<rpc::ServerClient> client_;
  std::unique_ptr<RemoteFs> p1_, p2_;
};

TEST_F(WatchScopeTest, TokensNodeIdsAndScopesAreChecked) {
  EXPECT_EQ(Watch("project:p1", "n", "wrong-token", 2).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Watch("project:p1", "n", "", 2).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Watch("project:p1", "", server_->token(), 2).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Watch("project:p1", std::string(300, 'n'), server_->token(), 2).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Watch("project:nope", "n", server_->token(), 2).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Watch("project:bad/id", "n", server_->token(), 2).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // None of them created anything.
  EXPECT_EQ(p1_->Lookup(kRootInode, "x").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(WatchScopeTest, AStreamCarriesItsScopesChangesByOthersAndHeartbeats) {
  const std::string token = server_->token();
  Watched w = Watch("project:p1", "node-x", token, 2.5, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // Another scope: not this stream's.
    ASSERT_TRUE(p2_->Mkdir(kRootInode, "elsewhere").ok());
    // Made as node-x itself: not sent back.
    {
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + server_->token());
      ctx.AddMetadata(rpc::kNodeIdMetadata, "node-x");
      v1::MkdirRequest req;
      req.set_scope("project:p1");
      req.set_parent(kRootInode);
      req.set_name("mine");
      req.set_mode(0755);
      v1::AttrResponse resp;
      ASSERT_TRUE(client_->ns().Mkdir(&ctx, req, &resp).ok());
    }
    // By another caller: sent.
    ASSERT_TRUE(p1_->Mkdir(kRootInode, "theirs").ok());
  });
  EXPECT_EQ(w.status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_FALSE(w.messages.empty());
  EXPECT_TRUE(w.messages[0].start());
  std::vector<std::string> names;
  size_t empty = 0;
  for (const v1::ScopeChanges& m : w.messages) {
    EXPECT_FALSE(m.lost());
    for (const v1::EntryChange& e : m.entries()) {
      EXPECT_EQ(e.parent(), kRootInode);
      names.push_back(e.name());
    }
    if (!m.start() && m.entries_size() == 0 && m.inodes_size() == 0) ++empty;
  }
  EXPECT_EQ(names, std::vector<std::string>{"theirs"});
  EXPECT_GE(empty, 1u) << "no heartbeat in 2.5 s";
}

TEST_F(WatchScopeTest, StoppingTheServerEndsItsStreamsAtOnce) {
  Watched w = Watch("project:p1", "node-x", server_->token(), 30, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    server_->Stop();
  });
  EXPECT_EQ(w.status.error_code(), grpc::StatusCode::UNAVAILABLE) << w.status.error_message();
  // Not after gRPC's shutdown deadline (5 s): the server ends them first.
  EXPECT_LT(w.seconds, 3.0);
}

}  // namespace
}  // namespace traincache::testing
