// ops::matmul and bias_add against a plain triple loop in double: every transpose combination, the
// single-row (sgemv) path, accumulation, garbage in c with beta = 0, row-strided views, and the shape
// errors.
#include <doctest/doctest.h>

#include <limits>

#include "core/error.h"
#include "ops/matmul.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

namespace {

// fp32 products summed over K <= 300 terms: rounding grows like sqrt(K) · 6e-8; 1e-5 is ~20x that.
constexpr double kTol = 1e-5;

// ref = alpha · op(a) · op(b) + beta · c0, in double.
std::vector<double> reference(const Tensor& a, const Tensor& b, const Tensor& c0, const ops::MatmulOptions& o,
                              std::int64_t M, std::int64_t N, std::int64_t K) {
  const float* A = a.data<float>();
  const float* B = b.data<float>();
  std::vector<double> ref(static_cast<std::size_t>(M * N));
  for (std::int64_t i = 0; i < M; ++i) {
    for (std::int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        const double x = o.transpose_a ? A[k * M + i] : A[i * K + k];
        const double y = o.transpose_b ? B[j * K + k] : B[k * N + j];
        s += x * y;
      }
      ref[static_cast<std::size_t>(i * N + j)] =
          o.alpha * s + (o.beta != 0.0f ? o.beta * c0.data<float>()[i * N + j] : 0.0);
    }
  }
  return ref;
}

void check_product(std::int64_t M, std::int64_t N, std::int64_t K, ops::MatmulOptions o) {
  CAPTURE(M);
  CAPTURE(N);
  CAPTURE(K);
  CAPTURE(o.transpose_a);
  CAPTURE(o.transpose_b);
  CAPTURE(o.beta);
  const Tensor a = test::random_tensor(o.transpose_a ? Shape{K, M} : Shape{M, K}, 1, 1.0f, "a");
  const Tensor b = test::random_tensor(o.transpose_b ? Shape{N, K} : Shape{K, N}, 2, 1.0f, "b");
  Tensor c = o.beta != 0.0f ? test::random_tensor({M, N}, 3, 1.0f, "c")
                            : test::filled({M, N}, std::numeric_limits<float>::quiet_NaN(), "c");
  const Tensor c0 = c.to_host(DType::F32);
  ops::matmul(c, a, b, o);
  CHECK(test::max_rel_error(c, reference(a, b, c0, o, M, N, K)) < kTol);
}

}  // namespace

TEST_CASE("matmul matches the triple loop for every transpose combination and odd sizes") {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      check_product(37, 53, 71, {.transpose_a = ta, .transpose_b = tb});
      check_product(5, 300, 129, {.transpose_a = ta, .transpose_b = tb, .alpha = 0.5f, .beta = 1.0f});
    }
  }
}

TEST_CASE("a single row goes through sgemv and agrees; c is overwritten even when it holds NaN") {
  for (bool tb : {false, true}) {
    check_product(1, 257, 96, {.transpose_b = tb});
    check_product(1, 33, 250, {.transpose_b = tb, .beta = 1.0f});
    check_product(1, 1, 1, {.transpose_b = tb});
  }
}

TEST_CASE("linear layout: y (B, T, out) = x (B, T, in) · Wᵀ, and the backward products reuse the call") {
  const std::int64_t B = 2, T = 9, in = 24, out = 40;
  const Tensor x = test::random_tensor({B, T, in}, 4, 1.0f, "x");
  const Tensor w = test::random_tensor({out, in}, 5, 1.0f, "w");
  Tensor y = test::filled({B, T, out}, 0.0f);
  ops::matmul(y, x, w);
  std::vector<double> ref(static_cast<std::size_t>(B * T * out));
  for (std::int64_t r = 0; r < B * T; ++r)
    for (std::int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (std::int64_t i = 0; i < in; ++i)
        s += static_cast<double>(x.data<float>()[r * in + i]) * w.data<float>()[o * in + i];
      ref[static_cast<std::size_t>(r * out + o)] = s;
    }
  CHECK(test::max_rel_error(y, ref) < kTol);

  // dx = g · W (g: (B, T, out)), dW += gᵀ · x.
  const Tensor g = test::random_tensor({B, T, out}, 6, 1.0f, "g");
  Tensor dx = test::filled({B, T, in}, 0.0f, "dx");
  ops::matmul(dx, g, w, {.transpose_b = false});
  Tensor dw = test::random_tensor({out, in}, 7, 1.0f, "dw");
  const Tensor dw0 = dw.to_host(DType::F32);
  ops::matmul(dw, g, x, {.transpose_a = true, .transpose_b = false, .beta = 1.0f});
  std::vector<double> ref_dx(static_cast<std::size_t>(B * T * in), 0.0), ref_dw(static_cast<std::size_t>(out * in));
  for (std::int64_t r = 0; r < B * T; ++r)
    for (std::int64_t i = 0; i < in; ++i)
      for (std::int64_t o = 0; o < out; ++o)
        ref_dx[static_cast<std::size_t>(r * in + i)] +=
            static_cast<double>(g.data<float>()[r * out + o]) * w.data<float>()[o * in + i];
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t i = 0; i < in; ++i) {
      double s = dw0.data<float>()[o * in + i];
      for (std::int64_t r = 0; r < B * T; ++r)
        s += static_cast<double>(g.data<float>()[r * out + o]) * x.data<float>()[r * in + i];
      ref_dw[static_cast<std::size_t>(o * in + i)] = s;
    }
  CHECK(test::max_rel_error(dx, ref_dx) < kTol);
  CHECK(test::max_rel_error(dw, ref_dw) < kTol);
}

