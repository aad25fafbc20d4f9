#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "rpc/tls.h"

namespace traincache::rpc {
namespace {

using ::testing::HasSubstr;

TEST(TlsTest, LocalTargetsAreUnixSocketsAndLoopbackOnly) {
  for (const char* local :
       {"unix:/run/traincache/server.sock", "unix-abstract:tc", "127.0.0.1:7070", "127.1.2.3:1",
        "localhost:7070", "[::1]:7070", "ipv4:127.0.0.1:7070", "dns:///localhost:7070"}) {
    EXPECT_TRUE(IsLocalTarget(local)) << local;
  }
  for (const char* remote :
       {"10.0.0.1:7070", "0.0.0.0:7070", "traincache-server.cluster.local:7070",
        "127.0.0.1.evil.example:7070", "127.0.0:7070", "[::2]:7070", "[::1:7070", "",
        "localhost.example:7070", "dns:///10.0.0.1:7070"}) {
    EXPECT_FALSE(IsLocalTarget(remote)) << remote;
  }
}

TEST(TlsTest, PlaintextToAnotherMachineNeedsInsecure) {
  auto refused = LoadClientTls({}, "10.0.0.1:7070");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--insecure"));
  auto insecure = LoadClientTls({.insecure = true}, "10.0.0.1:7070");
  ASSERT_TRUE(insecure.ok());
  EXPECT_FALSE(insecure->enabled());
  auto local = LoadClientTls({}, "unix:/tmp/s.sock");
  ASSERT_TRUE(local.ok());
  EXPECT_FALSE(local->enabled());
}

TEST(TlsTest, FlagsThatNeedACaFileAreRefusedWithoutOne) {
  for (const ClientTlsFiles& files :
       {ClientTlsFiles{.cert_file = "/c"}, ClientTlsFiles{.key_file = "/k"},
        ClientTlsFiles{.server_name = "server"}}) {
    auto tls = LoadClientTls(files, "127.0.0.1:7070");
    ASSERT_FALSE(tls.ok());
    EXPECT_THAT(std::string(tls.status().message()), HasSubstr("--tls-ca-file"));
  }
  auto missing = LoadClientTls({.ca_file = "/nonexistent/ca.crt"}, "127.0.0.1:7070");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("--tls-ca-file: cannot read /nonexistent/ca.crt"));
}

TEST(TlsTest, HintOnlyForUnavailable) {
  EXPECT_EQ(UnavailableHint(absl::PermissionDeniedError("x"), {}), "");
  EXPECT_THAT(UnavailableHint(absl::UnavailableError("x"), {}), HasSubstr("--tls-ca-file"));
  EXPECT_THAT(UnavailableHint(absl::UnavailableError("x"), {.ca_pem = "pem"}),
              HasSubstr("client certificate"));
}

}  // namespace
}  // namespace traincache::rpc
