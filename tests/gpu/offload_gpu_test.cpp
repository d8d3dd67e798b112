// OffloadAdamW with parameters on a GPU: pinned host state, gradients copied device→host in buckets on
// the copy stream after the compute stream's work, the CPU update, and the f32 / bf16 write-backs
// ordered before the compute stream's next work; weights and moments against optim::AdamW bit for bit.
// step_async (optim.overlap): a "forward" on the compute stream that reads each range of the device
// weights after wait_updated + weights_ready sees the synchronous step's values, bit for bit.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backend/offload_copier.h"
#include "optim/adamw.h"
#include "optim/offload_adamw.h"

#if ADAPT_HAVE_CUDA
#include "backend/cuda/cuda_runtime.h"
#endif

using namespace adapt;
using namespace adapt::optim;

#if ADAPT_HAVE_CUDA
// The KV cache's staging: a row's heads are runs of positions at the head's pitch, copied in one
// cudaMemcpy2DAsync each way; the device bytes between the runs are left as they were.
TEST_CASE("the CUDA copier copies rows at pitches to the device and back in one call each") {
  backend::cuda::set_device(0);
  auto copier = backend::offload_copier_cuda(0);
  const std::size_t pitch = 64, width = 40, rows = 5, bytes = pitch * rows;
  auto* host = static_cast<std::uint8_t*>(copier->host_allocator().allocate(bytes));
  auto* back = static_cast<std::uint8_t*>(copier->host_allocator().allocate(bytes));
  for (std::size_t i = 0; i < bytes; ++i) host[i] = static_cast<std::uint8_t>(i * 7 + 1), back[i] = 0xdd;
  std::uint8_t* dev = nullptr;
  REQUIRE(cudaMalloc(&dev, bytes) == cudaSuccess);
  REQUIRE(cudaMemset(dev, 0xee, bytes) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);  // the copy stream does not wait for the default stream
  copier->to_device_rows(dev + 3, pitch, host + 3, pitch, width, rows);
  copier->synchronize();
  std::vector<std::uint8_t> seen(bytes);
  REQUIRE(cudaMemcpy(seen.data(), dev, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
  for (std::size_t i = 0; i < bytes; ++i) {
    CAPTURE(i);
    const std::size_t col = i % pitch;
    CHECK(seen[i] == (col >= 3 && col < 3 + width ? host[i] : 0xee));
  }
  const backend::HostCopy copy{back + 3, dev + 3, width, rows, pitch, pitch};
  copier->wait_host(copier->to_host({&copy, 1}, nullptr));
  for (std::size_t i = 0; i < bytes; ++i) {
    CAPTURE(i);
    const std::size_t col = i % pitch;
    CHECK(back[i] == (col >= 3 && col < 3 + width ? host[i] : 0xdd));
  }
  cudaFree(dev);
  copier->host_allocator().deallocate(host, bytes);
  copier->host_allocator().deallocate(back, bytes);
}

TEST_CASE("OffloadAdamW on cuda:0 matches AdamW bit for bit; f32 and bf16 weights written back") {
  const AdamWOptions opt{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
  const std::int64_t n_f32 = 300001, n_bf16 = 70001, n = n_f32 + n_bf16;
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> init(static_cast<std::size_t>(n));
  for (float& x : init) x = d(rng);
  // Reference on the host.
  Tensor ref_p = Tensor::zeros(Shape{n}, DType::F32, "p"), ref_g = Tensor::zeros(Shape{n}, DType::F32, "g");
  std::memcpy(ref_p.data<float>(), init.data(), init.size() * sizeof(float));
  AdamW ref(opt);
  ref.add("p", ref_p, ref_g);
  // Device side: f32 weights, bf16 weights, f32 gradients.
  backend::cuda::set_device(0);
  backend::cuda::Stream compute(0);
  float* d_w32 = nullptr;
  std::uint16_t* d_w16 = nullptr;
  float* d_grad = nullptr;
  ADAPT_CUDA_CHECK(cudaMalloc(&d_w32, static_cast<std::size_t>(n_f32) * 4));
  ADAPT_CUDA_CHECK(cudaMalloc(&d_w16, static_cast<std::size_t>(n_bf16) * 2));
  ADAPT_CUDA_CHECK(cudaMalloc(&d_grad, static_cast<std::size_t>(n) * 4));
  OffloadAdamW state(n, {}, opt, Device{DeviceKind::Cuda, 0}, {.threads = 2, .bucket_elems = 65536});
  CHECK(state.host_device().kind == DeviceKind::PinnedHost);
  std::memcpy(state.master(), init.data(), init.size() * sizeof(float));
  state.set_targets({{.begin = 0, .count = n_f32, .dst = d_w32, .dtype = DType::F32},
                     {.begin = n_f32, .count = n_bf16, .dst = d_w16, .dtype = DType::BF16}});
  std::vector<float> grads(static_cast<std::size_t>(n));
  for (int step = 1; step <= 3; ++step) {
    for (float& x : grads) x = d(rng);
    std::memcpy(ref_g.data<float>(), grads.data(), grads.size() * sizeof(float));
    // The gradients reach the device on the compute stream (as a backward would write them).
    ADAPT_CUDA_CHECK(cudaMemcpyAsync(d_grad, grads.data(), grads.size() * 4, cudaMemcpyHostToDevice, compute.get()));
    for (std::int64_t at = 0; at < n; at += 100000)
      state.stage_grads(at, std::min<std::int64_t>(100000, n - at), d_grad + at, compute.get());
    state.wait_grads();
    ref.step(1e-3);
    state.step(1e-3);
    state.weights_ready(compute.get());
  }
  std::vector<float> w32(static_cast<std::size_t>(n_f32));
  std::vector<std::uint16_t> w16(static_cast<std::size_t>(n_bf16));
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(w32.data(), d_w32, w32.size() * 4, cudaMemcpyDeviceToHost, compute.get()));
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(w16.data(), d_w16, w16.size() * 2, cudaMemcpyDeviceToHost, compute.get()));
  compute.synchronize();
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    bad += std::memcmp(ref_p.data<float>() + i, state.master() + i, 4) != 0;
    bad += std::memcmp(ref.slots()[0].m.data<float>() + i, state.m() + i, 4) != 0;
    bad += std::memcmp(ref.slots()[0].v.data<float>() + i, state.v() + i, 4) != 0;
  }
  for (std::int64_t i = 0; i < n_f32; ++i)
    bad += std::memcmp(ref_p.data<float>() + i, &w32[static_cast<std::size_t>(i)], 4) != 0;
  for (std::int64_t i = 0; i < n_bf16; ++i)
    bad += w16[static_cast<std::size_t>(i)] != f32_to_bf16(ref_p.data<float>()[n_f32 + i]);
  CHECK(bad == 0);
  cudaFree(d_w32);
  cudaFree(d_w16);
  cudaFree(d_grad);
}

