// Packed GEMM on bf16 dot products (AVX512_BF16's vdpbf16ps: two bf16 products added to an f32 sum per
// lane), for products by bf16 weights when ops::cpu_matmul_dtype() is bf16: the activation operand is
// rounded to bf16 while it is packed, the weights are used as stored, the sums are f32 — the arithmetic
// of the GPU path's bf16 GEMMs, at twice the multiply-adds per instruction of f32 FMA. Its translation
// unit alone is compiled with -mavx512bf16; callers check gemm_avx512_bf16_supported() first.
#pragma once

#include <cstdint>

namespace adapt::ops::cpu {

/// True when this CPU runs AVX-512F/BW/VL and AVX512_BF16 (checked once, with __builtin_cpu_supports):
/// Zen 4 and later, Cooper Lake, Sapphire Rapids and later.
bool gemm_avx512_bf16_supported();

/// c (M, N) = alpha · bf16(op(a)) · op(b) + beta · c on the calling thread, row-major: a is f32 (M, K),
/// or (K, M) when trans_a, rounded to bf16 (nearest even) while packing; b holds bf16 bit patterns, (K, N)
/// or (N, K) when trans_b. Products of two bf16 values are exact in f32; each element is summed in f32
/// over pairs of k in increasing order, in blocks of a fixed size, whatever M and N are, so a caller may
/// split c into column or row ranges (at the f32 kernel's alignments, gemm_avx512.h) and get the same
/// bits as one call. With beta = 0, c is not read. Precondition: gemm_avx512_bf16_supported(), M, N, K >= 1.
void gemm_avx512_bf16(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                      const float* a, std::int64_t lda, const std::uint16_t* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc);
/// The same with an f32 b, rounded to bf16 (nearest even) while packing like a: both operands' values
/// are bf16, as in attention's tile products when attention computes in bf16 on the CPU.
void gemm_avx512_bf16(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                      const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc);

/// Products that read one op(b) many times (attention's key and value tiles, read by every query block of
/// a long prefill) can pack it once: gemm_avx512_bf16_pack_b packs op(b) (N <= kGemmAvx512Bf16PackedMaxN
/// columns, K <= kGemmAvx512Bf16PackedMaxK values of k; b stored (N, K) when trans_b, else (K, N); f32
/// values rounded to bf16 as gemm_avx512_bf16 rounds them, bf16 ones (b_bf16) copied) into dst, which holds
/// gemm_avx512_bf16_packed_b_floats(N, K) floats and is 64-byte aligned; gemm_avx512_bf16_packed is then
/// gemm_avx512_bf16(false, trans_b, M, N, K, ...) on those panels: the same bits, without packing b again.
/// Likewise a (M, K) row-major, read by several products with K <= kGemmAvx512Bf16PackedMaxK (a block of
/// queries against every key tile): gemm_avx512_bf16_pack_a into gemm_avx512_bf16_packed_a_floats(M, K)
/// floats, given to gemm_avx512_bf16_packed as packed_a (a and lda are then not read; null: a is packed
/// by the call).
constexpr std::int64_t kGemmAvx512Bf16PackedMaxN = 768;
constexpr std::int64_t kGemmAvx512Bf16PackedMaxK = 512;
std::int64_t gemm_avx512_bf16_packed_b_floats(std::int64_t N, std::int64_t K);
void gemm_avx512_bf16_pack_b(bool trans_b, std::int64_t N, std::int64_t K, const void* b, bool b_bf16, std::int64_t ldb,
                             float* dst);
std::int64_t gemm_avx512_bf16_packed_a_floats(std::int64_t M, std::int64_t K);
void gemm_avx512_bf16_pack_a(std::int64_t M, std::int64_t K, const float* a, std::int64_t lda, float* dst);
void gemm_avx512_bf16_packed(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
                             std::int64_t lda, const float* packed_a, const float* packed_b, float beta, float* c,
                             std::int64_t ldc);

}  // namespace adapt::ops::cpu
