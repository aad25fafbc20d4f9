#include "rpc/grpc_lock_client.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <memory>
#include <optional>

#include "traincache/status.h"

namespace traincache::rpc {
namespace {

v1::LockKind ToProto(LockKind kind) {
  return kind == LockKind::kFlock ? v1::LOCK_KIND_FLOCK : v1::LOCK_KIND_POSIX;
}

v1::LockType ToProto(LockType type) {
  switch (type) {
    case LockType::kRead:
      return v1::LOCK_TYPE_READ;
    case LockType::kWrite:
      return v1::LOCK_TYPE_WRITE;
    case LockType::kUnlock:
      return v1::LOCK_TYPE_UNLOCK;
  }
  return v1::LOCK_TYPE_UNSPECIFIED;
}

bool SessionGone(const absl::Status& s) { return ErrnoOf(s) == ENOLCK; }

}  // namespace

GrpcLockClient::GrpcLockClient(ClientOptions options, std::string node,
                               std::chrono::milliseconds outage_timeout)
    : client_(std::move(options)),
      node_(std::move(node)),
      outage_timeout_(outage_timeout),
      keepalive_([this] { KeepAliveLoop(); }),
      retries_(std::make_unique<ThreadPool>(1)) {}

GrpcLockClient::~GrpcLockClient() { Close(); }

void GrpcLockClient::Close() {
  uint64_t session;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    session = session_;
    session_ = 0;
  }
  cv_.notify_all();
  keepalive_.join();
  if (session != 0) {
    v1::SessionRef ref;
    ref.set_session(session);
    v1::SessionResponse resp;
    IGNORE_ERROR(client_.Call(&v1::Locks::Stub::CloseSession, client_.locks(), ref, &resp));
  }
}

absl::StatusOr<uint64_t> GrpcLockClient::Session() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return absl::UnavailableError("the lock client is closed");
    if (session_ != 0) return session_;
  }
  v1::OpenSessionRequest req;
  req.set_node(node_);
  v1::SessionResponse resp;
  absl::Status status = client_.Call(&v1::Locks::Stub::OpenSession, client_.locks(), req, &resp);
  if (!status.ok()) {
    return PosixError(EIO, fmt::format("cannot open a lock session: {}", status.ToString()));
  }
  std::lock_guard lock(mu_);
  if (session_ == 0) {
    // Two first calls may race: the later session just expires unused.
    session_ = resp.session();
    lease_ = std::chrono::milliseconds(resp.lease_ms());
    cv_.notify_all();
  }
  return session_;
}

void GrpcLockClient::SessionLost(uint64_t session, const absl::Status& why) {
  std::lock_guard lock(mu_);
  if (session_ != session) return;
  session_ = 0;
  if (held_.empty()) return;
  reclaim_ = true;
  cv_.notify_all();
  spdlog::warn(
      "locks: the server no longer knows this node's lock session ({}); reclaiming the "
      "locks of {} owners",
      why.message(), held_.size());
}

void GrpcLockClient::Reclaim() {
  absl::StatusOr<uint64_t> session = Session();
  if (!session.ok()) return;  // Still unreachable: the next round tries again.
  std::vector<std::pair<HeldKey, LockRange>> wanted;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, ranges] : held_) {
      for (const LockRange& r : ranges) wanted.emplace_back(key, r);
    }
  }
  size_t lost = 0;
  for (const auto& [key, range] : wanted) {
    const auto& [scope_name, ino, owner, kind] = key;
    absl::StatusOr<Scope> scope = Scope::Parse(scope_name);
    if (!scope.ok()) continue;
    v1::LockRequest req = Request(*session, *scope, ino, owner, range);
    req.set_reclaim(true);
    v1::LockResponse resp;
    absl::Status status = client_.Call(&v1::Locks::Stub::Lock, client_.locks(), req, &resp);
    if (status.code() == absl::StatusCode::kUnavailable && !ErrnoOf(status)) return;  // again
    if (!status.ok()) {
      ++lost;
      spdlog::error("locks: this node lost its lock lease: the lock of owner {:x} on {} ino {} "
                    "cannot be reclaimed ({}); the server released it",
                    owner, scope_name, ino, status.ToString());
      std::lock_guard lock(mu_);
      NoteUnlocked(key, range.start, range.end);
    }
  }
  std::lock_guard lock(mu_);
  reclaim_ = false;
  spdlog::info("locks: reclaimed {} of {} locks", wanted.size() - lost, wanted.size());
}

