// Decode attention with AVX-512 (see attention_decode_avx512.h). Per task (sequence, KV group), per
// tile of kTile keys:
//   scores: each block of 16 keys is made f32 once (a bf16 block widened into a 16 x D buffer in L1;
//   an f32 cache is read in place), then for each query head the products of each key, D/16 vectors,
//   are summed into one vector per key, and a 16-to-1 tree (unpack / shuffle / lane-shuffle adds)
//   turns the 16 vectors into the 16 keys' scores at once;
//   softmax_step over the tile's scores;
//   values: each value row (widened the same way) is FMA'd into every head's output, kept in L1.
// Keys past the last whole block of 16 take the same products, summed by _mm512_reduce_add_ps.
// With bf16 products, q, each key and value row and the probabilities are rounded to bf16 first (the
// products of the tile kernels, summed in this kernel's order). On CPUs with AVX512_BF16 the scores then
// take vdpbf16ps on pairs of d, on a bf16 cache's rows where they are (scores_dot): half the instructions
// of f32 FMAs on widened rows, which took a third of a decode step at 8,192 keys.
#include "ops/cpu/attention_decode_avx512.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/avx512_loads.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_avx512_bf16.h"

namespace adapt::ops::cpu {

namespace {

constexpr std::int64_t kTile = 128;  // keys per online-softmax step
constexpr std::int64_t kMaxD = 256;

struct DecodeScratch {
  std::vector<float> q, s, o, m, l;
  std::vector<std::uint16_t> q16;                    // scores_dot: q's rounded values as bf16 bit patterns
  alignas(64) float block[16 * kMaxD];               // 16 key (or value) rows as f32
  alignas(64) std::uint16_t block_bf16[16 * kMaxD];  // scores_dot: 16 key rows of an f32 cache rounded to bf16
};

// Rows [j, j + n) of one head as f32 rows of D: the cache itself (f32), or `buf` (bf16 widened, or f32
// rounded to bf16 when `round`).
inline const float* rows_f32(const float* f32, const std::uint16_t* bf16, std::int64_t offset, std::int64_t stride,
                             std::int64_t j, std::int64_t n, std::int64_t D, bool round, float* buf, std::int64_t* ld) {
  if (!bf16 && !round) {
    *ld = stride;
    return f32 + offset + j * stride;
  }
  if (bf16) {
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint16_t* src = bf16 + offset + (j + i) * stride;
      for (std::int64_t d = 0; d < D; d += 16) _mm512_store_ps(buf + i * D + d, load16(src + d));
    }
  } else {
    round_bf16_rows(buf, D, f32 + offset + j * stride, stride, n, D);
  }
  *ld = D;
  return buf;
}

// q · k for one key row: the NV = D/16 products summed into one vector (in increasing d).
template <int NV>
[[gnu::always_inline]] inline __m512 products(const __m512 q[NV], const float* k) {
  __m512 acc = _mm512_mul_ps(q[0], _mm512_loadu_ps(k));
  for (int v = 1; v < NV; ++v) acc = _mm512_fmadd_ps(q[v], _mm512_loadu_ps(k + 16 * v), acc);
  return acc;
}

// o[r] += Σ_i p[r][i] · v_i for RG query heads and n value rows, the heads' outputs in registers
// across the rows (NV vectors each; RG · NV <= 32 minus the operands).
template <int NV, int RG>
void accumulate_values(float* o, std::int64_t D, const float* p, std::int64_t ldp, const float* v, std::int64_t ldv,
                       std::int64_t n) {
  __m512 acc[RG][NV];
  for (int r = 0; r < RG; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_loadu_ps(o + r * D + 16 * c);
  for (std::int64_t i = 0; i < n; ++i) {
    __m512 vi[NV];
    for (int c = 0; c < NV; ++c) vi[c] = _mm512_loadu_ps(v + i * ldv + 16 * c);
    for (int r = 0; r < RG; ++r) {
      const __m512 pr = _mm512_set1_ps(p[r * ldp + i]);
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_fmadd_ps(pr, vi[c], acc[r][c]);
    }
  }
  for (int r = 0; r < RG; ++r)
    for (int c = 0; c < NV; ++c) _mm512_storeu_ps(o + r * D + 16 * c, acc[r][c]);
}

// Lane i of the result = the sum of the 16 lanes of v[i].
inline __m512 sum16(const __m512 v[16]) {
  __m512 x[8], y[4], z[2];
  for (int i = 0; i < 8; ++i)
    x[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    y[i] =
        _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0x44), _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)
    z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], 0x88), _mm512_shuffle_f32x4(z[0], z[1], 0xDD));
}

