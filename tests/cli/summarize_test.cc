// How `traincache summarize` formats, sorts and renders (src/cli/summarize.h),
// without a server. Directory sums are the server's: see
// tests/server/scope_summary_test.cc.
#include "cli/summarize.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <limits>
#include <sstream>

namespace traincache::cli {
namespace {

constexpr int64_t kMay1 = 1714564800;  // 2024-05-01T12:00:00Z

TEST(HumanSizeTest, BytesThenThousandsWithTwoDecimals) {
  EXPECT_EQ(HumanSize(0), "0 B");
  EXPECT_EQ(HumanSize(1), "1 B");
  EXPECT_EQ(HumanSize(999), "999 B");
  EXPECT_EQ(HumanSize(1000), "1.00 KB");
  EXPECT_EQ(HumanSize(1024), "1.02 KB");
  EXPECT_EQ(HumanSize(1005), "1.01 KB");  // Half up, in integers.
  EXPECT_EQ(HumanSize(104857600), "104.86 MB");
  EXPECT_EQ(HumanSize(999'994), "999.99 KB");
  EXPECT_EQ(HumanSize(999'995), "1.00 MB");  // Not "1000.00 KB".
  EXPECT_EQ(HumanSize(1'500'000'000), "1.50 GB");
  EXPECT_EQ(HumanSize(1'000'000'000'000), "1.00 TB");
  EXPECT_EQ(HumanSize(5'000'000'000'000'000), "5000.00 TB");  // TB is the largest unit.
  EXPECT_EQ(HumanSize(std::numeric_limits<uint64_t>::max()), "18446744.07 TB");
}

TEST(PermissionsStringTest, AsLsShowsThem) {
  EXPECT_EQ(PermissionsString(S_IFREG | 0644), "-rw-r--r--");
  EXPECT_EQ(PermissionsString(S_IFDIR | 0755), "drwxr-xr-x");
  EXPECT_EQ(PermissionsString(S_IFLNK | 0777), "lrwxrwxrwx");
  EXPECT_EQ(PermissionsString(S_IFREG | 0000), "----------");
  EXPECT_EQ(PermissionsString(S_IFREG | 0600), "-rw-------");
  EXPECT_EQ(PermissionsString(S_IFREG | 04755), "-rwsr-xr-x");
  EXPECT_EQ(PermissionsString(S_IFREG | 04644), "-rwSr--r--");
  EXPECT_EQ(PermissionsString(S_IFREG | 02755), "-rwxr-sr-x");
  EXPECT_EQ(PermissionsString(S_IFDIR | 01777), "drwxrwxrwt");
  EXPECT_EQ(PermissionsString(S_IFDIR | 01770), "drwxrwx--T");
  EXPECT_EQ(PermissionsString(S_IFIFO | 0644), "prw-r--r--");
}

TEST(TypeNameTest, FileDirectorySymlinkOther) {
  EXPECT_EQ(TypeName(S_IFREG | 0644), "file");
  EXPECT_EQ(TypeName(S_IFDIR | 0755), "directory");
  EXPECT_EQ(TypeName(S_IFLNK | 0777), "symlink");
  EXPECT_EQ(TypeName(S_IFIFO | 0644), "other");
}

TEST(FormatTimeTest, UtcIsoAndTable) {
  EXPECT_EQ(FormatTime(0, true), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatTime(kMay1, true), "2024-05-01T12:00:00Z");
  EXPECT_EQ(FormatTime(kMay1, false), "2024-05-01 12:00:00");
  EXPECT_EQ(FormatTime(std::numeric_limits<int64_t>::max(), true),
            "@" + std::to_string(std::numeric_limits<int64_t>::max()));
}

TEST(ParseTest, FlagValues) {
  EXPECT_EQ(ParseSortKey("filepath"), SortKey::kFilePath);
  EXPECT_EQ(ParseSortKey("size"), SortKey::kSize);
  EXPECT_EQ(ParseSortKey("modified"), SortKey::kModified);
  EXPECT_EQ(ParseSortKey("type"), SortKey::kType);
  EXPECT_EQ(ParseSortKey("permissions"), SortKey::kPermissions);
  EXPECT_EQ(ParseSortKey("name"), std::nullopt);
  EXPECT_EQ(ParseOutputFormat("cli-table"), OutputFormat::kTable);
  EXPECT_EQ(ParseOutputFormat("csv"), OutputFormat::kCsv);
  EXPECT_EQ(ParseOutputFormat("json"), OutputFormat::kJson);
  EXPECT_EQ(ParseOutputFormat("table"), std::nullopt);
}

// Rows whose keys tie in places, so the path tie-break shows.
std::vector<SummaryRow> SortFixture() {
  return {
      {"b.bin", 300, {kMay1 + 10, 0}, S_IFREG | 0644},
      {"a", 500, {kMay1, 0}, S_IFDIR | 0755},
      {"a/x", 500, {kMay1 + 10, 5}, S_IFREG | 0600},
      {"link", 6, {kMay1 + 10, 0}, S_IFLNK | 0777},
      {"A.txt", 0, {kMay1 - 5, 0}, S_IFREG | 0644},
      {"a.txt", 300, {kMay1 + 10, 0}, S_IFREG | 0755},
  };
}

std::vector<std::string> SortedPaths(SortKey key, bool descending) {
  std::vector<SummaryRow> rows = SortFixture();
  SortRows(rows, key, descending);
  std::vector<std::string> paths;
  for (const SummaryRow& r : rows) paths.push_back(r.path);
  return paths;
}

using Paths = std::vector<std::string>;

TEST(SortRowsTest, ByFilePath) {
  // Bytewise: uppercase before lowercase, '.' (0x2e) before '/' (0x2f).
  EXPECT_EQ(SortedPaths(SortKey::kFilePath, false),
            (Paths{"A.txt", "a", "a.txt", "a/x", "b.bin", "link"}));
  EXPECT_EQ(SortedPaths(SortKey::kFilePath, true),
            (Paths{"link", "b.bin", "a/x", "a.txt", "a", "A.txt"}));
}

TEST(SortRowsTest, BySizeTiesByPathAscending) {
  EXPECT_EQ(SortedPaths(SortKey::kSize, false),
            (Paths{"A.txt", "link", "a.txt", "b.bin", "a", "a/x"}));
  EXPECT_EQ(SortedPaths(SortKey::kSize, true),
            (Paths{"a", "a/x", "a.txt", "b.bin", "link", "A.txt"}));
}

TEST(SortRowsTest, ByModifiedToTheNanosecond) {
  EXPECT_EQ(SortedPaths(SortKey::kModified, false),
            (Paths{"A.txt", "a", "a.txt", "b.bin", "link", "a/x"}));
  EXPECT_EQ(SortedPaths(SortKey::kModified, true),
            (Paths{"a/x", "a.txt", "b.bin", "link", "a", "A.txt"}));
}

TEST(SortRowsTest, ByType) {
  // "directory" < "file" < "symlink".
  EXPECT_EQ(SortedPaths(SortKey::kType, false),
            (Paths{"a", "A.txt", "a.txt", "a/x", "b.bin", "link"}));
  EXPECT_EQ(SortedPaths(SortKey::kType, true),
            (Paths{"link", "A.txt", "a.txt", "a/x", "b.bin", "a"}));
}

TEST(SortRowsTest, ByPermissionsAsShown) {
  // "-rw-------" < "-rw-r--r--" < "-rwxr-xr-x" < "drwxr-xr-x" < "lrwxrwxrwx".
  EXPECT_EQ(SortedPaths(SortKey::kPermissions, false),
            (Paths{"a/x", "A.txt", "b.bin", "a.txt", "a", "link"}));
  EXPECT_EQ(SortedPaths(SortKey::kPermissions, true),
            (Paths{"link", "a", "a.txt", "A.txt", "b.bin", "a/x"}));
}

TEST(SortRowsTest, EmptyAndSingle) {
  std::vector<SummaryRow> none;
  SortRows(none, SortKey::kSize, true);
  EXPECT_TRUE(none.empty());
  std::vector<SummaryRow> one = {{"x", 1, {}, S_IFREG | 0644}};
  SortRows(one, SortKey::kPermissions, false);
  EXPECT_EQ(one[0].path, "x");
}

TEST(CsvFieldTest, QuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(CsvField("models/a.bin"), "models/a.bin");
  EXPECT_EQ(CsvField("a,b.bin"), "\"a,b.bin\"");
  EXPECT_EQ(CsvField("say \"hi\".txt"), "\"say \"\"hi\"\".txt\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(CsvField("cr\r"), "\"cr\r\"");
  EXPECT_EQ(CsvField(""), "");
}

TEST(JsonStringTest, EscapesAndKeepsUtf8Valid) {
  EXPECT_EQ(JsonString("plain/path.bin"), "\"plain/path.bin\"");
  EXPECT_EQ(JsonString("q\"b\\"), "\"q\\\"b\\\\\"");
  EXPECT_EQ(JsonString("a\nb\tc\rd\be\ff"), "\"a\\nb\\tc\\rd\\be\\ff\"");
  EXPECT_EQ(JsonString(std::string("\x01\x1f\x7f", 3)), "\"\\u0001\\u001f\x7f\"");
  EXPECT_EQ(JsonString(std::string("nul\0x", 5)), "\"nul\\u0000x\"");
  EXPECT_EQ(JsonString("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");  // Valid UTF-8 as is.
  EXPECT_EQ(JsonString("bad\xff"), "\"bad\\ufffd\"");
  EXPECT_EQ(JsonString("cut\xc3"), "\"cut\\ufffd\"");              // Truncated sequence.
  EXPECT_EQ(JsonString("\xc0\xaf"), "\"\\ufffd\\ufffd\"");         // Overlong '/'.
  EXPECT_EQ(JsonString("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");  // A surrogate.
  EXPECT_EQ(JsonString("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");  // > U+10FFFF.
}

Summary SmallSummary() {
  Summary s;
  s.kind = "project";
  s.id = "p1";
  s.captured_at = kMay1 + 3600;
  s.total_files = 2;
  s.total_size = 104857600 + 999;
  s.rows = {
      {"models", 104857600, {kMay1, 0}, S_IFDIR | 0755},
      {"models/a,\"b\".bin", 104857600, {kMay1 + 60, 0}, S_IFREG | 0644},
      {"notes.txt", 999, {kMay1 + 120, 0}, S_IFREG | 0600},
  };
  return s;
}

TEST(RenderTest, Table) {
  std::ostringstream out;
  Render(SmallSummary(), OutputFormat::kTable, out);
  EXPECT_EQ(out.str(),
            "Project:     p1\n"
            "Captured at: 2024-05-01 13:00:00 UTC\n"
            "Total files: 2\n"
            "Total size:  104.86 MB\n"
            "\n"
            "+------------------+-----------+---------------------+-----------+-------------+\n"
            "| File Path        |      Size | Modified            | Type      | Permissions |\n"
            "+------------------+-----------+---------------------+-----------+-------------+\n"
            "| models           | 104.86 MB | 2024-05-01 12:00:00 | directory | drwxr-xr-x  |\n"
            "| models/a,\"b\".bin | 104.86 MB | 2024-05-01 12:01:00 | file      | -rw-r--r--  |\n"
            "| notes.txt        |     999 B | 2024-05-01 12:02:00 | file      | -rw-------  |\n"
            "+------------------+-----------+---------------------+-----------+-------------+\n");
}

TEST(RenderTest, TableShowsControlCharactersAsQuestionMarksAndCountsCodePoints) {
  Summary s;
  s.kind = "team";
  s.id = "t1";
  s.rows = {{"caf\xc3\xa9\n\xff", 1, {kMay1, 0}, S_IFREG | 0644}};
  std::ostringstream out;
  RenderTable(s, out);
  EXPECT_NE(out.str().find("Team:        t1\n"), std::string::npos) << out.str();
  // "café??" is 6 columns wide, like the 9 of "File Path" minus 3.
  EXPECT_NE(out.str().find("| caf\xc3\xa9??    | "), std::string::npos) << out.str();
}

TEST(RenderTest, EmptyTableHasHeaderOnly) {
  Summary s;
  s.kind = "project";
  s.id = "empty";
  std::ostringstream out;
  RenderTable(s, out);
  EXPECT_NE(out.str().find("Total files: 0\nTotal size:  0 B\n"), std::string::npos);
  EXPECT_EQ(out.str().substr(out.str().find("+-")),
            "+-----------+------+----------+------+-------------+\n"
            "| File Path | Size | Modified | Type | Permissions |\n"
            "+-----------+------+----------+------+-------------+\n");
}

TEST(RenderTest, Csv) {
  std::ostringstream out;
  Render(SmallSummary(), OutputFormat::kCsv, out);
  EXPECT_EQ(out.str(),
            "File Path,Size,Modified,Type,Permissions\n"
            "models,104.86 MB,2024-05-01T12:00:00Z,directory,drwxr-xr-x\n"
            "\"models/a,\"\"b\"\".bin\",104.86 MB,2024-05-01T12:01:00Z,file,-rw-r--r--\n"
            "notes.txt,999 B,2024-05-01T12:02:00Z,file,-rw-------\n");
}

TEST(RenderTest, Json) {
  std::ostringstream out;
  Render(SmallSummary(), OutputFormat::kJson, out);
  EXPECT_EQ(out.str(),
            "{\n"
            "  \"timestamp\": \"2024-05-01T13:00:00Z\",\n"
            "  \"project_id\": \"p1\",\n"
            "  \"total_files\": 2,\n"
            "  \"total_size_bytes\": 104858599,\n"
            "  \"total_size_human_readable\": \"104.86 MB\",\n"
            "  \"files\": [\n"
            "    {\"path\": \"models\", \"size_bytes\": 104857600, \"size_human_readable\": "
            "\"104.86 MB\", \"modified\": \"2024-05-01T12:00:00Z\", \"type\": \"directory\", "
            "\"permissions\": \"drwxr-xr-x\"},\n"
            "    {\"path\": \"models/a,\\\"b\\\".bin\", \"size_bytes\": 104857600, "
            "\"size_human_readable\": \"104.86 MB\", \"modified\": \"2024-05-01T12:01:00Z\", "
            "\"type\": \"file\", \"permissions\": \"-rw-r--r--\"},\n"
            "    {\"path\": \"notes.txt\", \"size_bytes\": 999, \"size_human_readable\": \"999 B\", "
            "\"modified\": \"2024-05-01T12:02:00Z\", \"type\": \"file\", \"permissions\": "
            "\"-rw-------\"}\n"
            "  ]\n"
            "}\n");
}

TEST(RenderTest, JsonWithoutFiles) {
  Summary s;
  s.kind = "project";
  s.id = "empty";
  std::ostringstream out;
  RenderJson(s, out);
  EXPECT_EQ(out.str(),
            "{\n"
            "  \"timestamp\": \"1970-01-01T00:00:00Z\",\n"
            "  \"project_id\": \"empty\",\n"
            "  \"total_files\": 0,\n"
            "  \"total_size_bytes\": 0,\n"
            "  \"total_size_human_readable\": \"0 B\",\n"
            "  \"files\": []\n"
            "}\n");
}

}  // namespace
}  // namespace traincache::cli
