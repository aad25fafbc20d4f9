// GrpcLockClient: LockClient over the server's Locks service (lock.proto).
//
// Holds one session (lease) for the node daemon: opened at the first lock
// call, renewed by a thread every third of the lease. If the server says the
// session expired (this node was cut off or too slow), the loss is logged
// and the next lock call opens a new session; locks of the old one are gone
// (the server released them), and calls that name it fail with ENOLCK.
// Blocking waits are asynchronous gRPC calls: no thread waits on them.
// Close() ends the session (the daemon stops: its locks go at once).
// Thread-safe.
#ifndef TRAINCACHE_RPC_GRPC_LOCK_CLIENT_H_
#define TRAINCACHE_RPC_GRPC_LOCK_CLIENT_H_

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "rpc/client.h"
#include "traincache/locks.h"

namespace traincache::rpc {

class GrpcLockClient final : public LockClient {
 public:
  // `node`: a name for the server's logs.
  GrpcLockClient(ClientOptions options, std::string node);
  ~GrpcLockClient() override;

  std::function<void()> Lock(const Scope& scope, InodeId ino, uint64_t owner,
                             const LockRange& range, bool wait, Done done) override;
  absl::Status Unlock(const Scope& scope, InodeId ino, uint64_t owner, LockKind kind,
                      uint64_t start, uint64_t end) override;
  absl::StatusOr<std::optional<LockRange>> Test(const Scope& scope, InodeId ino, uint64_t owner,
                                                const LockRange& range) override;
  // Releases this node's locks on the server and stops the renewals.
  void Close();

 private:
  // The current session, opening one if there is none.
  absl::StatusOr<uint64_t> Session();
  // The server no longer knows `session`.
  void SessionLost(uint64_t session, const absl::Status& why);
  void KeepAliveLoop();
  v1::LockRequest Request(uint64_t session, const Scope& scope, InodeId ino, uint64_t owner,
                          const LockRange& range) const;

  ServerClient client_;
  const std::string node_;
  std::mutex mu_;
  uint64_t session_ = 0;  // guarded by mu_; 0: none
  std::chrono::milliseconds lease_{15'000};  // guarded by mu_
  bool closed_ = false;   // guarded by mu_
  std::condition_variable cv_;
  std::thread keepalive_;
};

}  // namespace traincache::rpc

#endif  // TRAINCACHE_RPC_GRPC_LOCK_CLIENT_H_
