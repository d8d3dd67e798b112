// Cross-entropy over the vocabulary, fused with its gradient: each row of logits is turned into
// dlogits = (softmax(z) − onehot(y)) · grad_scale in place, so the (N, V) probability matrix is never
// a second allocation. Targets equal to ignore_index (HF's −100) add no loss and get a zero row.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace adapt::ops {

struct CrossEntropyOptions {
  /// dlogits = (softmax − onehot) · grad_scale. For HF's mean over the batch this is
  /// 1 / n_valid; with gradient accumulation or data parallelism, 1 / n_loss_tokens of the whole
  /// global batch (the caller knows it before the forward; the loss sum is then normalised the same way).
  float grad_scale = 1.0f;
  bool grad = true;                  // false: loss only, logits left untouched (evaluation)
  std::int64_t ignore_index = -100;  // HF ignore_index
};

struct CrossEntropyResult {
  double loss_sum = 0.0;     // Σ over targets != ignore_index of −log softmax(z)[y], summed in row order
  std::int64_t n_valid = 0;  // rows whose target is not ignore_index
};

/// logits (.., V) f32 (rows with one row stride), targets (..) i32 or i64 with one entry per row:
/// the target of that row itself (shift labels before calling, as HF's loss does). With opts.grad the
/// logits are overwritten by their gradient. `row_loss` (..) f32, optional, receives each row's loss
/// (0 on ignored rows). ShapeError, before anything is written, when a target is neither ignore_index
/// nor in [0, V). Per row: max, then exp and the sum (in double) in one pass, then the scaling; the
/// loss is log Σ exp(z − max) + max − z_y.
CrossEntropyResult cross_entropy_forward_backward(Tensor& logits, const Tensor& targets,
                                                  const CrossEntropyOptions& opts = {}, Tensor* row_loss = nullptr);

}  // namespace adapt::ops
