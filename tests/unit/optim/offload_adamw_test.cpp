// OffloadAdamW with parameters in host memory (device == host, copies are memcpys): the same weights and
// moments as AdamW bit for bit, whatever the threads, buckets and chunks; f32 and bf16 write-backs.
#include <doctest/doctest.h>

#include <fmt/format.h>
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
      params.push_back(Tensor::zeros(Shape{sizes[i]}, DType::F32, fmt::format("p{}", i)));
      grads.push_back(Tensor::zeros(Shape{sizes[i]}, DType::F32, fmt::format("g{}", i)));
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
                       {.begin = sizes[0] + sizes[1],
                        .count = sizes[2],
                        .dst = weights_bf16.data() + sizes[0] + sizes[1],
                        .dtype = DType::BF16}});
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
  CHECK_THROWS_WITH_AS(s.set_targets({{.begin = 8, .count = 4, .dst = dst}}), doctest::Contains("[8, 12)"), ShapeError);
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

namespace {

/// Two states with the same layout and values: one stepped with step(), one with step_async().
struct AsyncPair {
  static constexpr std::int64_t kN = 4099;
  const AdamWOptions opt{.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
  const std::vector<OffloadSegment> segments{{.begin = 0, .count = 1000, .decay = true},
                                             {.begin = 1000, .count = 99, .decay = false},
                                             {.begin = 1099, .count = 3000, .decay = true}};
  OffloadAdamW sync{kN, segments, opt, Device{}, {.threads = 2, .bucket_elems = 257, .chunk_elems = 64}};
  OffloadAdamW async{kN, segments, opt, Device{}, {.threads = 2, .bucket_elems = 257, .chunk_elems = 64}};
  std::vector<float> w_sync = std::vector<float>(kN), w_async = std::vector<float>(kN);  // f32 targets
  std::vector<bf16> b_sync = std::vector<bf16>(kN), b_async = std::vector<bf16>(kN);     // bf16 targets
  std::vector<float> grads = std::vector<float>(kN);

  AsyncPair() {
    fill_random(sync.master(), kN, 3);
    std::memcpy(async.master(), sync.master(), kN * sizeof(float));
    // An f32 "device" target over everything, a bf16 one over a middle range and a host one (memcpy'd by
    // the updating thread) over the rest.
    auto targets = [&](std::vector<float>& w, std::vector<bf16>& b) {
      return std::vector<OffloadTarget>{
          {.begin = 0, .count = 2000, .dst = w.data(), .dtype = DType::F32},
          {.begin = 500, .count = 2000, .dst = b.data() + 500, .dtype = DType::BF16},
          {.begin = 2000, .count = kN - 2000, .dst = w.data() + 2000, .dtype = DType::F32, .host = true}};
    };
    sync.set_targets(targets(w_sync, b_sync));
    async.set_targets(targets(w_async, b_async));
  }
  void load(int step) {
    fill_random(grads.data(), kN, 100 + static_cast<std::uint32_t>(step));
    sync.load_grads(0, kN, grads.data());
    async.load_grads(0, kN, grads.data());
  }
};

std::int64_t diff_bits(const void* a, const void* b, std::int64_t n, std::size_t size) {
  std::int64_t d = 0;
  for (std::int64_t i = 0; i < n; ++i)
    d += std::memcmp(static_cast<const char*>(a) + i * size, static_cast<const char*>(b) + i * size, size) != 0;
  return d;
}

}  // namespace

TEST_CASE("OffloadAdamW step_async: the update of step() bit for bit; progress monotone and complete") {
  AsyncPair s;
  CHECK(s.async.progress() == AsyncPair::kN);  // no step yet: nothing to wait for
  CHECK_FALSE(s.async.stepping());
  for (int step = 1; step <= 4; ++step) {
    CAPTURE(step);
    s.load(step);
    s.sync.step(1e-2);
    s.async.step_async(1e-2);
    CHECK(s.async.stepping());
    CHECK(s.async.n_steps() == step);
    std::int64_t last = 0;
    bool monotone = true;
    while (last < AsyncPair::kN) {
      const std::int64_t p = s.async.progress();
      monotone = monotone && p >= last;
      last = p;
    }
    CHECK(monotone);
    s.async.finish();
    CHECK_FALSE(s.async.stepping());
    CHECK(s.async.progress() == AsyncPair::kN);
    constexpr std::int64_t n = AsyncPair::kN;
    CHECK(diff_bits(s.async.master(), s.sync.master(), n, 4) == 0);
    CHECK(diff_bits(s.async.m(), s.sync.m(), n, 4) == 0);
    CHECK(diff_bits(s.async.v(), s.sync.v(), n, 4) == 0);
    CHECK(diff_bits(s.w_async.data(), s.w_sync.data(), n, 4) == 0);
    CHECK(diff_bits(s.b_async.data(), s.b_sync.data(), n, 2) == 0);
    CHECK(diff_bits(s.w_async.data(), s.async.master(), n, 4) == 0);  // every target written
  }
  s.async.finish();  // no step running: nothing
}

TEST_CASE("OffloadAdamW step_async: a range waited for holds its new values; errors reach finish()") {
  AsyncPair s;
  constexpr std::int64_t n = AsyncPair::kN;
  for (int step = 1; step <= 3; ++step) {
    CAPTURE(step);
    s.load(step);
    s.sync.step(1e-2);
    s.async.step_async(1e-2);
    // A "forward" walking the layers in order: each range, once waited for, already holds the values
    // of the synchronous step in every target (the f32 and the host ones: w; the bf16 one: b).
    std::int64_t mismatches = 0;
    for (std::int64_t end = 300; end < n + 300; end += 300) {
      const std::int64_t e = std::min(end, n);
      s.async.wait_updated(e);
      CHECK(s.async.progress() >= e);
      mismatches += diff_bits(s.w_async.data(), s.w_sync.data(), e, 4);
      const std::int64_t b1 = std::min<std::int64_t>(e, 2500);
      if (b1 > 500) mismatches += diff_bits(s.b_async.data() + 500, s.b_sync.data() + 500, b1 - 500, 2);
    }
    CHECK(mismatches == 0);
    s.async.finish();
  }
  // An exception on the background thread (an instruction set no CPU has) comes out of finish(), and
  // out of a wait for a range the step never reached.
  s.load(9);
  s.async.set_isa(static_cast<CpuIsa>(99));
  s.async.step_async(1e-2);
  CHECK_THROWS_AS(s.async.wait_updated(n), InternalError);
  CHECK_THROWS_WITH_AS(s.async.finish(), doctest::Contains("does not support"), InternalError);
  CHECK_FALSE(s.async.stepping());
  s.async.finish();  // rethrown once
  s.async.set_isa(cpu_isa_best());
  CHECK_THROWS_AS(s.async.load_grads(0, n + 1, s.grads.data()), ShapeError);
}
