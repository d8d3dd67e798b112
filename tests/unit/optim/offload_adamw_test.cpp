// OffloadAdamW with parameters in host memory (device == host, copies are memcpys): the same weights and
// moments as AdamW bit for bit, whatever the threads, buckets and chunks; f32 and bf16 write-backs.
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "optim/adamw.h"
#include "optim/offload_adamw.h"

using namespace adapt;
using namespace adapt::optim;

namespace {

void fill_random(float* x, std::int64_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (std::int64_t i = 0; i < n; ++i) x[i] = d(rng);
}

}  // namespace

TEST_CASE("OffloadAdamW matches AdamW bit for bit, with f32 and bf16 write-backs") {
  const AdamWOptions opt{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
  // Three parameters, the middle one without weight decay; sizes not multiples of the vector width.
  const std::vector<std::int64_t> sizes{1000, 37, 5003};
  const std::vector<bool> decays{true, false, true};
  std::int64_t n = 0;
  for (auto s : sizes) n += s;
  struct Layout {
    int threads;
    std::int64_t bucket, chunk;
  };
  for (const Layout lay : {Layout{1, 1 << 20, 1 << 14}, Layout{2, 512, 100}, Layout{3, 1001, 64}}) {
    CAPTURE(lay.threads);
    CAPTURE(lay.bucket);
    AdamW ref(opt);
    std::vector<Tensor> params, grads;
    std::vector<OffloadSegment> segments;
    std::vector<float> weights_f32(static_cast<std::size_t>(n));  // the "device" weights (f32)
    std::vector<bf16> weights_bf16(static_cast<std::size_t>(n));  // and a bf16 copy of them
    std::vector<float> device_grads(static_cast<std::size_t>(n));
    std::int64_t at = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      params.push_back(Tensor::zeros(Shape{sizes[i]}, DType::F32, "p" + std::to_string(i)));
      grads.push_back(Tensor::zeros(Shape{sizes[i]}, DType::F32, "g" + std::to_string(i)));
      fill_random(params.back().data<float>(), sizes[i], 1 + static_cast<std::uint32_t>(i));
      ref.add(params.back().name(), params.back(), grads.back(), decays[i]);
      segments.push_back({.begin = at, .count = sizes[i], .decay = decays[i]});
      at += sizes[i];
    }
    OffloadAdamW state(n, segments, opt, Device{},
                       {.threads = lay.threads, .bucket_elems = lay.bucket, .chunk_elems = lay.chunk});
    CHECK(state.threads() == lay.threads);
    CHECK(state.host_device() == Device{});
    at = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::memcpy(state.master() + at, params[i].data<float>(), static_cast<std::size_t>(sizes[i]) * sizeof(float));
      at += sizes[i];
    }
    // f32 write-back of the first two parameters, bf16 of the last (a target may cut across segments).
    state.set_targets({{.begin = 0, .count = sizes[0] + sizes[1], .dst = weights_f32.data(), .dtype = DType::F32},
                       {.begin = sizes[0] + sizes[1], .count = sizes[2],
                        .dst = weights_bf16.data() + sizes[0] + sizes[1], .dtype = DType::BF16}});
    for (int step = 1; step <= 4; ++step) {
      at = 0;
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        fill_random(grads[i].data<float>(), sizes[i], 50 + static_cast<std::uint32_t>(step * 10 + i));
        std::memcpy(device_grads.data() + at, grads[i].data<float>(),
                    static_cast<std::size_t>(sizes[i]) * sizeof(float));
        at += sizes[i];
      }
      // Gradients arrive in two pieces, as two buckets of a backward would.
      state.stage_grads(n / 2, n - n / 2, device_grads.data() + n / 2);
      state.stage_grads(0, n / 2, device_grads.data());
      state.wait_grads();
      ref.step(2e-3);
      state.step(2e-3);
      state.weights_ready();
    }
    CHECK(state.n_steps() == 4);
    at = 0;
    std::int64_t mismatches = 0, bf16_mismatches = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const float* p = params[i].data<float>();
      const float* m = ref.slots()[i].m.data<float>();
      const float* v = ref.slots()[i].v.data<float>();
      for (std::int64_t j = 0; j < sizes[i]; ++j) {
        const std::int64_t k = at + j;
        if (std::memcmp(&p[j], state.master() + k, 4) != 0 || std::memcmp(&m[j], state.m() + k, 4) != 0 ||
            std::memcmp(&v[j], state.v() + k, 4) != 0)
          ++mismatches;
        if (i < 2 && std::memcmp(&p[j], &weights_f32[static_cast<std::size_t>(k)], 4) != 0) ++mismatches;
        if (i == 2 && weights_bf16[static_cast<std::size_t>(k)].bits != f32_to_bf16(p[j])) ++bf16_mismatches;
      }
      at += sizes[i];
    }
    CHECK(mismatches == 0);
    CHECK(bf16_mismatches == 0);
    // The bf16 copy is not the f32 weights: rounding happened.
    CHECK(bf16_to_f32(weights_bf16[static_cast<std::size_t>(n - 1)].bits) != params[2].data<float>()[sizes[2] - 1]);
  }
}

TEST_CASE("OffloadAdamW rejects bad layouts, naming the range") {
  const AdamWOptions opt{};
  CHECK_THROWS_WITH_AS(OffloadAdamW(10, {{.begin = 0, .count = 6}, {.begin = 5, .count = 5}}, opt, Device{}),
                       doctest::Contains("segment [5, 10) overlaps"), ShapeError);
  OffloadAdamW s(10, {}, opt, Device{}, {.threads = 1});
  float dst[4];
  CHECK_THROWS_WITH_AS(s.set_targets({{.begin = 8, .count = 4, .dst = dst}}), doctest::Contains("[8, 12)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(s.set_targets({{.begin = 0, .count = 4, .dst = dst, .dtype = DType::F16}}),
                       doctest::Contains("not f16"), UnsupportedError);
  CHECK_THROWS_WITH_AS(s.stage_grads(5, 6, dst), doctest::Contains("gradient range [5, 11)"), ShapeError);
}

#if !ADAPT_HAVE_CUDA
TEST_CASE("Offloading for parameters on a GPU in a CPU-only build says how to rebuild") {
  CHECK_THROWS_WITH_AS(OffloadAdamW(10, {}, AdamWOptions{}, Device{DeviceKind::Cuda, 0}),
                       doctest::Contains("ADAPT_CUDA=OFF"), UnsupportedError);
}
#endif
