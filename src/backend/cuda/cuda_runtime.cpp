#include "backend/cuda/cuda_runtime.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "core/strings.h"

namespace adapt::backend::cuda {
namespace {

struct Probe {
  int count = 0;
  std::string reason;
};

const Probe& probe() {
  static const Probe p = [] {
    Probe r;
    cudaError_t e = cudaGetDeviceCount(&r.count);
    if (e != cudaSuccess) {
      r.count = 0;
      r.reason = fmt::format("no usable CUDA device: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e));
      cudaGetLastError();  // clear the sticky error
    } else if (r.count == 0) {
      r.reason = "no CUDA device is visible (check CUDA_VISIBLE_DEVICES and the Slurm GPU allocation)";
    }
    return r;
  }();
  return p;
}

// cudaMalloc on one device; nullptr when the device is out of memory.
class CudaRawAllocator final : public RawAllocator {
 public:
  explicit CudaRawAllocator(int index) : index_(index) {}
  void* raw_allocate(std::size_t n_bytes) override {
    DeviceGuard guard(index_);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, n_bytes);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky, but clear it so later checks do not report it
      return nullptr;
    }
    ADAPT_REQUIRE(e == cudaSuccess, CudaError, "cudaMalloc of {} on cuda:{} failed: {} ({})", format_bytes(n_bytes),
                  index_, cudaGetErrorName(e), cudaGetErrorString(e));
    return p;
  }
  void raw_free(void* p, std::size_t) override {
    int previous = -1;
    cudaGetDevice(&previous);
    cudaSetDevice(index_);
    cudaFree(p);  // errors here (a context already torn down at exit) cannot be acted on
    if (previous >= 0) cudaSetDevice(previous);
  }
  Device device() const override { return Device{DeviceKind::Cuda, index_}; }
  MemoryInfo memory_info() const override { return device_memory_info(index_); }

 private:
  int index_;
};

// cudaHostAlloc (portable: pinned for every device's context); nullptr when out of memory.
class PinnedRawAllocator final : public RawAllocator {
 public:
  void* raw_allocate(std::size_t n_bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, n_bytes, cudaHostAllocPortable);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      return nullptr;
    }
    ADAPT_REQUIRE(e == cudaSuccess, CudaError, "cudaHostAlloc of {} pinned host memory failed: {} ({})",
                  format_bytes(n_bytes), cudaGetErrorName(e), cudaGetErrorString(e));
    return p;
  }
  void raw_free(void* p, std::size_t) override { cudaFreeHost(p); }
  Device device() const override { return Device{DeviceKind::PinnedHost, 0}; }
  MemoryInfo memory_info() const override {
    const long page = sysconf(_SC_PAGESIZE), avail = sysconf(_SC_AVPHYS_PAGES), total = sysconf(_SC_PHYS_PAGES);
    if (page <= 0 || avail < 0 || total <= 0) return {};
    return MemoryInfo{true, static_cast<std::size_t>(avail) * static_cast<std::size_t>(page),
                      static_cast<std::size_t>(total) * static_cast<std::size_t>(page)};
  }
};

// The answer of cudaStreamQuery / cudaEventQuery: done, not yet, or an error.
bool work_done(cudaError_t e) {
  if (e == cudaErrorNotReady) return false;
  ADAPT_CUDA_CHECK(e);
  return true;
}

struct DeviceAllocators {
  std::vector<std::unique_ptr<CudaRawAllocator>> raw;
  std::vector<std::unique_ptr<CachingAllocator>> caching;
};

}  // namespace

int device_count() { return probe().count; }
std::string unavailable_reason() { return probe().reason; }

void require_device(int index) {
  const int n = device_count();
  ADAPT_REQUIRE(index >= 0 && index < n, UnsupportedError, "cuda:{} requested but {} CUDA device(s) are visible{}",
                index, n,
                n ? fmt::format(" (valid indices 0..{}; CUDA_VISIBLE_DEVICES renumbers them from 0)", n - 1)
                  : ": " + unavailable_reason());
}

