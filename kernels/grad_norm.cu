// Σ x² in double: pass 1 gives each block a grid-stride share of one tensor (each thread sums its
// elements in index order, then a shared-memory tree adds the threads' sums), pass 2 is one block over
// the partials, added the same way. The order depends only on n and the fixed block sizes.
#include "kernels/common/check.cuh"
#include "kernels/grad_norm.h"

namespace adapt::kernels {
namespace {

static_assert((kSumSquaresThreads & (kSumSquaresThreads - 1)) == 0, "the tree needs a power of two");

/// Sum of `v` over the block (blockDim.x == kSumSquaresThreads) in a fixed tree order; valid in thread 0.
__device__ double block_tree_sum(double v) {
  __shared__ double sh[kSumSquaresThreads];
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int s = kSumSquaresThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] = __dadd_rn(sh[threadIdx.x], sh[threadIdx.x + s]);
    __syncthreads();
  }
  return sh[0];
}

__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_squares_partials_kernel(const float* x, int64_t n, double* partials) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kSumSquaresThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kSumSquaresThreads) {
    const double xi = x[i];
    acc = __dadd_rn(acc, __dmul_rn(xi, xi));  // as the host: a double product, then a double sum
  }
  const double s = block_tree_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_partials_kernel(const double* partials, int64_t n, double* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kSumSquaresThreads) acc = __dadd_rn(acc, partials[i]);
  const double s = block_tree_sum(acc);
  if (threadIdx.x == 0) *out = s;
}

}  // namespace

void launch_sum_squares_partials(const float* x, std::int64_t n, double* partials, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(sum_squares_blocks(n));
  sum_squares_partials_kernel<<<blocks, kSumSquaresThreads, 0, stream>>>(x, n, partials);
  ADAPT_CUDA_LAUNCH_CHECK("sum_squares_partials");
}

void launch_sum_partials(const double* partials, std::int64_t n_partials, double* out, cudaStream_t stream) {
  sum_partials_kernel<<<1, kSumSquaresThreads, 0, stream>>>(partials, n_partials, out);
  ADAPT_CUDA_LAUNCH_CHECK("sum_partials");
}

}  // namespace adapt::kernels
