// TLS between traincache-node, the traincache CLI and traincache-server, on
// real processes over loopback TCP: the certificates are made for each test
// with the openssl CLI in its temp dir (a CA, a server certificate for
// localhost/127.0.0.1, a client certificate for mutual TLS, and a second,
// unrelated CA). Checks that mounts work through TLS and that every wrong
// client fails with a clear message: plaintext, no CA, the wrong CA, the
// wrong server name, a missing client certificate, a wrong token.
#include "rpc/tls.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "integration/mount_fixture.h"
#include "integration/pki.h"
#include "integration/remote_fs.h"
#include "testing/node_process.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace traincache::testing {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class TlsTest : public ::testing::Test {
 protected:
  // Extra server flags (the mutual TLS fixture adds the client CA).
  virtual std::vector<std::string> TlsServerArgs() const {
    return {"--tls-cert-file", pki_.Crt("server"), "--tls-key-file", pki_.Key("server")};
  }

  void SetUp() override {
    pki_.MakeCa("ca");
    pki_.MakeCa("other-ca");
    pki_.MakeLeaf("server", "ca",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    pki_.MakeLeaf("client", "ca", "extendedKeyUsage=clientAuth\n");
    ASSERT_FALSE(HasFatalFailure());
    server_ = std::make_unique<ServerProcess>(dir_.Sub("data"), dir_.path(), FreeLoopbackAddress());
    server_->set_client_tls(Tls(pki_.Crt("ca"), /*with_client_cert=*/true));
    ASSERT_TRUE(server_->Start(TlsServerArgs()).ok()) << ReadText(server_->log_file());
  }

  rpc::ClientTls Tls(const std::string& ca, bool with_client_cert) const {
    rpc::ClientTlsFiles files{.ca_file = ca};
    if (with_client_cert) {
      files.cert_file = pki_.Crt("client");
      files.key_file = pki_.Key("client");
    }
    auto tls = rpc::LoadClientTls(files, server_ ? server_->address() : "127.0.0.1:1");
    EXPECT_TRUE(tls.ok()) << tls.status();
    return tls.ok() ? *tls : rpc::ClientTls{};
  }

  // Runs the traincache CLI against the server; returns its exit code,
  // standard error in *err.
  int Cli(const std::vector<std::string>& args, std::string* err,
          const std::string& token_file = "") {
    std::vector<std::string> argv = {CliBinary(), "--server", server_->address(), "--token-file",
                                     token_file.empty() ? server_->token_file() : token_file};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string out = dir_.Sub("cli.out"), err_file = dir_.Sub("cli.err");
    int code = RunProgramSplit(argv, out, err_file, 60);
    *err = ReadText(err_file);
    return code;
  }

  TempDir dir_;
  Pki pki_{dir_.path()};
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(TlsTest, ServerSaysItServesTls) {
  EXPECT_NE(ReadText(server_->log_file()).find("(TLS)"), std::string::npos)
      << ReadText(server_->log_file());
}

TEST_F(TlsTest, NodesWriteAndReadThroughTls) {
  Scope scope = *Scope::Parse("project:tls");
  std::vector<std::string> tls = {"--tls-ca-file", pki_.Crt("ca")};
  std::filesystem::create_directories(dir_.Sub("a"));
  std::filesystem::create_directories(dir_.Sub("b"));
  NodeProcess a(dir_.Sub("a"), server_->address(), server_->token_file());
  NodeProcess b(dir_.Sub("b"), server_->address(), server_->token_file());
  ASSERT_TRUE(a.Start({scope}, tls).ok()) << ReadText(a.log_file());
  ASSERT_TRUE(b.Start({scope}, tls).ok()) << ReadText(b.log_file());
  // Three chunks: written and committed through node A's connections, read
  // by node B (an empty tier: every chunk streamed from the server).
  std::string data = RandomBytes(9 * kMiB + 123, 7);
  ASSERT_EQ(WriteFile(a.MountPoint(scope) + "/weights.bin", data), 0);
  EXPECT_TRUE(ReadFile(b.MountPoint(scope) + "/weights.bin") == data);
  // And the server holds it: a TLS client reads it back by name.
  auto client = server_->Client();
  absl::StatusOr<std::string> content = RemoteFs(client.get(), scope).ReadInRoot("weights.bin");
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_TRUE(*content == data);
  EXPECT_EQ(a.Stop(), 0) << ReadText(a.log_file());
  EXPECT_EQ(b.Stop(), 0) << ReadText(b.log_file());
  EXPECT_FALSE(IsMounted(a.MountPoint(scope)));
  EXPECT_FALSE(IsMounted(b.MountPoint(scope)));
}

TEST_F(TlsTest, CliWithTheCaPings) {
  std::string err;
  EXPECT_EQ(Cli({"--tls-ca-file", pki_.Crt("ca"), "ping"}, &err), 0) << err;
}

TEST_F(TlsTest, PlaintextClientFailsWithAClearError) {
  std::string err;
  EXPECT_EQ(Cli({"ping"}, &err), 1);
  EXPECT_NE(err.find("UNAVAILABLE"), std::string::npos) << err;
  EXPECT_NE(err.find("TLS"), std::string::npos) << err;
  // A plaintext node daemon cannot mount: it exits 1 after its outage wait.
  std::filesystem::create_directories(dir_.Sub("n"));
  NodeProcess node(dir_.Sub("n"), server_->address(), server_->token_file());
  absl::Status started =
      node.Start({*Scope::Parse("project:tls")}, {"--outage-timeout-seconds", "1"});
  EXPECT_FALSE(started.ok());
  EXPECT_FALSE(IsMounted(node.MountPoint(*Scope::Parse("project:tls"))));
}

TEST_F(TlsTest, WrongCaFailsWithAClearError) {
  std::string err;
  EXPECT_EQ(Cli({"--tls-ca-file", pki_.Crt("other-ca"), "ping"}, &err), 1);
  EXPECT_NE(err.find("UNAVAILABLE"), std::string::npos) << err;
  EXPECT_NE(err.find("TLS"), std::string::npos) << err;
  // The same through the client library: the call fails, nothing is created.
  rpc::ServerClient client({.target = server_->address(),
                            .token = server_->token(),
                            .deadline = std::chrono::seconds(5),
                            .tls = Tls(pki_.Crt("other-ca"), false)});
  RemoteFs fs(&client, *Scope::Parse("project:intruder"));
  EXPECT_EQ(fs.Open().status().code(), absl::StatusCode::kUnavailable);
  v1::ListScopesResponse scopes;
  auto good = server_->Client();
  ASSERT_TRUE(good->Call(&v1::Admin::Stub::ListScopes, good->admin(), {}, &scopes).ok());
  EXPECT_EQ(scopes.scopes_size(), 0);
}

TEST_F(TlsTest, WrongServerNameFails) {
  std::string err;
  EXPECT_EQ(
      Cli({"--tls-ca-file", pki_.Crt("ca"), "--tls-server-name", "not-the-server.example", "ping"},
          &err),
      1);
  EXPECT_NE(err.find("UNAVAILABLE"), std::string::npos) << err;
  EXPECT_EQ(Cli({"--tls-ca-file", pki_.Crt("ca"), "--tls-server-name", "localhost", "ping"}, &err),
            0)
      << err;
}

TEST_F(TlsTest, TokenIsStillRequiredOverTls) {
  for (const std::string& token : {std::string(), std::string("wrong-token-0123456789")}) {
    rpc::ServerClient client({.target = server_->address(),
                              .token = token,
                              .deadline = std::chrono::seconds(10),
                              .tls = Tls(pki_.Crt("ca"), false)});
    RemoteFs fs(&client, *Scope::Parse("project:intruder"));
    absl::Status opened = fs.Open().status();
    EXPECT_EQ(opened.code(), absl::StatusCode::kUnauthenticated) << opened;
  }
  std::string bad_token = dir_.Sub("bad-token");
  std::ofstream(bad_token) << "wrong-token-0123456789\n";
  std::string err;
  EXPECT_EQ(Cli({"--tls-ca-file", pki_.Crt("ca"), "smoke"}, &err, bad_token), 1);
  EXPECT_NE(err.find("UNAUTHENTICATED"), std::string::npos) << err;
  v1::ListScopesResponse scopes;
  auto good = server_->Client();
  ASSERT_TRUE(good->Call(&v1::Admin::Stub::ListScopes, good->admin(), {}, &scopes).ok());
  EXPECT_EQ(scopes.scopes_size(), 0);
}

TEST_F(TlsTest, BadClientTlsFlagsExit2NamingTheFlag) {
  std::ofstream(dir_.Sub("junk.pem")) << "not a certificate\n";
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--tls-ca-file", dir_.Sub("missing.pem"), "ping"}, "--tls-ca-file: cannot read"},
      {{"--tls-ca-file", dir_.Sub("junk.pem"), "ping"}, "holds no PEM certificate"},
      {{"--tls-ca-file", pki_.Crt("ca"), "--tls-cert-file", pki_.Crt("client"), "ping"},
       "--tls-key-file"},
      {{"--tls-ca-file", pki_.Crt("ca"), "--tls-cert-file", pki_.Crt("client"), "--tls-key-file",
        pki_.Key("server"), "ping"},
       "not the key of the certificate"},
      {{"--tls-cert-file", pki_.Crt("client"), "ping"}, "--tls-ca-file"},
      {{"--tls-ca-file", pki_.Crt("ca"), "--insecure", "ping"}, "--insecure"},
  };
  for (const Case& c : cases) {
    std::string err;
    EXPECT_EQ(Cli(c.args, &err), 2) << c.says;
    EXPECT_NE(err.find(c.says), std::string::npos) << err;
  }
  // The node daemon checks the same flags before it mounts anything.
  std::string log = dir_.Sub("node-bad.log");
  EXPECT_EQ(RunProgram({NodeBinary(), "--server", server_->address(), "--token-file",
                        server_->token_file(), "--mount-root", dir_.Sub("m"), "--tier-dir",
                        dir_.Sub("t"), "--staging-dir", dir_.Sub("s"), "--admin-socket", "",
                        "--tls-ca-file", dir_.Sub("junk.pem")},
                       log),
            2);
  EXPECT_NE(ReadText(log).find("holds no PEM certificate"), std::string::npos) << ReadText(log);
}

