// SwiGLU forward and backward: elementwise, grid-stride, one element per thread per step.
#include "kernels/common/check.cuh"
#include "kernels/common/elem_io.cuh"
#include "kernels/launch_plan.h"
#include "kernels/swiglu.h"

namespace adapt::kernels {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = load_f32(gate + i), u = load_f32(up + i);
    store_f32(out + i, g / (1.0f + expf(-g)) * u);
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = load_f32(gate + i), u = load_f32(up + i), d = load_f32(dout + i);
    const float sig = 1.0f / (1.0f + expf(-g));
    const float silu = g * sig;
    store_f32(dgate + i, d * u * (sig * (1.0f + g * (1.0f - sig))));
    store_f32(dup + i, d * silu);
  }
}

}  // namespace

void launch_swiglu_forward(void* out, const void* gate, const void* up, std::int64_t n, DType dtype,
                           cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_float(dtype, "swiglu_forward", [&](auto tag) {
    using T = decltype(tag);
    swiglu_forward_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(gate), static_cast<const T*>(up), n);
  });
  ADAPT_CUDA_LAUNCH_CHECK("swiglu_forward");
}

void launch_swiglu_backward(void* dgate, void* dup, const void* dout, const void* gate, const void* up, std::int64_t n,
                            DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_float(dtype, "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    swiglu_backward_kernel<T><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(dgate), static_cast<T*>(dup), static_cast<const T*>(dout), static_cast<const T*>(gate),
        static_cast<const T*>(up), n);
  });
  ADAPT_CUDA_LAUNCH_CHECK("swiglu_backward");
}

}  // namespace adapt::kernels
