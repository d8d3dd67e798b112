// Decode attention timing tool (not a test): microseconds per cpu::attention_forward call of one decode
// step (T = 1, one sequence) over a cache of --keys positions, the kernel a generation step runs in each
// layer, without the weights' products around it (whose memory traffic makes a whole decode step noisy).
// Random q and cache; the best round of --reps calls each counts.
//
//   attention_bench [--keys 8192] [--heads 12] [--kv-heads 4] [--head-dim 64] [--cache bf16|f32]
//                   [--products f32|bf16] [--reps 200] [--rounds 5]
//
// Output: one line, `keys heads kv_heads head_dim cache products us_per_call`.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "dtype/dtype.h"
#include "ops/cpu/cpu_kernels.h"

int main(int argc, char** argv) {
  std::int64_t S = 8192, H = 12, Hkv = 4, D = 64;
  int reps = 200, rounds = 5;
  std::string cache = "bf16", products = "f32";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (value == nullptr || arg.rfind("--", 0) != 0) {
      std::fprintf(stderr,
                   "usage: attention_bench [--keys S] [--heads H] [--kv-heads Hkv] [--head-dim D] "
                   "[--cache bf16|f32] [--products f32|bf16] [--reps N] [--rounds N]\n");
      return 2;
    }
    ++i;
    if (arg == "--keys") S = std::atoll(value);
    else if (arg == "--heads") H = std::atoll(value);
    else if (arg == "--kv-heads") Hkv = std::atoll(value);
    else if (arg == "--head-dim") D = std::atoll(value);
    else if (arg == "--cache") cache = value;
    else if (arg == "--products") products = value;
    else if (arg == "--reps") reps = std::atoi(value);
    else if (arg == "--rounds") rounds = std::atoi(value);
    else {
      std::fprintf(stderr, "attention_bench: unknown option %s\n", arg.c_str());
      return 2;
    }
  }
  if (S < 1 || H < 1 || Hkv < 1 || H % Hkv != 0 || D < 1 || reps < 1 || rounds < 1 ||
      (cache != "bf16" && cache != "f32") || (products != "f32" && products != "bf16")) {
    std::fprintf(stderr, "attention_bench: bad arguments (H must be a multiple of Hkv; sizes >= 1)\n");
    return 2;
  }
  std::mt19937 rng(20261124);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> q(static_cast<std::size_t>(H * D)), out(q.size());
  std::vector<float> k(static_cast<std::size_t>(Hkv * S * D)), v(k.size());
  for (float& x : q) x = dist(rng);
  for (float& x : k) x = dist(rng);
  for (float& x : v) x = dist(rng);
  std::vector<std::uint16_t> k16(k.size()), v16(v.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    k16[i] = adapt::f32_to_bf16(k[i]);
    v16[i] = adapt::f32_to_bf16(v[i]);
  }
  adapt::ops::cpu::AttentionArgs a;
  a.q = q.data();
  if (cache == "bf16") {
    a.k_bf16 = k16.data();
    a.v_bf16 = v16.data();
  } else {
    a.k = k.data();
    a.v = v.data();
  }
  a.out = out.data();
  a.B = 1, a.T = 1, a.H = H, a.Hkv = Hkv, a.D = D, a.S = S;
  a.k_stride_b = a.v_stride_b = Hkv * S * D;
  a.k_stride_h = a.v_stride_h = S * D;
  a.k_stride_s = a.v_stride_s = D;
  a.q_pos_offset = S - 1;  // the query at the last position: every key is visible
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  a.bf16_products = products == "bf16";
  adapt::ops::cpu::attention_forward(a);  // warm-up: scratch buffers, pages
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) adapt::ops::cpu::attention_forward(a);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  std::printf("%lld %lld %lld %lld %s %s %.1f\n", static_cast<long long>(S), static_cast<long long>(H),
              static_cast<long long>(Hkv), static_cast<long long>(D), cache.c_str(), products.c_str(), best * 1e6);
  return 0;
}
