// ThreadPool: a fixed set of threads running submitted tasks in FIFO order.
// The gRPC callback handlers hand their blocking store work to one so that
// gRPC's own threads never wait on a disk sync.
//
// Thread-safe. The destructor finishes the queued tasks, then joins.
#ifndef TRAINCACHE_COMMON_THREAD_POOL_H_
#define TRAINCACHE_COMMON_THREAD_POOL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace traincache {

class ThreadPool {
 public:
  explicit ThreadPool(size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(std::function<void()> task);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace traincache

#endif  // TRAINCACHE_COMMON_THREAD_POOL_H_
