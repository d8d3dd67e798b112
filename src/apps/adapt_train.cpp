// adapt_train: fine-tunes an adapter (LoRA, bottleneck or both) on a frozen Llama model from a
// train.toml job; resumes from the job's latest checkpoint when there is one. With runtime.device =
// "cuda" the device is resolved first (before anything is read or written) and each rank trains on its
// own GPU.
//
//   adapt_train --config train.toml [--set key=value ...] [--merge] [--dry-run]
#include <fmt/format.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "apps/app_device.h"
#include "apps/app_parallel.h"
#include "backend/backend.h"
#include "config/config_binder.h"
#include "config/config_printer.h"
#include "config/train_config_schema.h"
#include "core/error.h"
#include "core/log.h"
#include "core/stop_signal.h"
#include "core/strings.h"
#include "model/llama_config.h"
#include "train/data_config_check.h"
#include "train/data_glob.h"
#include "train/parallel_util.h"
#include "train/trainer.h"

using namespace adapt;

namespace {

constexpr const char* kUsage = R"(usage: adapt_train --config train.toml [--set key=value ...] [--merge] [--dry-run]

Trains the adapter the job describes on its data, on top of the frozen base model. One progress line
per step on stderr (step/total, loss, lr, grad-norm, tokens/s, model TFLOP/s and MFU, ETA); JSON Lines metrics in
<run.dir>/metrics.jsonl (plot them with scripts/plot_metrics.py); HDF5 checkpoints in
<checkpoint.dir> (default <run.dir>/checkpoints); the trained adapter in <run.dir>/adapter (PEFT
format for LoRA, AdapterHub format for bottleneck adapters; with adapter.kind = "lora+bottleneck"
one of each in <run.dir>/adapter/lora and <run.dir>/adapter/bottleneck). Running the same job again
resumes from its latest checkpoint. SIGUSR1 or SIGTERM: a checkpoint is written at the next step
boundary and the program exits with 75 ("requeue me").

Several ranks (mpiexec -n N, srun): tp and pp come from [parallel], dp = N / (tp x pp). The dp
replicas split every micro-step's train.micro_batch sequences between them, so the global batch
(micro_batch x grad_accum) and the run's results do not depend on the layout; a checkpoint resumes
on any layout. tp > 1 splits the weights, heads, FFN and vocabulary (and the LoRA factors) over the
tp ranks of a replica (tp must divide the attention and KV heads); pp > 1 splits the layers into
stages that run the grad_accum micro-batches as a 1F1B pipeline. Every layout gives the losses and
adapter of one process (to rounding). Rank 0 prints and writes; a signal at any rank stops all of
them (exit 75).

On a GPU (runtime.device = "cuda" or "cuda:N"): the model is read on the host, then its weights
(runtime.weights_dtype, default bf16; f32 computes as the CPU does) and the adapter are copied once to
the device, where every forward, backward and evaluation runs. Without optim.offload the AdamW state
stays on the GPU too (at dp > 1 the gradients are averaged there, or under ZeRO-1 reduce-scattered into
each replica's part, over a dp communicator of device buffers); with it, each step the adapter's
gradients come to the host for the dp average, clipping and AdamW, and the new values go back (with
optim.overlap, the default, layer by layer: gradients during the backward, the CPU AdamW during the next
step's forward).
"cuda" takes the GPU of the rank's local rank. With tp or pp > 1 each rank copies its shard
or stage to its GPU; the tp and pp groups communicate over NCCL when every rank of the group has its
own GPU, else over MPI through host memory (ranks sharing a GPU: correct but slow). Without a usable
GPU the job stops before it reads the weights or writes anything (--dry-run too: it looks for the GPU).

  --config FILE     the job (see inputs/train.toml)
  --set key=value   override one key, e.g. --set optim.lr=1e-4 --set train.steps=500
  --merge           after training, also write base + LoRA merged as an HF model folder in
                    <run.dir>/merged (the same as --set run.merge=true; LoRA only)
  --dry-run         validate, find the data's files, print the resolved job, the device and a memory
                    estimate, train nothing (the records are read when a run tokenizes them, before
                    the model's weights load)

exit codes: 0 done; 1 training diverged (loss or gradient not finite; checkpoints untouched);
2 bad job file or option (or a layout that does not fit: the message lists those that do; a
runtime.device "cuda:N" that is not visible); 3 missing/invalid model, data or checkpoint; 4 CUDA
failure; 5 MPI failure; 6 unsupported (e.g. runtime.device = "cuda" with no usable GPU); 70 internal
error; 75 stopped by a signal after writing a checkpoint (requeue the job).

job keys:
)";

int run(int argc, char** argv, apps::ParallelApp& app) {
  std::string path;
  std::vector<std::string> sets;
  bool dry_run = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value; run adapt_train --help", a);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      if (app.root()) std::printf("%s%s", kUsage, config::help(config::train_config_schema()).c_str());
      return 0;
    } else if (a == "--config") {
      path = value();
    } else if (a == "--set") {
      sets.push_back(value());
    } else if (a == "--merge") {
      sets.push_back("run.merge=true");
    } else if (a == "--dry-run") {
      dry_run = true;
    } else {
      ADAPT_THROW(ConfigError, "unknown option '{}'{}; run adapt_train --help", a,
                  did_you_mean(a, {"--config", "--set", "--merge", "--dry-run", "--help"}));
    }
  }
  ADAPT_REQUIRE(!path.empty(), ConfigError, "adapt_train needs --config train.toml; run adapt_train --help");
  train::TrainConfig cfg = config::load(path, config::train_config_schema(), sets);
  const std::string resolved = config::to_toml(cfg, config::train_config_schema());
  // The GPU first: a node without one fails here, before the model is read or the run folder written.
  const std::optional<int> device = apps::app_device_resolve(
      cfg.runtime.device, app.launch(), {.name = "runtime.device", .to_cpu = "set runtime.device = \"cpu\""});
  const model::LlamaConfig mc = model::llama_config_load(cfg.model.path);
  train::train_model_check(cfg, mc);  // as train_run does; here for the dry run too
  app.start(cfg.parallel.tp, cfg.parallel.pp,
            {.n_heads = mc.n_heads, .n_kv_heads = mc.n_kv_heads, .n_layers = mc.n_layers},
            [&](const comm::ProcessGrid& grid) { train::train_layout_check(cfg, grid); });
  app.warn_shared_gpus(device);
  if (dry_run) {
    // Rank 0 reports; an error there (data that is not found) is every rank's.
    train::on_root(app.world(), "check the job (--dry-run)", [&] {
      // The data's files are found (a missing input or a folder without matching files is an error here
      // too); their records are read when the run tokenizes them, before the weights load.
      std::string data_note;
      for (const auto& [key, inputs] :
           {std::pair{"data.inputs", &cfg.data.inputs}, std::pair{"data.eval_inputs", &cfg.data.eval_inputs}}) {
        if (inputs->empty()) continue;
        const std::vector<train::DataFile> files =
            train::data_files_discover(*inputs, cfg.data.globs, key, cfg.data.cache_dir);
        std::uint64_t bytes = 0;
        for (const train::DataFile& f : files) bytes += std::filesystem::file_size(f.path);
        data_note += fmt::format("# {}: {} file(s), {}\n", key, files.size(), format_bytes(bytes));
      }
      for (const std::string& w : train::train_job_warnings(cfg)) data_note += "# warning: " + w + "\n";
      const std::string where =
          device ? fmt::format("# device: cuda:{}, {} (rank 0), {} weights\n", *device,
                               backend::cuda_device_name(*device), dtype_name(cfg.runtime.weights_dtype))
                 : std::string("# device: cpu\n");
      std::printf(
          "%s%s%s\n%s", resolved.c_str(), data_note.c_str(), where.c_str(),
          train::train_memory_estimate(cfg, app.grid().dp_size(), app.grid().tp_size(), app.grid().pp_size()).c_str());
    });
    return 0;
  }
  train::TrainRanks ranks{app.world(), app.grid(), app.comms(), device};
  const train::TrainOutcome o = train::train_run(cfg, resolved, ranks);
  return o.stopped_by_signal ? train::kExitRequeue : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // SIGUSR1/SIGTERM from the process's start stop the job at the first step boundary with a checkpoint
  // (exit 75), also when they come while MPI starts or the model loads: the default action would kill
  // the rank, and the job would fail instead of being requeued.
  const StopSignalGuard signals;
  apps::ParallelApp app(argc, argv);
  return app.run([&]() -> int {
    if (argc < 2) {
      if (app.root()) std::fputs(kUsage, stderr);
      return static_cast<int>(ExitCode::Usage);
    }
    return run(argc, argv, app);
  });
}
