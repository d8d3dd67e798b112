// Rotary position embedding, HF convention ("rotate_half": element j pairs with j + D/2, SPEC §3.2).
// The angles come from model::rope_inv_freq (default, linear or llama3 scaling), so the op itself
// knows nothing about scaling. cos/sin tables cover the positions of one call (KV-cache offset
// included), so no table of max_position_embeddings rows is ever built. A batch whose sequences sit at
// different lengths (a ragged KV cache) gets one table per sequence; packed training rows, whose
// positions restart at each document, get one table row per token. The backward is the inverse
// rotation (rope_backward.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tensor/tensor.h"

namespace adapt::ops {

/// cos (P, D/2), sin (P, D/2) of angle = p · inv_freq[i] for p = pos_begin .. pos_begin + P - 1. The
/// product is rounded to f32 first, as HF does, then cos/sin are taken in double and rounded.
void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, std::int64_t pos_begin);

/// Per-sequence tables: cos, sin (B, P, D/2) where row b covers positions pos_begin[b] .. pos_begin[b] + P - 1
/// (pos_begin has B entries, each >= 0). Row b holds exactly what the single-table overload gives for
/// pos_begin[b].
void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq,
                     std::span<const std::int64_t> pos_begin);

/// In place, x (B, T, Hx, D) (any Hx: query or key heads): for each head and pair j < D/2 at the
/// token's angle θ = table row t:
///   x[j] ← x[j]·cosθ − x[j+D/2]·sinθ,   x[j+D/2] ← x[j+D/2]·cosθ + x[j]·sinθ.
/// cos/sin from rope_table_fill: (T, D/2) when every sequence of the batch is at the same positions,
/// or (B, T, D/2) with one table per sequence.
void rope_forward(Tensor& x, const Tensor& cos, const Tensor& sin);

/// Per-token tables: cos, sin (.., D/2) with the positions' shape (e.g. (B, T) → (B, T, D/2)): row i
/// holds exactly what rope_table_fill gives for position positions[i] (i32 or i64, each >= 0). Used
/// with rope_forward / rope_backward as a per-sequence table.
void rope_table_fill_positions(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, const Tensor& positions);

/// The backward of rope_forward, in place: dx (B, T, Hx, D) holds the gradient of the rotated x and
/// receives that of its input, the rotation by −θ (SPEC §3.8):
///   dx[j] ← g[j]·cosθ + g[j+D/2]·sinθ,   dx[j+D/2] ← g[j+D/2]·cosθ − g[j]·sinθ.
/// cos/sin: the forward's tables, (T, D/2) or (B, T, D/2).
void rope_backward(Tensor& dx, const Tensor& cos, const Tensor& sin);

}  // namespace adapt::ops
