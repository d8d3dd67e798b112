// Training step: forward with saved activations (or per-layer recomputation), fused cross-entropy,
// backward to the embedding output through the adapter hook. Memory: `saved` holds what crosses from
// the forward to the backward (per layer, or only each layer's input with recomputation) and the
// running gradient of the residual stream; `scratch` holds one layer's temporaries at a time, or the
// logits, and is reset between them.
#include "model/llama_train.h"

#include <algorithm>
#include <initializer_list>
#include <span>

#include "comm/communicator.h"
#include "core/error.h"
#include "model/attention_compute.h"
#include "model/linear.h"
#include "model/llama_device.h"
#include "model/weight_stream.h"
#include "ops/cast.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "parallel/tp_ops.h"

namespace adapt::model {

namespace {

// True when every row of segment ids (B, T) holds one non-negative id: the masking is then plain causal
// attention, which the attention kernels without segment ids compute faster (packed rows with
// cross-document attention, or one document per row).
bool single_segment_rows(const Tensor& segment_ids) {
  const std::int64_t B = segment_ids.dim(0), T = segment_ids.dim(1);
  const std::int32_t* s = segment_ids.data<std::int32_t>();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      if (s[b * T + t] < 0 || s[b * T + t] != s[b * T]) return false;
  return true;
}

// What one layer's backward reads. h_in (the layer's input, also the attention block's h) always
// lives in `saved`; the rest in `saved` too without recomputation, or in `scratch` with it.
struct LayerActs {
  Tensor h_in;       // (B, T, C)
  Tensor rstd_attn;  // (N)
  Tensor q;          // (B, T, H, D) after RoPE
  Tensor k_all;      // (B, Hkv, T, D) after RoPE
  Tensor v_all;      // (B, Hkv, T, D)
  Tensor attn;       // (B, T, H, D) attention output = o_proj input
  Tensor lse;        // (B, H, T)
  Tensor f_attn;     // (B, T, C) o_proj output: only with a block hook after attention
  Tensor h_mid;      // (B, T, C) after the attention block = the MLP block's h
  Tensor rstd_ffn;   // (N)
  Tensor gate;       // (B, T, F) gate_proj output (pre-activation)
  Tensor up;         // (B, T, F) up_proj output
  Tensor f_mlp;      // (B, T, C) down_proj output: only with a block hook after the MLP
};

}  // namespace

// One micro-batch's pass: forward() up to where the gradient of the stage's output enters (on the last
// stage through the loss and lm_head's backward), backward() from there down to the stage's input.
// llama_train_step runs both at once; SplitTrainStep keeps the object between them.
class TrainPass {
 public:
  TrainPass(const LlamaModel& model, const TrainInputs& in, AdapterHook* hook, const TrainOptions& opts,
            ops::Workspace& saved, ops::Workspace& scratch)
      : m_(model), c_(model.config), in_(in), hook_(hook), opts_(opts), saved_(saved), scratch_(scratch) {
    B_ = in.ids.dim(0), T_ = in.ids.dim(1), N_ = B_ * T_;
    // With tensor parallelism (tensor_parallel.h) the rank's heads, FFN width and vocabulary rows.
    const TpLocalDims local = tp_local_dims(c_, model.tp);
    C_ = c_.hidden_size, H_ = local.heads, Hkv_ = local.kv_heads, D_ = c_.head_dim, F_ = local.ffn;
    vocab_ = local.vocab;
    eps_ = static_cast<float>(c_.rms_norm_eps);
    keep_ = opts.backward && !opts.recompute;
    const bool split = opts.shard_saved_inputs && model.tp.active();
    shard_ = opts.backward && opts.recompute && (split || opts.saved_input_dtype == DType::BF16);
    gather_ = shard_ && split;
    kept_dtype_ = opts.saved_input_dtype;
    shard_rows_ = gather_ ? (N_ + model.tp.size - 1) / model.tp.size : (shard_ ? N_ : 0);
  }

  // Resets `saved` and fills it with what backward() reads; the loss lands in result().
  void forward();
  // From opts().stage_output_grad (a stage that is not the last) or the head's gradient, down to the
  // stage's input (opts().d_embedded receives its gradient).
  void backward();
  TrainOptions& opts() { return opts_; }
  void check_backward_inputs() const;  // llama_train_step's checks of what backward() gets in opts()
  // The loss, and the workspaces' high-water marks so far.
  TrainResult result() const;

 private:
  bool has_block(int l, BlockSite s) const { return hook_ && hook_->has_block(l, s); }
  bool has_linear(int l, WeightKind k) const { return hook_ && hook_->has_linear({l, k}); }
  // Layer l's weights, staged by stage_layer(l, ...) first (a layer whose weights stay in host RAM
  // comes to the device there, and `next` is copied meanwhile; weight_stream.h).
  void stage_layer(int l, int next) {
    staged_ = &layer_weights(m_, l, next);
    staged_layer_ = l;
  }
  const LayerWeights& lw(int l) const {
    ADAPT_CHECK(staged_ && staged_layer_ == l, "llama_train_step: layer {0}'s weights used before stage_layer({0})", l);
    return *staged_;
  }
  Tensor take(ops::Workspace& w, const Shape& s, const char* name) { return w.take(s, DType::F32, name); }

