// CUDA softmax-cross-entropy (kernels/cross_entropy.h) against ops::cross_entropy_forward_backward on
// the CPU: row losses, loss sum and the gradient written over the logits (with ignored rows, a grad
// scale, a row stride wider than V, loss-only mode), for vocabularies of 1, 7, 1000 and 128256 in
// f32, bf16 and f16; then the vocab-parallel pieces run on column slices of the same logits as three
// "ranks", with the all-reduces done on the host between the launches.
#if ADAPT_HAVE_CUDA
#include <algorithm>
#include <cmath>

#include "kernels/cross_entropy.h"
#include "ops/cross_entropy.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

namespace {

constexpr std::int64_t kIgnore = -100;

std::vector<std::int64_t> random_targets(std::int64_t rows, std::int64_t V, std::uint64_t salt) {
  std::mt19937_64 rng(kSeed ^ salt);
  std::uniform_int_distribution<std::int64_t> u(0, V - 1);
  std::vector<std::int64_t> t(static_cast<std::size_t>(rows));
  for (auto& y : t) y = u(rng);
  t[0] = V - 1;
  if (rows > 2) t[1] = kIgnore;
  if (rows > 3) t[3] = 0;
  return t;
}

struct CpuResult {
  std::vector<float> grad;  // (rows, V)
  std::vector<float> row_loss;
  double loss_sum = 0;
  std::int64_t n_valid = 0;
};

CpuResult cpu_cross_entropy(const std::vector<float>& logits, const std::vector<std::int64_t>& targets,
                            std::int64_t rows, std::int64_t V, float grad_scale, bool grad) {
  Tensor Z = host_f32({rows, V}, logits, "logits");
  Tensor Y = host_ids({rows}, targets, DType::I64, "targets");
  Tensor L = Tensor::empty({rows}, DType::F32, host_allocator(), "row_loss");
  ops::CrossEntropyOptions o;
  o.grad_scale = grad_scale;
  o.grad = grad;
  o.ignore_index = kIgnore;
  const ops::CrossEntropyResult r = ops::cross_entropy_forward_backward(Z, Y, o, &L);
  return {values(Z), values(L), r.loss_sum, r.n_valid};
}

// Rows of width V out of a (rows, ld) buffer.
std::vector<float> unpad(const std::vector<float>& v, std::int64_t rows, std::int64_t V, std::int64_t ld) {
  std::vector<float> out;
  for (std::int64_t r = 0; r < rows; ++r) out.insert(out.end(), v.begin() + r * ld, v.begin() + r * ld + V);
  return out;
}

}  // namespace

TEST_CASE("gpu.parity.cross_entropy fused forward and backward") {
  for (std::int64_t V : {1, 7, 1000, 128256}) {
    for (std::int64_t rows : {1, 5, 9}) {
      for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
        for (DType tdt : {DType::I32, DType::I64}) {
          for (bool grad : {true, false}) {
            CAPTURE(V);
            CAPTURE(rows);
            CAPTURE(dtype_name(dt));
            CAPTURE(dtype_name(tdt));
            CAPTURE(grad);
            const std::int64_t ld = V == 1000 ? V + 5 : V;  // one case with padded rows
            const std::vector<float> z = rounded(random_normal(rows * V, 51 + V, 3.0f), dt);
            const std::vector<std::int64_t> y = random_targets(rows, V, 52 + rows);
            const std::int64_t n_valid = std::count_if(y.begin(), y.end(), [](std::int64_t t) { return t != kIgnore; });
            const float scale = 1.0f / static_cast<float>(std::max<std::int64_t>(1, n_valid));
            const CpuResult want = cpu_cross_entropy(z, y, rows, V, scale, grad);

            std::vector<float> padded(static_cast<std::size_t>(rows * ld), 7.0f);
            for (std::int64_t r = 0; r < rows; ++r) std::copy_n(z.begin() + r * V, V, padded.begin() + r * ld);
            DeviceBuffer d_z = upload(padded, dt), d_y = upload_ids(y, tdt), d_loss(rows * sizeof(float));
            kernels::launch_cross_entropy_forward_backward(d_z.get(), d_loss.f32(), d_y.get(), tdt, rows, V, ld, scale,
                                                           kIgnore, grad, dt, nullptr);
            const std::vector<float> loss = download(d_loss, rows, DType::F32);
            check_close(loss, want.row_loss, dt, "row loss");
            double sum = 0;
            for (float l : loss) sum += l;
            INFO("loss sum ", sum, " want ", want.loss_sum);
            CHECK(std::fabs(sum - want.loss_sum) <= gpu_tolerance(dt) * std::max(1.0, std::fabs(want.loss_sum)));
            const std::vector<float> zout = download(d_z, rows * ld, dt);
            check_close(unpad(zout, rows, V, ld), rounded(want.grad, dt), dt, grad ? "gradient" : "logits untouched");
            for (std::int64_t r = 0; r < rows; ++r) {
              for (std::int64_t j = V; j < ld; ++j) CHECK(zout[r * ld + j] == 7.0f);  // padding untouched
            }
          }
        }
      }
    }
  }
}

