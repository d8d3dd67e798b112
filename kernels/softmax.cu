// Softmax / log-softmax: one block per row (rows grid-strided), max then Σ exp(x − max) in double
// reduced in a fixed order, then one pass writing the row.
#include <cfloat>

#include "kernels/common/block_reduce.cuh"
#include "kernels/common/check.cuh"
#include "kernels/launch_plan.h"
#include "kernels/softmax.h"

namespace adapt::kernels {
namespace {

constexpr int kMaxThreads = 512;

__global__ void __launch_bounds__(kMaxThreads)
    softmax_forward_kernel(float* y, const float* x, int64_t rows, int64_t cols, bool log) {
  __shared__ float red_f[32];
  __shared__ double red_d[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = block_max(m, red_f);
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += exp(static_cast<double>(xr[j] - m));
    s = block_sum(s, red_d);
    if (log) {
      const float log_sum = static_cast<float>(::log(s));
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = __fsub_rn(__fsub_rn(xr[j], m), log_sum);
    } else {
      const double inv = 1.0 / s;
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
        yr[j] = static_cast<float>(exp(static_cast<double>(xr[j] - m)) * inv);
    }
    __syncthreads();  // the next row's reductions reuse the shared buffers
  }
}

}  // namespace

void launch_softmax_forward(float* y, const float* x, std::int64_t rows, std::int64_t cols, bool log,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int threads = row_block_threads(cols, kMaxThreads);
  const auto blocks = static_cast<int>(std::min<std::int64_t>(rows, kMaxGridStrideBlocks));
  softmax_forward_kernel<<<blocks, threads, 0, stream>>>(y, x, rows, cols, log);
  ADAPT_CUDA_LAUNCH_CHECK("softmax_forward");
}

}  // namespace adapt::kernels
