// Branch-free f32 exp that the compiler vectorises inside `#pragma omp simd` loops (glibc's expf
// only vectorises under -ffast-math). Cephes' expf scheme: x = n·ln2 + r with ln2 split in two,
// a degree-6 polynomial for e^r on [−ln2/2, ln2/2], then 2^n through the exponent bits. Max relative
// error about 2 ulp on [−87, 88] (checked against std::exp in tests/unit/ops); inputs are clamped
// there, so exp(−inf) gives ~1e-38 instead of 0: callers skip masked entries rather than rely on it.
#pragma once

#include <bit>
#include <cstdint>

// Hot CPU loops are compiled three times (AVX-512, AVX2+FMA, baseline) and picked at load time, so
// one binary runs everywhere and still uses the wide units where they exist.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define ADAPT_CPU_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ADAPT_CPU_KERNEL
#endif

namespace adapt::ops::cpu {

inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln2) via the 1.5·2^23 trick (round to nearest, no int conversion of a float).
  const float shifter = 12582912.0f;
  const float t = x * kLog2e + shifter;
  const float n = t - shifter;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n: n + 127 in the exponent field (n is within [-126, 127] after the clamp).
  const std::int32_t bits = (std::bit_cast<std::int32_t>(t) - 0x4B400000 + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

/// Elements per block of the SiLU loops (swiglu_row, swiglu_backward_row), which take e^-g of a block
/// into a buffer first and divide by 1 + e^-g in a second loop. Fused in one loop, GCC threads
/// exp_f32's upper clamp into the division (x > 88: e^88 is a constant) and, once vectorised, divides
/// every lane by 1 + e^88 too, a subnormal quotient for |g| < ~2 that costs a microcode assist per
/// vector on Intel CPUs: the fused loop ran ~10x slower (3.4 against 0.34 ns an element, AVX-512).
/// Same operations, same results either way.
inline constexpr std::int64_t kSiluBlock = 256;

}  // namespace adapt::ops::cpu
