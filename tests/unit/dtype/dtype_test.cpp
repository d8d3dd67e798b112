// bf16: exhaustive over all 65,536 patterns. f16: against the compiler's _Float16 conversions
// (IEEE binary16, round to nearest even), which we did not write.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/error.h"
#include "dtype/dtype.h"
#include "tests/support/test_support.h"

using namespace adapt;

static std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST_CASE("bf16 -> f32 -> bf16 is the identity on all 65,536 patterns (NaN stays NaN)") {
  int n_nan = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_f32(static_cast<std::uint16_t>(b));
    CHECK(bits_of(f) == b << 16);  // bf16 is the high half of the f32 pattern
    const std::uint16_t back = f32_to_bf16(f);
    if (std::isnan(f)) {
      ++n_nan;
      CHECK(std::isnan(bf16_to_f32(back)));
      CHECK((back & 0x8000) == (b & 0x8000));  // sign preserved
    } else {
      CHECK(back == b);
    }
  }
  CHECK(n_nan == 2 * 127);  // exponent all ones, mantissa non-zero, both signs
  CHECK(f32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  CHECK(f32_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
}

TEST_CASE("f32 -> bf16 rounds to nearest, ties to even, at every midpoint") {
  // For each finite bf16 pattern b (not the largest), the f32 midpoint between b and b+1 must round
  // to whichever of the two has an even last bit; one ulp (f32) either side rounds to the nearer.
  for (std::uint32_t b = 0; b < 65535; ++b) {
    if ((b & 0x7f80) == 0x7f80 || ((b + 1) & 0x7f80) == 0x7f80) continue;  // Inf/NaN neighbours
    if (b == 0x7fff) continue;                                             // sign boundary
    const std::uint32_t mid = (b << 16) | 0x8000u;
    const std::uint16_t even = (b & 1) ? static_cast<std::uint16_t>(b + 1) : static_cast<std::uint16_t>(b);
    CHECK(f32_to_bf16(float_of(mid)) == even);
    CHECK(f32_to_bf16(float_of(mid - 1)) == b);
    CHECK(f32_to_bf16(float_of(mid + 1)) == b + 1);
  }
  // The largest finite f32 rounds up to Inf; values just below the midpoint to the max finite bf16.
  CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(f32_to_bf16(float_of(0x7f7f7fffu)) == 0x7f7f);
}

TEST_CASE("f16 <-> f32 agree with _Float16 on all 65,536 patterns") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    _Float16 ref;
    std::uint16_t hb = static_cast<std::uint16_t>(h);
    std::memcpy(&ref, &hb, 2);
    const float want = static_cast<float>(ref);
    const float got = f16_to_f32(hb);
    if (std::isnan(want)) {
      CHECK(std::isnan(got));
    } else {
      CHECK(bits_of(got) == bits_of(want));
      CHECK(f32_to_f16(got) == hb);
    }
  }
}

TEST_CASE("f32 -> f16 matches _Float16 rounding on a sweep including subnormals and overflow") {
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed));
  auto check_one = [](float f) {
    const _Float16 ref = static_cast<_Float16>(f);
    std::uint16_t want;
    std::memcpy(&want, &ref, 2);
    const std::uint16_t got = f32_to_f16(f);
    if (std::isnan(f)) {
      CHECK((got & 0x7c00) == 0x7c00);
      CHECK((got & 0x3ff) != 0);
    } else {
      INFO("f = ", f, " bits 0x", std::hex, bits_of(f));
      CHECK(got == want);
    }
  };
  // Every f32 exponent, many mantissas, both signs.
  for (int i = 0; i < 400000; ++i) check_one(float_of(static_cast<std::uint32_t>(rng())));
  // Dense sweep around the f16 range edges: subnormal boundary, max finite, and ties.
  for (std::uint32_t u = 0x33000000u - 4096; u < 0x33000000u + 4096; ++u) check_one(float_of(u));
  for (std::uint32_t u = 0x38800000u - 8192; u < 0x38800000u + 8192; ++u) check_one(float_of(u));
  for (std::uint32_t u = 0x477fe000u - 8192; u < 0x477fe000u + 8192; ++u) check_one(float_of(u));
}

TEST_CASE("dtype names, parsing and bulk conversion") {
  CHECK(parse_dtype("bfloat16") == DType::BF16);
  CHECK(parse_dtype("BF16") == DType::BF16);
  CHECK(parse_dtype("float32") == DType::F32);
  CHECK(parse_dtype("F16") == DType::F16);
  CHECK(dtype_name(DType::I64) == "i64");
  CHECK(dtype_size(DType::BF16) == 2);
  CHECK_THROWS_WITH_AS(parse_dtype("float8"), doctest::Contains("float8"), ConfigError);

  std::vector<float> src = {1.0f, -2.5f, 3.140625f, 65504.f};
  std::vector<std::uint16_t> b(4), h(4);
  std::vector<float> back(4);
  dtype_convert(b.data(), DType::BF16, src.data(), DType::F32, 4);
  dtype_convert(back.data(), DType::F32, b.data(), DType::BF16, 4);
  CHECK(back[0] == 1.0f);
  CHECK(back[1] == -2.5f);
  CHECK(back[2] == 3.140625f);
  dtype_convert(h.data(), DType::F16, b.data(), DType::BF16, 4);
  dtype_convert(back.data(), DType::F32, h.data(), DType::F16, 4);
  CHECK(back[1] == -2.5f);
  std::vector<std::int64_t> ids = {0, 7, 128255};
  std::vector<std::int32_t> ids32(3);
  dtype_convert(ids32.data(), DType::I32, ids.data(), DType::I64, 3);
  CHECK(ids32[2] == 128255);
}
