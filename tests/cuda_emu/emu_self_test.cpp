// cuda_emu's own behaviour: what it computes (block reductions, shuffles, wmma tiles against a plain
// matrix product) and the faults it must report as failed launches (__syncthreads reached by part of a
// block, full-mask warp collectives on a partial warp, launch shapes and shared memory past sm_80's
// limits, misaligned wmma pointers), plus the lane-order model that exposes a missing __syncwarp, and the
// deferred streams that expose a missing wait between streams or before a host read.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "dtype/dtype.h"
#include "tests/cuda_emu/emu_self_kernels.h"

using namespace adapt;
namespace emu = adapt::test::emu;

TEST_CASE("cuda_emu: block sums through shared memory and shuffles, for every block size") {
  std::vector<float> x(3000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) - 3.0f + 0.25f;
  double want = 0.0;
  for (float v : x) want += v;
  for (int threads : {32, 64, 96, 256, 1024}) {
    CAPTURE(threads);
    float out = 0.0f;
    REQUIRE(emu::block_sum(&out, x.data(), static_cast<int>(x.size()), threads) == cudaSuccess);
    CHECK(out == doctest::Approx(want).epsilon(1e-6));
  }
}

TEST_CASE("cuda_emu: __shfl_xor_sync exchanges values between the lanes it names") {
  const int n = 300;
  std::vector<float> x(n), out(n, -1.0f);
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>(i);
  for (int m : {1, 2, 16, 31}) {
    REQUIRE(emu::shuffle_xor(out.data(), x.data(), n, m) == cudaSuccess);
    for (int i = 0; i < n; ++i) {
      const int src = i ^ m;
      CHECK(out[i] == (src < n ? static_cast<float>(src) : 0.0f));
    }
  }
}

TEST_CASE("cuda_emu: faults a GPU leaves undefined fail the launch") {
  float out = 0.0f;
  SUBCASE("__syncthreads after part of the block has returned") {
    CHECK(emu::early_exit_then_syncthreads(64, 64) == cudaSuccess);
    CHECK(emu::early_exit_then_syncthreads(64, 40) == cudaErrorLaunchFailure);
  }
  SUBCASE("a full-mask shuffle on a warp of fewer than 32 threads") {
    CHECK(emu::full_mask_on_block(&out, 64) == cudaSuccess);
    CHECK(out == 32.0f);
    CHECK(emu::full_mask_on_block(&out, 48) == cudaErrorLaunchFailure);
  }
  SUBCASE("launch shapes and dynamic shared memory past sm_80's limits") {
    CHECK(emu::launch_shape(2, 1024, 0, 0) == cudaSuccess);
    CHECK(emu::launch_shape(2, 1025, 0, 0) == cudaErrorInvalidConfiguration);
    CHECK(emu::launch_shape(0, 32, 0, 0) == cudaErrorInvalidConfiguration);
    CHECK(emu::launch_shape(1, 32, 48 * 1024, 0) == cudaSuccess);
    CHECK(emu::launch_shape(1, 32, 64 * 1024, 0) == cudaErrorInvalidValue);  // not raised yet
    CHECK(emu::launch_shape(1, 32, 64 * 1024, 64 * 1024) == cudaSuccess);
    CHECK(emu::launch_shape(1, 32, 0, 200 * 1024) == cudaErrorInvalidValue);  // sm_80 allows 163 KiB
  }
}

TEST_CASE("cuda_emu: lanes run one after another, so a read that races with a neighbour's store is exposed") {
  std::vector<int> out(32, -1);
  REQUIRE(emu::neighbour_read(out.data(), true) == cudaSuccess);
  for (int i = 0; i < 32; ++i) CHECK(out[i] == (i + 1) % 32);
  REQUIRE(emu::neighbour_read(out.data(), false) == cudaSuccess);
  // Forward order: lane i reads lane i + 1's slot before that lane has run; reverse: lane 31 reads lane 0's.
  int stale = 0;
  for (int i = 0; i < 32; ++i) stale += out[i] != (i + 1) % 32;
  CHECK(stale == (cuda_emu::reverse_order() ? 1 : 31));
}

