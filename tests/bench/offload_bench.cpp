// The optimizer phase of a training step on a GPU, with the AdamW state on the device (kernels/adamw.cu:
// one kernel, bf16 copy of the weights for the forward) and offloaded to host RAM (optim::OffloadAdamW:
// gradients device→host in 4 Mi-element buckets on the copy stream after the compute stream's work,
// the multithreaded CPU update, the bf16 weights copied back and ordered before the compute stream).
// Built only with CUDA; scripts/gpu_check.sh runs it.
//
//   offload_bench SIZES THREADS REPS
//     SIZES    comma-separated adapter parameter counts per rank, e.g. 42000000,207000000 (LoRA r16 on
//              every projection of Llama 3.1 8B / 70B)
//     THREADS  CPU threads of the offloaded update (0: all cores)
//     REPS     timed steps per row (after one untimed step); the median counts
// Prints one line per size: "offload_bench <n> <threads> <device ms> <offload ms> <d2h ms> <update+h2d ms>".
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/cuda_runtime.h"
#include "kernels/adamw.h"
#include "optim/offload_adamw.h"
#include "tests/bench/bench_util.h"

using namespace adapt;
using adapt::bench::median;
using adapt::bench::parse_list;

namespace {

double ms_since(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s SIZES THREADS REPS (see the file header)\n", argv[0]);
    return 2;
  }
  const std::vector<std::int64_t> sizes = parse_list(argv[1]);
  const int threads = std::atoi(argv[2]);
  const int reps = std::max(1, std::atoi(argv[3]));
  const optim::AdamWOptions opt{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
  constexpr std::int64_t kBucket = std::int64_t{1} << 22;
  backend::cuda::set_device(0);
  backend::cuda::Stream compute(0);
  for (const std::int64_t n : sizes) {
    const auto bytes = static_cast<std::size_t>(n) * sizeof(float);
    float *p = nullptr, *g = nullptr, *m = nullptr, *v = nullptr;
    void* w16 = nullptr;
    ADAPT_CUDA_CHECK(cudaMalloc(&p, bytes));
    ADAPT_CUDA_CHECK(cudaMalloc(&g, bytes));
    ADAPT_CUDA_CHECK(cudaMalloc(&m, bytes));
    ADAPT_CUDA_CHECK(cudaMalloc(&v, bytes));
    ADAPT_CUDA_CHECK(cudaMalloc(&w16, static_cast<std::size_t>(n) * 2));
    for (float* x : {p, g, m, v}) ADAPT_CUDA_CHECK(cudaMemset(x, 0, bytes));
    // Device state: one kernel per step.
    std::vector<double> device_ms;
    backend::cuda::Event a, b;
    for (int r = 0; r <= reps; ++r) {
      const kernels::AdamWScalars s =
          kernels::adamw_scalars(1e-3, r + 1, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, /*decay=*/true);
      a.record(compute.get());
      kernels::launch_adamw_step(p, g, m, v, w16, DType::BF16, n, s, compute.get());
      b.record(compute.get());
      b.synchronize();
      if (r > 0) device_ms.push_back(b.elapsed_ms_since(a));
    }
    // Offloaded state.
    optim::OffloadAdamW state(n, {}, opt, Device{DeviceKind::Cuda, 0}, {.threads = threads});
    state.set_targets({{.begin = 0, .count = n, .dst = w16, .dtype = DType::BF16}});
    std::vector<double> total_ms, d2h_ms, update_ms;
    for (int r = 0; r <= reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (std::int64_t at = 0; at < n; at += kBucket)
        state.stage_grads(at, std::min(kBucket, n - at), g + at, compute.get());
      state.wait_grads();
      const double t_d2h = ms_since(t0);
      const auto t1 = std::chrono::steady_clock::now();
      state.step(1e-3);
      state.weights_ready(compute.get());
      compute.synchronize();
      if (r > 0) {
        total_ms.push_back(ms_since(t0));
        d2h_ms.push_back(t_d2h);
        update_ms.push_back(ms_since(t1));
      }
    }
    std::printf("offload_bench %lld %d %.3f %.3f %.3f %.3f\n", static_cast<long long>(n), state.threads(),
                median(device_ms), median(total_ms), median(d2h_ms), median(update_ms));
    std::fflush(stdout);
    for (void* x : {static_cast<void*>(p), static_cast<void*>(g), static_cast<void*>(m), static_cast<void*>(v), w16})
      cudaFree(x);
  }
  return 0;
}
