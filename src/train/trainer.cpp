#include "train/trainer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_merge.h"
#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "checkpoint/checkpoint.h"
#include "comm/comm_kind.h"
#include "comm/local_communicator.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "io/sharded.h"
#include "model/attention_compute.h"
#include "model/llama_device.h"
#include "model/llama_pipeline.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "model/tensor_parallel.h"
#include "model/weight_stream.h"
#include "ops/matmul.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "parallel/tp_ops.h"
#include "plan/plan.h"
#include "tokenizer/tokenizer.h"
#include "train/data_config_check.h"
#include "train/data_hash.h"
#include "train/data_loader.h"
#include "train/dp_optimizer.h"
#include "train/parallel_util.h"

namespace adapt::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// "6 | 2 layers": the decoder layers of each pipeline stage, split as `stage`.
std::string stage_split(const model::LlamaConfig& c, const model::PipelineStage& stage) {
  return fmt::format("{} layers",
                     fmt::join(parallel::stage_layer_counts(model::llama_dims(c), stage.size, stage.split), " | "));
}

/// A diverged run: loss or gradient norm not finite. Exit code 1; the last checkpoint is untouched.
/// Every rank sees the same (reduced) loss and norm, so every rank raises it at the same step.
class TrainingDiverged : public CollectiveError {
 public:
  TrainingDiverged(std::string m, SourceLoc w) : CollectiveError(std::move(m), w, ExitCode::Failure) {}
};

/// The checkpoint string naming the adapter kind, so a run of another kind is refused by name.
constexpr const char* kCheckpointKindKey = "train/adapter_kind";

/// Identifies the frozen base: config.json, every shard's header (names, shapes, dtypes, offsets) and
/// the first and last 64 KiB of its data. Cheap on 140 GB, and different for two fine-tunes of one shape.
std::string model_fingerprint(const fs::path& dir) {
  std::string acc = file_read_text(dir / "config.json");
  io::ShardedSafetensors st(dir);
  for (const auto& f : st.files()) {
    const std::uint64_t size = f->file_size();
    const std::uint64_t head = std::min<std::uint64_t>(size, f->data_offset() + 65536);
    std::string buf(head, '\0');
    file_read_at(f->path(), 0, buf.data(), buf.size());
    acc += buf;
    const std::uint64_t tail = std::min<std::uint64_t>(size - f->data_offset(), 65536);
    std::string end(tail, '\0');
    file_read_at(f->path(), size - tail, end.data(), end.size());
    acc += end;
  }
  return hex64(xxh64(acc));
}

model::TrainInputs wrap_batch(Batch& b) {
  model::TrainInputs in;
  const Shape s{b.n_rows, b.seq_len};
  in.ids = Tensor::wrap(b.inputs.data(), s, DType::I32, Device{}, nullptr, "inputs");
  in.targets = Tensor::wrap(b.targets.data(), s, DType::I32, Device{}, nullptr, "targets");
  in.positions = Tensor::wrap(b.positions.data(), s, DType::I32, Device{}, nullptr, "positions");
  in.segment_ids = Tensor::wrap(b.segment_ids.data(), s, DType::I32, Device{}, nullptr, "segment_ids");
  return in;
}

/// Bytes this rank's tp, pp and dp communicators have counted so far (`Communicator::stats`). Groups
/// of one rank move nothing and are left out, and so are groups not made (an empty GridComms).
std::int64_t grid_comm_bytes(const comm::GridComms& comms) {
  std::int64_t n = 0;
  for (const comm::Communicator* g : {comms.tp.get(), comms.pp.get(), comms.dp.get()})
    if (g != nullptr && g->size() > 1) n += g->stats().total_bytes();
  return n;
}

/// How long the other ranks wait for rank 0 to tokenize the data or to write the adapter and a merged
/// model (seconds): a large corpus, or 140 GB of merged Llama 3.1 70B, outlasts a collective's timeout.
constexpr double kRootWorkWait_s = 24 * 3600.0;
/// The same for a checkpoint: a slow parallel file system may take minutes.
constexpr double kCheckpointWait_s = 3600.0;

/// "key = value" of a resolved job (config::to_toml's layout: [section] headers, one key a line, "# key =
/// (unset)" for an absent optional key), by "section.key".
std::map<std::string, std::string> job_values(const std::string& toml) {
  std::map<std::string, std::string> out;
  std::string section;
  std::size_t start = 0;
  while (start < toml.size()) {
    std::size_t end = toml.find('\n', start);
    if (end == std::string::npos) end = toml.size();
    std::string_view line(toml.data() + start, end - start);
    start = end + 1;
    if (line.size() > 2 && line.front() == '[') {
      section = std::string(line.substr(line.find_first_not_of('['), line.find(']') - line.find_first_not_of('[')));
      continue;
    }
    if (line.rfind("# ", 0) == 0) line.remove_prefix(2);  // "# key = (unset)"
    const std::size_t eq = line.find(" = ");
    if (eq == std::string_view::npos || eq == 0 || line.find(' ') < eq) continue;
    out[section.empty() ? std::string(line.substr(0, eq)) : section + "." + std::string(line.substr(0, eq))] =
        std::string(line.substr(eq + 3));
  }
  return out;
}

/// Keys that say how one invocation runs, not what the job trains: changing them between a run and its
/// resume is expected (train.stop_after, adapt_train --merge, the device, the layout, logging, paths).
bool per_invocation_key(const std::string& key) {
  for (const char* prefix : {"runtime.", "parallel.", "train.stop_after", "train.log_every", "run.merge",
                             "checkpoint.keep_last", "data.cache_dir", "data.tokenize_threads"})
    if (key.rfind(prefix, 0) == 0) return true;
  return false;
}

/// The keys whose values differ between two resolved jobs, those of per_invocation_key left out:
/// "optim.lr = 0.002 (was 0.001)", in key order.
std::vector<std::string> job_differences(const std::string& before, const std::string& after) {
  const std::map<std::string, std::string> a = job_values(before), b = job_values(after);
  std::vector<std::string> out;
  for (const auto& [key, value] : b) {
    const auto it = a.find(key);
    if (it == a.end() || per_invocation_key(key)) continue;  // (a key new to this version of adapt: unknown)
    if (it->second != value) out.push_back(fmt::format("{} = {} (was {})", key, value, it->second));
  }
  return out;
}

