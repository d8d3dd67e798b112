// The f64 references of ops/ref/ops_ref.h checked against central finite differences in double: for
// each op, L = Σ G ⊙ forward(inputs) with a random cotangent G, and every input coordinate's
// (L(x + h) − L(x − h)) / 2h is compared with the reference backward's gradient. This is what makes
// the references the truth the production f32 backward is then held to (backward_test.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "ops/ref/ops_ref.h"
#include "tests/support/test_support.h"

using namespace adapt;
using ops::ref::AttentionShape;

namespace {

// Central differences in double with h = 1e-5 on O(1) inputs: truncation ~h²·|f'''| ≈ 1e-10, rounding
// ~1e-16·|L| / h ≈ 1e-10 (measured ≤ 4e-10 of the gradient's scale); a wrong formula is off by O(1).
constexpr double kFdStep = 1e-5;
constexpr double kFdTol = 1e-8;

std::vector<double> random_vec(std::size_t n, std::uint64_t salt, double std = 1.0) {
  std::mt19937_64 rng(test::kSeed ^ (salt * 0x9e3779b97f4a7c15ull));
  std::normal_distribution<double> dist(0.0, std);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

/// max |analytic − fd| / max |fd| over all coordinates of x, with fd from central differences of loss().
double fd_check(std::vector<double>& x, const std::function<double()>& loss, const std::vector<double>& analytic) {
  REQUIRE(analytic.size() == x.size());
  double max_err = 0, max_ref = 1e-300;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + kFdStep;
    const double lp = loss();
    x[i] = x0 - kFdStep;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * kFdStep);
    max_err = std::max(max_err, std::fabs(fd - analytic[i]));
    max_ref = std::max(max_ref, std::fabs(fd));
  }
  return max_err / max_ref;
}

}  // namespace

TEST_CASE("ref: linear, rms_norm, swiglu, rope backward match finite differences") {
  const std::size_t N = 5, in = 7, out = 6;
  SUBCASE("linear") {
    std::vector<double> x = random_vec(N * in, 1), w = random_vec(out * in, 2), g = random_vec(N * out, 3), y;
    auto loss = [&] {
      ops::ref::linear_forward(y, x, w, N, in, out);
      return dot(g, y);
    };
    std::vector<double> dx, dw(out * in, 0.0);
    ops::ref::linear_backward(dx, &dw, g, x, w, N, in, out);
    CHECK(fd_check(x, loss, dx) < kFdTol);
    CHECK(fd_check(w, loss, dw) < kFdTol);
  }
  SUBCASE("rms_norm") {
    const double eps = 1e-5;
    std::vector<double> x = random_vec(N * in, 4, 2.0), w = random_vec(in, 5), g = random_vec(N * in, 6), y;
    auto loss = [&] {
      ops::ref::rms_norm_forward<double>(y, nullptr, x, w, N, in, eps);
      return dot(g, y);
    };
    std::vector<double> dx, dw(in, 0.0);
    ops::ref::rms_norm_backward(dx, &dw, g, x, w, N, in, eps);
    CHECK(fd_check(x, loss, dx) < kFdTol);
    CHECK(fd_check(w, loss, dw) < kFdTol);
  }
  SUBCASE("swiglu") {
    std::vector<double> gate = random_vec(N * in, 7, 2.0), up = random_vec(N * in, 8), g = random_vec(N * in, 9), y;
    auto loss = [&] {
      ops::ref::swiglu_forward(y, gate, up);
      return dot(g, y);
    };
    std::vector<double> dgate, dup;
    ops::ref::swiglu_backward(dgate, dup, g, gate, up);
    CHECK(fd_check(gate, loss, dgate) < kFdTol);
    CHECK(fd_check(up, loss, dup) < kFdTol);
  }
  SUBCASE("rope") {
    const std::size_t Hx = 3, D = 8, half = D / 2;
    std::vector<double> x = random_vec(N * Hx * D, 10), g = random_vec(N * Hx * D, 11), cos(N * half), sin(N * half);
    for (std::size_t n = 0; n < N; ++n)
      for (std::size_t j = 0; j < half; ++j) {
        const double angle = static_cast<double>(n * 7 + 3) * std::pow(10000.0, -2.0 * j / D);
        cos[n * half + j] = std::cos(angle);
        sin[n * half + j] = std::sin(angle);
      }
    auto loss = [&] {
      std::vector<double> y = x;
      ops::ref::rope_forward(y, cos, sin, N, Hx, D);
      return dot(g, y);
    };
    std::vector<double> dx = g;
    ops::ref::rope_backward(dx, cos, sin, N, Hx, D);
    CHECK(fd_check(x, loss, dx) < kFdTol);
  }
}

