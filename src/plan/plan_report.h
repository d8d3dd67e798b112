// A whole plan: every layout of the GPUs (or the one asked for), its memory, communication and time
// for training and generation, the recommended layout and micro-batch, printed as tables (fmt) or JSON.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "plan/plan.h"

namespace adapt::plan {

struct PlanRequest {
  std::string model_name;  // the preset or the model folder
  model::LlamaConfig model;
  adapters::AdapterConfig adapter;
  TrainJob train;
  GenJob gen;
  int gpus = 1;  // ranks (GPUs, or processes on the CPU backend)
  Backend backend = Backend::Gpu;
  Cluster cluster;                    // GPU, links, network (Gpu backend)
  std::optional<double> host_mem_gb;  // per node, GiB
  double usable = 0.9;                // fraction of device memory a plan may fill
  std::optional<Layout> layout;       // only this layout (--tp / --pp given)
};

struct LayoutPlan {
  Layout layout;
  TrainMemory mem;          // at the job's micro-batch and recompute setting
  bool fits = false;        // mem.device_total() within the usable memory
  bool fits_other = false;  // with the other recompute setting
  bool host_fits = true;    // host memory per node within --host-mem (when given)
  CommBytes comm;
  StepTime time;  // Gpu backend only
  // The fastest setting that fits: micro-batch per replica (a power of two up to 64) and recompute, with
  // grad_accum raised to pp where it is less (the pipeline then holds pp micro-batches in flight).
  std::int64_t best_micro_batch = 0;
  bool best_recompute = false;
  std::int64_t best_grad_accum = 0;
  StepTime best_time;  // Gpu backend only
  // Generation at --gen-batch × --gen-context.
  GenMemory gen;
  bool gen_fits = false;
  std::int64_t gen_max_batch = 0;  // sequences of --gen-context that fit beside the weights
  DecodeTime decode;
};

struct PlanResult {
  PlanRequest req;
  std::vector<LayoutPlan> layouts;
  int train_pick = -1;  // index into layouts, -1 when nothing fits
  int gen_pick = -1;
  // When no layout of --gpus fits: the fewest GPUs of this kind (2 .. GPUs per node, then multiples of a
  // node, up to 1024) with a layout that fits at micro-batch 1 with recomputation / the generation job.
  int min_gpus_train = 0;
  int min_gpus_gen = 0;
  // When nothing fits on --gpus GPUs with every layer's weights on the GPU: the largest
  // --weights-device-layers (runtime.weights_device_layers) with which a layout would, -1 for none.
  std::int64_t stream_train_layers = -1;
  std::int64_t stream_gen_layers = -1;
  // GPU plans: the longest training sequence, a multiple of kSeqStep up to the model's context, that some
  // layout of the request holds at micro-batch 1 with recomputation (its index in `layouts`); 0 / -1 when
  // not even kSeqStep tokens fit.
  static constexpr std::int64_t kSeqStep = 1024;
  std::int64_t longest_train_seq = 0;
  int longest_train_seq_layout = -1;
  std::uint64_t usable_bytes() const;
};

PlanResult make_plan(const PlanRequest& req);
std::string plan_text(const PlanResult& plan);
std::string plan_json(const PlanResult& plan);

}  // namespace adapt::plan
