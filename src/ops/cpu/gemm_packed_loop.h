// The loop nest of the packed GEMMs (GotoBLAS/BLIS), shared by gemm_avx512.cpp and gemm_avx2.cpp; each
// instantiates it with its own `Isa`, so the loops are compiled once per instruction set, in the
// translation unit built for it. Loops, outermost first:
//   jc: kNC columns of c -> pc: kKC of K; pack op(b) into kNR-wide panels (the kKC x kNC block: L2)
//   -> ir: kMR rows; pack op(a) into one kMR x kKC panel (L1; an a stored transposed is packed kMC rows
//   at a time) -> jr: kNR columns -> Isa::tile: a kMR x kNR tile of c in registers.
// Packing absorbs every layout (weights stored (N, K) are transposed in registers, bf16 is widened on
// the way, edges are zero-padded), so the micro-kernel sees one format. Every element of every tile
// (edge tiles included) is summed in increasing k, in blocks of kKC: results do not depend on how a
// caller splits c. Include only from those two files.
#pragma once

#include <omp.h>

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

/// c (M, N) = alpha · op(a) · op(b) + beta · c, as gemm_avx512 / gemm_avx2 promise, on a team of
/// `n_threads` OpenMP threads (1: the calling thread alone). `Isa` gives the blocking (kMR, kNR, kKC, kNC,
/// kMC with kMC % kMR == 0 and kNC % kNR == 0; kBPanelInL1: which panel the innermost loop keeps) and:
///   pack_a(dst, a, lda, mr, kc): rows of a (mr <= kMR) into a kc x kMR panel, zero rows past mr;
///   pack_b_transposed(dst, b, ldb, nr, kc): rows of b stored (N, K) (nr <= kNR) into a kc x kNR panel;
///   pack_rows_to_panels(dst, width, src, lds, cols, kc): a row-major src into width-wide panels;
///   tile(kc, a, lda, bp, c, ldc, mr, nr, alpha, beta): the micro-kernel (beta = 0 does not read c) on a
///     packed a panel (lda = 0) or, where Isa::kAInPlace, on rows of an a stored (M, K) (row stride lda).
/// The team packs each kKC x kNC block of op(b) once, together (each thread a range of panels), then
/// takes work items from a dynamic schedule: kMC rows of c times a group of b panels, the thread
/// packing those rows of op(a) itself. So b is never packed twice, and when another process takes a
/// core for a while the other threads do more of the product instead of waiting at its end.
template <typename Isa, typename BT>
void gemm_packed(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const BT* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc, int n_threads) {
  constexpr int kMR = Isa::kMR, kNR = Isa::kNR;
  constexpr std::int64_t kKC = Isa::kKC, kNC = Isa::kNC, kMC = Isa::kMC;
  static_assert(kMC % kMR == 0 && kNC % kNR == 0, "blocks hold whole tiles");
  const std::int64_t kc_max = std::min(kKC, K);
  const std::int64_t panels_max = (std::min(kNC, N) + kNR - 1) / kNR;
  float* bp = b_pack_buffer().get(kc_max * panels_max * kNR);  // the calling thread's, shared by the team
  const std::int64_t a_rows_max = std::min(kMC, (M + kMR - 1) / kMR * kMR);
  const std::int64_t n_ic = (M + kMC - 1) / kMC;
  // Groups of b panels per row block: enough items for ~4 per thread when there are few row blocks.
  const std::int64_t groups =
      n_threads == 1 ? 1 : std::clamp<std::int64_t>((4 * n_threads + n_ic - 1) / n_ic, 1, panels_max);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
  {
    float* ap_block = a_pack_buffer().get(kc_max * a_rows_max);  // this thread's
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    for (std::int64_t jc = 0; jc < N; jc += kNC) {
      const std::int64_t nc = std::min(kNC, N - jc);
      const std::int64_t n_panels = (nc + kNR - 1) / kNR;
      const std::int64_t per_group = (n_panels + groups - 1) / groups;
      for (std::int64_t pc = 0; pc < K; pc += kKC) {
        const std::int64_t kc = std::min(kKC, K - pc);
        // This thread's share of the b block: panels [p0, p1).
        const std::int64_t p0 = n_panels * t / team, p1 = n_panels * (t + 1) / team;
        if (trans_b) {
          for (std::int64_t p = p0; p < p1; ++p) {
            const int nr = static_cast<int>(std::min<std::int64_t>(kNR, nc - p * kNR));
            Isa::pack_b_transposed(bp + p * kNR * kc, b + (jc + p * kNR) * ldb + pc, ldb, nr, kc);
          }
        } else if (p0 < p1) {
          Isa::pack_rows_to_panels(bp + p0 * kNR * kc, kNR, b + pc * ldb + jc + p0 * kNR, ldb,
                                   std::min(nc, p1 * kNR) - p0 * kNR, kc);
        }
#pragma omp barrier
        const float beta_k = pc == 0 ? beta : 1.0f;  // later k blocks add to what the first one wrote
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t item = 0; item < n_ic * groups; ++item) {
          const std::int64_t ic = item / groups * kMC, mc = std::min(kMC, M - ic);
          const std::int64_t jr0 = item % groups * per_group * kNR, jr1 = std::min(nc, jr0 + per_group * kNR);
          if (jr0 >= jr1) continue;
          // mc rows of op(a) as panels of kMR rows (an a stored transposed is walked along its rows), or,
          // with Isa::kAInPlace, the rows of an a stored (M, K) read where they are.
          const bool in_place = Isa::kAInPlace && !trans_a;
          if (trans_a) {
            Isa::pack_rows_to_panels(ap_block, kMR, a + pc * lda + ic, lda, mc, kc);
          } else if (!in_place) {
            for (std::int64_t ir = 0; ir < mc; ir += kMR) {
              const int mr = static_cast<int>(std::min<std::int64_t>(kMR, mc - ir));
              Isa::pack_a(ap_block + ir * kc, a + (ic + ir) * lda + pc, lda, mr, kc);
            }
          }
          const auto tile = [&](std::int64_t ir, std::int64_t jr) {
            const int mr = static_cast<int>(std::min<std::int64_t>(kMR, mc - ir));
            const int nr = static_cast<int>(std::min<std::int64_t>(kNR, nc - jr));
            float* ct = c + (ic + ir) * ldc + jc + jr;
            if (in_place) {
              Isa::tile(kc, a + (ic + ir) * lda + pc, lda, bp + jr * kc, ct, ldc, mr, nr, alpha, beta_k);
            } else {
              Isa::tile(kc, ap_block + ir * kc, 0, bp + jr * kc, ct, ldc, mr, nr, alpha, beta_k);
            }
          };
          if constexpr (Isa::kBPanelInL1) {  // each b panel meets every a panel of the block
            for (std::int64_t jr = jr0; jr < jr1; jr += kNR)
              for (std::int64_t ir = 0; ir < mc; ir += kMR) tile(ir, jr);
          } else {  // each a panel meets every b panel of the group
            for (std::int64_t ir = 0; ir < mc; ir += kMR)
              for (std::int64_t jr = jr0; jr < jr1; jr += kNR) tile(ir, jr);
          }
        }  // the implied barrier: the b block is not packed again while a thread still reads it
      }
    }
  }
}

}  // namespace adapt::ops::cpu
