// Attention for decoding (one query position per sequence) on CPUs with AVX-512: the query heads of a
// KV group meet the cached keys and values 16 keys at a time, in L1, reading an f32 or bf16 cache in
// place. Its translation unit alone is compiled for AVX-512; cpu::attention_forward calls it when
// gemm_avx512_supported() and the shapes fit (attention_decode_avx512_fits).
#pragma once

#include <cstdint>

#include "ops/cpu/cpu_kernels.h"

namespace adapt::ops::cpu {

/// True when this kernel takes `a`: T = 1 and D a multiple of 16 up to 256.
bool attention_decode_avx512_fits(const AttentionArgs& a);

/// Sequence b, KV group g of a decode step (a.T = 1): every cached key up to the query's position is
/// visible. Scores of 16 keys per vector (the products of each key summed by a fixed 16-to-1 tree),
/// online softmax per tile of kTile keys (softmax_step, attention_cpu.cpp), values accumulated per key.
/// A bf16 cache's rows are widened exactly as they are read, so its result is bit for bit that of an
/// f32 cache holding the same values. Precondition: gemm_avx512_supported(), the fit above.
void attention_decode_avx512(const AttentionArgs& a, std::int64_t b, std::int64_t g);

/// attention_cpu.cpp's online-softmax step (shared): m' = max(m, max s[0..n)), p = e^(s − m'),
/// l ← l · e^(m − m') + Σ p, o ← o · e^(m − m'); s[n..tile) = 0.
void softmax_step(float* s, std::int64_t n, std::int64_t tile, float* m, float* l, float* o, std::int64_t D);

/// The end of every online-softmax step (softmax_step, and attention_segments_cpu.cpp's masked one):
/// given the new running max m' and the sum of the tile's probabilities, l ← l · e^(m − m') + sum,
/// o ← o · e^(m − m'), m ← m'.
void softmax_fold(float m_new, float sum, float* m, float* l, float* o, std::int64_t D);

}  // namespace adapt::ops::cpu
