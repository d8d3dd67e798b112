// Attention with bf16 products on the CPU (AttentionOptions::bf16_products): every operand of the tile
// products rounded to bf16, the softmax and the sums f32. Each check separates the rounded arithmetic
// from f32 attention on the same inputs: it passes within f32 summation error of a reference that
// rounds exactly those operands, and shows that the unrounded arithmetic misses that reference by far
// more. The tile path (prefill, training), the decode kernel (one query against a cache), packed
// documents (segment ids) and the backward, on whichever kernel this CPU runs (the dot-product
// instructions, or rounded copies through the f32 kernels).
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "dtype/dtype.h"
#include "ops/attention.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

namespace {

double bf(double x) { return bf16_to_f32(f32_to_bf16(static_cast<float>(x))); }

// max |a − ref| / max |ref| over the elements.
double rel_to(const Tensor& a, const std::vector<double>& ref) { return test::max_rel_error(a, ref); }

// Keys alternate between k_a = 0 and k_b = −2.5·e_0 (both exact in bf16) and the query is e_0, so every
// score is 0 or −2.5·scale and, with key 0 = k_a, the running max is 0 from the first tile on: the
// probabilities are exactly 1 and p_b = e^(−2.5 / 8) = 0.7316 (bf16: 0.73046875, far from a rounding
// boundary). out_t = Σ_j bf16(p_j)·bf16(v_j) / Σ_j p_j over the visible keys.
struct TwoKeyCase {
  std::int64_t T, S, offset;
  std::vector<std::int32_t> segments;  // empty: causal
};

void check_two_keys(const TwoKeyCase& c) {
  CAPTURE(c.T);
  CAPTURE(c.S);
  CAPTURE(c.offset);
  const std::int64_t B = 1, H = 3, Hkv = 1, D = 64;
  Tensor q = test::filled({B, c.T, H, D}, 0.0f, "q");
  for (std::int64_t r = 0; r < c.T * H; ++r) q.data<float>()[r * D] = 1.0f;
  Tensor k = test::filled({B, Hkv, c.S, D}, 0.0f, "k");
  for (std::int64_t j = 1; j < c.S; j += 2) k.data<float>()[j * D] = -2.5f;
  const Tensor v = test::random_tensor({B, Hkv, c.S, D}, 71, 1.0f, "v");
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const double p_b = std::exp(-2.5 * scale);
  REQUIRE(bf(p_b) == 0.73046875);
  std::vector<double> ref_bf16(static_cast<std::size_t>(q.numel())), ref_f32(ref_bf16.size());
  for (std::int64_t t = 0; t < c.T; ++t) {
    for (std::int64_t d = 0; d < D; ++d) {
      double num_bf16 = 0, num_f32 = 0, l = 0;
      for (std::int64_t j = 0; j <= c.offset + t; ++j) {
        if (!c.segments.empty() && c.segments[static_cast<std::size_t>(j)] != c.segments[static_cast<std::size_t>(t)])
          continue;
        const double p = j % 2 ? p_b : 1.0, vj = v.data<float>()[j * D + d];
        num_bf16 += bf(p) * bf(vj);
        num_f32 += p * vj;
        l += p;
      }
      for (std::int64_t h = 0; h < H; ++h) {
        ref_bf16[static_cast<std::size_t>((t * H + h) * D + d)] = num_bf16 / l;
        ref_f32[static_cast<std::size_t>((t * H + h) * D + d)] = num_f32 / l;
      }
    }
  }
  const ops::AttentionOptions f32_opts{.q_pos_offset = c.offset, .segment_ids = c.segments};
  ops::AttentionOptions bf16_opts = f32_opts;
  bf16_opts.bf16_products = true;
  Tensor out = test::filled(q.shape(), NAN, "out"), out_f32 = test::filled(q.shape(), NAN, "out_f32");
  ops::attention_forward(out, q, k, v, bf16_opts);
  ops::attention_forward(out_f32, q, k, v, f32_opts);
  CHECK(rel_to(out, ref_bf16) < 2e-6);
  CHECK(rel_to(out_f32, ref_f32) < 2e-6);
  // What rounding v and the probabilities changes: ~1e-3 here, so the bound above tells them apart.
  CHECK(rel_to(out_f32, ref_bf16) > 1e-4);
}

// lse_t = log Σ_j e^(s_j) with s_j = scale · bf16(q_t) · bf16(k_j): the scores are products of the rounded
// operands. Random q and k; each (t, h) row over its visible keys.
void check_scores(std::int64_t T, std::int64_t S, std::int64_t offset, std::int64_t D = 64) {
  CAPTURE(T);
  CAPTURE(offset);
  CAPTURE(D);
  const std::int64_t B = 2, H = 4, Hkv = 2, n_rep = H / Hkv;
  const Tensor q = test::random_tensor({B, T, H, D}, 72, 1.0f, "q");
  const Tensor k = test::random_tensor({B, Hkv, S, D}, 73, 1.0f, "k");
  const Tensor v = test::random_tensor({B, Hkv, S, D}, 74, 1.0f, "v");
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> ref_bf16(static_cast<std::size_t>(B * H * T)), ref_f32(ref_bf16.size());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < T; ++t) {
        const float* qr = q.data<float>() + ((b * T + t) * H + h) * D;
        double sum_bf16 = 0, sum_f32 = 0;
        for (std::int64_t j = 0; j <= offset + t; ++j) {
          const float* kj = k.data<float>() + ((b * Hkv + h / n_rep) * S + j) * D;
          double s_bf16 = 0, s_f32 = 0;
          for (std::int64_t d = 0; d < D; ++d) {
            s_bf16 += bf(qr[d]) * bf(kj[d]);
            s_f32 += static_cast<double>(qr[d]) * kj[d];
          }
          sum_bf16 += std::exp(s_bf16 * scale);
          sum_f32 += std::exp(s_f32 * scale);
        }
        ref_bf16[static_cast<std::size_t>((b * H + h) * T + t)] = std::log(sum_bf16);
        ref_f32[static_cast<std::size_t>((b * H + h) * T + t)] = std::log(sum_f32);
      }
  Tensor out = test::filled(q.shape(), NAN, "out"), lse = test::filled({B, H, T}, NAN, "lse");
  ops::attention_forward(out, q, k, v, {.q_pos_offset = offset, .bf16_products = true}, &lse);
  double err_bf16 = 0, miss_f32 = 0;
  for (std::size_t i = 0; i < ref_bf16.size(); ++i) {
    err_bf16 = std::max(err_bf16, std::fabs(lse.data<float>()[i] - ref_bf16[i]));
    miss_f32 = std::max(miss_f32, std::fabs(ref_f32[i] - ref_bf16[i]));
  }
  CHECK(err_bf16 < 2e-5);
  CHECK(miss_f32 > 2e-4);  // what rounding q and k changes in the scores
}

}  // namespace

