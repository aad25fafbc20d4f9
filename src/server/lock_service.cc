#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <random>

#include "server/services.h"
#include "traincache/status.h"

namespace traincache::server {
namespace {

std::string FileKey(const Scope& scope, uint64_t ino) {
  std::string key = scope.ToString();
  key.push_back('\0');
  key += std::to_string(ino);
  return key;
}

struct ParsedLock {
  Scope scope;
  std::string key;
  LockOwner owner;
  LockRange range;
};

absl::StatusOr<LockKind> KindOf(v1::LockKind kind) {
  switch (kind) {
    case v1::LOCK_KIND_FLOCK:
      return LockKind::kFlock;
    case v1::LOCK_KIND_POSIX:
      return LockKind::kPosix;
    default:
      return absl::InvalidArgumentError("lock kind must be flock or posix");
  }
}

absl::StatusOr<LockType> TypeOf(v1::LockType type) {
  switch (type) {
    case v1::LOCK_TYPE_READ:
      return LockType::kRead;
    case v1::LOCK_TYPE_WRITE:
      return LockType::kWrite;
    case v1::LOCK_TYPE_UNLOCK:
      return LockType::kUnlock;
    default:
      return absl::InvalidArgumentError("lock type must be read, write or unlock");
  }
}

v1::LockType ToProto(LockType type) {
  return type == LockType::kWrite ? v1::LOCK_TYPE_WRITE : v1::LOCK_TYPE_READ;
}

// Answers a Lock call: at once, or when the table grants its wait (or the
// session ends), or with CANCELLED when the caller gives up. Exactly one
// Finish: a wait the table still holds is cancelled there first, and a
// grant that races the caller's cancel gives the lock straight back.
class LockReactor : public grpc::ServerUnaryReactor {
 public:
  LockReactor(ServiceContext* ctx, LockTable* table, grpc::CallbackServerContext* call)
      : ctx_(ctx), table_(table), call_(call) {}

  void Start(absl::StatusOr<ParsedLock> parsed, bool wait) {
    if (!parsed.ok()) return Done(parsed.status());
    lock_ = *std::move(parsed);
    auto result = table_->Lock(lock_->key, lock_->owner, lock_->range, wait,
                               [this](absl::Status s) { Granted(s); });
    if (!result.ok()) return Done(result.status());
    switch (result->outcome) {
      case LockTable::Outcome::kGranted:
        return Done(absl::OkStatus());
      case LockTable::Outcome::kConflict:
        return Done(PosixError(EAGAIN, "the lock is held by another owner"));
      case LockTable::Outcome::kWaiting:
        waiter_.store(result->waiter);
        return;
    }
  }

  void OnCancel() override {
    uint64_t waiter = waiter_.load();
    if (waiter != 0 && table_->Cancel(lock_->key, waiter)) {
      Done(absl::CancelledError("the wait for the lock was cancelled"));
    }
  }
  void OnDone() override { delete this; }

 private:
  void Granted(absl::Status status) {
    if (status.ok() && call_->IsCancelled()) {
      // Nobody is waiting for it any more: do not leave it held.
      table_->Unlock(lock_->key, lock_->owner, lock_->range.kind, lock_->range.start,
                     lock_->range.end);
      status = absl::CancelledError("the wait for the lock was cancelled");
    }
    Done(status);
  }
  void Done(const absl::Status& status) {
    if (finished_.exchange(true)) return;
    ctx_->Finished("rpc.Lock", status, started_);
    Finish(rpc::ToGrpcStatus(status));
  }

