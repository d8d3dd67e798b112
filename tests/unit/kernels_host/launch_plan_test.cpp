// The host-side launch planning of the CUDA row kernels (kernels/launch_plan.h), checked without a GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/launch_plan.h"
#include "optim/adamw.h"
#include "tests/support/test_support.h"

using namespace adapt;
using kernels::AdamWScalars;

TEST_CASE("row_block_threads rounds up to whole warps within the limit") {
  CHECK(kernels::row_block_threads(1, 512) == 32);
  CHECK(kernels::row_block_threads(7, 512) == 32);
  CHECK(kernels::row_block_threads(32, 512) == 32);
  CHECK(kernels::row_block_threads(33, 512) == 64);
  CHECK(kernels::row_block_threads(4096 + 3, 512) == 512);
  CHECK(kernels::row_block_threads(128256, 1024) == 1024);
  for (std::int64_t cols = 1; cols < 3000; cols += 13) {
    const int t = kernels::row_block_threads(cols, 1024);
    CHECK(t % 32 == 0);
    CHECK(t >= 32);
    CHECK(t <= 1024);
    CHECK((t >= cols || t == 1024));
  }
}

TEST_CASE("grid_stride_blocks covers n and stays within the grid limit") {
  CHECK(kernels::grid_stride_blocks(0, 256) == 1);
  CHECK(kernels::grid_stride_blocks(1, 256) == 1);
  CHECK(kernels::grid_stride_blocks(256, 256) == 1);
  CHECK(kernels::grid_stride_blocks(257, 256) == 2);
  CHECK(kernels::grid_stride_blocks(std::int64_t{1} << 40, 256) == kernels::kMaxGridStrideBlocks);
}

TEST_CASE("rms_norm_dw_plan puts every row in exactly one non-empty chunk") {
  for (std::int64_t rows : {1, 2, 7, 31, 32, 33, 100, 1000, 4099, 8192, 65536 * 40 + 7}) {
    for (std::int64_t cols : {1, 7, 33, 255, 256, 257, 4096 + 3, 8192}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const kernels::RmsNormDwPlan p = kernels::rms_norm_dw_plan(rows, cols);
      CHECK(p.col_blocks * p.col_threads >= cols);
      CHECK((p.col_blocks - 1) * p.col_threads < cols);
      REQUIRE(p.row_chunks >= 1);
      CHECK(p.row_chunks <= kernels::kMaxGridY);
      CHECK(p.rows_per_chunk >= 1);
      CHECK(p.row_chunks * p.rows_per_chunk >= rows);       // every row covered
      CHECK((p.row_chunks - 1) * p.rows_per_chunk < rows);  // the last chunk is not empty
      CHECK(p.workspace_elems == (p.row_chunks > 1 ? p.row_chunks * cols : 0));
    }
  }
  // Few rows: one chunk, no workspace (dw is added to directly).
  CHECK(kernels::rms_norm_dw_plan(16, 4096).row_chunks == 1);
  CHECK(kernels::rms_norm_dw_plan(16, 4096).workspace_elems == 0);
  // Many rows, narrow: several chunks so that the grid fills the GPU.
  CHECK(kernels::rms_norm_dw_plan(8192, 4096).row_chunks > 1);
}

namespace {
// The update of kernels/adamw.cu, element by element, on the host (each operation rounded to f32).
void adamw_kernel_on_host(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m,
                          std::vector<float>& v, const AdamWScalars& s) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    float pi = p[i] * s.decay;
    const float mi = m[i] * s.beta1 + g[i] * s.one_minus_beta1;
    const float vi = v[i] * s.beta2 + (g[i] * g[i]) * s.one_minus_beta2;
    const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
    pi = pi + (-s.step_size) * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}
}  // namespace

TEST_CASE("adamw_scalars with the kernel's update give optim::AdamW's bits") {
#if !defined(__x86_64__)
  MESSAGE("skipped off x86-64: the host compiler may contract the reference's products into FMAs");
  return;
#endif
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const std::int64_t n = 1000;
  for (bool decay : {true, false}) {
    CAPTURE(decay);
    optim::AdamWOptions o;
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-8;
    o.weight_decay = 0.1;
    optim::AdamW opt(o);
    Tensor master = Tensor::zeros({n}, DType::F32, "w");
    Tensor grad = Tensor::zeros({n}, DType::F32, "g");
    std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f), g(n);
    for (std::int64_t i = 0; i < n; ++i) p[i] = master.data<float>()[i] = nd(rng);
    opt.add("w", master, grad, decay);
    for (int step = 1; step <= 4; ++step) {
      for (std::int64_t i = 0; i < n; ++i) g[i] = grad.data<float>()[i] = nd(rng) * 0.01f;
      const double lr = 1e-3 * step;
      opt.step(lr);
      const AdamWScalars s = kernels::adamw_scalars(lr, step, o.beta1, o.beta2, o.eps, o.weight_decay, decay);
      adamw_kernel_on_host(p, g, m, v, s);
      const float* want = opt.slots()[0].master.data<float>();
      CHECK(std::memcmp(p.data(), want, n * sizeof(float)) == 0);
      CHECK(std::memcmp(m.data(), opt.slots()[0].m.data<float>(), n * sizeof(float)) == 0);
      CHECK(std::memcmp(v.data(), opt.slots()[0].v.data<float>(), n * sizeof(float)) == 0);
    }
  }
}
