// bf16 dot-product GEMM: gemm_packed_loop.h's loop nest with panels of bf16 pairs (f32 operands rounded
// to nearest even while packing, bf16 ones copied). A packed element is
// 32 bits holding the bf16 values of k = 2p (low half) and 2p + 1 (high half) of one row or column, the
// operand layout of vdpbf16ps; an odd k block ends with a zero high half. The 8 x 48 tile of gemm_avx512.cpp
// (24 zmm accumulators), now one vdpbf16ps per (row, 16 columns, pair of k); a 512 k block (one a panel:
// 8 rows x 256 pairs = 8 KB, L1) and a 768-column block (the packed b block: 768 KB, L2).
#include "ops/cpu/gemm_avx512_bf16.h"

#include "ops/cpu/avx512_loads.h"
#include "ops/cpu/gemm_avx512.h"
#include "ops/cpu/gemm_packed_loop.h"

#include <algorithm>

namespace adapt::ops::cpu {

namespace {

constexpr int kMR = 8;             // rows of a register tile
constexpr int kNR = 48;            // columns of a register tile
constexpr int kNV = kNR / 16;      // zmm vectors per tile row
constexpr std::int64_t kKC = 512;  // k block (256 pairs)
constexpr std::int64_t kNC = 768;  // column block
constexpr std::int64_t kMC = 64;   // rows of a transposed a packed at once
static_assert(kMR == kGemmAvx512RowAlign && kGemmAvx512ColAlign == 16,
              "the split alignment gemm_avx512_bf16.h promises");
static_assert(kNV == 3 && kNC % kNR == 0 && kMC % kMR == 0 && kKC % 32 == 0, "blocking");
static_assert(kNC == kGemmAvx512Bf16PackedMaxN && kKC == kGemmAvx512Bf16PackedMaxK, "one block packs whole");

// 16 consecutive values as bf16 bit patterns (lanes outside `mask` zero): f32 rounded to nearest even.
inline __m256i bf16x16(const float* p, __mmask16 mask) {
  return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, p)));
}
inline __m256i bf16x16(const std::uint16_t* p, __mmask16 mask) { return _mm256_maskz_loadu_epi16(mask, p); }

// 32 consecutive values of k as 16 pair elements (lanes past n values zero).
inline __m512 pairs32(const float* p, std::int64_t n) {
  const __m512i lo = _mm512_castsi256_si512(bf16x16(p, first_lanes(n)));
  return _mm512_castsi512_ps(_mm512_inserti64x4(lo, bf16x16(p + 16, first_lanes(n - 16)), 1));
}
inline __m512 pairs32(const std::uint16_t* p, std::int64_t n) {
  const __mmask32 mask = n >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << std::max<std::int64_t>(n, 0)) - 1u);
  return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mask, p));
}

// dst[p · ld + i] = the pair (src[i · lds + 2p], src[i · lds + 2p + 1]) for i < rows (<= 16), 2p < kc;
// 0 for rows <= i < width (<= 16). Rows of pairs are 32-bit lanes, transposed 16 x 16 in registers.
template <typename Src>
void pack_transposed_pairs(std::uint32_t* dst, std::int64_t ld, int width, const Src* src, std::int64_t lds, int rows,
                           std::int64_t kc) {
  const __mmask16 store_mask = first_lanes(width);
  for (std::int64_t k0 = 0; k0 < kc; k0 += 32) {
    const std::int64_t kn = std::min<std::int64_t>(32, kc - k0), pn = (kn + 1) / 2;
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? pairs32(src + i * lds + k0, kn) : _mm512_setzero_ps();
    transpose16(r);
    for (std::int64_t p = 0; p < pn; ++p)
      _mm512_mask_storeu_ps(reinterpret_cast<float*>(dst + (k0 / 2 + p) * ld), store_mask, r[p]);
  }
}

// Panels of `width` columns of pairs from a row-major src (kc rows of k, `cols` columns used): panel q
// gets dst[q · kw · width + p · width + j] = (src[2p · lds + q · width + j], src[(2p + 1) · lds + ...]),
// kw = ceil(kc / 2), zero past `cols` and past row kc. Walks each pair of source rows once.
template <typename Src>
void pack_rows_to_pair_panels(std::uint32_t* dst, int width, const Src* src, std::int64_t lds, std::int64_t cols,
                              std::int64_t kc) {
  const std::int64_t n_panels = (cols + width - 1) / width, kw = (kc + 1) / 2;
  for (std::int64_t p = 0; p < kw; ++p) {
    const Src* r0 = src + 2 * p * lds;
    const bool has_r1 = 2 * p + 1 < kc;
    for (std::int64_t q = 0; q < n_panels; ++q) {
      std::uint32_t* d = dst + q * kw * width + p * width;
      for (int v = 0; v * 16 < width; ++v) {
        const std::int64_t j = q * width + v * 16;
        const __mmask16 m = first_lanes(cols - j);
        const __m512i lo = _mm512_cvtepu16_epi32(bf16x16(r0 + j, m));
        const __m512i hi = has_r1 ? _mm512_cvtepu16_epi32(bf16x16(r0 + lds + j, m)) : _mm512_setzero_si512();
        const __m512i pairs = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
        _mm512_mask_storeu_epi32(d + v * 16, first_lanes(width - v * 16), pairs);
      }
    }
  }
}

