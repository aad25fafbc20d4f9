// GrpcClusterClient: the ClusterClient (traincache/cluster_client.h) over
// gRPC to one traincache-server, built on rpc::ServerClient (a connection for
// small calls and one for chunks, the bearer token and a per-call deadline on
// every call).
//
// Outages. A call first waits, without sending anything, until the channel
// has a connection; then it sends. What happens on a transient failure
// (UNAVAILABLE, DEADLINE_EXCEEDED, or CANCELLED by a stopping server; never a
// status carrying an errno, which is the server's answer) is decided by one
// rule:
//   - a request that is safe to repeat (cluster_client.h lists them) is sent
//     again after an exponential backoff (initial_backoff doubling up to
//     max_backoff), waiting for the connection in between;
//   - any other request is sent once, with gRPC wait_for_ready, so that a
//     connection lost before it was sent makes gRPC queue it rather than
//     fail it; if it then fails in flight the caller gets UNKNOWN ("may or
//     may not have been applied"), or DEADLINE_EXCEEDED, never a re-send.
// The outage clock of a call starts at its first sign of trouble; once
// outage_timeout has passed since then the call returns UNAVAILABLE (errno
// EIO). UNAUTHENTICATED and every answer from the server return at once.
//
// Namespace mutations that are not idempotent (Mkdir, Create exclusive,
// Unlink, Rmdir, Rename, Symlink, Link, SetXattr, RemoveXattr) carry a
// request id: `request_client_`, made fresh by every instance (so a
// restarted daemon never repeats an id), and a sequence number per call,
// the same on every copy. The server applies an id at most once and answers
// a copy with the recorded outcome, which makes them safe to repeat too.
//
// CommitContent counts as safe to repeat because the server applies it only
// while the inode's version is `expected_version`: a second copy of a commit
// that was applied is refused with ESTALE, never applied twice. When a
// re-sent commit gets ESTALE, the client reads the chunk map: if it holds
// exactly the committed chunks at a newer version, the first copy was applied
// and the call succeeds with the inode's attributes.
//
// The change feed (WatchScope): one server stream per call, never re-sent;
// every namespace call carries this client's node id (options.node_id, else
// one made up at construction) so the server does not send its own changes
// back to it.
//
// With a metrics registry, each call's time (every attempt, backoff and
// outage wait included: what the caller waited) goes into
// traincache_node_rpc_duration_seconds{method="Lookup"|"GetChunk"|...}.
//
// Thread-safe: all methods may be called concurrently.
#ifndef TRAINCACHE_RPC_GRPC_CLUSTER_CLIENT_H_
#define TRAINCACHE_RPC_GRPC_CLUSTER_CLIENT_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "rpc/client.h"
#include "traincache/cluster_client.h"

namespace prometheus {
class Registry;
}
namespace traincache::metrics {
class LatencyHistograms;
}

