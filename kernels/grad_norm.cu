// Σ x² in double: pass 1 gives each block a grid-stride share of one tensor (each thread sums its
// elements in index order, then block_sum adds the threads' sums), pass 2 is one block over the
// partials, added the same way. The order depends only on n and the fixed block sizes.
#include "kernels/common/block_reduce.cuh"
#include "kernels/common/check.cuh"
#include "kernels/grad_norm.h"

namespace adapt::kernels {
namespace {

static_assert(kSumSquaresThreads % 32 == 0 && kSumSquaresThreads <= 1024, "block_sum takes whole warps");

__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_squares_partials_kernel(const float* x, int64_t n, double* partials) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kSumSquaresThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kSumSquaresThreads) {
    const double xi = x[i];
    acc = __dadd_rn(acc, __dmul_rn(xi, xi));  // as the host: a double product, then a double sum
  }
  __shared__ double red[32];
  const double s = block_sum(acc, red);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_partials_kernel(const double* partials, int64_t n, double* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kSumSquaresThreads) acc = __dadd_rn(acc, partials[i]);
  __shared__ double red[32];
  const double s = block_sum(acc, red);
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
