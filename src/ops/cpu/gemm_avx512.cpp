// Packed, cache-blocked f32 GEMM for AVX-512: gemm_packed_loop.h's loop nest with an 8 x 48 register
// tile (24 zmm accumulators, one FMA per (row, 16 columns, k)), a 256 k block (one a panel: 8 KB, L1)
// and a 768-column block (the packed b block: 768 KB, L2). Rows of a weight stored (N, K) are transposed
// 16 x 16 in registers while packing, bf16 widened on the way (exact: a 16-bit shift). Tile and block
// sizes were measured on Zen 4 (one 512-bit FMA per cycle, 32 KB L1d, 1 MB L2), see docs/PERFORMANCE.md.
#include "ops/cpu/gemm_avx512.h"

#include "ops/cpu/avx512_loads.h"
#include "ops/cpu/gemm_packed_loop.h"

#include <algorithm>

namespace adapt::ops::cpu {

namespace {

constexpr int kMR = 8;             // rows of a register tile
constexpr int kNR = 48;            // columns of a register tile
constexpr int kNV = kNR / 16;      // zmm vectors per tile row
constexpr std::int64_t kKC = 256;  // k block: one a panel is kMR x kKC floats
constexpr std::int64_t kNC = 768;  // column block: the packed b block is kKC x kNC floats
constexpr std::int64_t kMC = 64;   // rows of a transposed a packed at once (kMC x kKC = 64 KB)
static_assert(kMR == kGemmAvx512RowAlign && kGemmAvx512ColAlign == 16, "the split alignment promised in the header");
static_assert(kNV == 3 && kMR <= 16 && kNC % kNR == 0 && kMC % kMR == 0,
              "blocking (the micro-kernel dispatch assumes 3 vectors)");
static_assert(kMR * kNV + kNV + 1 <= 32, "the tile, one row of b and a broadcast must fit 32 zmm registers");
static_assert(kNC == kGemmAvx512PackedMaxN && kKC == kGemmAvx512PackedMaxK, "one block packs whole");

// dst[k · ld + i] = src[i · lds + k] for i < rows (<= 16), k < kc; 0 for rows <= i < width (<= 16).
// Reads 16 x 16 blocks and transposes them in registers.
template <typename Src>
void pack_transposed(float* dst, std::int64_t ld, int width, const Src* src, std::int64_t lds, int rows,
                     std::int64_t kc) {
  const __mmask16 store_mask = first_lanes(width);
  for (std::int64_t k0 = 0; k0 < kc; k0 += 16) {
    const std::int64_t kn = std::min<std::int64_t>(16, kc - k0);
    const __mmask16 load_mask = first_lanes(kn);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? load16(src + i * lds + k0, load_mask) : _mm512_setzero_ps();
    transpose16(r);
    for (std::int64_t k = 0; k < kn; ++k) _mm512_mask_storeu_ps(dst + (k0 + k) * ld, store_mask, r[k]);
  }
}

// Panels of `width` columns from a row-major src (kc rows, `cols` columns used): panel p gets
// dst[p · kc · width + k · width + j] = src[k · lds + p · width + j], 0 for columns past `cols` up to the
// end of the last panel. Walks each source row once from left to right (a panel-by-panel walk strides
// down the rows for every panel, which conflicts in L1 when lds is a multiple of 1 KB).
template <typename Src>
void pack_rows_to_panels(float* dst, int width, const Src* src, std::int64_t lds, std::int64_t cols, std::int64_t kc) {
  const std::int64_t n_panels = (cols + width - 1) / width;
  for (std::int64_t k = 0; k < kc; ++k) {
    for (std::int64_t p = 0; p < n_panels; ++p) {
      float* d = dst + p * kc * width + k * width;
      for (int v = 0; v * 16 < width; ++v) {
        const std::int64_t j = p * width + v * 16;
        const __m512 x = load16(src + k * lds + j, first_lanes(cols - j));
        _mm512_mask_storeu_ps(d + v * 16, first_lanes(width - v * 16), x);
      }
    }
  }
}

// c (mr x nr tile, row stride ldc) = alpha · (a · b panel) + beta · c; beta = 0 does not read c.
// a: a packed panel, kc x kMR (ap[k · kMR + i]), or (InPlace) kMR rows of op(a) read where they are,
// element (i, k) at ap[i · rs + k · ks] (rows of an a stored (M, K): rs = lda, ks = 1; columns of an a
// stored (K, M): rs = 1, ks = lda; rows past mr read row 0, their sums are not stored); b panel: kc x kNR
// (bp[k · kNR + j]), 64-byte aligned, of which the first NV vectors are used: NV < kNV for the last tile
// of a row when nr <= 16 · NV, so that N = 256 costs 5⅓ tiles, not 6 (the per-element arithmetic is the
// same for every NV, packed or in place).
template <int NV, bool InPlace>
void micro_kernel(std::int64_t kc, const float* __restrict ap, std::int64_t rs, std::int64_t ks,
                  const float* __restrict bp, float* c, std::int64_t ldc, int mr, int nr, float alpha, float beta) {
  const float* a_row[kMR];
  for (int i = 0; i < kMR; ++i) a_row[i] = ap + (i < mr ? i : 0) * rs;
  __m512 acc[kMR][NV];
  for (int i = 0; i < kMR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int i = 0; i < kMR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * NV - 1), _MM_HINT_T0);
  }
  for (std::int64_t k = 0; k < kc; ++k) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm512_load_ps(bp + k * kNR + v * 16);
    const std::int64_t ak = k * ks;
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const __m512 ai = _mm512_set1_ps(InPlace ? a_row[i][ak] : ap[k * kMR + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, b[v], acc[i][v]);
    }
  }
  store_tile<kMR, NV>(acc, c, ldc, mr, nr, alpha, beta);
}

