// TEMPORARY (removed once the ragged-batch changes to attention.h / rope.h are committed): the
// declarations of rope_backward, rope_table_fill_positions and attention_backward, which then move
// into their family headers.
#pragma once

#include <cstdint>
#include <span>

#include "ops/attention.h"
#include "ops/rope.h"

namespace adapt::ops {

void rope_backward(Tensor& dx, const Tensor& cos, const Tensor& sin);
void rope_table_fill_positions(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, const Tensor& positions);
/// attention_forward with segment masking (becomes AttentionOptions::segment_ids): q (B, T, H, D),
/// k, v (B, Hkv, T, D), segment_ids (B·T).
void attention_forward_segmented(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                                 std::span<const std::int32_t> segment_ids, const AttentionOptions& opts = {},
                                 Tensor* lse = nullptr);
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionOptions& opts = {},
                        std::span<const std::int32_t> segment_ids = {});

}  // namespace adapt::ops
