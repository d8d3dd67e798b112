// Packed, cache-blocked f32 GEMM for AVX2 and FMA: gemm_packed_loop.h's loop nest with a 6 x 16 register
// tile (12 ymm accumulators, two vectors of b and one broadcast of a: 15 of the 16 registers; an FMA
// waits 4 cycles for its accumulator and two issue per cycle, so 12 chains keep both units busy). The
// BLIS order: a b panel (256 k x 16 columns: 16 KB) stays in L1 while 72 rows of a (72 KB, in L2) pass
// by it; the packed b block (256 x 1536: 1.5 MB) sits in L3. Rows of an a stored (M, K) are read where
// they are, not packed: 6 sequential streams the prefetchers follow, and no packing pass, which on
// products of few columns (LoRA's, attention's tiles) cost as much as the arithmetic. Rows of a weight
// stored (N, K) are transposed 8 x 8 in registers while packing, bf16 widened on the way (exact: a
// 16-bit shift). Measured on Zen 3 (32 KB L1d, 512 KB L2): docs/PERFORMANCE.md.
#include "ops/cpu/gemm_avx2.h"

#include "ops/cpu/avx2_loads.h"
#include "ops/cpu/gemm_packed_loop.h"

#include <immintrin.h>

#include <algorithm>

namespace adapt::ops::cpu {

namespace {

// In-register transpose: r[i] lane j becomes r[j] lane i.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {  // u[4g + c], each 128-bit half: column c (of 4) of rows 4g .. 4g + 3
    u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

// Up to 8 values of a row from `p`, `avail` of them present (zeros past them; nothing past them read).
template <typename Src>
inline __m256 load_row8(const Src* p, std::int64_t avail) {
  return avail >= 8 ? load8(p) : load8_first(p, avail);
}

// The first N lanes of x to dst (N = 8, 6 or 4: the widths packing writes). Not _mm256_maskstore_ps,
// which AMD CPUs run an order of magnitude slower than plain stores.
template <int N>
inline void store_first(float* dst, __m256 x) {
  static_assert(N == 8 || N == 6 || N == 4, "a width that packing writes");
  if constexpr (N == 8) {
    _mm256_storeu_ps(dst, x);
  } else {
    _mm_storeu_ps(dst, _mm256_castps256_ps128(x));
    if constexpr (N == 6) _mm_storel_pi(reinterpret_cast<__m64*>(dst + 4), _mm256_extractf128_ps(x, 1));
  }
}

// dst[k · ld + i] = src[i · lds + k] for i < rows (<= 8), k < kc; 0 for rows <= i < Width (<= 8).
template <int Width, typename Src>
void pack_transposed(float* dst, std::int64_t ld, const Src* src, std::int64_t lds, int rows, std::int64_t kc) {
  for (std::int64_t k0 = 0; k0 < kc; k0 += 8) {
    const std::int64_t kn = std::min<std::int64_t>(8, kc - k0);
    __m256 r[8];
    for (int i = 0; i < 8; ++i) r[i] = i < rows ? load_row8(src + i * lds + k0, kn) : _mm256_setzero_ps();
    transpose8(r);
    for (std::int64_t k = 0; k < kn; ++k) store_first<Width>(dst + (k0 + k) * ld, r[k]);
  }
}

constexpr int kMR = 6;        // rows of a register tile
constexpr int kNR = 16;       // columns of a register tile
constexpr int kNV = kNR / 8;  // ymm vectors per tile row
static_assert(kNV == 2 && kMR <= 8, "the micro-kernel dispatch assumes 2 vectors; a panel is packed 8 x 8");
static_assert(kMR * kNV + kNV + 1 <= 16, "the tile, one row of b and a broadcast must fit 16 ymm registers");

// c (mr x nr tile, row stride ldc) = alpha · (a panel · b panel) + beta · c; beta = 0 does not read c.
// a panel: kc x kMR (ap[k · kMR + i]); b panel: kc x kNR (bp[k · kNR + j]), 32-byte aligned, of which
// the first NV vectors are used (NV = 1 for the last tile of a row when nr <= 8; the per-element
// arithmetic is the same for every NV).
// alpha and beta come through memory (scale[0], scale[1]), read after the k loop: as arguments they
// arrive in registers, and GCC 12 then keeps them there and spills a vector of b in the loop instead.
// InPlace: a is not a packed panel but kMR rows of a row-major a read where they are (ap[i · lda + k]; rows
// past mr read row 0 again, their sums not stored).
template <int NV, bool InPlace>
[[gnu::noinline]] void micro_kernel(std::int64_t kc, const float* __restrict ap, std::int64_t lda,
                                    const float* __restrict bp, float* c, std::int64_t ldc, int mr, int nr,
                                    const float* scale) {
  const float* a_row[kMR];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) a_row[i] = ap + (i < mr ? i : 0) * lda;
  __m256 acc[kMR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
  for (int i = 0; i < kMR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 8 * NV - 1), _MM_HINT_T0);
  }
#pragma GCC unroll 4
  for (std::int64_t k = 0; k < kc; ++k) {
    __m256 b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) b[v] = _mm256_load_ps(bp + k * kNR + v * 8);
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(InPlace ? a_row[i] + k : ap + k * kMR + i);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, b[v], acc[i][v]);
    }
  }
  const float alpha = scale[0], beta = scale[1];
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (mr == kMR && nr == 8 * NV) {
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        float* p = c + i * ldc + v * 8;
        const __m256 base = beta == 0.0f ? _mm256_setzero_ps() : _mm256_mul_ps(vb, _mm256_loadu_ps(p));
        _mm256_storeu_ps(p, _mm256_fmadd_ps(va, acc[i][v], base));
      }
    }
    return;
  }
  // An edge tile: through memory, indexed by constants only (a run-time row index into acc would keep
  // the accumulators in memory for the whole k loop).
  alignas(32) float sums[kMR][8 * NV];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm256_store_ps(sums[i] + v * 8, acc[i][v]);
  }
  for (int i = 0; i < mr; ++i) {
    for (int v = 0; v < NV; ++v) {
      const __m256i m = first_lanes8(nr - v * 8);
      float* p = c + i * ldc + v * 8;
      const __m256 base = beta == 0.0f ? _mm256_setzero_ps() : _mm256_mul_ps(vb, _mm256_maskload_ps(p, m));
      _mm256_maskstore_ps(p, m, _mm256_fmadd_ps(va, _mm256_load_ps(sums[i] + v * 8), base));
    }
  }
}