  void alloc_acts(LayerActs& a, int l, ops::Workspace& w);
  void layer_forward(int l, LayerActs& a, Tensor& h_out);
  void layer_backward(int l, LayerActs& a, Tensor& dh);
  void attention(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, Tensor* lse);
  Tensor normed(const Tensor& h, const Tensor& w);  // rms_norm_forward again, in scratch
  // shard_: this rank's rows of layer l's input into its shard (in kept_dtype_), and every rank's shard
  // gathered back into the whole f32 input before the layer's recomputation.
  void keep_input_shard(int l, const Tensor& h_in);
  Tensor gathered_input(int l);
  // Tensor parallelism: the input gradient of column-parallel projections summed over tp; a
  // row-parallel sub-block output f = Σ_tp (x·Wᵀ + adapter term) + bias.
  bool tp_active() const { return m_.tp.active(); }
  void tp_sum(Tensor& t) {
    if (tp_active()) m_.tp.comm->all_reduce(t, comm::ReduceOp::Sum);
  }
  void row_parallel(Tensor& f, const Tensor& x, const Tensor& w, const Tensor& bias, const LinearSite& site);
  // One projection of a group that reads the same normed input: its output gradient, weight and site.
  struct ProjectionGrad {
    Tensor dy;
    const Tensor& w;
    LinearSite site;
  };
  void column_parallel_backward(Tensor& dxn, const Tensor& xn, std::initializer_list<ProjectionGrad> projections,
                                bool input_grad);