template <bool InPlace>
void tile_of_width(std::int64_t kc, const float* a, std::int64_t rs, std::int64_t ks, const float* bp, float* c,
                   std::int64_t ldc, int mr, int nr, float alpha, float beta) {
  if (nr > 32) {
    micro_kernel<3, InPlace>(kc, a, rs, ks, bp, c, ldc, mr, nr, alpha, beta);
  } else if (nr > 16) {
    micro_kernel<2, InPlace>(kc, a, rs, ks, bp, c, ldc, mr, nr, alpha, beta);
  } else {
    micro_kernel<1, InPlace>(kc, a, rs, ks, bp, c, ldc, mr, nr, alpha, beta);
  }
}

struct Avx512 {
  static constexpr int kMR = cpu::kMR, kNR = cpu::kNR;
  static constexpr std::int64_t kKC = cpu::kKC, kNC = cpu::kNC;
  static constexpr std::int64_t kMC = cpu::kMC;
  static constexpr bool kBPanelInL1 = false;  // an a panel (8 KB) stays in L1 while the b panels stream
  static constexpr int kKPack = 1;            // f32 panels: one value of k per element
  // op(a) is read where it is (rows of an a stored (M, K), or columns of one stored (K, M)) when op(b) is
  // one panel wide (N <= kNR, e.g. LoRA's rank-16 products): each packed a panel would meet one b panel
  // only, so packing would be a pass over a for nothing (1.4-1.6x on 2048 x 16 x 768 and x 2048, one
  // thread on Zen 4). Otherwise a is packed: each panel then serves N / kNR b panels, and rows read in
  // place at a stride of 4 KB multiples conflict in L1 (0.8x on 2048 x 768 x 2048).
  static bool a_in_place(std::int64_t N, bool /*trans_a*/) { return N <= kNR; }
  template <typename Src>
  static void pack_a(float* dst, const Src* a, std::int64_t lda, int mr, std::int64_t kc) {
    pack_transposed(dst, kMR, kMR, a, lda, mr, kc);
  }
  template <typename Src>
  static void pack_b_transposed(float* dst, const Src* b, std::int64_t ldb, int nr, std::int64_t kc) {
    for (int v = 0; v < kNV; ++v) {
      const int rows = std::clamp(nr - 16 * v, 0, 16);
      pack_transposed(dst + 16 * v, kNR, 16, rows > 0 ? b + 16 * v * ldb : b, ldb, rows, kc);
    }
  }
  template <typename Src>
  static void pack_rows_to_panels(float* dst, int width, const Src* src, std::int64_t lds, std::int64_t cols,
                                  std::int64_t kc) {
    cpu::pack_rows_to_panels(dst, width, src, lds, cols, kc);
  }
  static void tile(std::int64_t kc, const float* a, std::int64_t rs, std::int64_t ks, const float* bp, float* c,
                   std::int64_t ldc, int mr, int nr, float alpha, float beta) {
    if (rs == 0) return tile_of_width<false>(kc, a, 0, 0, bp, c, ldc, mr, nr, alpha, beta);
    tile_of_width<true>(kc, a, rs, ks, bp, c, ldc, mr, nr, alpha, beta);
  }
};

}  // namespace

void gemm_avx512(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc) {
  if (b_bf16) {
    gemm_packed<Avx512>(trans_a, trans_b, M, N, K, alpha, a, lda, static_cast<const std::uint16_t*>(b), ldb, beta, c,
                        ldc);
  } else {
    gemm_packed<Avx512>(trans_a, trans_b, M, N, K, alpha, a, lda, static_cast<const float*>(b), ldb, beta, c, ldc);
  }
}

std::int64_t gemm_avx512_packed_b_floats(std::int64_t N, std::int64_t K) { return packed_b_block_floats<Avx512>(N, K); }

void gemm_avx512_pack_b(bool trans_b, std::int64_t N, std::int64_t K, const void* b, bool b_bf16, std::int64_t ldb,
                        float* dst) {
  pack_b_block<Avx512>(trans_b, b, b_bf16, ldb, N, K, dst);
}

std::int64_t gemm_avx512_packed_a_floats(std::int64_t M, std::int64_t K) { return packed_a_floats<Avx512>(M, K); }

void gemm_avx512_pack_a(std::int64_t M, std::int64_t K, const float* a, std::int64_t lda, float* dst) {
  pack_a_rows<Avx512>(false, a, lda, M, K, dst);
}

void gemm_avx512_packed(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a, std::int64_t lda,
                        const float* packed_a, const float* packed_b, float beta, float* c, std::int64_t ldc) {
  gemm_packed<Avx512>(false, false, M, N, K, alpha, a, lda, static_cast<const float*>(nullptr), 0, beta, c, ldc,
                      packed_b, packed_a);
}

}  // namespace adapt::ops::cpu
