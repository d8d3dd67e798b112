// The production f32 backward kernels against the f64 references of ops/ref/ops_ref.h (themselves
// checked by finite differences in backward_ref_test.cpp), on shapes that are multiples of no tile
// size: RMSNorm (dx, dw, accumulate, aliasing), RoPE (shared and per-sequence tables, per-token
// tables), SwiGLU (in place), embedding scatter-add, the fused cross-entropy, and attention (key tiles
// of 64, GQA 1/2/3/4, KV offsets, segments with padding; the segment-masked forward too), plus
// thread-count invariance.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "ops/attention.h"
#include "ops/cpu/cross_entropy_avx512.h"
#include "ops/cpu/gemm_avx512.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/ref/ops_ref.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

namespace {

// Tolerances: max |f32 − f64 ref| / max |ref| over the whole tensor (ops_test_util.h); each about
// 6-10x what this machine measures (OpenBLAS 0.3.21), room for another BLAS's summation order.
// Row-wise backward ops: a handful of f32 roundings per element, the row sums in double (measured
// ≤ 1.5e-7).
constexpr double kRowTol = 1e-6;
// Cross-entropy: exp_f32 (≤ 1.4 ulp) and one scaling per element; the loss is a sum over rows of
// log-sum-exp values of size ~log V, each good to a few ulp (measured ≤ 1e-7).
constexpr double kCrossEntropyTol = 1e-6;
// Attention: f32 dot products over D and sums over up to ~200 keys (dQ) or ~200 query rows x n_rep
// (dK, dV), with P recomputed from an f32 lse: errors grow with the sum length (measured ≤ 7.6e-7);
// a wrong mask, GQA mapping or missing Δ term is off by O(1).
constexpr double kAttentionTol = 5e-6;

std::vector<double> to_double(const Tensor& t) {
  const Tensor c = t.to_host(DType::F32);
  std::vector<double> v(static_cast<std::size_t>(c.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = c.data<float>()[i];
  return v;
}

}  // namespace

TEST_CASE("rms_norm_backward: dx and dw against the f64 reference; accumulate and aliasing") {
  const std::int64_t N = 13, C = 67;
  const float eps = 1e-5f;
  const Tensor x = test::random_tensor({N, C}, 1, 3.0f, "x");
  const Tensor w = test::random_tensor({C}, 2, 1.0f, "w");
  const Tensor dy = test::random_tensor({N, C}, 3, 1.0f, "dy");
  Tensor y = test::filled({N, C}, 0.0f), rstd = test::filled({N}, 0.0f, "rstd");
  ops::rms_norm_forward(y, x, w, eps, &rstd);
  std::vector<double> dx_ref, dw_ref(static_cast<std::size_t>(C), 0.0);
  ops::ref::rms_norm_backward(dx_ref, &dw_ref, to_double(dy), to_double(x), to_double(w), N, C,
                              static_cast<double>(eps));

  Tensor dx = test::filled({N, C}, 0.0f, "dx"), dw = test::filled({C}, 0.0f, "dw");
  ops::rms_norm_backward(dx, &dw, dy, x, w, rstd);
  CHECK(test::max_rel_error(dx, dx_ref) < kRowTol);
  CHECK(test::max_rel_error(dw, dw_ref) < kRowTol);

  // accumulate adds to what dx holds; dw accumulates always.
  Tensor acc = test::filled({N, C}, 0.5f, "acc");
  ops::rms_norm_backward(acc, &dw, dy, x, w, rstd, {.accumulate = true});
  std::vector<double> acc_ref = dx_ref, dw2_ref = dw_ref;
  for (double& a : acc_ref) a += 0.5;
  for (double& a : dw2_ref) a *= 2;
  CHECK(test::max_rel_error(acc, acc_ref) < kRowTol);
  CHECK(test::max_rel_error(dw, dw2_ref) < kRowTol);

  // dx may be dy itself.
  Tensor inplace = dy.to_host(DType::F32);
  ops::rms_norm_backward(inplace, nullptr, inplace, x, w, rstd);
  CHECK(test::bit_equal(inplace, dx));
  CHECK_THROWS_WITH_AS(ops::rms_norm_backward(dx, nullptr, dy, x, w, test::filled({N + 1}, 1.0f, "rstd_long")),
                       doctest::Contains("rstd_long"), ShapeError);
}

TEST_CASE("swiglu_backward against the f64 reference, in place into gate and up") {
  // 549 columns: two of the kernel's 256-column blocks and a partial one.
  for (const std::int64_t F : {93, 549}) {
    CAPTURE(F);
    const std::int64_t N = 11;
    const Tensor gate = test::random_tensor({N, F}, 4, 3.0f, "gate"), up = test::random_tensor({N, F}, 5, 1.0f, "up");
    const Tensor dout = test::random_tensor({N, F}, 6, 1.0f, "dout");
    std::vector<double> dg_ref, du_ref;
    ops::ref::swiglu_backward(dg_ref, du_ref, to_double(dout), to_double(gate), to_double(up));
    Tensor dg = test::filled({N, F}, 0.0f, "dgate"), du = test::filled({N, F}, 0.0f, "dup");
    ops::swiglu_backward(dg, du, dout, gate, up);
    CHECK(test::max_rel_error(dg, dg_ref) < kRowTol);
    CHECK(test::max_rel_error(du, du_ref) < kRowTol);
    Tensor g2 = gate.to_host(DType::F32), u2 = up.to_host(DType::F32);
    ops::swiglu_backward(g2, u2, dout, g2, u2);
    CHECK(test::bit_equal(g2, dg));
    CHECK(test::bit_equal(u2, du));
  }
}

TEST_CASE("rope_backward inverts the rotation: shared, per-sequence and per-token tables") {
  const std::int64_t B = 2, T = 19, Hx = 3, D = 24, half = D / 2;
  std::vector<float> inv_freq(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i) inv_freq[static_cast<std::size_t>(i)] = std::pow(10000.0f, -2.0f * i / D);
  const Tensor g = test::random_tensor({B, T, Hx, D}, 7, 1.0f, "g");

  SUBCASE("one table for the batch") {
    Tensor cos = test::filled({T, half}, 0.0f, "cos"), sin = test::filled({T, half}, 0.0f, "sin");
    ops::rope_table_fill(cos, sin, inv_freq, 5);
    std::vector<double> cos_n, sin_n;  // per token (B·T rows)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < T * half; ++i) {
        cos_n.push_back(cos.data<float>()[i]);
        sin_n.push_back(sin.data<float>()[i]);
      }
    std::vector<double> ref = to_double(g);
    ops::ref::rope_backward(ref, cos_n, sin_n, B * T, Hx, D);
    Tensor dx = g.to_host(DType::F32);
    ops::rope_backward(dx, cos, sin);
    CHECK(test::max_rel_error(dx, ref) < kRowTol);
    // The backward of the forward is the identity (a rotation's transpose is its inverse).
    Tensor round = g.to_host(DType::F32);
    ops::rope_forward(round, cos, sin);
    ops::rope_backward(round, cos, sin);
    CHECK(test::max_rel_error(round, to_double(g)) < kRowTol);
  }
  SUBCASE("per-token positions (packed documents) and per-sequence tables agree with the formula") {
    Tensor pos = Tensor::empty({B, T}, DType::I32, host_allocator(), "positions");
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t)
        pos.data<std::int32_t>()[b * T + t] = static_cast<std::int32_t>(t < 7 + b ? t : t - 7 - b);
    Tensor cos = test::filled({B, T, half}, 0.0f, "cos"), sin = test::filled({B, T, half}, 0.0f, "sin");
    ops::rope_table_fill_positions(cos, sin, inv_freq, pos);
    // Row (b, t) holds exactly what rope_table_fill gives for its position.
    Tensor c1 = test::filled({1, half}, 0.0f), s1 = test::filled({1, half}, 0.0f);
    for (std::int64_t i = 0; i < B * T; ++i) {
      ops::rope_table_fill(c1, s1, inv_freq, pos.data<std::int32_t>()[i]);
      REQUIRE(std::memcmp(c1.raw(), cos.data<float>() + i * half, static_cast<std::size_t>(half) * 4) == 0);
      REQUIRE(std::memcmp(s1.raw(), sin.data<float>() + i * half, static_cast<std::size_t>(half) * 4) == 0);
    }
    std::vector<double> ref = to_double(g);
    ops::ref::rope_backward(ref, to_double(cos), to_double(sin), B * T, Hx, D);
    Tensor dx = g.to_host(DType::F32);
    ops::rope_backward(dx, cos, sin);
    CHECK(test::max_rel_error(dx, ref) < kRowTol);
    pos.data<std::int32_t>()[3] = -1;
    CHECK_THROWS_WITH_AS(ops::rope_table_fill_positions(cos, sin, inv_freq, pos), doctest::Contains("must be >= 0"),
                         ShapeError);
  }
}

