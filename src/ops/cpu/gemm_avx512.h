// Packed, cache-blocked f32 GEMM for CPUs with AVX-512F (the GotoBLAS/BLIS structure: panels of
// op(a) and op(b) copied into aligned buffers, an 8 x 48 register-blocked FMA micro-kernel). Its
// translation unit is the only one compiled with -mavx512f; callers check gemm_avx512_supported()
// first and keep OpenBLAS for other CPUs.
#pragma once

#include <cstdint>

namespace adapt::ops::cpu {

/// Where callers splitting c across threads should cut: rows at multiples of the 8-row register tile,
/// columns at multiples of one 16-float vector (the 8 x 48 tile has 16- and 32-column variants for the
/// last tile of a range, so a 16-aligned cut wastes no work).
constexpr int kGemmAvx512RowAlign = 8;
constexpr int kGemmAvx512ColAlign = 16;

/// True when this CPU runs AVX-512F/BW/VL and FMA (checked once, with __builtin_cpu_supports).
bool gemm_avx512_supported();

/// c (M, N) = alpha · op(a) · op(b) + beta · c on the calling thread, row-major, as cpu::gemm: a is
/// (M, K), or (K, M) when trans_a; b is (K, N), or (N, K) when trans_b, in f32 or in bf16 bit patterns
/// (b_bf16: widened exactly while packing, all arithmetic f32). With beta = 0, c is not read.
/// Each element is summed in increasing k in blocks of a fixed size, whatever M and N are, so a caller
/// may split c into column or row ranges across threads and get the same bits as one call.
/// Precondition: gemm_avx512_supported(), M, N, K >= 1.
void gemm_avx512(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc);

/// One op(b) read by many products, or one a by several, packed once (as gemm_avx512_bf16.h's packed
/// products, for f32 arithmetic): gemm_avx512_pack_b packs op(b) (N <= kGemmAvx512PackedMaxN, K <=
/// kGemmAvx512PackedMaxK; f32 copied, bf16 (b_bf16) widened) into gemm_avx512_packed_b_floats(N, K) floats at a
/// 64-byte aligned dst; gemm_avx512_pack_a packs a (M, K) row-major into gemm_avx512_packed_a_floats(M, K)
/// floats; gemm_avx512_packed is gemm_avx512(false, trans_b, M, N, K, ...) on them (packed_a may be null:
/// the call packs a; where gemm_avx512 reads a in place, N <= 48, it does so here too, so a and lda stay
/// valid arguments): the same bits.
constexpr std::int64_t kGemmAvx512PackedMaxN = 768;
constexpr std::int64_t kGemmAvx512PackedMaxK = 256;
std::int64_t gemm_avx512_packed_b_floats(std::int64_t N, std::int64_t K);
void gemm_avx512_pack_b(bool trans_b, std::int64_t N, std::int64_t K, const void* b, bool b_bf16, std::int64_t ldb,
                        float* dst);
std::int64_t gemm_avx512_packed_a_floats(std::int64_t M, std::int64_t K);
void gemm_avx512_pack_a(std::int64_t M, std::int64_t K, const float* a, std::int64_t lda, float* dst);
void gemm_avx512_packed(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a, std::int64_t lda,
                        const float* packed_a, const float* packed_b, float beta, float* c, std::int64_t ldc);

}  // namespace adapt::ops::cpu
