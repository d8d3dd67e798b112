// The adapter training loop on one process: load the frozen base model and the data, build the
// adapter, then for each optimizer step draw grad_accum micro-batches, run forward + backward
// (model::llama_train_step with the adapter as the hook), clip, step AdamW, log, evaluate and write
// checkpoints; resume from the latest checkpoint exactly; export the adapter at the end.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "train/train_config.h"

namespace adapt::train {

/// Exit code of a run that stopped early on SIGUSR1/SIGTERM after writing a checkpoint: the job
/// wants to be requeued, and the next start resumes from that checkpoint.
inline constexpr int kExitRequeue = 75;

struct TrainOutcome {
  std::int64_t steps_done = 0;   // optimizer steps completed (including those of resumed runs)
  double last_loss = 0.0;        // mean loss of the last step
  double last_eval_loss = -1.0;  // -1 when no evaluation ran
  bool stopped_by_signal = false;
  bool stopped_early = false;  // train.stop_after reached (a checkpoint was written)
};

/// Runs (or resumes) the job. `config_toml` is the resolved configuration, stored in checkpoints and
/// in the run folder. Installs SIGUSR1/SIGTERM handlers for the duration of the run.
TrainOutcome train_run(const TrainConfig& cfg, const std::string& config_toml);

/// Prints the memory the job needs (base weights, adapter, optimizer state, activations with and
/// without recomputation, logits) without loading the weights; for --dry-run.
std::string train_memory_estimate(const TrainConfig& cfg);

/// Set by the signal handlers; polled at step boundaries. Exposed for tests.
std::atomic<int>& train_stop_signal();

}  // namespace adapt::train
