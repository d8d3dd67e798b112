// CUDA RMSNorm (kernels/rms_norm.h) against ops::rms_norm_forward / rms_norm_backward on the CPU:
// y, rstd, dx (plain and accumulated, and in place over dy) and the chunked dw, for f32, bf16 and
// f16, on widths that are not multiples of the block (1, 7, 33, 4096 + 3) and row counts that give
// one or several dw chunks.
#if ADAPT_HAVE_CUDA
#include <algorithm>
#include <cmath>

#include "kernels/rms_norm.h"
#include "ops/rms_norm.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

namespace {
const DType kDtypes[] = {DType::F32, DType::BF16, DType::F16};
const std::int64_t kCols[] = {1, 7, 33, 4096 + 3};
const std::int64_t kRows[] = {1, 5, 67, 300};
constexpr float kEps = 1e-5f;

// Calls f(dtype, rows, cols) for every dtype, width and row count of the sweep.
template <typename F>
void for_each_case(F&& f) {
  for (DType dt : kDtypes) {
    for (std::int64_t cols : kCols) {
      for (std::int64_t rows : kRows) {
        CAPTURE(dtype_name(dt));
        CAPTURE(rows);
        CAPTURE(cols);
        f(dt, rows, cols);
      }
    }
  }
}
}  // namespace

TEST_CASE("gpu.parity.rms_norm forward: y and rstd") {
  for_each_case([](DType dt, std::int64_t rows, std::int64_t cols) {
    const std::vector<float> x = rounded(random_normal(rows * cols, 1, 2.0f), dt);
    std::vector<float> w = random_normal(cols, 2, 0.5f);
    for (float& v : w) v += 1.0f;
    Tensor X = host_f32({rows, cols}, x, "x"), W = host_f32({cols}, w, "w");
    Tensor Y = Tensor::empty({rows, cols}, DType::F32, host_allocator(), "y");
    Tensor R = Tensor::empty({rows}, DType::F32, host_allocator(), "rstd");
    ops::rms_norm_forward(Y, X, W, kEps, &R);

    DeviceBuffer dx = upload(x, dt), dw = upload(w, DType::F32), dy(x.size() * dtype_size(dt));
    DeviceBuffer drstd(rows * sizeof(float));
    kernels::launch_rms_norm_forward(dy.get(), drstd.f32(), dx.get(), dw.f32(), rows, cols, kEps, dt, nullptr);
    check_close(download(dy, x.size(), dt), rounded(values(Y), dt), dt, "y");
    check_close(download(drstd, rows, DType::F32), values(R), DType::F32, "rstd");

    // In place (y aliases x), without rstd.
    kernels::launch_rms_norm_forward(dx.get(), nullptr, dx.get(), dw.f32(), rows, cols, kEps, dt, nullptr);
    check_close(download(dx, x.size(), dt), rounded(values(Y), dt), dt, "y in place");
  });
}

