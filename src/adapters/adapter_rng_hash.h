// The counter-based hash behind adapter_rng.h, header-only and free of any other include, so that the
// host (adapter_rng.cpp, the CPU dropout loops) and the device (kernels/adapter_ops.cu, compiled by nvcc)
// run the same code: a dropout mask drawn on the GPU is the CPU's mask bit for bit, by construction.
// Integer arithmetic plus one exact conversion of 53 bits to double: no rounding can differ.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ADAPT_RNG_HOST_DEVICE __host__ __device__
#else
#define ADAPT_RNG_HOST_DEVICE
#endif

namespace adapt::adapters {

/// The 64-bit golden ratio (splitmix64's increment).
constexpr std::uint64_t kRngGolden = 0x9e3779b97f4a7c15ULL;

/// splitmix64's finaliser: a bijective 64-bit mix.
ADAPT_RNG_HOST_DEVICE inline std::uint64_t rng_hash_mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/// Uniform in [0, 1) with 53 random bits, from element `index` of the stream `key` (exact: the 53-bit
/// integer times 2^-53 is representable).
ADAPT_RNG_HOST_DEVICE inline double rng_hash_uniform(std::uint64_t key, std::uint64_t index) {
  const std::uint64_t bits = rng_hash_mix64(key ^ rng_hash_mix64(index * kRngGolden + 1));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

/// Dropout: element `index` of the stream is kept when its uniform is >= p.
ADAPT_RNG_HOST_DEVICE inline bool rng_hash_dropout_keep(std::uint64_t stream, std::int64_t index, double p) {
  return rng_hash_uniform(stream, static_cast<std::uint64_t>(index)) >= p;
}

/// The element of a micro-step's whole input, (rows of every data-parallel replica, width), that element
/// i of a rank's (N, in) input is: its rows start at row_offset of the whole (data parallelism), its
/// columns at col_offset of the whole width (tensor parallelism on a row-parallel site; width 0: the
/// columns are whole, width = in). With both offsets 0 and the columns whole: i itself.
ADAPT_RNG_HOST_DEVICE inline std::int64_t rng_hash_dropout_element(std::int64_t i, std::int64_t in, std::int64_t width,
                                                                   std::int64_t col_offset, std::int64_t row_offset) {
  const std::int64_t w = width == 0 ? in : width;
  return (row_offset + i / in) * w + col_offset + i % in;
}

}  // namespace adapt::adapters
