// cuda_emu's streams and events. With CUDA_EMU_STREAMS=sync (the default of the kernel tests that CI's
// builds link, test_cuda_emu) every call runs to completion before it returns, so streams and events
// order nothing. With CUDA_EMU_STREAMS=deferred (the default of an ADAPT_CUDA=EMU build, whose runtime is
// built with CUDA_EMU_DEFERRED_DEFAULT=1; or set_deferred_streams) the calls queued on a stream wait in
// that stream's queue, and one thread of the process (the "device") runs them later, in stream order, as
// late as it may:
//
// - only when a host thread waits for queued work (cudaStreamSynchronize, cudaEventSynchronize,
//   cudaDeviceSynchronize, a blocking cudaMemcpy, cudaFree), polls it (cudaStreamQuery, cudaEventQuery
//   answering cudaErrorNotReady), or has made no CUDA call for CUDA_EMU_IDLE_MS milliseconds (20: a host
//   blocked in MPI must not keep its NCCL calls from running);
// - among the streams whose next call may run (not behind an unfinished event wait or NCCL call), the
//   one whose next call was queued last goes first.
//
// So a kernel or copy that should have waited for another stream's work (a missing cudaStreamWaitEvent)
// runs before it and reads what was there before, and a host read of an asynchronous copy's destination
// before a synchronisation sees the old bytes: the tests that check the results fail.
#include <cxxabi.h>
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emu.h"

namespace cuda_emu {

namespace {

using Clock = std::chrono::steady_clock;

struct EventState {
  std::uint64_t recorded = 0;   // records asked for
  std::uint64_t completed = 0;  // the last record that has run
  Clock::time_point at = Clock::now();
};

struct Op {
  enum Kind { Work, External, Record, Wait };
  Op(Kind k, const char* w) : kind(k), what(w) {}
  Kind kind;
  const char* what;
  std::uint64_t seq = 0;
  std::function<void()> work;
  std::function<void(std::function<void()>)> start;
  std::shared_ptr<EventState> event;  // Record, Wait
  std::uint64_t generation = 0;       // Record: this record; Wait: the record waited for
};

struct StreamState {
  int device = 0;
  std::deque<Op> queue;
  std::uint64_t running = 0;  // seq of the call running now (an NCCL call until it finishes), 0 if none
  std::uint64_t last = 0;     // seq of the last call queued
  bool done_through(std::uint64_t seq) const {
    return (queue.empty() || queue.front().seq > seq) && (running == 0 || running > seq);
  }
};

struct EventHandle {
  std::shared_ptr<EventState> state = std::make_shared<EventState>();
};

std::atomic<int> g_idle_ms{[] {
  const char* env = std::getenv("CUDA_EMU_IDLE_MS");
  return env && *env ? std::max(1, std::atoi(env)) : 20;
}()};
int idle_ms() { return g_idle_ms.load(std::memory_order_relaxed); }

#ifndef CUDA_EMU_DEFERRED_DEFAULT
#define CUDA_EMU_DEFERRED_DEFAULT 0
#endif

std::atomic<int> g_mode{-1};  // -1: from the environment on first use

class Device {
 public:
  static Device& get() {
    static Device* d = new Device;  // never destroyed: streams outlive static destruction
    return *d;
  }

  StreamState* resolve(cudaStream_t s) {
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) {
      const int dev = rt_get_device();
      std::lock_guard<std::mutex> lock(mu_);
      StreamState*& legacy = legacy_[static_cast<std::size_t>(dev)];
      if (!legacy) {
        legacy = new StreamState;
        legacy->device = dev;
        streams_.push_back(legacy);
      }
      return legacy;
    }
    return reinterpret_cast<StreamState*>(s);
  }

  StreamState* create() {
    auto* s = new StreamState;
    s->device = rt_get_device();
    std::lock_guard<std::mutex> lock(mu_);
    streams_.push_back(s);
    return s;
  }

  void destroy(StreamState* s) {
    wait([&] { return s->done_through(s->last); }, "cudaStreamDestroy", nullptr);
    std::lock_guard<std::mutex> lock(mu_);
    prune_polls();  // those on this stream are answered: none may outlive it
    streams_.erase(std::remove(streams_.begin(), streams_.end(), s), streams_.end());
    delete s;
  }

