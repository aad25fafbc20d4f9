// `traincache summarize <id> [--team]`: reads a scope's listing from the
// server's Summarize stream (proto/traincache/v1/admin.proto) and prints it
// through summarize.h. The server walks the scope and adds up directory
// sizes; this side only sorts and renders, so every sort order costs the
// server the same. The whole listing is held in memory to sort it (about
// 100 bytes a row plus the path: ~190 MB peak for a million entries).
//
// Thread-safe: no shared state.
#ifndef TRAINCACHE_CLI_SUMMARIZE_COMMAND_H_
#define TRAINCACHE_CLI_SUMMARIZE_COMMAND_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/summarize.h"
#include "rpc/client.h"
#include "traincache/scope.h"

namespace traincache::cli {

struct SummarizeCommand {
  std::string id;     // Project id, or team id with `team`.
  bool team = false;
  SortKey sort = SortKey::kFilePath;
  bool descending = false;
  OutputFormat format = OutputFormat::kTable;
};

// The listing of `scope` as the server streams it, unsorted. The server's
// status on failure (NOT_FOUND naming the scope if it has no cache);
// DATA_LOSS if the stream breaks its shape (no header first, fewer or more
// entries than the header announced).
absl::StatusOr<Summary> FetchSummary(rpc::ServerClient& client, const Scope& scope);

// Fetches, sorts and renders to `out`. INVALID_ARGUMENT for a malformed id
// (nothing is sent); FetchSummary's errors otherwise. Nothing is written to
// `out` unless the whole listing arrived.
absl::Status RunSummarize(rpc::ServerClient& client, const SummarizeCommand& cmd,
                          std::ostream& out);

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_SUMMARIZE_COMMAND_H_