// q · k for one bf16 key row on vdpbf16ps: the NP vectors of 16 pairs summed into one vector (in
// increasing d).
template <int NP>
[[gnu::target("avx512bf16"), gnu::always_inline]] inline __m512 pair_products(const __m512bh q[NP],
                                                                              const std::uint16_t* k) {
  __m512 acc = _mm512_setzero_ps();
  for (int c = 0; c < NP; ++c)
    acc = _mm512_dpbf16_ps(acc, q[c], reinterpret_cast<__m512bh>(_mm512_loadu_si512(k + 32 * c)));
  return acc;
}

// Scores with bf16 products on vdpbf16ps (AVX512_BF16; the caller checks gemm_avx512_bf16_supported()):
// s[r · kTile + i] = scale · q_r · bf16(k_i) for the R heads' rows of q (bf16 bit patterns, R x D) and
// n <= 16 key rows, each key's D/32 pair vectors summed in increasing d, then 16 keys at once by sum16.
// A bf16 cache's rows are read in place (k16, ld in elements); an f32 cache's are rounded to bf16 into
// buf first (nearest even: the values a bf16 cache holding them would give, so the same bits).
template <int NV>
[[gnu::target("avx512bf16")]] void scores_dot(const std::uint16_t* q, std::int64_t R, const float* k32,
                                              const std::uint16_t* k16, std::int64_t ld, std::int64_t n, float scale,
                                              float* s, std::uint16_t* buf) {
  constexpr int NP = NV / 2;  // vectors of 16 pairs per row
  static_assert(NV % 2 == 0, "whole pair vectors");
  if (k16 == nullptr) {
    for (std::int64_t i = 0; i < n; ++i) {
      for (int c = 0; c < NP; ++c) {
        const float* src = k32 + i * ld + 32 * c;
        const __m512bh pairs = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
        _mm512_store_si512(buf + i * 16 * NV + 32 * c, reinterpret_cast<__m512i>(pairs));
      }
    }
    k16 = buf;
    ld = 16 * NV;
  }
  const __m512 scale_v = _mm512_set1_ps(scale);
  for (std::int64_t r = 0; r < R; ++r) {
    __m512bh qp[NP];
    for (int c = 0; c < NP; ++c) qp[c] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(q + r * 16 * NV + 32 * c));
    float* sr = s + r * kTile;
    if (n == 16) {
      __m512 v[16];
      for (int i = 0; i < 16; ++i) v[i] = pair_products<NP>(qp, k16 + i * ld);
      _mm512_storeu_ps(sr, _mm512_mul_ps(scale_v, sum16(v)));
    } else {
      for (std::int64_t i = 0; i < n; ++i) sr[i] = scale * _mm512_reduce_add_ps(pair_products<NP>(qp, k16 + i * ld));
    }
  }
}

