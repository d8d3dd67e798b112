// Row-wise ops against plain loops in double: RMSNorm (HF order, rstd saved), RoPE against the
// rotate_half formula with llama3 frequencies from model::rope_inv_freq, SwiGLU, the vectorised exp,
// embedding gather, softmax / log-softmax.
#include <doctest/doctest.h>

#include <cmath>

#include "core/error.h"
#include "model/llama_config.h"
#include "ops/cpu/vec_math.h"
#include "ops/embedding.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/softmax.h"
#include "ops/swiglu.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

namespace {
// A handful of fp32 roundings per element against a double reference.
constexpr double kTol = 2e-6;
}  // namespace

TEST_CASE("rms_norm_forward: y = x · rstd · w per row, rstd saved; in place works") {
  const std::int64_t N = 13, C = 67;
  const float eps = 1e-5f;
  const Tensor x = test::random_tensor({N, C}, 1, 3.0f, "x");
  const Tensor w = test::random_tensor({C}, 2, 1.0f, "w");
  Tensor y = test::filled({N, C}, 0.0f);
  Tensor rstd = test::filled({N}, 0.0f, "rstd");
  ops::rms_norm_forward(y, x, w, eps, &rstd);
  std::vector<double> ref(static_cast<std::size_t>(N * C)), ref_rstd(static_cast<std::size_t>(N));
  for (std::int64_t r = 0; r < N; ++r) {
    double ss = 0;
    for (std::int64_t c = 0; c < C; ++c)
      ss += static_cast<double>(x.data<float>()[r * C + c]) * x.data<float>()[r * C + c];
    const double rs = 1.0 / std::sqrt(ss / C + eps);
    ref_rstd[static_cast<std::size_t>(r)] = rs;
    for (std::int64_t c = 0; c < C; ++c)
      ref[static_cast<std::size_t>(r * C + c)] = x.data<float>()[r * C + c] * rs * w.data<float>()[c];
  }
  CHECK(test::max_rel_error(y, ref) < kTol);
  CHECK(test::max_rel_error(rstd, ref_rstd) < kTol);

  Tensor inplace = x.to_host(DType::F32);
  ops::rms_norm_forward(inplace, inplace, w, eps);
  for (std::int64_t i = 0; i < y.numel(); ++i) CHECK(inplace.data<float>()[i] == y.data<float>()[i]);
  CHECK_THROWS_WITH_AS(ops::rms_norm_forward(y, x, test::filled({C + 1}, 1.0f, "w_long"), eps),
                       doctest::Contains("w_long"), ShapeError);
}

TEST_CASE("rope_forward rotates pairs (j, j + D/2) by p · inv_freq, with llama3 frequencies") {
  model::LlamaConfig cfg = model::llama_config_preset("tiny");  // llama3 scaling, original context 64
  cfg.head_dim = 24;                                            // 12 frequencies across all three bands
  const std::vector<float> inv_freq = model::rope_inv_freq(cfg);
  const std::int64_t B = 2, T = 19, Hx = 3, D = cfg.head_dim, half = D / 2, pos0 = 141;  // past 64
  Tensor cos = test::filled({T, half}, 0.0f, "cos"), sin = test::filled({T, half}, 0.0f, "sin");
  ops::rope_table_fill(cos, sin, inv_freq, pos0);
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos0 + t) * inv_freq[static_cast<std::size_t>(i)];
      CHECK(cos.data<float>()[t * half + i] == static_cast<float>(std::cos(static_cast<double>(angle))));
      CHECK(sin.data<float>()[t * half + i] == static_cast<float>(std::sin(static_cast<double>(angle))));
    }
  }
  Tensor x = test::random_tensor({B, T, Hx, D}, 3, 1.0f, "x");
  const Tensor x0 = x.to_host(DType::F32);
  ops::rope_forward(x, cos, sin);
  std::vector<double> ref(static_cast<std::size_t>(x.numel()));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t h = 0; h < Hx; ++h)
        for (std::int64_t j = 0; j < half; ++j) {
          const std::int64_t base = ((b * T + t) * Hx + h) * D;
          const double th = static_cast<double>(static_cast<float>(pos0 + t) * inv_freq[static_cast<std::size_t>(j)]);
          const double a = x0.data<float>()[base + j], c = x0.data<float>()[base + j + half];
          ref[static_cast<std::size_t>(base + j)] = a * std::cos(th) - c * std::sin(th);
          ref[static_cast<std::size_t>(base + j + half)] = c * std::cos(th) + a * std::sin(th);
        }
  CHECK(test::max_rel_error(x, ref) < kTol);
}

TEST_CASE("after rope, q · k depends only on the distance between the positions") {
  model::LlamaConfig cfg = model::llama_config_preset("tiny");
  const std::vector<float> inv_freq = model::rope_inv_freq(cfg);
  const std::int64_t D = cfg.head_dim;
  const Tensor q0 = test::random_tensor({1, 1, 1, D}, 4, 1.0f, "q"),
               k0 = test::random_tensor({1, 1, 1, D}, 5, 1.0f, "k");
  auto rotated_dot = [&](std::int64_t pq, std::int64_t pk) {
    Tensor q = q0.to_host(DType::F32), k = k0.to_host(DType::F32);
    Tensor cq = test::filled({1, D / 2}, 0), sq = test::filled({1, D / 2}, 0), ck = test::filled({1, D / 2}, 0),
           sk = test::filled({1, D / 2}, 0);
    ops::rope_table_fill(cq, sq, inv_freq, pq);
    ops::rope_table_fill(ck, sk, inv_freq, pk);
    ops::rope_forward(q, cq, sq);
    ops::rope_forward(k, ck, sk);
    double s = 0;
    for (std::int64_t d = 0; d < D; ++d) s += static_cast<double>(q.data<float>()[d]) * k.data<float>()[d];
    return s;
  };
  CHECK(rotated_dot(10, 3) == doctest::Approx(rotated_dot(107, 100)).epsilon(1e-4));
  CHECK(rotated_dot(0, 0) == doctest::Approx(rotated_dot(300, 300)).epsilon(1e-4));
}

