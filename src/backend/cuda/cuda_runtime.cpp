#include "backend/cuda/cuda_runtime.h"

#include <fmt/format.h>

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

class PinnedAllocator final : public Allocator {
 public:
  void* allocate(std::size_t n_bytes) override {
    void* p = nullptr;
    cudaError_t e = cudaHostAlloc(&p, n_bytes ? n_bytes : 1, cudaHostAllocDefault);
    ADAPT_REQUIRE(e == cudaSuccess, CudaError, "cudaHostAlloc of {} pinned host memory failed: {}",
                  format_bytes(n_bytes), cudaGetErrorString(e));
    return p;
  }
  void deallocate(void* p, std::size_t) override { cudaFreeHost(p); }
  Device device() const override { return Device{DeviceKind::PinnedHost, 0}; }
};

class DeviceAllocator final : public Allocator {
 public:
  explicit DeviceAllocator(int index) : index_(index) {}
  void* allocate(std::size_t n_bytes) override {
    ADAPT_CUDA_CHECK(cudaSetDevice(index_));
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, n_bytes ? n_bytes : 1);
    if (e != cudaSuccess) {
      std::size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      ADAPT_THROW(CudaError, "cudaMalloc of {} on cuda:{} failed: {} ({} free of {}). Reduce the micro-batch or "
                  "sequence length, or add GPUs (tensor/pipeline parallelism).",
                  format_bytes(n_bytes), index_, cudaGetErrorString(e), format_bytes(free_b), format_bytes(total_b));
    }
    return p;
  }
  void deallocate(void* p, std::size_t) override { cudaFree(p); }
  Device device() const override { return Device{DeviceKind::Cuda, index_}; }

 private:
  int index_;
};

}  // namespace

int device_count() { return probe().count; }
std::string unavailable_reason() { return probe().reason; }

std::string device_name(int index) {
  cudaDeviceProp prop{};
  ADAPT_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  return fmt::format("{} (sm_{}{}, {})", prop.name, prop.major, prop.minor, format_bytes(prop.totalGlobalMem));
}

Allocator& pinned_host_allocator() {
  ADAPT_REQUIRE(device_count() > 0, UnsupportedError, "pinned host memory needs a CUDA device: {}",
                unavailable_reason());
  static PinnedAllocator a;
  return a;
}

Allocator& device_allocator(int index) {
  ADAPT_REQUIRE(index >= 0 && index < device_count(), UnsupportedError,
                "cuda:{} requested but {} CUDA device(s) are visible{}", index, device_count(),
                device_count() ? "" : ": " + unavailable_reason());
  static std::mutex mutex;
  static std::vector<std::unique_ptr<DeviceAllocator>> allocators;
  std::lock_guard<std::mutex> lock(mutex);
  if (allocators.empty()) {
    for (int i = 0; i < device_count(); ++i) allocators.push_back(std::make_unique<DeviceAllocator>(i));
  }
  return *allocators[static_cast<std::size_t>(index)];
}

void memcpy_sync(void* dst, const void* src, std::size_t n_bytes) {
  ADAPT_CUDA_CHECK(cudaMemcpy(dst, src, n_bytes, cudaMemcpyDefault));
}

void synchronize(int index) {
  ADAPT_CUDA_CHECK(cudaSetDevice(index));
  ADAPT_CUDA_CHECK(cudaDeviceSynchronize());
}

Stream::Stream() { ADAPT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (stream_) cudaStreamDestroy(stream_);
}
void Stream::synchronize() const { ADAPT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace adapt::backend::cuda
