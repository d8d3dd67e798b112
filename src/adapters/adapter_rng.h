// Counter-based random numbers for adapters: every value is a hash of (seed, purpose, site, element),
// never a draw from a running stream. Initialisation therefore does not depend on the order in which
// parameters are built, and a dropout mask is recomputed bit for bit when a layer's forward runs again
// (activation recomputation) or when its backward needs the mask. The hash itself is in
// adapter_rng_hash.h, shared with the device kernels (kernels/adapter_ops.cu): GPU masks are the CPU's.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "adapters/adapter_rng_hash.h"
#include "tensor/tensor.h"

namespace adapt::adapters {

/// splitmix64's finaliser: a bijective 64-bit mix (rng_hash_mix64).
inline std::uint64_t rng_mix64(std::uint64_t x) { return rng_hash_mix64(x); }
/// A key from several words (order matters).
std::uint64_t rng_key(std::initializer_list<std::uint64_t> words);
/// Uniform in [0, 1) with 53 random bits, from element `index` of the stream `key` (rng_hash_uniform).
inline double rng_uniform(std::uint64_t key, std::uint64_t index) { return rng_hash_uniform(key, index); }
/// Standard normal (Box–Muller on two uniforms) from element `index` of the stream `key`.
double rng_normal(std::uint64_t key, std::uint64_t index);

/// t (contiguous f32) = U(lo, hi), element i from rng_uniform(key, i).
void rng_fill_uniform(Tensor& t, std::uint64_t key, double lo, double hi);
/// t (contiguous f32) = N(0, std²), element i from rng_normal(key, i).
void rng_fill_normal(Tensor& t, std::uint64_t key, double std);

/// Identifies one dropout mask: one LoRA site in one micro-batch of one optimizer step.
struct DropoutKey {
  std::int64_t seed = 0;
  std::int64_t step = 0;
  std::int64_t micro_batch = 0;
  int layer = 0;
  int site = 0;  // the model::WeightKind of the projection
};

/// Element i (row-major over the (N, in) input) of the mask is kept when rng_uniform(dropout_key(k), i)
/// >= p; kept elements are scaled by 1 / (1 − p), as torch.nn.Dropout does.
std::uint64_t dropout_stream(const DropoutKey& key);
inline bool dropout_keep(std::uint64_t stream, std::int64_t index, double p) {
  return rng_hash_dropout_keep(stream, index, p);
}

}  // namespace adapt::adapters
