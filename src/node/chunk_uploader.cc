#include "node/chunk_uploader.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "traincache/status.h"

namespace traincache::node {
namespace {

bool AllZero(std::string_view s) {
  return s.empty() || (s[0] == 0 && std::memcmp(s.data(), s.data() + 1, s.size() - 1) == 0);
}

}  // namespace

ChunkUploader::Ticket::~Ticket() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<ChunkUploader::Result> ChunkUploader::Ticket::Wait() const {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](const State* s) { return *s == State::kDone; }, &state_));
  return result_;
}

void ChunkUploader::Ticket::Cancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (state_ != State::kQueued) return;  // Running: it sees cancelled_; done: nothing to do.
    state_ = State::kDone;
    result_ = absl::CancelledError("upload cancelled before it started");
    std::string().swap(bytes_);  // Frees it (assigning an empty string keeps the capacity).
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  // Not under mu_ (the uploader's lock comes first). A worker that pops
  // this ticket later finds it done and skips it. The owner is alive: its
  // destructor marks every queued ticket done, after which Cancel never
  // gets here.
  owner_->Release(length_);
}

ChunkUploader::ChunkUploader(Scope scope, ClusterClient* client, Options options)
    : scope_(std::move(scope)), client_(client), options_(options) {
  const size_t n = std::max<size_t>(1, options_.threads);
  threads_.reserve(n);
  for (size_t i = 0; i < n; ++i) threads_.emplace_back([this] { Loop(); });
}

ChunkUploader::~ChunkUploader() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_cv_.SignalAll();
    room_cv_.SignalAll();
  }
  CancelAll();
  for (std::thread& t : threads_) t.join();
}

void ChunkUploader::CancelAll() {
  std::deque<std::shared_ptr<Ticket>> queued;
  {
    absl::MutexLock lock(&mu_);
    queued.swap(queue_);
  }
  for (const std::shared_ptr<Ticket>& t : queued) t->Cancel();
}

std::shared_ptr<ChunkUploader::Ticket> ChunkUploader::TryUploadFromFile(int fd, uint64_t offset,
                                                                        uint32_t length) {
  std::shared_ptr<Ticket> t(new Ticket(this, /*background=*/true, length));
  t->offset_ = offset;
  absl::MutexLock lock(&mu_);
  if (stopping_ || waiting_for_room_ > 0 || (held_ > 0 && held_ + length > options_.budget_bytes)) {
    ++stats_.background_refused;
    return nullptr;
  }
  // The task's own descriptor: the caller's may be closed (and its number
  // reused for another file) before the task runs.
  t->fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (t->fd_ < 0) {
    spdlog::warn("[{}] background upload not queued: dup of staging fd: {}", scope_.ToString(),
                 std::strerror(errno));
    ++stats_.background_refused;
    return nullptr;
  }
  held_ += length;
  stats_.peak_held_bytes = std::max(stats_.peak_held_bytes, held_);
  queue_.push_back(t);
  work_cv_.Signal();
  return t;
}

std::shared_ptr<ChunkUploader::Ticket> ChunkUploader::Upload(std::string bytes) {
  const uint32_t length = static_cast<uint32_t>(bytes.size());
  std::shared_ptr<Ticket> t(new Ticket(this, /*background=*/false, length));
  absl::MutexLock lock(&mu_);
  ++waiting_for_room_;
  while (!stopping_ && held_ > 0 && held_ + length > options_.budget_bytes) room_cv_.Wait(&mu_);
  --waiting_for_room_;
  if (stopping_) {
    absl::MutexLock tl(&t->mu_);
    t->state_ = Ticket::State::kDone;
    t->result_ = absl::CancelledError("uploader is stopping");
    return t;
  }
  t->bytes_ = std::move(bytes);
  held_ += length;
  stats_.peak_held_bytes = std::max(stats_.peak_held_bytes, held_);
  queue_.push_back(t);
  work_cv_.Signal();
  return t;
}

