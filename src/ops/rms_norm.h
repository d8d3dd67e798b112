// RMSNorm as HF LlamaRMSNorm computes it in f32: per row, rstd = 1 / sqrt(mean(x²) + eps), then
// y = (x · rstd) · w (normalise first, scale second). rstd is what the backward needs besides x and w.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops {

/// y (.., C) = x (.., C) · rstd · w (C), f32. y may alias x. When `rstd` is given it receives the
/// per-row 1/sqrt(mean(x²) + eps), shape (N) with N = rows of x; the backward (SPEC §3.8) uses it.
void rms_norm_forward(Tensor& y, const Tensor& x, const Tensor& w, float eps, Tensor* rstd = nullptr);

}  // namespace adapt::ops
