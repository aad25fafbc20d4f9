// ServerClient: connections to one traincache-server, with the bearer token
// and a per-call deadline attached to every call.
//
// Two connections: one for small calls (every service but Chunks) and one for
// chunk transfer (the Chunks service), each opened on first use. A metadata
// call then never waits behind megabytes of chunk data queued on the same
// connection, and each is tuned for its traffic: chunk streams read the
// socket in large pieces, small calls with gRPC's small adaptive buffer
// (a large one costs every small read an allocation of at least 256 KiB).
//
// Besides raw access to the generated stubs (Call), it offers the few
// composite operations several programs need: upload chunks, fetch a chunk,
// write a whole file (chunk, upload the missing chunks, commit) and read one.
// Thread-safe: one client may be shared by many threads (gRPC channels are).
#ifndef TRAINCACHE_RPC_CLIENT_H_
#define TRAINCACHE_RPC_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rpc/status_convert.h"
#include "rpc/tls.h"
#include "traincache/scope.h"
#include "traincache/types.h"
#include "traincache/v1/admin.grpc.pb.h"
#include "traincache/v1/chunk.grpc.pb.h"
#include "traincache/v1/cluster.grpc.pb.h"
#include "traincache/v1/lock.grpc.pb.h"
#include "traincache/v1/namespace.grpc.pb.h"

namespace traincache::rpc {

// Largest message either side accepts; a commit of a 1 TB file in 4 MiB
// chunks fits (262,144 chunk refs).
inline constexpr int kMaxMessageBytes = 16 << 20;
// HTTP/2 flow-control lookahead both sides grant: a whole chunk can be in flight.
inline constexpr int kHttp2WindowBytes = 16 << 20;
// Chunk bytes travel in pieces of at most this size.
inline constexpr size_t kChunkPieceBytes = 4 << 20;
// HasChunks takes at most this many ids per call.
inline constexpr size_t kMaxHasChunksIds = 1024;

// The metadata key of a node daemon's id on its namespace calls, so that the
// server's change feed does not send a node its own changes (namespace.proto).
inline constexpr char kNodeIdMetadata[] = "traincache-node-id";

struct ClientOptions {
  std::string target;  // "host:port" or "unix:/path/to/socket"
  std::string token;   // sent as "authorization: Bearer <token>"
  std::chrono::milliseconds deadline{30'000};
  ClientTls tls;  // plaintext when not enabled (rpc/tls.h)
};

class ServerClient {
 public:
  explicit ServerClient(ClientOptions options);

  // A context carrying the token and the deadline.
  std::unique_ptr<grpc::ClientContext> NewContext() const;

  const ClientOptions& options() const { return options_; }
  // The connections, for callers that watch their state (GrpcClusterClient):
  // the one of small calls and the one of the Chunks service.
  grpc::Channel& channel() const { return *channel_; }
  grpc::Channel& bulk_channel() const { return *bulk_channel_; }

  v1::Namespace::Stub& ns() { return *ns_; }
  v1::Chunks::Stub& chunks() { return *chunks_; }
  v1::Admin::Stub& admin() { return *admin_; }
  v1::Cluster::Stub& cluster() { return *cluster_; }
  v1::Locks::Stub& locks() { return *locks_; }

  // Calls a unary method of a stub: `client.Call(&v1::Namespace::Stub::Lookup,
  // client.ns(), req, &resp)`. Returns the server's status (errno restored).
  template <typename Stub, typename Req, typename Resp>
  absl::Status Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    Stub& stub, const Req& req, Resp* resp) const {
    auto ctx = NewContext();
    return FromGrpcStatus((stub.*method)(ctx.get(), req, resp));
  }

  // HasChunks over any number of ids (calls of at most kMaxHasChunksIds):
  // for each id in order, its stored size or -1 if the server lacks it.
  absl::StatusOr<std::vector<int64_t>> HasChunks(const Scope& scope,
                                                 const std::vector<ChunkId>& ids);
  // Uploads chunks in one stream; OK when all are stored. Each is named by
  // ids[k] if given (the caller hashed it: ids.size() == chunks.size()),
  // else hashed here. The server checks every chunk against its name.
  absl::Status PutChunks(const Scope& scope, const std::vector<std::string_view>& chunks,
                         const std::vector<ChunkId>* ids = nullptr);
  // Fetches bytes [offset, offset+length) of a chunk (length 0: to its end).
  // `client_verifies`: the caller checks the bytes itself, the server need
  // not (chunk.proto).
  absl::StatusOr<std::string> GetChunk(const Scope& scope, const ChunkId& id, uint64_t offset = 0,
                                       uint64_t length = 0, bool client_verifies = false);
  // Replaces file `ino`'s content with `data`: chunks it, uploads the chunks
  // the server lacks, commits conditionally on `expected_version`.
  absl::StatusOr<InodeAttr> WriteFile(const Scope& scope, InodeId ino, uint64_t expected_version,
                                      std::string_view data,
                                      uint32_t chunk_size = kDefaultChunkSize);
  // Reads file `ino` whole through its chunk map.
  absl::StatusOr<std::string> ReadFile(const Scope& scope, InodeId ino);

 private:
  ClientOptions options_;
  std::string authorization_;  // "Bearer <token>", built once; empty without a token
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<grpc::Channel> bulk_channel_;
  std::unique_ptr<v1::Namespace::Stub> ns_;
  std::unique_ptr<v1::Chunks::Stub> chunks_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::Cluster::Stub> cluster_;
  std::unique_ptr<v1::Locks::Stub> locks_;
};

}  // namespace traincache::rpc

#endif  // TRAINCACHE_RPC_CLIENT_H_