TEST_CASE("bf16 attention: the probabilities and values are rounded, the sums f32 (tiles, decode, segments)") {
  check_two_keys({.T = 150, .S = 150, .offset = 0});  // the tile path, two key tiles
  check_two_keys({.T = 1, .S = 300, .offset = 299});  // one query over a cache: the decode kernel on AVX-512
  check_two_keys({.T = 3, .S = 300, .offset = 200});  // a few queries over a cache
  std::vector<std::int32_t> seg(150);
  for (std::size_t i = 0; i < seg.size(); ++i) seg[i] = i < 40 ? 0 : 1;  // two documents; keys 0 and 40 are k_a
  check_two_keys({.T = 150, .S = 150, .offset = 0, .segments = seg});
}

TEST_CASE("bf16 attention: the scores are products of the rounded q and k") {
  check_scores(70, 70, 0);
  check_scores(1, 260, 259);       // the decode kernel (on AVX512_BF16: its pair products, head width 64)
  check_scores(1, 263, 262, 128);  // and head width 128, a last block of 7 keys
}

TEST_CASE("bf16 attention backward: products of rounded operands, f32 sums; the same bits on 1 and 3 threads") {
  const std::int64_t B = 1, T = 100, H = 4, Hkv = 2, D = 64, n_rep = H / Hkv;
  const Tensor q = test::random_tensor({B, T, H, D}, 81, 1.0f, "q");
  const Tensor k = test::random_tensor({B, Hkv, T, D}, 82, 1.0f, "k");
  const Tensor v = test::random_tensor({B, Hkv, T, D}, 83, 1.0f, "v");
  const Tensor dout = test::random_tensor({B, T, H, D}, 84, 1.0f, "dout");
  const ops::AttentionOptions opts{.bf16_products = true};
  Tensor out = test::filled(q.shape(), NAN, "out"), lse = test::filled({B, H, T}, NAN, "lse");
  ops::attention_forward(out, q, k, v, opts, &lse);
  Tensor dq = test::filled(q.shape(), NAN, "dq"), dk = test::filled(k.shape(), NAN, "dk");
  Tensor dv = test::filled(v.shape(), NAN, "dv");
  ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, opts);
  Tensor dq32 = test::filled(q.shape(), NAN, "dq32"), dk32 = test::filled(k.shape(), NAN, "dk32");
  Tensor dv32 = test::filled(v.shape(), NAN, "dv32");
  ops::attention_backward(dq32, dk32, dv32, dout, q, k, v, out, lse, {});

  // Reference in double from the kernel's own forward (out, lse): P = e^(s − lse) with s from the rounded
  // q and k; dV += bf16(P)·bf16(dO); dP = bf16(dO)·bf16(V); Δ = rowsum(dO ⊙ O) unrounded; dS = P ⊙ (dP − Δ);
  // dQ = scale · bf16(dS)·bf16(K); dK += scale · bf16(dS)ᵀ·bf16(Q).
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const auto at = [](const Tensor& t, std::int64_t i) { return static_cast<double>(t.data<float>()[i]); };
  std::vector<double> dq_ref(static_cast<std::size_t>(q.numel())), dk_ref(static_cast<std::size_t>(k.numel())),
      dv_ref(static_cast<std::size_t>(v.numel()));
  for (std::int64_t h = 0; h < H; ++h) {
    const std::int64_t g = h / n_rep;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t qi = (t * H + h) * D;
      double delta = 0;
      for (std::int64_t d = 0; d < D; ++d) delta += at(dout, qi + d) * at(out, qi + d);
      for (std::int64_t j = 0; j <= t; ++j) {
        const std::int64_t ki = (g * T + j) * D;
        double s = 0, dp = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          s += bf(at(q, qi + d)) * bf(at(k, ki + d));
          dp += bf(at(dout, qi + d)) * bf(at(v, ki + d));
        }
        const double p = std::exp(s * scale - at(lse, h * T + t)), ds = p * (dp - delta);
        for (std::int64_t d = 0; d < D; ++d) {
          dv_ref[static_cast<std::size_t>(ki + d)] += bf(p) * bf(at(dout, qi + d));
          dq_ref[static_cast<std::size_t>(qi + d)] += scale * bf(ds) * bf(at(k, ki + d));
          dk_ref[static_cast<std::size_t>(ki + d)] += scale * bf(ds) * bf(at(q, qi + d));
        }
      }
    }
  }
  // The kernel's P and dS come from f32 scores and exp: a value next to a bf16 rounding boundary may
  // round the other way, one bf16 step in one term; the bound leaves room for that, and f32 attention
  // misses the reference by several times more.
  CHECK(rel_to(dq, dq_ref) < 1e-3);
  CHECK(rel_to(dk, dk_ref) < 1e-3);
  CHECK(rel_to(dv, dv_ref) < 1e-3);
  const double miss = std::max({rel_to(dq32, dq_ref), rel_to(dk32, dk_ref), rel_to(dv32, dv_ref)});
  CHECK(miss > 3e-3);
  MESSAGE("bf16 backward vs its reference: dq ", rel_to(dq, dq_ref), ", dk ", rel_to(dk, dk_ref), ", dv ",
          rel_to(dv, dv_ref), "; f32 backward vs the same reference: ", miss);

  const int threads = omp_get_max_threads();
  omp_set_num_threads(3);
  Tensor out3 = test::filled(q.shape(), 0.0f, "out3"), lse3 = test::filled({B, H, T}, 0.0f, "lse3");
  ops::attention_forward(out3, q, k, v, opts, &lse3);
  Tensor dq3 = test::filled(q.shape(), 0.0f), dk3 = test::filled(k.shape(), 0.0f), dv3 = test::filled(v.shape(), 0.0f);
  ops::attention_backward(dq3, dk3, dv3, dout, q, k, v, out, lse, opts);
  omp_set_num_threads(threads);
  CHECK(test::bit_equal(out3, out));
  CHECK(test::bit_equal(lse3, lse));
  CHECK(test::bit_equal(dq3, dq));
  CHECK(test::bit_equal(dk3, dk));
  CHECK(test::bit_equal(dv3, dv));
}

