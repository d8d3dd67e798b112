// The loop nest of the packed GEMMs (GotoBLAS/BLIS), shared by gemm_avx512.cpp, gemm_avx2.cpp and
// gemm_avx512_bf16.cpp; each instantiates it with its own `Isa`, so the loops are compiled once per
// instruction set, in the translation unit built for it. Loops, outermost first:
//   jc: kNC columns of c -> pc: kKC of K; pack op(b) into kNR-wide panels (the kKC x kNC block)
//   -> ic: kMC rows; pack op(a) into kMR x kKC panels (or, where Isa::a_in_place(N, trans_a), read op(a)
//   where it is) -> ir, jr (in the order Isa::kBPanelInL1 gives) -> Isa::tile: a kMR x kNR tile of
//   c in registers.
// Packing absorbs every layout (weights stored (N, K) are transposed in registers, bf16 is widened on
// the way, or f32 rounded to bf16 pairs for gemm_avx512_bf16.cpp; edges are zero-padded), so the
// micro-kernel sees one format. Every element of every tile (edge tiles included) is summed in
// increasing k, in blocks of kKC: results do not depend on how a caller splits c. Include only from
// the packed GEMMs' files (gemm_avx512.cpp, gemm_avx2.cpp, gemm_avx512_bf16.cpp).
#pragma once

#include <algorithm>
#include <cstdint>

namespace adapt::ops::cpu {

/// 64-byte aligned scratch of one thread, grown on demand and kept: allocation-free once warm. Its
/// functions are defined in gemm_cpu.cpp (compiled for the baseline CPU, not for one instruction set).
class PackBuffer {
 public:
  PackBuffer() = default;
  PackBuffer(const PackBuffer&) = delete;
  PackBuffer& operator=(const PackBuffer&) = delete;
  ~PackBuffer();
  /// Room for at least n_floats; throws std::bad_alloc.
  float* get(std::int64_t n_floats);

