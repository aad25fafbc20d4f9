// GrpcLockClient: LockClient over the server's Locks service (lock.proto).
//
// Holds one session (lease) for the node daemon: opened at the first lock
// call, renewed by a thread every third of the lease. It remembers the locks
// it was granted. If the server no longer knows the session (it restarted,
// or this node was cut off longer than a lease), the renewal thread opens a
// new one and reclaims them (lock.proto): after a restart the server's grace
// period grants them back; after an expiry it refuses, and the locks are
// gone (logged; calls that name them fail with ENOLCK).
// A Lock call that finds the server unreachable or in its grace period, or
// whose wait the server's shutdown ended, is asked again every 250 ms for up
// to `outage_timeout`, then fails with EIO.
// Blocking waits are asynchronous gRPC calls: no thread waits on them.
// Close() ends the session (the daemon stops: its locks go at once).
// Thread-safe.
#ifndef TRAINCACHE_RPC_GRPC_LOCK_CLIENT_H_
#define TRAINCACHE_RPC_GRPC_LOCK_CLIENT_H_

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/thread_pool.h"
#include "rpc/client.h"
#include "traincache/locks.h"

namespace traincache::rpc {

class GrpcLockClient final : public LockClient {
 public:
  // `node`: a name for the server's logs.
  GrpcLockClient(ClientOptions options, std::string node,
                 std::chrono::milliseconds outage_timeout = std::chrono::seconds(60));
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
  // The server no longer knows `session`: the renewal thread reclaims.
  void SessionLost(uint64_t session, const absl::Status& why);
  void KeepAliveLoop();
  // Opens a new session and asks for every remembered lock back.
  void Reclaim();
  struct Call;
  // Sends `call` (again): one Lock RPC.
  void Issue(const std::shared_ptr<Call>& call);
  // What this node holds, as granted: (scope, ino, owner, kind) -> ranges.
  using HeldKey = std::tuple<std::string, InodeId, uint64_t, LockKind>;
  void NoteGranted(const HeldKey& key, const LockRange& range);
  void NoteUnlocked(const HeldKey& key, uint64_t start, uint64_t end);
  v1::LockRequest Request(uint64_t session, const Scope& scope, InodeId ino, uint64_t owner,
                          const LockRange& range) const;

  ServerClient client_;
  const std::string node_;
  const std::chrono::milliseconds outage_timeout_;
  std::mutex mu_;
  std::map<HeldKey, std::vector<LockRange>> held_;  // guarded by mu_
  bool reclaim_ = false;                     // guarded by mu_: the session was lost with locks held
  uint64_t session_ = 0;                     // guarded by mu_; 0: none
  std::chrono::milliseconds lease_{15'000};  // guarded by mu_
  bool closed_ = false;                      // guarded by mu_
  std::condition_variable cv_;
  std::thread keepalive_;
  // Sends Lock calls again after a pause (a thread of its own, so that no
  // gRPC callback thread sleeps). Declared last: goes first.
  std::unique_ptr<ThreadPool> retries_;
};

}  // namespace traincache::rpc

#endif  // TRAINCACHE_RPC_GRPC_LOCK_CLIENT_H_
