// Fixtures shared by the training-step tests: a tiny random Llama whose attention is far from
// uniform, a packed batch (documents, restarting positions, padding, ignored targets), test hooks,
// and central finite differences over sampled coordinates of an f64 parameter.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "model/llama_train.h"
#include "tests/unit/model_train/test_hook.h"

namespace adapt::test::train {

using model::BlockSite;
using model::WeightKind;

// Finite differences: central, step 1e-5 on parameters of size ~0.1-1, of the f64 reference forward:
// the quotient is accurate to ~1e-9 of the gradient's scale. The analytic gradients come from the f32
// training step, so what is compared is f32 rounding through forward and backward (a few 1e-7 per
// op, compounded over 2 layers, softmax and the loss): measured ≤ 1.2e-6 of each tensor's scale. A
// wrong term (a missing residual share, a swapped h/f, a mask off by one) is off by 1e-2 or more.
inline constexpr double kFdStep = 1e-5;
inline constexpr double kGradTol = 1e-5;
// Loss of the f32 step against the f64 reference: f32 forward rounding (measured ≤ 3e-8 relative).
inline constexpr double kLossTol = 1e-6;
// Coordinates checked per parameter tensor (seeded sample; all of them for small tensors).
inline constexpr std::size_t kMaxCoords = 24;

inline model::LlamaModel tiny_model(std::int64_t n_kv_heads) {
  model::LlamaModel m;
  model::LlamaConfig& c = m.config;
  c.hidden_size = 24, c.intermediate_size = 40, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = n_kv_heads;
  c.head_dim = 6, c.vocab_size = 37, c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0;
  m.inv_freq = model::rope_inv_freq(c);
  const std::int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.n_heads * c.head_dim,
                     KD = c.n_kv_heads * c.head_dim;
  // Weights large enough that attention is far from uniform (scores of std ~2) and every term matters.
  auto norm = [&](std::uint64_t salt) {
    Tensor w = test::random_tensor({C}, salt, 0.1f, "norm");
    for (std::int64_t i = 0; i < C; ++i) w.data<float>()[i] += 1.0f;
    return w;
  };
  m.weights.embedding = test::random_tensor({c.vocab_size, C}, 100, 1.0f, "embedding");
  m.weights.lm_head = test::random_tensor({c.vocab_size, C}, 101, 0.3f, "lm_head");
  m.weights.final_norm = norm(102);
  for (std::uint64_t l = 0; l < 2; ++l) {
    model::LayerWeights w;
    const std::uint64_t s = 200 + 20 * l;
    w.attn_norm = norm(s);
    w.wq = test::random_tensor({HD, C}, s + 1, 0.3f, "wq");
    w.wk = test::random_tensor({KD, C}, s + 2, 0.3f, "wk");
    w.wv = test::random_tensor({KD, C}, s + 3, 0.2f, "wv");
    w.wo = test::random_tensor({C, HD}, s + 4, 0.2f, "wo");
    w.ffn_norm = norm(s + 5);
    w.w_gate = test::random_tensor({F, C}, s + 6, 0.3f, "w_gate");
    w.w_up = test::random_tensor({F, C}, s + 7, 0.3f, "w_up");
    w.w_down = test::random_tensor({C, F}, s + 8, 0.2f, "w_down");
    m.weights.layers.push_back(w);
  }
  return m;
}

// A packed batch of B = 2 rows of T = 11: row 0 one document; row 1 two documents (4 and 5 tokens,
// positions restarting) and 2 padding tokens. Targets are the next token within a document, −100 at
// document ends and on padding.
struct Batch {
  Tensor ids, targets, positions, segments;
};

inline Batch packed_batch(std::int64_t V) {
  const std::int64_t B = 2, T = 11;
  Batch b{Tensor::empty({B, T}, DType::I32, host_allocator(), "ids"),
          Tensor::empty({B, T}, DType::I32, host_allocator(), "targets"),
          Tensor::empty({B, T}, DType::I32, host_allocator(), "positions"),
          Tensor::empty({B, T}, DType::I32, host_allocator(), "segment_ids")};
  const std::int32_t seg[2][11] = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 1, 1, 1, 1, 1, -1, -1}};
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed));
  for (std::int64_t r = 0; r < B; ++r) {
    std::int32_t pos = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t i = r * T + t;
      const std::int32_t s = seg[r][t];
      if (t > 0 && s != seg[r][t - 1]) pos = 0;
      b.ids.data<std::int32_t>()[i] = s < 0 ? 0 : static_cast<std::int32_t>(rng() % V);
      b.positions.data<std::int32_t>()[i] = s < 0 ? 0 : pos++;
      b.segments.data<std::int32_t>()[i] = s;
    }
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t i = r * T + t;
      const bool next_same = t + 1 < T && seg[r][t] >= 0 && seg[r][t + 1] == seg[r][t];
      b.targets.data<std::int32_t>()[i] = next_same ? b.ids.data<std::int32_t>()[i + 1] : -100;
    }
  }
  return b;
}