  void push(StreamState* s, Op op) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!executor_.joinable()) {
      executor_ = std::thread([this] { run(); });
      executor_id_ = executor_.get_id();
      std::atexit([] { Device::get().stop(); });
    }
    op.seq = ++seq_;
    s->last = op.seq;
    s->queue.push_back(std::move(op));
    last_host_ = Clock::now();
    cv_.notify_all();
  }

  std::uint64_t last_seq() {
    std::lock_guard<std::mutex> lock(mu_);
    return seq_;
  }
  std::uint64_t last_queued(const StreamState* s) {
    std::lock_guard<std::mutex> lock(mu_);
    return s->last;
  }
  std::uint64_t records(const EventState& e) {
    std::lock_guard<std::mutex> lock(mu_);
    return e.recorded;
  }

  /// Blocks the calling host thread until `done()` (checked under the lock) holds, running queued calls.
  /// `api` and `caller` (the return address of the runtime call) name the wait in the report.
  template <class F>
  void wait(F done, const char* api, const void* caller) {
    std::unique_lock<std::mutex> lock(mu_);
    if (done() || stopping_) return;  // at exit, after the device thread has stopped, nothing runs
    if (wait_report()) ++waits_[{api, caller}];
    if (std::this_thread::get_id() == executor_id_) {
      std::fprintf(stderr, "cuda_emu: a call queued on a stream waits for queued work (it would never run)\n");
      std::abort();
    }
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lock, done);
    --waiting_;
    last_host_ = Clock::now();
  }

  /// Whether `done()` holds now; if not, the device runs queued calls until it does (a query's poll).
  bool poll(std::function<bool()> done) {
    std::lock_guard<std::mutex> lock(mu_);
    last_host_ = Clock::now();
    if (done()) return true;
    polls_.push_back(std::move(done));
    cv_.notify_all();
    return false;
  }

  bool all_done_through(std::uint64_t seq, int device) const {  // under the lock
    return std::all_of(streams_.begin(), streams_.end(), [&](const StreamState* s) {
      return (device >= 0 && s->device != device) || s->done_through(seq);
    });
  }

  std::mutex& mutex() { return mu_; }

 private:
  bool runnable(const StreamState* s) const {
    if (s->queue.empty() || s->running != 0) return false;
    const Op& op = s->queue.front();
    return op.kind != Op::Wait || op.event->completed >= op.generation;
  }

  void prune_polls() {  // under the lock
    polls_.erase(std::remove_if(polls_.begin(), polls_.end(), [](const std::function<bool()>& f) { return f(); }),
                 polls_.end());
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (executor_.joinable()) executor_.join();
    if (wait_report()) print_waits();
  }

  static bool wait_report() {
    static const bool on = [] {
      const char* env = std::getenv("CUDA_EMU_WAIT_REPORT");
      return env && *env && std::string(env) != "0";
    }();
    return on;
  }

  // The host's waits for queued work, most frequent first, each with the function that made the runtime
  // call (or the binary and offset to give addr2line -f -C -e).
  void print_waits() {
    std::vector<std::pair<long, std::pair<const char*, const void*>>> rows;
    long total = 0;
    for (const auto& [site, n] : waits_) {
      rows.push_back({n, site});
      total += n;
    }
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::fprintf(stderr, "cuda_emu: the host waited for queued device work %ld times (pid %d):\n", total,
                 static_cast<int>(getpid()));
    for (const auto& [n, site] : rows) {
      std::string where = "?";
      Dl_info info{};
      if (site.second && dladdr(site.second, &info)) {
        if (info.dli_sname) {
          int status = 0;
          char* name = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
          where = status == 0 && name ? name : info.dli_sname;
          std::free(name);
        } else {
          char buf[64];
          std::snprintf(buf, sizeof buf, "+0x%zx",
                        static_cast<std::size_t>(static_cast<const char*>(site.second) -
                                                 static_cast<const char*>(info.dli_fbase)));
          where = std::string(info.dli_fname ? info.dli_fname : "?") + buf;
        }
      }
      std::fprintf(stderr, "  %8ld  %-22s %s\n", n, site.first, where.c_str());
    }
  }

  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      prune_polls();
      const bool pending =
          std::any_of(streams_.begin(), streams_.end(), [](const StreamState* s) { return !s->queue.empty(); });
      const bool idle = Clock::now() - last_host_ >= std::chrono::milliseconds(idle_ms());
      if (!pending || (waiting_ == 0 && polls_.empty() && !idle)) {
        cv_.wait_for(lock, std::chrono::milliseconds(idle_ms()));
        continue;
      }
      StreamState* pick = nullptr;
      for (StreamState* s : streams_) {
        if (runnable(s) && (!pick || s->queue.front().seq > pick->queue.front().seq)) pick = s;
      }
      if (!pick) {  // behind NCCL calls or event waits: wait for a finish
        cv_.wait_for(lock, std::chrono::milliseconds(1));
        continue;
      }
      Op op = std::move(pick->queue.front());
      pick->queue.pop_front();
      pick->running = op.seq;
      switch (op.kind) {
        case Op::Record:
          op.event->completed = std::max(op.event->completed, op.generation);
          op.event->at = Clock::now();
          pick->running = 0;
          break;
        case Op::Wait: pick->running = 0; break;
        case Op::Work:
          lock.unlock();
          op.work();
          lock.lock();
          pick->running = 0;
          break;
        case Op::External: {
          lock.unlock();
          op.start([this, pick, seq = op.seq] {
            std::lock_guard<std::mutex> l(mu_);
            if (pick->running == seq) pick->running = 0;
            prune_polls();
            cv_.notify_all();
          });
          lock.lock();
          break;
        }
      }
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<StreamState*> streams_;
  StreamState* legacy_[16] = {};
  std::uint64_t seq_ = 0;
  int waiting_ = 0;
  std::vector<std::function<bool()>> polls_;
  std::map<std::pair<const char*, const void*>, long> waits_;  // CUDA_EMU_WAIT_REPORT
  Clock::time_point last_host_ = Clock::now();
  bool stopping_ = false;
  std::thread executor_;
  std::thread::id executor_id_;
};

