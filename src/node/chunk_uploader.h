// ChunkUploader: the node's write path below the staging file — turns chunks
// of files being written into ChunkRefs the server holds: reads the bytes (a
// range of a staging file, or bytes a commit already built), hashes them
// (ChunkId::Of), asks the server whether it has them (HasChunks) and sends
// them if not (PutHashedChunks), on a few threads of its own.
//
// Two callers (Filesystem, filesystem.cc):
//  - the write path hands it each chunk a writer has finished
//    (TryUploadFromFile), so that the upload overlaps the writing and a
//    close has little left to send. It never waits: when the budget is
//    spent, the chunk is simply left to the commit;
//  - a commit hands it every chunk still to send (Upload), so that reading
//    the next chunk, hashing and sending run side by side. It waits for room
//    in the budget.
//
// Memory: the bytes of every task admitted and not finished are counted
// against Options::budget_bytes (a staging-file task counts from admission,
// though it reads its bytes only when it runs). A task is admitted only if
// it fits (or nothing else is admitted: a chunk larger than the budget still
// goes, alone), so the bytes held never exceed max(budget, one chunk). Each
// thread also keeps the buffer it reads staging files into (one chunk).
// While a commit waits for room, TryUploadFromFile admits nothing, so
// background work of other files cannot starve a close.
//
// A task's result is a Ticket: Wait() gives the ChunkRef (a hole for an
// all-zero chunk, which is never sent) or the error of the failed call;
// Cancel() drops it if it has not started (a started one finishes, its
// result unused). An uploaded chunk nobody commits is harmless: the
// server's collector deletes unreferenced chunks after a grace period.
//
// Thread-safety: every method may be called concurrently. The destructor
// cancels what has not started and waits for the running tasks (each at
// most one HasChunks and one PutChunks call: the client's outage timeout
// bounds it).
#ifndef TRAINCACHE_NODE_CHUNK_UPLOADER_H_
#define TRAINCACHE_NODE_CHUNK_UPLOADER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "traincache/cluster_client.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache::node {

struct UploaderStats {
  uint64_t uploaded_chunks = 0;             // Chunks sent (PutChunks), every caller.
  uint64_t uploaded_bytes = 0;
  uint64_t background_uploaded_chunks = 0;  // Of those, sent by TryUploadFromFile tasks.
  uint64_t background_uploaded_bytes = 0;
  uint64_t background_refused = 0;  // TryUploadFromFile calls turned away (budget spent).
  uint64_t held_bytes = 0;          // Bytes of tasks admitted and not finished, now.
  uint64_t peak_held_bytes = 0;     // The most held_bytes ever was.
};

class ChunkUploader {
 public:
  struct Options {
    size_t threads = 4;
    uint64_t budget_bytes = 32ull << 20;
  };
  struct Result {
    ChunkRef ref;           // id unset: the chunk is all zeros (a hole), not sent.
    bool uploaded = false;  // Sent by this task (false: a hole, or the server had it).
  };

  // The outcome of one task. Shared by the uploader and its caller.
  class Ticket {
   public:
    // Blocks until the task ended: its result, or the error of the call
    // that failed, or CANCELLED.
    absl::StatusOr<Result> Wait() const;
    // Drops the task if it has not started (its budget is given back at
    // once); a running task finishes and its result is still what Wait()
    // returns. Idempotent.
    void Cancel();
    bool background() const { return background_; }

   private:
    friend class ChunkUploader;
    enum class State { kQueued, kRunning, kDone };
    Ticket(ChunkUploader* owner, bool background, uint32_t length)
        : owner_(owner), background_(background), length_(length) {}

    ChunkUploader* const owner_;
    const bool background_;
    const uint32_t length_;
    // The input: a staging-file range (fd owned by the task, closed when it
    // ends) or bytes. Dropped by Cancel only while kQueued (under mu_), used
    // and dropped by the task only while kRunning: never both at once.
    int fd_ = -1;
    uint64_t offset_ = 0;
    std::string bytes_;

    mutable absl::Mutex mu_;
    State state_ ABSL_GUARDED_BY(mu_) = State::kQueued;
    bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
    absl::StatusOr<Result> result_ ABSL_GUARDED_BY(mu_) = absl::UnknownError("not run");

   public:
    ~Ticket();
  };

  // `client` must outlive the uploader. threads >= 1.
  ChunkUploader(Scope scope, ClusterClient* client, Options options);
  ~ChunkUploader();
  ChunkUploader(const ChunkUploader&) = delete;
  ChunkUploader& operator=(const ChunkUploader&) = delete;

  // Background: uploads bytes [offset, offset+length) of the file open as
  // `fd` (duplicated here: the caller keeps its own). nullptr, and nothing
  // queued, when the budget has no room, a commit is waiting for room, or
  // the dup fails: the caller leaves the chunk to its commit.
  std::shared_ptr<Ticket> TryUploadFromFile(int fd, uint64_t offset, uint32_t length);
  // A commit's chunk: waits until the budget has room, then queues it.
  std::shared_ptr<Ticket> Upload(std::string bytes);

  // Cancels every task not started (the scope was deleted: nothing of it is
  // worth sending).
  void CancelAll();
  UploaderStats Stats() const;

 private:
  void Loop();
  void Run(Ticket& t);
  // Gives back a finished or dropped task's share of the budget.
  void Release(uint32_t length);

  const Scope scope_;
  ClusterClient* const client_;
  const Options options_;

  mutable absl::Mutex mu_;  // Acquire before Ticket::mu_.
  absl::CondVar work_cv_;   // A task was queued, or stopping.
  absl::CondVar room_cv_;   // Budget was given back.
  std::deque<std::shared_ptr<Ticket>> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t held_ ABSL_GUARDED_BY(mu_) = 0;
  int waiting_for_room_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  UploaderStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace traincache::node

#endif  // TRAINCACHE_NODE_CHUNK_UPLOADER_H_