TEST_CASE("embedding_backward scatter-adds rows (repeated ids), range checked") {
  const std::int64_t V = 37, C = 70, n = 23;
  Tensor ids = Tensor::empty({n}, DType::I64, host_allocator(), "ids");
  std::vector<std::int64_t> idv;
  for (std::int64_t i = 0; i < n; ++i) idv.push_back(ids.data<std::int64_t>()[i] = (i * 7) % 11);
  const Tensor dout = test::random_tensor({n, C}, 8, 1.0f, "dout");
  std::vector<double> ref(static_cast<std::size_t>(V * C), 1.0);
  ops::ref::embedding_backward(ref, to_double(dout), idv, C);
  Tensor dtable = test::filled({V, C}, 1.0f, "dtable");
  ops::embedding_backward(dtable, dout, ids);
  CHECK(test::max_rel_error(dtable, ref) < kRowTol);
  ids.data<std::int64_t>()[5] = V;
  CHECK_THROWS_WITH_AS(ops::embedding_backward(dtable, dout, ids), doctest::Contains("outside the vocabulary"),
                       ShapeError);
}

TEST_CASE("cross_entropy_forward_backward: loss sum, count and dlogits in place; ignored rows; loss only") {
  const std::int64_t N = 9, V = 1003;
  const Tensor logits = test::random_tensor({N, V}, 9, 4.0f, "logits");
  Tensor targets = Tensor::empty({N}, DType::I32, host_allocator(), "targets");
  std::vector<std::int64_t> tv;
  for (std::int64_t i = 0; i < N; ++i)
    tv.push_back(targets.data<std::int32_t>()[i] = i % 4 == 1 ? -100 : (i * 331) % V);
  const double scale = 1.0 / 7.0;  // 7 valid rows: HF's mean
  std::vector<double> dref;
  const auto ref = ops::ref::cross_entropy(&dref, to_double(logits), tv, V, scale);
  REQUIRE(ref.n_valid == 7);

  Tensor z = logits.to_host(DType::F32), row_loss = test::filled({N}, -1.0f, "row_loss");
  const ops::CrossEntropyResult r =
      ops::cross_entropy_forward_backward(z, targets, {.grad_scale = static_cast<float>(scale)}, &row_loss);
  CHECK(r.n_valid == 7);
  CHECK(std::fabs(r.loss_sum - ref.loss_sum) / ref.loss_sum < kCrossEntropyTol);
  CHECK(test::max_rel_error(z, dref) < kCrossEntropyTol);
  CHECK(row_loss.data<float>()[1] == 0.0f);
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i) sum += row_loss.data<float>()[i];
  CHECK(std::fabs(sum - ref.loss_sum) / ref.loss_sum < kCrossEntropyTol);

  Tensor untouched = logits.to_host(DType::F32);
  const ops::CrossEntropyResult lo = ops::cross_entropy_forward_backward(untouched, targets, {.grad = false});
  CHECK(test::bit_equal(untouched, logits));
  CHECK(lo.loss_sum == doctest::Approx(r.loss_sum).epsilon(1e-6));

  targets.data<std::int32_t>()[4] = static_cast<std::int32_t>(V);
  Tensor z2 = logits.to_host(DType::F32);
  CHECK_THROWS_WITH_AS(ops::cross_entropy_forward_backward(z2, targets), doctest::Contains("outside the vocabulary"),
                       ShapeError);
  CHECK(test::bit_equal(z2, logits));  // nothing written before the check
}