TEST_CASE("OffloadAdamW on cuda:0: step_async with per-range waits gives step()'s weights on the device") {
  const AdamWOptions opt{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
  const std::int64_t n = 200003, range = 30000;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> init(static_cast<std::size_t>(n)), grads(static_cast<std::size_t>(n));
  for (float& x : init) x = d(rng);
  backend::cuda::set_device(0);
  backend::cuda::Stream compute(0);
  float* d_w = nullptr;
  ADAPT_CUDA_CHECK(cudaMalloc(&d_w, static_cast<std::size_t>(n) * 4));
  std::vector<float> host_w(static_cast<std::size_t>(n));  // a host target beside the device one (the mirrors)
  OffloadAdamW sync(n, {}, opt, Device{}, {.threads = 2, .bucket_elems = 8192});
  OffloadAdamW async(n, {}, opt, Device{DeviceKind::Cuda, 0}, {.threads = 2, .bucket_elems = 8192});
  std::memcpy(sync.master(), init.data(), init.size() * sizeof(float));
  std::memcpy(async.master(), init.data(), init.size() * sizeof(float));
  async.set_targets({{.begin = 0, .count = n, .dst = d_w, .dtype = DType::F32},
                     {.begin = 0, .count = n, .dst = host_w.data(), .dtype = DType::F32, .host = true}});
  std::vector<float> seen(static_cast<std::size_t>(n));
  std::int64_t bad = 0;
  for (int step = 1; step <= 3; ++step) {
    for (float& x : grads) x = d(rng);
    sync.load_grads(0, n, grads.data());
    async.load_grads(0, n, grads.data());
    sync.step(1e-3);
    async.step_async(1e-3, compute.get());
    // The forward: each range read on the compute stream once its update is in.
    for (std::int64_t at = 0; at < n; at += range) {
      const std::int64_t count = std::min(range, n - at);
      async.wait_updated(at + count);
      async.weights_ready(compute.get());
      ADAPT_CUDA_CHECK(cudaMemcpyAsync(seen.data() + at, d_w + at, static_cast<std::size_t>(count) * 4,
                                       cudaMemcpyDeviceToHost, compute.get()));
    }
    compute.synchronize();
    async.finish();
    for (std::int64_t i = 0; i < n; ++i) {
      bad += std::memcmp(sync.master() + i, &seen[static_cast<std::size_t>(i)], 4) != 0;
      bad += std::memcmp(sync.master() + i, &host_w[static_cast<std::size_t>(i)], 4) != 0;
      bad += std::memcmp(sync.m() + i, async.m() + i, 4) != 0;
      bad += std::memcmp(sync.v() + i, async.v() + i, 4) != 0;
    }
  }
  CHECK(bad == 0);
  cudaFree(d_w);
}
#endif
