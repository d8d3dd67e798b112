// Hashing and seeded randomness for the data pipeline: XXH64 (content hashes of input files, cache
// keys; bit-identical to the reference xxHash), SplitMix64 streams and Fisher-Yates permutations
// that are the same on every platform and standard library (no std::uniform_int_distribution).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace adapt::train {

/// Streaming XXH64 (Yann Collet's xxHash, 64-bit variant).
class Xxh64 {
 public:
  explicit Xxh64(std::uint64_t seed = 0);
  void update(const void* data, std::size_t n_bytes);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  /// The hash of everything passed so far (the state is not changed).
  std::uint64_t digest() const;

 private:
  std::uint64_t v_[4];
  std::uint64_t seed_;
  std::uint64_t total_bytes_ = 0;
  unsigned char buf_[32];
  std::size_t buf_bytes_ = 0;
};

std::uint64_t xxh64(std::string_view bytes, std::uint64_t seed = 0);

/// XXH64 of a whole file (memory-mapped); IoError naming the path when it cannot be read.
std::uint64_t xxh64_file(const std::filesystem::path& path);

/// "0123456789abcdef" (16 lower-case hex digits).
std::string hex64(std::uint64_t value);

/// SplitMix64: a tiny, fully specified 64-bit generator.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  /// Uniform in [0, bound), bound > 0 (Lemire's multiply-shift with rejection; no modulo bias).
  std::uint64_t below(std::uint64_t bound);

 private:
  std::uint64_t state_;
};

/// A 64-bit seed derived from a user seed, a purpose tag and an index, e.g. ("epoch", 3).
std::uint64_t seed_derive(std::int64_t seed, std::string_view purpose, std::int64_t index = 0);

/// A permutation of 0..n-1 by Fisher-Yates driven by SplitMix64(stream_seed).
std::vector<std::int64_t> permutation(std::int64_t n, std::uint64_t stream_seed);

}  // namespace adapt::train