cudaError_t sticky_error() {
  const cudaError_t e = rt_last_error(false);
  return e == cudaErrorLaunchFailure ? e : cudaSuccess;
}

EventHandle* handle(cudaEvent_t e) { return reinterpret_cast<EventHandle*>(e); }

Op event_op(Op::Kind kind, const char* what, cudaEvent_t e) {
  Op op(kind, what);
  op.event = handle(e)->state;
  return op;
}

}  // namespace

bool deferred_streams() {
  int mode = g_mode.load(std::memory_order_relaxed);
  if (mode < 0) {
    const char* env = std::getenv("CUDA_EMU_STREAMS");
    const std::string v = env ? env : "";
    if (!v.empty() && v != "deferred" && v != "sync") {
      std::fprintf(stderr, "cuda_emu: CUDA_EMU_STREAMS='%s': give 'sync' or 'deferred'\n", env);
      std::abort();
    }
    mode = v.empty() ? CUDA_EMU_DEFERRED_DEFAULT : v == "deferred" ? 1 : 0;
    g_mode.store(mode);
  }
  return mode == 1;
}

void set_deferred_streams(bool on) {
  if (deferred_streams()) synchronize_all("set_deferred_streams", nullptr);
  g_mode.store(on ? 1 : 0);
}

void set_idle_ms(int ms) { g_idle_ms.store(std::max(1, ms)); }

void enqueue(cudaStream_t stream, const char* what, std::function<void()> work) {
  if (!deferred_streams()) return work();
  Device& d = Device::get();
  Op op(Op::Work, what);
  op.work = std::move(work);
  d.push(d.resolve(stream), std::move(op));
}

void enqueue_external(cudaStream_t stream, const char* what, std::function<void(std::function<void()> finish)> start) {
  Device& d = Device::get();
  Op op(Op::External, what);
  op.start = std::move(start);
  d.push(d.resolve(stream), std::move(op));
}

void synchronize_all(const char* api, const void* caller) {
  if (!deferred_streams()) return;
  Device& d = Device::get();
  const std::uint64_t seq = d.last_seq();
  d.wait([&] { return d.all_done_through(seq, -1); }, api, caller);
}

cudaError_t rt_stream_create(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(Device::get().create());
  return cudaSuccess;
}

cudaError_t rt_stream_destroy(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
    return rt_set_last_error(cudaErrorInvalidValue);
  Device::get().destroy(reinterpret_cast<StreamState*>(s));
  return cudaSuccess;
}

namespace {
cudaError_t stream_synchronize(cudaStream_t s, const char* api, const void* caller) {
  Device& d = Device::get();
  StreamState* st = d.resolve(s);
  const std::uint64_t seq = d.last_queued(st);
  d.wait([&] { return st->done_through(seq); }, api, caller);
  return sticky_error();
}
}  // namespace

cudaError_t rt_stream_synchronize(cudaStream_t s) {
  return stream_synchronize(s, "cudaStreamSynchronize", __builtin_return_address(0));
}

cudaError_t rt_stream_query(cudaStream_t s) {
  Device& d = Device::get();
  StreamState* st = d.resolve(s);
  const std::uint64_t seq = d.last_queued(st);
  if (const cudaError_t e = sticky_error()) return e;
  return d.poll([st, seq] { return st->done_through(seq); }) ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t rt_stream_wait_event(cudaStream_t s, cudaEvent_t e) {
  if (!e) return rt_set_last_error(cudaErrorInvalidValue);
  Device& d = Device::get();
  Op op = event_op(Op::Wait, "cudaStreamWaitEvent", e);
  op.generation = d.records(*op.event);
  if (op.generation == 0) return cudaSuccess;  // never recorded: nothing to wait for
  if (!deferred_streams()) return cudaSuccess;
  d.push(d.resolve(s), std::move(op));
  return cudaSuccess;
}

cudaError_t rt_device_synchronize() {
  Device& d = Device::get();
  const std::uint64_t seq = d.last_seq();
  const int device = rt_get_device();
  d.wait([&] { return d.all_done_through(seq, device); }, "cudaDeviceSynchronize", __builtin_return_address(0));
  return sticky_error();
}

cudaError_t rt_event_create(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new EventHandle);
  return cudaSuccess;
}

