// Host launchers of the fused softmax-cross-entropy on the device (src/ops/cross_entropy.h): each row
// of logits (f32, bf16 or f16; row stride ld elements) gives its loss −log softmax(z)[y] and, with
// `grad`, is overwritten in place by (softmax(z) − onehot(y)) · grad_scale. The probabilities are never
// stored: one block per row reads the row once for an online max / Σ exp (a running max, the sum
// rescaled when it grows), then once more to write the gradient.
//
// The vocab-parallel form (src/parallel/tp_ops.h: each rank holds columns [vocab_begin,
// vocab_begin + V) of every row) runs in three launches with the tp all-reduces between them:
//   launch_cross_entropy_row_max         → all-reduce Max of row_max
//   launch_cross_entropy_sum_exp         → all-reduce Sum of sum_exp and target_logit
//   launch_cross_entropy_finish          → row_loss and the rank's slice of the gradient.
// Targets are global ids (i32 or i64) or ignore_index (row loss 0, zero gradient row); the host checks
// them against the vocabulary before the launch. A target neither ignored nor in [0, vocab) (fused
// form) gives a NaN row loss and a zero gradient row.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"

namespace adapt::kernels {

/// Fused single-rank cross-entropy over logits (n_rows, V) with row stride ld. row_loss (n_rows) f32:
/// each row's loss (0 on ignored rows); the caller sums them (in row order for the CPU's loss sum).
void launch_cross_entropy_forward_backward(void* logits, float* row_loss, const void* targets, DType targets_dtype,
                                           std::int64_t n_rows, std::int64_t V, std::int64_t ld, float grad_scale,
                                           std::int64_t ignore_index, bool grad, DType dtype, cudaStream_t stream);

/// row_max (n_rows) f32 = max over this rank's V columns of each row.
void launch_cross_entropy_row_max(float* row_max, const void* logits, std::int64_t n_rows, std::int64_t V,
                                  std::int64_t ld, DType dtype, cudaStream_t stream);

/// With row_max the global maxima: sum_exp (n_rows) = Σ over this rank's columns of exp(z − row_max),
/// target_logit (n_rows) = z[target − vocab_begin] when the target falls in this rank's columns, else 0
/// (so the Sum all-reduce gives the target's logit).
void launch_cross_entropy_sum_exp(float* sum_exp, float* target_logit, const void* logits, const float* row_max,
                                  const void* targets, DType targets_dtype, std::int64_t n_rows, std::int64_t V,
                                  std::int64_t ld, std::int64_t vocab_begin, DType dtype, cudaStream_t stream);

/// With the global row_max, sum_exp and target_logit: row_loss (n_rows, optional) = log(sum_exp) +
/// row_max − target_logit (0 on ignored rows), and with `grad` this rank's columns become
/// exp(z − row_max) · grad_scale / sum_exp, minus grad_scale at the target's column when it is here
/// (zero rows for ignored targets).
void launch_cross_entropy_finish(void* logits, float* row_loss, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const void* targets, DType targets_dtype,
                                 std::int64_t n_rows, std::int64_t V, std::int64_t ld, std::int64_t vocab_begin,
                                 float grad_scale, std::int64_t ignore_index, bool grad, DType dtype,
                                 cudaStream_t stream);

}  // namespace adapt::kernels