TEST_F(TlsTest, PlaintextToAnotherMachineNeedsInsecure) {
  // 192.0.2.1 (TEST-NET-1): refused before any connection is tried.
  std::string log = dir_.Sub("node-remote.log");
  std::vector<std::string> node = {NodeBinary(),
                                   "--server",
                                   "192.0.2.1:7070",
                                   "--token-file",
                                   server_->token_file(),
                                   "--mount-root",
                                   dir_.Sub("m"),
                                   "--tier-dir",
                                   dir_.Sub("t"),
                                   "--staging-dir",
                                   dir_.Sub("s"),
                                   "--admin-socket",
                                   ""};
  EXPECT_EQ(RunProgram(node, log), 2);
  EXPECT_NE(ReadText(log).find("is not a Unix socket or loopback address"), std::string::npos)
      << ReadText(log);
  std::string out = dir_.Sub("cli.out"), err = dir_.Sub("cli.err");
  EXPECT_EQ(RunProgramSplit({CliBinary(), "--server", "192.0.2.1:7070", "--token-file",
                             server_->token_file(), "ping"},
                            out, err),
            2);
  EXPECT_NE(ReadText(err).find("--insecure"), std::string::npos) << ReadText(err);
}

TEST_F(TlsTest, ServerRefusesBadTlsConfigWithExit2) {
  std::ofstream(dir_.Sub("junk.pem")) << "not a certificate\n";
  std::string token = server_->token_file();
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--tls-cert-file", pki_.Crt("server")}, "tls_key_file"},
      {{"--tls-cert-file", dir_.Sub("junk.pem"), "--tls-key-file", pki_.Key("server")},
       "config key 'tls_cert_file'"},
      {{"--tls-cert-file", pki_.Crt("server"), "--tls-key-file", pki_.Key("client")},
       "not the key of the certificate"},
      {{"--tls-cert-file", pki_.Crt("server"), "--tls-key-file", pki_.Crt("server")},
       "no PEM private key"},
      {{"--tls-client-ca-file", pki_.Crt("ca")}, "tls_client_ca_file"},
      // Plaintext on an address other machines reach.
      {{"--listen", "0.0.0.0:0"},
       "config key 'listen': 0.0.0.0:0 is not a Unix socket or "
       "loopback address"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {ServerBinary(), "--data-dir", dir_.Sub("data2"),
                                     "--token-file", token};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    if (c.args[0] != "--listen") argv.insert(argv.end(), {"--listen", "127.0.0.1:0"});
    std::string log = dir_.Sub("server-bad.log");
    std::filesystem::remove(log);
    EXPECT_EQ(RunProgram(argv, log), 2) << c.says;
    EXPECT_NE(ReadText(log).find(c.says), std::string::npos) << ReadText(log);
  }
  // allow_insecure is a boolean, nothing else.
  std::ofstream(dir_.Sub("insecure.toml")) << "allow_insecure = \"yes\"\n";
  std::string log = dir_.Sub("server-bad.log");
  EXPECT_EQ(RunProgram({ServerBinary(), "--config", dir_.Sub("insecure.toml"), "--data-dir",
                        dir_.Sub("data2"), "--token-file", token},
                       log),
            2);
  EXPECT_NE(ReadText(log).find("'allow_insecure': must be true or false"), std::string::npos)
      << ReadText(log);
}

