// Memory per rank: the base weights a rank loads (parallel::llama_rank_shards), the adapter and its
// optimizer state (adapters' shapes, DpOptimizer's buffers), and the training pass's workspaces,
// replayed take by take from model/llama_train.cpp (64-byte aligned, as ops::Workspace hands them out).
#include <algorithm>
#include <set>

#include "adapters/adapter_config_check.h"
#include "core/error.h"
#include "model/attention_options.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "model/tensor_parallel.h"
#include "parallel/llama_sharding.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/zero_partition.h"
#include "plan/plan.h"

namespace adapt::plan {

namespace {

constexpr std::uint64_t kAlign = 64;  // ops::Workspace's alignment
std::uint64_t aligned(std::uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

/// Which adapter pieces sit on layer l.
struct LayerAdapters {
  bool attn_block = false, mlp_block = false;
  bool lin[7] = {};  // q k v o gate up down
  bool any_qkv() const { return lin[0] || lin[1] || lin[2]; }
};

std::vector<LayerAdapters> per_layer(const model::LlamaConfig& m, const adapters::AdapterConfig& a) {
  std::vector<LayerAdapters> out(static_cast<std::size_t>(m.n_layers));
  const std::vector<std::string> names = adapters::lora_target_names();
  for (const int l : adapters::adapter_layers(a, m)) {
    LayerAdapters& la = out[static_cast<std::size_t>(l)];
    if (adapters::kind_has_bottleneck(a.kind)) {
      la.mlp_block = true;
      la.attn_block = a.bottleneck.placement == adapters::BnPlacement::Houlsby;
    }
    if (adapters::kind_has_lora(a.kind))
      for (const std::string& t : a.lora.targets)
        la.lin[std::find(names.begin(), names.end(), t) - names.begin()] = true;
  }
  return out;
}

/// The workspace replay of one llama_train_step call.
class PassModel {
 public:
  PassModel(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& lay, int tp_rank, int pp_rank,
            std::int64_t batch, std::int64_t seq, int act_bytes, parallel::StageSplit split = parallel::kTrainSplit)
      : m_(m), a_(a), layers_(per_layer(m, a)) {
    const model::TpLocalDims local = model::tp_local_dims(m, {.comm = nullptr, .rank = tp_rank, .size = lay.tp});
    B_ = batch, T_ = seq, N_ = B_ * T_, C_ = m.hidden_size, H_ = local.heads, Hkv_ = local.kv_heads;
    D_ = m.head_dim, F_ = local.ffn, V_ = local.vocab.count;
    tp_ = lay.tp > 1;
    tp_size_ = lay.tp;
    const parallel::Range r = parallel::stage_layers(model::llama_dims(m), lay.pp, pp_rank, split);
    l0_ = r.begin, l1_ = r.end();
    first_ = pp_rank == 0, last_ = pp_rank == lay.pp - 1;
    act_ = static_cast<std::uint64_t>(act_bytes);
  }

  std::int64_t stage_layers() const { return l1_ - l0_; }

  // An activation tensor of n elements; statistics (RMSNorm rstd, log-sum-exp) and logits stay f32.
  std::uint64_t t(std::int64_t n) const { return aligned(static_cast<std::uint64_t>(n) * act_); }
  std::uint64_t f32(std::int64_t n) const { return aligned(static_cast<std::uint64_t>(n) * 4); }

  std::uint64_t acts(const LayerAdapters& la) const {
    return f32(N_) + 2 * t(N_ * H_ * D_) + 2 * t(N_ * Hkv_ * D_) + f32(N_ * H_) + (la.attn_block ? t(N_ * C_) : 0) +
           t(N_ * C_) + f32(N_) + 2 * t(N_ * F_) + (la.mlp_block ? t(N_ * C_) : 0);
  }
  // The most of layer_forward's temporaries alive at once: the normed input, with k and v, then with the
  // SwiGLU output (each released when spent; with tp the row-parallel outputs go where the sub-block's
  // output does).
  std::uint64_t forward_temps() const { return t(N_ * C_) + std::max(2 * t(N_ * Hkv_ * D_), t(N_ * F_)); }
  // layer_backward's: the normed input's gradient throughout; in the MLP block a block adapter's dout
  // and df, down's input again for its hook and the SwiGLU gradient, then the normed input again for
  // gate/up hooks; in the attention block dq, dk and dv throughout, d_attn with a block adapter's
  // shares and then with the heads-major dk and dv, then the normed input again for q/k/v hooks.
  std::uint64_t backward_temps(const LayerAdapters& la) const {
    const std::uint64_t c = t(N_ * C_), f = t(N_ * F_), hd = t(N_ * H_ * D_), kv = t(N_ * Hkv_ * D_);
    const std::uint64_t mlp =
        std::max((la.mlp_block ? 2 * c : 0) + (la.lin[6] ? f : 0) + f, la.lin[4] || la.lin[5] ? c : 0);
    const std::uint64_t attn =
        hd + 2 * kv + std::max(hd + std::max(la.attn_block ? 2 * c : 0, 2 * kv), la.any_qkv() ? c : 0);
    return c + std::max(mlp, attn);
  }

  // shard_inputs, bf16_inputs: model::TrainOptions::shard_saved_inputs (with recompute and tp > 1) and
  // saved_input_dtype = bf16 (with recompute).
  ActivationBytes run(bool recompute, bool backward, std::int64_t chunk_rows, bool shard_inputs = false,
                      bool bf16_inputs = false) const {
    const bool keep = backward && !recompute;
    const bool split = shard_inputs && tp_;
    const bool shard = backward && recompute && (split || bf16_inputs);  // inputs kept apart
    const bool gather = shard && split;
    // A rank's rows of each layer's input (all of them without tp), and the rows of the two hidden states.
    const std::int64_t shard_rows = gather ? (N_ + tp_size_ - 1) / tp_size_ : N_;
    const std::int64_t whole_rows = gather ? tp_size_ * shard_rows : N_;
    const std::uint64_t kept_bytes = bf16_inputs ? 2 : act_;
    ActivationBytes out;
    out.saved = 2 * f32(B_ * T_ * (D_ / 2));  // RoPE tables per token (adapt_train passes positions)
    // The hidden states entering each layer and the last one's output, where a recomputed layer writes
    // its output again; forward only, two in turn. With inputs kept apart (sharded, in bf16) those stay
    // instead, beside two hidden states (padded to tp × shard rows), which the backward gathers or widens
    // into and recomputes into.
    const std::int64_t n_hidden = backward && !shard ? l1_ - l0_ + 1 : std::min<std::int64_t>(l1_ - l0_ + 1, 2);
    out.saved += static_cast<std::uint64_t>(n_hidden) * t(whole_rows * C_);
    if (shard)
      out.saved +=
          static_cast<std::uint64_t>(l1_ - l0_) * aligned(static_cast<std::uint64_t>(shard_rows * C_) * kept_bytes);
    // bf16 shards are gathered into scratch before they are widened (alone there: released at once).
    std::uint64_t scratch = gather && bf16_inputs ? aligned(static_cast<std::uint64_t>(whole_rows * C_) * 2) : 0;
    for (std::int64_t l = l0_; l < l1_; ++l) {
      const LayerAdapters& la = layers_[static_cast<std::size_t>(l)];
      if (keep) out.saved += acts(la);
      const std::uint64_t layer_acts = keep ? 0 : acts(la);  // in scratch without kept activations
      scratch = std::max(scratch, layer_acts + forward_temps());
      if (backward) scratch = std::max(scratch, layer_acts + backward_temps(la));
    }
    if (backward) out.saved += t(N_ * C_);  // the running gradient of the residual stream
    if (last_) {
      const std::int64_t chunk = chunk_rows > 0 ? std::min(chunk_rows, N_) : N_;
      scratch = std::max(scratch, f32(N_) + t(N_ * C_) + (backward ? t(N_ * C_) : 0) + f32(chunk * V_));
    }
    out.scratch = scratch;
    out.adapter = adapter_workspace(backward);
    return out;
  }

  // The bf16 copies a GPU pass makes beside its workspaces when the activations are f32 and the weights
  // bf16 (model/linear.h's gemm_input, model/attention_compute.h), from the caching allocator and freed
  // after use: the most alive at once. Forward: one at a time, the cast of the normed input (for q, k, v,
  // released before attention; for gate and up, released before down's input is cast), attention in
  // bf16 (head_dim 64 or 128: runtime.attention_dtype = "auto"), which copies q, k, v and computes its
  // output in bf16, o_proj's input and down's. Backward: each input gradient casts dy, and attention's
  // backward copies dout, q, k, v, out and computes dq, dk, dv in bf16; the last stage casts each chunk
  // of logit gradients for lm_head's input gradient.
  std::uint64_t operand_copies(bool backward, std::int64_t chunk_rows) const {
    const auto b = [](std::int64_t n) { return static_cast<std::uint64_t>(n) * 2; };
    const bool bf16_attention = model::attention_tensor_cores_take(D_);
    const std::int64_t qd = N_ * H_ * D_, kvd = N_ * Hkv_ * D_;
    // The normed input's, o_proj's or down's input (forward), a dy of those widths (backward).
    std::uint64_t most = b(std::max({N_ * C_, N_ * F_, qd}));
    if (bf16_attention) most = std::max(most, b((backward ? 4 : 2) * (qd + kvd)));  // q k v out (dout dq dk dv)
    if (backward && last_) most = std::max(most, b((chunk_rows > 0 ? std::min(chunk_rows, N_) : N_) * V_));
    return most;
  }

  // The CPU attention's buffers, kept by the calling thread between calls so that warm calls allocate
  // nothing (ops/cpu/attention_backward_cpu.cpp, attention_cpu.cpp): the backward's q and dout in group
  // order with two statistics per row, 4·(2·N·H·D + 2·N·H), and the forward's K and V packed into the
  // GEMM kernel's tiles, about 4·2·N·Hkv·D (where the CPU has the packed AVX-512 kernels; counted always).
  std::uint64_t cpu_attention_buffers() const {
    return 4 * static_cast<std::uint64_t>(2 * N_ * H_ * D_ + 2 * N_ * H_ + 2 * N_ * Hkv_ * D_);
  }

  // adapters::AdapterSet's own workspace: reset per site call; the largest call.
  std::uint64_t adapter_workspace(bool backward) const {
    std::uint64_t most = 0;
    if (adapters::kind_has_lora(a_.kind)) {
      const bool drop = a_.lora.dropout > 0;
      const std::int64_t r = a_.lora.r;
      // in-features of A on this rank: C for q/k/v/gate/up, H·D/tp for o, F/tp for down.
      const std::int64_t ins[7] = {C_, C_, C_, H_ * D_, C_, C_, F_};
      for (std::size_t s = 0; s < 7; ++s) {
        bool used = false;
        for (std::int64_t l = l0_; l < l1_; ++l) used = used || layers_[static_cast<std::size_t>(l)].lin[s];
        if (!used) continue;
        const std::uint64_t x = drop ? f32(N_ * ins[s]) : 0;
        most = std::max(most, x + f32(N_ * r));
        if (backward) most = std::max(most, 2 * x + 2 * f32(N_ * r));
      }
    }
    if (adapters::kind_has_bottleneck(a_.kind)) {
      const std::int64_t w = adapters::bottleneck_size(a_.bottleneck, C_);
      const bool pf = a_.bottleneck.placement == adapters::BnPlacement::Pfeiffer, ln = a_.bottleneck.ln_before;
      const std::uint64_t z = pf ? f32(N_ * C_) : 0, norm = ln ? f32(N_ * C_) + f32(2 * N_) : 0;
      // The up projection's bias times a scaling other than 1 (on the CPU; a GPU kernel scales it itself).
      const std::uint64_t scaled_bias = a_.bottleneck.scaling != 1.0 ? f32(C_) : 0;
      most = std::max(most, z + norm + f32(N_ * w) + scaled_bias);
      if (backward) most = std::max(most, z + f32(N_ * C_) + norm + 3 * f32(N_ * w) + (ln ? f32(N_ * C_) : 0));
    }
    return most;
  }

 private:
  const model::LlamaConfig& m_;
  const adapters::AdapterConfig& a_;
  std::vector<LayerAdapters> layers_;
  std::int64_t B_ = 0, T_ = 0, N_ = 0, C_ = 0, H_ = 0, Hkv_ = 0, D_ = 0, F_ = 0, V_ = 0;
  std::int64_t l0_ = 0, l1_ = 0;
  bool tp_ = false, first_ = true, last_ = true;
  std::int64_t tp_size_ = 1;
  std::uint64_t act_ = 4;
};

// Training splits the layers by work, generation evenly (parallel::StageSplit).
std::int64_t base_params_on_rank(const model::LlamaConfig& m, const Layout& lay, int tp_rank, int pp_rank,
                                 parallel::StageSplit split) {
  const comm::ProcessGrid grid(lay.tp, lay.pp, 1);
  std::int64_t n = 0;
  for (const parallel::TensorShard& s :
       parallel::llama_rank_shards(model::llama_dims(m), grid, pp_rank * lay.tp + tp_rank, split))
    n += s.slice.numel();
  return n;
}

/// The training memory of one rank.
TrainMemory rank_train_memory(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& lay,
                              const TrainJob& job, Backend backend, int tp_rank, int pp_rank) {
  Precision prec = Precision::of(backend, job.act_bytes);
  if (job.weight_bytes > 0) prec.weight = job.weight_bytes;
  TrainMemory r;
  r.layout = lay;
  r.tp_rank = tp_rank;
  r.pp_rank = pp_rank;
  r.base_params = base_params_on_rank(m, lay, tp_rank, pp_rank, parallel::kTrainSplit);
  r.weights = static_cast<std::uint64_t>(r.base_params) * static_cast<std::uint64_t>(prec.weight);
  if (backend == Backend::Gpu) {  // layers whose weights stay in host RAM: two slots on the device instead
    r.streamed = streamed_weights(m, lay, pp_rank, parallel::kTrainSplit, job.weights_device_layers, prec.weight);
    r.weights = r.weights - r.streamed.host + r.streamed.slots;
  }
  const std::int64_t n = adapter_params_on_rank(m, a, lay.tp, tp_rank);
  r.adapter_params = n;
  const auto n4 = static_cast<std::uint64_t>(n) * 4;
  const bool sharded = lay.dp > 1 && job.zero1;
  const parallel::Zero1Layout z =
      sharded ? adapter_zero1_layout(m, a, lay.tp, tp_rank, lay.dp) : parallel::Zero1Layout{};
  const auto c = static_cast<std::uint64_t>(z.shard), padded = static_cast<std::uint64_t>(z.padded);
  // DpOptimizer's ZeRO-1 buffers: the padded flat vector, and without offload the chunks' gradient and
  // master weights (offloaded, those are the state's own).
  const std::uint64_t zero1_buffers = sharded ? ((job.offload ? 0 : 2 * c) + padded) * 4 : 0;
  r.gradients = n4;
  const std::uint64_t part = sharded ? c : static_cast<std::uint64_t>(n);  // the elements this rank's optimizer updates
  if (backend == Backend::Cpu) {
    // AdamW updates the adapter tensors themselves (they are the f32 master); ZeRO-1 keeps a master
    // shard, its gradient and its moments, and a padded flat vector for the collectives. Offloaded
    // (optim::OffloadAdamW): master, m, v and a gradient copy of the rank's part, in (host) memory.
    r.adapter = n4;
    r.optimizer = job.offload ? 4 * part * 4 : 2 * part * 4;
    r.dp_buffers = sharded ? zero1_buffers : (lay.dp > 1 ? n4 : 0);
    if (lay.pp > 1) r.dp_buffers += n4;  // the flat vector the stages' gradients are summed in
  } else {
    // The CUDA backend as adapt_train runs it (train/trainer.cpp, train/dp_optimizer.cpp): the adapter in
    // f32 on the GPU, its own master weights, with f32 gradients, and host mirrors of both
    // (AdapterSet::host_parameters) for the optimizer and checkpoints.
    r.adapter = n4;
    r.host_mirrors = 2 * n4;
    if (job.offload) {
      // optim::OffloadAdamW: f32 master + m + v and a gradient copy of the rank's part in pinned host
      // RAM; with optim.overlap (the default) a pinned staging copy of the gradients streamed per layer.
      r.host_optimizer = 3 * part * 4;
      r.host_staging = part * 4 + n4;
    } else {
      // optim::DeviceAdamW: m and v beside the adapter, or under ZeRO-1 of the rank's chunks only.
      r.optimizer = 2 * part * 4;
    }
    if (job.offload) {
      // DpOptimizer's flat vectors (dp > 1) and the stages' gradient sum (pp > 1) in host memory.
      r.host_staging += sharded ? zero1_buffers : (lay.dp > 1 ? n4 : 0);
      if (lay.pp > 1) r.host_staging += n4;
    } else {
      // The state on the GPU: one flat device vector for the pp sum and the dp average of the gradients
      // (train::sum_gradients; freed in between, so the caching allocator reuses its block); under
      // ZeRO-1 the padded flat vector and the chunks' master weights and gradients stay allocated.
      r.dp_buffers = (lay.dp > 1 && !sharded) || lay.pp > 1 ? n4 : 0;
      if (sharded) r.dp_buffers += zero1_buffers;
    }
  }
  // Checkpoints (rank 0 writes whole tensors): checkpoint::checkpoint_save builds the HDF5 file in memory
  // (adapter, m and v of the whole adapter, f32); with ZeRO-1 DpOptimizer::state first gathers both
  // moments whole (the padded flat vectors and the per-tensor copies).
  const auto whole4 = static_cast<std::uint64_t>(adapter_params(m, a)) * 4;
  if (tp_rank == 0 && pp_rank == 0)
    r.checkpoint = 3 * whole4 + (sharded ? 2 * (c * static_cast<std::uint64_t>(lay.dp) * 4 + whole4) : 0);
  r.host_checkpoint = backend == Backend::Gpu;
  r.libraries = backend == Backend::Gpu ? kGemmWorkspaceBytes : 0;
  const bool casts = backend == Backend::Gpu && prec.weight == 2 && prec.activation == 4;
  const bool first = pp_rank == 0, last = pp_rank == lay.pp - 1;
  // adapt_train: logits in 256-row chunks (model::TrainOptions' default), pipeline stages included.
  const std::int64_t chunk = model::TrainOptions{}.logits_chunk_rows;
  // 1F1B: a stage that is not the last keeps what the backward reads for each micro-batch in flight, up
  // to pp − stage of them, each in a `saved` workspace of its own (model::SplitTrainStep).
  const std::int64_t in_flight =
      parallel::max_in_flight(parallel::schedule_1f1b(lay.pp, pp_rank, static_cast<int>(job.grad_accum)));
  r.micro_in_flight = in_flight;
  const PassModel pm(m, a, lay, tp_rank, pp_rank, job.micro_batch, job.seq, prec.activation);
  // adapt_train's setting: the layers' inputs sharded or in bf16 on the stages where that saves memory.
  const model::SavedInputs kept = model::saved_inputs_for(lay.tp, pm.stage_layers(), job.shard_saved_inputs,
                                                          job.saved_input_dtype(prec.activation));
  auto pass = [&](bool recompute) {
    ActivationBytes b = pm.run(recompute, true, chunk, kept.shard, kept.dtype == DType::BF16);
    b.saved *= static_cast<std::uint64_t>(in_flight);
    return b;
  };
  r.activations = pass(job.recompute);
  r.activations_other = pass(!job.recompute);
  if (casts) r.operand_copies = pm.operand_copies(/*backward=*/true, chunk);
  if (backend == Backend::Cpu) r.attention_buffers = pm.cpu_attention_buffers();
  if (lay.pp > 1) {
    // Hidden states (B, T, C) outside the workspaces: the input received (copied into the workspace by
    // its forward) and its gradient, the output and the gradient from the next stage.
    const std::int64_t n_hidden = (first ? 0 : 2) + (last ? 0 : 2);
    r.pipeline_buffers = static_cast<std::uint64_t>(n_hidden * job.micro_batch * job.seq * m.hidden_size) *
                         static_cast<std::uint64_t>(prec.activation);
  }
  return r;
}

}  // namespace

Precision Precision::of(Backend b) {
  if (b == Backend::Cpu) return {.weight = 4, .activation = 4, .kv = 4};
  // The CUDA backend as built: bf16 base weights (runtime.weights_dtype's default), f32 activations and
  // workspaces (model/llama_device.h), a bf16 KV cache (adapt_gen's runtime.kv_cache_dtype = "auto" with
  // bf16 weights). --act-dtype bf16 plans a bf16-activation pass.
  return {.weight = 2, .activation = 4, .kv = 2};
}

Precision Precision::of(Backend b, int act_bytes) {
  Precision p = of(b);
  if (act_bytes > 0) p.activation = act_bytes;
  return p;
}

std::string Layout::str() const { return fmt::format("tp{} × pp{} × dp{}", tp, pp, dp); }

StreamedWeights streamed_weights(const model::LlamaConfig& m, const Layout& lay, int pp_rank,
                                 parallel::StageSplit split, std::int64_t device_layers, int weight_bytes) {
  StreamedWeights sw;
  if (device_layers < 0) return sw;
  const std::int64_t held = parallel::stage_layers(model::llama_dims(m), lay.pp, pp_rank, split).count;
  sw.layers = std::max<std::int64_t>(held - device_layers, 0);
  // One layer on one tp rank: its share of the projections (heads and the MLP's columns split over tp)
  // in the weights' type, and the two norms in f32 (model::llama_model_to_device).
  const std::int64_t C = m.hidden_size, D = m.head_dim, tp = lay.tp;
  const std::int64_t matrices =
      C * (2 * (m.n_heads / tp) * D + 2 * (m.n_kv_heads / tp) * D) + 3 * C * ((m.intermediate_size + tp - 1) / tp);
  const auto layer = static_cast<std::uint64_t>(matrices * weight_bytes + 2 * C * 4);
  sw.host = layer * static_cast<std::uint64_t>(sw.layers);
  sw.slots = layer * static_cast<std::uint64_t>(std::min<std::int64_t>(sw.layers, 2));
  return sw;
}

std::uint64_t TrainMemory::device_total() const {
  return weights + adapter + gradients + optimizer + dp_buffers + pipeline_buffers + activations.total() + libraries +
         operand_copies + attention_buffers + (host_checkpoint ? 0 : checkpoint);
}

ActivationBytes train_activation_bytes(const model::LlamaConfig& m, const adapters::AdapterConfig& a,
                                       const Layout& layout, int tp_rank, int pp_rank, std::int64_t batch,
                                       std::int64_t seq, bool recompute, bool backward, std::int64_t chunk_rows,
                                       Backend backend, bool shard_saved_inputs, bool bf16_saved_inputs) {
  return PassModel(m, a, layout, tp_rank, pp_rank, batch, seq, Precision::of(backend).activation)
      .run(recompute, backward, chunk_rows, shard_saved_inputs, bf16_saved_inputs);
}

TrainMemory train_memory(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& layout,
                         const TrainJob& job, Backend backend) {
  ADAPT_REQUIRE(job.seq > 0 && job.micro_batch > 0 && job.grad_accum > 0, ConfigError,
                "--seq ({}), --micro-batch ({}) and --grad-accum ({}) must be positive", job.seq, job.micro_batch,
                job.grad_accum);
  TrainMemory best;
  bool have = false;
  // tp ranks differ only where F or V do not split evenly; stages differ in layers, embedding and head.
  for (int p = 0; p < layout.pp; ++p) {
    for (int t = 0; t < layout.tp; ++t) {
      TrainMemory r = rank_train_memory(m, a, layout, job, backend, t, p);
      if (!have || r.device_total() > best.device_total()) best = r, have = true;
      if (m.intermediate_size % layout.tp == 0 && m.vocab_size % layout.tp == 0) break;
    }
  }
  return best;
}

std::vector<TrainMemory> train_memory_ranks(const model::LlamaConfig& m, const adapters::AdapterConfig& a,
                                            const Layout& layout, const TrainJob& job, Backend backend) {
  ADAPT_REQUIRE(job.seq > 0 && job.micro_batch > 0 && job.grad_accum > 0, ConfigError,
                "--seq ({}), --micro-batch ({}) and --grad-accum ({}) must be positive", job.seq, job.micro_batch,
                job.grad_accum);
  std::vector<TrainMemory> out;
  for (int p = 0; p < layout.pp; ++p)
    for (int t = 0; t < layout.tp; ++t) out.push_back(rank_train_memory(m, a, layout, job, backend, t, p));
  return out;
}

GenMemory gen_memory(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& layout,
                     const GenJob& job, Backend backend) {
  ADAPT_REQUIRE(job.batch > 0 && job.context > 0, ConfigError,
                "--gen-batch ({}) and the context (--seq: {}) must be positive", job.batch, job.context);
  Precision prec = Precision::of(backend, job.act_bytes);
  if (job.kv_bytes > 0) prec.kv = job.kv_bytes;
  if (job.weight_bytes > 0) prec.weight = job.weight_bytes;
  GenMemory g;
  g.libraries = backend == Backend::Gpu ? kGemmWorkspaceBytes : 0;
  g.layout = layout;
  std::int64_t most = 0, all_stages = 0;
  for (int p = 0; p < layout.pp; ++p) {
    const std::int64_t n = base_params_on_rank(m, layout, 0, p, parallel::kGenSplit);
    most = std::max(most, n);
    all_stages += n;
  }
  g.weights = static_cast<std::uint64_t>(most) * static_cast<std::uint64_t>(prec.weight);
  if (backend == Backend::Gpu) {  // the stages hold the same number of layers (kGenSplit) give or take one
    g.streamed = streamed_weights(m, layout, 0, parallel::kGenSplit, job.weights_device_layers, prec.weight);
    g.weights = g.weights - g.streamed.host + g.streamed.slots;
  }
  // Keys and values of the stage's layers for the rank's KV heads (model::KvCache; with pp each
  // stage fills its own layers).
  const std::int64_t stage_layers =
      parallel::stage_layers(model::llama_dims(m), layout.pp, 0, parallel::kGenSplit).count;
  const auto kv_per_layer = static_cast<std::uint64_t>(2 * (m.n_kv_heads / layout.tp) * job.context * m.head_dim) *
                            static_cast<std::uint64_t>(prec.kv);  // one sequence
  g.kv_per_sequence = kv_per_layer * static_cast<std::uint64_t>(stage_layers);
  g.kv_cache = g.kv_per_sequence * static_cast<std::uint64_t>(job.batch);
  g.step_read = static_cast<std::uint64_t>(all_stages) * static_cast<std::uint64_t>(prec.weight) +
                kv_per_layer * static_cast<std::uint64_t>(m.n_layers * job.batch);
  g.adapter =
      static_cast<std::uint64_t>(adapter_params_on_rank(m, a, layout.tp, 0)) * (backend == Backend::Cpu ? 4 : 2);
  // Activations: llama_forward's workspace (f32) at its largest call, the largest prefill piece of one
  // sequence (adapt_gen prefills prefill_chunk tokens at a time) or a decode step of the whole batch
  // (rows at their own positions), on the busiest stage; the adapters' own workspace at that many rows
  // (dropout is off outside training); on the CPU the batch's last-position logits, which the sampler
  // reads (on a GPU they come back to pinned host memory).
  const std::int64_t prompt = job.prompt > 0 ? std::min(job.prompt, job.context) : job.context;
  const std::int64_t piece = job.prefill_chunk > 0 ? std::min(job.prefill_chunk, prompt) : prompt;
  const bool gpu = backend == Backend::Gpu;
  const bool blocks = adapters::kind_has_bottleneck(a.kind) && !adapters::adapter_layers(a, m).empty();
  const model::TensorParallel tp{.comm = nullptr, .rank = 0, .size = layout.tp};  // rank 0: the most vocab rows
  std::uint64_t forward = 0, adapter_ws = 0;
  adapters::AdapterConfig inference = a;
  inference.lora.dropout = 0;
  const Layout one{layout.tp, layout.pp, 1};
  for (const int p : {0, layout.pp - 1}) {
    const model::PipelineStage stage{.rank = p, .size = layout.pp, .split = parallel::kGenSplit};
    const model::ForwardCall prefill{.batch = 1, .tokens = piece, .block_adapters = blocks, .on_device = gpu};
    const model::ForwardCall decode{
        .batch = job.batch, .tokens = 1, .ragged = true, .block_adapters = blocks, .on_device = gpu};
    forward = std::max({forward, model::llama_forward_workspace_bytes(m, tp, stage, prefill),
                        model::llama_forward_workspace_bytes(m, tp, stage, decode)});
    const PassModel rows(m, inference, one, 0, p, 1, std::max(piece, job.batch), 4, parallel::kGenSplit);
    adapter_ws = std::max(adapter_ws, rows.adapter_workspace(/*backward=*/false));
  }
  g.activations = forward + adapter_ws + (gpu ? 0 : static_cast<std::uint64_t>(job.batch * m.vocab_size) * 4);
  // The CPU attention of the last prefill piece packs the keys and values of the whole prompt into its
  // GEMM kernel's tiles (ops/cpu/attention_cpu.cpp: up to 512 MiB, kept by the thread between calls).
  if (!gpu) {
    const auto packed = static_cast<std::uint64_t>(2 * (m.n_kv_heads / layout.tp) * prompt * m.head_dim) * 4;
    g.attention_buffers = std::min<std::uint64_t>(packed, std::uint64_t{512} << 20);
  }
  const PassModel pm(m, a, one, 0, 0, 1, piece, prec.activation);
  if (gpu && prec.weight == 2 && prec.activation == 4) g.operand_copies = pm.operand_copies(/*backward=*/false, 0);
  return g;
}

}  // namespace adapt::plan