TEST_CASE("cuda_emu: wmma m16n16k16 tiles equal the f32 matrix product, and misaligned pointers fail") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int ld = 24;  // a multiple of 8 bf16 elements (16 bytes)
  alignas(32) std::uint16_t a[16 * ld], b[16 * ld];
  alignas(32) float c[16 * ld], d[16 * ld];
  std::vector<float> af(16 * 16), bf(16 * 16);
  for (int r = 0; r < 16; ++r) {
    for (int k = 0; k < 16; ++k) {
      a[r * ld + k] = f32_to_bf16(u(rng));
      af[r * 16 + k] = bf16_to_f32(a[r * ld + k]);
      b[r * ld + k] = f32_to_bf16(u(rng));
    }
  }
  for (float& v : c) v = u(rng);
  for (bool col : {false, true}) {
    CAPTURE(col);
    // b stored row-major is B(k, n) = b[k·ld + n]; column-major is B(k, n) = b[n·ld + k].
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < 16; ++n) bf[k * 16 + n] = bf16_to_f32(col ? b[n * ld + k] : b[k * ld + n]);
    std::memset(d, 0, sizeof d);
    REQUIRE(emu::wmma_tile(d, a, ld, b, ld, col, c, ld) == cudaSuccess);
    for (int r = 0; r < 16; ++r) {
      for (int n = 0; n < 16; ++n) {
        double want = c[r * ld + n];
        for (int k = 0; k < 16; ++k) want += static_cast<double>(af[r * 16 + k]) * bf[k * 16 + n];
        CHECK(d[r * ld + n] == doctest::Approx(want).epsilon(1e-5));
      }
    }
  }
  CHECK(emu::wmma_tile(d, a + 8, ld, b, ld, false, c, ld) == cudaErrorLaunchFailure);  // 16-byte offset
  CHECK(emu::wmma_tile(d, a, 20, b, ld, false, c, ld) == cudaErrorLaunchFailure);      // ldm of 40 bytes
}

// ---- deferred streams (CUDA_EMU_STREAMS=deferred) ----------------------------------------------------------

