// The `traincache` subcommands for jobs and operators beyond the basics of
// traincache_main.cc: attach/detach (through the node daemon's admin socket),
// pins and delete-project (through the server), warmup of a tree into the
// node tier, and the node's stats. Each prints its result on stdout and
// returns the status whose message main prints on stderr.
#ifndef TRAINCACHE_CLI_JOB_COMMANDS_H_
#define TRAINCACHE_CLI_JOB_COMMANDS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "rpc/client.h"
#include "traincache/v1/node_admin.grpc.pb.h"

namespace traincache::cli {

// A stub of the local node daemon's admin endpoint at `socket`.
std::unique_ptr<v1::NodeAdmin::Stub> NodeAdminStub(const std::string& socket);
// A context with a deadline for admin calls (mounting can take a while).
std::unique_ptr<grpc::ClientContext> NodeAdminContext();

// `format`: "env" (export lines a launcher can eval: the container's env,
// plus TRAINCACHE_BINDS="src:dst ...") or "json" (the whole answer).
absl::Status AttachJob(const std::string& socket, const v1::AttachJobRequest& req,
                       const std::string& format);
absl::Status DetachJob(const std::string& socket, const std::string& job_id);
// Node counters in words: tier use, hit ratio, bytes from each tier, per
// scope; then every raw counter.
absl::Status NodeStats(const std::string& socket);

// `action`: show, set (needs `cluster`) or clear.
absl::Status PinCommand(rpc::ServerClient& client, const std::string& action,
                        const std::string& project, const std::string& cluster);
// Deletes project:<id> (metadata, chunks, pin, quota) on the server; node
// daemons drop it from their tiers at their next scope check.
absl::Status DeleteProject(rpc::ServerClient& client, const std::string& project);

// Reads every file under `path` (a traincache mount or a folder in one) so
// that its content lands in the node tier; a progress bar on stderr when
// `progress`. FAILED_PRECONDITION if `path` is not on a traincache mount.
absl::Status Warmup(const std::string& path, bool progress);

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_JOB_COMMANDS_H_
