// Adapter kernels: LoRA dropout (grid-stride, the shared host/device hash), bottleneck bias add and
// activations (grid-stride) and LayerNorm (one block per row, rows grid-strided, row statistics in double as on the
// CPU). Simple f32 products and sums use explicitly rounded intrinsics, so they are not contracted into FMAs and round
// as the CPU loops of src/adapters/adapter_math.cpp do. The activations' expf / erff are CUDA's (within 2 ulp of
// glibc's), so their outputs may differ from the CPU's in the last bits.
#include <algorithm>

#include "adapters/adapter_rng_hash.h"
#include "kernels/adapter_ops.h"
#include "kernels/common/block_reduce.cuh"
#include "kernels/common/check.cuh"
#include "kernels/launch_plan.h"

namespace adapt::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxRowThreads = 512;

__device__ __forceinline__ int64_t grid_index() { return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t grid_step() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__global__ void lora_dropout_kernel(float* out, const float* x, int64_t n, int64_t n_cols, LoraDropoutMask mask,
                                    bool accumulate) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) {
    const int64_t e = adapters::rng_hash_dropout_element(i, n_cols, mask.width, mask.col_offset, mask.row_offset);
    const bool keep = adapters::rng_hash_dropout_keep(mask.stream, e, mask.p);
    if (accumulate) {
      if (keep) out[i] = __fadd_rn(out[i], __fmul_rn(x[i], mask.keep_scale));
    } else {
      out[i] = keep ? __fmul_rn(x[i], mask.keep_scale) : 0.0f;
    }
  }
}

__global__ void bias_add_kernel(float* y, const float* bias, int64_t n, int64_t n_cols, float alpha) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) y[i] = __fadd_rn(y[i], __fmul_rn(alpha, bias[i % n_cols]));
}

__device__ __forceinline__ float activate(AdapterActivation act, float a) {
  switch (act) {
    case AdapterActivation::Relu: return a > 0.0f ? a : 0.0f;
    case AdapterActivation::Swish: return __fdiv_rn(a, __fadd_rn(1.0f, expf(-a)));
    case AdapterActivation::Gelu:
      return __fmul_rn(__fmul_rn(0.5f, a), __fadd_rn(1.0f, erff(__fmul_rn(a, 0.70710678118654752f))));
  }
  return 0.0f;
}

__device__ __forceinline__ float activate_grad(AdapterActivation act, float a) {
  switch (act) {
    case AdapterActivation::Relu: return a > 0.0f ? 1.0f : 0.0f;
    case AdapterActivation::Swish: {
      const float sig = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-a)));
      return __fmul_rn(sig, __fadd_rn(1.0f, __fmul_rn(a, __fsub_rn(1.0f, sig))));
    }
    case AdapterActivation::Gelu: {
      const float cdf = __fmul_rn(0.5f, __fadd_rn(1.0f, erff(__fmul_rn(a, 0.70710678118654752f))));
      const float pdf = __fmul_rn(expf(__fmul_rn(__fmul_rn(-0.5f, a), a)), 0.39894228040143268f);  // 1/√(2π)
      return __fadd_rn(cdf, __fmul_rn(a, pdf));
    }
  }
  return 0.0f;
}

__global__ void activation_forward_kernel(float* out, const float* pre, int64_t n, AdapterActivation act) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) out[i] = activate(act, pre[i]);
}

__global__ void activation_backward_kernel(float* grad, const float* pre, int64_t n, AdapterActivation act) {
  for (int64_t i = grid_index(); i < n; i += grid_step()) grad[i] = __fmul_rn(grad[i], activate_grad(act, pre[i]));
}

__global__ void __launch_bounds__(kMaxRowThreads)
    layer_norm_forward_kernel(float* out, float* mean_rstd, const float* z, const float* w, const float* b,
                              int64_t n_rows, int64_t n_cols, double eps) {
  __shared__ double red[32];
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const float* zr = z + row * n_cols;
    float* outr = out + row * n_cols;
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) sum += zr[j];
    const double mean = __ddiv_rn(block_sum(sum, red), static_cast<double>(n_cols));
    double var = 0.0;
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) {
      const double d = __dsub_rn(zr[j], mean);
      var = __dadd_rn(var, __dmul_rn(d, d));
    }
    var = __ddiv_rn(block_sum(var, red), static_cast<double>(n_cols));
    const float m = static_cast<float>(mean);
    const float rstd = static_cast<float>(__ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(var, eps))));
    if (threadIdx.x == 0) {
      mean_rstd[2 * row] = m;
      mean_rstd[2 * row + 1] = rstd;
    }
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x)
      outr[j] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(zr[j], m), rstd), w[j]), b[j]);
  }
}

