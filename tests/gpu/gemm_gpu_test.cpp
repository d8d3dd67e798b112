// The cuBLASLt GEMM against the CPU ops::matmul on the same inputs: f32 (TF32 off), bf16 and f16 inputs
// with f32 or same-dtype outputs, all four transpose combinations, shapes that are multiples of no tile
// size (and 1 x 1 x 1, decode-like single rows), alpha/beta accumulation, column-range views (padded
// leading dimensions), operands that are only 2-byte aligned, strided batches, the bias epilogue, and
// the algorithm cache. Tolerances: tests/gpu/gpu_tolerances.h.
#include <doctest/doctest.h>

#include <array>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "ops/matmul.h"
#include "tests/gpu/gpu_tensors.h"
#include "tests/gpu/gpu_tolerances.h"
#include "tests/support/test_support.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/gemm_cublaslt.h"

using namespace adapt;
using test::to_device;

namespace {

Tensor to_cpu_f32(const Tensor& dev) {
  const Tensor h = test::to_cpu(dev);
  return h.dtype() == DType::F32 ? h : h.to_host(DType::F32);
}

// Uniform in [-1, 1), then rounded to `dtype` (both sides see exactly the same values).
Tensor random_host(const Shape& shape, DType dtype, std::mt19937& rng, const char* name) {
  Tensor f = Tensor::empty(shape, DType::F32, host_allocator(), name);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (std::int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = u(rng);
  return dtype == DType::F32 ? f : f.to_host(dtype);
}

struct Case {
  DType in = DType::F32;
  DType out = DType::F32;
  bool tf32 = false;
};

// One GEMM on both backends; returns the mismatch of the CUDA result against the CPU one.
test::Mismatch run_case(const Case& cs, std::int64_t m, std::int64_t n, std::int64_t k, bool ta, bool tb, float alpha,
                        float beta, std::mt19937& rng) {
  const Tensor a = random_host(ta ? Shape{k, m} : Shape{m, k}, cs.in, rng, "a");
  const Tensor b = random_host(tb ? Shape{n, k} : Shape{k, n}, cs.in, rng, "b");
  const Tensor c0 = random_host({m, n}, cs.out, rng, "c");
  ops::MatmulOptions opts;
  opts.transpose_a = ta;
  opts.transpose_b = tb;
  opts.alpha = alpha;
  opts.beta = beta;

  Tensor want = c0.to_host(DType::F32);
  ops::matmul(want, a.to_host(DType::F32), b.to_host(DType::F32), opts);

  Tensor da = to_device(a), db = to_device(b), dc = to_device(c0);
  ops::cuda::matmul(dc, da, db, opts, nullptr, cs.tf32);
  backend::synchronize(0);
  const Tensor got = to_cpu_f32(dc);
  return test::compare_relative(got.data<float>(), want.data<float>(), want.numel());
}

constexpr std::array<std::array<std::int64_t, 3>, 9> kShapes = {{
    {1, 1, 1},
    {7, 13, 5},
    {33, 65, 17},
    {64, 64, 64},
    {100, 37, 129},
    {1, 1000, 515},
    {257, 130, 75},
    {3, 4096, 72},
    {511, 257, 1000},
}};

void sweep(const Case& cs, double tol) {
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed));
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (const auto& s : kShapes) {
        for (auto [alpha, beta] : {std::array<float, 2>{1.f, 0.f}, std::array<float, 2>{0.5f, 1.f}}) {
          const test::Mismatch mm = run_case(cs, s[0], s[1], s[2], ta, tb, alpha, beta, rng);
          INFO(dtype_name(cs.in), " -> ", dtype_name(cs.out), cs.tf32 ? " tf32" : "", " m=", s[0], " n=", s[1],
               " k=", s[2], " ta=", ta, " tb=", tb, " alpha=", alpha, " beta=", beta, ": ", mm.str());
          CHECK(mm.rel <= tol);
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("gpu.parity.gemm f32 (TF32 off) matches the CPU within the f32 tolerance") {
  sweep({DType::F32, DType::F32, false}, test::kTolF32);
}

TEST_CASE("gpu.parity.gemm f32 with TF32 allowed stays within the TF32 tolerance") {
  sweep({DType::F32, DType::F32, true}, test::kTolTf32);
}

TEST_CASE("gpu.parity.gemm bf16 inputs, f32 and bf16 outputs") {
  sweep({DType::BF16, DType::F32, false}, test::kTolBf16);
  sweep({DType::BF16, DType::BF16, false}, test::kTolBf16);
}

TEST_CASE("gpu.parity.gemm f16 inputs, f32 and f16 outputs") {
  sweep({DType::F16, DType::F32, false}, test::kTolF16);
  sweep({DType::F16, DType::F16, false}, test::kTolF16);
}

TEST_CASE("gpu.parity.gemm column-range views (padded leading dimensions) and 2-byte aligned operands") {
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed) + 1);
  for (DType dt : {DType::BF16, DType::F32}) {
    CAPTURE(dtype_name(dt));
    // x: columns 1..k of a (m, k + 3) matrix: ld = k + 3 and, for bf16, a 2-byte aligned start.
    const std::int64_t m = 45, n = 70, k = 61;
    const Tensor xa = random_host({m, k + 3}, dt, rng, "x_wide");
    const Tensor w = random_host({n, k}, dt, rng, "w");
    Tensor want = Tensor::empty({m, n}, DType::F32, host_allocator(), "want");
    ops::matmul(want, xa.to_host(DType::F32).narrow(1, 1, k), w.to_host(DType::F32));
    Tensor dx = to_device(xa), dw = to_device(w);
    Tensor dy_wide = Tensor::empty({m, n + 5}, DType::F32, backend::cuda_allocator(0), "y_wide");
    Tensor dy = dy_wide.narrow(1, 2, n);  // output with ldc = n + 5, 8-byte aligned
    ops::cuda::matmul(dy, dx.narrow(1, 1, k), dw);
    backend::synchronize(0);
    const Tensor got_wide = to_cpu_f32(dy_wide);
    std::vector<float> got(static_cast<std::size_t>(m * n));
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        got[static_cast<std::size_t>(i * n + j)] = got_wide.data<float>()[i * (n + 5) + 2 + j];
      }
    }
    const test::Mismatch mm = test::compare_relative(got.data(), want.data<float>(), m * n);
    INFO(mm.str());
    CHECK(mm.rel <= test::gpu_tolerance(dt));
  }
}