cudaError_t rt_event_destroy(cudaEvent_t e) {
  delete handle(e);  // a record still queued keeps its state alive
  return cudaSuccess;
}

cudaError_t rt_event_record(cudaEvent_t e, cudaStream_t s) {
  if (!e) return rt_set_last_error(cudaErrorInvalidValue);
  Device& d = Device::get();
  Op op = event_op(Op::Record, "cudaEventRecord", e);
  {
    std::lock_guard<std::mutex> lock(d.mutex());
    op.generation = ++op.event->recorded;
    if (!deferred_streams()) {
      op.event->completed = op.generation;
      op.event->at = Clock::now();
      return cudaSuccess;
    }
  }
  d.push(d.resolve(s), std::move(op));
  return cudaSuccess;
}

cudaError_t rt_event_query(cudaEvent_t e) {
  if (!e) return rt_set_last_error(cudaErrorInvalidValue);
  if (const cudaError_t err = sticky_error()) return err;
  std::shared_ptr<EventState> st = handle(e)->state;
  Device& d = Device::get();
  const std::uint64_t gen = d.records(*st);
  return d.poll([st, gen] { return st->completed >= gen; }) ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t rt_event_synchronize(cudaEvent_t e) {
  if (!e) return rt_set_last_error(cudaErrorInvalidValue);
  std::shared_ptr<EventState> st = handle(e)->state;
  Device& d = Device::get();
  const std::uint64_t gen = d.records(*st);
  d.wait([&] { return st->completed >= gen; }, "cudaEventSynchronize", __builtin_return_address(0));
  return sticky_error();
}

cudaError_t rt_event_elapsed(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end) return rt_set_last_error(cudaErrorInvalidValue);
  Device& d = Device::get();
  std::lock_guard<std::mutex> lock(d.mutex());
  const EventState& a = *handle(start)->state;
  const EventState& b = *handle(end)->state;
  if (a.recorded == 0 || b.recorded == 0) return rt_set_last_error(cudaErrorInvalidValue);
  if (a.completed < a.recorded || b.completed < b.recorded) return cudaErrorNotReady;
  *ms = std::chrono::duration<float, std::milli>(b.at - a.at).count();
  return cudaSuccess;
}

cudaError_t rt_memcpy(void* dst, const void* src, std::size_t bytes, cudaStream_t s, bool sync_api) {
  if (bytes == 0) return cudaSuccess;
  if (!deferred_streams()) {
    std::memmove(dst, src, bytes);
    return cudaSuccess;
  }
  const bool dst_dev = is_device_memory(dst), src_dev = is_device_memory(src);
  const bool dst_pageable = !dst_dev && !is_pinned_memory(dst), src_pageable = !src_dev && !is_pinned_memory(src);
  const bool device_to_device = dst_dev && src_dev;
  // cudaMemcpy returns when the copy is done, except between two device buffers; cudaMemcpyAsync returns
  // at once, except into pageable memory (done before it returns) and from pageable memory (read before it
  // returns, written in stream order).
  if ((sync_api && !device_to_device) || (!sync_api && dst_pageable)) {
    if (const cudaError_t e =
            stream_synchronize(s, sync_api ? "cudaMemcpy" : "cudaMemcpyAsync (pageable)", __builtin_return_address(0)))
      return e;
    std::memmove(dst, src, bytes);
    return cudaSuccess;
  }
  if (src_pageable) {
    auto staged =
        std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + bytes);
    enqueue(s, "cudaMemcpyAsync", [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
    return cudaSuccess;
  }
  enqueue(s, sync_api ? "cudaMemcpy" : "cudaMemcpyAsync", [dst, src, bytes] { std::memmove(dst, src, bytes); });
  return cudaSuccess;
}

cudaError_t rt_memset(void* p, int value, std::size_t bytes, cudaStream_t s, bool sync_api) {
  if (bytes == 0) return cudaSuccess;
  if (!deferred_streams()) {
    std::memset(p, value, bytes);
    return cudaSuccess;
  }
  if (sync_api && !is_device_memory(p)) {  // cudaMemset of host memory returns when it is done
    if (const cudaError_t e = stream_synchronize(s, "cudaMemset", __builtin_return_address(0))) return e;
    std::memset(p, value, bytes);
    return cudaSuccess;
  }
  enqueue(s, sync_api ? "cudaMemset" : "cudaMemsetAsync", [p, value, bytes] { std::memset(p, value, bytes); });
  return cudaSuccess;
}

}  // namespace cuda_emu