  const LlamaModel& m_;
  const LlamaConfig& c_;
  const TrainInputs& in_;
  AdapterHook* hook_;
  TrainOptions opts_;
  ops::Workspace& saved_;
  ops::Workspace& scratch_;
  std::int64_t B_ = 0, T_ = 0, N_ = 0, C_ = 0, H_ = 0, Hkv_ = 0, D_ = 0, F_ = 0;
  float eps_ = 0;
  parallel::Range vocab_;  // the vocabulary columns of this rank's logits
  bool keep_ = false;      // every layer's activations stay in `saved`
  // With recomputation, tp and TrainOptions::shard_saved_inputs (gather_): each rank keeps shard_rows_
  // rows of every layer's input, rows [rank · shard_rows_, ...) of the (N, C) input, the last rank's
  // padded; with TrainOptions::saved_input_dtype bf16 in that dtype, all N rows without gather_.
  bool shard_ = false;
  bool gather_ = false;
  DType kept_dtype_ = DType::F32;
  std::int64_t shard_rows_ = 0;
  std::vector<Tensor> shards_;
  Tensor whole_[2];  // shard_: the two hidden states the forward takes turns in, whole_rows() rows each
  std::int64_t whole_rows() const { return gather_ ? m_.tp.size * shard_rows_ : N_; }
  const LayerWeights* staged_ = nullptr;  // lw(staged_layer_)
  int staged_layer_ = -1;
  Tensor cos_, sin_;  // RoPE tables: (T, D/2) shared, or (B, T, D/2) per token
  std::span<const std::int32_t> segments_;
  // Between forward() and backward(): the stage's layers [l0_, l1_), each layer's activations and the
  // hidden states (h_[l] enters layer l), the running gradient of the residual stream, the loss.
  int l0_ = 0, l1_ = 0;
  std::vector<LayerActs> acts_;
  std::vector<Tensor> h_;
  Tensor dh_;
  TrainResult result_;
};

void TrainPass::alloc_acts(LayerActs& a, int l, ops::Workspace& w) {
  a.rstd_attn = take(w, {N_}, "rstd_attn");
  a.q = take(w, {B_, T_, H_, D_}, "q");
  a.k_all = take(w, {B_, Hkv_, T_, D_}, "k_all");
  a.v_all = take(w, {B_, Hkv_, T_, D_}, "v_all");
  a.attn = take(w, {B_, T_, H_, D_}, "attn");
  a.lse = take(w, {B_, H_, T_}, "lse");
  a.f_attn = has_block(l, BlockSite::Attention) ? take(w, {B_, T_, C_}, "f_attn") : Tensor();
  a.h_mid = take(w, {B_, T_, C_}, "h_mid");
  a.rstd_ffn = take(w, {N_}, "rstd_ffn");
  a.gate = take(w, {B_, T_, F_}, "gate");
  a.up = take(w, {B_, T_, F_}, "up");
  a.f_mlp = has_block(l, BlockSite::Mlp) ? take(w, {B_, T_, C_}, "f_mlp") : Tensor();
}

namespace {

// f32 rows into a kept tensor of the same shape: a copy, or rounded to bf16 (ops::cast).
void keep_rows(Tensor& dst, const Tensor& src) {
  if (dst.dtype() == DType::F32) {
    copy_between(dst, src);
  } else {
    ops::cast(dst, src);
  }
}

}  // namespace

void TrainPass::keep_input_shard(int l, const Tensor& h_in) {
  Tensor& shard = shards_[static_cast<std::size_t>(l)];
  shard = saved_.take({shard_rows_, C_}, kept_dtype_, "hidden_shard");
  const std::int64_t r0 = gather_ ? m_.tp.rank * shard_rows_ : 0;
  const std::int64_t rows = std::clamp<std::int64_t>(N_ - r0, 0, shard_rows_);
  if (rows < shard_rows_) {  // the padding the gather carries and drops: defined, for memory checkers
    const ops::Workspace::Mark m = scratch_.mark();
    Tensor zeros = take(scratch_, {shard_rows_ - rows, C_}, "hidden_shard_padding");
    ops::fill(zeros, 0.0f);
    Tensor pad = shard.narrow(0, rows, shard_rows_ - rows);
    keep_rows(pad, zeros);
    scratch_.rewind(m);
  }
  if (rows == 0) return;  // only padding (fewer rows than ranks)
  Tensor dst = shard.narrow(0, 0, rows);
  keep_rows(dst, h_in.reshape({N_, C_}).narrow(0, r0, rows));
}

// Into the first of the forward's two hidden states, which the backward no longer reads (the head's
// backward, or the copy to stage_output, came first): gathered over tp, widened from bf16, or both
// (bf16 shards are gathered into scratch first).
Tensor TrainPass::gathered_input(int l) {
  Tensor& all = whole_[0];
  const Tensor& mine = shards_[static_cast<std::size_t>(l)];
  if (kept_dtype_ == DType::F32) {
    m_.tp.comm->all_gather(mine.raw(), all.raw(), shard_rows_ * C_, comm::CommDType::F32);
  } else if (!gather_) {
    ops::cast(all, mine);
  } else {
    const ops::Workspace::Mark m = scratch_.mark();
    Tensor kept = scratch_.take({whole_rows(), C_}, kept_dtype_, "hidden_gathered");
    m_.tp.comm->all_gather(mine.raw(), kept.raw(), shard_rows_ * C_, comm::comm_dtype_of(kept_dtype_));
    ops::cast(all, kept);
    scratch_.rewind(m);
  }
  return all.narrow(0, 0, N_).reshape({B_, T_, C_});
}

void TrainPass::attention(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, Tensor* lse) {
  attention_forward_in(m_.attention_dtype, out, q, k, v, {.segment_ids = segments_}, lse);
}

void TrainPass::row_parallel(Tensor& f, const Tensor& x, const Tensor& w, const Tensor& bias, const LinearSite& site) {
  if (!tp_active()) {
    linear(f, x, w, &bias, site, hook_);
    return;
  }
  linear(f, x, w, nullptr, site, hook_);
  tp_sum(f);
  if (bias.defined()) ops::bias_add(f, bias);
}

// dxn = Σ over the projections (q/k/v, or gate/up) of linear_backward, then summed over tp when
// input_grad (each rank holds its heads' / FFN columns' share). With tp the all-reduce overlaps the
// adapters' parameter gradients (Megatron's asynchronous tp all-reduce): dx of every projection (frozen
// path and adapter share) first, the all-reduce started, the hooks' weight halves, then the wait. The
// dy tensors and xn stay untouched until the weight halves have run (nothing takes scratch in
// between, and the hook works in its own memory). dxn gets the same bits either way; the adapters'
// gradients too (AdapterSet's halves compute what its linear_backward does). Without tp, or when
// nothing reads dxn, each projection's linear_backward as before.
void TrainPass::column_parallel_backward(Tensor& dxn, const Tensor& xn,
                                         std::initializer_list<ProjectionGrad> projections, bool input_grad) {
  bool first = true;
  if (!tp_active() || !input_grad) {
    for (const ProjectionGrad& p : projections) {
      linear_backward(dxn, p.dy, xn, p.w, p.site, hook_, {.accumulate = !first, .input_grad = input_grad});
      first = false;
    }
    return;
  }
  for (const ProjectionGrad& p : projections) {
    linear_backward_input(dxn, p.dy, xn, p.w, p.site, hook_, {.accumulate = !first});
    first = false;
  }
  comm::CommRequest sum = m_.tp.comm->all_reduce_start(dxn, comm::ReduceOp::Sum);
  for (const ProjectionGrad& p : projections) linear_backward_weights(p.dy, xn, p.site, hook_);
  sum.wait();
}

Tensor TrainPass::normed(const Tensor& h, const Tensor& w) {
  // The same bits as the forward's: the row kernel is deterministic.
  Tensor xn = take(scratch_, {B_, T_, C_}, "normed");
  ops::rms_norm_forward(xn, h, w, eps_);
  return xn;
}

// One decoder layer: h_out = MLP block(attention block(a.h_in)). Fills `a`; the temporaries come from
// scratch and go back to it on return, each as soon as it is spent (the normed input, then k and v or
// the SwiGLU output). Mirrors llama_forward (the residual add fused into o_proj / down_proj) unless a
// block hook needs the sub-block output f on its own; with tp the rank's share of o_proj / down_proj is
// written where the sub-block's output goes, summed over tp there, and the residual added in place.
void TrainPass::layer_forward(int l, LayerActs& a, Tensor& h_out) {
  const LayerWeights& w = lw(l);
  const ops::Workspace::Mark start = scratch_.mark();
  // Spent temporaries go out of scope before their memory is rewound: a tensor holds its workspace block,
  // so a block that a first pass added stays allocated while any tensor in it lives.
  Tensor xn = take(scratch_, {B_, T_, C_}, "normed");
  const ops::Workspace::Mark after_xn = scratch_.mark();
  Tensor attn2 = a.attn.reshape({N_, H_ * D_});

  // Attention block: h_mid = h_in + o_proj(attention(rope(q), rope(k), v)) (+ block adapter).
  ops::rms_norm_forward(xn, a.h_in, w.attn_norm, eps_, &a.rstd_attn);
  {
    // One cast of xn for q, k and v (bf16 weights on a GPU), released before attention casts its operands.
    const Tensor xq = gemm_input(xn, w.wq);
    Tensor k = take(scratch_, {B_, T_, Hkv_, D_}, "k");
    Tensor v = take(scratch_, {B_, T_, Hkv_, D_}, "v");
    Tensor q2 = a.q.reshape({N_, H_ * D_}), k2 = k.reshape({N_, Hkv_ * D_}), v2 = v.reshape({N_, Hkv_ * D_});
    linear(q2, xn, w.wq, &w.bq, {l, WeightKind::Wq}, hook_, {.x_for_gemm = &xq});
    linear(k2, xn, w.wk, &w.bk, {l, WeightKind::Wk}, hook_, {.x_for_gemm = &xq});
    linear(v2, xn, w.wv, &w.bv, {l, WeightKind::Wv}, hook_, {.x_for_gemm = &xq});
    ops::rope_forward(a.q, cos_, sin_);
    ops::rope_forward(k, cos_, sin_);
    ops::to_heads_major(a.k_all, k);
    ops::to_heads_major(a.v_all, v);
  }
  scratch_.rewind(after_xn);  // k and v live on in a.k_all and a.v_all
  attention(a.attn, a.q, a.k_all, a.v_all, &a.lse);
  if (has_block(l, BlockSite::Attention)) {
    row_parallel(a.f_attn, attn2, w.wo, w.bo, {l, WeightKind::Wo});
    ops::add(a.h_mid, a.h_in, a.f_attn);
    Tensor out = as_rows(a.h_mid);
    hook_->block_forward(l, BlockSite::Attention, as_rows(a.h_in), as_rows(a.f_attn), out);
  } else if (tp_active()) {
    row_parallel(a.h_mid, attn2, w.wo, w.bo, {l, WeightKind::Wo});
    ops::add(a.h_mid, a.h_in, a.h_mid);
  } else {
    ops::copy(a.h_mid, a.h_in);
    linear(a.h_mid, attn2, w.wo, &w.bo, {l, WeightKind::Wo}, hook_, {.accumulate = true});
  }

  // MLP block: h_out = h_mid + down_proj(silu(gate_proj(xn)) ⊙ up_proj(xn)) (+ block adapter).
  ops::rms_norm_forward(xn, a.h_mid, w.ffn_norm, eps_, &a.rstd_ffn);
  {
    const Tensor xg = gemm_input(xn, w.w_gate);  // one cast for gate and up, released before down's input is cast
    linear(a.gate, xn, w.w_gate, &w.b_gate, {l, WeightKind::WGate}, hook_, {.x_for_gemm = &xg});
    linear(a.up, xn, w.w_up, &w.b_up, {l, WeightKind::WUp}, hook_, {.x_for_gemm = &xg});
  }
  {
    Tensor act = take(scratch_, {B_, T_, F_}, "swiglu");
    ops::swiglu_forward(act, a.gate, a.up);
    if (has_block(l, BlockSite::Mlp)) {
      row_parallel(a.f_mlp, act, w.w_down, w.b_down, {l, WeightKind::WDown});
      ops::add(h_out, a.h_mid, a.f_mlp);
      Tensor out = as_rows(h_out);
      hook_->block_forward(l, BlockSite::Mlp, as_rows(a.h_mid), as_rows(a.f_mlp), out);
    } else if (tp_active()) {
      row_parallel(h_out, act, w.w_down, w.b_down, {l, WeightKind::WDown});
      ops::add(h_out, a.h_mid, h_out);
    } else {
      ops::copy(h_out, a.h_mid);
      linear(h_out, act, w.w_down, &w.b_down, {l, WeightKind::WDown}, hook_, {.accumulate = true});
    }
  }
  xn = Tensor();  // the last tensor of this call in scratch
  scratch_.rewind(start);
}

// dh (B, T, C) holds d/d(h_out) on entry and d/d(h_in) on return. Temporaries come from scratch and go
// back to it as they are spent, the normed input's gradient last; the saved gate/up take their own
// gradients in place (each layer's backward runs once).
void TrainPass::layer_backward(int l, LayerActs& a, Tensor& dh) {
  const LayerWeights& w = lw(l);
  // The gradient of a sub-block's output f: dh itself, unless a block adapter splits dout into
  // shares for h (kept in dh) and for f.
  auto block_grad = [&](BlockSite site, const Tensor& h, const Tensor& f) -> Tensor {
    if (!has_block(l, site)) return dh;
    Tensor dout = take(scratch_, {B_, T_, C_}, "dout");
    Tensor df = take(scratch_, {B_, T_, C_}, "df");
    ops::copy(dout, dh);
    ops::copy(df, dh);
    Tensor dh2 = as_rows(dh), df2 = as_rows(df);
    hook_->block_backward(l, site, as_rows(h), as_rows(f), as_rows(dout), dh2, df2);
    return df;
  };
  const ops::Workspace::Mark start = scratch_.mark();
  Tensor dxn = take(scratch_, {B_, T_, C_}, "d_normed");
  const ops::Workspace::Mark after_dxn = scratch_.mark();

  // MLP block. As in the forward, spent temporaries go out of scope before their memory is rewound.
  {
    {
      const Tensor df = block_grad(BlockSite::Mlp, a.h_mid, a.f_mlp);
      Tensor act;  // down_proj's input, only a hook needs it: recomputed from gate and up
      if (has_linear(l, WeightKind::WDown)) {
        act = take(scratch_, {B_, T_, F_}, "swiglu");
        ops::swiglu_forward(act, a.gate, a.up);
      }
      Tensor dact = take(scratch_, {B_, T_, F_}, "d_swiglu");
      linear_backward(dact, df, act, w.w_down, {l, WeightKind::WDown}, hook_);
      ops::swiglu_backward(a.gate, a.up, dact, a.gate, a.up);  // gate, up now hold their gradients
    }
    scratch_.rewind(after_dxn);  // df, act and dact are spent
    const bool need_x = has_linear(l, WeightKind::WGate) || has_linear(l, WeightKind::WUp);
    const Tensor xn = need_x ? normed(a.h_mid, w.ffn_norm) : Tensor();
    column_parallel_backward(dxn, xn,
                             {{a.gate, w.w_gate, {l, WeightKind::WGate}}, {a.up, w.w_up, {l, WeightKind::WUp}}},
                             /*input_grad=*/true);
    ops::rms_norm_backward(dh, nullptr, dxn, a.h_mid, w.ffn_norm, a.rstd_ffn, {.accumulate = true});
  }
  scratch_.rewind(after_dxn);
  // Attention block: dq, dk and dv outlive the rest (o_proj's input gradient, the heads-major dk and dv,
  // a block adapter's shares).
  {
    Tensor dq = take(scratch_, {B_, T_, H_, D_}, "dq");
    Tensor dk = take(scratch_, {B_, T_, Hkv_, D_}, "dk");
    Tensor dv = take(scratch_, {B_, T_, Hkv_, D_}, "dv");
    const ops::Workspace::Mark after_dqkv = scratch_.mark();
    {
      Tensor dattn = take(scratch_, {B_, T_, H_, D_}, "d_attn");
      const ops::Workspace::Mark after_dattn = scratch_.mark();
      {
        const Tensor df = block_grad(BlockSite::Attention, a.h_in, a.f_attn);
        Tensor dattn2 = dattn.reshape({N_, H_ * D_});
        linear_backward(dattn2, df, a.attn.reshape({N_, H_ * D_}), w.wo, {l, WeightKind::Wo}, hook_);
      }
      scratch_.rewind(after_dattn);  // a block adapter's shares are spent
      Tensor dk_all = take(scratch_, {B_, Hkv_, T_, D_}, "dk_all");
      Tensor dv_all = take(scratch_, {B_, Hkv_, T_, D_}, "dv_all");
      attention_backward_in(m_.attention_dtype, dq, dk_all, dv_all, dattn, a.q, a.k_all, a.v_all, a.attn, a.lse,
                            {.segment_ids = segments_});
      ops::from_heads_major(dk, dk_all);
      ops::from_heads_major(dv, dv_all);
    }
    scratch_.rewind(after_dqkv);  // dattn, dk_all and dv_all are spent
    ops::rope_backward(dq, cos_, sin_);
    ops::rope_backward(dk, cos_, sin_);
    const bool need_x = has_linear(l, WeightKind::Wq) || has_linear(l, WeightKind::Wk) || has_linear(l, WeightKind::Wv);
    const Tensor xn = need_x ? normed(a.h_in, w.attn_norm) : Tensor();
    // The first layer's input is the (frozen) embedding output: its gradient is needed only when asked.
    const bool input_grad = l > 0 || opts_.d_embedded;
    column_parallel_backward(dxn, xn,
                             {{dq.reshape({N_, H_ * D_}), w.wq, {l, WeightKind::Wq}},
                              {dk.reshape({N_, Hkv_ * D_}), w.wk, {l, WeightKind::Wk}},
                              {dv.reshape({N_, Hkv_ * D_}), w.wv, {l, WeightKind::Wv}}},
                             input_grad);
    if (input_grad) ops::rms_norm_backward(dh, nullptr, dxn, a.h_in, w.attn_norm, a.rstd_attn, {.accumulate = true});
  }
  scratch_.rewind(start);
}

void TrainPass::forward() {
  const LlamaWeights& w = m_.weights;
  // The layers this pipeline stage runs: [l0, l1) (all of them with one stage).
  const parallel::Range layers = stage_layer_range(c_, m_.stage);
  l0_ = static_cast<int>(layers.begin), l1_ = static_cast<int>(layers.end());
  const int l0 = l0_, l1 = l1_, L = static_cast<int>(c_.n_layers);
  saved_.reset();
  scratch_.reset();
  const Device device = model_device(m_);
  const bool on_device = !device.host_accessible();

  // Per-step inputs: RoPE tables and the loss scale. On a device model, the ids, targets and positions
  // are copied there (the segment ids stay on the host: attention takes them as a host span).
  const Shape table_shape = in_.positions.defined() ? Shape{B_, T_, D_ / 2} : Shape{T_, D_ / 2};
  cos_ = take(saved_, table_shape, "rope.cos");
  sin_ = take(saved_, table_shape, "rope.sin");
  ADAPT_REQUIRE(cos_.device() == device, UnsupportedError,
                "llama_train_step: the model is on {} but the TrainWorkspace allocates on {}; construct it as "
                "TrainWorkspace(model_allocator(model))",
                device.str(), cos_.device().str());
  const Tensor ids = on_device ? tensor_to(in_.ids, device) : in_.ids;
  const Tensor targets_all = on_device ? tensor_to(in_.targets, device) : in_.targets;
  if (in_.positions.defined()) {
    const Tensor positions = on_device ? tensor_to(in_.positions, device) : in_.positions;
    ops::rope_table_fill_positions(cos_, sin_, m_.inv_freq, positions);
  } else {
    ops::rope_table_fill(cos_, sin_, m_.inv_freq, 0);
  }
  if (in_.segment_ids.defined() && !single_segment_rows(in_.segment_ids)) {
    segments_ = {in_.segment_ids.data<std::int32_t>(), static_cast<std::size_t>(N_)};
  }
  std::int64_t n_targets = 0;
  for (std::int64_t i = 0; i < N_; ++i) {
    const std::int64_t y =
        in_.targets.dtype() == DType::I32 ? in_.targets.data<std::int32_t>()[i] : in_.targets.data<std::int64_t>()[i];
    n_targets += y != kIgnoreIndex;
  }
  TrainResult& result = result_;
  result.loss_scale =
      opts_.loss_scale != 0.0f ? opts_.loss_scale : (n_targets > 0 ? 1.0f / static_cast<float>(n_targets) : 0.0f);

  // Forward. h_in of every layer (and the last layer's output) stays in `saved` for the backward;
  // without one, two buffers take turns (an evaluation's memory does not grow with the layers), and so
  // they do when each tp rank keeps a shard of every layer's input instead (shard_).
  std::vector<LayerActs>& acts = acts_;
  std::vector<Tensor>& h = h_;
  acts.assign(static_cast<std::size_t>(L), LayerActs{});
  h.assign(static_cast<std::size_t>(L) + 1, Tensor());
  shards_.assign(shard_ ? static_cast<std::size_t>(L) : 0, Tensor());
  const bool two_hidden = !opts_.backward || shard_;
  for (int l = l0; l <= l1; ++l) {
    Tensor& hl = h[static_cast<std::size_t>(l)];
    if (two_hidden && l >= l0 + 2) {
      hl = h[static_cast<std::size_t>(l) - 2];
    } else if (shard_) {  // padded: the backward gathers the shards into the first
      Tensor& whole = whole_[l - l0];
      whole = take(saved_, {whole_rows(), C_}, "hidden");
      hl = whole.narrow(0, 0, N_).reshape({B_, T_, C_});
    } else {
      hl = take(saved_, {B_, T_, C_}, "hidden");
    }
  }
  if (!m_.stage.first()) {
    copy_between(h[static_cast<std::size_t>(l0)], *opts_.stage_input);  // the previous stage's output
  } else if (tp_active()) {
    parallel::vocab_parallel_embedding_forward(h[0], w.embedding, vocab_, c_.vocab_size, in_.ids, *m_.tp.comm);
  } else {
    ops::embedding_forward(h[0], w.embedding, ids);
  }
  for (int l = l0; l < l1; ++l) {
    LayerActs& a = acts[static_cast<std::size_t>(l)];
    scratch_.reset();
    alloc_acts(a, l, keep_ ? saved_ : scratch_);
    a.h_in = h[static_cast<std::size_t>(l)];
    if (shard_) keep_input_shard(l, a.h_in);
    stage_layer(l, l + 1 < l1 ? l + 1 : -1);  // the backward starts with the layer staged last
    layer_forward(l, a, h[static_cast<std::size_t>(l) + 1]);
    // Without kept activations nothing but the input outlives the layer: drop the scratch tensors so
    // that the next reset can release the blocks they live in (the first step's growth otherwise stays).
    // A sharded input outlives it in its shard only (the buffer takes the layer after next's output).
    if (!keep_) a = shard_ ? LayerActs{} : LayerActs{.h_in = a.h_in};
  }

  // Head and loss, chunk by chunk of rows: the logits become their gradient in place, and lm_head's
  // backward runs before the next chunk's logits overwrite them.
  scratch_.reset();
  dh_ = opts_.backward ? take(saved_, {B_, T_, C_}, "d_hidden") : Tensor();
  Tensor& dh = dh_;
  if (!m_.stage.last()) {  // a pipeline stage hands its output on; its gradient comes back to backward()
    if (opts_.stage_output) copy_between(*opts_.stage_output, h[static_cast<std::size_t>(l1)]);
  } else {
    const Tensor& h_last = h[static_cast<std::size_t>(l1)];
    Tensor rstd = take(scratch_, {N_}, "rstd_final");
    Tensor hf = take(scratch_, {N_, C_}, "final_normed");
    Tensor dhf = opts_.backward ? take(scratch_, {N_, C_}, "d_final_normed") : Tensor();
    const std::int64_t chunk = opts_.logits_chunk_rows > 0 ? std::min(opts_.logits_chunk_rows, N_) : N_;
    Tensor logits_buf = take(scratch_, {chunk, vocab_.count}, "logits");  // the rank's columns
    const Tensor targets = targets_all.reshape({N_});
    Tensor logits_out = opts_.logits ? opts_.logits->reshape({N_, c_.vocab_size}) : Tensor();
    const LinearSite head{-1, WeightKind::LmHead};
    ops::rms_norm_forward(hf, h_last, w.final_norm, eps_, &rstd);
    for (std::int64_t r0 = 0; r0 < N_; r0 += chunk) {
      const std::int64_t rows = std::min(chunk, N_ - r0);
      Tensor logits = logits_buf.narrow(0, 0, rows);
      const Tensor x = hf.narrow(0, r0, rows);
      linear(logits, x, w.lm_head, nullptr, head, hook_);
      const ops::CrossEntropyOptions ce_opts{
          .grad_scale = result.loss_scale, .grad = opts_.backward, .ignore_index = kIgnoreIndex};
      ops::CrossEntropyResult ce;
      if (tp_active()) {  // vocab-parallel: the rank's columns of the logits and of their gradient
        if (opts_.logits) {
          Tensor out = logits_out.narrow(0, r0, rows);
          parallel::tp_gather(out, logits, parallel::ShardDim::Cols, *m_.tp.comm);
        }
        ce = parallel::vocab_parallel_cross_entropy(logits, targets.narrow(0, r0, rows), vocab_, c_.vocab_size,
                                                    *m_.tp.comm, ce_opts);
      } else {
        if (opts_.logits) {
          Tensor out = logits_out.narrow(0, r0, rows);
          copy_between(out, logits);
        }
        Tensor row_loss = opts_.row_loss ? opts_.row_loss->reshape({N_}).narrow(0, r0, rows) : Tensor();
        ce = ops::cross_entropy_forward_backward(logits, targets.narrow(0, r0, rows), ce_opts,
                                                 opts_.row_loss ? &row_loss : nullptr);
      }
      result.loss_sum += ce.loss_sum;
      result.n_loss_tokens += ce.n_valid;
      if (opts_.backward) {
        Tensor dx = dhf.narrow(0, r0, rows);
        linear_backward(dx, logits, x, w.lm_head, head, hook_);
      }
    }
    if (opts_.backward) {
      tp_sum(dhf);  // vocab-parallel lm_head: each rank's share of the input gradient
      ops::rms_norm_backward(dh, nullptr, dhf.reshape({B_, T_, C_}), h_last, w.final_norm, rstd);
    }
  }
}

// Last layer first.
void TrainPass::backward() {
  Tensor& dh = dh_;
  if (!m_.stage.last()) copy_between(dh, *opts_.stage_output_grad);
  for (int l = l1_ - 1; l >= l0_; --l) {
    LayerActs& a = acts_[static_cast<std::size_t>(l)];
    scratch_.reset();
    stage_layer(l, l - 1 >= l0_ ? l - 1 : -1);
    if (!keep_) {
      // Recomputation: the layer's forward again. Its output is written where the forward's was (the
      // same bits), or with sharded inputs to the second hidden state: the backward reads neither.
      if (shard_) a.h_in = gathered_input(l);
      alloc_acts(a, l, scratch_);
      Tensor h_out = shard_ ? whole_[1].narrow(0, 0, N_).reshape({B_, T_, C_}) : h_[static_cast<std::size_t>(l) + 1];
      layer_forward(l, a, h_out);
    }
    layer_backward(l, a, dh);
    if (hook_) hook_->layer_backward_done(l);
    if (!keep_) a = LayerActs{};  // as in the forward: release the recomputed layer's scratch tensors
  }
  if (opts_.d_embedded) copy_between(*opts_.d_embedded, dh);
}

bool compact_saved_inputs_pays(int tp, std::int64_t stage_layers, int bytes) {
  return (tp > 1 || bytes < 4) && 4 * tp * (stage_layers - 1) > stage_layers * bytes;
}

SavedInputs saved_inputs_for(int tp, std::int64_t stage_layers, bool shard, DType dtype) {
  const SavedInputs asked{.shard = shard && tp > 1, .dtype = dtype};
  const int bytes = dtype == DType::BF16 ? 2 : 4;
  return compact_saved_inputs_pays(asked.shard ? tp : 1, stage_layers, bytes) ? asked : SavedInputs{};
}

TrainResult TrainPass::result() const {
  TrainResult r = result_;
  r.memory.saved_bytes = saved_.high_water_bytes();
  r.memory.scratch_bytes = scratch_.high_water_bytes();
  return r;
}

namespace {

// A hidden state a pipeline stage exchanges: a contiguous f32 (B, T, C) tensor.
void check_stage_tensor(const LlamaModel& model, const TrainInputs& in, const Tensor* t, bool needed,
                        const char* what) {
  const Shape btc{in.ids.dim(0), in.ids.dim(1), model.config.hidden_size};
  ADAPT_REQUIRE(!needed || (t && t->shape() == btc && t->dtype() == DType::F32 && t->is_contiguous()), ShapeError,
                "llama_train_step: pipeline stage {} of {} needs {} as a contiguous f32 (B, T, C) = {} tensor{}",
                model.stage.rank, model.stage.size, what, btc.str(),
                t ? fmt::format(", got '{}' {}", t->name(), t->shape().str()) : std::string(" (none given)"));
}

void check_d_embedded(const TrainInputs& in, const LlamaConfig& c, const Tensor* d_embedded) {
  if (!d_embedded) return;
  ADAPT_REQUIRE(d_embedded->shape() == (Shape{in.ids.dim(0), in.ids.dim(1), c.hidden_size}), ShapeError,
                "llama_train_step: d_embedded output '{}' has shape {} but (B, T, C) = ({}, {}, {}) was expected",
                d_embedded->name(), d_embedded->shape().str(), in.ids.dim(0), in.ids.dim(1), c.hidden_size);
}

// `split`: the forward of a SplitTrainStep, whose stage_output_grad comes with its backward.
void check_inputs(const LlamaModel& model, const TrainInputs& in, const TrainOptions& opts, bool split = false) {
  const LlamaConfig& c = model.config;
  ADAPT_REQUIRE(in.ids.defined() && in.ids.rank() == 2 && in.ids.dim(0) > 0 && in.ids.dim(1) > 0, ShapeError,
                "llama_train_step: token ids '{}' have shape {}; (B, T) with B, T >= 1 was expected", in.ids.name(),
                in.ids.defined() ? in.ids.shape().str() : "(undefined)");
  ADAPT_CHECK(static_cast<std::int64_t>(model.weights.layers.size()) == c.n_layers &&
                  (model.weights.lm_head.defined() || !model.stage.last()),
              "the model has {} layers loaded but its config says {}", model.weights.layers.size(), c.n_layers);
  check_stage_tensor(model, in, opts.stage_input, !model.stage.first(), "stage_input");
  check_stage_tensor(model, in, opts.stage_output_grad, !model.stage.last() && opts.backward && !split,
                     "stage_output_grad");
  if (opts.stage_output) check_stage_tensor(model, in, opts.stage_output, true, "stage_output");
  const Shape bt = in.ids.shape();
  auto check_int = [&](const Tensor& t, const char* what, bool i32_only) {
    ADAPT_REQUIRE(t.shape() == bt, ShapeError, "llama_train_step: {} '{}' have shape {} but the ids '{}' are {}", what,
                  t.name(), t.shape().str(), in.ids.name(), bt.str());
    ADAPT_REQUIRE(t.dtype() == DType::I32 || (!i32_only && t.dtype() == DType::I64), ShapeError,
                  "llama_train_step: {} '{}' have dtype {}; {} was expected", what, t.name(), dtype_name(t.dtype()),
                  i32_only ? "i32" : "i32 or i64");
    ADAPT_REQUIRE(t.is_contiguous() && t.device().host_accessible(), ShapeError,
                  "llama_train_step: {} '{}' must be contiguous host memory", what, t.name());
  };
  ADAPT_REQUIRE(in.targets.defined(), ShapeError, "llama_train_step: no targets given (one per token, -100 = no loss)");
  check_int(in.targets, "targets", false);
  if (in.positions.defined()) check_int(in.positions, "positions", false);
  if (in.segment_ids.defined()) check_int(in.segment_ids, "segment ids", true);
  for (std::int64_t i = 0; i < in.targets.numel(); ++i) {  // before any work, not after the forward
    const std::int64_t y =
        in.targets.dtype() == DType::I32 ? in.targets.data<std::int32_t>()[i] : in.targets.data<std::int64_t>()[i];
    ADAPT_REQUIRE(y == kIgnoreIndex || (y >= 0 && y < c.vocab_size), ShapeError,
                  "llama_train_step: target {} at flat position {} of '{}' is outside the vocabulary [0, {}) and is "
                  "not the ignore index {}; the data was tokenized for another model",
                  y, i, in.targets.name(), c.vocab_size, kIgnoreIndex);
  }
  if (opts.logits) {
    ADAPT_REQUIRE(opts.logits->shape() == (Shape{bt[0], bt[1], c.vocab_size}), ShapeError,
                  "llama_train_step: logits output '{}' has shape {} but (B, T, V) = ({}, {}, {}) was expected",
                  opts.logits->name(), opts.logits->shape().str(), bt[0], bt[1], c.vocab_size);
  }
  if (opts.row_loss) {
    ADAPT_REQUIRE(!model.tp.active(), ConfigError,
                  "llama_train_step: per-position losses (row_loss) are not formed under tensor parallelism");
    ADAPT_REQUIRE(
        opts.row_loss->shape() == (Shape{bt[0], bt[1]}) && opts.row_loss->dtype() == DType::F32 &&
            opts.row_loss->is_contiguous(),
        ShapeError, "llama_train_step: row_loss '{}' is {} {} but contiguous f32 (B, T) = ({}, {}) was expected",
        opts.row_loss->name(), dtype_name(opts.row_loss->dtype()), opts.row_loss->shape().str(), bt[0], bt[1]);
  }
  check_d_embedded(in, c, opts.d_embedded);
}

}  // namespace

TrainResult llama_train_step(const LlamaModel& model, const TrainInputs& inputs, AdapterHook* hook,
                             const TrainOptions& opts, TrainWorkspace* workspace) {
  check_inputs(model, inputs, opts);
  TrainWorkspace local(model_allocator(model));
  TrainWorkspace& ws = workspace ? *workspace : local;
  TrainPass pass(model, inputs, hook, opts, ws.saved, ws.scratch);
  pass.forward();
  if (opts.backward) pass.backward();
  return pass.result();
}

void TrainPass::check_backward_inputs() const {
  check_stage_tensor(m_, in_, opts_.stage_output_grad, true, "stage_output_grad");
  check_d_embedded(in_, c_, opts_.d_embedded);
}

ops::Workspace& TrainWorkspace::in_flight(std::size_t slot) {
  while (in_flight_.size() <= slot) in_flight_.push_back(std::make_unique<ops::Workspace>(*alloc_));
  return *in_flight_[slot];
}

SplitTrainStep::SplitTrainStep(const LlamaModel& model, const TrainInputs& inputs, AdapterHook* hook,
                               const TrainOptions& opts, ops::Workspace& saved, ops::Workspace& scratch) {
  ADAPT_REQUIRE(!model.stage.last() && opts.backward && opts.stage_output && !opts.stage_output_grad &&
                    !opts.d_embedded && !opts.logits,
                UnsupportedError,
                "SplitTrainStep: for a pipeline stage that is not the last (this is stage {} of {}), with backward, "
                "stage_output and neither stage_output_grad, d_embedded nor logits in the options",
                model.stage.rank, model.stage.size);
  check_inputs(model, inputs, opts, /*split=*/true);
  pass_ = std::make_unique<TrainPass>(model, inputs, hook, opts, saved, scratch);
  pass_->forward();
}

SplitTrainStep::~SplitTrainStep() = default;

TrainResult SplitTrainStep::backward(const Tensor& stage_output_grad, Tensor* d_embedded) {
  ADAPT_CHECK(!done_, "SplitTrainStep::backward called twice");
  done_ = true;
  TrainOptions& o = pass_->opts();
  o.stage_output_grad = &stage_output_grad;
  o.d_embedded = d_embedded;
  o.stage_input = nullptr;  // read by the forward only: the caller may free or reuse both
  o.stage_output = nullptr;
  pass_->check_backward_inputs();
  pass_->backward();
  return pass_->result();
}

}  // namespace adapt::model