/// The largest resident set of this process so far (getrusage's ru_maxrss, KiB on Linux), in bytes.
std::int64_t host_rss_peak_bytes() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<std::int64_t>(u.ru_maxrss) * 1024;
}

std::string eta(double seconds) {
  const auto s = static_cast<long long>(seconds);
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

class MetricsFile {
 public:
  MetricsFile(const fs::path& path, std::int64_t keep_through_step) : path_(path) {
    // A resumed run repeats the steps after its checkpoint: drop their old records first.
    if (fs::exists(path)) {
      std::string kept, text = file_read_text(path);
      std::size_t start = 0;
      while (start < text.size()) {
        std::size_t nl = text.find('\n', start);
        if (nl == std::string::npos) break;  // a line cut by a crash
        const std::string line = text.substr(start, nl - start);
        start = nl + 1;
        json j = json::parse(line, nullptr, false);
        if (j.is_object() && j.value("step", std::int64_t{0}) <= keep_through_step) kept += line + "\n";
      }
      file_write_atomic(path, kept);
    }
    f_ = std::fopen(path.c_str(), "a");
    ADAPT_REQUIRE(f_ != nullptr, IoError, "cannot open '{}' for appending", path.string());
  }
  ~MetricsFile() {
    if (f_) std::fclose(f_);
  }
  void write(const json& j) {
    const std::string line = j.dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), f_);
    std::fflush(f_);
  }

 private:
  fs::path path_;
  std::FILE* f_ = nullptr;
};

}  // namespace

std::string train_memory_estimate(const TrainConfig& cfg, int dp, int tp, int pp) {
  const model::LlamaConfig mc = model::llama_config_load(cfg.model.path);
  adapters::adapter_config_validate(cfg.adapter, mc);
  const adapters::AdapterSet set(mc, cfg.adapter);
  dp = std::max(dp, 1), tp = std::max(tp, 1), pp = std::max(pp, 1);
  const bool on_gpu = cfg.runtime.device != "cpu";
  // The planner's model of this job on this layout (src/plan/README.md), as adapt_plan prints it.
  const plan::Layout layout{.tp = tp, .pp = pp, .dp = dp};
  const plan::TrainJob job{.seq = cfg.data.seq_len,
                           .micro_batch = std::max<std::int64_t>(cfg.train.micro_batch / dp, 1),
                           .grad_accum = cfg.train.grad_accum,
                           .recompute = cfg.train.recompute,
                           .shard_saved_inputs = cfg.train.shard_saved_inputs,
                           .bf16_saved_inputs = cfg.train.saved_inputs_dtype == "bf16",
                           .zero1 = cfg.parallel.zero1,
                           .offload = cfg.optim.offload,
                           .weights_device_layers = on_gpu ? cfg.runtime.weights_device_layers : -1,
                           // On the CPU: f32 weights (the backend's), or bf16 for bf16 products.
                           .weight_bytes = on_gpu ? static_cast<int>(dtype_size(cfg.runtime.weights_dtype))
                                           : cfg.runtime.cpu_matmul_dtype == DType::BF16 ? 2
                                                                                         : 0};
  const plan::TrainMemory m =
      plan::train_memory(mc, cfg.adapter, layout, job, on_gpu ? plan::Backend::Gpu : plan::Backend::Cpu);
  const std::int64_t n_adapter = set.n_parameters();
  const std::string parts = cfg.adapter.kind == adapters::AdapterKind::LoraBottleneck
                                ? fmt::format(": LoRA {} + bottleneck {}", format_count(set.n_lora_parameters()),
                                              format_count(set.n_bottleneck_parameters()))
                                : "";
  std::string s = fmt::format(
      "memory estimate ({}, {}), {}as adapt_plan counts it:\n",
      dp * tp * pp > 1 ? fmt::format("per rank of tp{} × pp{} × dp{}: {} dp replicas", tp, pp, dp, dp)
                       : std::string("one process"),
      on_gpu ? fmt::format("runtime.device = \"{}\", {} weights, f32 adapter and activations", cfg.runtime.device,
                           dtype_name(cfg.runtime.weights_dtype))
      : cfg.runtime.cpu_matmul_dtype == DType::BF16 ? std::string("CPU, bf16 weights, f32 activations")
                                                    : std::string("CPU, f32"),
      tp * pp > 1 ? fmt::format("the rank needing most (tp rank {}, stage {}), ", m.tp_rank, m.pp_rank) : "");
  auto line = [&](const char* what, std::uint64_t bytes, const std::string& note) {
    s += fmt::format("  {:<31}{:>12}{}\n", what, format_bytes(bytes), note.empty() ? "" : "  (" + note + ")");
  };
  line("base weights (frozen)", m.weights,
       fmt::format("{} parameters of {}", format_count(m.base_params),
                   format_count(model::llama_param_counts(mc).total)) +
           (m.streamed.layers > 0 ? fmt::format("; the weights of {} layer(s) in host RAM: {}", m.streamed.layers,
                                                format_bytes(m.streamed.host))
                                  : std::string()));
  line("adapter weights", m.adapter,
       fmt::format("{} parameters{}", format_count(n_adapter), parts) +
           (m.adapter_params != n_adapter ? fmt::format("; this rank's {}", format_count(m.adapter_params)) : ""));
  line("adapter gradients", m.gradients, "");
  const bool host_state = on_gpu && cfg.optim.offload;  // without offload the state is on the GPU, at any dp
  line("optimizer state", host_state ? m.host_optimizer : m.optimizer,
       std::string(cfg.optim.offload ? "f32 master + m + v" : "AdamW m + v") +
           (dp > 1 && cfg.parallel.zero1 ? ", ZeRO-1: this rank's shard" : "") + (host_state ? ", host RAM" : ""));
  if (m.dp_buffers > 0) line("reduction buffers", m.dp_buffers, "flat vectors of the dp / pp reductions");
  if (m.pipeline_buffers > 0) line("pipeline hidden states", m.pipeline_buffers, "");
  const plan::ActivationBytes& in_use = m.activations;
  const plan::ActivationBytes& other = m.activations_other;
  line("activations, no recompute", cfg.train.recompute ? other.total() : in_use.total(),
       fmt::format("micro-batch {} x {} tokens per replica{}", job.micro_batch, job.seq,
                   cfg.train.recompute ? "" : "; in use"));
  line("activations, with recompute", cfg.train.recompute ? in_use.total() : other.total(),
       cfg.train.recompute ? "in use" : "train.recompute = true");
  if (m.libraries > 0) line("library workspaces", m.libraries, "cuBLASLt's GEMM workspace");
  if (m.operand_copies > 0) line("bf16 operand copies", m.operand_copies, "casts of GEMM and attention inputs");
  if (m.attention_buffers > 0) line("attention buffers", m.attention_buffers, "the CPU attention's, kept per thread");
  if (!on_gpu) line("checkpoint file image", m.checkpoint, "rank 0, while a checkpoint is written");
  line(on_gpu ? "total on the GPU" : "total", m.device_total(), "");
  if (on_gpu) line("host RAM", m.host_total(), "adapter copies, optimizer state, staging, checkpoint image");
  return s;
}

