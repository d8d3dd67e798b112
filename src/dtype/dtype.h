// Element types and host conversions. bf16 and f16 are stored as raw 16-bit patterns on the host;
// f32 -> bf16/f16 rounds to nearest even, NaN stays NaN (quiet) and Inf stays Inf.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace adapt {

enum class DType : std::uint8_t { F32, BF16, F16, I32, I64, U8 };

/// Bytes per element.
constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  return 0;
}

/// "f32", "bf16", ... (the names used in TOML and on the command line).
std::string_view dtype_name(DType t);
/// Accepts the names above and the HF / safetensors spellings ("float32", "bfloat16", "F32", "BF16").
/// Throws ConfigError listing the accepted names otherwise.
DType parse_dtype(std::string_view name);
bool is_float(DType t);

struct bf16 {
  std::uint16_t bits;
};
struct f16 {
  std::uint16_t bits;
};

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<bf16>() {
  return DType::BF16;
}
template <>
constexpr DType dtype_of<f16>() {
  return DType::F16;
}
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::I32;
}
template <>
constexpr DType dtype_of<std::int64_t>() {
  return DType::I64;
}
template <>
constexpr DType dtype_of<std::uint8_t>() {
  return DType::U8;
}

inline float bf16_to_f32(std::uint16_t b) {
  std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Round to nearest, ties to even. NaN inputs give a quiet NaN with the same sign.
inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

float f16_to_f32(std::uint16_t h);
/// Round to nearest, ties to even; overflow gives Inf, tiny values become subnormals or zero.
std::uint16_t f32_to_f16(float f);

/// Converts n elements between any two dtypes on the host (floats through f32; ints by value).
void dtype_convert(void* dst, DType dst_dtype, const void* src, DType src_dtype, std::int64_t n);

}  // namespace adapt