TEST_CASE("views with a row stride are read and written in place") {
  // The last position of each sequence: x (B, T, C) narrowed to (B, 1, C) has row stride T·C.
  const std::int64_t B = 3, T = 5, C = 16, N = 7;
  const Tensor x = test::random_tensor({B, T, C}, 8, 1.0f, "x");
  const Tensor w = test::random_tensor({N, C}, 9, 1.0f, "w");
  Tensor y = test::filled({B, T, N}, -1.0f, "y");
  Tensor y_last = y.narrow(1, T - 1, 1);
  ops::matmul(y_last, x.narrow(1, T - 1, 1), w);
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t n = 0; n < N; ++n) {
        const float got = y.data<float>()[(b * T + t) * N + n];
        if (t < T - 1) {
          CHECK(got == -1.0f);  // untouched
        } else {
          double s = 0;
          for (std::int64_t c = 0; c < C; ++c)
            s += static_cast<double>(x.data<float>()[(b * T + t) * C + c]) * w.data<float>()[n * C + c];
          CHECK(got == doctest::Approx(s).epsilon(1e-5));
        }
      }
    }
  }
}

TEST_CASE("bias_add adds one value per column to every row") {
  Tensor y = test::random_tensor({4, 3, 10}, 10, 1.0f, "y");
  const Tensor y0 = y.to_host(DType::F32);
  const Tensor bias = test::random_tensor({10}, 11, 1.0f, "bias");
  ops::bias_add(y, bias);
  for (std::int64_t i = 0; i < y.numel(); ++i)
    CHECK(y.data<float>()[i] == y0.data<float>()[i] + bias.data<float>()[i % 10]);
  CHECK_THROWS_WITH_AS(ops::bias_add(y, test::filled({9}, 0.0f, "short_bias")), doctest::Contains("short_bias"),
                       ShapeError);
}

TEST_CASE("matmul names the tensors and dimensions that do not fit") {
  const Tensor x = test::filled({4, 8}, 1.0f, "x_in");
  const Tensor w = test::filled({5, 9}, 1.0f, "w_bad");
  Tensor y = test::filled({4, 5}, 0.0f, "y_out");
  CHECK_THROWS_WITH_AS(ops::matmul(y, x, w), doctest::Contains("w_bad"), ShapeError);
  const Tensor w_ok = test::filled({5, 8}, 1.0f, "w_ok");
  Tensor y_bad = test::filled({4, 6}, 0.0f, "y_bad");
  CHECK_THROWS_WITH_AS(ops::matmul(y_bad, x, w_ok), doctest::Contains("y_bad"), ShapeError);
  Tensor xi = Tensor::zeros({4, 8}, DType::I32, "ints");
  CHECK_THROWS_WITH_AS(ops::matmul(y, xi, w_ok), doctest::Contains("dtype i32"), ShapeError);
  // A column range keeps unit stride along its rows: accepted as a matrix with row stride 16.
  Tensor wide = test::filled({4, 16}, 1.0f, "wide");
  Tensor cols = wide.narrow(1, 0, 8);
  ops::matmul(y, cols, w_ok);
  CHECK(y.data<float>()[0] == 8.0f);
}

TEST_CASE("ops on a CUDA tensor say the build has no CUDA, naming the op") {
  float dummy[16] = {};
  Tensor dev = Tensor::wrap(dummy, {4, 4}, DType::F32, Device{DeviceKind::Cuda, 0}, nullptr, "on_gpu");
  Tensor host = test::filled({4, 4}, 1.0f);
#if !ADAPT_HAVE_CUDA
  CHECK_THROWS_WITH_AS(ops::matmul(dev, dev, dev), doctest::Contains("op 'matmul' requested on device cuda:0"),
                       UnsupportedError);
#endif
  CHECK_THROWS_AS(ops::matmul(host, dev, host), UnsupportedError);  // mixed devices
}
