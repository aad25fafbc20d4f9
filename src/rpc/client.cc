#include "rpc/client.h"

#include <fmt/format.h>

#include <algorithm>

#include "rpc/convert.h"
#include "traincache/status.h"

namespace traincache::rpc {

namespace {

// The arguments both connections share.
grpc::ChannelArguments CommonArguments(const ClientTls& tls) {
  grpc::ChannelArguments args;
  AddTlsArguments(tls, &args);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Each client gets its own connections rather than sharing one per target
  // process-wide: several clients then spread over several HTTP/2 streams
  // and TCP connections.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Let a 4 MiB chunk be in flight without waiting on HTTP/2 window updates.
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kHttp2WindowBytes);
  // Reconnect quickly after a server restart.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return args;
}

}  // namespace

ServerClient::ServerClient(ClientOptions options)
    : options_(std::move(options)),
      authorization_(options_.token.empty() ? "" : "Bearer " + options_.token) {
  // Small calls keep gRPC's default socket reads (8 KiB at first, growing
  // while reads fill the buffer): with the chunk connection's 256 KiB floor
  // every small answer cost the reading thread an allocation of that size.
  std::shared_ptr<grpc::ChannelCredentials> credentials = ChannelCredentialsFor(options_.tls);
  channel_ = grpc::CreateCustomChannel(options_.target, credentials, CommonArguments(options_.tls));
  grpc::ChannelArguments bulk = CommonArguments(options_.tls);
  bulk.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  bulk.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  bulk_channel_ = grpc::CreateCustomChannel(options_.target, credentials, bulk);
  ns_ = v1::Namespace::NewStub(channel_);
  chunks_ = v1::Chunks::NewStub(bulk_channel_);
  admin_ = v1::Admin::NewStub(channel_);
  cluster_ = v1::Cluster::NewStub(channel_);
  locks_ = v1::Locks::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> ServerClient::NewContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!authorization_.empty()) ctx->AddMetadata("authorization", authorization_);
  ctx->set_deadline(std::chrono::system_clock::now() + options_.deadline);
  return ctx;
}

absl::StatusOr<std::vector<int64_t>> ServerClient::HasChunks(const Scope& scope,
                                                             const std::vector<ChunkId>& ids) {
  std::vector<int64_t> sizes;
  sizes.reserve(ids.size());
  for (size_t start = 0; start < ids.size(); start += kMaxHasChunksIds) {
    v1::HasChunksRequest req;
    req.set_scope(scope.ToString());
    size_t end = std::min(ids.size(), start + kMaxHasChunksIds);
    for (size_t i = start; i < end; ++i) req.add_ids(std::string(ids[i].bytes()));
    v1::HasChunksResponse resp;
    RETURN_IF_ERROR(Call(&v1::Chunks::Stub::HasChunks, *chunks_, req, &resp));
    if (resp.sizes_size() != static_cast<int>(end - start)) {
      return absl::InternalError(
          fmt::format("HasChunks answered {} sizes for {} ids", resp.sizes_size(), end - start));
    }
    sizes.insert(sizes.end(), resp.sizes().begin(), resp.sizes().end());
  }
  return sizes;
}

absl::Status ServerClient::PutChunks(const Scope& scope,
                                     const std::vector<std::string_view>& chunks,
                                     const std::vector<ChunkId>* ids) {
  if (ids != nullptr && ids->size() != chunks.size()) {
    return absl::InvalidArgumentError("PutChunks: one id per chunk");
  }
  auto ctx = NewContext();
  v1::PutChunksResponse resp;
  auto writer = chunks_->PutChunks(ctx.get(), &resp);
  bool first = true;
  bool stream_ok = true;
  for (size_t k = 0; k < chunks.size(); ++k) {
    std::string_view data = chunks[k];
    v1::PutChunksRequest header;
    if (first) header.set_scope(scope.ToString());
    first = false;
    const ChunkId id = ids != nullptr ? (*ids)[k] : ChunkId::Of(data);
    header.mutable_header()->set_id(std::string(id.bytes()));
    header.mutable_header()->set_size(data.size());
    if (!writer->Write(header)) {
      stream_ok = false;
      break;
    }
    for (size_t off = 0; off < data.size() && stream_ok; off += kChunkPieceBytes) {
      // One message per thread, reused: its data string keeps its capacity,
      // so a piece is copied into memory this thread has touched before
      // rather than into a fresh multi-MiB allocation each time (page faults
      // are expensive on the VMs we run on; see common/malloc_tuning.h).
      thread_local v1::PutChunksRequest piece;
      const std::string_view part = data.substr(off, kChunkPieceBytes);
      piece.mutable_data()->assign(part.data(), part.size());
      stream_ok = writer->Write(piece);
    }
    if (!stream_ok) break;
  }
  // A failed Write means the server ended the call; Finish says why.
  writer->WritesDone();
  return FromGrpcStatus(writer->Finish());
}

