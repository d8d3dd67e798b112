// CUDA AdamW (kernels/adamw.h) against optim::AdamW on the CPU over several steps with a changing
// learning rate, with and without weight decay, on sizes that are not multiples of the block: master
// weights and both moments bit for bit on x86-64 (the host loop has no FMA there; elsewhere within the
// f32 tolerance), and the bf16/f16 weight copies equal to the master weights rounded on the host.
#if ADAPT_HAVE_CUDA
#include "kernels/adamw.h"
#include "optim/adamw.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

namespace {
struct AdamWSlotView {
  const float* p;
  const float* m;
  const float* v;
};

void check_same(const std::vector<float>& got, const float* want, const char* what) {
  const auto n = static_cast<std::int64_t>(got.size());
#if defined(__x86_64__)
  std::int64_t n_diff = 0, first = -1;
  for (std::int64_t i = 0; i < n; ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      if (first < 0) first = i;
      ++n_diff;
    }
  }
  INFO(what, ": ", n_diff, " of ", n, " differ", n_diff ? " (first at " + std::to_string(first) + ")" : "");
  CHECK(n_diff == 0);
#else
  check_close(got, std::vector<float>(want, want + n), DType::F32, what);
#endif
}
}  // namespace

TEST_CASE("gpu.parity.adamw steps equal optim::AdamW") {
  for (std::int64_t n : {1, 1000, 100003}) {
    for (bool decay : {true, false}) {
      for (DType copy_dt : {DType::BF16, DType::F16}) {
        CAPTURE(n);
        CAPTURE(decay);
        CAPTURE(dtype_name(copy_dt));
        optim::AdamWOptions o;
        o.beta1 = 0.9;
        o.beta2 = 0.999;
        o.eps = 1e-8;
        o.weight_decay = 0.01;
        optim::AdamW opt(o);
        const std::vector<float> w0 = random_normal(n, 71);
        Tensor master = host_f32({n}, w0, "w");
        Tensor grad = Tensor::zeros({n}, DType::F32, "g");
        opt.add("w", master, grad, decay);
        DeviceBuffer d_p = upload(w0, DType::F32), d_g(n * 4), d_m(n * 4), d_v(n * 4), d_copy(n * 2);
        for (int step = 1; step <= 5; ++step) {
          CAPTURE(step);
          const std::vector<float> g = random_normal(n, 72 + step, 0.01f);
          std::copy(g.begin(), g.end(), grad.data<float>());
          const double lr = 2e-3 / step;
          opt.step(lr);
          ADAPT_TEST_CUDA(cudaMemcpy(d_g.get(), g.data(), n * 4, cudaMemcpyHostToDevice));
          const kernels::AdamWScalars s =
              kernels::adamw_scalars(lr, step, o.beta1, o.beta2, o.eps, o.weight_decay, decay);
          kernels::launch_adamw_step(d_p.f32(), d_g.f32(), d_m.f32(), d_v.f32(), d_copy.get(), copy_dt, n, s, nullptr);
          const AdamWSlotView slot{opt.slots()[0].master.data<float>(), opt.slots()[0].m.data<float>(),
                                   opt.slots()[0].v.data<float>()};
          check_same(download(d_p, n, DType::F32), slot.p, "master weights");
          check_same(download(d_m, n, DType::F32), slot.m, "exp_avg");
          check_same(download(d_v, n, DType::F32), slot.v, "exp_avg_sq");
          const std::vector<float> copy = download(d_copy, n, copy_dt);
          const std::vector<float> want = rounded(download(d_p, n, DType::F32), copy_dt);
          CHECK(std::memcmp(copy.data(), want.data(), n * sizeof(float)) == 0);
        }
        // Without a copy.
        kernels::launch_adamw_step(d_p.f32(), d_g.f32(), d_m.f32(), d_v.f32(), nullptr, DType::BF16, n,
                                   kernels::adamw_scalars(1e-3, 6, o.beta1, o.beta2, o.eps, o.weight_decay, decay),
                                   nullptr);
        ADAPT_TEST_CUDA(cudaDeviceSynchronize());
      }
    }
  }
}
#endif  // ADAPT_HAVE_CUDA
