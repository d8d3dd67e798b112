// The CPU kernels of the training path: the backward of every op, the fused cross-entropy and the
// segment-masked attention forward (packed documents). Raw f32 pointers, int64 sizes, row strides (ld)
// in elements, no Tensor, like cpu_kernels.h. Each output element is computed by one thread in a fixed
// order, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "ops/cpu/cpu_kernels.h"

namespace adapt::ops::cpu {

/// dx (= or +=) d/dx of y = x · rstd · w; dw (C) += Σ_rows dy · x · rstd when dw is not null.
void rms_norm_backward(float* dx, std::int64_t lddx, bool accumulate, float* dw, const float* dy, std::int64_t lddy,
                       const float* x, std::int64_t ldx, const float* w, const float* rstd, std::int64_t rows,
                       std::int64_t cols);

/// Inverse rotation (angle −θ), in place: x (B, T, Hx, D) contiguous; cos/sin (T, D/2).
void rope_backward(float* x, std::int64_t B, std::int64_t T, std::int64_t Hx, std::int64_t D, const float* cos,
                   const float* sin);

/// cos/sin (n, half): row i at position pos32[i] (or pos64[i]), computed as rope_table_fill does.
void rope_table_fill_positions(float* cos, float* sin, const float* inv_freq, std::int64_t half,
                               const std::int32_t* pos32, const std::int64_t* pos64, std::int64_t n);

/// dgate = dout · up · silu'(gate), dup = dout · silu(gate). dgate may alias gate and dup may alias up
/// (each element is read before it is written).
void swiglu_backward(float* dgate, std::int64_t lddg, float* dup, std::int64_t lddu, const float* dout,
                     std::int64_t lddo, const float* gate, std::int64_t ldg, const float* up, std::int64_t ldu,
                     std::int64_t rows, std::int64_t cols);

/// dtable (V, C) contiguous += scatter of dout rows by id (ids checked by the caller).
void embedding_backward(float* dtable, std::int64_t C, const float* dout, std::int64_t lddo, const std::int32_t* ids32,
                        const std::int64_t* ids64, std::int64_t n);

struct CrossEntropyArgs {
  float* logits = nullptr;  // (rows, V) with row stride ld; becomes dlogits when grad
  std::int64_t ld = 0, rows = 0, V = 0;
  const std::int32_t* targets32 = nullptr;  // (rows), one of the two; checked by the caller
  const std::int64_t* targets64 = nullptr;
  std::int64_t ignore_index = -100;
  float grad_scale = 1.0f;
  bool grad = true;
  float* row_loss = nullptr;  // (rows) or null; 0 on ignored rows
};
struct CrossEntropySums {
  double loss_sum = 0.0;
  std::int64_t n_valid = 0;
};
CrossEntropySums cross_entropy(const CrossEntropyArgs& args);

struct AttentionBackwardArgs {
  const float* q = nullptr;     // (B, T, H, D) contiguous
  const float* k = nullptr;     // (B, Hkv, S, D) contiguous
  const float* v = nullptr;     // (B, Hkv, S, D) contiguous
  const float* out = nullptr;   // (B, T, H, D) the forward's output
  const float* dout = nullptr;  // (B, T, H, D)
  const float* lse = nullptr;   // (B, H, T) the forward's log-sum-exp (−inf: the row saw no key)
  float* dq = nullptr;          // (B, T, H, D), overwritten
  float* dk = nullptr;          // (B, Hkv, S, D), overwritten
  float* dv = nullptr;          // (B, Hkv, S, D), overwritten
  std::int64_t B = 0, T = 0, H = 0, Hkv = 0, D = 0, S = 0;
  std::int64_t q_pos_offset = 0;
  const std::int32_t* segment_ids = nullptr;  // (B, T) or null; with them S == T and q_pos_offset == 0
  float scale = 0.0f;
  bool bf16_products = false;  // every operand of the tile products rounded to bf16, as in the forward
};
void attention_backward(const AttentionBackwardArgs& args);

/// attention_forward with segment masking: `args` as for cpu::attention_forward with S == T, offset 0
/// and no ragged fields; key j is visible to query t of sequence b when j <= t and segment_ids[b, j] ==
/// segment_ids[b, t] >= 0 (segment_ids (B, T)). A query that sees no key gets output 0, lse −inf.
void attention_forward_segments(const AttentionArgs& args, const std::int32_t* segment_ids);

}  // namespace adapt::ops::cpu