namespace {
// Deferred streams for one test, with a host that counts as idle only after `idle_ms` without a CUDA call
// (long by default, so that a slow machine cannot run the queue between two lines of a test).
struct DeferredStreams {
  explicit DeferredStreams(int idle_ms = 60000) {
    cuda_emu::set_deferred_streams(true);
    cuda_emu::set_idle_ms(idle_ms);
  }
  ~DeferredStreams() {
    cuda_emu::set_deferred_streams(false);
    cuda_emu::set_idle_ms(20);
  }
};

struct Buffers {
  static constexpr int n = 300;
  float* a = nullptr;
  float* b = nullptr;
  float* host = nullptr;  // pinned
  cudaStream_t s1 = nullptr, s2 = nullptr;
  Buffers() {
    REQUIRE(cudaMalloc(&a, n * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMalloc(&b, n * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaHostAlloc(reinterpret_cast<void**>(&host), n * sizeof(float), cudaHostAllocDefault) == cudaSuccess);
    REQUIRE(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) == cudaSuccess);
    REQUIRE(cudaMemset(a, 0, n * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemset(b, 0, n * sizeof(float)) == cudaSuccess);
    // cudaMemset of device memory returns before it has run, on the legacy stream, which the streams
    // above (non-blocking) do not wait for.
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    for (int i = 0; i < n; ++i) host[i] = -1.0f;
  }
  ~Buffers() {
    cudaStreamDestroy(s1);
    cudaStreamDestroy(s2);
    cudaFree(a);
    cudaFree(b);
    cudaFreeHost(host);
  }
  int count_host(float v) const {
    int k = 0;
    for (int i = 0; i < n; ++i) k += host[i] == v;
    return k;
  }
};
}  // namespace

TEST_CASE("cuda_emu deferred streams: a copy that does not wait for another stream's kernel reads stale data") {
  DeferredStreams deferred;
  Buffers m;
  const std::size_t bytes = Buffers::n * sizeof(float);
  SUBCASE("no event wait: the later stream's copy runs first") {
    REQUIRE(emu::add(m.a, Buffers::n, 1.0f, m.s1) == cudaSuccess);
    REQUIRE(cudaMemcpyAsync(m.b, m.a, bytes, cudaMemcpyDeviceToDevice, m.s2) == cudaSuccess);
    REQUIRE(cudaMemcpyAsync(m.host, m.b, bytes, cudaMemcpyDeviceToHost, m.s2) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(m.s2) == cudaSuccess);
    CHECK(m.count_host(0.0f) == Buffers::n);  // a's value before the kernel
    REQUIRE(cudaStreamSynchronize(m.s1) == cudaSuccess);
  }
  SUBCASE("an event recorded after the kernel and waited for by the copy's stream") {
    cudaEvent_t e = nullptr;
    REQUIRE(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess);
    REQUIRE(emu::add(m.a, Buffers::n, 1.0f, m.s1) == cudaSuccess);
    REQUIRE(cudaEventRecord(e, m.s1) == cudaSuccess);
    REQUIRE(cudaStreamWaitEvent(m.s2, e, 0) == cudaSuccess);
    REQUIRE(cudaMemcpyAsync(m.b, m.a, bytes, cudaMemcpyDeviceToDevice, m.s2) == cudaSuccess);
    REQUIRE(cudaMemcpyAsync(m.host, m.b, bytes, cudaMemcpyDeviceToHost, m.s2) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(m.s2) == cudaSuccess);
    CHECK(m.count_host(1.0f) == Buffers::n);
    cudaEventDestroy(e);
  }
}

TEST_CASE("cuda_emu deferred streams: an asynchronous copy into pinned memory lands only once waited for") {
  DeferredStreams deferred;
  Buffers m;
  const std::size_t bytes = Buffers::n * sizeof(float);
  REQUIRE(emu::add(m.a, Buffers::n, 2.0f, nullptr) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(m.host, m.a, bytes, cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
  CHECK(m.count_host(-1.0f) == Buffers::n);  // nothing has run: the host has not waited
  cudaEvent_t e = nullptr;
  REQUIRE(cudaEventCreate(&e) == cudaSuccess);
  REQUIRE(cudaEventRecord(e, nullptr) == cudaSuccess);
  CHECK(cudaEventQuery(e) == cudaErrorNotReady);  // a poll: the device goes on without the host waiting
  int polls = 0;
  while (cudaEventQuery(e) == cudaErrorNotReady && polls < 10000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++polls;
  }
  CHECK(cudaEventQuery(e) == cudaSuccess);
  CHECK(m.count_host(2.0f) == Buffers::n);
  SUBCASE("a blocking cudaMemcpy waits for the legacy stream") {
    REQUIRE(emu::add(m.a, Buffers::n, 3.0f, nullptr) == cudaSuccess);
    REQUIRE(cudaMemcpy(m.host, m.a, bytes, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(m.count_host(5.0f) == Buffers::n);
  }
  SUBCASE("a pageable source is read when cudaMemcpyAsync returns") {
    std::vector<float> src(Buffers::n, 7.0f);
    REQUIRE(cudaMemcpyAsync(m.b, src.data(), bytes, cudaMemcpyHostToDevice, m.s1) == cudaSuccess);
    std::fill(src.begin(), src.end(), 9.0f);
    REQUIRE(cudaMemcpyAsync(m.host, m.b, bytes, cudaMemcpyDeviceToHost, m.s1) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(m.s1) == cudaSuccess);
    CHECK(m.count_host(7.0f) == Buffers::n);
  }
  cudaEventDestroy(e);
}

TEST_CASE("cuda_emu deferred streams: an idle host lets the queue run; a kernel's fault comes at the wait") {
  SUBCASE("idle") {
    DeferredStreams deferred(/*idle_ms=*/30);
    Buffers m;
    const auto queued = std::chrono::steady_clock::now();  // before the calls: the host's last is later
    REQUIRE(emu::add(m.a, Buffers::n, 4.0f, m.s1) == cudaSuccess);
    REQUIRE(cudaMemcpyAsync(m.host, m.a, Buffers::n * sizeof(float), cudaMemcpyDeviceToHost, m.s1) == cudaSuccess);
    while (m.count_host(4.0f) != Buffers::n && std::chrono::steady_clock::now() - queued < std::chrono::seconds(10))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const auto landed = std::chrono::steady_clock::now();
    CHECK(m.count_host(4.0f) == Buffers::n);
    CHECK(landed - queued >= std::chrono::milliseconds(30));  // not before the host had been idle that long
  }
  SUBCASE("fault") {
    DeferredStreams deferred;
    CHECK(emu::early_exit_then_syncthreads(64, 40) == cudaSuccess);  // queued: the launch itself is valid
    CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(emu::launch_shape(2, 1025, 0, 0) == cudaErrorInvalidConfiguration);  // refused at the call
  }
}
