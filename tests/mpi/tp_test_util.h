// Shared by the tensor- and pipeline-parallel model tests (tests/mpi/tp_*): the tiny random Llama
// they write (GQA: 8 heads, 4 KV heads; an FFN width and a vocabulary that 4 does not divide), the
// adapters they train (LoRA on all 7 projections + Houlsby bottleneck, every parameter non-zero),
// values that are the same on every rank, and comparisons relative to the reference's magnitude.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "adapters/adapter_set.h"
#include "model/llama_config.h"
#include "model/tensor_parallel.h"
#include "tensor/tensor.h"

namespace adapt::test::tp {

inline constexpr double kTol = 1e-5;

struct Variant {
  bool tied = false;
  bool biases = false;
  bool bf16 = false;  // a bf16 checkpoint kept as stored (WeightStorage::AsStored)
};

inline model::LlamaConfig tiny_config(const Variant& v, std::int64_t n_layers = 2) {
  model::LlamaConfig c;
  c.hidden_size = 32, c.intermediate_size = 42, c.n_layers = n_layers, c.n_heads = 8, c.n_kv_heads = 4, c.head_dim = 4;
  c.vocab_size = 53, c.max_position_embeddings = 128, c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0;
  c.tie_word_embeddings = v.tied, c.attention_bias = v.biases, c.mlp_bias = v.biases;
  c.bos_token_id = 1, c.eos_token_ids = {2};
  c.torch_dtype = v.bf16 ? DType::BF16 : DType::F32;
  c.initializer_range = 0.25;  // attention far from uniform, every term visible in the logits
  return c;
}

// A deterministic value in [-1, 1) for (key, i): the same on every rank.
inline float value(std::uint64_t key, std::int64_t i) {
  std::uint64_t x = (key + 1) * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(i) * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 31;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 29;
  return static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// Element j of `t` = value(key, offset + j): a slice of the same values a whole tensor gets with offset 0.
inline void fill(Tensor& t, std::uint64_t key, std::int64_t offset, float scale) {
  for (std::int64_t j = 0; j < t.numel(); ++j) t.data<float>()[j] = scale * value(key, offset + j);
}

inline adapters::AdapterConfig adapter_config(double dropout) {
  adapters::AdapterConfig a;
  a.kind = adapters::AdapterKind::LoraBottleneck;
  a.seed = 7;
  a.lora.r = 4, a.lora.alpha = 8.0, a.lora.dropout = dropout;
  a.lora.targets = adapters::lora_target_names();  // q, k, v, o, gate, up, down
  a.bottleneck.size = 6;
  a.bottleneck.placement = adapters::BnPlacement::Houlsby;
  a.bottleneck.activation = adapters::BnActivation::Swish;
  return a;
}

// A whole set whose every parameter is non-zero (B and the up projections start at 0), identical on
// every rank; sharded over `tp` when given.
inline adapters::AdapterSet adapter_set(const model::LlamaConfig& c, double dropout, const model::TensorParallel* tp) {
  adapters::AdapterSet set(c, adapter_config(dropout));
  std::uint64_t key = 5000;
  for (adapters::AdapterParam& p : set.parameters()) fill(p.value, key++, 0, 0.3f);
  if (tp) set.shard_for_tp(*tp);
  return set;
}

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(static_cast<double>(t.data<float>()[i])));
  return m;
}

// max |a − b| / max |b|.
inline double rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double d = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    d = std::max(d, std::abs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
  const double scale = max_abs(b);
  return scale > 0 ? d / scale : d;
}

inline Tensor ids_tensor(std::int64_t B, std::int64_t T, std::int64_t V, std::uint64_t key) {
  Tensor ids = Tensor::empty({B, T}, DType::I32, host_allocator(), "ids");
  for (std::int64_t i = 0; i < B * T; ++i)
    ids.data<std::int32_t>()[i] = static_cast<std::int32_t>((value(key, i) + 1.0f) * 0.5f * static_cast<float>(V)) % V;
  return ids;
}

// Gathers `part` whole and checks every parameter (or gradient) against `whole`'s within `tol`; returns
// the largest relative difference.
inline double gathered_rel_diff(const adapters::AdapterSet& part, const adapters::AdapterSet& whole, bool grads,
                                double tol = kTol) {
  const adapters::AdapterSet gathered = part.tp_gathered();
  const std::vector<adapters::AdapterParam> pw = whole.parameters(), pg = gathered.parameters();
  REQUIRE(pw.size() == pg.size());
  double worst = 0;
  for (std::size_t i = 0; i < pw.size(); ++i) {
    CAPTURE(pw[i].name);
    REQUIRE(pg[i].name == pw[i].name);
    const double d = grads ? rel_diff(pg[i].grad, pw[i].grad) : rel_diff(pg[i].value, pw[i].value);
    CHECK(d <= tol);
    worst = std::max(worst, d);
  }
  return worst;
}

inline std::int32_t argmax(const float* p, std::int64_t n) {
  return static_cast<std::int32_t>(std::max_element(p, p + n) - p);
}

}  // namespace adapt::test::tp
