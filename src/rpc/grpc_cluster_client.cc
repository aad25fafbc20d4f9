#include "rpc/grpc_cluster_client.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "metrics/latency_histograms.h"
#include "rpc/convert.h"
#include "traincache/status.h"

namespace traincache::rpc {

namespace {

using Clock = std::chrono::steady_clock;

// `status` with errno `err` recorded (status.h), its code unchanged.
absl::Status WithErrno(absl::Status status, int err) {
  status.SetPayload(std::string(kErrnoPayload), absl::Cord(std::to_string(err)));
  return status;
}

// A failure of the transport rather than an answer of the server: the server
// answers with an errno wherever one fits, and never with these codes without.
// CANCELLED: this client never cancels its calls, so it is the server's doing —
// a stopping server cancels the calls it has not finished.
bool IsTransient(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
      return !ErrnoOf(status).has_value();
    default:
      return false;
  }
}

int64_t Millis(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

void ToProto(const Caller& in, v1::Caller* out) {
  out->set_uid(in.uid);
  out->set_gid(in.gid);
}

UnlinkResult FromProto(const v1::UnlinkResponse& in) {
  return UnlinkResult{.ino = in.ino(), .nlink = in.nlink(), .orphaned = in.orphaned()};
}

std::string MakeNodeId() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::random_device rd;
  return fmt::format("{}:{}:{:08x}{:08x}", host, getpid(), rd(), rd());
}

// One WatchScope stream: reads until the stream ends, handing each message
// to `on_changes`, then the status to `on_end` (unless the subscription is
// being destroyed). The destructor cancels the call and waits for OnDone.
class WatchCall final : public grpc::ClientReadReactor<v1::ScopeChanges>,
                        public ChangeSubscription {
 public:
  WatchCall(std::unique_ptr<grpc::ClientContext> ctx, v1::WatchScopeRequest req,
            std::function<void(ScopeChanges)> on_changes, std::function<void(absl::Status)> on_end)
      : ctx_(std::move(ctx)),
        req_(std::move(req)),
        on_changes_(std::move(on_changes)),
        on_end_(std::move(on_end)) {}

  ~WatchCall() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    ctx_->TryCancel();
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [this] { return done_; });
  }

  void Begin(v1::Namespace::Stub& stub) {
    stub.async()->WatchScope(ctx_.get(), &req_, this);
    StartRead(&msg_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The stream ended: OnDone says how.
    ScopeChanges changes;
    changes.start = msg_.start();
    changes.lost = msg_.lost();
    changes.entries.reserve(msg_.entries_size());
    for (v1::EntryChange& e : *msg_.mutable_entries()) {
      changes.entries.emplace_back(e.parent(), std::move(*e.mutable_name()));
    }
    changes.inodes.assign(msg_.inodes().begin(), msg_.inodes().end());
    if (!Stopping()) on_changes_(std::move(changes));
    StartRead(&msg_);
  }

  void OnDone(const grpc::Status& status) override {
    if (!Stopping()) on_end_(FromGrpcStatus(status));
    // Last: the destructor may free this object as soon as it sees done_.
    std::lock_guard lock(mu_);
    done_ = true;
    done_cv_.notify_all();
  }

 private:
  bool Stopping() {
    std::lock_guard lock(mu_);
    return stopping_;
  }

  std::unique_ptr<grpc::ClientContext> ctx_;
  v1::WatchScopeRequest req_;
  std::function<void(ScopeChanges)> on_changes_;
  std::function<void(absl::Status)> on_end_;
  v1::ScopeChanges msg_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool stopping_ = false;  // guarded by mu_
  bool done_ = false;      // guarded by mu_
};

}  // namespace

GrpcClusterClient::GrpcClusterClient(GrpcClusterClientOptions options)
    : options_(std::move(options)),
      node_id_(options_.node_id.empty() ? MakeNodeId() : options_.node_id),
      request_client_(MakeNodeId()),
      rpc_(ClientOptions{.target = options_.target,
                         .token = options_.token,
                         .deadline = options_.call_deadline,
                         .tls = options_.tls}) {
  if (options_.metrics) {
    // The ops Run is called with are the Namespace and Chunks method names.
    latency_ = std::make_unique<metrics::LatencyHistograms>(
        *options_.metrics, "traincache_node_rpc_duration_seconds",
        "Time a node's call to the server took, retries and outage waits included, by method",
        "method",
        MethodNames({v1::Namespace::service_full_name(), v1::Chunks::service_full_name()}));
  }
}