TEST_CASE("gpu.parity.cross_entropy vocab-parallel pieces over three column slices") {
  for (std::int64_t V : {1000, 128256}) {
    for (DType dt : {DType::F32, DType::BF16}) {
      CAPTURE(V);
      CAPTURE(dtype_name(dt));
      const std::int64_t rows = 6;
      const std::int64_t bounds[] = {0, V / 3, V / 3 + 1, V};  // slice 1 is one column wide
      const std::vector<float> z = rounded(random_normal(rows * V, 61, 3.0f), dt);
      std::vector<std::int64_t> y = random_targets(rows, V, 62);
      y[2] = V / 3;  // a target in the one-column slice
      const float scale = 0.25f;
      const CpuResult want = cpu_cross_entropy(z, y, rows, V, scale, true);

      DeviceBuffer d_z = upload(z, dt), d_y = upload_ids(y, DType::I64);
      auto slice = [&](int k) { return static_cast<char*>(d_z.get()) + bounds[k] * dtype_size(dt); };
      auto width = [&](int k) { return bounds[k + 1] - bounds[k]; };
      DeviceBuffer d_max(rows * 4), d_sum(rows * 4), d_zy(rows * 4), d_loss(rows * 4);
      // 1. Local maxima, all-reduce Max.
      std::vector<float> gmax(rows, -INFINITY);
      for (int k = 0; k < 3; ++k) {
        kernels::launch_cross_entropy_row_max(d_max.f32(), slice(k), rows, width(k), V, dt, nullptr);
        const std::vector<float> m = download(d_max, rows, DType::F32);
        for (std::int64_t r = 0; r < rows; ++r) gmax[r] = std::max(gmax[r], m[r]);
      }
      // 2. Local Σ exp and target logits, all-reduce Sum.
      DeviceBuffer d_gmax = upload(gmax, DType::F32);
      std::vector<float> gsum(rows, 0.0f), gzy(rows, 0.0f);
      for (int k = 0; k < 3; ++k) {
        kernels::launch_cross_entropy_sum_exp(d_sum.f32(), d_zy.f32(), slice(k), d_gmax.f32(), d_y.get(), DType::I64,
                                              rows, width(k), V, bounds[k], dt, nullptr);
        const std::vector<float> s = download(d_sum, rows, DType::F32), zy = download(d_zy, rows, DType::F32);
        for (std::int64_t r = 0; r < rows; ++r) gsum[r] += s[r], gzy[r] += zy[r];
      }
      // 3. Loss and each slice's gradient.
      DeviceBuffer d_gsum = upload(gsum, DType::F32), d_gzy = upload(gzy, DType::F32);
      for (int k = 0; k < 3; ++k) {
        kernels::launch_cross_entropy_finish(slice(k), d_loss.f32(), d_gmax.f32(), d_gsum.f32(), d_gzy.f32(), d_y.get(),
                                             DType::I64, rows, width(k), V, bounds[k], scale, kIgnore, true, dt,
                                             nullptr);
        check_close(download(d_loss, rows, DType::F32), want.row_loss, dt, "row loss of a slice");
      }
      check_close(download(d_z, rows * V, dt), rounded(want.grad, dt), dt, "gradient over all slices");
    }
  }
}
#endif  // ADAPT_HAVE_CUDA
