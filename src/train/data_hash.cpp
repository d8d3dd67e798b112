#include "train/data_hash.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "core/error.h"
#include "core/file.h"

namespace adapt::train {

namespace {

static_assert(std::endian::native == std::endian::little, "XXH64 reads little-endian words");

constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr std::uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr std::uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr std::uint64_t kP5 = 0x27D4EB2F165667C5ULL;

std::uint64_t read64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
std::uint32_t read32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
std::uint64_t round64(std::uint64_t acc, std::uint64_t input) {
  acc += input * kP2;
  acc = std::rotl(acc, 31);
  return acc * kP1;
}
std::uint64_t merge_round(std::uint64_t acc, std::uint64_t val) {
  acc ^= round64(0, val);
  return acc * kP1 + kP4;
}

}  // namespace

Xxh64::Xxh64(std::uint64_t seed) : seed_(seed) {
  v_[0] = seed + kP1 + kP2;
  v_[1] = seed + kP2;
  v_[2] = seed;
  v_[3] = seed - kP1;
}

void Xxh64::update(const void* data, std::size_t n_bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_bytes_ += n_bytes;
  if (buf_bytes_ + n_bytes < 32) {
    if (n_bytes > 0) std::memcpy(buf_ + buf_bytes_, p, n_bytes);
    buf_bytes_ += n_bytes;
    return;
  }
  if (buf_bytes_ > 0) {
    const std::size_t fill = 32 - buf_bytes_;
    std::memcpy(buf_ + buf_bytes_, p, fill);
    for (int i = 0; i < 4; ++i) v_[i] = round64(v_[i], read64(buf_ + 8 * i));
    p += fill;
    n_bytes -= fill;
    buf_bytes_ = 0;
  }
  while (n_bytes >= 32) {
    for (int i = 0; i < 4; ++i) v_[i] = round64(v_[i], read64(p + 8 * i));
    p += 32;
    n_bytes -= 32;
  }
  if (n_bytes > 0) std::memcpy(buf_, p, n_bytes);
  buf_bytes_ = n_bytes;
}

std::uint64_t Xxh64::digest() const {
  std::uint64_t h;
  if (total_bytes_ >= 32) {
    h = std::rotl(v_[0], 1) + std::rotl(v_[1], 7) + std::rotl(v_[2], 12) + std::rotl(v_[3], 18);
    for (int i = 0; i < 4; ++i) h = merge_round(h, v_[i]);
  } else {
    h = seed_ + kP5;
  }
  h += total_bytes_;
  const unsigned char* p = buf_;
  std::size_t n = buf_bytes_;
  while (n >= 8) {
    h ^= round64(0, read64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
    p += 8;
    n -= 8;
  }
  if (n >= 4) {
    h ^= static_cast<std::uint64_t>(read32(p)) * kP1;
    h = std::rotl(h, 23) * kP2 + kP3;
    p += 4;
    n -= 4;
  }
  while (n > 0) {
    h ^= (*p) * kP5;
    h = std::rotl(h, 11) * kP1;
    ++p;
    --n;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

std::uint64_t xxh64(std::string_view bytes, std::uint64_t seed) {
  Xxh64 h(seed);
  h.update(bytes);
  return h.digest();
}

std::uint64_t xxh64_file(const std::filesystem::path& path) {
  MappedFile file(path);
  Xxh64 h;
  h.update(file.data(), file.size_bytes());
  return h.digest();
}

std::string hex64(std::uint64_t value) { return fmt::format("{:016x}", value); }

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t SplitMix64::below(std::uint64_t bound) {
  ADAPT_CHECK(bound > 0, "SplitMix64::below(0)");
  unsigned __int128 m = static_cast<unsigned __int128>(next()) * bound;
  auto low = static_cast<std::uint64_t>(m);
  if (low < bound) {
    const std::uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(next()) * bound;
      low = static_cast<std::uint64_t>(m);
    }
  }
  return static_cast<std::uint64_t>(m >> 64);
}

std::uint64_t seed_derive(std::int64_t seed, std::string_view purpose, std::int64_t index) {
  Xxh64 h(static_cast<std::uint64_t>(seed));
  h.update(purpose);
  h.update(&index, sizeof index);
  return h.digest();
}

std::vector<std::int64_t> permutation(std::int64_t n, std::uint64_t stream_seed) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = i;
  SplitMix64 rng(stream_seed);
  for (std::int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(i) + 1));
    std::swap(out[static_cast<std::size_t>(i)], out[static_cast<std::size_t>(j)]);
  }
  return out;
}

}  // namespace adapt::train
