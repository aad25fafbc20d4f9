#include "rpc/grpc_lock_client.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <memory>

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

GrpcLockClient::GrpcLockClient(ClientOptions options, std::string node)
    : client_(std::move(options)), node_(std::move(node)),
      keepalive_([this] { KeepAliveLoop(); }) {}

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
  spdlog::error("locks: this node lost its lock lease ({}): every lock it held was released by "
                "the server",
                why.message());
}

void GrpcLockClient::KeepAliveLoop() {
  std::unique_lock lock(mu_);
  while (!closed_) {
    cv_.wait_for(lock, session_ == 0 ? std::chrono::milliseconds(1000) : lease_ / 3);
    if (closed_ || session_ == 0) continue;
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

std::function<void()> GrpcLockClient::Lock(const Scope& scope, InodeId ino, uint64_t owner,
                                           const LockRange& range, bool wait, Done done) {
  absl::StatusOr<uint64_t> session = Session();
  if (!session.ok()) {
    done(session.status());
    return [] {};
  }
  // One call in flight: its context, messages and outcome live until the
  // callback, and as long as someone can still cancel it.
  struct Call {
    grpc::ClientContext ctx;
    v1::LockRequest req;
    v1::LockResponse resp;
    Done done;
    std::atomic<bool> cancelled{false};
  };
  auto call = std::make_shared<Call>();
  call->req = Request(*session, scope, ino, owner, range);
  call->req.set_wait(wait);
  call->done = std::move(done);
  if (!client_.options().token.empty()) {
    call->ctx.AddMetadata("authorization", "Bearer " + client_.options().token);
  }
  // A wait has no deadline (it lasts until granted or cancelled); a try
  // has the client's.
  if (!wait) call->ctx.set_deadline(std::chrono::system_clock::now() + client_.options().deadline);
  client_.locks().async()->Lock(&call->ctx, &call->req, &call->resp, [this, call](grpc::Status g) {
    absl::Status status = FromGrpcStatus(g);
    if (call->cancelled.load() && !status.ok()) {
      // The server gives back a lock it granted after the cancel reached it.
      // In the narrow race where the grant left first, the owner holds it
      // until it unlocks or closes the file (close releases every lock).
      call->done(PosixError(EINTR, "the lock wait was interrupted"));
      return;
    }
    if (SessionGone(status)) {
      SessionLost(call->req.session(), status);
    } else if (status.code() == absl::StatusCode::kUnavailable && !ErrnoOf(status)) {
      status = PosixError(EIO, fmt::format("lock service unreachable: {}", status.message()));
    } else if (status.code() == absl::StatusCode::kAborted) {
      SessionLost(call->req.session(), status);
      status = PosixError(ENOLCK, fmt::format("lock wait ended: {}", status.message()));
    } else if (status.code() == absl::StatusCode::kDeadlineExceeded) {
      // F_SETLK/LOCK_NB never time out on Linux: the service did not answer.
      status = PosixError(EIO, fmt::format("lock service did not answer: {}", status.message()));
    }
    call->done(status);
  });
  return [call] {
    call->cancelled.store(true);
    call->ctx.TryCancel();
  };
}

absl::Status GrpcLockClient::Unlock(const Scope& scope, InodeId ino, uint64_t owner,
                                    LockKind kind, uint64_t start, uint64_t end) {
  uint64_t session;
  {
    std::lock_guard lock(mu_);
    session = session_;
  }
  // No session: nothing is held (it was never opened, or the server already
  // released everything when it expired).
  if (session == 0) return absl::OkStatus();
  v1::LockRequest req =
      Request(session, scope, ino, owner, LockRange{.kind = kind, .type = LockType::kUnlock,
                                                    .start = start, .end = end});
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