GrpcClusterClient::~GrpcClusterClient() = default;

std::unique_ptr<grpc::ClientContext> GrpcClusterClient::NewContext() const {
  std::unique_ptr<grpc::ClientContext> ctx = rpc_.NewContext();
  ctx->AddMetadata(kNodeIdMetadata, node_id_);
  return ctx;
}

void GrpcClusterClient::NewRequestId(v1::RequestId* out) {
  out->set_client(request_client_);
  out->set_seq(next_seq_.fetch_add(1, std::memory_order_relaxed));
}

absl::StatusOr<std::unique_ptr<ChangeSubscription>> GrpcClusterClient::WatchScope(
    const Scope& scope, std::function<void(ScopeChanges)> on_changes,
    std::function<void(absl::Status)> on_end) {
  // No deadline (the stream lasts as long as the mount) and no
  // wait_for_ready: a server that is down ends it at once, and the caller
  // knows to fall back to short cache times until it subscribes again.
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!options_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.token);
  ctx->AddMetadata(kNodeIdMetadata, node_id_);
  v1::WatchScopeRequest req;
  req.set_scope(scope.ToString());
  req.set_node_id(node_id_);
  auto call = std::make_unique<WatchCall>(std::move(ctx), std::move(req), std::move(on_changes),
                                          std::move(on_end));
  call->Begin(rpc_.ns());
  return std::unique_ptr<ChangeSubscription>(std::move(call));
}

bool GrpcClusterClient::WaitForConnection(grpc::Channel& channel, Clock::time_point give_up) {
  for (;;) {
    grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) return true;
    Clock::time_point now = Clock::now();
    if (now >= give_up) return false;
    // Wake at least every 250 ms: WaitForStateChange takes a system_clock
    // deadline, and give_up is on the steady clock.
    Clock::duration step = std::min<Clock::duration>(give_up - now, std::chrono::milliseconds(250));
    IGNORE_ERROR(channel.WaitForStateChange(state, std::chrono::system_clock::now() + step));
  }
}

absl::Status GrpcClusterClient::Run(std::string_view op, Resend resend, grpc::Channel& channel,
                                    const std::function<absl::Status()>& attempt) {
  metrics::ScopedLatency timer(latency_ ? latency_->Find(op) : nullptr);
  std::optional<Clock::time_point> outage_start;  // First sign of trouble of this call.
  auto backoff = options_.initial_backoff;
  absl::Status last = absl::UnavailableError("no connection to the server");
  auto unreachable = [&] {
    return WithErrno(
        absl::UnavailableError(fmt::format(
            "{}: server {} unreachable for {} ms (outage timeout {} ms); last error: {}", op,
            options_.target, Millis(Clock::now() - *outage_start), options_.outage_timeout.count(),
            last.ToString())),
        EIO);
  };
  for (;;) {
    // Nothing is sent while waiting here, so waiting is safe for any request.
    if (channel.GetState(/*try_to_connect=*/true) != GRPC_CHANNEL_READY) {
      if (!outage_start) outage_start = Clock::now();
      if (!WaitForConnection(channel, *outage_start + options_.outage_timeout)) {
        return unreachable();
      }
    }
    Clock::time_point sent = Clock::now();
    absl::Status status = attempt();
    if (!IsTransient(status)) return status;
    if (resend == Resend::kNever) {
      if (status.code() == absl::StatusCode::kDeadlineExceeded) return status;
      return WithErrno(absl::UnknownError(fmt::format(
                           "{}: the connection to {} failed while the request was in flight; "
                           "it may or may not have been applied ({})",
                           op, options_.target, status.ToString())),
                       EIO);
    }
    last = status;
    // A call that ran out its deadline has seen no answer since it was sent.
    if (!outage_start) {
      outage_start = status.code() == absl::StatusCode::kDeadlineExceeded ? sent : Clock::now();
    }
    Clock::time_point give_up = *outage_start + options_.outage_timeout;
    Clock::time_point now = Clock::now();
    if (now >= give_up) return unreachable();
    spdlog::debug("{}: transient failure, retrying in {} ms: {}", op, backoff.count(),
                  status.ToString());
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, give_up - now));
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

