// Softmax and log-softmax over the last dimension (the vocabulary for logits), in f32 with the row
// maximum subtracted first.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops {

/// y (.., V) = exp(x − max) / Σ exp(x − max) per row. y may alias x.
void softmax_forward(Tensor& y, const Tensor& x);
/// y (.., V) = x − max − log Σ exp(x − max) per row. y may alias x.
void log_softmax_forward(Tensor& y, const Tensor& x);

}  // namespace adapt::ops