void GrpcLockClient::NoteGranted(const HeldKey& key, const LockRange& range) {
  if (std::get<3>(key) == LockKind::kFlock) {
    held_[key] = {range};
    return;
  }
  // A POSIX lock replaces the owner's own over its range.
  NoteUnlocked(key, range.start, range.end);
  held_[key].push_back(range);
}

void GrpcLockClient::NoteUnlocked(const HeldKey& key, uint64_t start, uint64_t end) {
  auto it = held_.find(key);
  if (it == held_.end()) return;
  std::vector<LockRange> kept;
  for (const LockRange& r : it->second) {
    if (r.end < start || r.start > end) {
      kept.push_back(r);
      continue;
    }
    if (r.start < start) {
      LockRange left = r;
      left.end = start - 1;
      kept.push_back(left);
    }
    if (r.end > end) {
      LockRange right = r;
      right.start = end + 1;
      kept.push_back(right);
    }
  }
  if (kept.empty()) {
    held_.erase(it);
  } else {
    it->second = std::move(kept);
  }
}

void GrpcLockClient::KeepAliveLoop() {
  std::unique_lock lock(mu_);
  while (!closed_) {
    cv_.wait_for(lock, session_ == 0 || reclaim_ ? std::chrono::milliseconds(1000) : lease_ / 3);
    if (closed_) break;
    if (reclaim_) {
      lock.unlock();
      Reclaim();
      lock.lock();
      continue;
    }
    if (session_ == 0) continue;
    uint64_t session = session_;
    lock.unlock();
    v1::SessionRef ref;
    ref.set_session(session);
    v1::SessionResponse resp;
    absl::Status status = client_.Call(&v1::Locks::Stub::KeepAlive, client_.locks(), ref, &resp);
    if (SessionGone(status)) {
      SessionLost(session, status);
    } else if (!status.ok()) {
      spdlog::warn("locks: cannot renew the lock lease: {}", status.ToString());
    }
    lock.lock();
  }
}

v1::LockRequest GrpcLockClient::Request(uint64_t session, const Scope& scope, InodeId ino,
                                        uint64_t owner, const LockRange& range) const {
  v1::LockRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  req.set_session(session);
  req.set_owner(owner);
  req.set_kind(ToProto(range.kind));
  req.set_type(ToProto(range.type));
  req.set_start(range.start);
  req.set_end(range.end);
  req.set_pid(range.pid);
  return req;
}

// One Lock call, as many times as it is sent: its messages and outcome live
// until `done`, and as long as someone can still cancel it.
struct GrpcLockClient::Call {
  explicit Call(Scope s) : scope(std::move(s)) {}
  const Scope scope;
  InodeId ino = 0;
  uint64_t owner = 0;
  LockRange range;
  bool wait = false;
  Done done;
  std::atomic<bool> cancelled{false};
  std::optional<std::chrono::steady_clock::time_point> give_up;  // set at the first trouble
  std::mutex mu;
  std::shared_ptr<grpc::ClientContext> ctx;  // guarded by mu: the attempt in flight
  v1::LockRequest req;
  v1::LockResponse resp;
};

std::function<void()> GrpcLockClient::Lock(const Scope& scope, InodeId ino, uint64_t owner,
                                           const LockRange& range, bool wait, Done done) {
  auto call = std::make_shared<Call>(scope);
  call->ino = ino;
  call->owner = owner;
  call->range = range;
  call->wait = wait;
  call->done = std::move(done);
  Issue(call);
  return [call] {
    call->cancelled.store(true);
    std::lock_guard lock(call->mu);
    if (call->ctx) call->ctx->TryCancel();
  };
}

