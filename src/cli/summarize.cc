#include "cli/summarize.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <ctime>
#include <numeric>

namespace traincache::cli {
namespace {

// Length of the well-formed UTF-8 sequence starting at s[i], 0 if there is
// none (a stray continuation byte, a truncated sequence, an overlong form, a
// surrogate or a code point past U+10FFFF). `cp` receives the code point.
size_t Utf8Sequence(std::string_view s, size_t i, uint32_t* cp) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n;
  uint32_t min;
  if ((c & 0xE0) == 0xC0) {
    n = 2, *cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, *cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, *cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    *cp = (*cp << 6) | (cc & 0x3F);
  }
  if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
  return n;
}

bool IsControl(uint32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

// A path as the table shows it, and its width in columns (one per code point:
// right for the names training caches hold; wide CJK glyphs would be off).
struct TableText {
  std::string text;
  size_t width = 0;
};
TableText ForTable(std::string_view s) {
  TableText out;
  out.text.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    size_t n = Utf8Sequence(s, i, &cp);
    if (n == 0 || IsControl(cp)) {
      out.text.push_back('?');
      i += n == 0 ? 1 : n;
    } else {
      out.text.append(s.substr(i, n));
      i += n;
    }
    ++out.width;
  }
  return out;
}

std::string_view KindTitle(std::string_view kind) { return kind == "team" ? "Team" : "Project"; }

}  // namespace

std::optional<SortKey> ParseSortKey(std::string_view text) {
  if (text == "filepath") return SortKey::kFilePath;
  if (text == "size") return SortKey::kSize;
  if (text == "modified") return SortKey::kModified;
  if (text == "type") return SortKey::kType;
  if (text == "permissions") return SortKey::kPermissions;
  return std::nullopt;
}

std::optional<OutputFormat> ParseOutputFormat(std::string_view text) {
  if (text == "cli-table") return OutputFormat::kTable;
  if (text == "csv") return OutputFormat::kCsv;
  if (text == "json") return OutputFormat::kJson;
  return std::nullopt;
}

std::string HumanSize(uint64_t bytes) {
  static constexpr std::array<const char*, 5> kUnits = {"B", "KB", "MB", "GB", "TB"};
  if (bytes < 1000) return fmt::format("{} B", bytes);
  size_t unit = 1;
  uint64_t div = 1000;
  while (unit + 1 < kUnits.size() && bytes / div >= 1000) ++unit, div *= 1000;
  // Hundredths of the unit, rounded half up, in integers: no binary-fraction
  // surprises such as 1.005 printing as 1.00. r * 100 < 1e17: no overflow.
  auto hundredths = [&] {
    uint64_t q = bytes / div, r = bytes % div;
    return q * 100 + (r * 100 + div / 2) / div;
  };
  uint64_t h = hundredths();
  if (h >= 100'000 && unit + 1 < kUnits.size()) {  // 999.995 KB rounds to 1.00 MB, not 1000.00 KB.
    ++unit, div *= 1000;
    h = hundredths();
  }
  return fmt::format("{}.{:02d} {}", h / 100, h % 100, kUnits[unit]);
}

std::string PermissionsString(uint32_t mode) {
  std::string s(10, '-');
  switch (mode & S_IFMT) {
    case S_IFDIR: s[0] = 'd'; break;
    case S_IFLNK: s[0] = 'l'; break;
    case S_IFIFO: s[0] = 'p'; break;
    case S_IFSOCK: s[0] = 's'; break;
    case S_IFCHR: s[0] = 'c'; break;
    case S_IFBLK: s[0] = 'b'; break;
    default: break;  // Regular files, and anything unknown, as ls: '-'.
  }
  static constexpr char kRwx[] = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i) {
    if (mode & (0400u >> i)) s[1 + i] = kRwx[i];
  }
  // The special bits take the execute slot: lowercase if execute is set too.
  auto special = [&](uint32_t bit, int pos, char with_x) {
    if (mode & bit) s[pos] = s[pos] == 'x' ? with_x : static_cast<char>(with_x - 'a' + 'A');
  };
  special(S_ISUID, 3, 's');
  special(S_ISGID, 6, 's');
  special(S_ISVTX, 9, 't');
  return s;
}

std::string_view TypeName(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    default: return "other";
  }
}

std::string FormatTime(int64_t sec, bool iso) {
  time_t t = static_cast<time_t>(sec);
  struct tm tm;
  if (gmtime_r(&t, &tm) == nullptr || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
    return fmt::format("@{}", sec);
  }
  return fmt::format("{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, iso ? "T" : " ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, iso ? "Z" : "");
}

void SortRows(std::vector<SummaryRow>& rows, SortKey key, bool descending) {
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), size_t{0});
  auto sort_by = [&](auto key_of) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const auto ka = key_of(a);
      const auto kb = key_of(b);
      if (ka != kb) return descending ? kb < ka : ka < kb;
      return rows[a].path < rows[b].path;  // std::string compares bytes unsigned.
    });
  };
  switch (key) {
    case SortKey::kFilePath:
      sort_by([&](size_t i) { return std::string_view(rows[i].path); });
      break;
    case SortKey::kSize:
      sort_by([&](size_t i) { return rows[i].size; });
      break;
    case SortKey::kModified:
      sort_by([&](size_t i) { return rows[i].mtime; });
      break;
    case SortKey::kType:
      sort_by([&](size_t i) { return TypeName(rows[i].mode); });
      break;
    case SortKey::kPermissions: {
      // By the string shown (what a reader sees sorted), made once per row.
      std::vector<std::string> perms(rows.size());
      for (size_t i = 0; i < rows.size(); ++i) perms[i] = PermissionsString(rows[i].mode);
      sort_by([&](size_t i) { return std::string_view(perms[i]); });
      break;
    }
  }
  std::vector<SummaryRow> sorted;
  sorted.reserve(rows.size());
  for (size_t i : order) sorted.push_back(std::move(rows[i]));
  rows.swap(sorted);
}

