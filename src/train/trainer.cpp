#include "train/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_merge.h"
#include "adapters/adapter_set.h"
#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "io/sharded.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "tokenizer/tokenizer.h"
#include "train/data_config_check.h"
#include "train/data_hash.h"
#include "train/data_loader.h"

namespace adapt::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::atomic<int>& train_stop_signal() {
  static std::atomic<int> flag{0};
  return flag;
}

namespace {

/// A diverged run: loss or gradient norm not finite. Exit code 1; the last checkpoint is untouched.
class TrainingDiverged : public Error {
 public:
  TrainingDiverged(std::string m, SourceLoc w) : Error(std::move(m), w, ExitCode::Failure) {}
};

/// The checkpoint string naming the adapter kind, so a run of another kind is refused by name.
constexpr const char* kCheckpointKindKey = "train/adapter_kind";

extern "C" void train_on_signal(int sig) { train_stop_signal().store(sig); }

struct SignalGuard {
  struct sigaction old_usr1 {}, old_term {};
  SignalGuard() {
    struct sigaction sa {};
    sa.sa_handler = train_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old_usr1);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~SignalGuard() {
    sigaction(SIGUSR1, &old_usr1, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

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

std::string train_memory_estimate(const TrainConfig& cfg) {
  const model::LlamaConfig mc = model::llama_config_load(cfg.model.path);
  adapters::adapter_config_validate(cfg.adapter, mc);
  const adapters::AdapterSet set(mc, cfg.adapter);
  const std::int64_t n_adapter = set.n_parameters();
  const std::int64_t n_base = model::llama_param_counts(mc).total;
  const std::int64_t B = cfg.train.micro_batch, T = cfg.data.seq_len, C = mc.hidden_size, F = mc.intermediate_size;
  const std::int64_t q = mc.n_heads * mc.head_dim, kv = mc.n_kv_heads * mc.head_dim;
  // Saved per layer and token (f32): inputs of both norms and their outputs, q/k/v, attention output
  // and its log-sum-exp, gate/up/SwiGLU products, residuals.
  const std::int64_t per_token_layer = 4 * C + q + 2 * kv + q + mc.n_heads + 3 * F;
  const std::uint64_t act_full = static_cast<std::uint64_t>(B * T * mc.n_layers * per_token_layer) * 4;
  const std::uint64_t act_recompute = static_cast<std::uint64_t>(B * T * (mc.n_layers * C + per_token_layer)) * 4;
  const std::uint64_t logits = static_cast<std::uint64_t>(std::min<std::int64_t>(B * T, 256) * mc.vocab_size) * 4;
  const std::uint64_t weights = static_cast<std::uint64_t>(n_base) * 4;
  const std::uint64_t adapter = static_cast<std::uint64_t>(n_adapter) * 4;
  const std::string parts = cfg.adapter.kind == adapters::AdapterKind::LoraBottleneck
                                ? fmt::format(": LoRA {} + bottleneck {}", format_count(set.n_lora_parameters()),
                                              format_count(set.n_bottleneck_parameters()))
                                : "";
  std::string s = fmt::format(
      "memory estimate (one process, CPU, f32):\n"
      "  base weights (frozen)          {:>12}  ({} parameters)\n"
      "  adapter weights                {:>12}  ({} parameters{})\n"
      "  adapter gradients              {:>12}\n"
      "  AdamW moments                  {:>12}\n"
      "  activations, saved             {:>12}  (micro-batch {} x {} tokens){}\n"
      "  activations, with recompute    {:>12}{}\n"
      "  logits and their gradient      {:>12}  (256 rows at a time)\n"
      "  total                          {:>12}\n",
      format_bytes(weights), format_count(n_base), format_bytes(adapter), format_count(n_adapter), parts,
      format_bytes(adapter),
      format_bytes(2 * adapter), format_bytes(act_full), B, T, cfg.train.recompute ? "" : "  <- in use",
      format_bytes(act_recompute), cfg.train.recompute ? "  <- in use" : "", format_bytes(logits),
      format_bytes(weights + 4 * adapter + (cfg.train.recompute ? act_recompute : act_full) + logits));
  return s;
}

TrainOutcome train_run(const TrainConfig& cfg, const std::string& config_toml) {
  TrainOutcome out;
  fs::create_directories(cfg.run.dir);
  file_write_atomic(cfg.run.dir / "config.toml", config_toml);
  const fs::path ckpt_dir = cfg.checkpoint.dir.value_or(cfg.run.dir / "checkpoints");

  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(cfg.model.tokenizer ? *cfg.model.tokenizer : cfg.model.path);
  model::LlamaLoadStats stats;
  const model::LlamaModel model = model::llama_model_load(cfg.model.path, {}, &stats);
  ADAPT_REQUIRE(tok.n_vocab() <= model.config.vocab_size, ConfigError,
                "the tokenizer has {} tokens but the model's vocab_size is {}; use the model's own tokenizer",
                tok.n_vocab(), model.config.vocab_size);
  log::info0("base model {}: {} layers, {} parameters, loaded in {:.2f} s", cfg.model.path.string(), model.config.n_layers,
             format_count(model::llama_param_counts(model.config).total), stats.seconds);
  data_config_validate(cfg.data, model.config.max_position_embeddings);
  adapters::adapter_config_validate(cfg.adapter, model.config);
  const std::string fingerprint = model_fingerprint(cfg.model.path);

  TrainData data = train_data_prepare(cfg.data, tok);
  adapters::AdapterSet set(model.config, cfg.adapter);
  optim::AdamW opt({cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps, cfg.optim.weight_decay});
  std::vector<adapters::AdapterParam> params = set.parameters();
  std::vector<Tensor> grads;
  for (const auto& p : params) {
    opt.add(p.name, p.value, p.grad, p.decay);
    grads.push_back(p.grad);
  }
  log::info0("adapter {}: {} parameters in {} tensors", adapters::adapter_kind_name(cfg.adapter.kind),
             format_count(set.n_parameters()), params.size());
  const optim::LrSchedule sched{optim::parse_lr_schedule(cfg.optim.schedule), cfg.optim.lr, cfg.optim.warmup_steps,
                                cfg.train.steps, cfg.optim.min_lr_ratio};
  DataLoader loader(data.train, cfg.data.seed, {.global_batch_size = cfg.train.micro_batch, .dp_rank = 0, .dp_size = 1});

  std::int64_t step = 0;
  if (checkpoint::checkpoint_exists(ckpt_dir)) {
    const fs::path path = checkpoint::checkpoint_latest(ckpt_dir);
    checkpoint::CheckpointState st = checkpoint::checkpoint_load(path, {.expected_base_model_fingerprint = fingerprint});
    auto restore = [&](const std::string& key, Tensor& dst) {
      auto it = st.tensors.find(key);
      ADAPT_REQUIRE(it != st.tensors.end(), IoError,
                    "checkpoint '{}' has no tensor '{}': it was written for another adapter configuration",
                    path.string(), key);
      ADAPT_REQUIRE(it->second.shape() == dst.shape(), IoError,
                    "checkpoint '{}': tensor '{}' has shape {} but this run's adapter needs {}. The adapter settings "
                    "changed since the checkpoint was written.", path.string(), key, it->second.shape().str(),
                    dst.shape().str());
      dst.copy_from(it->second);
    };
    const std::string kind = adapters::adapter_kind_name(cfg.adapter.kind);
    if (const auto it = st.strings.find(kCheckpointKindKey); it != st.strings.end())
      ADAPT_REQUIRE(it->second == kind, IoError,
                    "checkpoint '{}' was written for adapter.kind = \"{}\" but this run trains \"{}\"; resume with "
                    "the checkpoint's kind, or start the new kind in another run.dir (or checkpoint.dir)",
                    path.string(), it->second, kind);
    std::set<std::string> mine;
    for (const auto& slot : opt.slots()) mine.insert("adapter/" + slot.name);
    for (const auto& [key, t] : st.tensors)
      ADAPT_REQUIRE(key.rfind("adapter/", 0) != 0 || mine.count(key), IoError,
                    "checkpoint '{}' holds '{}', which this run's adapter does not have: it was written for another "
                    "adapter configuration",
                    path.string(), key);
    for (auto& slot : opt.slots()) {
      restore("adapter/" + slot.name, slot.master);
      restore("optim/m/" + slot.name, slot.m);
      restore("optim/v/" + slot.name, slot.v);
    }
    opt.set_n_steps(st.ints.at("optim/n_steps"));
    loader.restore(DataLoaderState::from_ints(st.ints, path.string()));
    step = st.step;
    log::info0("resuming from {} at step {}", path.string(), step);
  }

  MetricsFile metrics(cfg.run.dir / "metrics.jsonl", step);
  auto save = [&](double last_loss) {
    checkpoint::CheckpointState st;
    st.step = step;
    st.base_model_fingerprint = fingerprint;
    st.world_layout = "tp=1 pp=1 dp=1";
    st.config_toml = config_toml;
    for (const auto& slot : opt.slots()) {
      st.tensors["adapter/" + slot.name] = slot.master;
      st.tensors["optim/m/" + slot.name] = slot.m;
      st.tensors["optim/v/" + slot.name] = slot.v;
    }
    st.ints = loader.state().to_ints();
    st.ints["optim/n_steps"] = opt.n_steps();
    st.floats["train/loss"] = last_loss;
    st.strings[kCheckpointKindKey] = adapters::adapter_kind_name(cfg.adapter.kind);
    Timer t;
    const fs::path p = checkpoint::checkpoint_save(ckpt_dir, st, {.keep_last = static_cast<int>(cfg.checkpoint.keep_last)});
    log::info0("checkpoint {} written in {:.2f} s", p.string(), t.seconds());
  };
  auto evaluate = [&]() -> double {
    if (!data.eval) return -1.0;
    EvalLoader ev(data.eval, {.global_batch_size = cfg.train.micro_batch, .dp_rank = 0, .dp_size = 1});
    const std::int64_t n = std::min(cfg.train.eval_batches, ev.n_batches());
    set.set_training(false);
    double sum = 0;
    std::int64_t count = 0;
    model::TrainWorkspace ews;
    for (std::int64_t k = 0; k < n; ++k) {
      Batch b = ev.batch(k);
      model::TrainResult r = model::llama_train_step(model, wrap_batch(b), &set, {.backward = false}, &ews);
      sum += r.loss_sum;
      count += r.n_loss_tokens;
    }
    set.set_training(true);
    return count > 0 ? sum / static_cast<double>(count) : -1.0;
  };

  SignalGuard signals;
  train_stop_signal().store(0);
  set.set_training(true);
  model::TrainWorkspace ws;
  Timer run_timer;
  const std::int64_t first_step = step;
  double last_loss = 0;
  if (step == 0) {  // the adapter starts as an exact no-op: this is the base model's eval loss
    const double e = evaluate();
    if (e >= 0) {
      metrics.write({{"kind", "eval"}, {"step", 0}, {"eval_loss", e}, {"eval_ppl", std::exp(e)}});
      log::info0("eval before training (the base model): loss {:.4f}  perplexity {:.3f}", e, std::exp(e));
    }
  }
  const std::int64_t stop_at = cfg.train.stop_after ? std::min(cfg.train.steps, step + *cfg.train.stop_after)
                                                   : cfg.train.steps;
  while (step < cfg.train.steps) {
    if (step == stop_at) {
      log::info0("stopping after {} steps of this run as train.stop_after asks; run the job again to resume",
                 *cfg.train.stop_after);
      if (cfg.checkpoint.every == 0 || step % cfg.checkpoint.every != 0) save(last_loss);
      out.stopped_early = true;
      break;
    }
    if (int sig = train_stop_signal().load()) {
      log::info0("received signal {} at step {}: writing a checkpoint and stopping (exit code {} asks to be requeued)",
                 sig, step, kExitRequeue);
      save(last_loss);
      out.stopped_by_signal = true;
      break;
    }
    Timer step_timer;
    set.zero_grad();
    std::vector<Batch> micro;
    std::int64_t n_loss = 0, n_tokens = 0;
    for (std::int64_t k = 0; k < cfg.train.grad_accum; ++k) {
      micro.push_back(loader.next());
      n_loss += micro.back().n_loss_tokens_global;
      n_tokens += micro.back().n_rows * micro.back().seq_len;
    }
    double loss_sum = 0;
    const float scale = n_loss > 0 ? 1.0f / static_cast<float>(n_loss) : 0.0f;
    for (std::size_t k = 0; k < micro.size(); ++k) {
      set.set_step(step, static_cast<std::int64_t>(k));
      // Logits in 256-row chunks: (N, V) is never held whole (2 GB at 4096 tokens for Llama 3's vocabulary).
      model::TrainResult r = model::llama_train_step(
          model, wrap_batch(micro[k]), &set,
          {.recompute = cfg.train.recompute, .loss_scale = scale, .logits_chunk_rows = 256}, &ws);
      loss_sum += r.loss_sum;
    }
    const double loss = n_loss > 0 ? loss_sum / static_cast<double>(n_loss) : 0.0;
    const double norm = cfg.optim.max_grad_norm > 0 ? optim::grad_clip_global_norm(grads, cfg.optim.max_grad_norm)
                                                    : optim::grad_global_norm(grads);
    const double lr = optim::lr_at(sched, step);
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      ADAPT_THROW(TrainingDiverged,
                  "training diverged at step {}: loss = {}, gradient norm = {} (lr {:.3g}). Nothing was updated and "
                  "the checkpoints in '{}' are untouched. Lower optim.lr, raise optim.warmup_steps or check the data.",
                  step + 1, loss, norm, lr, ckpt_dir.string());
    }
    opt.step(lr);
    ++step;
    last_loss = loss;
    const double secs = step_timer.seconds();
    const double tps = static_cast<double>(n_tokens) / std::max(secs, 1e-9);
    const double avg = run_timer.seconds() / static_cast<double>(step - first_step);
    metrics.write({{"kind", "train"}, {"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                   {"tokens_per_s", tps}, {"tokens", n_tokens}, {"loss_tokens", n_loss}, {"step_s", secs}});
    if (step % cfg.train.log_every == 0 || step == cfg.train.steps) {
      log::info0("step {}/{}  loss {:.4f}  lr {:.3g}  grad-norm {:.3f}  {:.0f} tokens/s  ETA {}", step, cfg.train.steps,
                 loss, lr, norm, tps, eta(avg * static_cast<double>(cfg.train.steps - step)));
    }
    const bool last = step == cfg.train.steps;
    if ((cfg.train.eval_every > 0 && step % cfg.train.eval_every == 0) || last) {
      const double e = evaluate();
      if (e >= 0) {
        out.last_eval_loss = e;
        metrics.write({{"kind", "eval"}, {"step", step}, {"eval_loss", e}, {"eval_ppl", std::exp(e)}});
        log::info0("eval at step {}: loss {:.4f}  perplexity {:.3f}", step, e, std::exp(e));
      }
    }
    if ((cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0) || last) save(loss);
  }
  out.steps_done = step;
  out.last_loss = last_loss;
  if (!out.stopped_by_signal && !out.stopped_early) {
    const fs::path adapter_dir = cfg.run.dir / "adapter";
    adapters::adapter_export(set, adapter_dir, {.base_model = cfg.model.path.string()});
    log::info0("done: {} steps; adapter written to {}", step, adapter_dir.string());
    if (cfg.run.merge) {
      Timer t;
      const fs::path merged_dir = cfg.run.dir / "merged";
      const adapters::MergeReport m = adapters::merged_model_write(cfg.model.path, adapter_dir, merged_dir, {.replace = true});
      log::info0("merged model ({} LoRA sites, {} in {} file(s)) written to {} in {:.1f} s", m.n_sites,
                 format_bytes(m.bytes), m.shards.size(), merged_dir.string(), t.seconds());
    }
  }
  return out;
}

}  // namespace adapt::train