void set_device(int index) {
  require_device(index);
  ADAPT_CUDA_CHECK(cudaSetDevice(index));
}

int current_device() {
  int d = 0;
  ADAPT_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

MemoryInfo device_memory_info(int index) {
  DeviceGuard guard(index);
  MemoryInfo info;
  if (cudaMemGetInfo(&info.free, &info.total) == cudaSuccess) {
    info.known = true;
  } else {
    cudaGetLastError();
  }
  return info;
}

DeviceGuard::DeviceGuard(int index) {
  require_device(index);
  int current = -1;
  ADAPT_CUDA_CHECK(cudaGetDevice(&current));
  if (current != index) {  // only then is there something to restore (a guard per op call stays cheap)
    ADAPT_CUDA_CHECK(cudaSetDevice(index));
    previous_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

std::string device_name(int index) {
  require_device(index);
  cudaDeviceProp prop{};
  ADAPT_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return fmt::format("{} (sm_{}{}, {})", prop.name, prop.major, prop.minor, format_bytes(prop.totalGlobalMem));
}

namespace {
std::atomic<bool> g_device_allocators_made{false};
}  // namespace

bool device_allocators_made() { return g_device_allocators_made.load(std::memory_order_acquire); }

CachingAllocator& device_allocator(int index) {
  require_device(index);
  // Never destroyed: tensors freed during static destruction still find their allocator, and no
  // cudaFree runs after the CUDA runtime has shut down.
  static DeviceAllocators* all = new DeviceAllocators;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (all->caching.empty()) {
    for (int i = 0; i < device_count(); ++i) {
      all->raw.push_back(std::make_unique<CudaRawAllocator>(i));
      all->caching.push_back(std::make_unique<CachingAllocator>(*all->raw.back()));
    }
    g_device_allocators_made.store(true, std::memory_order_release);
  }
  return *all->caching[static_cast<std::size_t>(index)];
}

CachingAllocator& pinned_host_allocator() {
  ADAPT_REQUIRE(device_count() > 0, UnsupportedError, "pinned host memory needs a CUDA device: {}",
                unavailable_reason());
  static PinnedRawAllocator* raw = new PinnedRawAllocator;
  static CachingAllocator* caching = new CachingAllocator(*raw);
  return *caching;
}

void memcpy_sync(void* dst, const void* src, std::size_t n_bytes) {
  ADAPT_CUDA_CHECK(cudaMemcpy(dst, src, n_bytes, cudaMemcpyDefault));
}

void synchronize(int index) {
  DeviceGuard guard(index);
  ADAPT_CUDA_CHECK(cudaDeviceSynchronize());
}

Stream::Stream() : device_(current_device()) {
  ADAPT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::Stream(int device) : device_(device) {
  DeviceGuard guard(device);
  ADAPT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  if (stream_) cudaStreamDestroy(stream_);
}

void Stream::synchronize() const { ADAPT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

bool Stream::query() const { return work_done(cudaStreamQuery(stream_)); }

Event::Event(bool timing) : timing_(timing) {
  ADAPT_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}

Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}

void Event::record(cudaStream_t stream) { ADAPT_CUDA_CHECK(cudaEventRecord(event_, stream)); }
void Event::block(cudaStream_t stream) const { ADAPT_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }
void Event::synchronize() const { ADAPT_CUDA_CHECK(cudaEventSynchronize(event_)); }

bool Event::query() const { return work_done(cudaEventQuery(event_)); }

float Event::elapsed_ms_since(const Event& start) const {
  ADAPT_REQUIRE(timing_ && start.timing_, UnsupportedError,
                "Event::elapsed_ms_since: both events must be created with timing enabled");
  float ms = 0;
  ADAPT_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

}  // namespace adapt::backend::cuda
