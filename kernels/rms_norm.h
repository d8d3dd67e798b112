// Host launchers of RMSNorm on the device (HF LlamaRMSNorm in f32, as src/ops/rms_norm.h): per row,
// rstd = 1 / sqrt(mean(x²) + eps), y = (x · rstd) · w. x, y, dy, dx are f32, bf16 or f16 (`dtype`),
// row-major (n_rows, n_cols) and contiguous; w, rstd, dw are f32. Math in f32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"

namespace adapt::kernels {

/// y = (x · rstd) · w per row; rstd (n_rows), optional, receives each row's 1/sqrt(mean(x²) + eps).
/// y may alias x. One block per row.
void launch_rms_norm_forward(void* y, float* rstd, const void* x, const float* w, std::int64_t n_rows,
                             std::int64_t n_cols, float eps, DType dtype, cudaStream_t stream);

/// f32 elements of the workspace launch_rms_norm_backward needs when dw is asked (0: none).
std::int64_t rms_norm_backward_workspace_elems(std::int64_t n_rows, std::int64_t n_cols);

/// With u = dy ⊙ w: dx = rstd · u − x · rstd³ · (Σ_j u_j x_j) / C (dx += that with accumulate; dx may
/// be null, or alias dy). dw (n_cols), optional, += Σ_rows dy ⊙ x · rstd, summed in a fixed order
/// (row chunks, then the chunks in order: no atomics, the same bits on every run); `workspace` holds
/// rms_norm_backward_workspace_elems f32 (may be null when that is 0). dw is computed before dx is
/// written, so it sees the incoming dy even when dx aliases dy.
void launch_rms_norm_backward(void* dx, float* dw, float* workspace, const void* dy, const void* x, const float* w,
                              const float* rstd, std::int64_t n_rows, std::int64_t n_cols, bool accumulate, DType dtype,
                              cudaStream_t stream);

}  // namespace adapt::kernels