namespace {

struct AttnCase {
  std::int64_t B, T, H, Hkv, D, S, offset;
  bool segments;
  float q_std;
};

// Two documents per row (row b's first ends at 5 + 29·b) and a padding tail of 3 with segments on.
std::vector<std::int32_t> make_segments(std::int64_t B, std::int64_t T) {
  std::vector<std::int32_t> seg(static_cast<std::size_t>(B * T));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      seg[static_cast<std::size_t>(b * T + t)] = t < 5 + 29 * b ? 0 : (t < T - 3 ? 1 : -1);
  return seg;
}

void check_attention_backward(const AttnCase& c) {
  CAPTURE(c.B);
  CAPTURE(c.T);
  CAPTURE(c.H);
  CAPTURE(c.Hkv);
  CAPTURE(c.D);
  CAPTURE(c.S);
  CAPTURE(c.offset);
  CAPTURE(c.segments);
  const Tensor q = test::random_tensor({c.B, c.T, c.H, c.D}, 31, c.q_std, "q");
  const Tensor k = test::random_tensor({c.B, c.Hkv, c.S, c.D}, 32, 1.0f, "k");
  const Tensor v = test::random_tensor({c.B, c.Hkv, c.S, c.D}, 33, 1.0f, "v");
  const Tensor dout = test::random_tensor({c.B, c.T, c.H, c.D}, 34, 1.0f, "dout");
  const std::vector<std::int32_t> seg = c.segments ? make_segments(c.B, c.T) : std::vector<std::int32_t>{};
  ops::ref::AttentionShape s{
      static_cast<std::size_t>(c.B),      static_cast<std::size_t>(c.T),     static_cast<std::size_t>(c.H),
      static_cast<std::size_t>(c.Hkv),    static_cast<std::size_t>(c.D),     static_cast<std::size_t>(c.S),
      static_cast<std::size_t>(c.offset), c.segments ? seg.data() : nullptr, 0.0};
  const std::vector<double> qd = to_double(q), kd = to_double(k), vd = to_double(v);
  std::vector<double> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
  ops::ref::attention_forward(out_ref, &lse_ref, qd, kd, vd, s);
  ops::ref::attention_backward(dq_ref, dk_ref, dv_ref, to_double(dout), qd, kd, vd, s);

  Tensor out = test::filled({c.B, c.T, c.H, c.D}, NAN, "out"), lse = test::filled({c.B, c.H, c.T}, NAN, "lse");
  if (c.segments) {
    ops::attention_forward(out, q, k, v, {.segment_ids = seg}, &lse);
  } else {
    ops::attention_forward(out, q, k, v, {.q_pos_offset = c.offset}, &lse);
  }
  // The forward against the reference too (padding rows: output 0, lse −inf, as the reference has it).
  CHECK(test::max_rel_error(out, out_ref) < kAttentionTol);
  for (std::size_t i = 0; i < lse_ref.size(); ++i) {
    if (std::isinf(lse_ref[i])) {
      CHECK(lse.data<float>()[i] == -INFINITY);
      lse_ref[i] = 0.0;  // compared as equal above; keeps the relative error below finite
    }
  }
  Tensor lse_finite = lse.to_host(DType::F32);
  for (std::int64_t i = 0; i < lse_finite.numel(); ++i)
    if (std::isinf(lse_finite.data<float>()[i])) lse_finite.data<float>()[i] = 0.0f;
  CHECK(test::max_rel_error(lse_finite, lse_ref) < kAttentionTol);
  Tensor dq = test::filled(q.shape(), NAN, "dq"), dk = test::filled(k.shape(), NAN, "dk"),
         dv = test::filled(v.shape(), NAN, "dv");
  ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, {.q_pos_offset = c.offset, .segment_ids = seg});
  CHECK(test::max_rel_error(dq, dq_ref) < kAttentionTol);
  CHECK(test::max_rel_error(dk, dk_ref) < kAttentionTol);
  CHECK(test::max_rel_error(dv, dv_ref) < kAttentionTol);

