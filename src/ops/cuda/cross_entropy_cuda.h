// CUDA glue for ops::cross_entropy_forward_backward (one rank: fused, one block per row, the
// probabilities never stored) and for the three vocab-parallel pieces that tp_ops runs with its
// all-reduces between them (kernels/cross_entropy.h). Logits are contiguous (.., V) in f32, bf16 or
// f16 on the device; targets i32 or i64 on the same device (range-checked on the host first).
#pragma once

#include <cstdint>

#include "ops/cross_entropy.h"
#include "tensor/tensor.h"

namespace adapt::ops::cuda {

/// As ops::cross_entropy_forward_backward; the loss sum adds the f32 row losses in row order in double.
CrossEntropyResult cross_entropy_forward_backward(Tensor& logits, const Tensor& targets,
                                                  const CrossEntropyOptions& opts, Tensor* row_loss);

/// row_max (N) f32 = max over this rank's columns of each row of logits (N, V_local).
void cross_entropy_row_max(Tensor& row_max, const Tensor& logits);

/// With the global row_max: sum_exp (N) = Σ_local exp(z − row_max), target_logit (N) = z of the target
/// when its column is here (global id − vocab_begin in [0, V_local)), else 0. Both f32.
void cross_entropy_sum_exp(Tensor& sum_exp, Tensor& target_logit, const Tensor& logits, const Tensor& row_max,
                           const Tensor& targets, std::int64_t vocab_begin);

/// With the global row_max, sum_exp and target_logit: row_loss (N, f32, optional) and, with opts.grad,
/// this rank's slice of (softmax − onehot) · grad_scale over logits.
void cross_entropy_finish(Tensor& logits, Tensor* row_loss, const Tensor& row_max, const Tensor& sum_exp,
                          const Tensor& target_logit, const Tensor& targets, std::int64_t vocab_begin,
                          const CrossEntropyOptions& opts);

}  // namespace adapt::ops::cuda
