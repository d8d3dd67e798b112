// CUDA casts against the CPU reference (dtype_convert): bit-identical for every bf16 pattern, for f32
// values across all exponents (including NaN, Inf, subnormals and rounding ties), and for f16.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "ops/cast.h"
#include "tests/gpu/gpu_tensors.h"
#include "tests/support/test_support.h"

using namespace adapt;
using test::to_cpu;
using test::to_device;

namespace {

Tensor gpu_cast(const Tensor& host_src, DType to) {
  Tensor src = to_device(host_src);
  Tensor dst = Tensor::empty(host_src.shape(), to, backend::cuda_allocator(0), "dst");
  ops::cast(dst, src);
  return to_cpu(dst);
}

std::vector<float> f32_sweep() {
  std::vector<float> v;
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed));
  for (int i = 0; i < 1 << 20; ++i) {
    std::uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    v.push_back(f);
  }
  for (std::uint32_t b = 0; b < 65536; ++b) {  // bf16 rounding ties and their neighbours
    for (std::uint32_t low : {0x7fffu, 0x8000u, 0x8001u}) {
      std::uint32_t u = (b << 16) | low;
      float f;
      std::memcpy(&f, &u, 4);
      v.push_back(f);
    }
  }
  v.push_back(INFINITY);
  v.push_back(-INFINITY);
  v.push_back(NAN);
  v.push_back(0.f);
  v.push_back(-0.f);
  return v;
}

}  // namespace

TEST_CASE("gpu.parity.cast bf16 -> f32 on all 65,536 patterns") {
  Tensor src = Tensor::empty({65536}, DType::BF16, host_allocator(), "bf16_all");
  for (std::uint32_t i = 0; i < 65536; ++i) src.data<bf16>()[i].bits = static_cast<std::uint16_t>(i);
  Tensor got = gpu_cast(src, DType::F32);
  Tensor want = src.to_host(DType::F32);
  CHECK(std::memcmp(got.raw(), want.raw(), want.size_bytes()) == 0);
}

TEST_CASE("gpu.parity.cast f32 -> bf16 and f16 bit-identical to the CPU") {
  std::vector<float> v = f32_sweep();
  Tensor src = Tensor::empty({static_cast<std::int64_t>(v.size())}, DType::F32, host_allocator(), "f32_sweep");
  std::memcpy(src.raw(), v.data(), v.size() * 4);
  for (DType to : {DType::BF16, DType::F16}) {
    CAPTURE(dtype_name(to));
    Tensor got = gpu_cast(src, to);
    Tensor want = src.to_host(to);
    const auto* g = static_cast<const std::uint16_t*>(got.raw());
    const auto* w = static_cast<const std::uint16_t*>(want.raw());
    std::int64_t n_diff = 0, first = -1;
    for (std::int64_t i = 0; i < src.numel(); ++i) {
      bool both_nan = std::isnan(to == DType::BF16 ? bf16_to_f32(g[i]) : f16_to_f32(g[i])) &&
                      std::isnan(to == DType::BF16 ? bf16_to_f32(w[i]) : f16_to_f32(w[i]));
      if (g[i] != w[i] && !both_nan) {
        if (first < 0) first = i;
        ++n_diff;
      }
    }
    if (n_diff) MESSAGE("first mismatch at ", first, ": input ", v[static_cast<std::size_t>(first)]);
    CHECK(n_diff == 0);
  }
}

TEST_CASE("gpu.parity.cast f16 -> f32 on all 65,536 patterns") {
  Tensor src = Tensor::empty({65536}, DType::F16, host_allocator(), "f16_all");
  for (std::uint32_t i = 0; i < 65536; ++i) src.data<f16>()[i].bits = static_cast<std::uint16_t>(i);
  Tensor got = gpu_cast(src, DType::F32);
  Tensor want = src.to_host(DType::F32);
  const float* g = got.data<float>();
  const float* w = want.data<float>();
  for (int i = 0; i < 65536; ++i) {
    if (std::isnan(w[i])) {
      CHECK(std::isnan(g[i]));
    } else {
      CHECK(std::memcmp(&g[i], &w[i], 4) == 0);
    }
  }
}