  // The same bits with three threads: every element has one writer, summed in a fixed order.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(3);
  Tensor dq3 = test::filled(q.shape(), 0.0f), dk3 = test::filled(k.shape(), 0.0f), dv3 = test::filled(v.shape(), 0.0f);
  ops::attention_backward(dq3, dk3, dv3, dout, q, k, v, out, lse, {.q_pos_offset = c.offset, .segment_ids = seg});
  omp_set_num_threads(threads);
  CHECK(test::bit_equal(dq3, dq));
  CHECK(test::bit_equal(dk3, dk));
  CHECK(test::bit_equal(dv3, dv));
}

}  // namespace

TEST_CASE("cross-entropy row with AVX-512: every tail length, the target anywhere, large and tiny logits") {
  if (!ops::cpu::gemm_avx512_supported()) {
    MESSAGE("this CPU has no AVX-512F/BW/VL: cross_entropy_row_avx512 is not used here; skipped");
    return;
  }
  for (const std::int64_t V : {1, 2, 15, 16, 17, 31, 63, 64, 65, 127, 1003, 32000}) {
    CAPTURE(V);
    for (const float spread : {4.0f, 60.0f}) {  // 60: most exponentials underflow towards 0
      const Tensor logits = test::random_tensor({1, V}, static_cast<std::uint64_t>(V), spread, "logits");
      for (const std::int64_t y : {std::int64_t{0}, V / 2, V - 1}) {
        const std::vector<double> ld = to_double(logits);
        std::vector<double> dref;
        const auto ref = ops::ref::cross_entropy(&dref, ld, {y}, static_cast<std::size_t>(V), 0.25);
        Tensor z = logits.to_host(DType::F32);
        const double loss = ops::cpu::cross_entropy_row_avx512(z.data<float>(), V, y, 0.25f, true);
        CHECK(std::fabs(loss - ref.loss_sum) <= kCrossEntropyTol * std::max(1.0, std::fabs(ref.loss_sum)));
        // Against grad_scale, the entries' bound: where p_y ≈ 1 every entry of the gradient is ≈ 0.
        double worst = 0;
        for (std::int64_t j = 0; j < V; ++j)
          worst = std::max(worst, std::fabs(z.data<float>()[j] - dref[static_cast<std::size_t>(j)]) / 0.25);
        CHECK(worst < kCrossEntropyTol);
        Tensor untouched = logits.to_host(DType::F32);
        CHECK(ops::cpu::cross_entropy_row_avx512(untouched.data<float>(), V, y, 0.25f, false) == loss);
        CHECK(test::bit_equal(untouched, logits));
      }
    }
  }
}

