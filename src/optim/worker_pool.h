// WorkerPool: a fixed set of threads that run the tasks of one parallel loop at a time, for the CPU
// AdamW over offloaded optimizer state. The calling thread works too, so a pool of n threads starts
// n − 1. Threads sleep on a condition variable between loops (no spinning: ranks share cores).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace adapt::optim {

class WorkerPool {
 public:
  /// `n_threads` >= 1 threads in all, the caller included (ConfigError otherwise).
  explicit WorkerPool(int n_threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// Runs fn(i) for every i in [0, n_tasks), spread over the pool, and returns when all are done;
  /// rethrows the first exception a task threw. One loop at a time: called from one thread.
  void parallel_for(std::int64_t n_tasks, const std::function<void(std::int64_t)>& fn);

 private:
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(std::int64_t)>* fn_ = nullptr;
  std::int64_t n_tasks_ = 0;
  std::int64_t next_ = 0;      // next task to hand out
  std::int64_t finished_ = 0;  // tasks done in this loop
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;

  void worker();
  /// Takes and runs tasks of the current loop until none is left. Called with `lock` held.
  void drain(std::unique_lock<std::mutex>& lock);
};

}  // namespace adapt::optim
