// Kernels that exercise cuda_emu itself: reductions, shuffles, the faults it must report, wmma.
#include <cuda_bf16.h>
#include <mma.h>

#include "kernels/common/block_reduce.cuh"
#include "tests/cuda_emu/emu_self_kernels.h"

namespace adapt::test::emu {
namespace {

__global__ void block_sum_kernel(float* out, const float* x, int n) {
  __shared__ float red[32];
  float v = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) v += x[i];
  v = kernels::block_sum(v, red);
  if (threadIdx.x == 0) out[0] = v;
}

__global__ void shuffle_xor_kernel(float* out, const float* x, int n, int lane_mask) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = __shfl_xor_sync(0xffffffffu, i < n ? x[i] : 0.0f, lane_mask);
  if (i < n) out[i] = v;
}

__global__ void early_exit_kernel(int active) {
  if (static_cast<int>(threadIdx.x) >= active) return;
  __syncthreads();
}

__global__ void full_mask_kernel(float* out) {
  const float v = kernels::warp_sum(1.0f);
  if (threadIdx.x == 0) out[0] = v;
}

__global__ void neighbour_kernel(int* out, bool sync) {
  __shared__ int s[32];
  s[threadIdx.x] = static_cast<int>(threadIdx.x);
  if (sync) __syncwarp();
  out[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

template <typename LayoutB>
__global__ void wmma_kernel(float* d, const __nv_bfloat16* a, int lda, const __nv_bfloat16* b, int ldb, const float* c,
                            int ldc) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::load_matrix_sync(fa, a, lda);
  wmma::load_matrix_sync(fb, b, ldb);
  wmma::load_matrix_sync(fc, c, ldc, wmma::mem_row_major);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, ldc, wmma::mem_row_major);
}

__global__ void shape_kernel(int* sink, int smem_bytes) {
  extern __shared__ __align__(16) unsigned char smem[];
  if (threadIdx.x == 0 && blockIdx.x == 0 && smem_bytes > 0) sink[0] = smem[smem_bytes - 1];
}

__global__ void add_kernel(float* x, int n, float value) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += value;
}

}  // namespace

cudaError_t add(float* x, int n, float value, cudaStream_t stream) {
  add_kernel<<<(n + 127) / 128, 128, 0, stream>>>(x, n, value);
  return cudaGetLastError();
}

cudaError_t block_sum(float* out, const float* x, int n, int threads) {
  block_sum_kernel<<<1, threads>>>(out, x, n);
  return cudaGetLastError();
}

cudaError_t shuffle_xor(float* out, const float* x, int n, int lane_mask) {
  shuffle_xor_kernel<<<(n + 127) / 128, 128>>>(out, x, n, lane_mask);
  return cudaGetLastError();
}

cudaError_t early_exit_then_syncthreads(int threads, int active) {
  early_exit_kernel<<<1, threads>>>(active);
  return cudaGetLastError();
}

cudaError_t full_mask_on_block(float* out, int threads) {
  full_mask_kernel<<<1, threads>>>(out);
  return cudaGetLastError();
}

cudaError_t neighbour_read(int* out, bool sync) {
  neighbour_kernel<<<1, 32>>>(out, sync);
  return cudaGetLastError();
}

cudaError_t wmma_tile(float* d, const void* a, int lda, const void* b, int ldb, bool b_col_major, const float* c,
                      int ldc) {
  const auto* ab = static_cast<const __nv_bfloat16*>(a);
  const auto* bb = static_cast<const __nv_bfloat16*>(b);
  if (b_col_major) {
    wmma_kernel<nvcuda::wmma::col_major><<<1, 32>>>(d, ab, lda, bb, ldb, c, ldc);
  } else {
    wmma_kernel<nvcuda::wmma::row_major><<<1, 32>>>(d, ab, lda, bb, ldb, c, ldc);
  }
  return cudaGetLastError();
}

cudaError_t launch_shape(int blocks, int threads, int smem, int optin) {
  if (optin > 0) {
    const cudaError_t e = cudaFuncSetAttribute(shape_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
    if (e != cudaSuccess) return e;
  }
  static int sink[1];
  shape_kernel<<<blocks, threads, smem>>>(sink, smem);
  return cudaGetLastError();
}

}  // namespace adapt::test::emu
