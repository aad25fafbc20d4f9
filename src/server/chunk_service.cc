#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <mutex>
#include <shared_mutex>
#include <chrono>

#include "rpc/client.h"
#include "server/services.h"
#include "traincache/status.h"

namespace traincache::server {

namespace {

// Receives a PutChunks stream: header, data pieces, header, ... Each chunk is
// assembled in memory (at most kMaxChunkSize), then stored on the worker pool;
// the next read starts only after the store answered, so at most one chunk per
// stream is in memory.
class PutChunksReactor final : public grpc::ServerReadReactor<v1::PutChunksRequest> {
 public:
  PutChunksReactor(ServiceContext* ctx, grpc::CallbackServerContext* call,
                   v1::PutChunksResponse* resp)
      : ctx_(ctx), call_(call), resp_(resp) {
    if (absl::Status auth = ctx_->CheckAuth(call); !auth.ok()) {
      End(auth);
      return;
    }
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // Client finished sending.
      if (pending_) {
        End(PosixError(EINVAL, fmt::format("stream ended inside chunk {} ({} of {} bytes)",
                                           pending_id_.ToHex(), buffer_.size(), pending_size_)));
      } else {
        End(absl::OkStatus());
      }
      return;
    }
    absl::Status status = Accept();
    if (!status.ok()) {
      End(status);
      return;
    }
    if (pending_ && buffer_.size() == pending_size_) {
      ctx_->pool().Submit([this] {
        absl::Status stored = Store();
        if (!stored.ok()) {
          End(stored);
          return;
        }
        ctx_->counters().Add("chunk.put.bytes", buffer_.size());
        ctx_->counters().Add("chunk.put.count");
        resp_->set_chunks_stored(resp_->chunks_stored() + 1);
        pending_ = false;
        buffer_.clear();
        StartRead(&req_);
      });
      return;
    }
    StartRead(&req_);
  }

  void OnDone() override { delete this; }

 private:
  // Stores the assembled chunk. Under the scope lock, and only into a scope
  // that exists: an upload racing DeleteScope cannot bring files back.
  absl::Status Store() {
    std::shared_lock lock(ctx_->ScopeLock(*scope_));
    RETURN_IF_ERROR(ctx_->meta().OpenScope(*scope_, /*create=*/false).status());
    return ctx_->chunks().Put(*scope_, pending_id_, buffer_);
  }

  // Takes one message into the current chunk; an error ends the stream.
  absl::Status Accept() {
    if (!scope_) {
      ASSIGN_OR_RETURN(Scope scope, ctx_->ScopeOf(call_, req_.scope()));
      scope_ = std::move(scope);
    } else if (!req_.scope().empty() && req_.scope() != scope_->ToString()) {
      return absl::InvalidArgumentError("one PutChunks stream serves one scope");
    }
    if (req_.has_header()) {
      if (pending_) return absl::InvalidArgumentError("header before the previous chunk ended");
      ASSIGN_OR_RETURN(pending_id_, ChunkId::FromBytes(req_.header().id()));
      if (req_.header().size() > kMaxChunkSize) {
        return absl::InvalidArgumentError(fmt::format(
            "chunk of {} bytes is over the {} byte limit", req_.header().size(), kMaxChunkSize));
      }
      pending_size_ = req_.header().size();
      pending_ = true;
      // No reserve: the header's size is the client's word; memory follows
      // the bytes that actually arrive.
      buffer_.clear();
    } else if (req_.part_case() == v1::PutChunksRequest::kData) {
      if (!pending_) return absl::InvalidArgumentError("data before a chunk header");
      if (buffer_.size() + req_.data().size() > pending_size_) {
        return absl::InvalidArgumentError(
            fmt::format("chunk {} has more bytes than its header's {}", pending_id_.ToHex(),
                        pending_size_));
      }
      if (buffer_.empty()) {
        buffer_ = std::move(*req_.mutable_data());  // Whole chunk in one message: no copy.
      } else {
        buffer_.append(req_.data());
      }
    } else {
      return absl::InvalidArgumentError("message with neither header nor data");
    }
    resp_->set_bytes_received(resp_->bytes_received() + req_.ByteSizeLong());
    return absl::OkStatus();
  }

  void End(const absl::Status& status) {
    ctx_->Finished("rpc.PutChunks", status, started_);
    Finish(rpc::ToGrpcStatus(status));
  }