TEST_CASE("gpu.parity.gemm strided batches match one CPU product per matrix") {
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed) + 2);
  const std::int64_t batch = 5, m = 19, n = 23, k = 31;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const Shape sa = ta ? Shape{batch, k, m} : Shape{batch, m, k};
      const Shape sb = tb ? Shape{batch, n, k} : Shape{batch, k, n};
      const Tensor a = random_host(sa, DType::BF16, rng, "a");
      const Tensor b = random_host(sb, DType::BF16, rng, "b");
      Tensor da = to_device(a), db = to_device(b);
      Tensor dc = Tensor::empty({batch, m, n}, DType::F32, backend::cuda_allocator(0), "c");
      ops::cuda::GemmProblem p;
      p.m = m, p.n = n, p.k = k, p.transpose_a = ta, p.transpose_b = tb, p.batch = batch;
      p.a_type = p.b_type = DType::BF16;
      p.c_type = DType::F32;
      ops::cuda::gemm(p, 1.f, da.raw(), db.raw(), 0.f, dc.raw(), nullptr, 0, nullptr);
      backend::synchronize(0);
      const Tensor got = to_cpu_f32(dc);
      const Tensor a32 = a.to_host(DType::F32), b32 = b.to_host(DType::F32);
      for (std::int64_t s = 0; s < batch; ++s) {
        Tensor want = Tensor::empty({m, n}, DType::F32, host_allocator(), "want");
        ops::MatmulOptions o;
        o.transpose_a = ta;
        o.transpose_b = tb;
        ops::matmul(want, a32.narrow(0, s, 1).reshape(Shape{sa[1], sa[2]}),
                    b32.narrow(0, s, 1).reshape(Shape{sb[1], sb[2]}), o);
        const test::Mismatch mm = test::compare_relative(got.data<float>() + s * m * n, want.data<float>(), m * n);
        INFO("batch ", s, " ta=", ta, " tb=", tb, ": ", mm.str());
        CHECK(mm.rel <= test::kTolBf16);
      }
    }
  }
}

