// Fused softmax-cross-entropy: one block per row (rows grid-strided), an online max / Σ exp per
// thread merged across the block, then the gradient written over the logits. The vocab-parallel
// pieces reuse the same row loops, split where the all-reduces go.
#include <algorithm>

#include "kernels/common/block_reduce.cuh"
#include "kernels/common/check.cuh"
#include "kernels/common/elem_io.cuh"
#include "kernels/cross_entropy.h"
#include "kernels/launch_plan.h"

namespace adapt::kernels {
namespace {

constexpr int kMaxRowThreads = 1024;

int row_grid(int64_t n_rows) { return static_cast<int>(std::min<int64_t>(n_rows, kMaxGridStrideBlocks)); }

// Adds z to a running (max m, Σ exp(· − m) s); -inf entries add nothing.
__device__ __forceinline__ void online_add(float& m, float& s, float z) {
  if (z == -INFINITY) return;
  if (z > m) {
    s = s * expf(m - z) + 1.0f;  // m = -inf at first: expf(-inf) = 0
    m = z;
  } else {
    s += expf(z - m);
  }
}

// Writes the gradient of one row over its logits: exp(z − m)·k, minus grad_scale at column `y_local`
// (none when it is outside [0, V)).
template <typename T>
__device__ __forceinline__ void write_row_grad(T* zr, int64_t V, float m, float k, int64_t y_local, float grad_scale) {
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float g = expf(load_f32(zr + j) - m) * k;
    if (j == y_local) g -= grad_scale;
    store_f32(zr + j, g);
  }
}

template <typename T>
__device__ __forceinline__ void zero_row(T* zr, int64_t V) {
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) store_f32(zr + j, 0.0f);
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_fused_kernel(T* logits, float* row_loss, const void* targets, bool t64, int64_t n_rows, int64_t V,
                               int64_t ld, float grad_scale, int64_t ignore_index, bool grad) {
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    T* zr = logits + row * ld;
    const int64_t y = load_id(targets, t64, row);
    if (y == ignore_index || y < 0 || y >= V) {  // block-uniform branch
      if (threadIdx.x == 0 && row_loss) row_loss[row] = y == ignore_index ? 0.0f : NAN;
      if (grad) zero_row(zr, V);
      continue;
    }
    const float z_y = load_f32(zr + y);  // read before any thread of the block writes the row
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) online_add(m, s, load_f32(zr + j));
    const float row_m = block_max(m, red);
    const float part = m == -INFINITY ? 0.0f : s * expf(m - row_m);
    const float sum = block_sum(part, red);  // synchronises: z_y was read by everyone before
    if (threadIdx.x == 0 && row_loss)
      row_loss[row] = static_cast<float>(log(static_cast<double>(sum)) + static_cast<double>(row_m) - z_y);
    if (grad) {
      const float k = static_cast<float>(static_cast<double>(grad_scale) / sum);
      write_row_grad(zr, V, row_m, k, y, grad_scale);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_row_max_kernel(float* row_max, const T* logits, int64_t n_rows, int64_t V, int64_t ld) {
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const T* zr = logits + row * ld;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, load_f32(zr + j));
    m = block_max(m, red);
    if (threadIdx.x == 0) row_max[row] = m;
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_sum_exp_kernel(float* sum_exp, float* target_logit, const T* logits, const float* row_max,
                                 const void* targets, bool t64, int64_t n_rows, int64_t V, int64_t ld,
                                 int64_t vocab_begin) {
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const T* zr = logits + row * ld;
    const float m = row_max[row];
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(load_f32(zr + j) - m);
    s = block_sum(s, red);
    if (threadIdx.x == 0) {
      sum_exp[row] = s;
      const int64_t y_local = load_id(targets, t64, row) - vocab_begin;
      target_logit[row] = (y_local >= 0 && y_local < V) ? load_f32(zr + y_local) : 0.0f;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_finish_kernel(T* logits, float* row_loss, const float* row_max, const float* sum_exp,
                                const float* target_logit, const void* targets, bool t64, int64_t n_rows, int64_t V,
                                int64_t ld, int64_t vocab_begin, float grad_scale, int64_t ignore_index, bool grad) {
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    T* zr = logits + row * ld;
    const int64_t y = load_id(targets, t64, row);
    if (y == ignore_index) {
      if (threadIdx.x == 0 && row_loss) row_loss[row] = 0.0f;
      if (grad) zero_row(zr, V);
      continue;
    }
    const float m = row_max[row], sum = sum_exp[row];
    if (threadIdx.x == 0 && row_loss)
      row_loss[row] = static_cast<float>(log(static_cast<double>(sum)) + static_cast<double>(m) - target_logit[row]);
    if (grad) {
      const float k = static_cast<float>(static_cast<double>(grad_scale) / sum);
      write_row_grad(zr, V, m, k, y - vocab_begin, grad_scale);
    }
  }
}

// One block per row of V columns (row stride ld), rows grid-strided: checks the sizes, then
// launch(tag, grid, block) with tag of the storage type of `dtype`.
template <typename Launch>
void launch_rows(const char* what, int64_t n_rows, int64_t V, int64_t ld, DType dtype, Launch&& launch) {
  if (n_rows <= 0) return;
  ADAPT_REQUIRE(V > 0 && ld >= V, ShapeError, "{}: V = {} with row stride {}", what, V, ld);
  const dim3 grid(row_grid(n_rows)), block(row_block_threads(V, kMaxRowThreads));
  dispatch_float(dtype, what, [&](auto tag) { launch(tag, grid, block); });
  ADAPT_CUDA_LAUNCH_CHECK(what);
}

}  // namespace

void launch_cross_entropy_forward_backward(void* logits, float* row_loss, const void* targets, DType targets_dtype,
                                           std::int64_t n_rows, std::int64_t V, std::int64_t ld, float grad_scale,
                                           std::int64_t ignore_index, bool grad, DType dtype, cudaStream_t stream) {
  const bool t64 = ids_are_64(targets_dtype, "cross_entropy_forward_backward");
  launch_rows("cross_entropy_forward_backward", n_rows, V, ld, dtype, [&](auto tag, dim3 grid, dim3 block) {
    using T = decltype(tag);
    cross_entropy_fused_kernel<T><<<grid, block, 0, stream>>>(static_cast<T*>(logits), row_loss, targets, t64, n_rows,
                                                              V, ld, grad_scale, ignore_index, grad);
  });
}

void launch_cross_entropy_row_max(float* row_max, const void* logits, std::int64_t n_rows, std::int64_t V,
                                  std::int64_t ld, DType dtype, cudaStream_t stream) {
  launch_rows("cross_entropy_row_max", n_rows, V, ld, dtype, [&](auto tag, dim3 grid, dim3 block) {
    using T = decltype(tag);
    cross_entropy_row_max_kernel<T><<<grid, block, 0, stream>>>(row_max, static_cast<const T*>(logits), n_rows, V, ld);
  });
}

void launch_cross_entropy_sum_exp(float* sum_exp, float* target_logit, const void* logits, const float* row_max,
                                  const void* targets, DType targets_dtype, std::int64_t n_rows, std::int64_t V,
                                  std::int64_t ld, std::int64_t vocab_begin, DType dtype, cudaStream_t stream) {
  const bool t64 = ids_are_64(targets_dtype, "cross_entropy_sum_exp");
  launch_rows("cross_entropy_sum_exp", n_rows, V, ld, dtype, [&](auto tag, dim3 grid, dim3 block) {
    using T = decltype(tag);
    cross_entropy_sum_exp_kernel<T><<<grid, block, 0, stream>>>(sum_exp, target_logit, static_cast<const T*>(logits),
                                                                row_max, targets, t64, n_rows, V, ld, vocab_begin);
  });
}

void launch_cross_entropy_finish(void* logits, float* row_loss, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const void* targets, DType targets_dtype,
                                 std::int64_t n_rows, std::int64_t V, std::int64_t ld, std::int64_t vocab_begin,
                                 float grad_scale, std::int64_t ignore_index, bool grad, DType dtype,
                                 cudaStream_t stream) {
  const bool t64 = ids_are_64(targets_dtype, "cross_entropy_finish");
  launch_rows("cross_entropy_finish", n_rows, V, ld, dtype, [&](auto tag, dim3 grid, dim3 block) {
    using T = decltype(tag);
    cross_entropy_finish_kernel<T><<<grid, block, 0, stream>>>(static_cast<T*>(logits), row_loss, row_max, sum_exp,
                                                               target_logit, targets, t64, n_rows, V, ld, vocab_begin,
                                                               grad_scale, ignore_index, grad);
  });
}

}  // namespace adapt::kernels