TEST_CASE("exp_f32 (the vectorised exp) stays within 3 ulp of exp on [-87, 88]") {
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.0f + 175.0f * static_cast<float>(i) / 200000.0f;
    const double e = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(ops::cpu::exp_f32(x) - e) / e);
  }
  MESSAGE("exp_f32 worst relative error ", worst);
  CHECK(worst < 3 * 5.96e-8);
  CHECK(ops::cpu::exp_f32(0.0f) == 1.0f);
  CHECK(ops::cpu::exp_f32(-1000.0f) < 1e-37f);  // clamped, documented
}

TEST_CASE("swiglu_forward: silu(gate) · up, including large |gate|") {
  // 549 columns: two of the kernel's 256-column blocks and a partial one.
  for (const std::int64_t F : {131, 549}) {
    CAPTURE(F);
    const std::int64_t N = 7;
    Tensor gate = test::random_tensor({N, F}, 6, 4.0f, "gate");
    gate.data<float>()[0] = 60.0f;
    gate.data<float>()[1] = -60.0f;
    const Tensor up = test::random_tensor({N, F}, 7, 1.0f, "up");
    Tensor out = test::filled({N, F}, 0.0f);
    ops::swiglu_forward(out, gate, up);
    std::vector<double> ref(static_cast<std::size_t>(N * F));
    for (std::int64_t i = 0; i < N * F; ++i) {
      const double g = gate.data<float>()[i];
      ref[static_cast<std::size_t>(i)] = g / (1.0 + std::exp(-g)) * up.data<float>()[i];
    }
    CHECK(test::max_rel_error(out, ref) < kTol);
    ops::swiglu_forward(gate, gate, up);  // in place into gate
    for (std::int64_t i = 0; i < N * F; ++i) CHECK(gate.data<float>()[i] == out.data<float>()[i]);
  }
}

TEST_CASE("embedding_forward gathers rows; an id outside the vocabulary is an error naming it") {
  const Tensor table = test::random_tensor({50, 12}, 8, 1.0f, "embed_tokens");
  Tensor ids = Tensor::zeros({2, 3}, DType::I32, "ids");
  const std::int32_t values[] = {0, 49, 7, 7, 13, 1};
  std::copy_n(values, 6, ids.data<std::int32_t>());
  Tensor out = test::filled({2, 3, 12}, 0.0f);
  ops::embedding_forward(out, table, ids);
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 12; ++c) CHECK(out.data<float>()[i * 12 + c] == table.data<float>()[values[i] * 12 + c]);
  Tensor ids64 = Tensor::zeros({2, 3}, DType::I64, "ids64");
  for (int i = 0; i < 6; ++i) ids64.data<std::int64_t>()[i] = values[i];
  Tensor out64 = test::filled({2, 3, 12}, 0.0f);
  ops::embedding_forward(out64, table, ids64);
  for (int i = 0; i < 72; ++i) CHECK(out64.data<float>()[i] == out.data<float>()[i]);
  ids.data<std::int32_t>()[4] = 50;
  CHECK_THROWS_WITH_AS(ops::embedding_forward(out, table, ids), doctest::Contains("token id 50 at flat position 4"),
                       ShapeError);
}

TEST_CASE("softmax and log_softmax over the last dimension") {
  const std::int64_t N = 5, V = 1003;
  const Tensor x = test::random_tensor({N, V}, 9, 10.0f, "logits");
  Tensor p = test::filled({N, V}, 0.0f), lp = test::filled({N, V}, 0.0f);
  ops::softmax_forward(p, x);
  ops::log_softmax_forward(lp, x);
  std::vector<double> ref_p(static_cast<std::size_t>(N * V)), ref_lp(static_cast<std::size_t>(N * V));
  for (std::int64_t r = 0; r < N; ++r) {
    double m = -INFINITY, s = 0;
    for (std::int64_t j = 0; j < V; ++j) m = std::max(m, static_cast<double>(x.data<float>()[r * V + j]));
    for (std::int64_t j = 0; j < V; ++j) s += std::exp(x.data<float>()[r * V + j] - m);
    for (std::int64_t j = 0; j < V; ++j) {
      ref_lp[static_cast<std::size_t>(r * V + j)] = x.data<float>()[r * V + j] - m - std::log(s);
      ref_p[static_cast<std::size_t>(r * V + j)] = std::exp(ref_lp[static_cast<std::size_t>(r * V + j)]);
    }
  }
  CHECK(test::max_rel_error(p, ref_p) < kTol);
  CHECK(test::max_rel_error(lp, ref_lp) < kTol);
  Tensor inplace = x.to_host(DType::F32);
  ops::log_softmax_forward(inplace, inplace);
  for (std::int64_t i = 0; i < N * V; ++i) CHECK(inplace.data<float>()[i] == lp.data<float>()[i]);
}
