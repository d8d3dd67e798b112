#include "model/llama_forward.h"

#include <cstring>

#include "core/error.h"
#include "model/tensor_parallel.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "parallel/tp_ops.h"

namespace adapt::model {

namespace {

// (B, T, Hkv, D) → (B, Hkv, T, D): the layout attention reads keys and values in.
void to_heads_major(Tensor& dst, const Tensor& src) {
  const std::int64_t B = src.dim(0), T = src.dim(1), Hkv = src.dim(2), D = src.dim(3);
  const float* s = src.data<float>();
  float* d = dst.data<float>();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t g = 0; g < Hkv; ++g)
        std::memcpy(d + ((b * Hkv + g) * T + t) * D, s + ((b * T + t) * Hkv + g) * D,
                    static_cast<std::size_t>(D) * sizeof(float));
}

void add_into(Tensor& out, const Tensor& a, const Tensor& b) {
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  for (std::int64_t i = 0; i < out.numel(); ++i) po[i] = pa[i] + pb[i];
}

}  // namespace

Tensor llama_forward(const LlamaModel& model, const Tensor& ids, KvCache* cache, const ForwardOptions& opts,
                     ops::Workspace* workspace) {
  const LlamaConfig& c = model.config;
  const LlamaWeights& w = model.weights;
  const PipelineStage& stage = model.stage;
  ADAPT_REQUIRE(!stage.active() || (opts.pp != nullptr && opts.pp->size() == stage.size), UnsupportedError,
                "llama_forward: this model holds pipeline stage {} of {}; pass its pp communicator "
                "(ForwardOptions::pp)",
                stage.rank, stage.size);
  ADAPT_REQUIRE(ids.rank() == 2 && ids.dim(0) > 0 && ids.dim(1) > 0, ShapeError,
                "llama_forward: token ids '{}' have shape {}; (B, T) with B, T >= 1 was expected", ids.name(),
                ids.shape().str());
  ADAPT_CHECK(static_cast<std::int64_t>(w.layers.size()) == c.n_layers && (w.embedding.defined() || !stage.first()) &&
                  (w.lm_head.defined() || !stage.last()),
              "the model has {} layers loaded but its config says {}", w.layers.size(), c.n_layers);
  const parallel::Range layer_range = stage_layer_range(c, stage);
  const std::int64_t B = ids.dim(0), T = ids.dim(1), N = B * T;
  // With tensor parallelism (tensor_parallel.h) the rank's heads, FFN width and vocabulary rows.
  const TensorParallel& tp = model.tp;
  const TpLocalDims part = tp_local_dims(c, tp);
  const std::int64_t C = c.hidden_size, H = part.heads, Hkv = part.kv_heads, D = c.head_dim, F = part.ffn;
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (cache) {
    ADAPT_REQUIRE(cache->n_kv_heads() == Hkv, ShapeError,
                  "llama_forward: the KV cache holds {} KV heads per layer but this rank computes {} (make it with "
                  "KvCache(config, batch, capacity, tp = {}))",
                  cache->n_kv_heads(), Hkv, tp.size);
    if (opts.cache_rows.empty()) {
      cache->check_room(B, T);
    } else {
      ADAPT_REQUIRE(
          static_cast<std::int64_t>(opts.cache_rows.size()) == B, ShapeError,
          "llama_forward: cache_rows names {} KV-cache rows but token ids '{}' {} hold B = {} sequences; give "
          "one row per sequence",
          opts.cache_rows.size(), ids.name(), ids.shape().str(), B);
      cache->check_room(opts.cache_rows, T);
    }
  } else {
    ADAPT_REQUIRE(opts.cache_rows.empty(), ShapeError, "llama_forward: cache_rows given without a KV cache");
  }

  ops::Workspace local;
  ops::Workspace& ws = workspace ? *workspace : local;
  ws.reset();
  // With a cache: the row and the first position of every sequence. Rows at one length share one RoPE
  // table (T, D/2); a ragged batch gets one per sequence (B, T, D/2), with the same values per position.
  std::span<const std::int64_t> rows, pos0;
  bool same_pos = true;
  if (cache) {
    Tensor rows_t = ws.take({B}, DType::I64, "cache_rows");
    Tensor pos_t = ws.take({B}, DType::I64, "pos0");
    std::int64_t* r = rows_t.data<std::int64_t>();
    std::int64_t* p = pos_t.data<std::int64_t>();
    for (std::int64_t b = 0; b < B; ++b) {
      r[b] = opts.cache_rows.empty() ? b : opts.cache_rows[static_cast<std::size_t>(b)];
      p[b] = cache->n_past(r[b]);
      same_pos = same_pos && p[b] == p[0];
    }
    rows = {r, static_cast<std::size_t>(B)};
    pos0 = {p, static_cast<std::size_t>(B)};
  }
  const Shape table_shape = same_pos ? Shape{T, D / 2} : Shape{B, T, D / 2};
  // Activations, shared by every layer (layers run one after the other).
  Tensor h = ws.take({B, T, C}, DType::F32, "hidden");  // the residual stream
  Tensor xn = ws.take({B, T, C}, DType::F32, "normed");
  Tensor q = ws.take({B, T, H, D}, DType::F32, "q");
  Tensor k = ws.take({B, T, Hkv, D}, DType::F32, "k");
  Tensor v = ws.take({B, T, Hkv, D}, DType::F32, "v");
  Tensor attn = ws.take({B, T, H, D}, DType::F32, "attn");
  Tensor gate = ws.take({B, T, F}, DType::F32, "gate");
  Tensor up = ws.take({B, T, F}, DType::F32, "up");
  Tensor cos = ws.take(table_shape, DType::F32, "rope.cos");
  Tensor sin = ws.take(table_shape, DType::F32, "rope.sin");
  Tensor k_all, v_all;  // (B, Hkv, T, D) when there is no cache
  if (!cache) {
    k_all = ws.take({B, Hkv, T, D}, DType::F32, "k_all");
    v_all = ws.take({B, Hkv, T, D}, DType::F32, "v_all");
  }
  Tensor q2 = q.reshape({N, H * D}), k2 = k.reshape({N, Hkv * D}), v2 = v.reshape({N, Hkv * D});
  Tensor attn2 = attn.reshape({N, H * D});

  if (!stage.first()) {
    opts.pp->recv(h.raw(), h.numel(), comm::CommDType::F32, stage.rank - 1, comm::Tag::Activation);
  } else if (tp.active()) {
    parallel::vocab_parallel_embedding_forward(h, w.embedding, part.vocab, c.vocab_size, ids, *tp.comm);
  } else {
    ops::embedding_forward(h, w.embedding, ids);
  }
  if (same_pos) {
    ops::rope_table_fill(cos, sin, model.inv_freq, pos0.empty() ? 0 : pos0[0]);
  } else {
    ops::rope_table_fill(cos, sin, model.inv_freq, pos0);
  }
  // The end of a sub-block: h += x · Wᵀ (+ b), fused into the GEMM; a block adapter needs the
  // sub-block's output f on its own, so there f = x · Wᵀ (+ b) and h ← h + f + the adapter's term.
  AdapterHook* hook = opts.hook;
  bool any_block = false;
  for (int l = 0; hook && l < static_cast<int>(c.n_layers); ++l)
    any_block = any_block || hook->has_block(l, BlockSite::Attention) || hook->has_block(l, BlockSite::Mlp);
  Tensor f, block_out;  // (B, T, C), only with block adapters (f also with tensor parallelism)
  if (any_block || tp.active()) f = ws.take({B, T, C}, DType::F32, "sub_block_out");
  if (any_block) block_out = ws.take({B, T, C}, DType::F32, "block_out");
  auto sub_block_end = [&](int l, BlockSite site, const Tensor& x, const Tensor& weight, const Tensor& bias,
                           WeightKind kind) {
    if (tp.active()) {
      // Row-parallel: the rank's partial product and adapter term, summed over tp, then the bias once.
      linear(f, x, weight, nullptr, {l, kind}, hook);
      tp.comm->all_reduce(f, comm::ReduceOp::Sum);
      if (bias.defined()) ops::bias_add(f, bias);
      if (!hook || !hook->has_block(l, site)) {
        add_into(h, h, f);
        return;
      }
    } else if (!hook || !hook->has_block(l, site)) {
      linear(h, x, weight, &bias, {l, kind}, hook, {.accumulate = true});
      return;
    } else {
      linear(f, x, weight, &bias, {l, kind}, hook);
    }
    add_into(block_out, h, f);
    Tensor out = as_rows(block_out);
    hook->block_forward(l, site, as_rows(h), as_rows(f), out);
    h.copy_from(block_out);
  };
  for (int l = static_cast<int>(layer_range.begin); l < static_cast<int>(layer_range.end()); ++l) {
    const LayerWeights& lw = w.layers[static_cast<std::size_t>(l)];
    // Attention block: h += o_proj(attention(rope(q_proj(xn)), rope(k_proj(xn)), v_proj(xn))).
    ops::rms_norm_forward(xn, h, lw.attn_norm, eps);
    linear(q2, xn, lw.wq, &lw.bq, {l, WeightKind::Wq}, hook);
    linear(k2, xn, lw.wk, &lw.bk, {l, WeightKind::Wk}, hook);
    linear(v2, xn, lw.wv, &lw.bv, {l, WeightKind::Wv}, hook);
    ops::rope_forward(q, cos, sin);
    ops::rope_forward(k, cos, sin);
    if (cache) {
      cache->write(l, k, v, rows);
      ops::attention_forward(attn, q, cache->k(l), cache->v(l), {.q_pos_offsets = pos0, .kv_rows = rows});
    } else {
      to_heads_major(k_all, k);
      to_heads_major(v_all, v);
      ops::attention_forward(attn, q, k_all, v_all, {.q_pos_offset = 0});
    }
    sub_block_end(l, BlockSite::Attention, attn2, lw.wo, lw.bo, WeightKind::Wo);
    // MLP block: h += down_proj(silu(gate_proj(xn)) * up_proj(xn)).
    ops::rms_norm_forward(xn, h, lw.ffn_norm, eps);
    linear(gate, xn, lw.w_gate, &lw.b_gate, {l, WeightKind::WGate}, hook);
    linear(up, xn, lw.w_up, &lw.b_up, {l, WeightKind::WUp}, hook);
    ops::swiglu_forward(gate, gate, up);
    sub_block_end(l, BlockSite::Mlp, gate, lw.w_down, lw.b_down, WeightKind::WDown);
  }
  if (cache) cache->advance(T, rows);

  const std::int64_t T_out = opts.last_position_only ? 1 : T;
  if (!stage.last()) {  // hand the hidden state on; the last stage's logits come back
    opts.pp->send(h.raw(), h.numel(), comm::CommDType::F32, stage.rank + 1, comm::Tag::Activation);
    Tensor logits = Tensor::empty({B, T_out, c.vocab_size}, DType::F32, host_allocator(), "logits");
    opts.pp->broadcast(logits.raw(), logits.numel(), comm::CommDType::F32, stage.size - 1);
    return opts.last_position_only ? logits.reshape({B, c.vocab_size}) : logits;
  }
  const Tensor h_out = opts.last_position_only ? h.narrow(1, T - 1, 1) : h;
  Tensor hf = ws.take({B, T_out, C}, DType::F32, "final_normed");
  ops::rms_norm_forward(hf, h_out, w.final_norm, eps);
  Tensor logits = Tensor::empty({B, T_out, c.vocab_size}, DType::F32, host_allocator(), "logits");
  if (tp.active()) {  // the rank's vocabulary columns, gathered whole for the sampler
    Tensor mine = ws.take({B * T_out, part.vocab.count}, DType::F32, "logits_part");
    linear(mine, hf.reshape({B * T_out, C}), w.lm_head, nullptr, {-1, WeightKind::LmHead}, hook);
    Tensor whole = logits.reshape({B * T_out, c.vocab_size});
    parallel::tp_gather(whole, mine, parallel::ShardDim::Cols, *tp.comm);
  } else {
    linear(logits, hf, w.lm_head, nullptr, {-1, WeightKind::LmHead}, hook);
  }
  if (stage.active()) opts.pp->broadcast(logits.raw(), logits.numel(), comm::CommDType::F32, stage.size - 1);
  return opts.last_position_only ? logits.reshape({B, c.vocab_size}) : logits;
}

}  // namespace adapt::model