TEST_CASE("gpu.parity.gemm bias epilogue equals matmul then bias_add") {
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed) + 3);
  const std::int64_t m = 37, n = 129, k = 66;
  for (auto [in, out] :
       {std::array<DType, 2>{DType::F32, DType::F32}, std::array<DType, 2>{DType::BF16, DType::BF16}}) {
    CAPTURE(dtype_name(in));
    const Tensor x = random_host({m, k}, in, rng, "x");
    const Tensor w = random_host({n, k}, in, rng, "w");
    const Tensor bias = random_host({n}, out, rng, "bias");
    Tensor want = Tensor::empty({m, n}, DType::F32, host_allocator(), "want");
    ops::matmul(want, x.to_host(DType::F32), w.to_host(DType::F32));
    ops::bias_add(want, bias.to_host(DType::F32));
    Tensor dx = to_device(x), dw = to_device(w), dbias = to_device(bias);
    Tensor dy = Tensor::empty({m, n}, out, backend::cuda_allocator(0), "y");
    ops::cuda::GemmProblem p;
    p.m = m, p.n = n, p.k = k, p.transpose_b = true, p.bias = true;
    p.a_type = p.b_type = in;
    p.c_type = out;
    ops::cuda::gemm(p, 1.f, dx.raw(), dw.raw(), 0.f, dy.raw(), dbias.raw(), 0, nullptr);
    backend::synchronize(0);
    const Tensor got = to_cpu_f32(dy);
    const test::Mismatch mm = test::compare_relative(got.data<float>(), want.data<float>(), m * n);
    INFO(mm.str());
    CHECK(mm.rel <= test::gpu_tolerance(out));
  }
}

TEST_CASE("gpu.parity.gemm with beta = 0 the old C is not read (NaN there stays out of the result)") {
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed) + 5);
  for (DType out : {DType::F32, DType::BF16}) {
    CAPTURE(dtype_name(out));
    const Tensor x = random_host({29, 48}, DType::BF16, rng, "x");
    const Tensor w = random_host({77, 48}, DType::BF16, rng, "w");
    Tensor want = Tensor::empty({29, 77}, DType::F32, host_allocator(), "want");
    ops::matmul(want, x.to_host(DType::F32), w.to_host(DType::F32));
    Tensor dy = Tensor::empty({29, 77}, out, backend::cuda_allocator(0), "y");
    REQUIRE(cudaMemset(dy.raw(), 0xff, dy.size_bytes()) == cudaSuccess);  // all-ones bits: NaN in f32 and bf16
    ops::cuda::matmul(dy, to_device(x), to_device(w));
    backend::synchronize(0);
    const Tensor got = to_cpu_f32(dy);
    const test::Mismatch mm = test::compare_relative(got.data<float>(), want.data<float>(), want.numel());
    INFO(mm.str());
    CHECK(mm.rel <= test::kTolBf16);
  }
}

TEST_CASE("gpu.gemm the algorithm is chosen once per shape and then reused") {
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed) + 4);
  ops::cuda::gemm_algo_cache_clear();
  const auto s0 = ops::cuda::gemm_algo_cache_stats();
  CHECK(s0.entries == 0);
  Tensor x = to_device(random_host({24, 40}, DType::BF16, rng, "x"));
  Tensor w = to_device(random_host({56, 40}, DType::BF16, rng, "w"));
  Tensor y = Tensor::empty({24, 56}, DType::F32, backend::cuda_allocator(0), "y");
  ops::cuda::matmul(y, x, w);
  ops::cuda::matmul(y, x, w);
  ops::cuda::matmul(y, x, w);
  const auto s1 = ops::cuda::gemm_algo_cache_stats();
  CHECK(s1.entries == 1);
  CHECK(s1.misses == s0.misses + 1);
  CHECK(s1.hits == s0.hits + 2);
  // Another shape (and transpose) is another entry: y2 (24, 40) = x (24, 40) · sq (40, 40).
  Tensor y2 = Tensor::empty({24, 40}, DType::F32, backend::cuda_allocator(0), "y2");
  ops::MatmulOptions o;
  o.transpose_b = false;
  Tensor sq = to_device(random_host({40, 40}, DType::BF16, rng, "sq"));
  ops::cuda::matmul(y2, x, sq, o);
  CHECK(ops::cuda::gemm_algo_cache_stats().entries == 2);
  backend::synchronize(0);
}

TEST_CASE("gpu.gemm errors name the problem") {
  Tensor x = Tensor::empty({4, 8}, DType::BF16, backend::cuda_allocator(0), "x");
  Tensor w = Tensor::empty({6, 8}, DType::F32, backend::cuda_allocator(0), "w");
  Tensor y = Tensor::empty({4, 6}, DType::F32, backend::cuda_allocator(0), "y");
  CHECK_THROWS_WITH_AS(ops::cuda::matmul(y, x, w), doctest::Contains("gemm m=4 n=6 k=8"), UnsupportedError);
  Tensor w5 = Tensor::empty({6, 5}, DType::BF16, backend::cuda_allocator(0), "w5");
  CHECK_THROWS_WITH_AS(ops::cuda::matmul(y, x, w5), doctest::Contains("inner dimensions differ"), ShapeError);
}

#endif  // ADAPT_HAVE_CUDA
