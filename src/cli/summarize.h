// The output of `traincache summarize`: a scope's listing (as the server's
// Summarize stream carries it, proto/traincache/v1/admin.proto) sorted as
// asked and rendered as a table for people, CSV or JSON for scripts.
//
// Conventions every format shares:
//   - sizes in 1000-based units with two decimals above bytes: "0 B", "999 B",
//     "1.00 KB", "104.86 MB" (104,857,600 bytes), up to TB (rounded half up);
//   - permissions as `ls -l` shows them: "-rw-r--r--", "drwxr-xr-x",
//     "lrwxrwxrwx" (setuid/setgid/sticky as s/S, t/T);
//   - type "file", "directory" or "symlink" ("other" for anything else);
//   - times in UTC: the table shows "2024-05-01 12:00:00", CSV and JSON
//     "2024-05-01T12:00:00Z" (RFC 3339);
//   - sorting is stable and breaks ties by path ascending, so output is
//     deterministic; --order desc reverses the chosen key only.
// Paths are bytes. JSON gets them as valid UTF-8 (an invalid byte becomes
// U+FFFD); CSV gets them as they are (RFC 4180 quoting); the table shows
// control characters as '?' so one name cannot break the layout.
//
// Pure functions over plain values, no I/O but the stream given; thread-safe.
#ifndef TRAINCACHE_CLI_SUMMARIZE_H_
#define TRAINCACHE_CLI_SUMMARIZE_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "traincache/types.h"

namespace traincache::cli {

struct SummaryRow {
  std::string path;   // Relative to the scope's root: "models/a.bin".
  uint64_t size = 0;  // Directories: the sum below them (computed by the server).
  Timespec mtime;
  uint32_t mode = 0;  // st_mode, type bits included.
};

struct Summary {
  std::string kind;         // "project" or "team".
  std::string id;           // The project (or team) id.
  int64_t captured_at = 0;  // Unix seconds.
  uint64_t total_files = 0;
  uint64_t total_size = 0;
  std::vector<SummaryRow> rows;
};

enum class SortKey { kFilePath, kSize, kModified, kType, kPermissions };
enum class OutputFormat { kTable, kCsv, kJson };

// The flag values: "filepath", "size", "modified", "type", "permissions";
// "cli-table", "csv", "json". nullopt for anything else.
std::optional<SortKey> ParseSortKey(std::string_view text);
std::optional<OutputFormat> ParseOutputFormat(std::string_view text);

// "104.86 MB" (see the top of this file).
std::string HumanSize(uint64_t bytes);
// "drwxr-xr-x".
std::string PermissionsString(uint32_t mode);
// "file", "directory", "symlink" or "other".
std::string_view TypeName(uint32_t mode);
// "2024-05-01T12:00:00Z" (iso) or "2024-05-01 12:00:00"; "@<sec>" if the
// seconds are out of the calendar's range.
std::string FormatTime(int64_t sec, bool iso);

// Sorts by `key` (ascending unless `descending`), ties by path ascending.
// O(n log n); the keys are computed once per row, not per comparison.
void SortRows(std::vector<SummaryRow>& rows, SortKey key, bool descending);

// Writes the whole summary in `format` to `out`.
void Render(const Summary& summary, OutputFormat format, std::ostream& out);
void RenderTable(const Summary& summary, std::ostream& out);
void RenderCsv(const Summary& summary, std::ostream& out);
void RenderJson(const Summary& summary, std::ostream& out);

// `text` as a JSON string literal, quotes included.
std::string JsonString(std::string_view text);
// `text` as one CSV field: quoted (quotes doubled) if it holds a comma, a
// quote, CR or LF; as is otherwise.
std::string CsvField(std::string_view text);

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_SUMMARIZE_H_
