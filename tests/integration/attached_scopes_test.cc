// require_attached_scopes on real processes: a traincache-server with
// mutual TLS that serves a scope's data only to the node (the CN of its
// client certificate) with an attached job that uses it. Certificates are
// made per test with the openssl CLI: node-a and node-b (two nodes), and
// "operator" (the CLI's and the test's admin client).
//
// Node daemons attach and detach jobs through the real `traincache` CLI;
// what the server allows is also checked with direct gRPC calls under each
// node's certificate, on every service that names a scope (Namespace,
// Chunks, Locks, the change feed).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "integration/mount_fixture.h"
#include "integration/pki.h"
#include "integration/remote_fs.h"
#include "rpc/tls.h"
#include "testing/node_process.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"
#include "traincache/v1/cluster.grpc.pb.h"

namespace traincache::testing {
namespace {

using ::testing::HasSubstr;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const Scope kP1 = *Scope::Parse("project:p1");
const Scope kP2 = *Scope::Parse("project:p2");
const Scope kT1 = *Scope::Parse("team:t1");

class AttachedScopesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pki_.MakeCa("ca");
    pki_.MakeLeaf("server", "ca",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    for (const char* leaf : {"node-a", "node-b", "operator"}) {
      pki_.MakeLeaf(leaf, "ca", "extendedKeyUsage=clientAuth\n");
    }
    ASSERT_FALSE(HasFatalFailure());
    server_ = std::make_unique<ServerProcess>(dir_.Sub("data"), dir_.path(), FreeLoopbackAddress());
    server_->set_client_tls(Tls("operator"));
    ASSERT_TRUE(server_->Start(ServerArgs()).ok()) << Slurp(server_->log_file());
  }

  void TearDown() override {
    for (auto& n : nodes_) n->Stop();
    nodes_.clear();
    if (server_) server_->Stop();
  }

  std::vector<std::string> ServerArgs() const {
    return {"--tls-cert-file",      pki_.Crt("server"), "--tls-key-file",
            pki_.Key("server"),     "--tls-client-ca-file", pki_.Crt("ca"),
            "--require-attached-scopes"};
  }

  rpc::ClientTls Tls(const std::string& cert) const {
    rpc::ClientTlsFiles files;
    files.ca_file = pki_.Crt("ca");
    files.cert_file = pki_.Crt(cert);
    files.key_file = pki_.Key(cert);
    auto tls = rpc::LoadClientTls(files, server_ ? server_->address() : "127.0.0.1:1");
    EXPECT_TRUE(tls.ok()) << tls.status();
    return tls.ok() ? *tls : rpc::ClientTls{};
  }

  // A client that presents `cert` (its CN is who the server thinks calls).
  std::unique_ptr<rpc::ServerClient> ClientAs(const std::string& cert) const {
    return std::make_unique<rpc::ServerClient>(rpc::ClientOptions{.target = server_->address(),
                                                                  .token = server_->token(),
                                                                  .deadline = std::chrono::seconds(10),
                                                                  .tls = Tls(cert)});
  }

  std::vector<std::string> NodeTlsArgs(const std::string& cert) const {
    return {"--tls-ca-file", pki_.Crt("ca"), "--tls-cert-file", pki_.Crt(cert), "--tls-key-file",
            pki_.Key(cert)};
  }

  // A node daemon with `cert`'s identity that can attach jobs.
  NodeProcess& StartNode(const std::string& cert) {
    std::filesystem::create_directories(dir_.Sub(cert));
    nodes_.push_back(
        std::make_unique<NodeProcess>(dir_.Sub(cert), server_->address(), server_->token_file()));
    NodeProcess& node = *nodes_.back();
    std::vector<std::string> args = NodeTlsArgs(cert);
    args.insert(args.end(), {"--scratch-dir", dir_.Sub(cert) + "/scratch",
                             "--unmount-grace-seconds", "1", "--scope-check-interval-ms", "200"});
    absl::Status started = node.Start({}, args);
    EXPECT_TRUE(started.ok()) << started << Slurp(node.log_file());
    return node;
  }