// Over a bf16 KV cache the products take the cache's values as they are (gemm_serial's bf16 overload: the
// packed kernels read the tiles in place, other CPUs widen them first): the bits of bf16 attention over an
// f32 cache holding the same values, for prefill chunks (the tile path), a few queries and decode steps,
// ragged rows and offsets.
TEST_CASE("bf16 attention over a bf16 KV cache equals bf16 attention over the same values in f32") {
  const std::int64_t R = 2, Hkv = 2, S = 300, D = 64, H = 6;
  const Tensor kb = test::random_tensor({R, Hkv, S, D}, 81, 1.0f, "k").to_host(DType::BF16);
  const Tensor vb = test::random_tensor({R, Hkv, S, D}, 82, 1.0f, "v").to_host(DType::BF16);
  const Tensor kw = kb.to_host(DType::F32), vw = vb.to_host(DType::F32);
  struct Case {
    std::int64_t T;
    std::vector<std::int64_t> offsets, rows;
  };
  for (const Case& c : {Case{150, {0, 150}, {1, 0}}, Case{3, {200, 7}, {0, 1}}, Case{1, {299, 130}, {1, 0}}}) {
    CAPTURE(c.T);
    const auto B = static_cast<std::int64_t>(c.rows.size());
    const Tensor q = test::random_tensor({B, c.T, H, D}, 83, 1.0f, "q");
    Tensor out_b = test::filled(q.shape(), NAN, "out_b"), out_w = test::filled(q.shape(), NAN, "out_w");
    Tensor out_f = test::filled(q.shape(), NAN, "out_f");
    const ops::AttentionOptions opts{.q_pos_offsets = c.offsets, .kv_rows = c.rows, .bf16_products = true};
    ops::attention_forward(out_b, q, kb, vb, opts);
    ops::attention_forward(out_w, q, kw, vw, opts);
    ops::attention_forward(out_f, q, kw, vw, {.q_pos_offsets = c.offsets, .kv_rows = c.rows});
    CHECK(test::bit_equal(out_b, out_w));
    CHECK(!test::bit_equal(out_b, out_f));  // and they are bf16 products, not f32 attention
  }
}