enum class HookKind { None, Everywhere, Partial };

inline test::TestHook make_hook(const model::LlamaConfig& c, HookKind kind) {
  test::TestHook hook;
  const std::int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.n_heads * c.head_dim,
                     KD = c.n_kv_heads * c.head_dim, r = 2;
  std::uint64_t salt = 500;
  if (kind == HookKind::Everywhere) {
    for (int l = 0; l < 2; ++l) {
      hook.add_lora(l, WeightKind::Wq, C, HD, r, salt += 2);
      hook.add_lora(l, WeightKind::Wk, C, KD, r, salt += 2);
      hook.add_lora(l, WeightKind::Wv, C, KD, r, salt += 2);
      hook.add_lora(l, WeightKind::Wo, HD, C, r, salt += 2);
      hook.add_lora(l, WeightKind::WGate, C, F, r, salt += 2);
      hook.add_lora(l, WeightKind::WUp, C, F, r, salt += 2);
      hook.add_lora(l, WeightKind::WDown, F, C, r, salt += 2);
      hook.add_block(l, BlockSite::Attention, C, salt += 3);
      hook.add_block(l, BlockSite::Mlp, C, salt += 3);
    }
    hook.add_lora(-1, WeightKind::LmHead, C, c.vocab_size, r, salt += 2);
  } else if (kind == HookKind::Partial) {  // fused residual paths next to hooked ones
    hook.add_lora(0, WeightKind::Wv, C, KD, r, salt += 2);
    hook.add_lora(1, WeightKind::Wo, HD, C, r, salt += 2);
    hook.add_lora(1, WeightKind::WDown, F, C, r, salt += 2);
    hook.add_block(0, BlockSite::Mlp, C, salt += 3);
  }
  return hook;
}

inline model::TrainInputs inputs_of(const Batch& b, bool with_segments) {
  return {b.ids, b.targets, b.positions, with_segments ? b.segments : Tensor()};
}

// Seeded sample of coordinates of a tensor of n elements.
inline std::vector<std::size_t> sample_coords(std::size_t n, std::uint64_t salt) {
  std::vector<std::size_t> idx(n);
  for (std::size_t i = 0; i < n; ++i) idx[i] = i;
  if (n <= kMaxCoords) return idx;
  std::mt19937_64 rng(test::kSeed ^ salt);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(kMaxCoords);
  return idx;
}

// max |analytic − fd| / max |fd| over the sampled coordinates of `param`, with fd from central
// differences of loss() (which reads `param`).
template <typename Loss>
double fd_error(std::vector<double>& param, const Tensor& analytic, Loss&& loss, std::uint64_t salt) {
  REQUIRE(static_cast<std::size_t>(analytic.numel()) == param.size());
  double max_err = 0, max_ref = 1e-30;
  for (const std::size_t i : sample_coords(param.size(), salt)) {
    const double x0 = param[i];
    param[i] = x0 + kFdStep;
    const double lp = loss();
    param[i] = x0 - kFdStep;
    const double lm = loss();
    param[i] = x0;
    const double fd = (lp - lm) / (2 * kFdStep);
    max_err = std::max(max_err, std::fabs(fd - analytic.data<float>()[i]));
    max_ref = std::max(max_ref, std::fabs(fd));
  }
  return max_err / max_ref;
}

}  // namespace adapt::test::train
