// Communication per training step, collective by collective as adapt_train issues them
// (train/trainer.cpp, model/llama_train.cpp, model/llama_pipeline.cpp, parallel/tp_ops.cpp,
// adapters/adapter_set_tp.cpp, train/dp_optimizer.cpp), counted the way comm::Communicator counts.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/llama_train.h"
#include "model/tensor_parallel.h"
#include "parallel/llama_sharding.h"
#include "parallel/zero_partition.h"
#include "plan/plan.h"

namespace adapt::plan {

namespace {

/// One rank's traffic on its three groups: `reduce` = all-reduce buffers, `gather` = all-gather
/// outputs and reduce-scatter inputs, `p2p_sent` / `p2p_received` = point-to-point messages.
struct GroupTraffic {
  double reduce = 0, gather = 0, p2p_sent = 0, p2p_received = 0;
  double counted() const { return reduce + gather + p2p_sent + p2p_received; }
  double wire(int p) const {
    if (p <= 1) return 0;
    const double f = static_cast<double>(p - 1) / p;
    return 2 * f * reduce + f * gather + p2p_sent;
  }
};

struct RankTraffic {
  GroupTraffic tp, pp, dp;
};

RankTraffic rank_traffic(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& lay,
                         const TrainJob& job, Backend backend, int tp_rank, int pp_rank) {
  RankTraffic r;
  const double e = Precision::of(backend, job.act_bytes).activation;
  const double N = static_cast<double>(job.micro_batch * job.seq);
  const double NC = N * static_cast<double>(m.hidden_size) * e;
  const parallel::Range stage = parallel::stage_layers(model::llama_dims(m), lay.pp, pp_rank, parallel::kTrainSplit);
  const double nL = static_cast<double>(stage.count);
  const bool first = pp_rank == 0, last = pp_rank == lay.pp - 1;
  const double M = static_cast<double>(job.grad_accum);
  const std::int64_t n_local = adapter_params_on_rank(m, a, lay.tp, tp_rank);

  if (lay.tp > 1) {
    // One llama_train_step with backward: the vocab-parallel embedding (first stage), o and down per
    // layer, the vocab-parallel cross-entropy (row max f32, Σexp and the target logit f64: 20 bytes a
    // row) and lm_head's input gradient (last stage), the recomputed forward, and the input gradients of
    // gate/up and q/k/v per layer (not q/k/v of the model's first layer, whose gradient nobody needs).
    const double emb = first ? NC : 0;
    const double fwd = emb + 2 * nL * NC;
    const double head = last ? 20 * N + NC : 0;
    const double bwd = (job.recompute ? 2 * nL * NC : 0) + nL * NC + (nL - (first ? 1 : 0)) * NC;
    const double train_call = fwd + head + bwd;
    // With pp a stage runs each micro-batch's forward once too (model::SplitTrainStep keeps it).
    r.tp.reduce += M * train_call;
    // Sharded saved inputs (on stages where they save memory, as adapt_train decides): each layer's input
    // all-gathered before its recomputation, tp parts of ⌈N / tp⌉ rows (in bf16 with bf16 saved inputs).
    const model::SavedInputs kept = model::saved_inputs_for(lay.tp, stage.count, job.shard_saved_inputs,
                                                            job.saved_input_dtype(static_cast<int>(e)));
    if (job.recompute && kept.shard) {
      const double rows = std::ceil(N / lay.tp);
      const double kept_e = kept.dtype == DType::BF16 ? 2 : e;
      r.tp.gather += M * nL * lay.tp * rows * static_cast<double>(m.hidden_size) * kept_e;
    }
    // AdapterSet::tp_reduce_gradients: the whole LoRA factor of every site (A of column-parallel, B of
    // row-parallel sites: r × C f32 each); DpOptimizer's norm: one f64.
    if (adapters::kind_has_lora(a.kind))
      r.tp.reduce += static_cast<double>(lora_sites(m, a) * a.lora.r * m.hidden_size) * 4;
    r.tp.reduce += 8;
  }
  if (lay.pp > 1) {
    // Per micro-batch a hidden state forward to the next stage and its gradient back, each counted by
    // the sender and the receiver; the loss sum (2 f64); the adapter gradients summed over the stages.
    const double links = (first ? 0 : 1) + (last ? 0 : 1);
    r.pp.p2p_sent += M * NC * links;
    r.pp.p2p_received += M * NC * links;
    r.pp.reduce += 16 + static_cast<double>(n_local) * 4;
  }
  if (lay.dp > 1) {
    r.dp.reduce += 24;  // loss, loss tokens, tokens (f64)
    if (job.zero1) {
      // ZeRO-1: reduce-scatter of the padded flat gradient unit by unit, the chunks' squared norms
      // (2 f64), the all-gather of the updated units.
      const double padded = static_cast<double>(adapter_zero1_layout(m, a, lay.tp, tp_rank, lay.dp).padded) * 4;
      r.dp.gather += 2 * padded;
      r.dp.reduce += 16;
    } else {
      r.dp.reduce += static_cast<double>(n_local) * 4;  // the gradient buckets
    }
  }
  return r;
}

}  // namespace

CommBytes train_comm_bytes(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& layout,
                           const TrainJob& job, Backend backend) {
  ADAPT_REQUIRE(job.seq > 0 && job.micro_batch > 0 && job.grad_accum > 0, ConfigError,
                "--seq ({}), --micro-batch ({}) and --grad-accum ({}) must be positive", job.seq, job.micro_batch,
                job.grad_accum);
  CommBytes out;
  double tp = 0, pp = 0, dp = 0;
  for (int p = 0; p < layout.pp; ++p) {
    for (int t = 0; t < layout.tp; ++t) {
      const RankTraffic r = rank_traffic(m, a, layout, job, backend, t, p);
      tp += r.tp.counted() * layout.dp;
      pp += r.pp.counted() * layout.dp;
      dp += r.dp.counted() * layout.dp;
      out.tp_wire += r.tp.wire(layout.tp) * layout.dp;
      out.pp_wire += r.pp.wire(layout.pp) * layout.dp;
      out.dp_wire += r.dp.wire(layout.dp) * layout.dp;
      out.tp_wire_rank = std::max(out.tp_wire_rank, r.tp.wire(layout.tp));
      out.pp_wire_rank = std::max(out.pp_wire_rank, r.pp.wire(layout.pp));
      out.dp_wire_rank = std::max(out.dp_wire_rank, r.dp.wire(layout.dp));
    }
  }
  out.tp_counted = static_cast<std::int64_t>(tp);
  out.pp_counted = static_cast<std::int64_t>(pp);
  out.dp_counted = static_cast<std::int64_t>(dp);
  return out;
}

}  // namespace adapt::plan
