// Device dtype conversions, bit-identical to the host ones in src/dtype/dtype.h: f32 -> bf16/f16
// round to nearest even, NaN stays a quiet NaN with its sign.
#pragma once

#include <cstdint>

namespace adapt::kernels {

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}

__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace adapt::kernels
