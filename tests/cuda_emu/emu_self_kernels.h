// Kernels that exercise cuda_emu itself (emu_self_kernels.cu), launched from emu_self_test.cpp.
#pragma once

#include <cuda_runtime.h>

namespace adapt::test::emu {

/// x[i] += value for i < n, on `stream`.
cudaError_t add(float* x, int n, float value, cudaStream_t stream);
/// out[0] = the block sum of x[0..n) (kernels/common/block_reduce.cuh) with `threads` threads.
cudaError_t block_sum(float* out, const float* x, int n, int threads);
/// out[i] = x[i ^ lane_mask] within each warp, through __shfl_xor_sync.
cudaError_t shuffle_xor(float* out, const float* x, int n, int lane_mask);
/// Threads at or past `active` return before a __syncthreads the others reach.
cudaError_t early_exit_then_syncthreads(int threads, int active);
/// A full-mask warp_sum on a block of `threads` threads (not a multiple of 32 is a fault).
cudaError_t full_mask_on_block(float* out, int threads);
/// Each lane stores its id to shared memory and reads its neighbour's: with or without a __syncwarp.
cudaError_t neighbour_read(int* out, bool sync);
/// A warp's 16×16 d = a·b + c on wmma (bf16 in, f32 out): a row-major, b row- or column-major, with
/// leading dimensions lda, ldb, ldc (elements).
cudaError_t wmma_tile(float* d, const void* a, int lda, const void* b, int ldb, bool b_col_major, const float* c,
                      int ldc);
/// A launch of `threads` threads per block asking for `smem` bytes of dynamic shared memory, after
/// raising the kernel's limit to `optin` bytes when it is positive.
cudaError_t launch_shape(int blocks, int threads, int smem, int optin);

}  // namespace adapt::test::emu
