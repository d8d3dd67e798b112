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
#include <memory>
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

namespace {

/// The run's folders checked (writable) and locked by rank 0 while the job runs: one job at a time in
/// a run folder, since a second (a resubmission while the first still runs) would resume from the
/// first's checkpoints and remove its newer ones. Collective over `world`.
class RunLocks {
 public:
  RunLocks(comm::Communicator& world, const TrainConfig& cfg) {
    on_root(world, "check the run folder", [&] {
      dir_require_writable(cfg.run.dir, "run.dir");
      if (cfg.checkpoint.dir) dir_require_writable(*cfg.checkpoint.dir, "checkpoint.dir");  // else inside run.dir
      run_.emplace(cfg.run.dir / ".lock", fmt::format("run.dir '{}'", cfg.run.dir.string()));
      if (cfg.checkpoint.dir)  // two runs sharing one checkpoint.dir would remove each other's checkpoints
        checkpoints_.emplace(*cfg.checkpoint.dir / ".lock",
                             fmt::format("checkpoint.dir '{}'", cfg.checkpoint.dir->string()));
    });
  }

 private:
  std::optional<FileLock> run_, checkpoints_;
};

/// One training job on this rank, from its checked inputs to the exported adapter: what train_run
/// sets up (in this order, the same collectives on every rank) and the step loop.
class Trainer {
 public:
  Trainer(const TrainConfig& cfg, const std::string& config_toml, TrainRanks& ranks);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  TrainOutcome run();

 private:
  /// What one step did, over every replica.
  struct StepResult {
    double loss = 0;  // mean over the global batch's loss tokens (0 when none carries one)
    double norm = 0;  // the gradient norm before clipping
    double lr = 0;
    std::int64_t tokens = 0;  // of the global batch
    std::int64_t loss_tokens = 0;
    bool updated = false;  // false when no token carries a loss: the adapter stays as it was
  };

  tokenizer::Tokenizer checked_tokenizer() const;
  TrainData prepare_data() const;
  model::LlamaModel load_model() const;
  void connect_device_comms();
  void make_optimizer();
  void resume();
  void open_run_folder();
  void write_metrics(const json& j) {
    if (metrics_) metrics_->write(j);
  }
  void save(double last_loss);
  /// The eval loss over data.eval_batches batches, every replica's rows; -1 without eval data.
  double evaluate();
  void evaluate_and_log(std::int64_t at_step, TrainOutcome* out);
  void measure_setup();
  StepResult train_step();
  void log_step(const StepResult& r, double secs, std::int64_t comm_bytes, double avg_step_s);
  void export_adapter();