namespace traincache::rpc {

struct GrpcClusterClientOptions {
  std::string target;  // "host:port" or "unix:/path/to/socket"
  std::string token;   // sent as "authorization: Bearer <token>"
  ClientTls tls;       // plaintext when not enabled (rpc/tls.h)
  // Deadline of one attempt of one call (a chunk transfer included).
  std::chrono::milliseconds call_deadline{30'000};
  // How long the server may stay unreachable before a call fails.
  std::chrono::milliseconds outage_timeout{60'000};
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{1'000};
  // Where the call latency histograms go; nullptr: none. Must outlive the client.
  prometheus::Registry* metrics = nullptr;
  // This node's id for the change feed (1..256 bytes, unique among the
  // server's callers); empty: "<hostname>:<pid>:<random>".
  std::string node_id;
};

class GrpcClusterClient final : public ClusterClient {
 public:
  explicit GrpcClusterClient(GrpcClusterClientOptions options);
  ~GrpcClusterClient() override;

  const GrpcClusterClientOptions& options() const { return options_; }
  const std::string& node_id() const { return node_id_; }

  absl::StatusOr<OpenScopeResult> OpenScope(const Scope& scope, bool create) override;
  absl::StatusOr<InodeAttr> Lookup(const Scope& scope, InodeId parent,
                                   std::string_view name) override;
  absl::StatusOr<InodeAttr> GetAttr(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> SetAttr(const Scope& scope, InodeId ino,
                                    const SetAttrRequest& req) override;
  absl::StatusOr<ReadDirPage> ReadDir(const Scope& scope, InodeId dir, std::string_view after,
                                      uint32_t limit, bool plus) override;
  absl::StatusOr<InodeAttr> Mkdir(const Scope& scope, InodeId parent, std::string_view name,
                                  uint32_t mode, const Caller& caller) override;
  absl::StatusOr<CreateResult> Create(const Scope& scope, InodeId parent, std::string_view name,
                                      uint32_t mode, const Caller& caller, bool exclusive) override;
  absl::StatusOr<UnlinkResult> Unlink(const Scope& scope, InodeId parent,
                                      std::string_view name) override;
  absl::Status Rmdir(const Scope& scope, InodeId parent, std::string_view name) override;
  absl::StatusOr<UnlinkResult> Rename(const Scope& scope, InodeId parent, std::string_view name,
                                      InodeId new_parent, std::string_view new_name,
                                      uint32_t flags) override;
  absl::StatusOr<InodeAttr> Symlink(const Scope& scope, InodeId parent, std::string_view name,
                                    std::string_view target, const Caller& caller) override;
  absl::StatusOr<std::string> ReadLink(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> Link(const Scope& scope, InodeId ino, InodeId new_parent,
                                 std::string_view new_name) override;
  absl::StatusOr<std::string> GetXattr(const Scope& scope, InodeId ino,
                                       std::string_view name) override;
  absl::Status SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                        std::string_view value, uint32_t flags) override;
  absl::StatusOr<std::vector<std::string>> ListXattr(const Scope& scope, InodeId ino) override;
  absl::Status RemoveXattr(const Scope& scope, InodeId ino, std::string_view name) override;
  absl::StatusOr<ScopeUsage> StatFs(const Scope& scope) override;
  absl::Status Sync(const Scope& scope) override;
  absl::StatusOr<ChunkMap> GetChunkMap(const Scope& scope, InodeId ino) override;
  absl::StatusOr<InodeAttr> CommitContent(const Scope& scope, InodeId ino,
                                          uint64_t expected_version, uint64_t size,
                                          uint32_t chunk_size, const std::vector<ChunkRef>& chunks,
                                          Timespec mtime) override;
  absl::StatusOr<InodeAttr> CommitContentWithSmallChunks(
      const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size,
      uint32_t chunk_size, const std::vector<ChunkRef>& chunks, Timespec mtime,
      const std::vector<std::string_view>& small_chunks) override;
  absl::Status ReleaseInode(const Scope& scope, InodeId ino) override;
  absl::StatusOr<std::vector<std::optional<uint64_t>>> HasChunks(
      const Scope& scope, const std::vector<ChunkId>& ids) override;
  absl::Status PutChunks(const Scope& scope, const std::vector<std::string_view>& chunks) override;
  absl::Status PutHashedChunks(const Scope& scope, const std::vector<ChunkId>& ids,
                               const std::vector<std::string_view>& chunks) override;
  absl::StatusOr<std::string> GetChunk(const Scope& scope, const ChunkId& id, uint64_t offset,
                                       uint64_t length) override;
  absl::StatusOr<std::string> GetChunkUnverified(const Scope& scope, const ChunkId& id) override;
  // Never fails here: a stream that cannot start ends through `on_end`.
  // The subscription must not be destroyed from inside its callbacks.
  absl::StatusOr<std::unique_ptr<ChangeSubscription>> WatchScope(
      const Scope& scope, std::function<void(ScopeChanges)> on_changes,
      std::function<void(absl::Status)> on_end) override;

 private:
  // Whether a request may be sent again after it may have reached the server.
  enum class Resend { kSafe, kNever };

  // Runs `attempt` (one call) under the outage rule at the top of this file.
  // `op` names the call in errors.
  // `channel`: the connection the attempts use (rpc_.channel() or
  // rpc_.bulk_channel()), whose state is checked and waited on.
  absl::Status Run(std::string_view op, Resend resend, grpc::Channel& channel,
                   const std::function<absl::Status()>& attempt);
  // One unary Namespace call under Run; `resp` holds the last attempt's answer.
  template <typename Req, typename Resp>
  absl::Status Unary(std::string_view op, Resend resend,
                     grpc::Status (v1::Namespace::Stub::*method)(grpc::ClientContext*, const Req&,
                                                                 Resp*),
                     const Req& req, Resp* resp);
  // True once `channel` is connected; false if `give_up` passes first.
  bool WaitForConnection(grpc::Channel& channel, std::chrono::steady_clock::time_point give_up);
  // Gives `out` a request id of its own (see the top of this file).
  void NewRequestId(v1::RequestId* out);
  // rpc_'s context (token, deadline) naming this node.
  std::unique_ptr<grpc::ClientContext> NewContext() const;

  const GrpcClusterClientOptions options_;
  const std::string node_id_;
  // Names this instance's calls in request ids; unlike node_id_ never given
  // by options, so it is never reused by another instance.
  const std::string request_client_;
  std::atomic<uint64_t> next_seq_{1};
  ServerClient rpc_;
  std::unique_ptr<metrics::LatencyHistograms> latency_;  // null without metrics
};

}  // namespace traincache::rpc

#endif  // TRAINCACHE_RPC_GRPC_CLUSTER_CLIENT_H_
