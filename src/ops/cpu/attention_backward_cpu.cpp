// Causal GQA attention backward on the CPU, flash-attention-2 style: the probabilities are never
// stored, each tile recomputes S = Q·Kᵀ·scale and P = exp(S − lse) from the forward's log-sum-exp.
// With Δ = rowsum(dO ⊙ O): dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − Δ), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
// Two passes, so every output element has exactly one writer (no atomics, no per-thread copies, the
// same bits for any thread count): tasks (sequence, KV head, key block) own their dK/dV rows and sum
// over all query heads of the group (GQA) and every query that sees the block; tasks (sequence, KV
// head, query block) own their dQ rows. That recomputes S and dP once more than a fused loop with
// atomic dQ would (7 small GEMMs per tile instead of 5), a small price next to the projections.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/attention_visibility.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/vec_math.h"

namespace adapt::ops::cpu {

namespace {

constexpr std::int64_t kKeyTile = 64;       // keys per tile
constexpr std::int64_t kRowsPerBlock = 64;  // query rows (positions x heads of a group) per block, about

struct Scratch {
  std::vector<float> dacc;    // (rows, D) dQ accumulator
  std::vector<float> s, dp;   // (rows, kKeyTile) scores → P; dP → dS
  std::vector<float> dk, dv;  // (kKeyTile, D) accumulators of one key block
};

// The queries, output gradients, lse and Δ in group order, (B, Hkv, T, n_rep[, D]): the rows of positions
// [t0, t1) x the n_rep heads of group g (row r = (t0 + r / n_rep, g·n_rep + r % n_rep)) are then one
// contiguous block, read where they are by every key block (gathering them per key block and query
// block copied each query ~T / kKeyTile / 2 times).
struct Grouped {
  std::vector<float> q, dout, lse, delta;
};

struct Rows {  // one block of rows in Grouped
  const float *q, *dout, *lse, *delta;
};

Rows rows_of(const AttentionBackwardArgs& a, const Grouped& gr, std::int64_t b, std::int64_t g, std::int64_t t0) {
  const std::int64_t n_rep = a.H / a.Hkv, r0 = ((b * a.Hkv + g) * a.T + t0) * n_rep;
  return {gr.q.data() + r0 * a.D, gr.dout.data() + r0 * a.D, gr.lse.data() + r0, gr.delta.data() + r0};
}

void prepare_tiles(std::int64_t rows, Scratch& sc) {
  sc.s.resize(static_cast<std::size_t>(rows * kKeyTile));
  sc.dp.resize(static_cast<std::size_t>(rows * kKeyTile));
}

// One tile: P = exp(S − lse) on visible entries (0 elsewhere, and on rows that saw no key at all),
// then dS = P ⊙ (dP − Δ) written over dP. s holds the scaled scores on entry, dp holds dO·Vᵀ.
ADAPT_CPU_KERNEL void tile_probs_and_dscores(float* s, float* dp, const float* lse, const float* delta,
                                             std::int64_t rows, std::int64_t tile, std::int64_t n_rep, std::int64_t t0,
                                             std::int64_t j0, const Visibility& vis) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* sr = s + r * kKeyTile;
    float* dpr = dp + r * kKeyTile;
    const float l = lse[r], d = delta[r];
    const std::int64_t t = t0 + r / n_rep;
    if (l == -std::numeric_limits<float>::infinity()) {  // the forward gave this row no key: output 0
      std::fill_n(sr, tile, 0.0f);
      std::fill_n(dpr, tile, 0.0f);
      continue;
    }
    if (!vis.seg) {
      // Causal only: a prefix of the tile is visible.
      const std::int64_t n = std::clamp<std::int64_t>(vis.offset + t + 1 - j0, 0, tile);
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) {
        sr[j] = exp_f32(sr[j] - l);
        dpr[j] = sr[j] * (dpr[j] - d);
      }
      for (std::int64_t j = n; j < tile; ++j) sr[j] = dpr[j] = 0.0f;
    } else {
      // Visibility::visible(t, j0 + j) written as a select, so that the loop vectorises (a branch per
      // key kept it scalar: 2.4% of a training step with packed documents, against 0.9% causal only).
      const std::int64_t last_visible = vis.offset + t - j0;
      const std::int32_t seg_t = vis.seg[t];
      const std::int32_t* seg_j = vis.seg + j0;
#pragma omp simd
      for (std::int64_t j = 0; j < tile; ++j) {
        const bool visible = j <= last_visible && seg_t >= 0 && seg_j[j] == seg_t;
        const float p = visible ? exp_f32(sr[j] - l) : 0.0f;
        sr[j] = p;
        dpr[j] = visible ? p * (dpr[j] - d) : 0.0f;
      }
    }
  }
}

