// Products of a few rows (decoding: one row per sequence) with a weight stored (N, K), for CPUs with
// AVX-512F/BW/VL: each weight vector is loaded once into a register (bf16 widened there) and multiplied
// into every input row's accumulator, so the weights stream from memory once per product however many
// rows there are (groups of 8 rows in registers). Its translation unit alone is compiled for AVX-512; callers check
// gemm_avx512_supported() first and keep skinny_cpu.cpp's loops for other CPUs.
#pragma once

#include <cstdint>

namespace adapt::ops::cpu {

/// Rows at most per call. Beyond ~32 rows the packed kernel (gemm_avx512.h), which reuses each
/// loaded input across a 48-column tile, does fewer loads per FMA.
constexpr std::int64_t kSkinnyAvx512MaxRows = 32;

/// Columns [n_begin, n_end) of c (M, N) = alpha · a (M, K) · wᵀ + beta · c, w stored (N, K) in f32, or
/// in bf16 bit patterns when w_bf16. With beta = 0, c is not read. Each output is summed in the same
/// order whatever M is (one 16-lane sum over k in increasing 16-element chunks, the tail masked, then
/// one fixed horizontal sum), so a row gets the same bits alone or with up to 31 others, and with
/// any column split. Preconditions: gemm_avx512_supported(), 1 <= M <= kSkinnyAvx512MaxRows.
void skinny_avx512(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M, const void* w,
                   bool w_bf16, std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end, std::int64_t K, float alpha,
                   float beta);

}  // namespace adapt::ops::cpu