struct Avx2 {
  static constexpr int kMR = cpu::kMR, kNR = cpu::kNR;
  static constexpr std::int64_t kKC = 256;   // k block: one b panel is kKC x kNR floats
  static constexpr std::int64_t kNC = 1536;  // column block: the packed b block is kKC x kNC floats
  static constexpr std::int64_t kMC = 72;    // rows of a per block (kMC x kKC = 72 KB: L2)
  static constexpr bool kBPanelInL1 = true;  // a b panel stays in L1 while the rows of a stream
  static constexpr int kKPack = 1;           // f32 panels: one value of k per element
  // Rows of an a stored (M, K) are read where they are; an a stored (K, M) is packed.
  static bool a_in_place(std::int64_t /*N*/, bool trans_a) { return !trans_a; }

  template <typename Src>
  static void pack_a(float* dst, const Src* a, std::int64_t lda, int mr, std::int64_t kc) {
    pack_transposed<kMR>(dst, kMR, a, lda, mr, kc);
  }
  template <typename Src>
  static void pack_b_transposed(float* dst, const Src* b, std::int64_t ldb, int nr, std::int64_t kc) {
    for (int v = 0; v < kNV; ++v) {
      const int rows = std::clamp(nr - 8 * v, 0, 8);
      pack_transposed<8>(dst + 8 * v, kNR, rows > 0 ? b + 8 * v * ldb : b, ldb, rows, kc);
    }
  }
  // Panels of `width` (kNR or kMR) columns from a row-major src (kc rows, `cols` columns used): panel p gets
  // dst[p · kc · width + k · width + j] = src[k · lds + p · width + j], 0 for columns past `cols` up to the
  // end of the last panel. Walks each source row once from left to right.
  template <typename Src>
  static void pack_rows_to_panels(float* dst, int width, const Src* src, std::int64_t lds, std::int64_t cols,
                                  std::int64_t kc) {
    if (width == kNR) return rows_to_panels<kNR>(dst, src, lds, cols, kc);
    rows_to_panels<kMR>(dst, src, lds, cols, kc);
  }
  template <int Width, typename Src>
  static void rows_to_panels(float* dst, const Src* src, std::int64_t lds, std::int64_t cols, std::int64_t kc) {
    const std::int64_t n_panels = (cols + Width - 1) / Width;
    for (std::int64_t k = 0; k < kc; ++k) {
      for (std::int64_t p = 0; p < n_panels; ++p) {
        float* d = dst + p * kc * Width + k * Width;
        const Src* s = src + k * lds + p * Width;
        const std::int64_t avail = cols - p * Width;
        if constexpr (Width == kNR) {
          store_first<8>(d, load_row8(s, avail));
          store_first<8>(d + 8, load_row8(s + 8, avail - 8));
        } else {
          store_first<Width>(d, load_row8(s, std::min<std::int64_t>(avail, Width)));
        }
      }
    }
  }
  // a: a packed panel (lda = 0), or kMR rows of a row-major a read in place (row stride lda).
  static void tile(std::int64_t kc, const float* a, std::int64_t lda, std::int64_t /*ks: 1*/, const float* bp, float* c,
                   std::int64_t ldc, int mr, int nr, float alpha, float beta) {
    const float scale[2] = {alpha, beta};
    if (lda == 0) {
      if (nr > 8) return micro_kernel<2, false>(kc, a, 0, bp, c, ldc, mr, nr, scale);
      return micro_kernel<1, false>(kc, a, 0, bp, c, ldc, mr, nr, scale);
    }
    if (nr > 8) return micro_kernel<2, true>(kc, a, lda, bp, c, ldc, mr, nr, scale);
    return micro_kernel<1, true>(kc, a, lda, bp, c, ldc, mr, nr, scale);
  }
};

}  // namespace

void gemm_avx2(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
               std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  if (b_bf16) {
    gemm_packed<Avx2>(trans_a, trans_b, M, N, K, alpha, a, lda, static_cast<const std::uint16_t*>(b), ldb, beta, c,
                      ldc);
  } else {
    gemm_packed<Avx2>(trans_a, trans_b, M, N, K, alpha, a, lda, static_cast<const float*>(b), ldb, beta, c, ldc);
  }
}

}  // namespace adapt::ops::cpu
