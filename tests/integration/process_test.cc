// traincache-server as a process: refuses to start with a clear message on a
// bad config or a data dir another server holds, stops cleanly on SIGTERM.
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace traincache::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServerProcessTest, RefusesADataDirLockedByAnotherServer) {
  TempDir dir;
  ServerProcess first(dir.Sub("data"), dir.path());
  ASSERT_TRUE(first.Start().ok());
  std::string log = dir.Sub("second.log");
  int code = RunProgram({ServerBinary(), "--data-dir", dir.Sub("data"), "--listen",
                         "unix:" + dir.Sub("second.sock"), "--token-file", first.token_file()},
                        log);
  EXPECT_EQ(code, 1);
  EXPECT_NE(ReadAll(log).find("locked by another traincache-server (pid " +
                              std::to_string(first.pid())),
            std::string::npos)
      << ReadAll(log);
  // The first server is unharmed.
  auto client = first.Client();
  v1::PingResponse pong;
  EXPECT_TRUE(client->Call(&v1::Admin::Stub::Ping, client->admin(), {}, &pong).ok());
  client.reset();
  int status = first.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(ServerProcessTest, RefusesABadConfigNamingTheKey) {
  TempDir dir;
  std::ofstream(dir.Sub("token")) << "0123456789abcdef0123\n";
  struct Case {
    std::string toml, key;
  } cases[] = {
      {"data_dir = \"" + dir.Sub("d") + "\"\nlisten = 5\n", "listen"},
      {"data_dir = \"" + dir.Sub("d") + "\"\nbogus_key = 1\n", "bogus_key"},
      {"data_dir = \"" + dir.Sub("d") + "\"\ndefault_quota_bytes = -1\n", "default_quota_bytes"},
      {"data_dir = \"" + dir.Sub("d") + "\"\nlog_level = \"loud\"\n", "log_level"},
      {"listen = \"127.0.0.1:0\"\n", "data_dir"},
      {"data_dir = [\n", "TOML"},
  };
  for (const Case& c : cases) {
    std::ofstream(dir.Sub("server.toml"), std::ios::trunc) << c.toml;
    std::string log = dir.Sub("out.log");
    std::ofstream(log, std::ios::trunc).close();
    int code = RunProgram({ServerBinary(), "--config", dir.Sub("server.toml"), "--token-file",
                           dir.Sub("token")},
                          log);
    EXPECT_EQ(code, 2) << c.toml;
    EXPECT_NE(ReadAll(log).find(c.key), std::string::npos) << ReadAll(log);
  }
  // No token at all.
  std::string log = dir.Sub("notoken.log");
  EXPECT_EQ(RunProgram({ServerBinary(), "--data-dir", dir.Sub("d")}, log), 2);
  EXPECT_NE(ReadAll(log).find("token"), std::string::npos);
}

}  // namespace
}  // namespace traincache::testing
