// Casts between f32 and bf16/f16 on the device: a grid-stride loop, one element per thread per step.
// Memory-bound; vectorised loads can come later if the cast shows up in a profile.
#include <cuda_fp16.h>

#include "kernels/cast.h"
#include "kernels/common/check.cuh"
#include "kernels/common/convert.cuh"

namespace adapt::kernels {
namespace {

__global__ void cast_f32_to_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = f32_to_bf16_bits(src[i]);
}

__global__ void cast_bf16_to_f32_kernel(float* dst, const uint16_t* src, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = bf16_bits_to_f32(src[i]);
}

__global__ void cast_f32_to_f16_kernel(__half* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2half_rn(src[i]);
}

__global__ void cast_f16_to_f32_kernel(float* dst, const __half* src, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __half2float(src[i]);
}

}  // namespace

void launch_cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (dst_dtype == src_dtype) {
    cudaError_t e =
        cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * dtype_size(dst_dtype), cudaMemcpyDeviceToDevice, stream);
    ADAPT_REQUIRE(e == cudaSuccess, CudaError, "cast copy of {} elements failed: {}", n, cudaGetErrorString(e));
    return;
  }
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(n, threads), 65535 * 8));
  if (src_dtype == DType::F32 && dst_dtype == DType::BF16) {
    cast_f32_to_bf16_kernel<<<blocks, threads, 0, stream>>>(static_cast<uint16_t*>(dst), static_cast<const float*>(src),
                                                            n);
  } else if (src_dtype == DType::BF16 && dst_dtype == DType::F32) {
    cast_bf16_to_f32_kernel<<<blocks, threads, 0, stream>>>(static_cast<float*>(dst), static_cast<const uint16_t*>(src),
                                                            n);
  } else if (src_dtype == DType::F32 && dst_dtype == DType::F16) {
    cast_f32_to_f16_kernel<<<blocks, threads, 0, stream>>>(static_cast<__half*>(dst), static_cast<const float*>(src),
                                                           n);
  } else if (src_dtype == DType::F16 && dst_dtype == DType::F32) {
    cast_f16_to_f32_kernel<<<blocks, threads, 0, stream>>>(static_cast<float*>(dst), static_cast<const __half*>(src),
                                                           n);
  } else {
    ADAPT_THROW(UnsupportedError, "device cast {} -> {} is not implemented; cast through f32", dtype_name(src_dtype),
                dtype_name(dst_dtype));
  }
  ADAPT_CUDA_LAUNCH_CHECK("cast");
}

}  // namespace adapt::kernels
