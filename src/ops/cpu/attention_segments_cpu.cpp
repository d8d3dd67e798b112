// Causal GQA attention with segment masking (packed rows of several documents), flash-attention
// style like attention_cpu.cpp: tasks (sequence, KV head, block of query positions), key tiles with an
// online softmax, nothing of size T x T. The difference is the mask: an entry is visible when it is
// causal and both tokens are in the same non-negative segment (attention_visibility.h), so masked
// entries may sit anywhere in a tile and the softmax step skips them individually. Key tiles start at
// the earliest segment start of the block, so a packed row costs about the sum of its documents'
// squares, not T². A query that sees no key (padding) gets output 0 and lse −inf.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/attention_decode_avx512.h"
#include "ops/cpu/attention_visibility.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/vec_math.h"

namespace adapt::ops::cpu {

namespace {

constexpr std::int64_t kKeyTile = 128;      // keys per tile
constexpr std::int64_t kRowsPerBlock = 64;  // query rows (positions x heads) per task, about
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Scratch {
  std::vector<float> q, s, o, m, l;
};

// Online-softmax step for one row of a tile whose masked entries hold −inf: m' = max(m, max s),
// p = e^(s − m') on visible entries (0 on masked ones), l ← l·e^(m − m') + Σ p, o ← o·e^(m − m').
ADAPT_CPU_KERNEL void softmax_step_masked(float* s, std::int64_t tile, float* m, float* l, float* o, std::int64_t D) {
  float tile_max = kNegInf;
#pragma omp simd reduction(max : tile_max)
  for (std::int64_t j = 0; j < tile; ++j) tile_max = s[j] > tile_max ? s[j] : tile_max;  // exact in any order
  if (tile_max == kNegInf) {
    std::fill_n(s, tile, 0.0f);
    return;
  }
  const float m_new = std::max(*m, tile_max);
  float sum = 0.0f;
  for (std::int64_t j = 0; j < tile; ++j) {
    s[j] = s[j] == kNegInf ? 0.0f : exp_f32(s[j] - m_new);
    sum += s[j];
  }
  softmax_fold(m_new, sum, m, l, o, D);
}

void attend_block(const AttentionArgs& a, const Visibility& vis, std::int64_t b, std::int64_t g, std::int64_t t0,
                  std::int64_t t1, Scratch& sc) {
  const std::int64_t n_rep = a.H / a.Hkv, D = a.D, rows = (t1 - t0) * n_rep;
  sc.q.resize(static_cast<std::size_t>(rows * D));
  sc.s.resize(static_cast<std::size_t>(rows * kKeyTile));
  sc.o.assign(static_cast<std::size_t>(rows * D), 0.0f);
  sc.m.assign(static_cast<std::size_t>(rows), kNegInf);
  sc.l.assign(static_cast<std::size_t>(rows), 0.0f);
  for (std::int64_t t = t0; t < t1; ++t)
    std::copy_n(a.q + ((b * a.T + t) * a.H + g * n_rep) * D, n_rep * D, sc.q.data() + (t - t0) * n_rep * D);
  const float* kb = a.k + b * a.k_stride_b + g * a.k_stride_h;
  const float* vb = a.v + b * a.v_stride_b + g * a.v_stride_h;
  std::int64_t key_begin = t1;
  for (std::int64_t t = t0; t < t1; ++t) key_begin = std::min(key_begin, vis.first[static_cast<std::size_t>(t)]);
  for (std::int64_t j0 = key_begin; j0 < t1; j0 += kKeyTile) {
    const std::int64_t tile = std::min(kKeyTile, t1 - j0);
    gemm_serial(false, true, rows, tile, D, a.scale, sc.q.data(), D, kb + j0 * a.k_stride_s, a.k_stride_s, 0.0f,
                sc.s.data(), kKeyTile, a.bf16_products);
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t t = t0 + r / n_rep;
      float* sr = sc.s.data() + r * kKeyTile;
      for (std::int64_t j = 0; j < tile; ++j)
        if (!vis.visible(t, j0 + j)) sr[j] = kNegInf;
      softmax_step_masked(sr, tile, &sc.m[static_cast<std::size_t>(r)], &sc.l[static_cast<std::size_t>(r)],
                          sc.o.data() + r * D, D);
    }
    gemm_serial(false, false, rows, D, tile, 1.0f, sc.s.data(), kKeyTile, vb + j0 * a.v_stride_s, a.v_stride_s, 1.0f,
                sc.o.data(), D, a.bf16_products);
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t t = t0 + r / n_rep, h = g * n_rep + r % n_rep;
    const float l = sc.l[static_cast<std::size_t>(r)];
    float* out = a.out + ((b * a.T + t) * a.H + h) * D;
    if (l == 0.0f) {  // no visible key (padding): nothing to attend to
      std::fill_n(out, D, 0.0f);
      if (a.lse) a.lse[(b * a.H + h) * a.T + t] = kNegInf;
      continue;
    }
    const float inv_l = 1.0f / l;
    const float* o = sc.o.data() + r * D;
    for (std::int64_t d = 0; d < D; ++d) out[d] = o[d] * inv_l;
    if (a.lse) a.lse[(b * a.H + h) * a.T + t] = sc.m[static_cast<std::size_t>(r)] + std::log(l);
  }
}

}  // namespace

void attention_forward_segments(const AttentionArgs& a, const std::int32_t* segment_ids) {
  std::vector<Visibility> vis(static_cast<std::size_t>(a.B));
  for (std::int64_t b = 0; b < a.B; ++b) vis[static_cast<std::size_t>(b)].build(segment_ids + b * a.T, a.T, 0);
  const std::int64_t n_rep = a.H / a.Hkv;
  const std::int64_t block = std::max<std::int64_t>(1, kRowsPerBlock / n_rep);
  const std::int64_t n_blocks = (a.T + block - 1) / block;
  const std::int64_t BG = a.B * a.Hkv;
#pragma omp parallel
  {
    thread_local Scratch sc;
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < BG * n_blocks; ++task) {
      const std::int64_t qb = n_blocks - 1 - task / BG, bg = task % BG, b = bg / a.Hkv;
      const std::int64_t t0 = qb * block, t1 = std::min(a.T, t0 + block);
      attend_block(a, vis[static_cast<std::size_t>(b)], b, bg % a.Hkv, t0, t1, sc);
    }
  }
}

}  // namespace adapt::ops::cpu
