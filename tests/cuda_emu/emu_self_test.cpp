// cuda_emu's own behaviour: what it computes (block reductions, shuffles, wmma tiles against a plain
// matrix product) and the faults it must report as failed launches (__syncthreads reached by part of a
// block, full-mask warp collectives on a partial warp, launch shapes and shared memory past sm_80's
// limits, misaligned wmma pointers), plus the lane-order model that exposes a missing __syncwarp.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
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
  CHECK(emu::wmma_tile(d, a + 8, ld, b, ld, false, c, ld) == cudaErrorLaunchFailure);   // 16-byte offset
  CHECK(emu::wmma_tile(d, a, 20, b, ld, false, c, ld) == cudaErrorLaunchFailure);       // ldm of 40 bytes
}