  ServiceContext* ctx_;
  const ServiceContext::Clock::time_point started_ = ServiceContext::Clock::now();
  LockTable* table_;
  grpc::CallbackServerContext* call_;
  std::optional<ParsedLock> lock_;
  std::atomic<uint64_t> waiter_{0};
  std::atomic<bool> finished_{false};
};

}  // namespace

LockService::LockService(ServiceContext* ctx, std::chrono::milliseconds lease, std::string marker)
    : ctx_(ctx), lease_(lease), marker_(std::move(marker)) {
  marker_exists_ = !marker_.empty() && access(marker_.c_str(), F_OK) == 0;
  if (marker_exists_) {
    grace_until_ = std::chrono::steady_clock::now() + lease_;
    spdlog::info(
        "locks: nodes held lock sessions when the last server stopped; for {} ms only "
        "their reclaims are granted",
        lease_.count());
  }
  expiry_ = std::thread([this] { ExpiryLoop(); });
}

void LockService::UpdateMarkerLocked() {
  const bool want = !sessions_.empty();
  if (marker_.empty() || want == marker_exists_) return;
  if (want) {
    int fd = open(marker_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      spdlog::warn("locks: cannot create {}: {}; a restart will not wait for reclaims", marker_,
                   strerror(errno));
      return;
    }
    close(fd);
  } else if (unlink(marker_.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("locks: cannot remove {}: {}", marker_, strerror(errno));
    return;
  }
  marker_exists_ = want;
}

absl::Status LockService::CheckGrace(const v1::LockRequest& req) const {
  const bool in_grace = std::chrono::steady_clock::now() < grace_until_;
  if (req.reclaim() && !in_grace) {
    return PosixError(ENOLCK,
                      "a reclaim after the grace period: the lock may have been "
                      "taken by another node since");
  }
  if (!req.reclaim() && in_grace) {
    // No errno: the client waits and asks again, as for a server it cannot reach.
    return absl::UnavailableError(
        "the lock service has just restarted and is waiting for nodes to reclaim their locks");
  }
  return absl::OkStatus();
}

LockService::~LockService() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  expiry_.join();
}

void LockService::ExpiryLoop() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::min<std::chrono::milliseconds>(lease_ / 4, std::chrono::seconds(1)));
    auto now = std::chrono::steady_clock::now();
    std::vector<std::pair<uint64_t, std::string>> expired;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      expired.emplace_back(it->first, it->second.node);
      it = sessions_.erase(it);
    }
    UpdateMarkerLocked();
    lock.unlock();
    for (const auto& [session, node] : expired) {
      spdlog::warn("locks: session {:x} of node {} expired; its locks are released", session, node);
      ctx_->counters().Add("locks.sessions_expired");
      table_.ReleaseSession(session);
    }
    lock.lock();
  }
}

absl::Status LockService::CheckSession(uint64_t session) {
  std::lock_guard lock(mu_);
  if (sessions_.count(session) == 0) {
    return PosixError(ENOLCK, fmt::format("lock session {:x} is unknown or expired: its locks "
                                          "were released",
                                          session));
  }
  return absl::OkStatus();
}

absl::Status LockService::CheckSessionOwner(uint64_t session,
                                            const grpc::CallbackServerContext* c) {
  if (ctx_->attachments() == nullptr) return absl::OkStatus();
  const std::string identity = ServiceContext::PeerIdentity(c);
  std::lock_guard lock(mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end() || (!identity.empty() && it->second.identity == identity)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      fmt::format("lock session {:x} was opened by another node than '{}'", session, identity));
}

