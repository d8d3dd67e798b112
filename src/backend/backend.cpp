#include "backend/backend.h"

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"

#if ADAPT_HAVE_CUDA
#include "backend/cuda/cuda_runtime.h"
#endif

namespace adapt::backend {

#if ADAPT_HAVE_CUDA

int cuda_device_count() { return cuda::device_count(); }
std::string cuda_unavailable_reason() { return cuda::unavailable_reason(); }
std::string cuda_device_name(int index) { return cuda::device_name(index); }
std::string cuda_library_versions() { return cuda::library_versions(); }
Allocator& pinned_host_allocator() { return cuda::pinned_host_allocator(); }
Allocator& cuda_allocator(int index) { return cuda::device_allocator(index); }
MemoryStats cuda_memory_stats(int index) { return cuda::device_allocator(index).stats(); }
MemoryInfo cuda_memory_info(int index) { return cuda::device_memory_info(index); }
void cuda_use_device(int index) {
  cuda::require_device(index);
  cuda::set_device(index);
}
std::size_t cuda_empty_cache(int index) { return cuda::device_allocator(index).empty_cache(); }
MemoryStats pinned_memory_stats() { return cuda::pinned_host_allocator().stats(); }
void synchronize(int index) { cuda::synchronize(index); }

int pointer_device(const void* ptr) {
  // Before this process made a device allocator it holds no device memory of ours, and the query is
  // skipped: a CPU-only run on a GPU node never creates a CUDA context through it.
  if (ptr == nullptr || !cuda::device_allocators_made()) return -1;
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
  if (e == cudaErrorInvalidValue) {
    (void)cudaGetLastError();  // an unknown pointer is host memory; do not leave the error pending
    return -1;
  }
  // Any other error (a kernel fault left sticky on the context) says nothing about the pointer: taking it
  // for host memory would hand a device buffer to memcpy or MPI, which crash far from the cause.
  ADAPT_REQUIRE(e == cudaSuccess, CudaError, "cannot tell where the buffer at {} lives: {} ({})", ptr,
                cudaGetErrorString(e), cudaGetErrorName(e));
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

void copy_bytes(void* dst, const void* src, std::size_t n_bytes) {
  if (n_bytes == 0) return;
  if (pointer_device(dst) < 0 && pointer_device(src) < 0) {
    std::memcpy(dst, src, n_bytes);
    return;
  }
  cuda::memcpy_sync(dst, src, n_bytes);
}

std::string cuda_device_uuid(int index) {
  cuda::require_device(index);
  cudaDeviceProp prop{};
  ADAPT_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  std::string hex;
  for (const char byte : prop.uuid.bytes) hex += fmt::format("{:02x}", static_cast<unsigned char>(byte));
  return hex;
}

void* cuda_compute_stream() { return static_cast<void*>(cudaStreamLegacy); }

#else

int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() {
  return "this binary was built without CUDA (ADAPT_CUDA=OFF or nvcc not found at configure time)";
}
std::string cuda_device_name(int) { return "none"; }
std::string cuda_library_versions() { return "none: " + cuda_unavailable_reason(); }
Allocator& pinned_host_allocator() {
  ADAPT_THROW(UnsupportedError,
              "pinned host memory needs CUDA, but this binary was built without it; rebuild with "
              "-DADAPT_CUDA=ON or keep runtime.device = \"cpu\"");
}
Allocator& cuda_allocator(int index) {
  ADAPT_THROW(UnsupportedError,
              "cuda:{} requested, but this binary was built without CUDA; rebuild with -DADAPT_CUDA=ON or set "
              "runtime.device = \"cpu\"",
              index);
}
// These throw the UnsupportedError of cuda_allocator / pinned_host_allocator.
MemoryStats cuda_memory_stats(int index) {
  cuda_allocator(index);
  return {};
}
MemoryInfo cuda_memory_info(int) { return {}; }
void cuda_use_device(int index) { cuda_allocator(index); }
std::size_t cuda_empty_cache(int index) {
  cuda_allocator(index);
  return 0;
}
MemoryStats pinned_memory_stats() {
  pinned_host_allocator();
  return {};
}
void synchronize(int) {}

int pointer_device(const void*) { return -1; }

void copy_bytes(void* dst, const void* src, std::size_t n_bytes) {
  if (n_bytes > 0) std::memcpy(dst, src, n_bytes);
}

std::string cuda_device_uuid(int index) {
  cuda_allocator(index);  // throws the UnsupportedError naming the rebuild flag
  return {};
}

void* cuda_compute_stream() { return nullptr; }

#endif

void copy(Tensor& dst, const Tensor& src) {
  ADAPT_REQUIRE(dst.shape() == src.shape() && dst.dtype() == src.dtype(), ShapeError,
                "copy '{}' {} {} -> '{}' {} {}: shapes or dtypes differ", src.name(), src.shape().str(),
                dtype_name(src.dtype()), dst.name(), dst.shape().str(), dtype_name(dst.dtype()));
  ADAPT_REQUIRE(dst.is_contiguous() && src.is_contiguous(), ShapeError,
                "copy '{}' -> '{}': both tensors must be contiguous", src.name(), dst.name());
  if (src.device().host_accessible() && dst.device().host_accessible()) {
    std::memcpy(dst.raw(), src.raw(), src.size_bytes());
    return;
  }
#if ADAPT_HAVE_CUDA
  cuda::memcpy_sync(dst.raw(), src.raw(), src.size_bytes());
#else
  ADAPT_THROW(UnsupportedError, "copy between {} and {} needs CUDA, but this binary was built without it",
              src.device().str(), dst.device().str());
#endif
}

}  // namespace adapt::backend
