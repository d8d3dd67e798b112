// Products of a few rows (decoding: one row per sequence) with a weight stored (N, K), for CPUs with AVX2
// and FMA but not AVX-512 (where skinny_avx512.h takes them): each pair of weight vectors is loaded once
// into registers (bf16 widened there) and multiplied into every input row's two accumulators, so the
// weights stream from memory once per product whatever the row count (groups of 4 rows in registers).
// Its translation unit alone is compiled for AVX2 and FMA; callers check skinny_avx2_supported() first
// and keep skinny_cpu.cpp's loops for other CPUs.
#pragma once

#include <cstdint>

namespace adapt::ops::cpu {

/// True when this CPU runs AVX2 and FMA (checked once, with __builtin_cpu_supports; false off x86-64).
bool skinny_avx2_supported();

/// Columns [n_begin, n_end) of c (M, N) = alpha · a (M, K) · wᵀ + beta · c, w stored (N, K) in f32, or
/// in bf16 bit patterns when w_bf16. With beta = 0, c is not read. Each output is summed in the same
/// order whatever M is (two 8-lane sums over k in increasing 16-element steps, the tail zero-filled,
/// added lane by lane, then one fixed horizontal sum), so a row gets the same bits alone or with
/// others, and with any column split. Preconditions: skinny_avx2_supported(), M >= 1.
void skinny_avx2(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M, const void* w,
                 bool w_bf16, std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end, std::int64_t K, float alpha,
                 float beta);

}  // namespace adapt::ops::cpu
