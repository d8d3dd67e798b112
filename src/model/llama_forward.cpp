#include "model/llama_forward.h"

#include <vector>

#include "core/error.h"
#include "model/attention_compute.h"
#include "model/llama_device.h"
#include "model/tensor_parallel.h"
#include "model/weight_stream.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "parallel/tp_ops.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/attention_cuda.h"
#endif

namespace adapt::model {

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
  const Device device = model_device(model);
  const bool on_device = !device.host_accessible();
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
    ADAPT_REQUIRE(cache->layers().begin <= layer_range.begin && layer_range.end() <= cache->layers().end(), ShapeError,
                  "llama_forward: the KV cache holds layers [{}, {}) but this {} runs layers [{}, {}) (make it with "
                  "KvPlacement::layers = stage_layer_range(config, stage))",
                  cache->layers().begin, cache->layers().end(), stage.active() ? "pipeline stage" : "model",
                  layer_range.begin, layer_range.end());
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

  ops::Workspace local(model_allocator(model));
  ops::Workspace& ws = workspace ? *workspace : local;
  ws.reset();
  // With a cache: the row and the first position of every sequence. Rows at one length share one RoPE
  // table (T, D/2); a ragged batch gets one per sequence (B, T, D/2), with the same values per position.
  // (Host arrays: the ops copy them to the device where they need them there.)
  std::vector<std::int64_t> rows_v, pos_v;
  std::span<const std::int64_t> rows, pos0;
  bool same_pos = true;
  if (cache) {
    rows_v.resize(static_cast<std::size_t>(B));
    pos_v.resize(static_cast<std::size_t>(B));
    for (std::size_t b = 0; b < static_cast<std::size_t>(B); ++b) {
      rows_v[b] = opts.cache_rows.empty() ? static_cast<std::int64_t>(b) : opts.cache_rows[b];
      pos_v[b] = cache->n_past(rows_v[b]);
      same_pos = same_pos && pos_v[b] == pos_v[0];
    }
    rows = rows_v;
    pos0 = pos_v;
  }
  // Decode steps on the device: keys [0, pos0[b] + 1) of each row (the new one included).
  std::vector<std::int64_t> seq_lens(pos_v);
  for (std::int64_t& n : seq_lens) ++n;
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
    ops::embedding_forward(h, w.embedding, on_device ? tensor_to(ids, device) : ids);
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
        ops::add(h, h, f);
        return;
      }
    } else if (!hook || !hook->has_block(l, site)) {
      linear(h, x, weight, &bias, {l, kind}, hook, {.accumulate = true});
      return;
    } else {
      linear(f, x, weight, &bias, {l, kind}, hook);
    }
    ops::add(block_out, h, f);
    Tensor out = as_rows(block_out);
    hook->block_forward(l, site, as_rows(h), as_rows(f), out);
    ops::copy(h, block_out);
  };
  // Attention over the cache: on the device a decode step (T = 1) takes the split-K decode kernel
  // (ops/cuda/attention_cuda.h, which has no device-agnostic entry); everything else ops::attention_forward.
  auto attend_cache = [&](int l) {
#if ADAPT_HAVE_CUDA
    if (on_device && T == 1) {
      Tensor out3 = attn.reshape({B, H, D});
      ops::cuda::decode_attention(out3, q.reshape({B, H, D}), cache->k(l), cache->v(l), seq_lens, rows);
      return;
    }
#endif
    attention_forward_in(attention_dtype_over_cache(model, cache->k(l).dtype()), attn, q, cache->k(l), cache->v(l),
                         {.q_pos_offsets = pos0, .kv_rows = rows});
  };
  for (int l = static_cast<int>(layer_range.begin); l < static_cast<int>(layer_range.end()); ++l) {
    // The next layer this rank computes: the following one, or after the last the first (the next
    // decode step's); a layer whose weights stay in host RAM is copied over meanwhile.
    const int next = l + 1 < static_cast<int>(layer_range.end()) ? l + 1 : static_cast<int>(layer_range.begin);
    const LayerWeights& lw = layer_weights(model, l, next);
    // Attention block: h += o_proj(attention(rope(q_proj(xn)), rope(k_proj(xn)), v_proj(xn))).
    ops::rms_norm_forward(xn, h, lw.attn_norm, eps);
    {
      // One cast of xn for q, k and v (bf16 weights on a GPU), released before attention casts its operands.
      const Tensor xq = gemm_input(xn, lw.wq);
      linear(q2, xn, lw.wq, &lw.bq, {l, WeightKind::Wq}, hook, {.x_for_gemm = &xq});
      linear(k2, xn, lw.wk, &lw.bk, {l, WeightKind::Wk}, hook, {.x_for_gemm = &xq});
      linear(v2, xn, lw.wv, &lw.bv, {l, WeightKind::Wv}, hook, {.x_for_gemm = &xq});
    }
    ops::rope_forward(q, cos, sin);
    ops::rope_forward(k, cos, sin);
    if (cache) {
      cache->begin_layer(l, rows);  // a layer spilled to host RAM comes to the device
      cache->write(l, k, v, rows);
      attend_cache(l);
    } else {
      ops::to_heads_major(k_all, k);
      ops::to_heads_major(v_all, v);
      attention_forward_in(model.attention_dtype, attn, q, k_all, v_all, {.q_pos_offset = 0});
    }
    sub_block_end(l, BlockSite::Attention, attn2, lw.wo, lw.bo, WeightKind::Wo);
    // MLP block: h += down_proj(silu(gate_proj(xn)) * up_proj(xn)).
    ops::rms_norm_forward(xn, h, lw.ffn_norm, eps);
    {
      const Tensor xg = gemm_input(xn, lw.w_gate);  // one cast for gate and up, released before down's input's
      linear(gate, xn, lw.w_gate, &lw.b_gate, {l, WeightKind::WGate}, hook, {.x_for_gemm = &xg});
      linear(up, xn, lw.w_up, &lw.b_up, {l, WeightKind::WUp}, hook, {.x_for_gemm = &xg});
    }
    ops::swiglu_forward(gate, gate, up);
    sub_block_end(l, BlockSite::Mlp, gate, lw.w_down, lw.b_down, WeightKind::WDown);
  }
  if (cache) cache->advance(T, rows);

  const std::int64_t T_out = opts.last_position_only ? 1 : T;
  // The last stage's logits to every stage. On a device they travel in a device buffer (what an NCCL
  // communicator needs; MPI stages it) and come back to the host here.
  auto broadcast_logits = [&](Tensor& host_logits) {
    if (!on_device) {
      opts.pp->broadcast(host_logits.raw(), host_logits.numel(), comm::CommDType::F32, stage.size - 1);
      return;
    }
    Tensor d = ws.take(host_logits.shape(), DType::F32, "logits_broadcast");
    if (stage.last()) copy_between(d, host_logits);
    opts.pp->broadcast(d.raw(), d.numel(), comm::CommDType::F32, stage.size - 1);
    if (!stage.last()) copy_between(host_logits, d);
  };
  // The returned logits: in opts.logits_out when given, else a new host tensor.
  auto host_logits_tensor = [&]() {
    const Shape shape{B, T_out, c.vocab_size};
    if (opts.logits_out == nullptr) return Tensor::empty(shape, DType::F32, host_allocator(), "logits");
    const Tensor& buf = *opts.logits_out;
    ADAPT_REQUIRE(buf.dtype() == DType::F32 && buf.is_contiguous() && buf.device().host_accessible() &&
                      buf.numel() >= shape.numel(),
                  ShapeError,
                  "llama_forward: logits_out '{}' {} {} on {} must be contiguous f32 host memory of at least "
                  "{} elements ({})",
                  buf.name(), buf.shape().str(), dtype_name(buf.dtype()), buf.device().str(), shape.numel(),
                  shape.str());
    return buf.reshape({buf.numel()}).narrow(0, 0, shape.numel()).reshape(shape);
  };
  if (!stage.last()) {  // hand the hidden state on; the last stage's logits come back
    opts.pp->send(h.raw(), h.numel(), comm::CommDType::F32, stage.rank + 1, comm::Tag::Activation);
    Tensor logits = host_logits_tensor();
    broadcast_logits(logits);
    return opts.last_position_only ? logits.reshape({B, c.vocab_size}) : logits;
  }
  Tensor h_out = opts.last_position_only ? h.narrow(1, T - 1, 1) : h;
  if (on_device && opts.last_position_only && T > 1) {  // the device ops take contiguous rows
    Tensor last = ws.take({B, 1, C}, DType::F32, "hidden_last");
    for (std::int64_t b = 0; b < B; ++b) {
      Tensor dst = last.narrow(0, b, 1);
      ops::copy(dst, h.narrow(0, b, 1).narrow(1, T - 1, 1));
    }
    h_out = last;
  }
  Tensor hf = ws.take({B, T_out, C}, DType::F32, "final_normed");
  ops::rms_norm_forward(hf, h_out, w.final_norm, eps);
  Tensor logits = host_logits_tensor();
  if (tp.active()) {  // the rank's vocabulary columns, gathered whole for the sampler
    Tensor mine = ws.take({B * T_out, part.vocab.count}, DType::F32, "logits_part");
    linear(mine, hf.reshape({B * T_out, C}), w.lm_head, nullptr, {-1, WeightKind::LmHead}, hook);
    Tensor whole = logits.reshape({B * T_out, c.vocab_size});
    parallel::tp_gather(whole, mine, parallel::ShardDim::Cols, *tp.comm);
  } else if (on_device) {  // computed on the device, copied to the host for the sampler
    Tensor dev_logits = ws.take({B, T_out, c.vocab_size}, DType::F32, "logits_device");
    linear(dev_logits, hf, w.lm_head, nullptr, {-1, WeightKind::LmHead}, hook);
    copy_between(logits, dev_logits);
  } else {
    linear(logits, hf, w.lm_head, nullptr, {-1, WeightKind::LmHead}, hook);
  }
  if (stage.active()) broadcast_logits(logits);
  return opts.last_position_only ? logits.reshape({B, c.vocab_size}) : logits;
}