  struct Run {
    int code;
    std::string output;  // stdout and stderr
  };
  // The real CLI, with the operator's certificate, at `node`'s admin socket.
  Run Cli(NodeProcess& node, std::vector<std::string> args) {
    std::vector<std::string> argv = {CliBinary(),        "--server",       server_->address(),
                                     "--token-file",     server_->token_file(),
                                     "--tls-ca-file",    pki_.Crt("ca"),   "--tls-cert-file",
                                     pki_.Crt("operator"), "--tls-key-file", pki_.Key("operator"),
                                     "--node-socket",    node.AdminSocket()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string log = dir_.Sub("cli-" + std::to_string(++cli_runs_) + ".log");
    int code = RunProgram(argv, log, 120);
    return {code, Slurp(log)};
  }

  Run AttachJob(NodeProcess& node, const std::string& job, const std::string& project,
                const std::string& team = "") {
    std::vector<std::string> args = {"attach", "--project", project, "--gpu", "H100", "--job", job};
    if (!team.empty()) args.insert(args.end(), {"--team", team});
    Run run = Cli(node, args);
    if (run.code != 0) ADD_FAILURE() << "attach " << job << ": " << run.output;
    return run;
  }

  // OpenScope (create) of `scope` as `cert`: the first call a node makes to
  // mount a scope.
  absl::Status OpenAs(const std::string& cert, const Scope& scope) {
    auto client = ClientAs(cert);
    RemoteFs fs(client.get(), scope);
    return fs.Open().status();
  }

  std::vector<std::string> ServerScopes() {
    auto client = server_->Client();
    v1::ListScopesResponse resp;
    EXPECT_TRUE(client->Call(&v1::Admin::Stub::ListScopes, client->admin(), {}, &resp).ok());
    std::vector<std::string> out;
    for (const auto& s : resp.scopes()) out.push_back(s);
    return out;
  }

  TempDir dir_;
  Pki pki_{dir_.path()};
  std::unique_ptr<ServerProcess> server_;
  std::vector<std::unique_ptr<NodeProcess>> nodes_;
  int cli_runs_ = 0;
};

// The denial names who asked and for what.
void ExpectDenied(const absl::Status& status, const std::string& who, const Scope& scope) {
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("'" + who + "'"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(scope.ToString()));
}

TEST_F(AttachedScopesTest, AnAttachedNodeUsesItsJobsProjectAndNoOther) {
  NodeProcess& a = StartNode("node-a");
  Run attached = AttachJob(a, "j1", "p1");
  ASSERT_EQ(attached.code, 0) << attached.output;
  // Read and write through the mount (commits, chunk uploads, reads).
  std::string data = RandomBytes(5 * kMiB + 17, 11);
  ASSERT_EQ(WriteFile(a.MountPoint(kP1) + "/weights.bin", data), 0);
  EXPECT_TRUE(ReadFile(a.MountPoint(kP1) + "/weights.bin") == data);
  ASSERT_EQ(mkdir((a.MountPoint(kP1) + "/d").c_str(), 0755), 0) << strerror(errno);

  // The same node's identity, asking for a project no job of it uses.
  ExpectDenied(OpenAs("node-a", kP2), "node-a", kP2);
  EXPECT_THAT(ServerScopes(), ::testing::Not(::testing::Contains(kP2.ToString())));
  // ... and its own project, by name, through the server.
  auto client = ClientAs("node-a");
  absl::StatusOr<std::string> content = RemoteFs(client.get(), kP1).ReadInRoot("weights.bin");
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_TRUE(*content == data);

  // The node daemon's own mount path: refused with the server's word, the
  // daemon still serving.
  Run mounted = Cli(a, {"mount-scope", kP2.ToString()});
  EXPECT_EQ(mounted.code, 1) << mounted.output;
  EXPECT_THAT(mounted.output, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(mounted.output, HasSubstr("'node-a'"));
  EXPECT_THAT(mounted.output, HasSubstr(kP2.ToString()));
  EXPECT_FALSE(IsMounted(a.MountPoint(kP2)));
  EXPECT_EQ(kill(a.pid(), 0), 0);
  EXPECT_TRUE(ReadFile(a.MountPoint(kP1) + "/weights.bin") == data);
  EXPECT_THAT(ServerScopes(), ::testing::Not(::testing::Contains(kP2.ToString())));
}

TEST_F(AttachedScopesTest, AnotherNodeCannotUseTheProjectOnAnyService) {
  NodeProcess& a = StartNode("node-a");
  ASSERT_EQ(AttachJob(a, "j1", "p1").code, 0);
  std::string data = RandomBytes(2 * kMiB, 5);
  ASSERT_EQ(WriteFile(a.MountPoint(kP1) + "/f", data), 0);

  auto a_client = ClientAs("node-a");
  auto b_client = ClientAs("node-b");
  RemoteFs a_fs(a_client.get(), kP1);
  auto attr = a_fs.LookupInRoot("f");
  ASSERT_TRUE(attr.ok()) << attr.status();
  v1::GetAttrRequest map_req;
  map_req.set_scope(kP1.ToString());
  map_req.set_ino(attr->ino);
  v1::ChunkMapResponse map;
  ASSERT_TRUE(
      a_client->Call(&v1::Namespace::Stub::GetChunkMap, a_client->ns(), map_req, &map).ok());
  ASSERT_GT(map.chunks_size(), 0);
  auto chunk = ChunkId::FromBytes(map.chunks(0).id());
  ASSERT_TRUE(chunk.ok());

  // Namespace.
  ExpectDenied(OpenAs("node-b", kP1), "node-b", kP1);
  v1::LookupRequest lookup;
  lookup.set_scope(kP1.ToString());
  lookup.set_parent(kRootInode);
  lookup.set_name("f");
  v1::AttrResponse lookup_resp;
  ExpectDenied(b_client->Call(&v1::Namespace::Stub::Lookup, b_client->ns(), lookup, &lookup_resp),
               "node-b", kP1);
  v1::ChunkMapResponse b_map;
  ExpectDenied(b_client->Call(&v1::Namespace::Stub::GetChunkMap, b_client->ns(), map_req, &b_map),
               "node-b", kP1);
  // Chunks: read, probe, write.
  ExpectDenied(b_client->GetChunk(kP1, *chunk).status(), "node-b", kP1);
  ExpectDenied(b_client->HasChunks(kP1, {*chunk}).status(), "node-b", kP1);
  ExpectDenied(b_client->PutChunks(kP1, {"planted bytes"}), "node-b", kP1);
  // Locks: a session is no scope's, a lock is.
  v1::OpenSessionRequest open_session;
  open_session.set_node("node-b");
  v1::SessionResponse session;
  ASSERT_TRUE(
      b_client->Call(&v1::Locks::Stub::OpenSession, b_client->locks(), open_session, &session).ok());
  v1::LockRequest lock;
  lock.set_scope(kP1.ToString());
  lock.set_ino(attr->ino);
  lock.set_session(session.session());
  lock.set_owner(1);
  lock.set_kind(v1::LOCK_KIND_FLOCK);
  lock.set_type(v1::LOCK_TYPE_WRITE);
  v1::LockResponse lock_resp;
  ExpectDenied(b_client->Call(&v1::Locks::Stub::Lock, b_client->locks(), lock, &lock_resp),
               "node-b", kP1);
  v1::TestLockResponse test_resp;
  ExpectDenied(b_client->Call(&v1::Locks::Stub::TestLock, b_client->locks(), lock, &test_resp),
               "node-b", kP1);
  // The change feed.
  {
    v1::WatchScopeRequest watch;
    watch.set_scope(kP1.ToString());
    watch.set_node_id("node-b-watch");
    auto ctx = b_client->NewContext();
    auto reader = b_client->ns().WatchScope(ctx.get(), watch);
    v1::ScopeChanges changes;
    EXPECT_FALSE(reader->Read(&changes));
    grpc::Status finished = reader->Finish();
    EXPECT_EQ(finished.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << finished.error_message();
  }

  // Node A, meanwhile, may do each of them.
  EXPECT_TRUE(a_client->GetChunk(kP1, *chunk).ok());
  EXPECT_TRUE(a_client->HasChunks(kP1, {*chunk}).ok());
  v1::SessionResponse a_session;
  ASSERT_TRUE(
      a_client->Call(&v1::Locks::Stub::OpenSession, a_client->locks(), open_session, &a_session)
          .ok());
  lock.set_session(a_session.session());
  EXPECT_TRUE(a_client->Call(&v1::Locks::Stub::TestLock, a_client->locks(), lock, &test_resp).ok());
  // Nothing node B sent changed the scope.
  EXPECT_EQ(ListDir(a.MountPoint(kP1)), std::set<std::string>({"f"}));
  EXPECT_TRUE(ReadFile(a.MountPoint(kP1) + "/f") == data);

  // Node B's daemon, told to mount the project at start, stops with the
  // server's refusal (exit 1) instead of serving it.
  std::filesystem::create_directories(dir_.Sub("node-b-static"));
  NodeProcess b(dir_.Sub("node-b-static"), server_->address(), server_->token_file());
  absl::Status started = b.Start({kP1}, NodeTlsArgs("node-b"));
  EXPECT_FALSE(started.ok());
  EXPECT_FALSE(IsMounted(b.MountPoint(kP1)));
  std::string log = Slurp(b.log_file());
  EXPECT_THAT(log, HasSubstr("project:p1"));
  EXPECT_THAT(log, HasSubstr("'node-b' has no attached job"));
}

TEST_F(AttachedScopesTest, DetachRevokesOnlyWhatNoOtherJobOfTheNodeUses) {
  NodeProcess& a = StartNode("node-a");
  ASSERT_EQ(AttachJob(a, "j1", "p1", "t1").code, 0);
  ASSERT_EQ(AttachJob(a, "j2", "p1").code, 0);
  EXPECT_TRUE(OpenAs("node-a", kP1).ok());
  EXPECT_TRUE(OpenAs("node-a", kT1).ok());

  Run detached = Cli(a, {"detach", "--job", "j1"});
  ASSERT_EQ(detached.code, 0) << detached.output;
  EXPECT_TRUE(OpenAs("node-a", kP1).ok()) << "j2 still uses project:p1";
  ExpectDenied(OpenAs("node-a", kT1), "node-a", kT1);

  detached = Cli(a, {"detach", "--job", "j2"});
  ASSERT_EQ(detached.code, 0) << detached.output;
  ExpectDenied(OpenAs("node-a", kP1), "node-a", kP1);

  // Detach is idempotent on the server.
  auto client = ClientAs("node-a");
  v1::DetachRequest req;
  req.set_job_id("j2");
  v1::DetachResponse resp;
  ASSERT_TRUE(client->Call(&v1::Cluster::Stub::Detach, client->cluster(), req, &resp).ok());
  EXPECT_FALSE(resp.existed());
  // The node's daemon told the server without a warning.
  EXPECT_THAT(Slurp(a.log_file()), ::testing::Not(HasSubstr("was not told of the detach")));
}

TEST_F(AttachedScopesTest, AttachmentsSurviveAServerCrash) {
  NodeProcess& a = StartNode("node-a");
  ASSERT_EQ(AttachJob(a, "j1", "p1").code, 0);
  ASSERT_EQ(WriteFile(a.MountPoint(kP1) + "/before", "before the crash"), 0);

  // SIGKILL: only what reached the disk counts.
  server_->Kill();
  ASSERT_TRUE(server_->Start(ServerArgs()).ok()) << Slurp(server_->log_file());
  EXPECT_THAT(Slurp(server_->log_file()), HasSubstr("1 job(s) of 1 node(s) attached"));

  EXPECT_TRUE(OpenAs("node-a", kP1).ok());
  ExpectDenied(OpenAs("node-b", kP1), "node-b", kP1);
  ExpectDenied(OpenAs("node-a", kP2), "node-a", kP2);
  // The running daemon's mount works on against the restarted server.
  EXPECT_EQ(WriteFile(a.MountPoint(kP1) + "/after", "after the crash"), 0);
  EXPECT_EQ(ReadFile(a.MountPoint(kP1) + "/after"), "after the crash");

  // A detach after the restart is kept across the next one too.
  ASSERT_EQ(Cli(a, {"detach", "--job", "j1"}).code, 0);
  ExpectDenied(OpenAs("node-a", kP1), "node-a", kP1);
  ASSERT_EQ(server_->Stop(), 0);
  ASSERT_TRUE(server_->Start(ServerArgs()).ok()) << Slurp(server_->log_file());
  ExpectDenied(OpenAs("node-a", kP1), "node-a", kP1);
}

TEST_F(AttachedScopesTest, ADetachTheRestartedDaemonNeverSawStillReachesTheServer) {
  NodeProcess& a = StartNode("node-a");
  ASSERT_EQ(AttachJob(a, "j1", "p1").code, 0);
  // The daemon restarts: its jobs are gone from its memory, not the server's.
  ASSERT_EQ(a.Stop(), 0) << Slurp(a.log_file());
  std::vector<std::string> args = NodeTlsArgs("node-a");
  args.insert(args.end(), {"--scratch-dir", dir_.Sub("node-a") + "/scratch"});
  ASSERT_TRUE(a.Start({}, args).ok()) << Slurp(a.log_file());
  EXPECT_TRUE(OpenAs("node-a", kP1).ok());
  Run detached = Cli(a, {"detach", "--job", "j1"});
  EXPECT_EQ(detached.code, 0) << detached.output;
  ExpectDenied(OpenAs("node-a", kP1), "node-a", kP1);
  // A job neither knows is still NOT_FOUND.
  detached = Cli(a, {"detach", "--job", "never"});
  EXPECT_EQ(detached.code, 1) << detached.output;
  EXPECT_THAT(detached.output, HasSubstr("NOT_FOUND"));
}

TEST_F(AttachedScopesTest, ANodeMayStillUnlockItsOwnLocksAfterItsJobDetached) {
  NodeProcess& a = StartNode("node-a");
  ASSERT_EQ(AttachJob(a, "j1", "p1").code, 0);
  ASSERT_EQ(WriteFile(a.MountPoint(kP1) + "/lockme", "x"), 0);
  auto a_client = ClientAs("node-a");
  auto b_client = ClientAs("node-b");
  RemoteFs fs(a_client.get(), kP1);
  auto attr = fs.LookupInRoot("lockme");
  ASSERT_TRUE(attr.ok()) << attr.status();

  auto open_session = [](rpc::ServerClient& client, const std::string& node) {
    v1::OpenSessionRequest req;
    req.set_node(node);
    v1::SessionResponse resp;
    EXPECT_TRUE(client.Call(&v1::Locks::Stub::OpenSession, client.locks(), req, &resp).ok());
    return resp.session();
  };
  const uint64_t sa = open_session(*a_client, "node-a"), sb = open_session(*b_client, "node-b");
  v1::LockRequest lock;
  lock.set_scope(kP1.ToString());
  lock.set_ino(attr->ino);
  lock.set_session(sa);
  lock.set_owner(7);
  lock.set_kind(v1::LOCK_KIND_FLOCK);
  lock.set_type(v1::LOCK_TYPE_WRITE);
  v1::LockResponse lock_resp;
  ASSERT_TRUE(a_client->Call(&v1::Locks::Stub::Lock, a_client->locks(), lock, &lock_resp).ok());

  // Another node cannot give up node A's locks, by unlock or by closing its session.
  EXPECT_EQ(b_client->Call(&v1::Locks::Stub::Unlock, b_client->locks(), lock, &lock_resp).code(),
            absl::StatusCode::kPermissionDenied);
  v1::SessionRef ref;
  ref.set_session(sa);
  v1::SessionResponse closed;
  EXPECT_EQ(
      b_client->Call(&v1::Locks::Stub::CloseSession, b_client->locks(), ref, &closed).code(),
      absl::StatusCode::kPermissionDenied);

  // The job detaches before node A's unlock arrives (a flock's release is
  // asynchronous in FUSE): node A may no longer use the scope, but may
  // still give its lock up.
  ASSERT_EQ(Cli(a, {"detach", "--job", "j1"}).code, 0);
  v1::TestLockResponse test;
  ExpectDenied(a_client->Call(&v1::Locks::Stub::TestLock, a_client->locks(), lock, &test),
               "node-a", kP1);
  EXPECT_TRUE(a_client->Call(&v1::Locks::Stub::Unlock, a_client->locks(), lock, &lock_resp).ok());

  // Node B, attached now, finds the file unlocked.
  v1::AttachRequest attach;
  attach.set_project("p1");
  attach.set_gpu_type("H100");
  attach.set_job_id("j9");
  v1::AttachResponse attached;
  ASSERT_TRUE(
      b_client->Call(&v1::Cluster::Stub::Attach, b_client->cluster(), attach, &attached).ok());
  lock.set_session(sb);
  lock.set_owner(9);
  ASSERT_TRUE(b_client->Call(&v1::Locks::Stub::TestLock, b_client->locks(), lock, &test).ok());
  EXPECT_FALSE(test.conflict());
}

TEST_F(AttachedScopesTest, AdminCallsAreNotChecked) {
  // The operator's certificate attached nothing, yet may look at and
  // manage every scope (the CLI's summarize, quota, delete-project).
  NodeProcess& a = StartNode("node-a");
  ASSERT_EQ(AttachJob(a, "j1", "p1").code, 0);
  auto op = server_->Client();
  v1::ScopeRef ref;
  ref.set_scope(kP1.ToString());
  v1::UsageResponse usage;
  EXPECT_TRUE(op->Call(&v1::Admin::Stub::GetUsage, op->admin(), ref, &usage).ok());
  v1::QuotaResponse quota;
  EXPECT_TRUE(op->Call(&v1::Admin::Stub::GetQuota, op->admin(), ref, &quota).ok());
  // But data-plane calls under the operator's identity are refused as any other.
  ExpectDenied(OpenAs("operator", kP1), "operator", kP1);
}

TEST_F(AttachedScopesTest, ServerRefusesTheKeyWithoutAClientCa) {
  std::ofstream(dir_.Sub("attached.toml")) << "require_attached_scopes = true\n";
  const std::vector<std::vector<std::string>> cases = {
      {"--require-attached-scopes", "--tls-cert-file", pki_.Crt("server"), "--tls-key-file",
       pki_.Key("server")},
      {"--require-attached-scopes"},
      {"--config", dir_.Sub("attached.toml"), "--tls-cert-file", pki_.Crt("server"),
       "--tls-key-file", pki_.Key("server")},
  };
  for (const auto& args : cases) {
    std::vector<std::string> argv = {ServerBinary(), "--data-dir", dir_.Sub("data2"),
                                     "--token-file", server_->token_file(), "--listen",
                                     "127.0.0.1:0"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string log = dir_.Sub("server-bad.log");
    std::filesystem::remove(log);
    EXPECT_EQ(RunProgram(argv, log), 2) << args.size();
    EXPECT_THAT(Slurp(log), HasSubstr("config key 'require_attached_scopes'"));
    EXPECT_THAT(Slurp(log), HasSubstr("tls_client_ca_file"));
  }
}

}  // namespace
}  // namespace traincache::testing