// c (mr x nr tile) = alpha · (a panel · b panel) + beta · c over kw pairs of k: a panel ap[p · kMR + i],
// b panel bp[p · kNR + j] (64-byte aligned), pair elements; NV as in gemm_avx512.cpp's micro-kernel.
template <int NV>
void micro_kernel(std::int64_t kw, const std::uint32_t* __restrict ap, const std::uint32_t* __restrict bp, float* c,
                  std::int64_t ldc, int mr, int nr, float alpha, float beta) {
  __m512 acc[kMR][NV];
  for (int i = 0; i < kMR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int i = 0; i < kMR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * NV - 1), _MM_HINT_T0);
  }
  for (std::int64_t p = 0; p < kw; ++p) {
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = reinterpret_cast<__m512bh>(_mm512_load_si512(bp + p * kNR + v * 16));
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const __m512bh ai = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(ap[p * kMR + i])));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, b[v]);
    }
  }
  store_tile<kMR, NV>(acc, c, ldc, mr, nr, alpha, beta);
}

struct Avx512Bf16 {
  static constexpr int kMR = cpu::kMR, kNR = cpu::kNR;
  static constexpr std::int64_t kKC = cpu::kKC, kNC = cpu::kNC;
  static constexpr std::int64_t kMC = cpu::kMC;
  static constexpr bool kBPanelInL1 = false;  // an a panel (8 KB) stays in L1 while the b panels stream
  static constexpr int kKPack = 2;            // pairs of k per element
  static bool a_in_place(std::int64_t /*N*/, bool /*trans_a*/) { return false; }  // a is always packed (rounded)

  static std::uint32_t* words(float* p) { return reinterpret_cast<std::uint32_t*>(p); }

  template <typename Src>
  static void pack_a(float* dst, const Src* a, std::int64_t lda, int mr, std::int64_t kc) {
    pack_transposed_pairs(words(dst), kMR, kMR, a, lda, mr, kc);
  }
  template <typename Src>
  static void pack_b_transposed(float* dst, const Src* b, std::int64_t ldb, int nr, std::int64_t kc) {
    for (int v = 0; v < kNV; ++v) {
      const int rows = std::clamp(nr - 16 * v, 0, 16);
      pack_transposed_pairs(words(dst) + 16 * v, kNR, 16, rows > 0 ? b + 16 * v * ldb : b, ldb, rows, kc);
    }
  }
  template <typename Src>
  static void pack_rows_to_panels(float* dst, int width, const Src* src, std::int64_t lds, std::int64_t cols,
                                  std::int64_t kc) {
    pack_rows_to_pair_panels(words(dst), width, src, lds, cols, kc);
  }
  static void tile(std::int64_t kc, const float* ap, std::int64_t /*rs: 0, packed*/, std::int64_t /*ks*/,
                   const float* bp, float* c, std::int64_t ldc, int mr, int nr, float alpha, float beta) {
    const auto* a = reinterpret_cast<const std::uint32_t*>(ap);
    const auto* b = reinterpret_cast<const std::uint32_t*>(bp);
    const std::int64_t kw = (kc + 1) / 2;
    if (nr > 32) {
      micro_kernel<3>(kw, a, b, c, ldc, mr, nr, alpha, beta);
    } else if (nr > 16) {
      micro_kernel<2>(kw, a, b, c, ldc, mr, nr, alpha, beta);
    } else {
      micro_kernel<1>(kw, a, b, c, ldc, mr, nr, alpha, beta);
    }
  }
};

}  // namespace

void gemm_avx512_bf16(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                      const float* a, std::int64_t lda, const std::uint16_t* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc) {
  gemm_packed<Avx512Bf16>(trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_avx512_bf16(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                      const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc) {
  gemm_packed<Avx512Bf16>(trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
}

std::int64_t gemm_avx512_bf16_packed_b_floats(std::int64_t N, std::int64_t K) {
  return packed_b_block_floats<Avx512Bf16>(N, K);
}

void gemm_avx512_bf16_pack_b(bool trans_b, std::int64_t N, std::int64_t K, const void* b, bool b_bf16, std::int64_t ldb,
                             float* dst) {
  pack_b_block<Avx512Bf16>(trans_b, b, b_bf16, ldb, N, K, dst);
}

std::int64_t gemm_avx512_bf16_packed_a_floats(std::int64_t M, std::int64_t K) {
  return packed_a_floats<Avx512Bf16>(M, K);
}

void gemm_avx512_bf16_pack_a(std::int64_t M, std::int64_t K, const float* a, std::int64_t lda, float* dst) {
  pack_a_rows<Avx512Bf16>(false, a, lda, M, K, dst);
}

void gemm_avx512_bf16_packed(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
                             std::int64_t lda, const float* packed_a, const float* packed_b, float beta, float* c,
                             std::int64_t ldc) {
  gemm_packed<Avx512Bf16>(false, false, M, N, K, alpha, a, lda, static_cast<const std::uint16_t*>(nullptr), 0, beta, c,
                          ldc, packed_b, packed_a);
}

}  // namespace adapt::ops::cpu
