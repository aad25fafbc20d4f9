// ServiceContext: what every gRPC service of traincache-server shares — the
// stores, the worker pool, the counters, the token check and the per-scope
// locks that keep garbage collection away from commits.
//
// Unary() is how a handler runs: check the token on the gRPC thread, then run
// the handler body on the worker pool (it may block on disk syncs) and finish
// the call with its status. With a metrics registry, every finished call's
// time goes into traincache_server_rpc_duration_seconds{method="Lookup"|...}
// (a stream's: from its start to its end). Thread-safe.
#ifndef TRAINCACHE_SERVER_SERVICE_CONTEXT_H_
#define TRAINCACHE_SERVER_SERVICE_CONTEXT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "common/counters.h"
#include "common/thread_pool.h"
#include "rpc/status_convert.h"
#include "server/affinity.h"
#include "server/attachment_table.h"
#include "server/change_feed.h"
#include "traincache/chunk_store.h"
#include "traincache/metadata_store.h"
#include "traincache/scope.h"

namespace prometheus {
class Registry;
}
namespace traincache::metrics {
class LatencyHistograms;
}

namespace traincache::server {

class ServiceContext {
 public:
  struct Options {
    std::string token;
    uint64_t default_quota_bytes = kDefaultQuotaBytes;
    size_t worker_threads = 16;
    int64_t gc_grace_seconds = 3600;
    int64_t orphan_grace_seconds = 86400;
    // Where cluster affinity pins live (deleting a project clears its pin).
    PinRegistry* pins = nullptr;
    // With require_attached_scopes: what CheckScopeAccess asks. nullptr:
    // every caller with the token may use every scope. Must outlive the context.
    AttachmentTable* attachments = nullptr;
    // Where the RPC latency histograms go; nullptr: none. Must outlive the context.
    prometheus::Registry* metrics = nullptr;
  };
  using Clock = std::chrono::steady_clock;

  ServiceContext(MetadataStore* meta, ChunkStore* chunks, Options options);
  ~ServiceContext();

  MetadataStore& meta() { return *meta_; }
  // The chunk store handed in, with the metadata store's small chunks
  // (NewSmallChunkAwareStore): what every service reads, checks and deletes.
  ChunkStore& chunks() { return *chunks_; }
  Counters& counters() { return counters_; }
  ThreadPool& pool() { return pool_; }
  PinRegistry& pins() { return *options_.pins; }
  // The scopes' change feed: mutations publish to it, WatchScope reads it.
  ChangeFeed& feed() { return feed_; }

  // OK iff the call carries "authorization: Bearer <token>".
  absl::Status CheckAuth(const grpc::CallbackServerContext* ctx) const;

  // The caller's node id (its `traincache-node-id` metadata), or "" if it
  // sent none: whose changes a change feed watcher is not sent back.
  static std::string NodeIdOf(const grpc::CallbackServerContext* ctx);

  // The caller's identity: the CN of the client certificate it presented
  // (mutual TLS), "" without one.
  static std::string PeerIdentity(const grpc::ServerContextBase* ctx);

  // Parses the scope of a request; counts and explains a bad one. For
  // admin calls, which may name any scope.
  absl::StatusOr<Scope> ParseScope(const std::string& text);
  // What a data-plane call (Namespace, Chunks, Locks) does with its scope:
  // ParseScope, then CheckScopeAccess.
  absl::StatusOr<Scope> ScopeOf(const grpc::ServerContextBase* ctx, const std::string& text);
  // OK without an attachment table; else PERMISSION_DENIED, naming the
  // caller's identity and the scope, unless an attached job of the caller
  // uses `scope`. Memory only (AttachmentTable::Allows): no disk read.
  absl::Status CheckScopeAccess(const grpc::ServerContextBase* ctx, const Scope& scope);
  // nullptr unless require_attached_scopes.
  AttachmentTable* attachments() { return options_.attachments; }

  // Opens (optionally creating, with the configured default quota) a scope.
  absl::StatusOr<ScopeInfo> OpenScope(const Scope& scope, bool create);

  // Commits hold a scope's lock shared, collection and deletion exclusive:
  // a chunk checked present by a commit is not deleted before it is referenced.
  std::shared_mutex& ScopeLock(const Scope& scope);

  // Frees orphans past their grace and deletes unreferenced chunks of one
  // scope, taking its lock exclusively around each check-and-delete only.
  // Returns chunks deleted.
  absl::StatusOr<uint64_t> CollectGarbage(const Scope& scope);

  // Records the outcome of `method` ("rpc.Lookup": also its counter's name)
  // and its time since `started`, and logs failures worth an operator's eye.
  void Finished(std::string_view method, const absl::Status& status, Clock::time_point started);

  // How a handler body runs: reads of RocksDB and stat(2) are quick and run
  // on gRPC's thread (no hand-off); anything that syncs a disk (mutations,
  // chunk reads with verification) goes to the worker pool.
  enum class Work { kQuick, kBlocking };

  // Runs `body` and finishes the unary call with its status.
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* ctx, std::string_view method,
                                  Work work, std::function<absl::Status()> body);

 private:
  MetadataStore* meta_;
  std::unique_ptr<ChunkStore> chunks_;
  const Options options_;
  const std::string expected_auth_;
  Counters counters_;
  std::unique_ptr<metrics::LatencyHistograms> latency_;  // null without metrics
  std::mutex locks_mu_;
  std::map<std::string, std::unique_ptr<std::shared_mutex>> scope_locks_;  // guarded by locks_mu_
  ChangeFeed feed_;
  ThreadPool pool_;  // Last: its threads stop before the rest goes away.
};

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_SERVICE_CONTEXT_H_