void train_layout_check(const TrainConfig& cfg, const comm::ProcessGrid& grid) {
  const std::int64_t dp = grid.dp_size();
  if (cfg.train.micro_batch % dp == 0) return;
  const std::int64_t up = (cfg.train.micro_batch / dp + 1) * dp;
  const std::int64_t down = cfg.train.micro_batch / dp * dp;
  ADAPT_THROW(ConfigError,
              "train.micro_batch = {} (the sequences of one micro-step, all data-parallel replicas together) does not "
              "split over the dp = {} replicas of {}; use a multiple of {}, e.g. {}{}",
              cfg.train.micro_batch, dp, grid.str(), dp, up, down > 0 ? fmt::format(" or {}", down) : "");
}

void train_model_check(const TrainConfig& cfg, const model::LlamaConfig& mc) {
  data_config_validate(cfg.data, mc.max_position_embeddings);
  adapters::adapter_config_validate(cfg.adapter, mc);
}

std::vector<std::string> train_job_warnings(const TrainConfig& cfg) {
  std::vector<std::string> out;
  if (cfg.optim.warmup_steps > 0 && cfg.optim.warmup_steps >= cfg.train.steps) {
    const optim::LrSchedule sched{optim::parse_lr_schedule(cfg.optim.schedule), cfg.optim.lr, cfg.optim.warmup_steps,
                                  cfg.train.steps, cfg.optim.min_lr_ratio};
    out.push_back(
        fmt::format("optim.warmup_steps = {} is not below train.steps = {}: the learning rate rises from 0 "
                    "and never reaches optim.lr = {:g} (its last step's is {:g}); lower warmup_steps",
                    cfg.optim.warmup_steps, cfg.train.steps, cfg.optim.lr, optim::lr_at(sched, cfg.train.steps - 1)));
  }
  if (cfg.optim.schedule == "constant" && cfg.optim.min_lr_ratio > 0)
    out.push_back(
        fmt::format("optim.min_lr_ratio = {:g} has no effect with optim.schedule = \"constant\"; choose "
                    "\"linear\" or \"cosine\" for a decay to it",
                    cfg.optim.min_lr_ratio));
  // vLLM's --max-lora-rank takes 1, 8, 16, 32, 64, 128, 256, 320 or 512, and a LoRA's rank must not exceed it.
  if (adapters::kind_has_lora(cfg.adapter.kind) && cfg.adapter.lora.r > 512) {
    out.push_back(fmt::format("adapter.lora.r = {}: PEFT loads the export, but vLLM serves LoRA ranks up to 512 only",
                              cfg.adapter.lora.r));
  }
  return out;
}

TrainOutcome train_run(const TrainConfig& cfg, const std::string& config_toml, std::optional<int> device) {
  comm::LocalCommunicator world;
  const comm::ProcessGrid grid(1, 1, 1);
  comm::GridComms comms = comm::grid_comms_split(world, grid);
  TrainRanks ranks{world, grid, comms, device};
  return train_run(cfg, config_toml, ranks);
}