absl::StatusOr<std::string> ServerClient::GetChunk(const Scope& scope, const ChunkId& id,
                                                   uint64_t offset, uint64_t length,
                                                   bool client_verifies) {
  auto ctx = NewContext();
  v1::GetChunkRequest req;
  req.set_scope(scope.ToString());
  req.set_id(std::string(id.bytes()));
  req.set_offset(offset);
  req.set_length(length);
  req.set_client_verifies(client_verifies);
  auto reader = chunks_->GetChunk(ctx.get(), req);
  std::string out;
  v1::GetChunkResponse piece;
  while (reader->Read(&piece)) {
    if (out.empty()) {
      out = std::move(*piece.mutable_data());  // One-piece chunks: no copy.
    } else {
      out.append(piece.data());
    }
  }
  RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  return out;
}

absl::StatusOr<InodeAttr> ServerClient::WriteFile(const Scope& scope, InodeId ino,
                                                  uint64_t expected_version, std::string_view data,
                                                  uint32_t chunk_size) {
  v1::CommitRequest commit;
  commit.set_scope(scope.ToString());
  commit.set_ino(ino);
  commit.set_expected_version(expected_version);
  commit.set_size(data.size());
  commit.set_chunk_size(chunk_size);
  ToProto(Now(), commit.mutable_mtime());

  std::vector<std::string_view> pieces;
  std::vector<ChunkId> ids;
  for (size_t off = 0; off < data.size(); off += chunk_size) {
    std::string_view piece = data.substr(off, chunk_size);
    ChunkId id = ChunkId::Of(piece);
    pieces.push_back(piece);
    ids.push_back(id);
    ToProto(ChunkRef{id, static_cast<uint32_t>(piece.size())}, commit.add_chunks());
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> present, HasChunks(scope, ids));
  std::vector<std::string_view> missing;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (present[i] < 0) missing.push_back(pieces[i]);
  }
  // Upload in batches of ~64 MiB per stream.
  for (size_t start = 0; start < missing.size();) {
    size_t end = std::min(missing.size(), start + std::max<size_t>(1, (64u << 20) / chunk_size));
    RETURN_IF_ERROR(PutChunks(scope, {missing.begin() + start, missing.begin() + end}));
    start = end;
  }
  v1::AttrResponse resp;
  RETURN_IF_ERROR(Call(&v1::Namespace::Stub::CommitContent, *ns_, commit, &resp));
  return FromProto(resp.attr());
}

absl::StatusOr<std::string> ServerClient::ReadFile(const Scope& scope, InodeId ino) {
  v1::GetAttrRequest req;
  req.set_scope(scope.ToString());
  req.set_ino(ino);
  v1::ChunkMapResponse map;
  RETURN_IF_ERROR(Call(&v1::Namespace::Stub::GetChunkMap, *ns_, req, &map));
  std::string out;
  out.reserve(map.size());
  for (const v1::ChunkRef& ref : map.chunks()) {
    ASSIGN_OR_RETURN(ChunkRef chunk, FromProto(ref));
    std::string bytes;
    if (chunk.id) {
      ASSIGN_OR_RETURN(bytes, GetChunk(scope, *chunk.id, 0, chunk.length));
    }
    bytes.resize(chunk.length, '\0');  // A short chunk's tail and holes read as zeros.
    out.append(bytes);
  }
  return out;
}

}  // namespace traincache::rpc