template <typename Req, typename Resp>
absl::Status GrpcClusterClient::Unary(
    std::string_view op, Resend resend,
    grpc::Status (v1::Namespace::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
    const Req& req, Resp* resp) {
  return Run(op, resend, rpc_.channel(), [&]() -> absl::Status {
    resp->Clear();
    std::unique_ptr<grpc::ClientContext> ctx = NewContext();
    // A request that must not be re-sent waits in gRPC's queue for a
    // connection instead of failing when the one checked by Run has just
    // dropped: it is sent only once a connection is up, and only once.
    ctx->set_wait_for_ready(resend == Resend::kNever);
    return FromGrpcStatus((rpc_.ns().*method)(ctx.get(), req, resp));
  });
}

absl::StatusOr<OpenScopeResult> GrpcClusterClient::OpenScope(const Scope& scope, bool create) {
  v1::OpenScopeRequest req;
  req.set_scope(scope.ToString());
  req.set_create(create);
  v1::OpenScopeResponse resp;
  RETURN_IF_ERROR(Unary("OpenScope", Resend::kSafe, &v1::Namespace::Stub::OpenScope, req, &resp));
  return OpenScopeResult{.root = rpc::FromProto(resp.root()), .generation = resp.generation()};
}

absl::StatusOr<InodeAttr> GrpcClusterClient::Lookup(const Scope& scope, InodeId parent,
                                                    std::string_view name) {
  v1::LookupRequest req;
  req.set_scope(scope.ToString());
  req.set_parent(parent);
  req.set_name(std::string(name));
  v1::AttrResponse resp;
  RETURN_IF_ERROR(Unary("Lookup", Resend::kSafe, &v1::Namespace::Stub::Lookup, req, &resp));
  return rpc::FromProto(resp.attr());
}

absl::StatusOr<InodeAttr> GrpcClusterClient::GetAttr(const Scope& scope, InodeId ino) {
  v1::GetAttrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  v1::AttrResponse resp;
  RETURN_IF_ERROR(Unary("GetAttr", Resend::kSafe, &v1::Namespace::Stub::GetAttr, req, &resp));
  return rpc::FromProto(resp.attr());
}

absl::StatusOr<InodeAttr> GrpcClusterClient::SetAttr(const Scope& scope, InodeId ino,
                                                     const SetAttrRequest& set) {
  v1::SetAttrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  if (set.mode) req.set_mode(*set.mode);
  if (set.uid) req.set_uid(*set.uid);
  if (set.gid) req.set_gid(*set.gid);
  if (set.size) req.set_size(*set.size);
  if (set.atime) rpc::ToProto(*set.atime, req.mutable_atime());
  if (set.mtime) rpc::ToProto(*set.mtime, req.mutable_mtime());
  v1::AttrResponse resp;
  // Absolute values: applying them twice leaves what applying them once does.
  RETURN_IF_ERROR(Unary("SetAttr", Resend::kSafe, &v1::Namespace::Stub::SetAttr, req, &resp));
  return rpc::FromProto(resp.attr());
}

absl::StatusOr<ReadDirPage> GrpcClusterClient::ReadDir(const Scope& scope, InodeId dir,
                                                       std::string_view after, uint32_t limit,
                                                       bool plus) {
  v1::ReadDirRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(dir);
  req.set_after(std::string(after));
  req.set_limit(limit);
  req.set_plus(plus);
  v1::ReadDirResponse resp;
  RETURN_IF_ERROR(Unary("ReadDir", Resend::kSafe, &v1::Namespace::Stub::ReadDir, req, &resp));
  ReadDirPage page;
  page.entries.reserve(resp.entries_size());
  for (const v1::DirEntry& e : resp.entries()) page.entries.push_back(rpc::FromProto(e));
  page.more = resp.more();
  return page;
}

absl::StatusOr<InodeAttr> GrpcClusterClient::Mkdir(const Scope& scope, InodeId parent,
                                                   std::string_view name, uint32_t mode,
                                                   const Caller& caller) {
  v1::MkdirRequest req;
  req.set_scope(scope.ToString());
  req.set_parent(parent);
  req.set_name(std::string(name));
  req.set_mode(mode);
  ToProto(caller, req.mutable_caller());
  NewRequestId(req.mutable_request());
  v1::AttrResponse resp;
  RETURN_IF_ERROR(Unary("Mkdir", Resend::kSafe, &v1::Namespace::Stub::Mkdir, req, &resp));
  return rpc::FromProto(resp.attr());
}

absl::StatusOr<CreateResult> GrpcClusterClient::Create(const Scope& scope, InodeId parent,
                                                       std::string_view name, uint32_t mode,
                                                       const Caller& caller, bool exclusive) {
  v1::CreateRequest req;
  req.set_scope(scope.ToString());
  req.set_parent(parent);
  req.set_name(std::string(name));
  req.set_mode(mode);
  ToProto(caller, req.mutable_caller());
  req.set_exclusive(exclusive);
  // Without O_EXCL a second copy finds the file the first made and returns
  // it; with O_EXCL the id makes a copy return the first one's answer (the
  // file it created), not EEXIST.
  NewRequestId(req.mutable_request());
  v1::CreateResponse resp;
  RETURN_IF_ERROR(Unary("Create", Resend::kSafe, &v1::Namespace::Stub::Create, req, &resp));
  CreateResult r{.attr = rpc::FromProto(resp.attr()), .created = resp.created()};
  if (resp.has_parent()) r.parent = rpc::FromProto(resp.parent());
  return r;
}

absl::StatusOr<UnlinkResult> GrpcClusterClient::Unlink(const Scope& scope, InodeId parent,
                                                       std::string_view name) {
  v1::UnlinkRequest req;
  req.set_scope(scope.ToString());
  req.set_parent(parent);
  req.set_name(std::string(name));
  NewRequestId(req.mutable_request());
  v1::UnlinkResponse resp;
  RETURN_IF_ERROR(Unary("Unlink", Resend::kSafe, &v1::Namespace::Stub::Unlink, req, &resp));
  return FromProto(resp);
}

absl::Status GrpcClusterClient::Rmdir(const Scope& scope, InodeId parent, std::string_view name) {
  v1::RmdirRequest req;
  req.set_scope(scope.ToString());
  req.set_parent(parent);
  req.set_name(std::string(name));
  NewRequestId(req.mutable_request());
  v1::Empty resp;
  return Unary("Rmdir", Resend::kSafe, &v1::Namespace::Stub::Rmdir, req, &resp);
}

absl::StatusOr<UnlinkResult> GrpcClusterClient::Rename(const Scope& scope, InodeId parent,
                                                       std::string_view name, InodeId new_parent,
                                                       std::string_view new_name, uint32_t flags) {
  v1::RenameRequest req;
  req.set_scope(scope.ToString());
  req.set_parent(parent);
  req.set_name(std::string(name));
  req.set_new_parent(new_parent);
  req.set_new_name(std::string(new_name));
  req.set_flags(flags);
  NewRequestId(req.mutable_request());
  v1::UnlinkResponse resp;
  RETURN_IF_ERROR(Unary("Rename", Resend::kSafe, &v1::Namespace::Stub::Rename, req, &resp));
  return FromProto(resp);
}

absl::StatusOr<InodeAttr> GrpcClusterClient::Symlink(const Scope& scope, InodeId parent,
                                                     std::string_view name, std::string_view target,
                                                     const Caller& caller) {
  v1::SymlinkRequest req;
  req.set_scope(scope.ToString());
  req.set_parent(parent);
  req.set_name(std::string(name));
  req.set_target(std::string(target));
  ToProto(caller, req.mutable_caller());
  NewRequestId(req.mutable_request());
  v1::AttrResponse resp;
  RETURN_IF_ERROR(Unary("Symlink", Resend::kSafe, &v1::Namespace::Stub::Symlink, req, &resp));
  return rpc::FromProto(resp.attr());
}

absl::StatusOr<std::string> GrpcClusterClient::ReadLink(const Scope& scope, InodeId ino) {
  v1::GetAttrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  v1::ReadLinkResponse resp;
  RETURN_IF_ERROR(Unary("ReadLink", Resend::kSafe, &v1::Namespace::Stub::ReadLink, req, &resp));
  return std::move(*resp.mutable_target());
}

absl::StatusOr<InodeAttr> GrpcClusterClient::Link(const Scope& scope, InodeId ino,
                                                  InodeId new_parent, std::string_view new_name) {
  v1::LinkRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  req.set_new_parent(new_parent);
  req.set_new_name(std::string(new_name));
  NewRequestId(req.mutable_request());
  v1::AttrResponse resp;
  RETURN_IF_ERROR(Unary("Link", Resend::kSafe, &v1::Namespace::Stub::Link, req, &resp));
  return rpc::FromProto(resp.attr());
}

absl::StatusOr<std::string> GrpcClusterClient::GetXattr(const Scope& scope, InodeId ino,
                                                        std::string_view name) {
  v1::XattrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  req.set_name(std::string(name));
  v1::XattrResponse resp;
  RETURN_IF_ERROR(Unary("GetXattr", Resend::kSafe, &v1::Namespace::Stub::GetXattr, req, &resp));
  return std::move(*resp.mutable_value());
}

absl::Status GrpcClusterClient::SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                                         std::string_view value, uint32_t flags) {
  v1::XattrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  req.set_name(std::string(name));
  req.set_value(std::string(value));
  req.set_flags(flags);
  // A second copy of XATTR_CREATE would fail with EEXIST on its own value
  // but for the id.
  NewRequestId(req.mutable_request());
  v1::Empty resp;
  return Unary("SetXattr", Resend::kSafe, &v1::Namespace::Stub::SetXattr, req, &resp);
}

