// TrainConfig: a whole adapt_train job as written in train.toml — the base model, the adapter, the
// data, the optimizer and schedule, the loop, checkpoints and the run folder. Header-only plain
// structs: config/ fills them (config/train_config_schema.cpp), train/ runs them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "adapters/adapter_config.h"
#include "dtype/dtype.h"
#include "model/attention_options.h"
#include "train/data_config.h"

namespace adapt::train {

struct TrainModelConfig {
  std::filesystem::path path;                      // HF model folder (frozen base)
  std::optional<std::filesystem::path> tokenizer;  // default: the model folder's
};

struct OptimConfig {
  double lr = 2e-4;           // peak learning rate
  double weight_decay = 0.0;  // decoupled (AdamW); not applied to biases and norm weights
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  std::string schedule = "cosine";  // constant | linear | cosine, after a linear warmup
  std::int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;   // decay ends at lr * min_lr_ratio
  double max_grad_norm = 1.0;  // global-norm clipping; 0 turns it off
  /// Keep the fp32 master weights and moments in host RAM (pinned when training on GPUs), updated by a
  /// multithreaded CPU AdamW (optim::OffloadAdamW); the updates are the same as without.
  bool offload = false;
  /// With offload: the CPU AdamW of a step runs while the next step's forward computes (each layer waits
  /// for its own updated weights), and a GPU's gradients come to the host layer by layer during the
  /// backward; the same updates bit for bit as without. false: the update between the steps (for comparison).
  bool overlap = true;
};

struct LoopConfig {
  std::int64_t steps = 100;      // optimizer steps
  std::int64_t micro_batch = 4;  // sequences of one micro-step, all dp replicas together (each runs micro_batch / dp)
  std::int64_t grad_accum = 1;   // micro-batches per optimizer step
  bool recompute = false;        // activation recomputation per layer (less memory, ~1 more forward)
  /// With recompute and parallel.tp > 1: each tp rank keeps 1/tp of every layer's input and gathers it
  /// back before recomputing the layer (same results; one all-gather per layer in the backward), on the
  /// stages where that saves memory (model::saved_inputs_for).
  bool shard_saved_inputs = true;
  /// With recompute: "f32" (the same bits) or "bf16" (half the memory of the kept inputs; gradients at
  /// the inputs rounded to bf16), model::TrainOptions::saved_input_dtype.
  std::string saved_inputs_dtype = "f32";
  std::int64_t eval_every = 50;   // steps between evaluations (0: only at the end; step 0 evaluates the base model)
  std::int64_t eval_batches = 8;  // micro-batches of eval data per evaluation (at most the eval set)
  std::int64_t log_every = 1;     // steps between progress lines
  /// Stop this invocation after this many steps (writing a checkpoint); the next run of the same job
  /// resumes. For time-limited allocations and tests. Unset: run to `steps`.
  std::optional<std::int64_t> stop_after;
};

struct CheckpointConfig {
  std::optional<std::filesystem::path> dir;  // default: <run.dir>/checkpoints
  std::int64_t every = 50;                   // steps between checkpoints (0: only at the end and on signals)
  std::int64_t keep_last = 3;                // checkpoints kept (0: all)
};

/// The parallel layout: tp and pp from the job, dp = world size / (tp · pp) from the launcher.
struct ParallelConfig {
  std::int64_t tp = 1;  // tensor-parallel ranks (must divide the attention and KV heads)
  std::int64_t pp = 1;  // pipeline stages (at most the layers)
  /// ZeRO stage 1: each dp rank keeps the AdamW moments and master weights of one shard of the flat
  /// adapter vector (gradients reduce-scattered, updated shards all-gathered). Same result as false.
  bool zero1 = true;
};

struct RunConfig {
  std::filesystem::path dir;  // metrics.jsonl, config.toml, the exported adapter
  /// After training, also write base + LoRA merged as an HF model folder in <dir>/merged (LoRA only).
  bool merge = false;
};

/// Where the run computes. With a CUDA device each rank holds its part of the model (the whole model,
/// or its tp shard of its pp stage) on its GPU; the optimizer works on host mirrors of the adapter
/// (AdapterSet::host_parameters).
struct TrainRuntimeConfig {
  /// "cpu", "cuda" (the GPU of the rank's local rank: comm::device_for_rank) or "cuda:N" (visible
  /// device N). adapt_train resolves it to a device index before anything is read or written.
  std::string device = "cpu";
  DType weights_dtype = DType::BF16;  // F32 or BF16: the weight matrices of the device copy (norms stay f32)
  /// Of the decoder layers a rank holds, how many keep their weights on the GPU; the rest stay in pinned
  /// host RAM and are copied to the GPU layer by layer (model/weight_stream.h). −1: all of them.
  std::int64_t weights_device_layers = -1;
  /// What attention computes in on a GPU (model/attention_options.h). Auto: bf16 on tensor cores with
  /// bf16 weights and head_dim 64 or 128.
  model::AttentionDtype attention_dtype = model::AttentionDtype::Auto;
  /// With device = "cpu": how products by the base weights compute (ops::set_cpu_matmul_dtype). F32: the
  /// reference, bf16 weights widened exactly. BF16: the weights kept in bf16 (rounded at load where the
  /// checkpoint is f32) and the activations rounded to bf16 for each product, f32 sums: the GPU path's
  /// bf16 GEMMs, on the CPU's bf16 dot-product instructions (AVX512_BF16).
  DType cpu_matmul_dtype = DType::F32;
  /// Peak TFLOP/s of one rank's device, the denominator of the MFU logged per step. 0: a known GPU's
  /// dense bf16 peak with bf16 weights (plan::gpu_preset_of_device), else no MFU (tokens/s and model
  /// TFLOP/s only).
  double peak_tflops = 0;
};

struct TrainConfig {
  TrainModelConfig model;
  adapters::AdapterConfig adapter;
  DataConfig data;
  OptimConfig optim;
  LoopConfig train;
  CheckpointConfig checkpoint;
  ParallelConfig parallel;
  RunConfig run;
  TrainRuntimeConfig runtime;
};

}  // namespace adapt::train
