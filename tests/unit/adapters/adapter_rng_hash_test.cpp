// The shared host/device hash (adapters/adapter_rng_hash.h) gives the values adapt has always drawn:
// fixed splitmix64 values, stream elements pinned as exact 53-bit integers (computed with Python's
// exact integers from the same formulas), the adapter_rng.h wrappers equal to it, and dropout masks and
// the tensor-parallel element mapping as before. The committed golden fixtures (cpu.train_golden)
// check the same draws end to end; gpu.adapters_cuda checks the GPU masks against the CPU ones.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

#include "adapters/adapter_rng.h"
#include "adapters/adapter_rng_hash.h"
#include "adapters/lora_adapter.h"

using namespace adapt;
using namespace adapt::adapters;

TEST_CASE("rng_hash_mix64 is splitmix64's finaliser (fixed values)") {
  CHECK(rng_hash_mix64(0) == 0x0ULL);
  CHECK(rng_hash_mix64(1) == 0x5692161d100b05e5ULL);
  CHECK(rng_hash_mix64(kRngGolden) == 0xe220a8397b1dcdafULL);
  CHECK(rng_hash_mix64(12345678901234567ULL) == 0x790a7264e27c80ffULL);
  CHECK(rng_mix64(12345678901234567ULL) == rng_hash_mix64(12345678901234567ULL));
}

TEST_CASE("rng_hash_uniform draws the same 53-bit values as before, and rng_uniform is it") {
  const std::uint64_t key = rng_key({1, 2, 3});
  CHECK(key == 0xb23e0eabb60a6794ULL);
  const std::uint64_t index[] = {0, 1, 2, 1000003};
  const std::uint64_t bits[] = {3974460092797194ULL, 2202440125874589ULL, 7003154933574785ULL, 8133875651412673ULL};
  for (int i = 0; i < 4; ++i) {
    const double want = std::ldexp(static_cast<double>(bits[i]), -53);
    CHECK(rng_hash_uniform(key, index[i]) == want);
    CHECK(rng_uniform(key, index[i]) == want);
  }
}

TEST_CASE("dropout masks: dropout_keep is rng_hash_dropout_keep, and the tp element mapping is unchanged") {
  const std::uint64_t stream = dropout_stream({.seed = 1, .step = 2, .micro_batch = 3, .layer = 4, .site = 5});
  int kept = 0;
  for (std::int64_t i = 0; i < 5000; ++i) {
    const bool k = rng_hash_dropout_keep(stream, i, 0.3);
    CHECK(k == (rng_uniform(stream, static_cast<std::uint64_t>(i)) >= 0.3));
    CHECK(dropout_keep(stream, i, 0.3) == k);
    kept += k;
  }
  CHECK(kept > 3300);  // about 70 % of 5000 kept
  CHECK(kept < 3700);
  // Element (n, j) of a rank's (N, in) slice at column offset o of rows `width` wide, its rows starting at
  // row r of the whole: (r + n)·width + o + j.
  CHECK(rng_hash_dropout_element(7, 4, 0, 0, 0) == 7);
  CHECK(rng_hash_dropout_element(7, 4, 12, 8, 0) == 1 * 12 + 8 + 3);
  CHECK(rng_hash_dropout_element(7, 4, 0, 0, 5) == (5 + 1) * 4 + 3);
  CHECK(rng_hash_dropout_element(7, 4, 12, 8, 5) == (5 + 1) * 12 + 8 + 3);
  const LoraDropout d{.p = 0.5, .stream = stream, .width = 12, .col_offset = 4};
  CHECK(d.element(9, 4) == 2 * 12 + 4 + 1);
  const LoraDropout rows{.p = 0.5, .stream = stream, .row_offset = 3};
  CHECK(rows.element(9, 4) == (3 + 2) * 4 + 1);
}
