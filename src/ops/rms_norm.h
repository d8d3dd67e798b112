// RMSNorm as HF LlamaRMSNorm computes it in f32: per row, rstd = 1 / sqrt(mean(x²) + eps), then
// y = (x · rstd) · w (normalise first, scale second). rstd is what the backward needs besides x and w.
// The backward (rms_norm_backward.cpp) gives dx, and dw only when asked: base norms are frozen.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops {

/// y (.., C) = x (.., C) · rstd · w (C), f32. y may alias x. When `rstd` is given it receives the
/// per-row 1/sqrt(mean(x²) + eps), shape (N) with N = rows of x; the backward (SPEC §3.8) uses it.
void rms_norm_forward(Tensor& y, const Tensor& x, const Tensor& w, float eps, Tensor* rstd = nullptr);

struct RmsNormBackwardOptions {
  bool accumulate = false;  // dx += the gradient (a residual stream's gradient adds the norm's share)
};

/// The backward of rms_norm_forward (SPEC §3.8), f32: with u = dy ⊙ w,
///   dx (.., C) = rstd · u − x · rstd³ · (Σ_j u_j x_j) / C   (or += with accumulate);
///   dw (C) += Σ_rows dy ⊙ x · rstd when dw is not null (the caller zeroes it; gradients of a frozen
///   weight are never asked for).
/// x, w and rstd are the forward's input, weight and saved rstd (N). dx may alias dy. Each element of
/// dx and dw is summed in a fixed order: the same bits for any thread count.
void rms_norm_backward(Tensor& dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       const RmsNormBackwardOptions& opts = {});

}  // namespace adapt::ops