TrainOutcome train_run(const TrainConfig& cfg, const std::string& config_toml, TrainRanks& ranks) {
  comm::Communicator& world = ranks.world;
  comm::Communicator& dp = *ranks.comms.dp;
  comm::Communicator& tp = *ranks.comms.tp;
  comm::Communicator& pp = *ranks.comms.pp;
  train_layout_check(cfg, ranks.grid);
  // Checked before anything is read or written, the same on every rank.
  const std::optional<int> device = ranks.device;
  ADAPT_REQUIRE((cfg.runtime.device != "cpu") == device.has_value(), ConfigError,
                "runtime.device = \"{}\" but train_run was given {}: resolve the device first (adapt_train does, "
                "with apps::app_device_resolve)",
                cfg.runtime.device, device ? fmt::format("cuda:{}", *device) : std::string("no device"));
  TrainOutcome out;
  if (world.rank() == 0)
    for (const std::string& w : train_job_warnings(cfg)) log::warn("{}", w);
  const fs::path ckpt_dir = cfg.checkpoint.dir.value_or(cfg.run.dir / "checkpoints");
  // Folders that cannot be written fail the job now, not after the data and the weights are read.
  // One job at a time in a run folder: a second (a resubmission while the first still runs) would resume
  // from the first's checkpoints and remove its newer ones. Rank 0 holds the lock until the job ends.
  std::optional<FileLock> run_lock, ckpt_lock;
  on_root(world, "check the run folder", [&] {
    dir_require_writable(cfg.run.dir, "run.dir");
    if (cfg.checkpoint.dir) dir_require_writable(*cfg.checkpoint.dir, "checkpoint.dir");  // else inside run.dir
    run_lock.emplace(cfg.run.dir / ".lock", fmt::format("run.dir '{}'", cfg.run.dir.string()));
    if (cfg.checkpoint.dir)  // two runs sharing one checkpoint.dir would remove each other's checkpoints
      ckpt_lock.emplace(*cfg.checkpoint.dir / ".lock",
                        fmt::format("checkpoint.dir '{}'", cfg.checkpoint.dir->string()));
  });

  // The job against the model's config, and the data, before the weights are read: a bad input fails
  // in seconds, not after minutes of loading.
  const tokenizer::Tokenizer tok =
      tokenizer::Tokenizer::from_file(cfg.model.tokenizer ? *cfg.model.tokenizer : cfg.model.path);
  {
    const model::LlamaConfig mc = model::llama_config_load(cfg.model.path);
    ADAPT_REQUIRE(tok.n_vocab() <= mc.vocab_size, ConfigError,
                  "the tokenizer has {} tokens but the model's vocab_size is {}; use the model's own tokenizer",
                  tok.n_vocab(), mc.vocab_size);
    train_model_check(cfg, mc);
  }
  // Rank 0 tokenizes (or reuses the cache); every rank then opens the same cache files. A first
  // tokenization of a large corpus may outlast a collective's timeout: the others wait up to a day.
  on_root(
      world, "prepare the token cache",
      [&] {
        token_cache_update(cfg.data, DataInputs::Train, tok);
        if (!cfg.data.eval_inputs.empty()) token_cache_update(cfg.data, DataInputs::Eval, tok);
      },
      kRootWorkWait_s);
  TrainData data = train_data_open(cfg.data, tok);

  model::LlamaLoadStats stats;
  // With tp or pp, each rank reads only its slices of the weights (its stage's layers, its heads, FFN
  // columns and vocabulary rows).
  const bool sharded = ranks.grid.tp_size() > 1 || ranks.grid.pp_size() > 1;
  // For a GPU the weights are read as stored (bf16 stays bf16: half the host memory) and converted to
  // runtime.weights_dtype on the way to the device, which then holds the only copy. On the CPU: f32, or
  // bf16 for bf16 products (runtime.cpu_matmul_dtype).
  const bool cpu_bf16 = !device && cfg.runtime.cpu_matmul_dtype == DType::BF16;
  const model::WeightStorage storage = device     ? model::WeightStorage::AsStored
                                       : cpu_bf16 ? model::WeightStorage::Bf16
                                                  : model::WeightStorage::F32;
  ops::set_cpu_matmul_dtype(cpu_bf16 ? DType::BF16 : DType::F32);
  if (cpu_bf16) log::info0("{}", ops::cpu_matmul_note());
  // Pipeline stages balanced by work: the last one runs the head for every token.
  model::LlamaModel model =
      sharded ? model::llama_model_load_tp(cfg.model.path, ranks.grid, world.rank(), tp,
                                           {.storage = storage, .stage_split = parallel::kTrainSplit}, &stats)
              : model::llama_model_load(cfg.model.path, {.storage = storage}, &stats);
  log::info0("base model {}: {} layers, {} parameters, loaded in {:.2f} s", cfg.model.path.string(),
             model.config.n_layers, format_count(model::llama_param_counts(model.config).total), stats.seconds);
  model = model::llama_model_place(std::move(model),
                                   {.device = device,
                                    .weights_dtype = cfg.runtime.weights_dtype,
                                    .weights_device_layers = cfg.runtime.weights_device_layers,
                                    .attention_dtype = cfg.runtime.attention_dtype,
                                    .cpu_matmul_dtype = cfg.runtime.cpu_matmul_dtype},
                                   world.rank(), world.size());
  // With the model on GPUs, its tp collectives and the pipeline's transfers take device buffers: NCCL
  // where every rank of the group has its own GPU, else MPI staging them through host memory. The
  // host-side work (the optimizer, checkpoints, the gradient sum over the stages) keeps the host
  // communicators of `ranks.comms`.
  // With dp > 1 and no offload the optimizer state stays on the GPUs too (DpOptimizer's DeviceAdamW), and
  // the replicas average (under ZeRO-1: reduce-scatter) their device gradients over a device dp
  // communicator.
  const bool device_dp = device && dp.size() > 1 && !cfg.optim.offload;
  comm::GridComms device_comms;
  comm::Communicator* model_pp = &pp;
  if (device && (sharded || device_dp)) {
    device_comms = comm::device_grid_comms_for_model(world, ranks.grid, *device, tp.options(), device_dp);
    if (sharded) {
      model.tp.comm = device_comms.tp.get();
      model_pp = device_comms.pp.get();
    }
  }
  const std::string fingerprint = model_fingerprint(cfg.model.path);
  // The whole set on every rank (the same seed), then each tp rank keeps its slices of the LoRA
  // factors. Every pipeline stage holds the adapters of every layer and updates all of them with the
  // gradients summed over the stages (sum_gradients), so all stages hold the same adapter.
  adapters::AdapterSet set(model.config, cfg.adapter);
  const std::int64_t n_adapter = set.n_parameters();
  set.shard_for_tp(model.tp);
  // On a GPU the hook's parameters and gradients live there. Without offload the optimizer works there
  // too (DpOptimizer's DeviceAdamW); otherwise the optimizer, the reductions and the checkpoints take
  // the host mirrors, which move through gradients_to_host / values_from_host (or,
  // with optim.overlap, the gradient stream and the optimizer's direct write-backs).
  if (device) set.to_device(*device);
  const std::vector<adapters::AdapterParam> params = set.host_parameters();
  // optim.overlap (with offload): each layer's gradients leave for the host mirrors as the step's last
  // backward finishes the layer, and the CPU AdamW runs during the next step's forward, which waits per
  // layer (AdapterSet's gradient stream and forward gate); under ZeRO-1 over dp > 1 the gate also
  // all-gathers the layer's unit, so every replica's forward passes the gates in the same order.
  const bool overlap = cfg.optim.offload && cfg.optim.overlap;
  DpOptimizer opt(params, {cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps, cfg.optim.weight_decay}, dp,
                  {.zero1 = cfg.parallel.zero1,
                   .tp = &tp,
                   .offload = dp_offload_options(cfg.optim.offload),
                   .overlap = overlap,
                   .device_params = device ? set.parameters() : std::vector<adapters::AdapterParam>{},
                   .device_dp = device_dp ? device_comms.dp.get() : nullptr});
  if (overlap) {
    set.set_gradient_stream([&opt](int, std::size_t first, std::size_t end) { opt.stream_grads(first, end); });
    if (opt.overlapped())
      set.set_forward_gate([&opt](int, std::size_t first, std::size_t end) { opt.wait_params(first, end); });
  }
  // optim.offload = false on a GPU: the dp average (or ZeRO-1's reduce-scatter and all-gather), the
  // moments, the norm and the update stay on the GPU.
  const bool device_opt = opt.on_device() != nullptr;
  // What each parameter is a slice of (whole tensors until the set is sharded over tp): checkpoints hold
  // the whole tensors, gathered over tp on save and cut again on resume.
  const std::vector<parallel::TensorSlice> slices = set.tp_param_slices();
  std::map<std::string, std::size_t> param_of;  // "adapter/x", "optim/m/x", "optim/v/x" -> index of x
  for (std::size_t i = 0; i < params.size(); ++i)
    for (const char* prefix : {"adapter/", "optim/m/", "optim/v/"}) param_of[prefix + params[i].name] = i;
  log::info0("adapter {}: {} parameters in {} tensors", adapters::adapter_kind_name(cfg.adapter.kind),
             format_count(n_adapter), params.size());
  if (ranks.grid.world_size() > 1)
    log::info0("layout {} ({} ranks): {} sequences per micro-step, {} per replica{}{}; optimizer state {}",
               ranks.grid.str(), ranks.grid.world_size(), cfg.train.micro_batch, cfg.train.micro_batch / dp.size(),
               tp.size() > 1 ? fmt::format("; weights and LoRA factors split over {} tp ranks", tp.size()) : "",
               pp.size() > 1 ? fmt::format("; layers in {} pipeline stages of {} (1F1B over the {} micro-batches)",
                                           pp.size(), stage_split(model.config, model.stage), cfg.train.grad_accum)
                             : "",
               cfg.parallel.zero1 && dp.size() > 1 ? "partitioned over dp (ZeRO-1)" : "replicated");
  const optim::LrSchedule sched{optim::parse_lr_schedule(cfg.optim.schedule), cfg.optim.lr, cfg.optim.warmup_steps,
                                cfg.train.steps, cfg.optim.min_lr_ratio};
  const LoaderOptions loader_options{
      .global_batch_size = cfg.train.micro_batch, .dp_rank = dp.rank(), .dp_size = dp.size()};
  DataLoader loader(data.train, cfg.data.seed, loader_options);

  std::int64_t step = 0;
  // Rank 0 picks the checkpoint (the newest that verifies); every rank reads that file.
  std::string latest;
  on_root(world, "find the latest checkpoint", [&] {
    if (checkpoint::checkpoint_exists(ckpt_dir)) latest = checkpoint::checkpoint_latest(ckpt_dir).string();
  });
  latest = broadcast_string(world, latest);
  if (!latest.empty()) {
    const fs::path path = latest;
    checkpoint::CheckpointState st =
        checkpoint::checkpoint_load(path, {.expected_base_model_fingerprint = fingerprint});
    // The job as the checkpoint's run had it: what differs is said (a longer train.steps, another
    // optim.lr), and named when it makes the checkpoint unusable.
    const std::vector<std::string> changed =
        st.config_toml.empty() ? std::vector<std::string>{} : job_differences(st.config_toml, config_toml);
    // What the refusals below end with: the differences, and what to do.
    const std::string remedy = fmt::format(
        "{} Restore the checkpoint's adapter settings, or start this job in another run.dir (or "
        "checkpoint.dir)",
        changed.empty() ? std::string()
                        : fmt::format(" This job differs from the checkpoint's in: {}.", fmt::join(changed, "; ")));
    // Settings that change what the saved weights compute (not their shapes): the resumed model would
    // not be the checkpoint's.
    const bool lora = adapters::kind_has_lora(cfg.adapter.kind), bn = adapters::kind_has_bottleneck(cfg.adapter.kind);
    for (const std::string& d : changed)
      for (const auto& [key, used] :
           {std::pair{"adapter.lora.alpha ", lora}, std::pair{"adapter.lora.use_rslora ", lora},
            std::pair{"adapter.bottleneck.scaling ", bn}, std::pair{"adapter.bottleneck.activation ", bn},
            std::pair{"adapter.bottleneck.residual_before_ln ", bn}})
        ADAPT_REQUIRE(!used || d.rfind(key, 0) != 0, IoError,
                      "checkpoint '{}' was trained with another {}: its adapter computes something else with this "
                      "job's.{}",
                      path.string(), std::string_view(key).substr(0, std::string_view(key).size() - 1), remedy);
    const std::string kind = adapters::adapter_kind_name(cfg.adapter.kind);
    if (const auto it = st.strings.find(kCheckpointKindKey); it != st.strings.end())
      ADAPT_REQUIRE(it->second == kind, IoError,
                    "checkpoint '{}' was written for adapter.kind = \"{}\" but this run trains \"{}\"; resume with "
                    "the checkpoint's kind, or start the new kind in another run.dir (or checkpoint.dir)",
                    path.string(), it->second, kind);
    for (const auto& [key, t] : st.tensors)
      ADAPT_REQUIRE(key.rfind("adapter/", 0) != 0 || param_of.count(key), IoError,
                    "checkpoint '{}' holds '{}', which this run's adapter does not have: it was written for another "
                    "adapter configuration.{}",
                    path.string(), key, remedy);
    // Whole tensors in the file; each rank takes its tp slice.
    std::map<std::string, Tensor> local;
    opt.restore([&](const std::string& key) -> const Tensor& {
      auto it = st.tensors.find(key);
      ADAPT_REQUIRE(it != st.tensors.end(), IoError,
                    "checkpoint '{}' has no tensor '{}': it was written for another adapter configuration.{}",
                    path.string(), key, remedy);
      const parallel::TensorSlice& slice = slices[param_of.at(key)];
      ADAPT_REQUIRE(it->second.shape() == slice.global, IoError,
                    "checkpoint '{}': tensor '{}' has shape {} but this run's adapter needs {}: the adapter settings "
                    "changed since the checkpoint was written.{}",
                    path.string(), key, it->second.shape().str(), slice.global.str(), remedy);
      return local[key] = parallel::shard_take(it->second, slice);
    });
    set.values_from_host();  // the restored values into the device parameters (no-op on the host)
    opt.set_n_steps(st.ints.at("optim/n_steps"));
    loader.restore(DataLoaderState::from_ints(st.ints, path.string()));
    step = st.step;
    log::info0("resuming from {} at step {}", path.string(), step);
    if (!changed.empty() && world.rank() == 0)
      log::warn("resuming with settings that differ from the checkpoint's job: {}", fmt::join(changed, "; "));
    if (step >= cfg.train.steps && world.rank() == 0)
      log::warn(
          "checkpoint '{}' is at step {}, which already reaches train.steps = {}: nothing is left to train, "
          "so this job only exports the checkpoint's adapter. Raise train.steps to train further.",
          path.string(), step, cfg.train.steps);
    const std::string layout = ranks.grid.str();
    if (!st.world_layout.empty() && st.world_layout != layout)
      log::info0("the checkpoint was written at {}; continuing at {}", st.world_layout, layout);
  }

  // The job as it runs, written once the checkpoint (if any) is known to fit it.
  on_root(world, "write the run folder", [&] { file_write_atomic(cfg.run.dir / "config.toml", config_toml); });
  std::optional<MetricsFile> metrics;
  on_root(world, "open the metrics file", [&] { metrics.emplace(cfg.run.dir / "metrics.jsonl", step); });
  auto write_metrics = [&](const json& j) {
    if (metrics) metrics->write(j);
  };
  auto save = [&](double last_loss) {
    opt.finish();  // an overlapped update complete (state() would wait for it too)
    // Whole tensors: moments gathered over dp (ZeRO-1), slices over tp; rank 0 writes the file. The
    // gathers are every rank's report that its part is there; rank 0's status reaches all ranks.
    std::map<std::string, Tensor> tensors = opt.state();
    for (auto& [key, t] : tensors) {
      const parallel::TensorSlice& slice = slices[param_of.at(key)];
      if (slice.dim == parallel::ShardDim::None) continue;
      Tensor whole = Tensor::zeros(slice.global, DType::F32, key);
      parallel::tp_gather(whole, t, slice.dim, tp);
      t = whole;
    }
    on_root(
        world, "write the checkpoint",
        [&] {
          checkpoint::CheckpointState st;
          st.step = step;
          st.base_model_fingerprint = fingerprint;
          st.world_layout = ranks.grid.str();
          st.config_toml = config_toml;
          st.tensors = std::move(tensors);
          st.ints = loader.state().to_ints();
          st.ints["optim/n_steps"] = opt.n_steps();
          st.floats["train/loss"] = last_loss;
          st.strings[kCheckpointKindKey] = adapters::adapter_kind_name(cfg.adapter.kind);
          checkpoint::checkpoint_save(
              ckpt_dir, st, {.keep_last = static_cast<int>(std::min<std::int64_t>(cfg.checkpoint.keep_last, 1 << 30))});
        },
        kCheckpointWait_s);
  };
  auto evaluate = [&]() -> double {
    opt.finish();  // an overlapped update complete before the weights are read outside a training forward
    if (!data.eval) return -1.0;
    EvalLoader ev(data.eval, loader_options);
    const std::int64_t n = std::min(cfg.train.eval_batches, ev.n_batches());
    set.set_training(false);
    double sums[2] = {0, 0};  // loss, loss tokens: this replica's rows, then all replicas'
    model::TrainWorkspace ews(model::model_allocator(model));
    if (pp.size() > 1) {
      // Every stage takes the same batches: each passes them through its layers once, forward only.
      std::vector<Batch> batches;
      std::vector<model::TrainInputs> in;
      for (std::int64_t k = 0; k < n; ++k) batches.push_back(ev.batch(k));
      for (Batch& b : batches) in.push_back(wrap_batch(b));
      if (!in.empty()) {
        const model::PipelineResult r =
            model::llama_pipeline_train(model, in, &set, *model_pp, {.backward = false}, &ews);
        sums[0] = r.loss_sum;
        sums[1] = static_cast<double>(r.n_loss_tokens);
      }
    } else {
      for (std::int64_t k = 0; k < n; ++k) {
        Batch b = ev.batch(k);
        model::TrainResult r = model::llama_train_step(model, wrap_batch(b), &set, {.backward = false}, &ews);
        sums[0] += r.loss_sum;
        sums[1] += static_cast<double>(r.n_loss_tokens);
      }
    }
    dp.all_reduce(sums, 2, comm::CommDType::F64, comm::ReduceOp::Sum);
    set.set_training(true);
    return sums[1] > 0 ? sums[0] / sums[1] : -1.0;
  };

  // MFU: the model FLOPs of the step's tokens over the peak of every rank's device (runtime.peak_tflops,
  // or a known GPU's dense bf16 peak with bf16 weights).
  const double flops_per_token = plan::train_model_flops_per_token(model.config, cfg.adapter, cfg.data.seq_len);
  double peak_tflops = cfg.runtime.peak_tflops;
  std::string peak_from = "runtime.peak_tflops";
  if (peak_tflops <= 0 && device && cfg.runtime.weights_dtype == DType::BF16) {
    if (const std::optional<plan::GpuSpec> g = plan::gpu_preset_of_device(backend::cuda_device_name(*device))) {
      peak_tflops = g->bf16_tflops;
      peak_from = g->name + " dense bf16";
    }
  }
  if (peak_tflops > 0) {
    log::info0("MFU against {:.4g} TFLOP/s per rank ({}), {:.4g} GFLOP of model work per token", peak_tflops, peak_from,
               flops_per_token / 1e9);
  } else {
    log::info0("{:.4g} GFLOP of model work per token; no MFU: give runtime.peak_tflops, the peak of one rank's {}",
               flops_per_token / 1e9, device ? "GPU" : "CPU cores");
  }

  StopSignalGuard signals;
  set.set_training(true);
  model::TrainWorkspace ws(model::model_allocator(model));
  Timer run_timer;
  const std::int64_t first_step = step;
  double last_loss = 0;
  if (step == 0) {  // the adapter starts as an exact no-op: this is the base model's eval loss
    const double e = evaluate();
    if (e >= 0) {
      write_metrics({{"kind", "eval"}, {"step", 0}, {"eval_loss", e}, {"eval_ppl", std::exp(e)}});
      log::info0("eval before training (the base model): loss {:.4f}  perplexity {:.3f}", e, std::exp(e));
    }
  }
  const std::int64_t stop_at =
      cfg.train.stop_after ? std::min(cfg.train.steps, step + *cfg.train.stop_after) : cfg.train.steps;
  // Sharded or bf16 layer inputs where they save memory on this stage (adapt_plan counts the same).
  const model::SavedInputs kept = model::saved_inputs_for(
      model.tp.size, model::stage_layer_range(model.config, model.stage).count, cfg.train.shard_saved_inputs,
      cfg.train.saved_inputs_dtype == "bf16" ? DType::BF16 : DType::F32);
  while (step < cfg.train.steps) {
    if (step == stop_at) {
      log::info0("stopping after {} steps of this run as train.stop_after asks; run the job again to resume",
                 *cfg.train.stop_after);
      if (cfg.checkpoint.every == 0 || step % cfg.checkpoint.every != 0) save(last_loss);
      out.stopped_early = true;
      break;
    }
    // A signal at any rank stops every rank at this step boundary.
    std::int64_t sig = stop_signal().load();
    world.all_reduce(&sig, 1, comm::CommDType::I64, comm::ReduceOp::Max);
    if (sig != 0) {
      log::info0("received {} at step {}: writing a checkpoint and stopping (exit code {} asks to be requeued)",
                 stop_signal_name(static_cast<int>(sig)), step, kExitRequeue);
      save(last_loss);
      out.stopped_by_signal = true;
      break;
    }
    Timer step_timer;
    const std::int64_t comm_bytes_before = grid_comm_bytes(ranks.comms) + grid_comm_bytes(device_comms);
    set.zero_grad();
    std::vector<Batch> micro;
    std::int64_t n_loss = 0;     // loss tokens of the whole global batch (every replica's rows)
    double sums[3] = {0, 0, 0};  // loss, loss tokens, tokens: this replica's rows, then all replicas'
    for (std::int64_t k = 0; k < cfg.train.grad_accum; ++k) {
      micro.push_back(loader.next());
      n_loss += micro.back().n_loss_tokens_global;
      sums[1] += static_cast<double>(micro.back().n_loss_tokens);
      sums[2] += static_cast<double>(micro.back().n_rows * micro.back().seq_len);
    }
    // LoRA dropout masks by row of the micro-step's global batch: this replica's rows start after those
    // of the ranks before it (DataLoader's slices), so a row's mask is the same on any layout.
    auto dp_row_offset = [&](const Batch& b) { return static_cast<std::int64_t>(dp.rank()) * b.n_rows * b.seq_len; };
    // Each replica's gradient is its share of the global mean's; dp_average_gradients divides the sum
    // by dp, so the scale carries a factor dp.
    const float scale = n_loss > 0 ? static_cast<float>(dp.size()) / static_cast<float>(n_loss) : 0.0f;
    if (pp.size() > 1) {
      // Every stage gets the same micro-batches and the same loss back.
      std::vector<model::TrainInputs> in;
      for (Batch& b : micro) in.push_back(wrap_batch(b));
      const model::PipelineResult r = model::llama_pipeline_train(
          model, in, &set, *model_pp,
          {.loss_scale = scale,
           .recompute = cfg.train.recompute,
           .shard_saved_inputs = kept.shard,
           .saved_input_dtype = kept.dtype,
           .before_micro = [&](int k) { set.set_step(step, k, dp_row_offset(micro[static_cast<std::size_t>(k)])); },
           // The stage's last backward finishes its layers' gradients: they leave as it goes.
           .before_last_backward =
               [&] {
                 if (overlap) set.arm_gradient_stream();
               }},
          &ws);
      sums[0] = r.loss_sum;
    } else {
      for (std::size_t k = 0; k < micro.size(); ++k) {
        set.set_step(step, static_cast<std::int64_t>(k), dp_row_offset(micro[k]));
        // The last micro-batch's backward finishes each layer's gradients: they leave as it goes.
        if (overlap && k + 1 == micro.size()) set.arm_gradient_stream();
        // Logits in 256-row chunks (the default): (N, V) is never held whole (2 GB at 4096 tokens for Llama
        // 3's vocabulary), here, in evaluate() and in the pipeline's stages.
        model::TrainResult r = model::llama_train_step(model, wrap_batch(micro[k]), &set,
                                                       {.recompute = cfg.train.recompute,
                                                        .shard_saved_inputs = kept.shard,
                                                        .saved_input_dtype = kept.dtype,
                                                        .loss_scale = scale},
                                                       &ws);
        sums[0] += r.loss_sum;
      }
    }
    // The whole adapter's gradient on every rank of the replica: the partial sums of the LoRA
    // factors over tp, the stages' layers over pp; then the average over dp (loss and tokens too: the
    // tp and pp ranks of a replica hold the same ones).
    if (overlap) {
      // The layers not streamed during the backward (under the pipeline schedule, the other stages'),
      // then the wait for the copies into the host mirrors.
      set.end_gradient_stream();
      opt.wait_streamed_grads();
    } else {
      set.tp_reduce_gradients();
      // A GPU's gradients into the host mirrors that `params` and `opt` hold, unless the optimizer
      // state is on the GPU too (optim.offload = false): then they stay there.
      if (!device_opt) set.gradients_to_host();
    }
    // The sum over the pipeline stages: each stage's backward reaches the adapters of its own layers only
    // (the others' gradients are zero there), so afterwards every stage holds the gradient of the whole
    // adapter and applies the same update to all of it. Device gradients (the optimizer state on the
    // GPU) go over the model's pp communicator, which takes device buffers (NCCL, or MPI staging them).
    if (device_opt) {
      sum_gradients(set.parameters(), *model_pp);
    } else {
      sum_gradients(params, pp);
    }
    dp.all_reduce(sums, 3, comm::CommDType::F64, comm::ReduceOp::Sum);
    ADAPT_CHECK(static_cast<std::int64_t>(sums[1]) == n_loss, "step {}: the replicas hold {} loss tokens, the batch {}",
                step + 1, sums[1], n_loss);
    const std::int64_t n_tokens = static_cast<std::int64_t>(sums[2]);
    const double loss = n_loss > 0 ? sums[0] / static_cast<double>(n_loss) : 0.0;
    // No token of the global batch carries a loss (every row masked, e.g. prompt-only rows under
    // data.loss_on_completions_only): no gradient, so no update, where AdamW would still move the weights
    // (its moments, weight decay) and count a step. The step and the data go on.
    const bool update = n_loss > 0;
    const double norm = update ? opt.reduce_and_clip(cfg.optim.max_grad_norm) : 0.0;
    const double lr = optim::lr_at(sched, step);
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      ADAPT_THROW(TrainingDiverged,
                  "training diverged at step {}: loss = {}, gradient norm = {} (lr {:.3g}). Nothing was updated and "
                  "the checkpoints in '{}' are untouched. Lower optim.lr, raise optim.warmup_steps or check the data.",
                  step + 1, loss, norm, lr, ckpt_dir.string());
    }
    if (!update) {
      opt.finish();
      if (world.rank() == 0)
        log::warn(
            "step {}: no token of the batch carries a loss (all its rows are masked): the adapter is not "
            "updated at this step",
            step + 1);
    } else if (opt.overlapped()) {
      // The CPU update runs while the next forward computes; each layer of it waits for its own weights,
      // which go straight to the GPU. Whatever else reads them first calls opt.finish().
      opt.step_async(lr);
      set.arm_forward_gate();
    } else {
      opt.step(lr);
      if (!device_opt) set.values_from_host();  // the updated mirrors back to the GPU
    }
    ++step;
    if (update) last_loss = loss;
    const double secs = step_timer.seconds();
    const double tps = static_cast<double>(n_tokens) / std::max(secs, 1e-9);
    const double avg = run_timer.seconds() / static_cast<double>(step - first_step);
    // The step's traffic over every rank: 8 bytes over the world after the timed step.
    std::int64_t comm_bytes = grid_comm_bytes(ranks.comms) + grid_comm_bytes(device_comms) - comm_bytes_before;
    if (world.size() > 1) world.all_reduce(&comm_bytes, 1, comm::CommDType::I64, comm::ReduceOp::Sum);
    const double model_tflops = flops_per_token * tps / 1e12;
    json record = {{"kind", "train"},
                   {"step", step},
                   {"loss", loss},
                   {"lr", lr},
                   {"grad_norm", norm},
                   {"tokens_per_s", tps},
                   {"tokens", n_tokens},
                   {"loss_tokens", n_loss},
                   {"step_s", secs},
                   {"model_tflops", model_tflops},
                   {"comm_bytes", comm_bytes}};
    if (!update) {  // no loss to plot (plot_metrics.py skips it), not a loss of 0
      record.erase("loss");
      record["skipped"] = true;
    }
    std::string mfu;
    if (peak_tflops > 0) {
      const double m = model_tflops / (peak_tflops * world.size());
      record["mfu"] = m;
      mfu = fmt::format("  MFU {:.1f}%", 100 * m);
    }
    // The overlapped CPU AdamW of the previous step: how long this step's forward (and clipping) waited
    // for it, i.e. what the compute did not hide.
    if (opt.overlapped()) record["optim_wait_s"] = opt.take_wait_seconds();
    record["host_rss_peak"] = host_rss_peak_bytes();  // rank 0's process: the model on the CPU, pinned buffers
    if (device) {
      // Rank 0's GPU since the start: what its tensors held at most (allocated) and what the caching
      // allocator took from CUDA (reserved); adapt_plan's per-GPU memory is checked against the first.
      const backend::MemoryStats ms = backend::cuda_memory_stats(*device);
      record["device_allocated_peak"] = ms.allocated_peak;
      record["device_reserved_peak"] = ms.reserved_peak;
    }
    write_metrics(record);
    if (step % cfg.train.log_every == 0 || step == cfg.train.steps) {
      log::info0("step {}/{}  loss {:.4f}  lr {:.3g}  grad-norm {:.3f}  {:.0f} tokens/s  {:.3g} TFLOP/s{}  ETA {}",
                 step, cfg.train.steps, loss, lr, norm, tps, model_tflops, mfu,
                 eta(avg * static_cast<double>(cfg.train.steps - step)));
    }
    const bool last = step == cfg.train.steps;
    if ((cfg.train.eval_every > 0 && step % cfg.train.eval_every == 0) || last) {
      const double e = evaluate();
      if (e >= 0) {
        out.last_eval_loss = e;
        write_metrics({{"kind", "eval"}, {"step", step}, {"eval_loss", e}, {"eval_ppl", std::exp(e)}});
        log::info0("eval at step {}: loss {:.4f}  perplexity {:.3f}", step, e, std::exp(e));
      }
    }
    if ((cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0) || last) save(loss);
  }
  opt.finish();  // the last update complete before the export reads the weights
  set.disarm_forward_gate();
  out.steps_done = step;
  out.last_loss = last_loss;
  if (!out.stopped_by_signal && !out.stopped_early) {
    const fs::path adapter_dir = cfg.run.dir / "adapter";
    const adapters::AdapterSet whole = set.tp_gathered();  // collective over tp
    on_root(
        world, "export the adapter",
        [&] {  // up to a day: a merged 70B model is 140 GB
          adapters::adapter_export(whole, adapter_dir, {.base_model = cfg.model.path.string()});
          log::info0("done: {} steps; adapter written to {}", step, adapter_dir.string());
          if (cfg.run.merge) {
            Timer t;
            const fs::path merged_dir = cfg.run.dir / "merged";
            const adapters::MergeReport m =
                adapters::merged_model_write(cfg.model.path, adapter_dir, merged_dir, {.replace = true});
            log::info0("merged model ({} LoRA sites, {} in {} file(s)) written to {} in {:.1f} s", m.n_sites,
                       format_bytes(m.bytes), m.shards.size(), merged_dir.string(), t.seconds());
          }
        },
        kRootWorkWait_s);
  }
  return out;
}

}  // namespace adapt::train