absl::StatusOr<std::vector<std::string>> GrpcClusterClient::ListXattr(const Scope& scope,
                                                                      InodeId ino) {
  v1::GetAttrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  v1::ListXattrResponse resp;
  RETURN_IF_ERROR(Unary("ListXattr", Resend::kSafe, &v1::Namespace::Stub::ListXattr, req, &resp));
  return std::vector<std::string>(resp.names().begin(), resp.names().end());
}

absl::Status GrpcClusterClient::RemoveXattr(const Scope& scope, InodeId ino,
                                            std::string_view name) {
  v1::XattrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  req.set_name(std::string(name));
  // A second copy would fail with ENODATA but for the id.
  NewRequestId(req.mutable_request());
  v1::Empty resp;
  return Unary("RemoveXattr", Resend::kSafe, &v1::Namespace::Stub::RemoveXattr, req, &resp);
}

absl::Status GrpcClusterClient::Sync(const Scope& scope) {
  v1::ScopeRequest req;
  req.set_scope(scope.ToString());
  v1::Empty resp;
  absl::Status s = Unary("Sync", Resend::kSafe, &v1::Namespace::Stub::Sync, req, &resp);
  // A server from before Sync made every change durable as it applied it.
  if (absl::IsUnimplemented(s)) return absl::OkStatus();
  return s;
}