__global__ void __launch_bounds__(kMaxRowThreads)
    layer_norm_backward_kernel(float* dz, float* dw_terms, const float* dzn, const float* z, const float* mean_rstd,
                               const float* w, int64_t n_rows, int64_t n_cols) {
  __shared__ double red[32];
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const float* zr = z + row * n_cols;
    const float* dnr = dzn + row * n_cols;
    const float mean = mean_rstd[2 * row], rstd = mean_rstd[2 * row + 1];
    double sum_u = 0.0, sum_uz = 0.0;
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) {
      const float zhat = __fmul_rn(__fsub_rn(zr[j], mean), rstd);
      const double u = __dmul_rn(dnr[j], w[j]);
      sum_u = __dadd_rn(sum_u, u);
      sum_uz = __dadd_rn(sum_uz, __dmul_rn(u, zhat));
      dw_terms[row * n_cols + j] = __fmul_rn(dnr[j], zhat);
    }
    const double mean_u = __ddiv_rn(block_sum(sum_u, red), static_cast<double>(n_cols));
    const double mean_uz = __ddiv_rn(block_sum(sum_uz, red), static_cast<double>(n_cols));
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) {
      const float zhat = __fmul_rn(__fsub_rn(zr[j], mean), rstd);
      const double u = __dmul_rn(dnr[j], w[j]);
      dz[row * n_cols + j] = static_cast<float>(
          __dmul_rn(static_cast<double>(rstd), __dsub_rn(__dsub_rn(u, mean_u), __dmul_rn(zhat, mean_uz))));
    }
  }
}

int row_grid(int64_t n_rows) { return static_cast<int>(std::min<int64_t>(n_rows, kMaxGridStrideBlocks)); }

}  // namespace

void launch_lora_dropout(float* out, const float* x, std::int64_t n_rows, std::int64_t n_cols,
                         const LoraDropoutMask& mask, bool accumulate, cudaStream_t stream) {
  const std::int64_t n = n_rows * n_cols;
  if (n <= 0) return;
  lora_dropout_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(out, x, n, n_cols, mask, accumulate);
  ADAPT_CUDA_LAUNCH_CHECK("lora_dropout");
}

void launch_adapter_bias_add(float* y, const float* bias, std::int64_t n_rows, std::int64_t n_cols, float alpha,
                             cudaStream_t stream) {
  const std::int64_t n = n_rows * n_cols;
  if (n <= 0) return;
  bias_add_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(y, bias, n, n_cols, alpha);
  ADAPT_CUDA_LAUNCH_CHECK("adapter_bias_add");
}

void launch_adapter_activation_forward(float* out, const float* pre, std::int64_t n, AdapterActivation act,
                                       cudaStream_t stream) {
  if (n <= 0) return;
  activation_forward_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(out, pre, n, act);
  ADAPT_CUDA_LAUNCH_CHECK("adapter_activation_forward");
}

void launch_adapter_activation_backward(float* grad, const float* pre, std::int64_t n, AdapterActivation act,
                                        cudaStream_t stream) {
  if (n <= 0) return;
  activation_backward_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(grad, pre, n, act);
  ADAPT_CUDA_LAUNCH_CHECK("adapter_activation_backward");
}

void launch_adapter_layer_norm_forward(float* out, float* mean_rstd, const float* z, const float* w, const float* b,
                                       std::int64_t n_rows, std::int64_t n_cols, double eps, cudaStream_t stream) {
  if (n_rows <= 0) return;
  ADAPT_REQUIRE(n_cols > 0, ShapeError, "adapter_layer_norm_forward: rows of {} columns", n_cols);
  const int threads = row_block_threads(n_cols, kMaxRowThreads);
  layer_norm_forward_kernel<<<row_grid(n_rows), threads, 0, stream>>>(out, mean_rstd, z, w, b, n_rows, n_cols, eps);
  ADAPT_CUDA_LAUNCH_CHECK("adapter_layer_norm_forward");
}

void launch_adapter_layer_norm_backward(float* dz, float* dw_terms, const float* dzn, const float* z,
                                        const float* mean_rstd, const float* w, std::int64_t n_rows,
                                        std::int64_t n_cols, cudaStream_t stream) {
  if (n_rows <= 0) return;
  ADAPT_REQUIRE(n_cols > 0, ShapeError, "adapter_layer_norm_backward: rows of {} columns", n_cols);
  const int threads = row_block_threads(n_cols, kMaxRowThreads);
  layer_norm_backward_kernel<<<row_grid(n_rows), threads, 0, stream>>>(dz, dw_terms, dzn, z, mean_rstd, w, n_rows,
                                                                       n_cols);
  ADAPT_CUDA_LAUNCH_CHECK("adapter_layer_norm_backward");
}

}  // namespace adapt::kernels