// S = scale · Q · K[j0 : j0 + tile]ᵀ and dP = dO · V[j0 : j0 + tile]ᵀ for a block of rows.
void tile_scores(const AttentionBackwardArgs& a, const Rows& x, const float* kb, const float* vb, std::int64_t rows,
                 std::int64_t j0, std::int64_t tile, Scratch& sc) {
  const std::int64_t D = a.D;
  const bool bf16 = a.bf16_products;
  gemm_serial(false, true, rows, tile, D, a.scale, x.q, D, kb + j0 * a.D, D, 0.0f, sc.s.data(), kKeyTile, bf16);
  gemm_serial(false, true, rows, tile, D, 1.0f, x.dout, D, vb + j0 * a.D, D, 0.0f, sc.dp.data(), kKeyTile, bf16);
}

// dK, dV of keys [j0, j1) of (b, g): summed over every query position that sees one of them and over
// the n_rep query heads of the group.
void key_block(const AttentionBackwardArgs& a, const Grouped& gr, const Visibility& vis, std::int64_t b, std::int64_t g,
               std::int64_t j0, std::int64_t j1, Scratch& sc) {
  const std::int64_t n_rep = a.H / a.Hkv, D = a.D, tile = j1 - j0;
  const std::int64_t block = std::max<std::int64_t>(1, kRowsPerBlock / n_rep);
  const float* kb = a.k + (b * a.Hkv + g) * a.S * D;
  const float* vb = a.v + (b * a.Hkv + g) * a.S * D;
  sc.dk.assign(static_cast<std::size_t>(tile * D), 0.0f);
  sc.dv.assign(static_cast<std::size_t>(tile * D), 0.0f);
  // Queries that can see a key of the block: t >= j0 − offset, and (segments) t <= the block's last
  // reader.
  std::int64_t t_begin = std::max<std::int64_t>(0, j0 - vis.offset), t_end = a.T;
  if (vis.seg) {
    t_end = 0;
    for (std::int64_t j = j0; j < j1; ++j) t_end = std::max(t_end, vis.last[static_cast<std::size_t>(j)] + 1);
  }
  for (std::int64_t t0 = t_begin; t0 < t_end; t0 += block) {
    const std::int64_t t1 = std::min(t_end, t0 + block), rows = (t1 - t0) * n_rep;
    const Rows x = rows_of(a, gr, b, g, t0);
    prepare_tiles(rows, sc);
    tile_scores(a, x, kb, vb, rows, j0, tile, sc);
    tile_probs_and_dscores(sc.s.data(), sc.dp.data(), x.lse, x.delta, rows, tile, n_rep, t0, j0, vis);
    // dV += Pᵀ · dO;  dK += scale · dSᵀ · Q.
    gemm_serial(true, false, tile, D, rows, 1.0f, sc.s.data(), kKeyTile, x.dout, D, 1.0f, sc.dv.data(), D,
                a.bf16_products);
    gemm_serial(true, false, tile, D, rows, a.scale, sc.dp.data(), kKeyTile, x.q, D, 1.0f, sc.dk.data(), D,
                a.bf16_products);
  }
  std::copy(sc.dk.begin(), sc.dk.end(), a.dk + ((b * a.Hkv + g) * a.S + j0) * D);
  std::copy(sc.dv.begin(), sc.dv.end(), a.dv + ((b * a.Hkv + g) * a.S + j0) * D);
}

// dQ of positions [t0, t1) x the heads of group g.
void query_block(const AttentionBackwardArgs& a, const Grouped& gr, const Visibility& vis, std::int64_t b,
                 std::int64_t g, std::int64_t t0, std::int64_t t1, Scratch& sc) {
  const std::int64_t n_rep = a.H / a.Hkv, D = a.D, rows = (t1 - t0) * n_rep;
  const float* kb = a.k + (b * a.Hkv + g) * a.S * D;
  const float* vb = a.v + (b * a.Hkv + g) * a.S * D;
  const Rows x = rows_of(a, gr, b, g, t0);
  prepare_tiles(rows, sc);
  sc.dacc.assign(static_cast<std::size_t>(rows * D), 0.0f);
  std::int64_t key_begin = 0, key_end = vis.offset + t1;  // keys [key_begin, key_end) are visible to some row
  if (vis.seg) {
    key_begin = t1;
    for (std::int64_t t = t0; t < t1; ++t) key_begin = std::min(key_begin, vis.first[static_cast<std::size_t>(t)]);
  }
  for (std::int64_t j0 = key_begin; j0 < key_end; j0 += kKeyTile) {
    const std::int64_t tile = std::min(kKeyTile, key_end - j0);
    tile_scores(a, x, kb, vb, rows, j0, tile, sc);
    tile_probs_and_dscores(sc.s.data(), sc.dp.data(), x.lse, x.delta, rows, tile, n_rep, t0, j0, vis);
    // dQ += scale · dS · K.
    gemm_serial(false, false, rows, D, tile, a.scale, sc.dp.data(), kKeyTile, kb + j0 * D, D, 1.0f, sc.dacc.data(), D,
                a.bf16_products);
  }
  for (std::int64_t t = t0; t < t1; ++t)
    std::copy_n(sc.dacc.data() + (t - t0) * n_rep * D, n_rep * D, a.dq + ((b * a.T + t) * a.H + g * n_rep) * D);
}

}  // namespace