std::string JsonString(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    size_t n = Utf8Sequence(text, i, &cp);
    if (n == 0) {
      out.append("\\ufffd");  // Not UTF-8: JSON text must be.
      ++i;
      continue;
    }
    switch (cp) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (cp < 0x20) {
          out.append(fmt::format("\\u{:04x}", cp));
        } else {
          out.append(text.substr(i, n));
        }
    }
    i += n;
  }
  out.push_back('"');
  return out;
}

std::string CsvField(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

void RenderTable(const Summary& summary, std::ostream& out) {
  const std::string kind = std::string(KindTitle(summary.kind)) + ":";
  out << fmt::format("{:<13}{}\n", kind, ForTable(summary.id).text)
      << fmt::format("{:<13}{} UTC\n", "Captured at:", FormatTime(summary.captured_at, false))
      << fmt::format("{:<13}{}\n", "Total files:", summary.total_files)
      << fmt::format("{:<13}{}\n\n", "Total size:", HumanSize(summary.total_size));

  static constexpr std::array<std::string_view, 5> kHeads = {"File Path", "Size", "Modified",
                                                             "Type", "Permissions"};
  // Widths first (a second pass over the rows; nothing per row is kept).
  std::array<size_t, 5> w = {kHeads[0].size(), kHeads[1].size(), kHeads[2].size(),
                             kHeads[3].size(), kHeads[4].size()};
  for (const SummaryRow& r : summary.rows) {
    w[0] = std::max(w[0], ForTable(r.path).width);
    w[1] = std::max(w[1], HumanSize(r.size).size());
    w[2] = std::max<size_t>(w[2], FormatTime(r.mtime.sec, false).size());
    w[3] = std::max(w[3], TypeName(r.mode).size());
    w[4] = std::max<size_t>(w[4], 10);
  }
  std::string rule = "+";
  for (size_t c : w) rule.append(c + 2, '-').append("+");
  rule.push_back('\n');

  // Left-aligned by display width (not bytes), except Size on the right.
  auto line = [&](std::string_view path, size_t path_width, std::string_view size,
                  std::string_view modified, std::string_view type, std::string_view perms) {
    std::string s = "| ";
    s.append(path).append(w[0] - path_width, ' ').append(" | ");
    s.append(w[1] - size.size(), ' ').append(size).append(" | ");
    s.append(modified).append(w[2] - modified.size(), ' ').append(" | ");
    s.append(type).append(w[3] - type.size(), ' ').append(" | ");
    s.append(perms).append(w[4] - perms.size(), ' ').append(" |\n");
    out << s;
  };
  out << rule;
  line(kHeads[0], kHeads[0].size(), kHeads[1], kHeads[2], kHeads[3], kHeads[4]);
  out << rule;
  for (const SummaryRow& r : summary.rows) {
    TableText path = ForTable(r.path);
    line(path.text, path.width, HumanSize(r.size), FormatTime(r.mtime.sec, false),
         TypeName(r.mode), PermissionsString(r.mode));
  }
  if (!summary.rows.empty()) out << rule;
}

void RenderCsv(const Summary& summary, std::ostream& out) {
  out << "File Path,Size,Modified,Type,Permissions\n";
  for (const SummaryRow& r : summary.rows) {
    out << CsvField(r.path) << ',' << HumanSize(r.size) << ',' << FormatTime(r.mtime.sec, true)
        << ',' << TypeName(r.mode) << ',' << PermissionsString(r.mode) << '\n';
  }
}

void RenderJson(const Summary& summary, std::ostream& out) {
  out << "{\n"
      << "  \"timestamp\": " << JsonString(FormatTime(summary.captured_at, true)) << ",\n"
      << "  \"project_id\": " << JsonString(summary.id) << ",\n"
      << "  \"total_files\": " << summary.total_files << ",\n"
      << "  \"total_size_bytes\": " << summary.total_size << ",\n"
      << "  \"total_size_human_readable\": " << JsonString(HumanSize(summary.total_size))
      << ",\n";
  if (summary.rows.empty()) {
    out << "  \"files\": []\n}\n";
    return;
  }
  // One file per line: a million files stay a million lines.
  out << "  \"files\": [\n";
  for (size_t i = 0; i < summary.rows.size(); ++i) {
    const SummaryRow& r = summary.rows[i];
    out << fmt::format(
        "    {{\"path\": {}, \"size_bytes\": {}, \"size_human_readable\": {}, \"modified\": {}, "
        "\"type\": {}, \"permissions\": {}}}{}\n",
        JsonString(r.path), r.size, JsonString(HumanSize(r.size)),
        JsonString(FormatTime(r.mtime.sec, true)), JsonString(TypeName(r.mode)),
        JsonString(PermissionsString(r.mode)), i + 1 < summary.rows.size() ? "," : "");
  }
  out << "  ]\n}\n";
}

void Render(const Summary& summary, OutputFormat format, std::ostream& out) {
  switch (format) {
    case OutputFormat::kTable: RenderTable(summary, out); break;
    case OutputFormat::kCsv: RenderCsv(summary, out); break;
    case OutputFormat::kJson: RenderJson(summary, out); break;
  }
}

}  // namespace traincache::cli