void ChunkUploader::Release(uint32_t length) {
  absl::MutexLock lock(&mu_);
  held_ -= std::min<uint64_t>(held_, length);
  room_cv_.SignalAll();
}

UploaderStats ChunkUploader::Stats() const {
  absl::MutexLock lock(&mu_);
  UploaderStats s = stats_;
  s.held_bytes = held_;
  return s;
}

void ChunkUploader::Loop() {
  for (;;) {
    std::shared_ptr<Ticket> t;
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && queue_.empty()) work_cv_.Wait(&mu_);
      if (stopping_) return;  // What is queued, the destructor cancels.
      t = std::move(queue_.front());
      queue_.pop_front();
    }
    {
      absl::MutexLock lock(&t->mu_);
      if (t->state_ != Ticket::State::kQueued) continue;  // Cancelled: budget given back.
      t->state_ = Ticket::State::kRunning;
    }
    Run(*t);
  }
}

void ChunkUploader::Run(Ticket& t) {
  auto cancelled = [&t] {
    absl::MutexLock lock(&t.mu_);
    return t.cancelled_;
  };
  // The input is the task's alone from here: kRunning keeps Cancel off it.
  std::string_view bytes = t.bytes_;
  absl::StatusOr<Result> result = [&]() -> absl::StatusOr<Result> {
    if (t.fd_ >= 0) {
      // One buffer per upload thread, reused (as big as the largest chunk
      // it read): no multi-MiB allocation per chunk.
      thread_local std::unique_ptr<char[]> buffer;
      thread_local size_t buffer_size = 0;
      if (buffer_size < t.length_) {
        buffer.reset(new char[t.length_]);  // Not zero-filled: every byte is read over.
        buffer_size = t.length_;
      }
      size_t done = 0;
      while (done < t.length_) {
        ssize_t r = pread(t.fd_, buffer.get() + done, t.length_ - done,
                          static_cast<off_t>(t.offset_ + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return ErrnoStatus(errno, "read of staging file for upload");
        if (r == 0) {
          // Cut by a truncate since: the caller discards this result anyway.
          return absl::FailedPreconditionError("staging file is shorter than the chunk");
        }
        done += static_cast<size_t>(r);
      }
      bytes = std::string_view(buffer.get(), t.length_);
    }
    Result out;
    if (AllZero(bytes)) {
      out.ref = ChunkRef{std::nullopt, t.length_};
      return out;
    }
    if (cancelled()) return absl::CancelledError("upload cancelled");
    const ChunkId id = ChunkId::Of(bytes);
    out.ref = ChunkRef{id, t.length_};
    ASSIGN_OR_RETURN(std::vector<std::optional<uint64_t>> have, client_->HasChunks(scope_, {id}));
    if (!have.empty() && have[0]) return out;
    if (cancelled()) return absl::CancelledError("upload cancelled");
    RETURN_IF_ERROR(client_->PutHashedChunks(scope_, {id}, {bytes}));
    out.uploaded = true;
    return out;
  }();
  if (!result.ok() && !absl::IsCancelled(result.status()) && t.background_) {
    // The commit redoes it and reports what it finds then.
    spdlog::info("[{}] background upload of a chunk failed (the commit retries it): {}",
                 scope_.ToString(), result.status().ToString());
  }
  {
    absl::MutexLock lock(&mu_);
    if (result.ok() && result->uploaded) {
      ++stats_.uploaded_chunks;
      stats_.uploaded_bytes += t.length_;
      if (t.background_) {
        ++stats_.background_uploaded_chunks;
        stats_.background_uploaded_bytes += t.length_;
      }
    }
  }
  // The bytes go, and their budget with them, before the ticket says done:
  // a caller that waited may count on the room.
  std::string().swap(t.bytes_);  // Frees it (assigning an empty string keeps the capacity).
  if (t.fd_ >= 0) close(t.fd_);
  t.fd_ = -1;
  Release(t.length_);
  absl::MutexLock lock(&t.mu_);
  t.result_ = std::move(result);
  t.state_ = Ticket::State::kDone;
}

}  // namespace traincache::node