TEST_CASE("gpu.parity.rms_norm backward: dx, accumulated dx, dx over dy, and dw") {
  for_each_case([](DType dt, std::int64_t rows, std::int64_t cols) {
    const std::vector<float> x = rounded(random_normal(rows * cols, 3, 1.5f), dt);
    const std::vector<float> g = rounded(random_normal(rows * cols, 4), dt);
    const std::vector<float> dx0 = rounded(random_normal(rows * cols, 5), dt);
    std::vector<float> w = random_normal(cols, 6, 0.5f);
    for (float& v : w) v += 1.0f;
    const std::vector<float> dw0 = random_normal(cols, 7, 0.1f);
    Tensor X = host_f32({rows, cols}, x, "x"), W = host_f32({cols}, w, "w");
    Tensor Y = Tensor::empty({rows, cols}, DType::F32, host_allocator(), "y");
    Tensor R = Tensor::empty({rows}, DType::F32, host_allocator(), "rstd");
    ops::rms_norm_forward(Y, X, W, kEps, &R);
    Tensor G = host_f32({rows, cols}, g, "dy");
    Tensor DX = Tensor::empty({rows, cols}, DType::F32, host_allocator(), "dx");
    Tensor DW = host_f32({cols}, dw0, "dw");
    ops::rms_norm_backward(DX, &DW, G, X, W, R);
    Tensor DXacc = host_f32({rows, cols}, dx0, "dx_acc");
    ops::rms_norm_backward(DXacc, nullptr, G, X, W, R, {.accumulate = true});

    // dx = r·(dy·w) − x·coef: with one column the two terms cancel to about eps/(x² + eps) of their size,
    // so dx is compared relative to the size of r·dy·w (f32 rounding of the terms is all the result has).
    const std::vector<float> r = values(R);
    double term_scale = 0.0;
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j)
        term_scale = std::max(term_scale, std::fabs(double(r[i]) * g[i * cols + j] * w[j]));
    // The CPU's rstd goes to the device, so the backward alone is compared.
    DeviceBuffer d_x = upload(x, dt), d_w = upload(w, DType::F32), d_r = upload(values(R), DType::F32);
    DeviceBuffer d_g = upload(g, dt), d_dx(x.size() * dtype_size(dt)), d_dw = upload(dw0, DType::F32);
    DeviceBuffer ws(kernels::rms_norm_backward_workspace_elems(rows, cols) * sizeof(float));
    kernels::launch_rms_norm_backward(d_dx.get(), d_dw.f32(), ws.f32(), d_g.get(), d_x.get(), d_w.f32(), d_r.f32(),
                                      rows, cols, false, dt, nullptr);
    check_close(download(d_dx, x.size(), dt), rounded(values(DX), dt), dt, "dx", term_scale);
    check_close(download(d_dw, cols, DType::F32), values(DW), DType::F32, "dw (added to its initial value)");

    DeviceBuffer d_acc = upload(dx0, dt);
    kernels::launch_rms_norm_backward(d_acc.get(), nullptr, nullptr, d_g.get(), d_x.get(), d_w.f32(), d_r.f32(), rows,
                                      cols, true, dt, nullptr);
    check_close(download(d_acc, x.size(), dt), rounded(values(DXacc), dt), dt, "dx accumulated");

    // dx over dy, with dw: dw still sees the incoming dy.
    DeviceBuffer d_dw2 = upload(dw0, DType::F32);
    kernels::launch_rms_norm_backward(d_g.get(), d_dw2.f32(), ws.f32(), d_g.get(), d_x.get(), d_w.f32(), d_r.f32(),
                                      rows, cols, false, dt, nullptr);
    check_close(download(d_g, x.size(), dt), rounded(values(DX), dt), dt, "dx in place of dy", term_scale);
    check_close(download(d_dw2, cols, DType::F32), values(DW), DType::F32, "dw with dx in place of dy");
  });
}

TEST_CASE("gpu.rms_norm dw is the same bits on every run") {
  const std::int64_t rows = 4099, cols = 4096 + 3;
  const std::vector<float> x = random_normal(rows * cols, 8), g = random_normal(rows * cols, 9);
  const std::vector<float> r(rows, 0.7f);
  DeviceBuffer d_x = upload(x, DType::F32), d_g = upload(g, DType::F32), d_r = upload(r, DType::F32);
  DeviceBuffer ws(kernels::rms_norm_backward_workspace_elems(rows, cols) * sizeof(float));
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    DeviceBuffer d_dw(cols * sizeof(float));
    kernels::launch_rms_norm_backward(nullptr, d_dw.f32(), ws.f32(), d_g.get(), d_x.get(), nullptr, d_r.f32(), rows,
                                      cols, false, DType::F32, nullptr);
    std::vector<float> got = download(d_dw, cols, DType::F32);
    if (run == 0) {
      first = got;
    } else {
      CHECK(std::memcmp(got.data(), first.data(), cols * sizeof(float)) == 0);
    }
  }
}
#endif  // ADAPT_HAVE_CUDA