  const TrainConfig& cfg_;
  const std::string& config_toml_;
  TrainRanks& ranks_;
  comm::Communicator& world_;
  comm::Communicator& dp_;
  comm::Communicator& tp_;
  comm::Communicator& pp_;
  const std::optional<int> device_;
  // tp or pp > 1: each rank loads only its slices of the weights, and on GPUs the model's collectives
  // take the device communicators.
  const bool sharded_;
  const fs::path ckpt_dir_;
  // Folders that cannot be written fail the job before the data and the weights are read.
  const RunLocks locks_;
  // The job against the model's config, and the data, before the weights are read: a bad input fails
  // in seconds, not after minutes of loading.
  const tokenizer::Tokenizer tok_;
  TrainData data_;
  model::LlamaModel model_;
  // With the model on GPUs, its tp collectives and the pipeline's transfers take device buffers: NCCL
  // where every rank of the group has its own GPU, else MPI staging them through host memory. The
  // host-side work (the optimizer, checkpoints, the gradient sum over the stages) keeps the host
  // communicators of `ranks.comms`. With dp > 1 and no offload the optimizer state stays on the GPUs
  // too (DpOptimizer's DeviceAdamW), and the replicas average (under ZeRO-1: reduce-scatter) their
  // device gradients over a device dp communicator.
  const bool device_dp_;
  comm::GridComms device_comms_;
  comm::Communicator* model_pp_;
  const std::string fingerprint_;
  adapters::AdapterSet set_;
  const std::int64_t n_adapter_;  // the whole adapter's parameters (before the tp split)
  std::vector<adapters::AdapterParam> params_;
  // optim.overlap (with offload): each layer's gradients leave for the host mirrors as the step's last
  // backward finishes the layer, and the CPU AdamW runs during the next step's forward, which waits per
  // layer (AdapterSet's gradient stream and forward gate); under ZeRO-1 over dp > 1 the gate also
  // all-gathers the layer's unit, so every replica's forward passes the gates in the same order.
  const bool overlap_;
  std::unique_ptr<DpOptimizer> opt_;
  bool device_opt_ = false;  // the optimizer state on the GPU (optim.offload = false on a GPU)
  // What each parameter is a slice of (whole tensors until the set is sharded over tp): checkpoints hold
  // the whole tensors, gathered over tp on save and cut again on resume.
  std::vector<parallel::TensorSlice> slices_;
  std::map<std::string, std::size_t> param_of_;  // "adapter/x", "optim/m/x", "optim/v/x" -> index of x
  const optim::LrSchedule sched_;
  const LoaderOptions loader_options_;
  DataLoader loader_;
  std::int64_t step_ = 0;
  std::optional<MetricsFile> metrics_;  // rank 0's
  double flops_per_token_ = 0;
  double peak_tflops_ = 0;  // of one rank's device; 0: no MFU
  std::optional<model::TrainWorkspace> ws_;
  model::SavedInputs kept_;
};

Trainer::Trainer(const TrainConfig& cfg, const std::string& config_toml, TrainRanks& ranks)
    : cfg_(cfg),
      config_toml_(config_toml),
      ranks_(ranks),
      world_(ranks.world),
      dp_(*ranks.comms.dp),
      tp_(*ranks.comms.tp),
      pp_(*ranks.comms.pp),
      device_(ranks.device),
      sharded_(ranks.grid.tp_size() > 1 || ranks.grid.pp_size() > 1),
      ckpt_dir_(cfg.checkpoint.dir.value_or(cfg.run.dir / "checkpoints")),
      locks_(world_, cfg),
      tok_(checked_tokenizer()),
      data_(prepare_data()),
      model_(load_model()),
      device_dp_(device_ && dp_.size() > 1 && !cfg.optim.offload),
      model_pp_(&pp_),
      fingerprint_(model_fingerprint(cfg.model.path)),
      // The whole set on every rank (the same seed), then each tp rank keeps its slices of the LoRA
      // factors. Every pipeline stage holds the adapters of every layer and updates all of them with
      // the gradients summed over the stages (sum_gradients), so all stages hold the same adapter.
      set_(model_.config, cfg.adapter),
      n_adapter_(set_.n_parameters()),
      overlap_(cfg.optim.offload && cfg.optim.overlap),
      sched_{optim::parse_lr_schedule(cfg.optim.schedule), cfg.optim.lr, cfg.optim.warmup_steps, cfg.train.steps,
             cfg.optim.min_lr_ratio},
      loader_options_{.global_batch_size = cfg.train.micro_batch, .dp_rank = dp_.rank(), .dp_size = dp_.size()},
      loader_(data_.train, cfg.data.seed, loader_options_) {
  connect_device_comms();
  make_optimizer();
}

tokenizer::Tokenizer Trainer::checked_tokenizer() const {
  tokenizer::Tokenizer tok =
      tokenizer::Tokenizer::from_file(cfg_.model.tokenizer ? *cfg_.model.tokenizer : cfg_.model.path);
  const model::LlamaConfig mc = model::llama_config_load(cfg_.model.path);
  ADAPT_REQUIRE(tok.n_vocab() <= mc.vocab_size, ConfigError,
                "the tokenizer has {} tokens but the model's vocab_size is {}; use the model's own tokenizer",
                tok.n_vocab(), mc.vocab_size);
  train_model_check(cfg_, mc);
  return tok;
}

TrainData Trainer::prepare_data() const {
  // Rank 0 tokenizes (or reuses the cache); every rank then opens the same cache files. A first
  // tokenization of a large corpus may outlast a collective's timeout: the others wait up to a day.
  on_root(
      world_, "prepare the token cache",
      [&] {
        token_cache_update(cfg_.data, DataInputs::Train, tok_);
        if (!cfg_.data.eval_inputs.empty()) token_cache_update(cfg_.data, DataInputs::Eval, tok_);
      },
      kRootWorkWait_s);
  return train_data_open(cfg_.data, tok_);
}

model::LlamaModel Trainer::load_model() const {
  model::LlamaLoadStats stats;
  // With tp or pp (sharded_), each rank reads only its slices of the weights (its stage's layers, its
  // heads, FFN columns and vocabulary rows).
  // For a GPU the weights are read as stored (bf16 stays bf16: half the host memory) and converted to
  // runtime.weights_dtype on the way to the device, which then holds the only copy. On the CPU: f32, or
  // bf16 for bf16 products (runtime.cpu_matmul_dtype).
  const bool cpu_bf16 = !device_ && cfg_.runtime.cpu_matmul_dtype == DType::BF16;
  const model::WeightStorage storage = device_    ? model::WeightStorage::AsStored
                                       : cpu_bf16 ? model::WeightStorage::Bf16
                                                  : model::WeightStorage::F32;
  ops::set_cpu_matmul_dtype(cpu_bf16 ? DType::BF16 : DType::F32);
  if (cpu_bf16) log::info0("{}", ops::cpu_matmul_note());
  // Pipeline stages balanced by work: the last one runs the head for every token.
  model::LlamaModel model =
      sharded_ ? model::llama_model_load_tp(cfg_.model.path, ranks_.grid, world_.rank(), tp_,
                                            {.storage = storage, .stage_split = parallel::kTrainSplit}, &stats)
               : model::llama_model_load(cfg_.model.path, {.storage = storage}, &stats);
  log::info0("base model {}: {} layers, {} parameters, loaded in {:.2f} s", cfg_.model.path.string(),
             model.config.n_layers, format_count(model::llama_param_counts(model.config).total), stats.seconds);
  return model::llama_model_place(std::move(model),
                                  {.device = device_,
                                   .weights_dtype = cfg_.runtime.weights_dtype,
                                   .weights_device_layers = cfg_.runtime.weights_device_layers,
                                   .attention_dtype = cfg_.runtime.attention_dtype,
                                   .cpu_matmul_dtype = cfg_.runtime.cpu_matmul_dtype},
                                  world_.rank(), world_.size());
}

void Trainer::connect_device_comms() {
  if (!device_ || !(sharded_ || device_dp_)) return;
  device_comms_ = comm::device_grid_comms_for_model(world_, ranks_.grid, *device_, tp_.options(), device_dp_);
  if (sharded_) {
    model_.tp.comm = device_comms_.tp.get();
    model_pp_ = device_comms_.pp.get();
  }
}

void Trainer::make_optimizer() {
  set_.shard_for_tp(model_.tp);
  // On a GPU the hook's parameters and gradients live there. Without offload the optimizer works there
  // too (DpOptimizer's DeviceAdamW); otherwise the optimizer, the reductions and the checkpoints take
  // the host mirrors, which move through gradients_to_host / values_from_host (or, with optim.overlap,
  // the gradient stream and the optimizer's direct write-backs).
  if (device_) set_.to_device(*device_);
  params_ = set_.host_parameters();
  opt_ = std::make_unique<DpOptimizer>(
      params_, optim::AdamWOptions{cfg_.optim.beta1, cfg_.optim.beta2, cfg_.optim.eps, cfg_.optim.weight_decay}, dp_,
      DpOptimizerOptions{.zero1 = cfg_.parallel.zero1,
                         .tp = &tp_,
                         .offload = dp_offload_options(cfg_.optim.offload),
                         .overlap = overlap_,
                         .device_params = device_ ? set_.parameters() : std::vector<adapters::AdapterParam>{},
                         .device_dp = device_dp_ ? device_comms_.dp.get() : nullptr});
  DpOptimizer& opt = *opt_;
  if (overlap_) {
    set_.set_gradient_stream([&opt](int, std::size_t first, std::size_t end) { opt.stream_grads(first, end); });
    if (opt.overlapped())
      set_.set_forward_gate([&opt](int, std::size_t first, std::size_t end) { opt.wait_params(first, end); });
  }
  // optim.offload = false on a GPU: the dp average (or ZeRO-1's reduce-scatter and all-gather), the
  // moments, the norm and the update stay on the GPU.
  device_opt_ = opt.on_device() != nullptr;
  slices_ = set_.tp_param_slices();
  for (std::size_t i = 0; i < params_.size(); ++i)
    for (const char* prefix : {"adapter/", "optim/m/", "optim/v/"}) param_of_[prefix + params_[i].name] = i;
  log::info0("adapter {}: {} parameters in {} tensors", adapters::adapter_kind_name(cfg_.adapter.kind),
             format_count(n_adapter_), params_.size());
  if (ranks_.grid.world_size() > 1)
    log::info0("layout {} ({} ranks): {} sequences per micro-step, {} per replica{}{}; optimizer state {}",
               ranks_.grid.str(), ranks_.grid.world_size(), cfg_.train.micro_batch, cfg_.train.micro_batch / dp_.size(),
               tp_.size() > 1 ? fmt::format("; weights and LoRA factors split over {} tp ranks", tp_.size()) : "",
               pp_.size() > 1 ? fmt::format("; layers in {} pipeline stages of {} (1F1B over the {} micro-batches)",
                                            pp_.size(), stage_split(model_.config, model_.stage), cfg_.train.grad_accum)
                              : "",
               cfg_.parallel.zero1 && dp_.size() > 1 ? "partitioned over dp (ZeRO-1)" : "replicated");
}

void Trainer::resume() {
  // Rank 0 picks the checkpoint (the newest that verifies); every rank reads that file.
  std::string latest;
  on_root(world_, "find the latest checkpoint", [&] {
    if (checkpoint::checkpoint_exists(ckpt_dir_)) latest = checkpoint::checkpoint_latest(ckpt_dir_).string();
  });
  latest = broadcast_string(world_, latest);
  if (latest.empty()) return;
  const fs::path path = latest;
  checkpoint::CheckpointState st = checkpoint::checkpoint_load(path, {.expected_base_model_fingerprint = fingerprint_});
  // The job as the checkpoint's run had it: what differs is said (a longer train.steps, another
  // optim.lr), and named when it makes the checkpoint unusable.
  const std::vector<std::string> changed =
      st.config_toml.empty() ? std::vector<std::string>{} : job_differences(st.config_toml, config_toml_);
  // What the refusals below end with: the differences, and what to do.
  const std::string remedy = fmt::format(
      "{} Restore the checkpoint's adapter settings, or start this job in another run.dir (or "
      "checkpoint.dir)",
      changed.empty() ? std::string()
                      : fmt::format(" This job differs from the checkpoint's in: {}.", fmt::join(changed, "; ")));
  // Settings that change what the saved weights compute (not their shapes): the resumed model would
  // not be the checkpoint's.
  const bool lora = adapters::kind_has_lora(cfg_.adapter.kind), bn = adapters::kind_has_bottleneck(cfg_.adapter.kind);
  for (const std::string& d : changed)
    for (const auto& [key, used] :
         {std::pair{"adapter.lora.alpha ", lora}, std::pair{"adapter.lora.use_rslora ", lora},
          std::pair{"adapter.bottleneck.scaling ", bn}, std::pair{"adapter.bottleneck.activation ", bn},
          std::pair{"adapter.bottleneck.residual_before_ln ", bn}})
      ADAPT_REQUIRE(!used || d.rfind(key, 0) != 0, IoError,
                    "checkpoint '{}' was trained with another {}: its adapter computes something else with this "
                    "job's.{}",
                    path.string(), std::string_view(key).substr(0, std::string_view(key).size() - 1), remedy);
  const std::string kind = adapters::adapter_kind_name(cfg_.adapter.kind);
  if (const auto it = st.strings.find(kCheckpointKindKey); it != st.strings.end())
    ADAPT_REQUIRE(it->second == kind, IoError,
                  "checkpoint '{}' was written for adapter.kind = \"{}\" but this run trains \"{}\"; resume with "
                  "the checkpoint's kind, or start the new kind in another run.dir (or checkpoint.dir)",
                  path.string(), it->second, kind);
  for (const auto& [key, t] : st.tensors)
    ADAPT_REQUIRE(key.rfind("adapter/", 0) != 0 || param_of_.count(key), IoError,
                  "checkpoint '{}' holds '{}', which this run's adapter does not have: it was written for another "
                  "adapter configuration.{}",
                  path.string(), key, remedy);
  // Whole tensors in the file; each rank takes its tp slice.
  std::map<std::string, Tensor> local;
  opt_->restore([&](const std::string& key) -> const Tensor& {
    auto it = st.tensors.find(key);
    ADAPT_REQUIRE(it != st.tensors.end(), IoError,
                  "checkpoint '{}' has no tensor '{}': it was written for another adapter configuration.{}",
                  path.string(), key, remedy);
    const parallel::TensorSlice& slice = slices_[param_of_.at(key)];
    ADAPT_REQUIRE(it->second.shape() == slice.global, IoError,
                  "checkpoint '{}': tensor '{}' has shape {} but this run's adapter needs {}: the adapter settings "
                  "changed since the checkpoint was written.{}",
                  path.string(), key, it->second.shape().str(), slice.global.str(), remedy);
    return local[key] = parallel::shard_take(it->second, slice);
  });
  set_.values_from_host();  // the restored values into the device parameters (no-op on the host)
  opt_->set_n_steps(st.ints.at("optim/n_steps"));
  loader_.restore(DataLoaderState::from_ints(st.ints, path.string()));
  // Dropout masks continue the checkpoint's only with its seed (where both jobs draw masks).
  if (const auto it = st.ints.find("rng/dropout_seed"); it != st.ints.end() && lora && cfg_.adapter.lora.dropout > 0)
    ADAPT_REQUIRE(it->second == cfg_.adapter.seed, ConfigError,
                  "checkpoint '{}' drew its LoRA dropout masks with adapter.seed = {}, this job has adapter.seed = {}; "
                  "set adapter.seed = {} to resume that run (or start a new one in another run.dir)",
                  path.string(), it->second, cfg_.adapter.seed, it->second);
  step_ = st.step;
  log::info0("resuming from {} at step {}", path.string(), step_);
  if (!changed.empty() && world_.rank() == 0)
    log::warn("resuming with settings that differ from the checkpoint's job: {}", fmt::join(changed, "; "));
  // The learning rate goes on from this job's schedule at this step; say so where it is not the rate
  // the checkpoint's run would have taken next.
  if (const auto it = st.floats.find("sched/next_lr"); it != st.floats.end() && world_.rank() == 0) {
    const double next = optim::lr_at(sched_, step_);
    if (std::abs(next - it->second) > 1e-12 * std::max(std::abs(next), std::abs(it->second)))
      log::warn(
          "the learning rate of step {} is {:.6g} under this job's [optim] and train.steps; the checkpoint's "
          "run would have used {:.6g}",
          step_ + 1, next, it->second);
  }
  if (step_ >= cfg_.train.steps && world_.rank() == 0)
    log::warn(
        "checkpoint '{}' is at step {}, which already reaches train.steps = {}: nothing is left to train, "
        "so this job only exports the checkpoint's adapter. Raise train.steps to train further.",
        path.string(), step_, cfg_.train.steps);
  const std::string layout = ranks_.grid.str();
  if (!st.world_layout.empty() && st.world_layout != layout)
    log::info0("the checkpoint was written at {}; continuing at {}", st.world_layout, layout);
}

void Trainer::open_run_folder() {
  // The job as it runs, written once the checkpoint (if any) is known to fit it.
  on_root(world_, "write the run folder", [&] { file_write_atomic(cfg_.run.dir / "config.toml", config_toml_); });
  on_root(world_, "open the metrics file", [&] { metrics_.emplace(cfg_.run.dir / "metrics.jsonl", step_); });
}

void Trainer::save(double last_loss) {
  opt_->finish();  // an overlapped update complete (state() would wait for it too)
  // Whole tensors: moments gathered over dp (ZeRO-1), slices over tp; rank 0 writes the file. The
  // gathers are every rank's report that its part is there; rank 0's status reaches all ranks.
  std::map<std::string, Tensor> tensors = opt_->state();
  for (auto& [key, t] : tensors) {
    const parallel::TensorSlice& slice = slices_[param_of_.at(key)];
    if (slice.dim == parallel::ShardDim::None) continue;
    Tensor whole = Tensor::zeros(slice.global, DType::F32, key);
    parallel::tp_gather(whole, t, slice.dim, tp_);
    t = whole;
  }
  on_root(
      world_, "write the checkpoint",
      [&] {
        checkpoint::CheckpointState st;
        st.step = step_;
        st.base_model_fingerprint = fingerprint_;
        st.world_layout = ranks_.grid.str();
        st.config_toml = config_toml_;
        st.tensors = std::move(tensors);
        st.ints = loader_.state().to_ints();
        st.ints["optim/n_steps"] = opt_->n_steps();
        // The random state beside the loader's (data/seed, epoch, position): LoRA dropout masks are a
        // hash of (rng/dropout_seed, step, micro-batch, site, element), so with the step that seed is
        // all of it (stored when the job draws masks). The LR schedule: its settings and the rates
        // around this step.
        if (adapters::kind_has_lora(cfg_.adapter.kind) && cfg_.adapter.lora.dropout > 0)
          st.ints["rng/dropout_seed"] = cfg_.adapter.seed;
        st.strings["sched/kind"] = cfg_.optim.schedule;
        st.floats["sched/peak_lr"] = sched_.lr;
        st.ints["sched/warmup_steps"] = sched_.warmup_steps;
        st.ints["sched/total_steps"] = sched_.total_steps;
        st.floats["sched/min_lr_ratio"] = sched_.min_lr_ratio;
        st.floats["sched/last_lr"] = step_ > 0 ? optim::lr_at(sched_, step_ - 1) : 0.0;
        st.floats["sched/next_lr"] = optim::lr_at(sched_, step_);
        st.floats["train/loss"] = last_loss;
        st.strings[kCheckpointKindKey] = adapters::adapter_kind_name(cfg_.adapter.kind);
        checkpoint::checkpoint_save(
            ckpt_dir_, st, {.keep_last = static_cast<int>(std::min<std::int64_t>(cfg_.checkpoint.keep_last, 1 << 30))});
      },
      kCheckpointWait_s);
}

double Trainer::evaluate() {
  opt_->finish();  // an overlapped update complete before the weights are read outside a training forward
  if (!data_.eval) return -1.0;
  EvalLoader ev(data_.eval, loader_options_);
  const std::int64_t n = std::min(cfg_.train.eval_batches, ev.n_batches());
  set_.set_training(false);
  double sums[2] = {0, 0};  // loss, loss tokens: this replica's rows, then all replicas'
  model::TrainWorkspace ews(model::model_allocator(model_));
  if (pp_.size() > 1) {
    // Every stage takes the same batches: each passes them through its layers once, forward only.
    std::vector<Batch> batches;
    std::vector<model::TrainInputs> in;
    for (std::int64_t k = 0; k < n; ++k) batches.push_back(ev.batch(k));
    for (Batch& b : batches) in.push_back(wrap_batch(b));
    if (!in.empty()) {
      const model::PipelineResult r =
          model::llama_pipeline_train(model_, in, &set_, *model_pp_, {.backward = false}, &ews);
      sums[0] = r.loss_sum;
      sums[1] = static_cast<double>(r.n_loss_tokens);
    }
  } else {
    for (std::int64_t k = 0; k < n; ++k) {
      Batch b = ev.batch(k);
      model::TrainResult r = model::llama_train_step(model_, wrap_batch(b), &set_, {.backward = false}, &ews);
      sums[0] += r.loss_sum;
      sums[1] += static_cast<double>(r.n_loss_tokens);
    }
  }
  dp_.all_reduce(sums, 2, comm::CommDType::F64, comm::ReduceOp::Sum);
  set_.set_training(true);
  return sums[1] > 0 ? sums[0] / sums[1] : -1.0;
}

/// Evaluates, and with eval data writes the metrics record and the log line (step 0: the base model's,
/// the adapter starting as an exact no-op); `out` takes the loss after training steps.
void Trainer::evaluate_and_log(std::int64_t at_step, TrainOutcome* out) {
  const double e = evaluate();
  if (e < 0) return;
  if (out != nullptr) out->last_eval_loss = e;
  write_metrics({{"kind", "eval"}, {"step", at_step}, {"eval_loss", e}, {"eval_ppl", std::exp(e)}});
  if (at_step == 0) {
    log::info0("eval before training (the base model): loss {:.4f}  perplexity {:.3f}", e, std::exp(e));
  } else {
    log::info0("eval at step {}: loss {:.4f}  perplexity {:.3f}", at_step, e, std::exp(e));
  }
}

/// MFU's terms: the model FLOPs of a token, and the peak of every rank's device (runtime.peak_tflops, or
/// a known GPU's dense bf16 peak with bf16 weights). Also the layer inputs the steps keep.
void Trainer::measure_setup() {
  flops_per_token_ = plan::train_model_flops_per_token(model_.config, cfg_.adapter, cfg_.data.seq_len);
  peak_tflops_ = cfg_.runtime.peak_tflops;
  std::string peak_from = "runtime.peak_tflops";
  if (peak_tflops_ <= 0 && device_ && cfg_.runtime.weights_dtype == DType::BF16) {
    if (const std::optional<plan::GpuSpec> g = plan::gpu_preset_of_device(backend::cuda_device_name(*device_))) {
      peak_tflops_ = g->bf16_tflops;
      peak_from = g->name + " dense bf16";
    }
  }
  if (peak_tflops_ > 0) {
    log::info0("MFU against {:.4g} TFLOP/s per rank ({}), {:.4g} GFLOP of model work per token", peak_tflops_,
               peak_from, flops_per_token_ / 1e9);
  } else {
    log::info0("{:.4g} GFLOP of model work per token; no MFU: give runtime.peak_tflops, the peak of one rank's {}",
               flops_per_token_ / 1e9, device_ ? "GPU" : "CPU cores");
  }
  // Sharded or bf16 layer inputs where they save memory on this stage (adapt_plan counts the same).
  kept_ = model::saved_inputs_for(model_.tp.size, model::stage_layer_range(model_.config, model_.stage).count,
                                  cfg_.train.shard_saved_inputs,
                                  cfg_.train.saved_inputs_dtype == "bf16" ? DType::BF16 : DType::F32);
}

Trainer::StepResult Trainer::train_step() {
  set_.zero_grad();
  std::vector<Batch> micro;
  std::int64_t n_loss = 0;     // loss tokens of the whole global batch (every replica's rows)
  double sums[3] = {0, 0, 0};  // loss, loss tokens, tokens: this replica's rows, then all replicas'
  for (std::int64_t k = 0; k < cfg_.train.grad_accum; ++k) {
    micro.push_back(loader_.next());
    n_loss += micro.back().n_loss_tokens_global;
    sums[1] += static_cast<double>(micro.back().n_loss_tokens);
    sums[2] += static_cast<double>(micro.back().n_rows * micro.back().seq_len);
  }
  // LoRA dropout masks by row of the micro-step's global batch: this replica's rows start after those
  // of the ranks before it (DataLoader's slices), so a row's mask is the same on any layout.
  auto dp_row_offset = [&](const Batch& b) { return static_cast<std::int64_t>(dp_.rank()) * b.n_rows * b.seq_len; };
  // Each replica's gradient is its share of the global mean's; dp_average_gradients divides the sum
  // by dp, so the scale carries a factor dp.
  const float scale = n_loss > 0 ? static_cast<float>(dp_.size()) / static_cast<float>(n_loss) : 0.0f;
  if (pp_.size() > 1) {
    // Every stage gets the same micro-batches and the same loss back.
    std::vector<model::TrainInputs> in;
    for (Batch& b : micro) in.push_back(wrap_batch(b));
    const model::PipelineResult r = model::llama_pipeline_train(
        model_, in, &set_, *model_pp_,
        {.loss_scale = scale,
         .recompute = cfg_.train.recompute,
         .shard_saved_inputs = kept_.shard,
         .saved_input_dtype = kept_.dtype,
         .before_micro = [&](int k) { set_.set_step(step_, k, dp_row_offset(micro[static_cast<std::size_t>(k)])); },
         // The stage's last backward finishes its layers' gradients: they leave as it goes.
         .before_last_backward =
             [&] {
               if (overlap_) set_.arm_gradient_stream();
             }},
        &*ws_);
    sums[0] = r.loss_sum;
  } else {
    for (std::size_t k = 0; k < micro.size(); ++k) {
      set_.set_step(step_, static_cast<std::int64_t>(k), dp_row_offset(micro[k]));
      // The last micro-batch's backward finishes each layer's gradients: they leave as it goes.
      if (overlap_ && k + 1 == micro.size()) set_.arm_gradient_stream();
      // Logits in 256-row chunks (the default): (N, V) is never held whole (2 GB at 4096 tokens for Llama
      // 3's vocabulary), here, in evaluate() and in the pipeline's stages.
      model::TrainResult r = model::llama_train_step(model_, wrap_batch(micro[k]), &set_,
                                                     {.recompute = cfg_.train.recompute,
                                                      .shard_saved_inputs = kept_.shard,
                                                      .saved_input_dtype = kept_.dtype,
                                                      .loss_scale = scale},
                                                     &*ws_);
      sums[0] += r.loss_sum;
    }
  }
  // The whole adapter's gradient on every rank of the replica: the partial sums of the LoRA
  // factors over tp, the stages' layers over pp; then the average over dp (loss and tokens too: the
  // tp and pp ranks of a replica hold the same ones).
  DpOptimizer& opt = *opt_;
  if (overlap_) {
    // The layers not streamed during the backward (under the pipeline schedule, the other stages'),
    // then the wait for the copies into the host mirrors.
    set_.end_gradient_stream();
    opt.wait_streamed_grads();
  } else {
    set_.tp_reduce_gradients();
    // A GPU's gradients into the host mirrors that `params` and `opt` hold, unless the optimizer
    // state is on the GPU too (optim.offload = false): then they stay there.
    if (!device_opt_) set_.gradients_to_host();
  }
  // The sum over the pipeline stages: each stage's backward reaches the adapters of its own layers only
  // (the others' gradients are zero there), so afterwards every stage holds the gradient of the whole
  // adapter and applies the same update to all of it. Device gradients (the optimizer state on the
  // GPU) go over the model's pp communicator, which takes device buffers (NCCL, or MPI staging them).
  if (device_opt_) {
    sum_gradients(set_.parameters(), *model_pp_);
  } else {
    sum_gradients(params_, pp_);
  }
  dp_.all_reduce(sums, 3, comm::CommDType::F64, comm::ReduceOp::Sum);
  ADAPT_CHECK(static_cast<std::int64_t>(sums[1]) == n_loss, "step {}: the replicas hold {} loss tokens, the batch {}",
              step_ + 1, sums[1], n_loss);
  StepResult r;
  r.tokens = static_cast<std::int64_t>(sums[2]);
  r.loss_tokens = n_loss;
  r.loss = n_loss > 0 ? sums[0] / static_cast<double>(n_loss) : 0.0;
  // No token of the global batch carries a loss (every row masked, e.g. prompt-only rows under
  // data.loss_on_completions_only): no gradient, so no update, where AdamW would still move the weights
  // (its moments, weight decay) and count a step. The step and the data go on.
  r.updated = n_loss > 0;
  r.norm = r.updated ? opt.reduce_and_clip(cfg_.optim.max_grad_norm) : 0.0;
  r.lr = optim::lr_at(sched_, step_);
  if (!std::isfinite(r.loss) || !std::isfinite(r.norm)) {
    ADAPT_THROW(TrainingDiverged,
                "training diverged at step {}: loss = {}, gradient norm = {} (lr {:.3g}). Nothing was updated and "
                "the checkpoints in '{}' are untouched. Lower optim.lr, raise optim.warmup_steps or check the data.",
                step_ + 1, r.loss, r.norm, r.lr, ckpt_dir_.string());
  }
  if (!r.updated) {
    opt.finish();
    if (world_.rank() == 0)
      log::warn(
          "step {}: no token of the batch carries a loss (all its rows are masked): the adapter is not "
          "updated at this step",
          step_ + 1);
  } else if (opt.overlapped()) {
    // The CPU update runs while the next forward computes; each layer of it waits for its own weights,
    // which go straight to the GPU. Whatever else reads them first calls opt.finish().
    opt.step_async(r.lr);
    set_.arm_forward_gate();
  } else {
    opt.step(r.lr);
    if (!device_opt_) set_.values_from_host();  // the updated mirrors back to the GPU
  }
  ++step_;
  return r;
}

/// The step's metrics record and, every train.log_every steps, its log line.
void Trainer::log_step(const StepResult& r, double secs, std::int64_t comm_bytes, double avg_step_s) {
  const double tps = static_cast<double>(r.tokens) / std::max(secs, 1e-9);
  const double model_tflops = flops_per_token_ * tps / 1e12;
  json record = {{"kind", "train"},         {"step", step_},
                 {"loss", r.loss},          {"lr", r.lr},
                 {"grad_norm", r.norm},     {"tokens_per_s", tps},
                 {"tokens", r.tokens},      {"loss_tokens", r.loss_tokens},
                 {"step_s", secs},          {"model_tflops", model_tflops},
                 {"comm_bytes", comm_bytes}};
  if (!r.updated) {  // no loss to plot (plot_metrics.py skips it), not a loss of 0
    record.erase("loss");
    record["skipped"] = true;
  }
  std::string mfu;
  if (peak_tflops_ > 0) {
    const double m = model_tflops / (peak_tflops_ * world_.size());
    record["mfu"] = m;
    mfu = fmt::format("  MFU {:.1f}%", 100 * m);
  }
  // The overlapped CPU AdamW of the previous step: how long this step's forward (and clipping) waited
  // for it, i.e. what the compute did not hide.
  if (opt_->overlapped()) record["optim_wait_s"] = opt_->take_wait_seconds();
  record["host_rss_peak"] = host_rss_peak_bytes();  // rank 0's process: the model on the CPU, pinned buffers
  if (device_) {
    // Rank 0's GPU since the start: what its tensors held at most (allocated) and what the caching
    // allocator took from CUDA (reserved); adapt_plan's per-GPU memory is checked against the first.
    const backend::MemoryStats ms = backend::cuda_memory_stats(*device_);
    record["device_allocated_peak"] = ms.allocated_peak;
    record["device_reserved_peak"] = ms.reserved_peak;
  }
  write_metrics(record);
  if (step_ % cfg_.train.log_every == 0 || step_ == cfg_.train.steps) {
    log::info0("step {}/{}  loss {:.4f}  lr {:.3g}  grad-norm {:.3f}  {:.0f} tokens/s  {:.3g} TFLOP/s{}  ETA {}", step_,
               cfg_.train.steps, r.loss, r.lr, r.norm, tps, model_tflops, mfu,
               eta(avg_step_s * static_cast<double>(cfg_.train.steps - step_)));
  }
}

void Trainer::export_adapter() {
  const fs::path adapter_dir = cfg_.run.dir / "adapter";
  const adapters::AdapterSet whole = set_.tp_gathered();  // collective over tp
  on_root(
      world_, "export the adapter",
      [&] {  // up to a day: a merged 70B model is 140 GB
        adapters::adapter_export(whole, adapter_dir, {.base_model = cfg_.model.path.string()});
        log::info0("done: {} steps; adapter written to {}", step_, adapter_dir.string());
        if (cfg_.run.merge) {
          Timer t;
          const fs::path merged_dir = cfg_.run.dir / "merged";
          const adapters::MergeReport m =
              adapters::merged_model_write(cfg_.model.path, adapter_dir, merged_dir, {.replace = true});
          log::info0("merged model ({} LoRA sites, {} in {} file(s)) written to {} in {:.1f} s", m.n_sites,
                     format_bytes(m.bytes), m.shards.size(), merged_dir.string(), t.seconds());
        }
      },
      kRootWorkWait_s);
}

TrainOutcome Trainer::run() {
  resume();
  open_run_folder();
  measure_setup();
  TrainOutcome out;
  StopSignalGuard signals;
  set_.set_training(true);
  ws_.emplace(model::model_allocator(model_));
  Timer run_timer;
  const std::int64_t first_step = step_;
  double last_loss = 0;
  if (step_ == 0) evaluate_and_log(0, nullptr);  // the adapter starts as an exact no-op: the base model's loss
  const std::int64_t stop_at =
      cfg_.train.stop_after ? std::min(cfg_.train.steps, step_ + *cfg_.train.stop_after) : cfg_.train.steps;
  while (step_ < cfg_.train.steps) {
    if (step_ == stop_at) {
      log::info0("stopping after {} steps of this run as train.stop_after asks; run the job again to resume",
                 *cfg_.train.stop_after);
      if (cfg_.checkpoint.every == 0 || step_ % cfg_.checkpoint.every != 0) save(last_loss);
      out.stopped_early = true;
      break;
    }
    // A signal at any rank stops every rank at this step boundary.
    std::int64_t sig = stop_signal().load();
    world_.all_reduce(&sig, 1, comm::CommDType::I64, comm::ReduceOp::Max);
    if (sig != 0) {
      log::info0("received {} at step {}: writing a checkpoint and stopping (exit code {} asks to be requeued)",
                 stop_signal_name(static_cast<int>(sig)), step_, kExitRequeue);
      save(last_loss);
      out.stopped_by_signal = true;
      break;
    }
    Timer step_timer;
    const std::int64_t comm_bytes_before = grid_comm_bytes(ranks_.comms) + grid_comm_bytes(device_comms_);
    const StepResult r = train_step();
    if (r.updated) last_loss = r.loss;
    const double secs = step_timer.seconds();
    // The step's traffic over every rank: 8 bytes over the world after the timed step.
    std::int64_t comm_bytes = grid_comm_bytes(ranks_.comms) + grid_comm_bytes(device_comms_) - comm_bytes_before;
    if (world_.size() > 1) world_.all_reduce(&comm_bytes, 1, comm::CommDType::I64, comm::ReduceOp::Sum);
    log_step(r, secs, comm_bytes, run_timer.seconds() / static_cast<double>(step_ - first_step));
    const bool last = step_ == cfg_.train.steps;
    if ((cfg_.train.eval_every > 0 && step_ % cfg_.train.eval_every == 0) || last) evaluate_and_log(step_, &out);
    if ((cfg_.checkpoint.every > 0 && step_ % cfg_.checkpoint.every == 0) || last) save(r.loss);
  }
  opt_->finish();  // the last update complete before the export reads the weights
  set_.disarm_forward_gate();
  out.steps_done = step_;
  out.last_loss = last_loss;
  if (!out.stopped_by_signal && !out.stopped_early) export_adapter();
  return out;
}

}  // namespace

TrainOutcome train_run(const TrainConfig& cfg, const std::string& config_toml, TrainRanks& ranks) {
  train_layout_check(cfg, ranks.grid);
  // Checked before anything is read or written, the same on every rank.
  ADAPT_REQUIRE((cfg.runtime.device != "cpu") == ranks.device.has_value(), ConfigError,
                "runtime.device = \"{}\" but train_run was given {}: resolve the device first (adapt_train does, "
                "with apps::app_device_resolve)",
                cfg.runtime.device, ranks.device ? fmt::format("cuda:{}", *ranks.device) : std::string("no device"));
  if (ranks.world.rank() == 0)
    for (const std::string& w : train_job_warnings(cfg)) log::warn("{}", w);
  Trainer trainer(cfg, config_toml, ranks);
  return trainer.run();
}

}  // namespace adapt::train
