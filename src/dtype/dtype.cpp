#include "dtype/dtype.h"

#include <cctype>
#include <cmath>

#include "core/error.h"

namespace adapt {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
  }
  return "?";
}

DType parse_dtype(std::string_view name) {
  std::string n(name);
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (n == "f32" || n == "float32" || n == "float" || n == "fp32") return DType::F32;
  if (n == "bf16" || n == "bfloat16") return DType::BF16;
  if (n == "f16" || n == "float16" || n == "half" || n == "fp16") return DType::F16;
  if (n == "i32" || n == "int32") return DType::I32;
  if (n == "i64" || n == "int64") return DType::I64;
  if (n == "u8" || n == "uint8") return DType::U8;
  ADAPT_THROW(ConfigError, "unknown dtype '{}': use one of f32, bf16, f16, i32, i64, u8", name);
}

bool is_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      u = sign | static_cast<std::uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | mant << 13 | (mant ? 0x00400000u : 0u);
  } else {
    u = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::uint16_t f32_to_f16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {                                                    // below f16 min normal
    if (abs < 0x33000000u) return sign;                                       // < 2^-25: rounds to 0
    // subnormal: value = mant * 2^-24, mant = round(abs_value * 2^24)
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24 (value = m * 2^(e-150), target scale 2^-24)
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  std::uint32_t r = abs - ((127u - 15u) << 23);
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (r >> 13));
}

namespace {

float load_as_f32(const void* p, DType t, std::int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
    case DType::I32: return static_cast<float>(static_cast<const std::int32_t*>(p)[i]);
    case DType::I64: return static_cast<float>(static_cast<const std::int64_t*>(p)[i]);
    case DType::U8: return static_cast<float>(static_cast<const std::uint8_t*>(p)[i]);
  }
  return 0.f;
}

std::int64_t load_as_i64(const void* p, DType t, std::int64_t i) {
  switch (t) {
    case DType::I32: return static_cast<const std::int32_t*>(p)[i];
    case DType::I64: return static_cast<const std::int64_t*>(p)[i];
    case DType::U8: return static_cast<const std::uint8_t*>(p)[i];
    case DType::F32:
    case DType::BF16:
    case DType::F16: return static_cast<std::int64_t>(load_as_f32(p, t, i));
  }
  return 0;
}

}  // namespace

void dtype_convert(void* dst, DType dt, const void* src, DType st, std::int64_t n) {
  if (dt == st) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * dtype_size(dt));
    return;
  }
  switch (dt) {
    case DType::F32: {
      auto* d = static_cast<float*>(dst);
      if (st == DType::BF16) {
        const auto* s = static_cast<const std::uint16_t*>(src);
#pragma omp parallel for simd if (n > (1 << 16))
        for (std::int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
      } else {
        for (std::int64_t i = 0; i < n; ++i) d[i] = load_as_f32(src, st, i);
      }
      return;
    }
    case DType::BF16: {
      auto* d = static_cast<std::uint16_t*>(dst);
      if (st == DType::F32) {
        const auto* s = static_cast<const float*>(src);
#pragma omp parallel for simd if (n > (1 << 16))
        for (std::int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
      } else {
        for (std::int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(load_as_f32(src, st, i));
      }
      return;
    }
    case DType::F16: {
      auto* d = static_cast<std::uint16_t*>(dst);
      for (std::int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(load_as_f32(src, st, i));
      return;
    }
    case DType::I32: {
      auto* d = static_cast<std::int32_t*>(dst);
      for (std::int64_t i = 0; i < n; ++i) d[i] = static_cast<std::int32_t>(load_as_i64(src, st, i));
      return;
    }
    case DType::I64: {
      auto* d = static_cast<std::int64_t*>(dst);
      for (std::int64_t i = 0; i < n; ++i) d[i] = load_as_i64(src, st, i);
      return;
    }
    case DType::U8: {
      auto* d = static_cast<std::uint8_t*>(dst);
      for (std::int64_t i = 0; i < n; ++i) d[i] = static_cast<std::uint8_t>(load_as_i64(src, st, i));
      return;
    }
  }
}

}  // namespace adapt
