// `traincache summarize` end to end: a real traincache-server holding a fixed
// tree (directories, files of known sizes, a hard link, a symlink, fixed
// mtimes), and the real `traincache` binary printing it as a table, CSV and
// JSON, sorted every way; unknown and malformed ids. Only the captured-at
// time is normalized before comparing.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "integration/remote_fs.h"
#include "testing/server_process.h"
#include "testing/temp_dir.h"

namespace traincache::testing {
namespace {

constexpr int64_t kT = 1714564800;  // 2024-05-01T12:00:00Z

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Replaces the one time that changes from run to run by "<captured>".
std::string NormalizeCapturedAt(std::string text) {
  const std::pair<std::string, std::string> fields[] = {{"Captured at: ", " UTC\n"},
                                                        {"\"timestamp\": \"", "\""}};
  for (const auto& [key, until] : fields) {
    size_t at = text.find(key);
    if (at == std::string::npos) continue;
    at += key.size();
    size_t end = text.find(until, at);
    if (end != std::string::npos) text.replace(at, end - at, "<captured>");
  }
  return text;
}

// The paths of a CSV listing (first column; the fixture's commas are quoted).
std::vector<std::string> CsvPaths(const std::string& csv) {
  std::vector<std::string> paths;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);  // Header.
  while (std::getline(in, line)) {
    if (line.starts_with("\"")) {
      std::string path;
      size_t i = 1;
      for (; i < line.size(); ++i) {
        if (line[i] == '"' && i + 1 < line.size() && line[i + 1] == '"') {
          path.push_back('"');
          ++i;
        } else if (line[i] == '"') {
          break;
        } else {
          path.push_back(line[i]);
        }
      }
      paths.push_back(path);
    } else {
      paths.push_back(line.substr(0, line.find(',')));
    }
  }
  return paths;
}

class SummarizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(dir_.Sub("data"), dir_.path());
    ASSERT_TRUE(server_->Start().ok()) << "see " << server_->log_file();
    client_ = server_->Client();
  }
  void TearDown() override {
    client_.reset();
    if (server_->running()) {
      EXPECT_NE(server_->Stop(), -1);
    }
  }

  struct Result {
    int code;
    std::string out, err;
  };
  Result Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {CliBinary(), "--server", server_->address(), "--token-file",
                                     server_->token_file()};
    argv.insert(argv.end(), args.begin(), args.end());
    Result r;
    r.code = RunProgramSplit(argv, dir_.Sub("cli.out"), dir_.Sub("cli.err"), 120);
    r.out = Slurp(dir_.Sub("cli.out"));
    r.err = Slurp(dir_.Sub("cli.err"));
    return r;
  }

  absl::Status SetTimes(RemoteFs& fs, InodeId ino, int64_t mtime) {
    v1::SetAttrRequest req;
    req.set_scope(fs.scope().ToString());
    req.set_ino(ino);
    req.mutable_mtime()->set_sec(mtime);
    v1::AttrResponse resp;
    return client_->Call(&v1::Namespace::Stub::SetAttr, client_->ns(), req, &resp);
  }
  absl::Status SetSize(RemoteFs& fs, InodeId ino, uint64_t size) {
    v1::SetAttrRequest req;
    req.set_scope(fs.scope().ToString());
    req.set_ino(ino);
    req.set_size(size);
    v1::AttrResponse resp;
    return client_->Call(&v1::Namespace::Stub::SetAttr, client_->ns(), req, &resp);
  }

  // project:p1:
  //   empty/                      0700, 12:07
  //   latest -> models/llama            12:06
  //   models/                     0755, 12:00
  //   models/a,"b".bin            1000 bytes (a hole), 0600, 12:04
  //   models/llama/               0750, 12:01
  //   models/llama/tok.json       12 bytes written, 12:03
  //   models/llama/w.bin          100 MiB (a hole), 12:02, hard-linked as w-hard.bin
  //   notes.txt                   999 bytes written, 12:05
  //   w-hard.bin                  the same inode as models/llama/w.bin
  void BuildTree() {
    RemoteFs fs(client_.get(), *Scope::Parse("project:p1"));
    ASSERT_TRUE(fs.Open().ok());
    auto models = fs.Mkdir(kRootInode, "models", 0755);
    ASSERT_TRUE(models.ok()) << models.status();
    auto llama = fs.Mkdir(models->ino, "llama", 0750);
    ASSERT_TRUE(llama.ok());
    auto empty = fs.Mkdir(kRootInode, "empty", 0700);
    ASSERT_TRUE(empty.ok());
    auto w = fs.Create(llama->ino, "w.bin");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(SetSize(fs, w->ino, 104857600).ok());
    auto tok = fs.Create(llama->ino, "tok.json");
    ASSERT_TRUE(tok.ok());
    ASSERT_TRUE(fs.Write(tok->ino, "hello world\n").ok());
    auto ab = fs.Create(models->ino, "a,\"b\".bin", true, 0600);
    ASSERT_TRUE(ab.ok());
    ASSERT_TRUE(SetSize(fs, ab->ino, 1000).ok());
    auto notes = fs.Create(kRootInode, "notes.txt");
    ASSERT_TRUE(notes.ok());
    ASSERT_TRUE(fs.Write(notes->ino, std::string(999, 'n')).ok());
    auto latest = fs.Symlink(kRootInode, "latest", "models/llama");
    ASSERT_TRUE(latest.ok());
    ASSERT_TRUE(fs.Link(w->ino, kRootInode, "w-hard.bin").ok());
    // Times last: creating entries moves their directory's mtime.
    const std::vector<std::pair<InodeId, int64_t>> times = {
        {models->ino, kT},       {llama->ino, kT + 60},  {w->ino, kT + 120},
        {tok->ino, kT + 180},    {ab->ino, kT + 240},    {notes->ino, kT + 300},
        {latest->ino, kT + 360}, {empty->ino, kT + 420},
    };
    for (const auto& [ino, t] : times) ASSERT_TRUE(SetTimes(fs, ino, t).ok()) << ino;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<rpc::ServerClient> client_;
};