 private:
  float* data_ = nullptr;
  std::int64_t n_floats_ = 0;
};

/// The calling thread's buffers for packed op(a) panels and the packed op(b) block.
PackBuffer& a_pack_buffer();
PackBuffer& b_pack_buffer();

/// Elements of a packed panel along k for kc values of k (ceil(kc / kKPack): pairs for bf16 panels).
template <typename Isa>
constexpr std::int64_t packed_k(std::int64_t kc) {
  return (kc + Isa::kKPack - 1) / Isa::kKPack;
}

/// Elements (floats) of op(b)'s block of nc columns and kc values of k packed as kNR-wide panels.
template <typename Isa>
constexpr std::int64_t packed_b_block_floats(std::int64_t nc, std::int64_t kc) {
  return packed_k<Isa>(kc) * ((nc + Isa::kNR - 1) / Isa::kNR) * Isa::kNR;
}

/// Packs op(b)'s block of nc columns and kc values of k that starts at b (b stored (N, K) when trans_b,
/// else (K, N)) into bp as kNR-wide panels (nc <= kNC, kc <= kKC): the layout gemm_packed's tiles read.
template <typename Isa, typename BT>
void pack_b_block(bool trans_b, const BT* b, std::int64_t ldb, std::int64_t nc, std::int64_t kc, float* bp) {
  const std::int64_t kw = packed_k<Isa>(kc);
  if (trans_b) {
    for (std::int64_t jr = 0; jr < nc; jr += Isa::kNR) {
      const int nr = static_cast<int>(std::min<std::int64_t>(Isa::kNR, nc - jr));
      Isa::pack_b_transposed(bp + jr * kw, b + jr * ldb, ldb, nr, kc);
    }
  } else {
    Isa::pack_rows_to_panels(bp, Isa::kNR, b, ldb, nc, kc);
  }
}

/// pack_b_block on a b of either element type: bf16 (b_bf16) or f32, as the kernels' pack_b entries take it.
template <typename Isa>
void pack_b_block(bool trans_b, const void* b, bool b_bf16, std::int64_t ldb, std::int64_t nc, std::int64_t kc,
                  float* bp) {
  if (b_bf16) {
    pack_b_block<Isa>(trans_b, static_cast<const std::uint16_t*>(b), ldb, nc, kc, bp);
  } else {
    pack_b_block<Isa>(trans_b, static_cast<const float*>(b), ldb, nc, kc, bp);
  }
}

/// Elements (floats) of m rows of op(a) and kc values of k packed as kMR-row panels.
template <typename Isa>
constexpr std::int64_t packed_a_floats(std::int64_t m, std::int64_t kc) {
  return (m + Isa::kMR - 1) / Isa::kMR * Isa::kMR * packed_k<Isa>(kc);
}

/// Packs m rows of op(a) and kc values of k (kc <= kKC) into dst as panels of kMR rows (zero rows past m):
/// a points at the first element, op(a)(i, k) at a[k · lda + i] when trans_a, else a[i · lda + k].
template <typename Isa>
void pack_a_rows(bool trans_a, const float* a, std::int64_t lda, std::int64_t m, std::int64_t kc, float* dst) {
  if (trans_a) {  // an a stored transposed is walked along its rows
    Isa::pack_rows_to_panels(dst, Isa::kMR, a, lda, m, kc);
    return;
  }
  const std::int64_t kw = packed_k<Isa>(kc);
  for (std::int64_t ir = 0; ir < m; ir += Isa::kMR) {
    const int mr = static_cast<int>(std::min<std::int64_t>(Isa::kMR, m - ir));
    Isa::pack_a(dst + ir * kw, a + ir * lda, lda, mr, kc);
  }
}

/// c (M, N) = alpha · op(a) · op(b) + beta · c on the calling thread, as gemm_avx512 / gemm_avx2 promise.
/// With packed_b set, op(b) is one block (N <= kNC, K <= kKC) already packed by pack_b_block, and b is
/// not read; with packed_a set (K <= kKC), op(a) is already packed by pack_a_rows (all M rows) and is not
/// packed again (where Isa::a_in_place holds, a is still read in place instead). The same tiles on the
/// same panels either way, so the same bits as packing them here.
/// `Isa` gives the blocking (kMR, kNR, kKC, kNC, kMC with kMC % kMR == 0 and kNC % kNR == 0; kBPanelInL1:
/// which panel the innermost loop keeps; kKPack: k values per 32-bit element of a packed panel, 1 for
/// f32, 2 for bf16 pairs, so that a panel of kc values of k holds ceil(kc / kKPack) elements) and:
///   a_in_place(N, trans_a): whether op(a) is read where it is instead of packed;
///   pack_a(dst, a, lda, mr, kc): rows of a (mr <= kMR) into a kc x kMR panel, zero rows past mr;
///   pack_b_transposed(dst, b, ldb, nr, kc): rows of b stored (N, K) (nr <= kNR) into a kc x kNR panel;
///   pack_rows_to_panels(dst, width, src, lds, cols, kc): a row-major src into width-wide panels;
///   tile(kc, a, rs, ks, bp, c, ldc, mr, nr, alpha, beta): the micro-kernel (beta = 0 does not read c) on a
///     packed a panel (rs = 0) or on op(a) in place, element (i, k) at a[i · rs + k · ks]: rows of an a
///     stored (M, K) (rs = lda, ks = 1) or columns of one stored (K, M) (rs = 1, ks = lda).
template <typename Isa, typename BT>
void gemm_packed(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const BT* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc, const float* packed_b = nullptr, const float* packed_a = nullptr) {
  constexpr int kMR = Isa::kMR, kNR = Isa::kNR;
  constexpr std::int64_t kKC = Isa::kKC, kNC = Isa::kNC, kMC = Isa::kMC;
  static_assert(kMC % kMR == 0 && kNC % kNR == 0, "blocks hold whole tiles");
  static_assert(kKC % Isa::kKPack == 0, "k blocks hold whole packed elements");
  const std::int64_t kc_max = packed_k<Isa>(std::min(kKC, K));
  const std::int64_t panels_max = (std::min(kNC, N) + kNR - 1) / kNR;
  float* b_buffer = packed_b != nullptr ? nullptr : b_pack_buffer().get(kc_max * panels_max * kNR);
  // op(a) is read where it is where Isa::a_in_place says; otherwise packed as panels.
  const bool in_place = Isa::a_in_place(N, trans_a);
  const std::int64_t rs = trans_a ? 1 : lda, ks = trans_a ? lda : 1;  // element (i, k) of op(a) in place
  // Packed panels of kMC rows are packed again for every column block. When c spans several column
  // blocks and all of op(a) packed fits kWholeA elements (e.g. lm_head's 256-row chunks: 256 x 768), it is
  // packed once, every k block of it, before the column loop (the same panels, so the same bits).
  constexpr std::int64_t kWholeA = std::int64_t{1} << 18;
  const std::int64_t m_panels = (M + kMR - 1) / kMR * kMR;  // rows of op(a) rounded up to whole panels
  const std::int64_t k_blocks = (K + kKC - 1) / kKC;
  const bool pack_whole = packed_a == nullptr && !in_place && N > kNC && m_panels * kc_max * k_blocks <= kWholeA;
  const std::int64_t a_floats = pack_whole ? m_panels * kc_max * k_blocks : kc_max * std::min(kMC, m_panels);
  float* ap_block = packed_a != nullptr ? nullptr : a_pack_buffer().get(a_floats);
  const float* whole_a = packed_a != nullptr ? packed_a : ap_block;  // all of op(a) packed, when one of them
  // Packs rows [i0, i0 + m) of op(a), k block [pc, pc + kc), as panels of kMR rows at dst.
  const auto pack_rows = [&](float* dst, std::int64_t i0, std::int64_t m, std::int64_t pc, std::int64_t kc) {
    pack_a_rows<Isa>(trans_a, trans_a ? a + pc * lda + i0 : a + i0 * lda + pc, lda, m, kc, dst);
  };
  if (pack_whole) {
    for (std::int64_t pc = 0; pc < K; pc += kKC)
      pack_rows(ap_block + pc / kKC * m_panels * kc_max, 0, M, pc, std::min(kKC, K - pc));
  }
  for (std::int64_t jc = 0; jc < N; jc += kNC) {
    const std::int64_t nc = std::min(kNC, N - jc);
    for (std::int64_t pc = 0; pc < K; pc += kKC) {
      const std::int64_t kc = std::min(kKC, K - pc), kw = packed_k<Isa>(kc);
      const float* bp = packed_b;
      if (packed_b == nullptr) {
        pack_b_block<Isa>(trans_b, trans_b ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, nc, kc, b_buffer);
        bp = b_buffer;
      }
      const float beta_k = pc == 0 ? beta : 1.0f;  // later k blocks add to what the first one wrote
      for (std::int64_t ic = 0; ic < M; ic += kMC) {
        const std::int64_t mc = std::min(kMC, M - ic);
        // mc rows of op(a) as panels of kMR rows: packed here, or already (pack_whole), or read in place.
        const bool a_packed = pack_whole || packed_a != nullptr;
        const float* ap = a_packed ? whole_a + pc / kKC * m_panels * kc_max + ic * kw : ap_block;
        if (!in_place && !a_packed) pack_rows(ap_block, ic, mc, pc, kc);
        const auto tile = [&](std::int64_t ir, std::int64_t jr) {
          const int mr = static_cast<int>(std::min<std::int64_t>(kMR, mc - ir));
          const int nr = static_cast<int>(std::min<std::int64_t>(kNR, nc - jr));
          float* ct = c + (ic + ir) * ldc + jc + jr;
          if (in_place) {
            Isa::tile(kc, a + (ic + ir) * rs + pc * ks, rs, ks, bp + jr * kw, ct, ldc, mr, nr, alpha, beta_k);
          } else {
            Isa::tile(kc, ap + ir * kw, 0, 0, bp + jr * kw, ct, ldc, mr, nr, alpha, beta_k);
          }
        };
        if constexpr (Isa::kBPanelInL1) {  // each b panel meets every a panel of the block
          for (std::int64_t jr = 0; jr < nc; jr += kNR)
            for (std::int64_t ir = 0; ir < mc; ir += kMR) tile(ir, jr);
        } else {  // each a panel meets every b panel of the block
          for (std::int64_t ir = 0; ir < mc; ir += kMR)
            for (std::int64_t jr = 0; jr < nc; jr += kNR) tile(ir, jr);
        }
      }
    }
  }
}

}  // namespace adapt::ops::cpu
