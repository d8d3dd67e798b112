// RMSNorm forward and backward: one block per row (rows grid-strided) for y and dx; the weight
// gradient is a column-parallel two-pass sum over row chunks (launch_plan.h), deterministic.
#include <algorithm>

#include "kernels/common/block_reduce.cuh"
#include "kernels/common/check.cuh"
#include "kernels/common/elem_io.cuh"
#include "kernels/launch_plan.h"
#include "kernels/rms_norm.h"

namespace adapt::kernels {
namespace {

constexpr int kMaxRowThreads = 512;

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    rms_norm_forward_kernel(T* y, float* rstd_out, const T* x, const float* w, int64_t n_rows, int64_t n_cols,
                            float eps) {
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const T* xr = x + row * n_cols;
    T* yr = y + row * n_cols;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) {
      const float v = load_f32(xr + j);
      ss += v * v;
    }
    ss = block_sum(ss, red);
    const float var = ss / static_cast<float>(n_cols);
    const float rstd = 1.0f / sqrtf(var + eps);
    if (rstd_out && threadIdx.x == 0) rstd_out[row] = rstd;
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) store_f32(yr + j, (load_f32(xr + j) * rstd) * w[j]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    rms_norm_backward_dx_kernel(T* dx, const T* dy, const T* x, const float* w, const float* rstd, int64_t n_rows,
                                int64_t n_cols, bool accumulate) {
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const T* dyr = dy + row * n_cols;
    const T* xr = x + row * n_cols;
    T* dxr = dx + row * n_cols;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) dot += (load_f32(dyr + j) * w[j]) * load_f32(xr + j);
    dot = block_sum(dot, red);
    const float r = rstd[row];
    const float coef = (dot / static_cast<float>(n_cols)) * r * r * r;
    // Each element is read and written by the same thread: dx may alias dy.
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) {
      float g = r * (load_f32(dyr + j) * w[j]) - load_f32(xr + j) * coef;
      if (accumulate) g += load_f32(dxr + j);
      store_f32(dxr + j, g);
    }
  }
}

// Pass 1: block (bx, by) sums rows [by·rows_per_chunk, ..) of columns bx·blockDim.x + tid, in row order.
// With one chunk (out == dw) it adds into dw; otherwise it writes partial[by·n_cols + c].
template <typename T>
__global__ void rms_norm_dw_partial_kernel(float* out, bool add, const T* dy, const T* x, const float* rstd,
                                           int64_t n_rows, int64_t n_cols, int64_t rows_per_chunk) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= n_cols) return;
  const int64_t r0 = blockIdx.y * rows_per_chunk;
  const int64_t r1 = min(n_rows, r0 + rows_per_chunk);
  double acc = 0.0;
  for (int64_t r = r0; r < r1; ++r)
    acc += static_cast<double>(load_f32(dy + r * n_cols + c) * (load_f32(x + r * n_cols + c) * rstd[r]));
  float* o = out + blockIdx.y * n_cols + c;
  if (add) {
    *o += static_cast<float>(acc);
  } else {
    *o = static_cast<float>(acc);
  }
}

// Pass 2: dw[c] += Σ_k partial[k·n_cols + c], chunks in order.
__global__ void rms_norm_dw_finish_kernel(float* dw, const float* partial, int64_t n_chunks, int64_t n_cols) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= n_cols) return;
  double s = 0.0;
  for (int64_t k = 0; k < n_chunks; ++k) s += partial[k * n_cols + c];
  dw[c] += static_cast<float>(s);
}

int row_grid(int64_t n_rows) { return static_cast<int>(std::min<int64_t>(n_rows, kMaxGridStrideBlocks)); }

}  // namespace

void launch_rms_norm_forward(void* y, float* rstd, const void* x, const float* w, std::int64_t n_rows,
                             std::int64_t n_cols, float eps, DType dtype, cudaStream_t stream) {
  if (n_rows <= 0) return;
  ADAPT_REQUIRE(n_cols > 0, ShapeError, "rms_norm_forward: rows of {} columns", n_cols);
  const int threads = row_block_threads(n_cols, kMaxRowThreads);
  dispatch_float(dtype, "rms_norm_forward", [&](auto tag) {
    using T = decltype(tag);
    rms_norm_forward_kernel<T><<<row_grid(n_rows), threads, 0, stream>>>(
        static_cast<T*>(y), rstd, static_cast<const T*>(x), w, n_rows, n_cols, eps);
  });
  ADAPT_CUDA_LAUNCH_CHECK("rms_norm_forward");
}

std::int64_t rms_norm_backward_workspace_elems(std::int64_t n_rows, std::int64_t n_cols) {
  return rms_norm_dw_plan(n_rows, n_cols).workspace_elems;
}

void launch_rms_norm_backward(void* dx, float* dw, float* workspace, const void* dy, const void* x, const float* w,
                              const float* rstd, std::int64_t n_rows, std::int64_t n_cols, bool accumulate, DType dtype,
                              cudaStream_t stream) {
  if (n_rows <= 0) return;
  ADAPT_REQUIRE(n_cols > 0, ShapeError, "rms_norm_backward: rows of {} columns", n_cols);
  dispatch_float(dtype, "rms_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    if (dw) {  // before dx: dx may alias dy
      const RmsNormDwPlan p = rms_norm_dw_plan(n_rows, n_cols);
      ADAPT_REQUIRE(p.workspace_elems == 0 || workspace, ShapeError,
                    "rms_norm_backward: dw of ({}, {}) needs a workspace of {} f32 "
                    "(rms_norm_backward_workspace_elems)",
                    n_rows, n_cols, p.workspace_elems);
      const dim3 grid(static_cast<unsigned>(p.col_blocks), static_cast<unsigned>(p.row_chunks));
      const bool direct = p.row_chunks == 1;
      rms_norm_dw_partial_kernel<T>
          <<<grid, p.col_threads, 0, stream>>>(direct ? dw : workspace, direct, static_cast<const T*>(dy),
                                               static_cast<const T*>(x), rstd, n_rows, n_cols, p.rows_per_chunk);
      ADAPT_CUDA_LAUNCH_CHECK("rms_norm_backward (dw, pass 1)");
      if (!direct) {
        rms_norm_dw_finish_kernel<<<static_cast<unsigned>(p.col_blocks), p.col_threads, 0, stream>>>(
            dw, workspace, p.row_chunks, n_cols);
        ADAPT_CUDA_LAUNCH_CHECK("rms_norm_backward (dw, pass 2)");
      }
    }
    if (dx) {
      const int threads = row_block_threads(n_cols, kMaxRowThreads);
      rms_norm_backward_dx_kernel<T>
          <<<row_grid(n_rows), threads, 0, stream>>>(static_cast<T*>(dx), static_cast<const T*>(dy),
                                                     static_cast<const T*>(x), w, rstd, n_rows, n_cols, accumulate);
      ADAPT_CUDA_LAUNCH_CHECK("rms_norm_backward (dx)");
    }
  });
}

}  // namespace adapt::kernels
