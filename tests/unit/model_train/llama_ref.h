// A plain-loop Llama forward and loss, templated on the scalar (double for finite differences),
// built from ops/ref/ops_ref.h, with the TestHook's adapter terms written out the same way. It is the
// truth the training step's analytic gradients are compared with: d(loss) / d(parameter) by central
// differences in double, where the difference quotient is accurate to ~1e-9.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "model/llama_weights.h"
#include "ops/ref/ops_ref.h"
#include "tests/unit/model_train/test_hook.h"

namespace adapt::test {

using std::size_t;

template <typename T>
std::vector<T> to_vec(const Tensor& t) {
  const Tensor c = t.to_host(DType::F32);
  std::vector<T> v(static_cast<size_t>(c.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(c.data<float>()[i]);
  return v;
}

template <typename T>
struct RefLayer {
  std::vector<T> attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
};

template <typename T>
struct RefLora {
  T scale = 0;
  std::vector<T> A, B;  // (r, in), (out, r)
};

template <typename T>
struct RefBlock {
  std::vector<T> Ph, Pf, b;
};

/// The model, the hook's parameters and one batch, in T.
template <typename T>
struct RefLlama {
  size_t B = 0, T_ = 0, C = 0, H = 0, Hkv = 0, D = 0, F = 0, V = 0, L = 0;
  T eps = 0;
  std::vector<T> embedding, final_norm, lm_head;
  std::vector<RefLayer<T>> layers;
  std::map<TestHook::Key, RefLora<T>> lora;
  std::map<TestHook::Key, RefBlock<T>> blocks;
  std::vector<std::int64_t> ids, targets;  // (B·T)
  std::vector<std::int32_t> segments;      // (B·T) or empty
  std::vector<T> cos, sin;                 // (B·T, D/2) per token

  RefLlama(const model::LlamaModel& m, const TestHook& hook, const Tensor& ids_t, const Tensor& targets_t,
           const Tensor& cos_t, const Tensor& sin_t, const Tensor& segments_t) {
    const model::LlamaConfig& c = m.config;
    B = static_cast<size_t>(ids_t.dim(0)), T_ = static_cast<size_t>(ids_t.dim(1));
    C = static_cast<size_t>(c.hidden_size), H = static_cast<size_t>(c.n_heads), Hkv = static_cast<size_t>(c.n_kv_heads);
    D = static_cast<size_t>(c.head_dim), F = static_cast<size_t>(c.intermediate_size);
    V = static_cast<size_t>(c.vocab_size), L = static_cast<size_t>(c.n_layers);
    eps = static_cast<T>(c.rms_norm_eps);
    embedding = to_vec<T>(m.weights.embedding);
    final_norm = to_vec<T>(m.weights.final_norm);
    lm_head = to_vec<T>(m.weights.lm_head);
    for (const model::LayerWeights& w : m.weights.layers) {
      layers.push_back({to_vec<T>(w.attn_norm), to_vec<T>(w.wq), to_vec<T>(w.wk), to_vec<T>(w.wv), to_vec<T>(w.wo),
                        to_vec<T>(w.ffn_norm), to_vec<T>(w.w_gate), to_vec<T>(w.w_up), to_vec<T>(w.w_down)});
    }
    for (const auto& [k, p] : hook.lora) lora[k] = {static_cast<T>(p.scale), to_vec<T>(p.A), to_vec<T>(p.B)};
    for (const auto& [k, p] : hook.blocks) blocks[k] = {to_vec<T>(p.Ph), to_vec<T>(p.Pf), to_vec<T>(p.b)};
    for (std::int64_t i = 0; i < ids_t.numel(); ++i) {
      ids.push_back(ids_t.data<std::int32_t>()[i]);
      targets.push_back(targets_t.data<std::int32_t>()[i]);
    }
    if (segments_t.defined())
      segments.assign(segments_t.data<std::int32_t>(), segments_t.data<std::int32_t>() + segments_t.numel());
    cos = to_vec<T>(cos_t);
    sin = to_vec<T>(sin_t);
  }

  /// y (N, out) = x · Wᵀ, plus the LoRA term when the hook has (layer, kind).
  void linear(std::vector<T>& y, const std::vector<T>& x, const std::vector<T>& w, size_t in, size_t out, int layer,
              model::WeightKind kind) const {
    const size_t N = x.size() / in;
    ops::ref::linear_forward(y, x, w, N, in, out);
    const auto it = lora.find({layer, static_cast<int>(kind)});
    if (it == lora.end()) return;
    const RefLora<T>& p = it->second;
    const size_t r = p.A.size() / in;
    std::vector<T> t, d;
    ops::ref::linear_forward(t, x, p.A, N, in, r);
    ops::ref::linear_forward(d, t, p.B, N, r, out);
    for (size_t i = 0; i < y.size(); ++i) y[i] += p.scale * d[i];
  }

  /// out = h + f, plus the block term when the hook has (layer, site).
  void block_end(std::vector<T>& h, const std::vector<T>& f, int layer, model::BlockSite site) const {
    std::vector<T> out(h.size());
    for (size_t i = 0; i < h.size(); ++i) out[i] = h[i] + f[i];
    const auto it = blocks.find({layer, static_cast<int>(site)});
    if (it != blocks.end()) {
      const size_t N = h.size() / C;
      std::vector<T> a, b;
      ops::ref::linear_forward(a, h, it->second.Ph, N, C, C);
      ops::ref::linear_forward(b, f, it->second.Pf, N, C, C);
      for (size_t i = 0; i < out.size(); ++i) out[i] += a[i] + b[i] + it->second.b[i % C];
    }
    h = std::move(out);
  }

  /// Σ over targets != −100 of −log softmax(logits)[target]. h0 replaces the embedding output when given.
  T loss_sum(const std::vector<T>* h0 = nullptr) const {
    const size_t N = B * T_;
    std::vector<T> h;
    if (h0) {
      h = *h0;
    } else {
      ops::ref::embedding_forward(h, embedding, ids, C);
    }
    ops::ref::AttentionShape as{B, T_, H, Hkv, D, T_, 0, segments.empty() ? nullptr : segments.data(), 0.0};
    std::vector<T> xn, q, k, v, kh, vh, attn, f, gate, up, act;
    for (size_t l = 0; l < L; ++l) {
      const RefLayer<T>& w = layers[l];
      const int li = static_cast<int>(l);
      ops::ref::rms_norm_forward<T>(xn, nullptr, h, w.attn_norm, N, C, eps);
      linear(q, xn, w.wq, C, H * D, li, model::WeightKind::Wq);
      linear(k, xn, w.wk, C, Hkv * D, li, model::WeightKind::Wk);
      linear(v, xn, w.wv, C, Hkv * D, li, model::WeightKind::Wv);
      ops::ref::rope_forward(q, cos, sin, N, H, D);
      ops::ref::rope_forward(k, cos, sin, N, Hkv, D);
      kh.assign(k.size(), T(0));
      vh.assign(v.size(), T(0));
      for (size_t b = 0; b < B; ++b)  // (B, T, Hkv, D) → (B, Hkv, T, D)
        for (size_t t = 0; t < T_; ++t)
          for (size_t g = 0; g < Hkv; ++g)
            for (size_t d = 0; d < D; ++d) {
              kh[((b * Hkv + g) * T_ + t) * D + d] = k[((b * T_ + t) * Hkv + g) * D + d];
              vh[((b * Hkv + g) * T_ + t) * D + d] = v[((b * T_ + t) * Hkv + g) * D + d];
            }
      ops::ref::attention_forward<T>(attn, nullptr, q, kh, vh, as);
      linear(f, attn, w.wo, H * D, C, li, model::WeightKind::Wo);
      block_end(h, f, li, model::BlockSite::Attention);
      ops::ref::rms_norm_forward<T>(xn, nullptr, h, w.ffn_norm, N, C, eps);
      linear(gate, xn, w.w_gate, C, F, li, model::WeightKind::WGate);
      linear(up, xn, w.w_up, C, F, li, model::WeightKind::WUp);
      ops::ref::swiglu_forward(act, gate, up);
      linear(f, act, w.w_down, F, C, li, model::WeightKind::WDown);
      block_end(h, f, li, model::BlockSite::Mlp);
    }
    ops::ref::rms_norm_forward<T>(xn, nullptr, h, final_norm, N, C, eps);
    std::vector<T> logits;
    linear(logits, xn, lm_head, C, V, -1, model::WeightKind::LmHead);
    return ops::ref::cross_entropy<T>(nullptr, logits, targets, V, T(1)).loss_sum;
  }
};

}  // namespace adapt::test
