#include "adapters/adapter_rng.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace adapt::adapters {

namespace {
constexpr std::uint64_t kGolden = kRngGolden;
constexpr std::uint64_t kDropoutTag = 0x64726f706f7574ULL;  // "dropout"
}  // namespace

std::uint64_t rng_key(std::initializer_list<std::uint64_t> words) {
  std::uint64_t h = kGolden;
  for (const std::uint64_t w : words) h = rng_mix64(h + kGolden + rng_mix64(w));
  return h;
}

double rng_normal(std::uint64_t key, std::uint64_t index) {
  const double u1 = 1.0 - rng_uniform(key, 2 * index);  // (0, 1]: log stays finite
  const double u2 = rng_uniform(key, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

void rng_fill_uniform(Tensor& t, std::uint64_t key, double lo, double hi) {
  ADAPT_CHECK(t.is_contiguous(), "rng_fill_uniform needs a contiguous tensor ('{}')", t.name());
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(lo + (hi - lo) * rng_uniform(key, static_cast<std::uint64_t>(i)));
}

void rng_fill_normal(Tensor& t, std::uint64_t key, double std) {
  ADAPT_CHECK(t.is_contiguous(), "rng_fill_normal needs a contiguous tensor ('{}')", t.name());
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(std * rng_normal(key, static_cast<std::uint64_t>(i)));
}

std::uint64_t dropout_stream(const DropoutKey& k) {
  return rng_key({kDropoutTag, static_cast<std::uint64_t>(k.seed), static_cast<std::uint64_t>(k.step),
                  static_cast<std::uint64_t>(k.micro_batch), static_cast<std::uint64_t>(k.layer),
                  static_cast<std::uint64_t>(k.site)});
}

}  // namespace adapt::adapters