  ServiceContext* ctx_;
  const ServiceContext::Clock::time_point started_ = ServiceContext::Clock::now();
  grpc::CallbackServerContext* call_;  // gRPC's, valid until OnDone
  v1::PutChunksResponse* resp_;
  v1::PutChunksRequest req_;
  std::optional<Scope> scope_;
  bool pending_ = false;  // A header arrived; its bytes are being collected.
  ChunkId pending_id_;
  uint64_t pending_size_ = 0;
  std::string buffer_;
};

// Sends [offset, offset+length) of one chunk in pieces of kChunkPieceBytes.
// The chunk is read (and verified, unless the client verifies) on the worker
// pool first.
class GetChunkReactor final : public grpc::ServerWriteReactor<v1::GetChunkResponse> {
 public:
  GetChunkReactor(ServiceContext* ctx, grpc::CallbackServerContext* call,
                  const v1::GetChunkRequest* req)
      : ctx_(ctx) {
    if (absl::Status auth = ctx_->CheckAuth(call); !auth.ok()) {
      End(auth);
      return;
    }
    // On gRPC's thread, before any disk is touched.
    if (absl::Status allowed = ctx_->ScopeOf(call, req->scope()).status(); !allowed.ok()) {
      End(allowed);
      return;
    }
    ctx_->pool().Submit([this, req] {
      absl::Status status = Load(*req);
      if (!status.ok()) {
        End(status);
        return;
      }
      NextPiece();
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(absl::CancelledError("client went away"));
      return;
    }
    NextPiece();
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Load(const v1::GetChunkRequest& req) {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ParseScope(req.scope()));
    ASSIGN_OR_RETURN(ChunkId id, ChunkId::FromBytes(req.id()));
    auto start = std::chrono::steady_clock::now();
    const bool whole = req.offset() == 0 && req.length() == 0;
    if (whole && req.client_verifies()) {
      // The client hashes what it receives (chunk.proto): hashing here too
      // would cost as much CPU again as the client's check.
      ASSIGN_OR_RETURN(data_, ctx_->chunks().GetUnverified(scope, id));
    } else {
      absl::StatusOr<std::string> got = ctx_->chunks().Get(scope, id, req.offset(), req.length());
      if (got.status().code() == absl::StatusCode::kDataLoss) {
        // The store logged it (scope, chunk, path) and set the file aside, so
        // the next upload of these bytes stores them again.
        ctx_->counters().Add("chunk.corrupt");
      }
      if (!got.ok()) return got.status();
      data_ = std::move(*got);
    }
    ctx_->counters().Add("chunk.get.store_micros",
                         std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::steady_clock::now() - start)
                             .count());
    if (whole) {
      chunk_size_ = data_.size();
    } else {
      ASSIGN_OR_RETURN(chunk_size_, ctx_->chunks().Stat(scope, id));
    }
    ctx_->counters().Add("chunk.get.count");
    ctx_->counters().Add("chunk.get.bytes", data_.size());
    return absl::OkStatus();
  }

  // Sends the next piece; always at least one, so an empty range still says
  // the chunk's size.
  void NextPiece() {
    if (all_sent_) {
      End(absl::OkStatus());
      return;
    }
    piece_.Clear();
    if (sent_ == 0) piece_.set_chunk_size(chunk_size_);
    size_t n = std::min(rpc::kChunkPieceBytes, data_.size() - sent_);
    if (sent_ == 0 && n == data_.size()) {
      piece_.set_data(std::move(data_));  // The usual case: one piece, no copy.
      data_.clear();
      sent_ = n;
      all_sent_ = true;
      StartWrite(&piece_);
      return;
    }
    piece_.set_data(data_.data() + sent_, n);
    sent_ += n;
    all_sent_ = sent_ == data_.size();
    StartWrite(&piece_);
  }

  void End(const absl::Status& status) {
    ctx_->Finished("rpc.GetChunk", status, started_);
    Finish(rpc::ToGrpcStatus(status));
  }

  ServiceContext* ctx_;
  const ServiceContext::Clock::time_point started_ = ServiceContext::Clock::now();
  std::string data_;
  uint64_t chunk_size_ = 0;
  size_t sent_ = 0;
  bool all_sent_ = false;
  v1::GetChunkResponse piece_;
};

}  // namespace

grpc::ServerUnaryReactor* ChunkService::HasChunks(grpc::CallbackServerContext* c,
                                                  const v1::HasChunksRequest* req,
                                                  v1::HasChunksResponse* resp) {
  return ctx_->Unary(c, "rpc.HasChunks", ServiceContext::Work::kQuick, [=, this]() -> absl::Status {
    ASSIGN_OR_RETURN(Scope scope, ctx_->ScopeOf(c, req->scope()));
    if (req->ids_size() > 1024) {
      return absl::InvalidArgumentError(
          fmt::format("HasChunks takes at most 1024 ids, got {}", req->ids_size()));
    }
    for (const std::string& raw : req->ids()) {
      ASSIGN_OR_RETURN(ChunkId id, ChunkId::FromBytes(raw));
      absl::StatusOr<uint64_t> size = ctx_->chunks().Stat(scope, id);
      if (size.ok()) {
        resp->add_sizes(static_cast<int64_t>(*size));
      } else if (size.status().code() == absl::StatusCode::kNotFound) {
        resp->add_sizes(-1);
      } else {
        return size.status();
      }
    }
    return absl::OkStatus();
  });
}

grpc::ServerReadReactor<v1::PutChunksRequest>* ChunkService::PutChunks(
    grpc::CallbackServerContext* c, v1::PutChunksResponse* resp) {
  return new PutChunksReactor(ctx_, c, resp);
}

grpc::ServerWriteReactor<v1::GetChunkResponse>* ChunkService::GetChunk(
    grpc::CallbackServerContext* c, const v1::GetChunkRequest* req) {
  return new GetChunkReactor(ctx_, c, req);
}

}  // namespace traincache::server
