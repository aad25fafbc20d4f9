#include "cli/summarize_command.h"

#include <fmt/format.h>

#include <chrono>

#include "traincache/status.h"

namespace traincache::cli {

// A walk of millions of entries takes the server a while before the first
// entry; the usual per-call deadline would cut it short.
constexpr std::chrono::hours kSummarizeDeadline{1};

absl::StatusOr<Summary> FetchSummary(rpc::ServerClient& client, const Scope& scope) {
  auto ctx = client.NewContext();
  ctx->set_deadline(std::chrono::system_clock::now() + kSummarizeDeadline);
  v1::SummarizeRequest req;
  req.set_scope(scope.ToString());
  std::unique_ptr<grpc::ClientReader<v1::SummarizeResponse>> reader =
      client.admin().Summarize(ctx.get(), req);

  Summary out;
  out.kind = std::string(scope.kind_name());
  out.id = scope.id();
  v1::SummarizeResponse msg;
  bool have_header = false;
  uint64_t announced = 0;
  absl::Status shape;
  while (reader->Read(&msg)) {
    if (!have_header) {
      if (!msg.has_header()) {
        shape = absl::DataLossError("Summarize stream did not start with its header");
        ctx->TryCancel();
        break;
      }
      have_header = true;
      out.captured_at = msg.header().captured_at();
      out.total_files = msg.header().total_files();
      out.total_size = msg.header().total_size_bytes();
      announced = msg.header().entries();
      // The header's word, bounded: a wrong count must not allocate wildly.
      out.rows.reserve(std::min<uint64_t>(announced, 10'000'000));
      continue;
    }
    for (v1::SummaryEntry& e : *msg.mutable_entries()) {
      SummaryRow row;
      row.path = std::move(*e.mutable_path());
      row.size = e.size_bytes();
      row.mtime = Timespec{e.mtime().sec(), e.mtime().nsec()};
      row.mode = e.mode();
      out.rows.push_back(std::move(row));
    }
  }
  absl::Status status = rpc::FromGrpcStatus(reader->Finish());
  if (!shape.ok()) return shape;
  RETURN_IF_ERROR(status);
  if (!have_header) return absl::DataLossError("Summarize stream ended without a header");
  if (out.rows.size() != announced) {
    return absl::DataLossError(fmt::format("Summarize stream carried {} entries, its header said {}",
                                           out.rows.size(), announced));
  }
  return out;
}

absl::Status RunSummarize(rpc::ServerClient& client, const SummarizeCommand& cmd,
                          std::ostream& out) {
  ASSIGN_OR_RETURN(Scope scope,
                   Scope::Make(cmd.team ? ScopeKind::kTeam : ScopeKind::kProject, cmd.id));
  ASSIGN_OR_RETURN(Summary summary, FetchSummary(client, scope));
  SortRows(summary.rows, cmd.sort, cmd.descending);
  Render(summary, cmd.format, out);
  out.flush();
  if (!out) return absl::InternalError("cannot write the summary to standard output");
  return absl::OkStatus();
}

}  // namespace traincache::cli