// Mutual TLS: the server asks every client for a certificate its client CA
// signed.
class MutualTlsTest : public TlsTest {
 protected:
  std::vector<std::string> TlsServerArgs() const override {
    std::vector<std::string> args = TlsTest::TlsServerArgs();
    args.insert(args.end(), {"--tls-client-ca-file", pki_.Crt("ca")});
    return args;
  }
};

TEST_F(MutualTlsTest, ClientWithoutACertificateIsRefused) {
  std::string err;
  EXPECT_EQ(Cli({"--tls-ca-file", pki_.Crt("ca"), "ping"}, &err), 1);
  EXPECT_NE(err.find("UNAVAILABLE"), std::string::npos) << err;
  EXPECT_EQ(Cli({"--tls-ca-file", pki_.Crt("ca"), "--tls-cert-file", pki_.Crt("client"),
                 "--tls-key-file", pki_.Key("client"), "ping"},
                &err),
            0)
      << err;
  EXPECT_NE(ReadText(server_->log_file()).find("client certificates required"), std::string::npos);
}

TEST_F(MutualTlsTest, NodeWithItsCertificateMounts) {
  Scope scope = *Scope::Parse("project:mtls");
  std::filesystem::create_directories(dir_.Sub("a"));
  NodeProcess a(dir_.Sub("a"), server_->address(), server_->token_file());
  ASSERT_TRUE(a.Start({scope}, {"--tls-ca-file", pki_.Crt("ca"), "--tls-cert-file",
                                pki_.Crt("client"), "--tls-key-file", pki_.Key("client")})
                  .ok())
      << ReadText(a.log_file());
  std::string data = RandomBytes(5 * kMiB, 3);
  ASSERT_EQ(WriteFile(a.MountPoint(scope) + "/f", data), 0);
  EXPECT_TRUE(ReadFile(a.MountPoint(scope) + "/f") == data);
  EXPECT_EQ(a.Stop(), 0) << ReadText(a.log_file());
  EXPECT_FALSE(IsMounted(a.MountPoint(scope)));
}

}  // namespace
}  // namespace traincache::testing