void GrpcLockClient::Issue(const std::shared_ptr<Call>& call) {
  if (call->cancelled.load()) {
    return call->done(PosixError(EINTR, "the lock wait was interrupted"));
  }
  // Asks again after a pause, while the outage allows; false: it does not.
  auto again = [this, call](const absl::Status& why) {
    auto now = std::chrono::steady_clock::now();
    if (!call->give_up) call->give_up = now + outage_timeout_;
    if (now >= *call->give_up) return false;
    spdlog::debug("locks: asking again for a lock on ino {}: {}", call->ino, why.ToString());
    retries_->Submit([this, call] {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      bool closed;
      {
        std::lock_guard lock(mu_);
        closed = closed_;
      }
      if (closed) return call->done(PosixError(EIO, "the lock client is closed"));
      Issue(call);
    });
    return true;
  };
  absl::StatusOr<uint64_t> session = Session();
  if (!session.ok()) {
    if (again(session.status())) return;
    return call->done(session.status());
  }
  auto ctx = std::make_shared<grpc::ClientContext>();
  if (!client_.options().token.empty()) {
    ctx->AddMetadata("authorization", "Bearer " + client_.options().token);
  }
  // A wait has no deadline (it lasts until granted or cancelled); a try
  // has the client's.
  if (!call->wait) ctx->set_deadline(std::chrono::system_clock::now() + client_.options().deadline);
  {
    std::lock_guard lock(call->mu);
    call->ctx = ctx;
    call->req = Request(*session, call->scope, call->ino, call->owner, call->range);
    call->req.set_wait(call->wait);
    call->resp.Clear();
  }
  // A cancel that came before the context was in place.
  if (call->cancelled.load()) ctx->TryCancel();
  client_.locks().async()->Lock(
      ctx.get(), &call->req, &call->resp, [this, call, ctx, again](grpc::Status g) {
        absl::Status status = FromGrpcStatus(g);
        if (call->cancelled.load() && !status.ok()) {
          // The server gives back a lock it granted after the cancel reached
          // it. In the narrow race where the grant left first, the owner
          // holds it until it unlocks or closes the file (close releases
          // every lock).
          return call->done(PosixError(EINTR, "the lock wait was interrupted"));
        }
        if (status.ok()) {
          std::lock_guard lock(mu_);
          NoteGranted({call->scope.ToString(), call->ino, call->owner, call->range.kind},
                      call->range);
        } else if (SessionGone(status)) {
          // The server restarted (or this node was cut off): the renewal
          // thread reclaims what this node held; this call asks again.
          SessionLost(call->req.session(), status);
          if (again(status)) return;
        } else if (status.code() == absl::StatusCode::kUnavailable && !ErrnoOf(status)) {
          // Unreachable, or in its grace period after a restart.
          if (again(status)) return;
          status = PosixError(EIO, fmt::format("lock service unreachable: {}", status.message()));
        } else if (status.code() == absl::StatusCode::kCancelled) {
          // Not ours (checked above): the server ended the wait as it stopped.
          if (again(status)) return;
          status =
              PosixError(EIO, fmt::format("lock wait ended by the server: {}", status.message()));
        } else if (status.code() == absl::StatusCode::kAborted) {
          SessionLost(call->req.session(), status);
          status = PosixError(ENOLCK, fmt::format("lock wait ended: {}", status.message()));
        } else if (status.code() == absl::StatusCode::kDeadlineExceeded) {
          // F_SETLK/LOCK_NB never time out on Linux: the service did not answer.
          status =
              PosixError(EIO, fmt::format("lock service did not answer: {}", status.message()));
        }
        call->done(status);
      });
}

absl::Status GrpcLockClient::Unlock(const Scope& scope, InodeId ino, uint64_t owner, LockKind kind,
                                    uint64_t start, uint64_t end) {
  uint64_t session;
  {
    std::lock_guard lock(mu_);
    NoteUnlocked({scope.ToString(), ino, owner, kind}, start, end);
    session = session_;
  }
  // No session: nothing is held (it was never opened, or the server already
  // released everything when it expired).
  if (session == 0) return absl::OkStatus();
  v1::LockRequest req =
      Request(session, scope, ino, owner,
              LockRange{.kind = kind, .type = LockType::kUnlock, .start = start, .end = end});
  v1::LockResponse resp;
  absl::Status status = client_.Call(&v1::Locks::Stub::Unlock, client_.locks(), req, &resp);
  if (SessionGone(status)) {
    SessionLost(session, status);
    return absl::OkStatus();  // Released already, by the server.
  }
  return status;
}

absl::StatusOr<std::optional<LockRange>> GrpcLockClient::Test(const Scope& scope, InodeId ino,
                                                              uint64_t owner,
                                                              const LockRange& range) {
  ASSIGN_OR_RETURN(uint64_t session, Session());
  v1::LockRequest req = Request(session, scope, ino, owner, range);
  v1::TestLockResponse resp;
  absl::Status status = client_.Call(&v1::Locks::Stub::TestLock, client_.locks(), req, &resp);
  if (SessionGone(status)) SessionLost(session, status);
  RETURN_IF_ERROR(status);
  if (!resp.conflict()) return std::nullopt;
  return LockRange{.kind = range.kind,
                   .type = resp.type() == v1::LOCK_TYPE_WRITE ? LockType::kWrite : LockType::kRead,
                   .start = resp.start(),
                   .end = resp.end(),
                   .pid = resp.pid()};
}

}  // namespace traincache::rpc