TEST_CASE("attention_backward against the f64 reference: tiles, GQA 1/2/3/4, offsets") {
  check_attention_backward({2, 67, 4, 4, 16, 67, 0, false, 1.0f});   // MHA, T just past one key tile
  check_attention_backward({1, 130, 4, 2, 8, 130, 0, false, 1.0f});  // GQA 2, three key tiles
  check_attention_backward({2, 45, 8, 2, 24, 45, 0, false, 2.0f});   // GQA 4, sharper softmax
  check_attention_backward({1, 21, 6, 2, 40, 21, 0, false, 1.0f});   // GQA 3
  check_attention_backward({2, 9, 4, 1, 8, 83, 70, false, 1.0f});    // offset 70, keys past the last query unused
  check_attention_backward({1, 1, 4, 2, 8, 5, 4, false, 1.0f});      // one decode-like query
}

TEST_CASE("attention_backward with segment ids: packed documents and padding") {
  check_attention_backward({2, 77, 4, 2, 16, 77, 0, true, 1.5f});  // GQA 2, documents straddle key tiles
  check_attention_backward({1, 70, 4, 1, 8, 70, 0, true, 1.0f});   // GQA 4
  check_attention_backward({2, 40, 2, 2, 8, 40, 0, true, 1.0f});   // MHA
}

TEST_CASE("attention with segment ids or backward: what it cannot do is an error") {
  const Tensor q = test::random_tensor({1, 4, 2, 8}, 1), k = test::random_tensor({1, 1, 4, 8}, 2);
  Tensor dq = test::filled(q.shape(), 0.0f), dk = test::filled(k.shape(), 0.0f), dv = test::filled(k.shape(), 0.0f);
  const Tensor lse = test::filled({1, 2, 4}, 0.0f, "lse");
  const std::vector<std::int64_t> rows = {0};
  CHECK_THROWS_WITH_AS(ops::attention_backward(dq, dk, dv, q, q, k, k, q, lse, {.kv_rows = rows}),
                       doctest::Contains("ragged"), UnsupportedError);
  const std::vector<std::int32_t> seg = {0, 0, 1};
  CHECK_THROWS_WITH_AS(ops::attention_backward(dq, dk, dv, q, q, k, k, q, lse, {.segment_ids = seg}),
                       doctest::Contains("segment ids"), ShapeError);
  Tensor out = test::filled(q.shape(), 0.0f);
  const std::vector<std::int32_t> seg4 = {0, 0, 1, 1};
  CHECK_THROWS_WITH_AS(ops::attention_forward(out, q, k, k, {.kv_rows = rows, .segment_ids = seg4}),
                       doctest::Contains("segment ids"), UnsupportedError);
}