absl::StatusOr<ScopeUsage> GrpcClusterClient::StatFs(const Scope& scope) {
  v1::ScopeRequest req;
  req.set_scope(scope.ToString());
  v1::StatFsResponse resp;
  RETURN_IF_ERROR(Unary("StatFs", Resend::kSafe, &v1::Namespace::Stub::StatFs, req, &resp));
  return ScopeUsage{
      .bytes = resp.used_bytes(), .inodes = resp.inodes(), .quota_bytes = resp.quota_bytes()};
}

absl::StatusOr<ChunkMap> GrpcClusterClient::GetChunkMap(const Scope& scope, InodeId ino) {
  v1::GetAttrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  v1::ChunkMapResponse resp;
  RETURN_IF_ERROR(
      Unary("GetChunkMap", Resend::kSafe, &v1::Namespace::Stub::GetChunkMap, req, &resp));
  ChunkMap map;
  map.version = resp.version();
  map.size = resp.size();
  map.chunk_size = resp.chunk_size();
  ASSIGN_OR_RETURN(map.chunks, rpc::FromProto(resp.chunks()));
  return map;
}

absl::StatusOr<InodeAttr> GrpcClusterClient::CommitContent(const Scope& scope, InodeId ino,
                                                           uint64_t expected_version, uint64_t size,
                                                           uint32_t chunk_size,
                                                           const std::vector<ChunkRef>& chunks,
                                                           Timespec mtime) {
  return CommitContentWithSmallChunks(scope, ino, expected_version, size, chunk_size, chunks, mtime,
                                      {});
}

