// The vectorised AdamW update and the worker pool: every instruction set this CPU has gives the result of
// AdamW::step and of a scalar loop written here bit for bit, and the pool runs each task exactly once.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "optim/adamw.h"
#include "optim/adamw_simd.h"
#include "optim/worker_pool.h"

using namespace adapt;
using namespace adapt::optim;

namespace {

std::vector<float> random_floats(std::int64_t n, std::uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(static_cast<std::size_t>(n));
  for (float& f : x) f = d(rng);
  return x;
}

bool same_bits(const float* a, const float* b, std::int64_t n, std::int64_t* first = nullptr) {
  for (std::int64_t i = 0; i < n; ++i)
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0) {
      if (first) *first = i;
      return false;
    }
  return true;
}

/// torch's float32 AdamW written out element by element (the loop AdamW::step ran before it used
/// adamw_update): the reference that neither the vectorised paths nor AdamW::step share code with. This
/// file is compiled for baseline x86-64, which has no fused multiply-add to contract into.
void reference_update(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamWScalars& s) {
  for (std::int64_t i = 0; i < n; ++i) {
    p[i] *= s.decay;
    m[i] = m[i] * s.beta1 + g[i] * s.one_minus_beta1;
    v[i] = v[i] * s.beta2 + g[i] * g[i] * s.one_minus_beta2;
    const float denom = std::sqrt(v[i]) / s.bias_correction2_sqrt + s.eps;
    p[i] += -s.step_size * (m[i] / denom);
  }
}

}  // namespace

TEST_CASE("adamw_update matches AdamW::step and the scalar loop bit for bit on every supported instruction set") {
  const AdamWOptions opt{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
  std::vector<CpuIsa> isas{CpuIsa::Scalar};
  if (cpu_isa_best() != CpuIsa::Scalar) isas.push_back(CpuIsa::Avx2);
  if (cpu_isa_best() == CpuIsa::Avx512) isas.push_back(CpuIsa::Avx512);
  MESSAGE("best instruction set on this CPU: " << cpu_isa_name(cpu_isa_best()));
  for (const std::int64_t n :
       {std::int64_t{1}, std::int64_t{7}, std::int64_t{16}, std::int64_t{1000}, std::int64_t{40001}}) {
    for (const bool decay : {true, false}) {
      for (const CpuIsa isa : isas) {
        CAPTURE(n);
        CAPTURE(decay);
        CAPTURE(cpu_isa_name(isa));
        const std::vector<float> init = random_floats(n, 7, 0.5f);
        AdamW ref(opt);
        Tensor p = Tensor::zeros(Shape{n}, DType::F32, "p"), g = Tensor::zeros(Shape{n}, DType::F32, "g");
        std::memcpy(p.data<float>(), init.data(), init.size() * sizeof(float));
        ref.add("p", p, g, decay);
        std::vector<float> p2 = init, m2(init.size(), 0.0f), v2(init.size(), 0.0f);
        std::vector<float> p3 = init, m3(init.size(), 0.0f), v3(init.size(), 0.0f);
        for (int step = 1; step <= 5; ++step) {
          // Gradients spanning magnitudes, with exact zeros.
          std::vector<float> grad = random_floats(n, 100 + step, step == 3 ? 1e-6f : 1.0f);
          for (std::int64_t i = 3; i < n; i += 5) grad[static_cast<std::size_t>(i)] = 0.0f;
          std::memcpy(g.data<float>(), grad.data(), grad.size() * sizeof(float));
          const double lr = 1e-3 * step;
          ref.step(lr);
          adamw_update(p2.data(), grad.data(), m2.data(), v2.data(), n, adamw_scalars(opt, lr, step, decay), isa);
          reference_update(p3.data(), grad.data(), m3.data(), v3.data(), n, adamw_scalars(opt, lr, step, decay));
        }
        std::int64_t bad = -1;
        CHECK_MESSAGE(same_bits(p.data<float>(), p2.data(), n, &bad), "first differing weight at " << bad);
        CHECK(same_bits(ref.slots()[0].m.data<float>(), m2.data(), n));
        CHECK(same_bits(ref.slots()[0].v.data<float>(), v2.data(), n));
        CHECK_MESSAGE(same_bits(p3.data(), p2.data(), n, &bad),
                      "first weight differing from the scalar loop at " << bad);
        CHECK(same_bits(m3.data(), m2.data(), n));
        CHECK(same_bits(v3.data(), v2.data(), n));
        // The update moved the weights (a test that would pass with no update at all is no test).
        CHECK_FALSE(same_bits(init.data(), p2.data(), n));
      }
    }
  }
}

TEST_CASE("adamw_scalars: weight decay applies only where asked") {
  const AdamWOptions opt{.weight_decay = 0.5};
  CHECK(adamw_scalars(opt, 0.1, 1, true).decay == doctest::Approx(0.95));
  CHECK(adamw_scalars(opt, 0.1, 1, false).decay == 1.0f);
  // Step 1: lr / (1 - beta1) and sqrt(1 - beta2).
  CHECK(adamw_scalars(opt, 0.1, 1, true).step_size == doctest::Approx(1.0));
  CHECK(adamw_scalars(opt, 0.1, 1, true).bias_correction2_sqrt == doctest::Approx(std::sqrt(0.001)));
}

TEST_CASE("WorkerPool runs every task exactly once and rethrows a task's exception") {
  for (const int threads : {1, 2, 4}) {
    CAPTURE(threads);
    WorkerPool pool(threads);
    CHECK(pool.size() == threads);
    for (const std::int64_t n : {std::int64_t{0}, std::int64_t{1}, std::int64_t{3}, std::int64_t{1000}}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      pool.parallel_for(n, [&](std::int64_t i) { ++hits[static_cast<std::size_t>(i)]; });
      for (std::int64_t i = 0; i < n; ++i) REQUIRE(hits[static_cast<std::size_t>(i)].load() == 1);
    }
    CHECK_THROWS_WITH_AS(pool.parallel_for(10,
                                           [](std::int64_t i) {
                                             if (i == 6) throw std::runtime_error("task 6 failed");
                                           }),
                         "task 6 failed", std::runtime_error);
    // The pool stays usable after a failed loop.
    std::atomic<int> sum{0};
    pool.parallel_for(100, [&](std::int64_t i) { sum += static_cast<int>(i); });
    CHECK(sum.load() == 4950);
  }
  CHECK_THROWS_AS(WorkerPool(0), ConfigError);
}