template <int NV>
void decode_task(const AttentionArgs& a, std::int64_t b, std::int64_t g) {
  thread_local DecodeScratch sc;  // no allocation once warm
  const std::int64_t R = a.H / a.Hkv, D = a.D;
  sc.q.assign(a.q + (b * a.H + g * R) * D, a.q + (b * a.H + g * R + R) * D);
  const bool round = a.bf16_products;
  const bool dot = round && gemm_avx512_bf16_supported();  // scores on vdpbf16ps
  if (round) round_bf16_rows(sc.q.data(), R * D, sc.q.data(), R * D, 1, R * D);
  if (dot) {  // once per task, not per block of keys: the rounded values' top halves, exactly
    sc.q16.resize(sc.q.size());
    for (std::size_t i = 0; i < sc.q.size(); ++i)
      sc.q16[i] = static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(sc.q[i]) >> 16);
  }
  sc.s.resize(static_cast<std::size_t>(R * kTile));
  sc.o.assign(static_cast<std::size_t>(R * D), 0.0f);
  sc.m.assign(static_cast<std::size_t>(R), -std::numeric_limits<float>::infinity());
  sc.l.assign(static_cast<std::size_t>(R), 0.0f);
  const std::int64_t offset = a.q_pos_offsets ? a.q_pos_offsets[b] : a.q_pos_offset;
  const std::int64_t row = a.kv_rows ? a.kv_rows[b] : b;
  const std::int64_t k_off = row * a.k_stride_b + g * a.k_stride_h, v_off = row * a.v_stride_b + g * a.v_stride_h;
  const std::int64_t key_end = offset + 1;  // the query at position offset sees keys 0 .. offset
  const __m512 scale = _mm512_set1_ps(a.scale);
  for (std::int64_t j0 = 0; j0 < key_end; j0 += kTile) {
    const std::int64_t tile = std::min(kTile, key_end - j0);
    for (std::int64_t j = 0; j < tile; j += 16) {
      const std::int64_t n = std::min<std::int64_t>(16, tile - j);
      if (dot) {
        const std::int64_t at = k_off + (j0 + j) * a.k_stride_s;
        scores_dot<NV>(sc.q16.data(), R, a.k_bf16 ? nullptr : a.k + at, a.k_bf16 ? a.k_bf16 + at : nullptr,
                       a.k_stride_s, n, a.scale, sc.s.data() + j, sc.block_bf16);
        continue;
      }
      std::int64_t ld = 0;
      const float* k = rows_f32(a.k, a.k_bf16, k_off, a.k_stride_s, j0 + j, n, D, round, sc.block, &ld);
      for (std::int64_t r = 0; r < R; ++r) {
        __m512 q[NV];
        for (int c = 0; c < NV; ++c) q[c] = _mm512_loadu_ps(sc.q.data() + r * D + 16 * c);
        float* s = sc.s.data() + r * kTile + j;
        if (n == 16) {
          __m512 v[16];
          for (int i = 0; i < 16; ++i) v[i] = products<NV>(q, k + i * ld);
          _mm512_storeu_ps(s, _mm512_mul_ps(scale, sum16(v)));
        } else {
          for (std::int64_t i = 0; i < n; ++i) s[i] = a.scale * _mm512_reduce_add_ps(products<NV>(q, k + i * ld));
        }
      }
    }
    for (std::int64_t r = 0; r < R; ++r) {
      softmax_step(sc.s.data() + r * kTile, tile, tile, &sc.m[static_cast<std::size_t>(r)],
                   &sc.l[static_cast<std::size_t>(r)], sc.o.data() + r * D, D);
      float* p = sc.s.data() + r * kTile;
      if (round) round_bf16_rows(p, tile, p, tile, 1, tile);  // the probabilities, as P · V's operand
    }
    for (std::int64_t j = 0; j < tile; j += 16) {
      const std::int64_t n = std::min<std::int64_t>(16, tile - j);
      std::int64_t ld = 0;
      const float* v = rows_f32(a.v, a.v_bf16, v_off, a.v_stride_s, j0 + j, n, D, round, sc.block, &ld);
      // Up to 24 / NV heads per pass (their outputs in registers).
      constexpr int kHeads = NV == 4 ? 4 : 2;
      for (std::int64_t r = 0; r < R; r += kHeads) {
        const float* p = sc.s.data() + r * kTile + j;
        float* o = sc.o.data() + r * D;
        switch (std::min<std::int64_t>(kHeads, R - r)) {
          case 1: accumulate_values<NV, 1>(o, D, p, kTile, v, ld, n); break;
          case 2: accumulate_values<NV, 2>(o, D, p, kTile, v, ld, n); break;
          case 3:
            if constexpr (kHeads >= 3) accumulate_values<NV, 3>(o, D, p, kTile, v, ld, n);
            break;
          default:
            if constexpr (kHeads >= 4) accumulate_values<NV, 4>(o, D, p, kTile, v, ld, n);
            break;
        }
      }
    }
  }
  for (std::int64_t r = 0; r < R; ++r) {
    const std::int64_t h = g * R + r;
    const float l = sc.l[static_cast<std::size_t>(r)], inv_l = 1.0f / l;
    float* out = a.out + (b * a.H + h) * D;
    const float* o = sc.o.data() + r * D;
    for (std::int64_t d = 0; d < D; ++d) out[d] = o[d] * inv_l;
    if (a.lse) a.lse[b * a.H + h] = sc.m[static_cast<std::size_t>(r)] + std::log(l);
  }
}

}  // namespace

bool attention_decode_avx512_fits(const AttentionArgs& a) { return a.T == 1 && (a.D == 64 || a.D == 128); }

void attention_decode_avx512(const AttentionArgs& a, std::int64_t b, std::int64_t g) {
  if (a.D == 64) return decode_task<4>(a, b, g);
  return decode_task<8>(a, b, g);
}

}  // namespace adapt::ops::cpu