TEST_F(SummarizeTest, TableCsvAndJson) {
  ASSERT_NO_FATAL_FAILURE(BuildTree());

  Result table = Cli({"summarize", "p1"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_EQ(table.err, "");
  EXPECT_EQ(NormalizeCapturedAt(table.out),
            "Project:     p1\n"
            "Captured at: <captured> UTC\n"
            "Total files: 5\n"
            "Total size:  104.86 MB\n"
            "\n"
            "+-----------------------+-----------+---------------------+-----------+-------------+\n"
            "| File Path             |      Size | Modified            | Type      | Permissions |\n"
            "+-----------------------+-----------+---------------------+-----------+-------------+\n"
            "| empty                 |       0 B | 2024-05-01 12:07:00 | directory | drwx------  |\n"
            "| latest                |      12 B | 2024-05-01 12:06:00 | symlink   | lrwxrwxrwx  |\n"
            "| models                | 104.86 MB | 2024-05-01 12:00:00 | directory | drwxr-xr-x  |\n"
            "| models/a,\"b\".bin      |   1.00 KB | 2024-05-01 12:04:00 | file      | -rw-------  |\n"
            "| models/llama          | 104.86 MB | 2024-05-01 12:01:00 | directory | drwxr-x---  |\n"
            "| models/llama/tok.json |      12 B | 2024-05-01 12:03:00 | file      | -rw-r--r--  |\n"
            "| models/llama/w.bin    | 104.86 MB | 2024-05-01 12:02:00 | file      | -rw-r--r--  |\n"
            "| notes.txt             |     999 B | 2024-05-01 12:05:00 | file      | -rw-r--r--  |\n"
            "| w-hard.bin            | 104.86 MB | 2024-05-01 12:02:00 | file      | -rw-r--r--  |\n"
            "+-----------------------+-----------+---------------------+-----------+-------------+\n");

  Result csv = Cli({"summarize", "p1", "-o", "csv"});
  ASSERT_EQ(csv.code, 0) << csv.err;
  EXPECT_EQ(csv.out,
            "File Path,Size,Modified,Type,Permissions\n"
            "empty,0 B,2024-05-01T12:07:00Z,directory,drwx------\n"
            "latest,12 B,2024-05-01T12:06:00Z,symlink,lrwxrwxrwx\n"
            "models,104.86 MB,2024-05-01T12:00:00Z,directory,drwxr-xr-x\n"
            "\"models/a,\"\"b\"\".bin\",1.00 KB,2024-05-01T12:04:00Z,file,-rw-------\n"
            "models/llama,104.86 MB,2024-05-01T12:01:00Z,directory,drwxr-x---\n"
            "models/llama/tok.json,12 B,2024-05-01T12:03:00Z,file,-rw-r--r--\n"
            "models/llama/w.bin,104.86 MB,2024-05-01T12:02:00Z,file,-rw-r--r--\n"
            "notes.txt,999 B,2024-05-01T12:05:00Z,file,-rw-r--r--\n"
            "w-hard.bin,104.86 MB,2024-05-01T12:02:00Z,file,-rw-r--r--\n");

  Result json = Cli({"summarize", "p1", "--output-format", "json"});
  ASSERT_EQ(json.code, 0) << json.err;
  // Directory sizes: llama = 104857600 + 12; models = llama + 1000. Totals
  // count the hard-linked inode once: 104857600 + 12 + 1000 + 999 + 12.
  auto file = [](std::string path, uint64_t size, std::string human, std::string modified,
                 std::string type, std::string perms) {
    return "    {\"path\": \"" + path + "\", \"size_bytes\": " + std::to_string(size) +
           ", \"size_human_readable\": \"" + human + "\", \"modified\": \"2024-05-01T" +
           modified + "Z\", \"type\": \"" + type + "\", \"permissions\": \"" + perms + "\"}";
  };
  EXPECT_EQ(NormalizeCapturedAt(json.out),
            "{\n"
            "  \"timestamp\": \"<captured>\",\n"
            "  \"project_id\": \"p1\",\n"
            "  \"total_files\": 5,\n"
            "  \"total_size_bytes\": 104859623,\n"
            "  \"total_size_human_readable\": \"104.86 MB\",\n"
            "  \"files\": [\n" +
                file("empty", 0, "0 B", "12:07:00", "directory", "drwx------") + ",\n" +
                file("latest", 12, "12 B", "12:06:00", "symlink", "lrwxrwxrwx") + ",\n" +
                file("models", 104858612, "104.86 MB", "12:00:00", "directory", "drwxr-xr-x") +
                ",\n" +
                file("models/a,\\\"b\\\".bin", 1000, "1.00 KB", "12:04:00", "file",
                     "-rw-------") +
                ",\n" +
                file("models/llama", 104857612, "104.86 MB", "12:01:00", "directory",
                     "drwxr-x---") +
                ",\n" +
                file("models/llama/tok.json", 12, "12 B", "12:03:00", "file", "-rw-r--r--") +
                ",\n" +
                file("models/llama/w.bin", 104857600, "104.86 MB", "12:02:00", "file",
                     "-rw-r--r--") +
                ",\n" + file("notes.txt", 999, "999 B", "12:05:00", "file", "-rw-r--r--") +
                ",\n" +
                file("w-hard.bin", 104857600, "104.86 MB", "12:02:00", "file", "-rw-r--r--") +
                "\n"
                "  ]\n"
                "}\n");
  // The captured-at time is a real, recent UTC time in both forms.
  EXPECT_NE(json.out.find("\"timestamp\": \"20"), std::string::npos);
  EXPECT_NE(json.out.find("Z\",\n  \"project_id\""), std::string::npos);
}

TEST_F(SummarizeTest, SortsByEveryKeyBothWays) {
  ASSERT_NO_FATAL_FAILURE(BuildTree());
  using Paths = std::vector<std::string>;
  auto sorted = [&](std::string key, std::string order) {
    Result r = Cli({"summarize", "p1", "-o", "csv", "--sort", key, "--order", order});
    EXPECT_EQ(r.code, 0) << r.err;
    return CsvPaths(r.out);
  };
  const std::string ab = "models/a,\"b\".bin";
  EXPECT_EQ(sorted("filepath", "desc"),
            (Paths{"w-hard.bin", "notes.txt", "models/llama/w.bin", "models/llama/tok.json",
                   "models/llama", ab, "models", "latest", "empty"}));
  // Ties (the 100 MiB names, the 12-byte ones) by path ascending either way.
  EXPECT_EQ(sorted("size", "asc"),
            (Paths{"empty", "latest", "models/llama/tok.json", "notes.txt", ab,
                   "models/llama/w.bin", "w-hard.bin", "models/llama", "models"}));
  EXPECT_EQ(sorted("size", "desc"),
            (Paths{"models", "models/llama", "models/llama/w.bin", "w-hard.bin", ab, "notes.txt",
                   "latest", "models/llama/tok.json", "empty"}));
  EXPECT_EQ(sorted("modified", "asc"),
            (Paths{"models", "models/llama", "models/llama/w.bin", "w-hard.bin",
                   "models/llama/tok.json", ab, "notes.txt", "latest", "empty"}));
  EXPECT_EQ(sorted("modified", "desc"),
            (Paths{"empty", "latest", "notes.txt", ab, "models/llama/tok.json",
                   "models/llama/w.bin", "w-hard.bin", "models/llama", "models"}));
  EXPECT_EQ(sorted("type", "asc"),
            (Paths{"empty", "models", "models/llama", ab, "models/llama/tok.json",
                   "models/llama/w.bin", "notes.txt", "w-hard.bin", "latest"}));
  EXPECT_EQ(sorted("type", "desc"),
            (Paths{"latest", ab, "models/llama/tok.json", "models/llama/w.bin", "notes.txt",
                   "w-hard.bin", "empty", "models", "models/llama"}));
  // "-rw-------" < "-rw-r--r--" < "drwx------" < "drwxr-x---" < "drwxr-xr-x" < "lrwxrwxrwx".
  EXPECT_EQ(sorted("permissions", "asc"),
            (Paths{ab, "models/llama/tok.json", "models/llama/w.bin", "notes.txt", "w-hard.bin",
                   "empty", "models/llama", "models", "latest"}));
  EXPECT_EQ(sorted("permissions", "desc"),
            (Paths{"latest", "models", "models/llama", "empty", "models/llama/tok.json",
                   "models/llama/w.bin", "notes.txt", "w-hard.bin", ab}));
  // Defaults: filepath, asc; the table sorts like the CSV.
  Result table = Cli({"summarize", "p1", "--sort", "size", "--order", "desc"});
  ASSERT_EQ(table.code, 0);
  EXPECT_LT(table.out.find("| models "), table.out.find("| models/llama "));
  EXPECT_LT(table.out.find("| notes.txt "), table.out.find("| latest "));
}

TEST_F(SummarizeTest, TeamScopeAndEmptyScope) {
  RemoteFs team(client_.get(), *Scope::Parse("team:t1"));
  ASSERT_TRUE(team.Open().ok());
  Result json = Cli({"summarize", "--team", "t1", "-o", "json"});
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(NormalizeCapturedAt(json.out),
            "{\n"
            "  \"timestamp\": \"<captured>\",\n"
            "  \"project_id\": \"t1\",\n"
            "  \"total_files\": 0,\n"
            "  \"total_size_bytes\": 0,\n"
            "  \"total_size_human_readable\": \"0 B\",\n"
            "  \"files\": []\n"
            "}\n");
  auto f = team.Create(kRootInode, "shared.txt");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(team.Write(f->ino, "team data").ok());
  Result table = Cli({"summarize", "t1", "--team"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_TRUE(table.out.starts_with("Team:        t1\n")) << table.out;
  EXPECT_NE(table.out.find("| shared.txt |  9 B |"), std::string::npos) << table.out;
  // Without --team the id names a project, which does not exist.
  EXPECT_EQ(Cli({"summarize", "t1"}).code, 1);
}

TEST_F(SummarizeTest, UnknownProjectFailsAndIsNotCreated) {
  Result r = Cli({"summarize", "xyz"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("project xyz has no cache on this cluster"), std::string::npos) << r.err;
  Result team = Cli({"summarize", "--team", "xyz"});
  EXPECT_EQ(team.code, 1);
  EXPECT_NE(team.err.find("team xyz has no cache on this cluster"), std::string::npos) << team.err;

  v1::ListScopesResponse scopes;
  ASSERT_TRUE(client_->Call(&v1::Admin::Stub::ListScopes, client_->admin(), {}, &scopes).ok());
  std::set<std::string> names(scopes.scopes().begin(), scopes.scopes().end());
  EXPECT_EQ(names.count("project:xyz"), 0u);
  EXPECT_EQ(names.count("team:xyz"), 0u);
  RemoteFs fs(client_.get(), *Scope::Parse("project:xyz"));
  EXPECT_EQ(fs.Open(/*create=*/false).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SummarizeTest, MalformedIdsAndFlagsAreUsageErrors) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"summarize", "bad/id"},
           {"summarize", "project:p1"},  // The id alone, not the scope.
           {"summarize", "-lead"},
           {"summarize", std::string(129, 'a')},
           {"summarize"},
           {"summarize", "p1", "--sort", "name"},
           {"summarize", "p1", "--order", "up"},
           {"summarize", "p1", "-o", "yaml"},
       }) {
    Result r = Cli(args);
    EXPECT_EQ(r.code, 2) << args.back() << ": " << r.err;
    EXPECT_EQ(r.out, "") << args.back();
    EXPECT_NE(r.err, "") << args.back();
  }
  EXPECT_NE(Cli({"summarize", "bad/id"}).err.find("scope id must match"), std::string::npos);
  EXPECT_NE(Cli({"summarize", "p1", "--sort", "name"}).err.find("filepath,size,modified"),
            std::string::npos);
  // Nothing was created along the way.
  v1::ListScopesResponse scopes;
  ASSERT_TRUE(client_->Call(&v1::Admin::Stub::ListScopes, client_->admin(), {}, &scopes).ok());
  EXPECT_EQ(scopes.scopes_size(), 0);
}

}  // namespace
}  // namespace traincache::testing