TEST_CASE("ref: embedding and cross-entropy backward match finite differences") {
  SUBCASE("embedding (repeated ids accumulate)") {
    const std::size_t V = 6, C = 4;
    const std::vector<std::int64_t> ids = {3, 0, 3, 5, 3};
    std::vector<double> table = random_vec(V * C, 12), g = random_vec(ids.size() * C, 13), y;
    auto loss = [&] {
      ops::ref::embedding_forward(y, table, ids, C);
      return dot(g, y);
    };
    std::vector<double> dtable(V * C, 0.0);
    ops::ref::embedding_backward(dtable, g, ids, C);
    CHECK(fd_check(table, loss, dtable) < kFdTol);
  }
  SUBCASE("cross-entropy with ignored rows, mean and external scale") {
    const std::size_t N = 6, V = 11;
    const std::vector<std::int64_t> targets = {4, -100, 0, 10, -100, 7};
    std::vector<double> logits = random_vec(N * V, 14, 3.0);
    for (const double scale : {1.0 / 4.0, 1.0 / 37.0}) {
      auto loss = [&] { return ops::ref::cross_entropy<double>(nullptr, logits, targets, V, 1.0).loss_sum * scale; };
      std::vector<double> dlogits;
      const auto r = ops::ref::cross_entropy(&dlogits, logits, targets, V, scale);
      CHECK(r.n_valid == 4);
      CHECK(fd_check(logits, loss, dlogits) < kFdTol);
      for (std::size_t j = 0; j < V; ++j) CHECK(dlogits[1 * V + j] == 0.0);
    }
  }
}

TEST_CASE("ref: attention backward matches finite differences (GQA 1/2/4, offsets, segments with padding)") {
  struct Case {
    std::size_t B, T, H, Hkv, D, S, offset;
    bool segments;
  };
  for (const Case c : {Case{2, 5, 2, 2, 4, 5, 0, false}, Case{1, 4, 4, 2, 3, 9, 3, false},
                       Case{2, 7, 4, 1, 4, 7, 0, true}, Case{1, 6, 2, 1, 5, 6, 0, true}}) {
    CAPTURE(c.T);
    CAPTURE(c.H);
    CAPTURE(c.Hkv);
    CAPTURE(c.offset);
    CAPTURE(c.segments);
    // Two documents and a padding tail per row when segments are on (rows differ).
    std::vector<std::int32_t> seg(c.B * c.T, 0);
    for (std::size_t b = 0; b < c.B; ++b)
      for (std::size_t t = 0; t < c.T; ++t) seg[b * c.T + t] = t < 2 + b ? 0 : (t + 1 < c.T ? 1 : -1);
    AttentionShape s{c.B, c.T, c.H, c.Hkv, c.D, c.S, c.offset, c.segments ? seg.data() : nullptr, 0.0};
    std::vector<double> q = random_vec(c.B * c.T * c.H * c.D, 20, 1.5),
                        k = random_vec(c.B * c.Hkv * c.S * c.D, 21, 1.5), v = random_vec(c.B * c.Hkv * c.S * c.D, 22),
                        g = random_vec(c.B * c.T * c.H * c.D, 23), out;
    auto loss = [&] {
      ops::ref::attention_forward<double>(out, nullptr, q, k, v, s);
      return dot(g, out);
    };
    std::vector<double> dq, dk, dv;
    ops::ref::attention_backward(dq, dk, dv, g, q, k, v, s);
    CHECK(fd_check(q, loss, dq) < kFdTol);
    CHECK(fd_check(k, loss, dk) < kFdTol);
    CHECK(fd_check(v, loss, dv) < kFdTol);
    if (c.segments) {  // padding rows see nothing: zero output and zero gradient
      for (std::size_t d = 0; d < c.H * c.D; ++d) CHECK(out[(c.T - 1) * c.H * c.D + d] == 0.0);
    }
  }
}
