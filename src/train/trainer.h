// The adapter training loop on one process or a tp × pp × dp grid: load the frozen base model (the
// rank's slices) and the data, build the adapter, then for each optimizer step draw grad_accum
// micro-batches, run forward + backward (model::llama_train_step with the adapter as the hook, or
// model::llama_pipeline_train over the stages), clip, step AdamW, log, evaluate and write checkpoints;
// resume from the latest checkpoint exactly; export the adapter at the end.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/process_grid.h"
#include "core/stop_signal.h"
#include "model/llama_config.h"
#include "train/train_config.h"

namespace adapt::train {

/// A run that stopped early on SIGUSR1/SIGTERM after writing a checkpoint exits with kExitRequeue
/// (core/stop_signal.h); the next start resumes from that checkpoint.
using adapt::kExitRequeue;

struct TrainOutcome {
  std::int64_t steps_done = 0;   // optimizer steps completed (including those of resumed runs)
  double last_loss = 0.0;        // mean loss of the last step
  double last_eval_loss = -1.0;  // -1 when no evaluation ran
  bool stopped_by_signal = false;
  bool stopped_early = false;  // train.stop_after reached (a checkpoint was written)
};

/// The ranks of a run: the world and this rank's tp, pp and dp groups (adapt_train makes them with
/// comm::grid_comms_split), and the CUDA device this rank trains on.
struct TrainRanks {
  comm::Communicator& world;
  const comm::ProcessGrid& grid;
  comm::GridComms& comms;
  /// The index of the CUDA device runtime.device names for this rank (adapt_train resolves it at
  /// startup: apps::app_device_resolve); nullopt for runtime.device = "cpu". train_run refuses a
  /// mismatch between the two (ConfigError), so a GPU job never trains on the CPU unasked.
  std::optional<int> device = std::nullopt;
};

/// Checks, without communication, that the job fits the layout: train.micro_batch (the sequences of
/// one micro-step, all dp replicas together) must split evenly over the dp replicas. ConfigError
/// naming the key and the values that work.
void train_layout_check(const TrainConfig& cfg, const comm::ProcessGrid& grid);

/// The job's data and adapter settings against the model's config (data.seq_len within the context, the
/// adapter's layers and targets); ConfigError naming the key. Reads no files.
void train_model_check(const TrainConfig& cfg, const model::LlamaConfig& mc);

/// Settings that are valid but probably not meant (a warmup that outlasts the run), one message each;
/// train_run logs them as warnings and adapt_train --dry-run prints them.
std::vector<std::string> train_job_warnings(const TrainConfig& cfg);

/// Runs (or resumes) the job. `config_toml` is the resolved configuration, stored in checkpoints and
/// in the run folder. Installs SIGUSR1/SIGTERM handlers for the duration of the run.
///
/// With several dp replicas: the global batch of a step is train.micro_batch × train.grad_accum
/// sequences whatever the layout (each replica runs micro_batch / dp of every micro-step), so a run
/// on any dp draws the same examples as one process with the same job file; the loss is normalised by
/// the loss tokens of the whole global batch, the gradients are averaged over dp (ZeRO-1 with
/// parallel.zero1), and every replica applies the same update. With tp > 1 each replica's weights and
/// LoRA factors are split over its tp ranks; with pp > 1 its layers over pp stages, which run the
/// step's micro-batches as a 1F1B pipeline and all hold (and update) the whole adapter, its gradients
/// summed over the stages. World rank 0 prints, writes the metrics, the checkpoints (whole tensors,
/// gathered) and the adapter. Called by every rank of
/// `ranks.world`; the collectives it issues are the same on every rank.
///
/// With `ranks.device` (runtime.device = "cuda"/"cuda:N"): the model (with tp or pp, this rank's shard
/// of its stage) is read on the host and copied once to the GPU (model::llama_model_to_device, in
/// runtime.weights_dtype); with tp or pp > 1 the model's tp and pipeline collectives run on
/// communicators from comm::device_grid_comms over a second split of `ranks.world` (NCCL where every
/// rank of a group has its own GPU, else MPI staging device buffers), and `ranks.comms` keeps the host
/// work. The adapter follows it (AdapterSet::to_device) and every forward, backward
/// and evaluation runs there. The optimizer: with one dp replica and optim.offload = false its state
/// stays on the GPU (optim::DeviceAdamW: norm, clipping and update there; pp sums the gradients over
/// the model's pp communicator). Otherwise it works on the adapter's host mirrors: per step the
/// gradients come to the host (AdapterSet::gradients_to_host, or layer by layer during the last
/// backward with optim.overlap), are averaged over dp, clipped and applied there (DpOptimizer), and the
/// new values go back (AdapterSet::values_from_host, or bucket by bucket from the CPU AdamW running
/// during the next forward with optim.overlap, each layer's forward waiting for its own weights).
/// Checkpoints read the optimizer's state; the export reads the device values.
TrainOutcome train_run(const TrainConfig& cfg, const std::string& config_toml, TrainRanks& ranks);
/// The same on one process; `device` as TrainRanks::device.
TrainOutcome train_run(const TrainConfig& cfg, const std::string& config_toml,
                       std::optional<int> device = std::nullopt);

/// Prints the memory the busiest rank of tp × pp × dp needs (base weights, adapter, optimizer state,
/// activations with and without recomputation, workspaces; host RAM on a GPU) without loading the
/// weights, for --dry-run: plan::train_memory of this job (the figures adapt_plan prints).
std::string train_memory_estimate(const TrainConfig& cfg, int dp = 1, int tp = 1, int pp = 1);

}  // namespace adapt::train