absl::StatusOr<InodeAttr> GrpcClusterClient::CommitContentWithSmallChunks(
    const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size, uint32_t chunk_size,
    const std::vector<ChunkRef>& chunks, Timespec mtime,
    const std::vector<std::string_view>& small_chunks) {
  v1::CommitRequest req;
  for (std::string_view data : small_chunks) req.add_small_chunks(data.data(), data.size());
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  req.set_expected_version(expected_version);
  req.set_size(size);
  req.set_chunk_size(chunk_size);
  for (const ChunkRef& ref : chunks) rpc::ToProto(ref, req.add_chunks());
  rpc::ToProto(mtime, req.mutable_mtime());
  v1::AttrResponse resp;
  int attempts = 0;
  absl::Status status = Run("CommitContent", Resend::kSafe, rpc_.channel(), [&]() -> absl::Status {
    ++attempts;
    resp.Clear();
    std::unique_ptr<grpc::ClientContext> ctx = NewContext();
    return FromGrpcStatus(rpc_.ns().CommitContent(ctx.get(), req, &resp));
  });
  if (status.ok()) return rpc::FromProto(resp.attr());
  if (attempts < 2 || ErrnoOf(status) != ESTALE) return status;
  // A re-sent commit was refused as stale: an earlier copy may have been
  // applied. It was if the file now holds exactly these chunks, newer.
  absl::StatusOr<ChunkMap> now = GetChunkMap(scope, ino);
  if (now.ok() && now->version > expected_version && now->size == size &&
      now->chunk_size == chunk_size && now->chunks == chunks) {
    spdlog::info("scope {} inode {}: commit was applied before the connection broke",
                 scope.ToString(), ino);
    return GetAttr(scope, ino);
  }
  return status;
}

absl::Status GrpcClusterClient::ReleaseInode(const Scope& scope, InodeId ino) {
  v1::GetAttrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  v1::Empty resp;
  // Frees an orphan; a second copy finds it gone, which is OK.
  return Unary("ReleaseInode", Resend::kSafe, &v1::Namespace::Stub::ReleaseInode, req, &resp);
}

absl::StatusOr<std::vector<std::optional<uint64_t>>> GrpcClusterClient::HasChunks(
    const Scope& scope, const std::vector<ChunkId>& ids) {
  std::vector<int64_t> sizes;
  RETURN_IF_ERROR(Run("HasChunks", Resend::kSafe, rpc_.bulk_channel(), [&]() -> absl::Status {
    ASSIGN_OR_RETURN(sizes, rpc_.HasChunks(scope, ids));
    return absl::OkStatus();
  }));
  std::vector<std::optional<uint64_t>> out;
  out.reserve(sizes.size());
  for (int64_t s : sizes) {
    out.push_back(s < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(s)));
  }
  return out;
}

absl::Status GrpcClusterClient::PutChunks(const Scope& scope,
                                          const std::vector<std::string_view>& chunks) {
  for (std::string_view data : chunks) {
    if (data.size() > kMaxChunkSize) {
      return PosixError(EINVAL, fmt::format("chunk of {} bytes is over the {} byte limit",
                                            data.size(), kMaxChunkSize));
    }
  }
  // Chunks are named by their bytes: storing one twice stores the same thing.
  return Run("PutChunks", Resend::kSafe, rpc_.bulk_channel(),
             [&] { return rpc_.PutChunks(scope, chunks); });
}

absl::Status GrpcClusterClient::PutHashedChunks(const Scope& scope, const std::vector<ChunkId>& ids,
                                                const std::vector<std::string_view>& chunks) {
  if (ids.size() != chunks.size()) {
    return absl::InvalidArgumentError("PutHashedChunks: one id per chunk");
  }
  for (std::string_view data : chunks) {
    if (data.size() > kMaxChunkSize) {
      return PosixError(EINVAL, fmt::format("chunk of {} bytes is over the {} byte limit",
                                            data.size(), kMaxChunkSize));
    }
  }
  // Timed as "PutChunks": it is that method on the wire.
  return Run("PutChunks", Resend::kSafe, rpc_.bulk_channel(),
             [&] { return rpc_.PutChunks(scope, chunks, &ids); });
}

absl::StatusOr<std::string> GrpcClusterClient::GetChunk(const Scope& scope, const ChunkId& id,
                                                        uint64_t offset, uint64_t length) {
  std::string out;
  RETURN_IF_ERROR(Run("GetChunk", Resend::kSafe, rpc_.bulk_channel(), [&]() -> absl::Status {
    ASSIGN_OR_RETURN(out, rpc_.GetChunk(scope, id, offset, length));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::string> GrpcClusterClient::GetChunkUnverified(const Scope& scope,
                                                                  const ChunkId& id) {
  std::string out;
  // Timed as "GetChunk": it is that method on the wire.
  RETURN_IF_ERROR(Run("GetChunk", Resend::kSafe, rpc_.bulk_channel(), [&]() -> absl::Status {
    ASSIGN_OR_RETURN(out, rpc_.GetChunk(scope, id, 0, 0, /*client_verifies=*/true));
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace traincache::rpc