std::uint64_t llama_forward_workspace_bytes(const LlamaConfig& c, const TensorParallel& tp, const PipelineStage& stage,
                                            const ForwardCall& call) {
  const auto f32 = [](std::int64_t n) {
    return static_cast<std::uint64_t>(ops::Workspace::bytes_taken(static_cast<std::size_t>(n) * 4));
  };
  const TpLocalDims part = tp_local_dims(c, tp);
  const std::int64_t B = call.batch, T = call.tokens, N = B * T, C = c.hidden_size, H = part.heads, Hkv = part.kv_heads,
                     D = c.head_dim, F = part.ffn;
  const bool ragged = call.cache && call.ragged && B > 1;
  // hidden, normed, q, k, v, attn, gate, up, the RoPE tables; k_all and v_all without a cache.
  std::uint64_t n = 2 * f32(N * C) + 2 * f32(N * H * D) + 2 * f32(N * Hkv * D) + 2 * f32(N * F) +
                    2 * f32((ragged ? B : 1) * T * (D / 2));
  if (!call.cache) n += 2 * f32(N * Hkv * D);
  if (call.block_adapters || tp.active()) n += f32(N * C);  // sub_block_out
  if (call.block_adapters) n += f32(N * C);                 // block_out
  const std::int64_t T_out = call.last_position_only ? 1 : T;
  const std::int64_t logits = B * T_out * c.vocab_size;
  if (!stage.last()) return n + (call.on_device ? f32(logits) : 0);         // logits_broadcast
  if (call.on_device && call.last_position_only && T > 1) n += f32(B * C);  // hidden_last
  n += f32(B * T_out * C);                                                  // final_normed
  if (tp.active()) n += f32(B * T_out * part.vocab.count);                  // logits_part
  else if (call.on_device) n += f32(logits);                                // logits_device
  if (stage.active() && call.on_device) n += f32(logits);                   // logits_broadcast
  return n;
}

}  // namespace adapt::model
