// Packed, cache-blocked f32 GEMM for CPUs with AVX2 and FMA but not AVX-512 (where gemm_avx512.h takes
// the products): gemm_packed_loop.h's loop nest with a 6 x 16 register tile. Its translation unit is
// compiled for AVX2 and FMA; callers check gemm_avx2_supported() first and keep OpenBLAS for other CPUs.
#pragma once

#include <cstdint>

namespace adapt::ops::cpu {

/// True when this CPU runs AVX2 and FMA (checked once, with __builtin_cpu_supports; false off x86-64).
bool gemm_avx2_supported();

/// c (M, N) = alpha · op(a) · op(b) + beta · c on the calling thread, as gemm_avx512 (same arguments,
/// same promises: b in f32 or bf16 bit patterns widened exactly while packing; with beta = 0, c is not
/// read; each element summed in increasing k in blocks of a fixed size whatever M and N are, so the same
/// bits for any split of c into row or column ranges).
/// Precondition: gemm_avx2_supported(), M, N, K >= 1.
void gemm_avx2(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
               std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c, std::int64_t ldc);

}  // namespace adapt::ops::cpu
