// bf16 weights (widened inside the products) give the f32 numbers, and every parallel split gives the
// single-thread numbers; bf16 products (ops::cpu_matmul_dtype) are those of the rounded first operand.
// CTest runs with OMP_NUM_THREADS=1, so this file sets the thread count itself (3: uneven splits) to
// exercise the parallel paths.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "dtype/dtype.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

namespace {

// Products of <= 300 terms: fp32 summation-order differences only.
constexpr double kTol = 1e-5;

// Rounds w to bf16 values (so that the f32 and bf16 copies hold the same numbers); returns the bf16 copy.
Tensor round_to_bf16(Tensor& w) {
  Tensor h = Tensor::empty(w.shape(), DType::BF16, host_allocator(), "w_bf16");
  h.copy_from(w);
  w.copy_from(h);
  return h;
}

double rel(const Tensor& a, const Tensor& b) {
  std::vector<double> ref(b.data<float>(), b.data<float>() + b.numel());
  return test::max_rel_error(a, ref);
}

struct Threads {
  explicit Threads(int n) : saved(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~Threads() { omp_set_num_threads(saved); }
  int saved;
};

}  // namespace

TEST_CASE("matmul with a bf16 weight equals matmul with the same values in f32, on every path") {
  struct Case {
    std::int64_t M, N, K;
    bool trans_b;
  };
  // few rows (<= 8 everywhere, 20: the AVX-512 few-rows kernel's second group), panels by columns
  // (many rows), the untransposed backward layout, a panel narrower than the widening buffer and one
  // that needs several.
  const Case cases[] = {{1, 300, 77, true},    {5, 1000, 64, true}, {20, 300, 70, true}, {40, 70, 96, true},
                        {33, 2100, 129, true}, {17, 90, 50, false}, {1, 64, 20, false}};
  for (int threads : {1, 3}) {
    Threads guard(threads);
    for (const Case& c : cases) {
      CAPTURE(threads);
      CAPTURE(c.M);
      CAPTURE(c.N);
      CAPTURE(c.K);
      CAPTURE(c.trans_b);
      const Tensor x = test::random_tensor({c.M, c.K}, 1, 1.0f, "x");
      Tensor w = test::random_tensor(c.trans_b ? Shape{c.N, c.K} : Shape{c.K, c.N}, 2, 1.0f, "w");
      const Tensor w16 = round_to_bf16(w);
      Tensor y32 = test::filled({c.M, c.N}, 0.0f), y16 = test::filled({c.M, c.N}, 0.0f);
      ops::matmul(y32, x, w, {.transpose_b = c.trans_b});
      ops::matmul(y16, x, w16, {.transpose_b = c.trans_b});
      CHECK(rel(y16, y32) < kTol);
    }
  }
}

TEST_CASE("parallel splits agree with one thread: by columns, by rows, transposed a, accumulate") {
  struct Case {
    std::int64_t M, N, K;
    bool ta, tb;
    float beta;
  };
  const Case cases[] = {{300, 257, 64, false, true, 0.0f},   // columns
                        {400, 20, 128, false, false, 1.0f},  // few columns: rows
                        {70, 90, 500, true, false, 1.0f},    // dW += gᵀ · x
                        {4, 5000, 64, false, true, 1.0f},    // skinny
                        {700, 300, 96, false, true, 0.0f},   // rows, in several ranges per thread
                        {600, 200, 70, true, false, 1.0f}};  // the same with a transposed
  for (const Case& c : cases) {
    CAPTURE(c.M);
    CAPTURE(c.N);
    const Tensor a = test::random_tensor(c.ta ? Shape{c.K, c.M} : Shape{c.M, c.K}, 3, 1.0f, "a");
    const Tensor b = test::random_tensor(c.tb ? Shape{c.N, c.K} : Shape{c.K, c.N}, 4, 1.0f, "b");
    const Tensor c0 = test::random_tensor({c.M, c.N}, 5, 1.0f, "c");
    Tensor one = c0.to_host(DType::F32), three = c0.to_host(DType::F32);
    const ops::MatmulOptions o{.transpose_a = c.ta, .transpose_b = c.tb, .beta = c.beta};
    {
      Threads guard(1);
      ops::matmul(one, a, b, o);
    }
    {
      Threads guard(3);
      ops::matmul(three, a, b, o);
    }
    CHECK(rel(three, one) < kTol);
  }
}

TEST_CASE("attention gives the same output on 1 and 3 threads") {
  const Tensor q = test::random_tensor({2, 70, 6, 16}, 6, 1.0f, "q");
  const Tensor k = test::random_tensor({2, 2, 90, 16}, 7, 1.0f, "k");
  const Tensor v = test::random_tensor({2, 2, 90, 16}, 8, 1.0f, "v");
  Tensor one = test::filled({2, 70, 6, 16}, 0.0f), three = test::filled({2, 70, 6, 16}, 0.0f);
  {
    Threads guard(1);
    ops::attention_forward(one, q, k, v, {.q_pos_offset = 20});
  }
  {
    Threads guard(3);
    ops::attention_forward(three, q, k, v, {.q_pos_offset = 20});
  }
  CHECK(rel(three, one) == 0.0);  // every row is computed by one thread in the same order
}

TEST_CASE("embedding rows from a bf16 table are the widened values") {
  Tensor table = test::random_tensor({40, 24}, 9, 1.0f, "embed");
  const Tensor t16 = round_to_bf16(table);
  Tensor ids = Tensor::zeros({1, 5}, DType::I32, "ids");
  for (int i = 0; i < 5; ++i) ids.data<std::int32_t>()[i] = 7 * i + 3;
  Tensor a = test::filled({1, 5, 24}, 0.0f), b = test::filled({1, 5, 24}, 0.0f);
  ops::embedding_forward(a, table, ids);
  ops::embedding_forward(b, t16, ids);
  for (std::int64_t i = 0; i < a.numel(); ++i) CHECK(a.data<float>()[i] == b.data<float>()[i]);
}

namespace {

// Sets ops::cpu_matmul_dtype for one scope.
struct CpuMatmulDtype {
  explicit CpuMatmulDtype(DType d) : saved(ops::cpu_matmul_dtype()) { ops::set_cpu_matmul_dtype(d); }
  ~CpuMatmulDtype() { ops::set_cpu_matmul_dtype(saved); }
  DType saved;
};

}  // namespace

TEST_CASE("bf16 products: the first operand rounded to bf16, f32 sums, on every path and split") {
  // Every path of cpu::gemm with bf16_products: the dot-product kernel (many rows, where the CPU has
  // AVX512_BF16), and the rounded copy through the f32 paths (one row, few rows, other CPUs).
  if (ops::cpu_bf16_dot_supported()) {
    MESSAGE("AVX512_BF16: products of more than one row run the bf16 dot-product kernel");
  } else {
    MESSAGE("this CPU has no AVX512_BF16: every bf16 product here runs as f32 products of rounded values");
  }
  struct Case {
    std::int64_t M, N, K;
    bool ta, tb;
    float beta;
  };
  const Case cases[] = {{1, 300, 77, false, true, 0.0f},    {5, 1000, 64, false, true, 1.0f},
                        {20, 300, 70, false, true, 0.0f},   {40, 70, 96, false, true, 0.0f},
                        {300, 257, 515, false, true, 1.0f}, {17, 90, 50, false, false, 0.0f},
                        {400, 130, 33, false, false, 1.0f}, {70, 90, 31, true, false, 0.0f}};
  for (const Case& c : cases) {
    CAPTURE(c.M);
    CAPTURE(c.N);
    CAPTURE(c.K);
    CAPTURE(c.ta);
    CAPTURE(c.tb);
    const Tensor a = test::random_tensor(c.ta ? Shape{c.K, c.M} : Shape{c.M, c.K}, 6, 1.0f, "a");
    Tensor w = test::random_tensor(c.tb ? Shape{c.N, c.K} : Shape{c.K, c.N}, 7, 1.0f, "w");
    const Tensor w16 = round_to_bf16(w);
    const Tensor c0 = test::random_tensor({c.M, c.N}, 8, 1.0f, "c");
    const ops::MatmulOptions o{.transpose_a = c.ta, .transpose_b = c.tb, .beta = c.beta};
    Tensor one = c0.to_host(DType::F32), three = c0.to_host(DType::F32), f32 = c0.to_host(DType::F32);
    {
      CpuMatmulDtype mode(DType::BF16);
      {
        Threads guard(1);
        ops::matmul(one, a, w16, o);
      }
      Threads guard(3);
      ops::matmul(three, a, w16, o);
      ops::matmul(f32, a, w, o);  // an f32 weight: not a bf16 product, the f32 path
    }
    // Against double loops over bf16(a) and w: every product exact, (K + 3) u of the magnitude for the
    // f32 sums. An unrounded a misses this bound by ~2^-9 of each product.
    std::int64_t n_bad = 0, n_f32_bad = 0;
    for (std::int64_t i = 0; i < c.M; ++i) {
      for (std::int64_t j = 0; j < c.N; ++j) {
        double exact = 0, exact_f32 = 0, magnitude = 0;
        for (std::int64_t k = 0; k < c.K; ++k) {
          const float x = a.data<float>()[c.ta ? k * c.M + i : i * c.K + k];
          const double wk = w.data<float>()[c.tb ? j * c.K + k : k * c.N + j];
          exact += static_cast<double>(bf16_to_f32(f32_to_bf16(x))) * wk;
          exact_f32 += static_cast<double>(x) * wk;
          magnitude += std::fabs(x * wk);
        }
        const double base = c.beta * static_cast<double>(c0.data<float>()[i * c.N + j]);
        const double bound = (static_cast<double>(c.K) + 3) * 0x1p-24 * (magnitude + std::fabs(base)) + 1e-30;
        if (!(std::fabs(one.data<float>()[i * c.N + j] - (exact + base)) <= bound)) ++n_bad;
        if (!(std::fabs(f32.data<float>()[i * c.N + j] - (exact_f32 + base)) <= bound)) ++n_f32_bad;
      }
    }
    CHECK(n_bad == 0);
    CHECK(n_f32_bad == 0);
    // Thread splits never cut K: the same bits.
    CHECK(std::memcmp(three.data<float>(), one.data<float>(), static_cast<std::size_t>(c.M * c.N) * 4) == 0);
  }
}

TEST_CASE("bf16 products: cpu_matmul_dtype takes f32 and bf16 only") {
  CHECK_THROWS_WITH_AS(ops::set_cpu_matmul_dtype(DType::F16), doctest::Contains("use f32 or bf16"), ConfigError);
  CHECK(ops::cpu_matmul_dtype() == DType::F32);
  CHECK(ops::cpu_matmul_note().find("f32") != std::string::npos);
}