void attention_backward(const AttentionBackwardArgs& a) {
  const std::int64_t D = a.D, n_rep = a.H / a.Hkv;
  // q, dout and lse in group order, and Δ = rowsum(dO ⊙ O) (the softmax Jacobian's correction term, one
  // value per query row) computed into it; kept per calling thread: no allocation once warm.
  thread_local Grouped grouped;
  Grouped& gr = grouped;  // the calling thread's: the parallel regions below share it through this reference
  const auto n_rows = static_cast<std::size_t>(a.B * a.H * a.T);
  gr.q.resize(n_rows * static_cast<std::size_t>(D));
  gr.dout.resize(n_rows * static_cast<std::size_t>(D));
  gr.lse.resize(n_rows);
  gr.delta.resize(n_rows);
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < a.B; ++b) {
    for (std::int64_t t = 0; t < a.T; ++t) {
      for (std::int64_t g = 0; g < a.Hkv; ++g) {
        const std::int64_t src = ((b * a.T + t) * a.H + g * n_rep) * D;  // n_rep heads of one position: contiguous
        const std::int64_t r0 = ((b * a.Hkv + g) * a.T + t) * n_rep;
        std::copy_n(a.q + src, n_rep * D, gr.q.data() + r0 * D);
        std::copy_n(a.dout + src, n_rep * D, gr.dout.data() + r0 * D);
        for (std::int64_t i = 0; i < n_rep; ++i) {
          const std::int64_t h = g * n_rep + i;
          const float* o = a.out + ((b * a.T + t) * a.H + h) * D;
          const float* d = a.dout + ((b * a.T + t) * a.H + h) * D;
          double acc = 0.0;
          for (std::int64_t j = 0; j < D; ++j) acc += static_cast<double>(o[j]) * d[j];
          gr.delta[static_cast<std::size_t>(r0 + i)] = static_cast<float>(acc);
          gr.lse[static_cast<std::size_t>(r0 + i)] = a.lse[(b * a.H + h) * a.T + t];
        }
      }
    }
  }
  std::vector<Visibility> vis(static_cast<std::size_t>(a.B));
  for (std::int64_t b = 0; b < a.B; ++b)
    vis[static_cast<std::size_t>(b)].build(a.segment_ids ? a.segment_ids + b * a.T : nullptr, a.T, a.q_pos_offset);

  const std::int64_t n_key_blocks = (a.S + kKeyTile - 1) / kKeyTile;
  const std::int64_t q_block = std::max<std::int64_t>(1, kRowsPerBlock / n_rep);
  const std::int64_t n_query_blocks = (a.T + q_block - 1) / q_block;
  const std::int64_t BG = a.B * a.Hkv;
#pragma omp parallel
  {
    thread_local Scratch sc;  // reused across calls: no allocation once warm
                              // Early key blocks are seen by the most queries: hand them out first.
#pragma omp for schedule(dynamic, 1) nowait
    for (std::int64_t task = 0; task < BG * n_key_blocks; ++task) {
      const std::int64_t kb = task / BG, bg = task % BG, b = bg / a.Hkv;
      const std::int64_t j0 = kb * kKeyTile, j1 = std::min(a.S, j0 + kKeyTile);
      key_block(a, gr, vis[static_cast<std::size_t>(b)], b, bg % a.Hkv, j0, j1, sc);
    }
    // Late query blocks see the most keys: hand them out first.
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < BG * n_query_blocks; ++task) {
      const std::int64_t qb = n_query_blocks - 1 - task / BG, bg = task % BG, b = bg / a.Hkv;
      const std::int64_t t0 = qb * q_block, t1 = std::min(a.T, t0 + q_block);
      query_block(a, gr, vis[static_cast<std::size_t>(b)], b, bg % a.Hkv, t0, t1, sc);
    }
  }
}

}  // namespace adapt::ops::cpu