grpc::ServerUnaryReactor* LockService::OpenSession(grpc::CallbackServerContext* c,
                                                   const v1::OpenSessionRequest* req,
                                                   v1::SessionResponse* resp) {
  return ctx_->Unary(c, "rpc.OpenSession", ServiceContext::Work::kQuick, [=, this] {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    std::lock_guard lock(mu_);
    uint64_t id = 0;
    while (id == 0 || sessions_.count(id)) id = rng();
    sessions_[id] = Session{.node = req->node().substr(0, 256),
                            .identity = ServiceContext::PeerIdentity(c),
                            .deadline = std::chrono::steady_clock::now() + lease_};
    UpdateMarkerLocked();
    resp->set_session(id);
    resp->set_lease_ms(static_cast<uint32_t>(lease_.count()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* LockService::KeepAlive(grpc::CallbackServerContext* c,
                                                 const v1::SessionRef* req,
                                                 v1::SessionResponse* resp) {
  return ctx_->Unary(c, "rpc.KeepAlive", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(req->session());
    if (it == sessions_.end()) {
      return PosixError(ENOLCK, fmt::format("lock session {:x} expired: its locks were released",
                                            req->session()));
    }
    it->second.deadline = std::chrono::steady_clock::now() + lease_;
    resp->set_session(req->session());
    resp->set_lease_ms(static_cast<uint32_t>(lease_.count()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* LockService::CloseSession(grpc::CallbackServerContext* c,
                                                    const v1::SessionRef* req,
                                                    v1::SessionResponse* resp) {
  return ctx_->Unary(c, "rpc.CloseSession", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    // Closing frees every lock of the session: only its opener may.
    RETURN_IF_ERROR(CheckSessionOwner(req->session(), c));
    bool existed;
    {
      std::lock_guard lock(mu_);
      existed = sessions_.erase(req->session()) > 0;
      UpdateMarkerLocked();
    }
    if (existed) table_.ReleaseSession(req->session());
    resp->set_session(req->session());
    return absl::OkStatus();
  });
}

namespace {

// `c` null: the scope is not checked against the caller's attachments
// (Unlock: see there).
absl::StatusOr<ParsedLock> ParseLock(ServiceContext& ctx, const grpc::CallbackServerContext* c,
                                     const v1::LockRequest& req) {
  ASSIGN_OR_RETURN(Scope scope, c ? ctx.ScopeOf(c, req.scope()) : ctx.ParseScope(req.scope()));
  if (req.ino() == 0) return absl::InvalidArgumentError("inode 0 does not exist");
  ASSIGN_OR_RETURN(LockKind kind, KindOf(req.kind()));
  ASSIGN_OR_RETURN(LockType type, TypeOf(req.type()));
  if (req.start() > req.end()) {
    return absl::InvalidArgumentError(
        fmt::format("lock range start {} is past its end {}", req.start(), req.end()));
  }
  std::string key = FileKey(scope, req.ino());
  return ParsedLock{std::move(scope), std::move(key), LockOwner{req.session(), req.owner()},
                    LockRange{kind, type, req.start(), req.end(), req.pid()}};
}

}  // namespace

grpc::ServerUnaryReactor* LockService::Lock(grpc::CallbackServerContext* c,
                                            const v1::LockRequest* req, v1::LockResponse*) {
  auto* reactor = new LockReactor(ctx_, &table_, c);
  absl::StatusOr<ParsedLock> parsed = [&]() -> absl::StatusOr<ParsedLock> {
    RETURN_IF_ERROR(ctx_->CheckAuth(c));
    ASSIGN_OR_RETURN(ParsedLock p, ParseLock(*ctx_, c, *req));
    if (p.range.type == LockType::kUnlock) {
      return absl::InvalidArgumentError("Lock of type unlock (use Unlock)");
    }
    RETURN_IF_ERROR(CheckSessionOwner(req->session(), c));
    RETURN_IF_ERROR(CheckSession(req->session()));
    RETURN_IF_ERROR(CheckGrace(*req));
    return p;
  }();
  const bool started = parsed.ok();
  reactor->Start(std::move(parsed), req->wait());  // may finish (and free) the reactor
  // The session may have expired between the check and the table insert;
  // then what was just taken or queued belongs to nobody: drop it (waits
  // end with ABORTED).
  if (started && !CheckSession(req->session()).ok()) table_.ReleaseSession(req->session());
  return reactor;
}

grpc::ServerUnaryReactor* LockService::Unlock(grpc::CallbackServerContext* c,
                                              const v1::LockRequest* req, v1::LockResponse*) {
  return ctx_->Unary(c, "rpc.Unlock", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    // Not checked against the caller's attachments, but against who opened
    // the session: an unlock only gives up the caller's own locks, and the
    // kernel's release of a flock can reach the server after the job's
    // detach; refused, the lock would stay held by a live session and
    // block every other node until this node's daemon stops.
    ASSIGN_OR_RETURN(ParsedLock p, ParseLock(*ctx_, nullptr, *req));
    RETURN_IF_ERROR(CheckSessionOwner(req->session(), c));
    // An expired session holds nothing: its unlock must not touch what
    // others took since.
    RETURN_IF_ERROR(CheckSession(req->session()));
    table_.Unlock(p.key, p.owner, p.range.kind, p.range.start, p.range.end);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* LockService::TestLock(grpc::CallbackServerContext* c,
                                                const v1::LockRequest* req,
                                                v1::TestLockResponse* resp) {
  return ctx_->Unary(c, "rpc.TestLock", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(ParsedLock p, ParseLock(*ctx_, c, *req));
    RETURN_IF_ERROR(CheckSessionOwner(req->session(), c));
    RETURN_IF_ERROR(CheckSession(req->session()));
    std::optional<HeldLock> held = table_.Test(p.key, p.owner, p.range);
    resp->set_conflict(held.has_value());
    if (held) {
      resp->set_type(ToProto(held->range.type));
      resp->set_start(held->range.start);
      resp->set_end(held->range.end);
      resp->set_pid(held->range.pid);
    }
    return absl::OkStatus();
  });
}

}  // namespace traincache::server
