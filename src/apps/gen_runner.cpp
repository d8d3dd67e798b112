#include "apps/gen_runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <span>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/stop_signal.h"
#include "core/strings.h"
#include "core/timer.h"
#include "generate/code_blocks.h"
#include "generate/kv_snapshot.h"
#include "generate/results.h"
#include "generate/results_parts.h"
#include "model/kv_cache.h"
#include "train/parallel_util.h"

namespace adapt::apps {

namespace fs = std::filesystem;

namespace {

class GenRun {
 public:
  GenRun(const GenJobContext& ctx, const std::vector<Prepared>& prepared, generate::Generator& gen, ParallelApp& app);
  int run();

 private:
  /// The prompts of a wave that run, their requests (a turn's prompt made) and progress fingerprints.
  struct Wave {
    std::vector<const Prepared*> running;
    std::vector<generate::GenerationRequest> requests;
    std::vector<std::string> fingerprints;
  };

  void open_results();
  void select_todo();
  void load_conversations();
  std::string turn_request(const Prepared& q, generate::GenerationRequest& r) const;
  void attach_progress(const Prepared& q, generate::GenerationRequest& r, const std::string& fingerprint);
  bool stop_requested();
  void log_plan(const generate::BatchPlan& plan) const;
  fs::path kv_file_of(const std::string& conversation) const;
  /// Takes every pending prompt without a conversation and the next turn of each conversation.
  void run_wave(int wave, std::vector<const Prepared*>& pending);
  void on_finished(const Wave& w, std::size_t index, generate::GenerationOutput&& o);
  std::int64_t load_prefix(const Wave& w, std::size_t index, model::KvCache& cache, std::int64_t row,
                           std::span<const std::int32_t> tokens) const;
  void save_prefix(const Wave& w, std::size_t index, model::KvCache& cache, std::int64_t row,
                   std::span<const std::int32_t> tokens) const;
  /// The totals over every replica, the replicas' part files merged; the exit code.
  int finish(double seconds);

  const GenJobContext& ctx_;
  const generate::GenJob& job_;
  const std::vector<Prepared>& prepared_;
  generate::Generator& gen_;
  ParallelApp& app_;
  // With tp and pp, the ranks of a replica each hold their slices of the weights (tp: heads, FFN,
  // vocabulary and KV heads; pp: a stage's layers) and run every step together; each gets the whole
  // logits, so the same sampler picks the same token on all of them. The replica's first rank (tp 0,
  // pp 0) writes its results.
  comm::Communicator& tp_;
  comm::Communicator& pp_;
  const bool writer_;
  const int dp_, dp_rank_;
  const bool split_kv_;  // tp or pp > 1: every rank keeps its part of a conversation's KV cache

  std::optional<generate::ResultsFile> finished_;  // the merged results, read only (dp > 1)
  std::optional<generate::ResultsFile> results_;   // this replica's records (its writer only)
  std::vector<const Prepared*> todo_;
  std::int64_t n_mine_ = 0;  // this replica's prompts, done ones included
  std::map<std::string, generate::Conversation> conversations_;
  std::set<std::string> failed_conversations_;
  std::string kv_identity_;          // output.conversation_kv: the computation a stored KV cache is of
  std::string fingerprint_context_;  // saved progress belongs to a request of this model and adapter

  std::int64_t n_finished_ = 0, n_generated_ = 0;
  std::int64_t n_failed_ = 0;    // turns that could not run (their conversation is full, ...)
  std::int64_t n_saved_ = 0;     // prompts whose progress this replica saved when it stopped
  std::int64_t stopped_by_ = 0;  // the signal that stopped the run
};

GenRun::GenRun(const GenJobContext& ctx, const std::vector<Prepared>& prepared, generate::Generator& gen,
               ParallelApp& app)
    : ctx_(ctx),
      job_(ctx.job),
      prepared_(prepared),
      gen_(gen),
      app_(app),
      tp_(*app.comms().tp),
      pp_(*app.comms().pp),
      writer_(tp_.rank() == 0 && pp_.rank() == 0),
      dp_(app.grid().dp_size()),
      dp_rank_(app.comms().dp->rank()),
      split_kv_(tp_.size() > 1 || pp_.size() > 1) {
  // output.conversation_kv: each conversation's KV cache beside its JSON, for the computation that made
  // it (model, adapter, device, weights dtype, layout). With tp or pp > 1 every rank keeps its part
  // (its KV heads of its stage's layers) in a file of its own.
  if (job_.output.conversation_kv) {
    kv_identity_ = generate::kv_compute_identity(
        job_.model.path, job_.model.adapter,
        fmt::format(
            "device {} tp {}/{} pp {}/{}",
            ctx.device ? fmt::format("cuda weights {}", dtype_name(job_.runtime.weights_dtype)) : std::string("cpu"),
            tp_.rank(), tp_.size(), pp_.rank(), pp_.size()));
  }
  fingerprint_context_ = fs::weakly_canonical(job_.model.path).string() + "\n" +
                         (job_.model.adapter ? fs::weakly_canonical(*job_.model.adapter).string() : std::string());
}

void GenRun::open_results() {
  fs::create_directories(job_.output.dir);
  // With several replicas, each writes its own part file; parts left by an interrupted multi-rank run
  // are merged first (by rank 0, or the one process).
  train::on_root(app_.world(), "merge the results of an earlier run", [&] {
    if (const std::int64_t n = generate::results_parts_merge(ctx_.results_path); n > 0)
      log::info0("{}: merged {} record(s) left in part files by an earlier run", ctx_.results_path.string(), n);
    if (dp_ > 1)
      generate::ResultsFile check(ctx_.results_path);  // drops a record cut by a crash before the others read
  });
  if (writer_) {
    if (dp_ > 1) finished_.emplace(ctx_.results_path);
    results_.emplace(dp_ > 1 ? generate::results_part_path(ctx_.results_path, dp_rank_, dp_) : ctx_.results_path);
  }
}

void GenRun::select_todo() {
  const generate::PromptShard& shard = ctx_.shard;
  if (shard.count > 1) {
    log::info0(
        "share {} of {}: {} of the {} prompts (positions {} modulo {}; a conversation's later turns go "
        "with its first)",
        shard.index, shard.count, prepared_.size(), job_.prompts.size(), shard.index, shard.count);
  }
  // The writer decides what is left to run; the other ranks of the replica run the same list (from
  // the writer over tp, then from the first stage over pp).
  std::vector<std::uint8_t> skip(prepared_.size(), 0);
  if (writer_) {
    for (std::size_t j = 0; j < prepared_.size(); ++j) {
      const std::string& id = prepared_[j].spec->id;
      skip[j] = results_->done(id) || (finished_ && finished_->done(id));
      // Progress left by a run that stopped between recording a result and removing its progress.
      if (skip[j]) ctx_.progress_store.remove(id);
    }
  }
  for (comm::Communicator* group : {&tp_, &pp_})
    if (group->size() > 1 && !skip.empty())
      group->broadcast(skip.data(), static_cast<std::int64_t>(skip.size()), comm::CommDType::U8, 0);
  std::vector<const generate::PromptSpec*> specs;
  for (const auto& q : prepared_) specs.push_back(q.spec);
  const std::vector<std::size_t> dp_keys = share_keys(specs);
  for (std::size_t j = 0; j < prepared_.size(); ++j) {
    if (!generate::prompt_shard_contains({.index = dp_rank_, .count = dp_}, dp_keys[j])) continue;
    ++n_mine_;
    if (skip[j] == 0) todo_.push_back(&prepared_[j]);
  }
  if (dp_ > 1) {
    log::info0("{} data-parallel replicas share the {} prompt(s); rank 0's share: {}", dp_, prepared_.size(), n_mine_);
  }
  const std::int64_t n_skipped = n_mine_ - static_cast<std::int64_t>(todo_.size());
  log::info0("{} prompt(s), {} already in {}, {} to run{}{}", n_mine_, n_skipped, ctx_.results_path.string(),
             todo_.size(), dp_ > 1 ? " on rank 0" : "",
             n_skipped > 0 ? " (a finished prompt is not run again, whatever the settings: to rerun one, choose "
                             "another output.dir, or remove its line from the results; for a conversation's turn, "
                             "only its last turn can run again)"
                           : "");
}

void GenRun::load_conversations() {
  // The conversations this replica continues, as stored: read by the writer, then sent to the other
  // ranks of the replica (tp, then pp), which follow the same turns. A turn saved by a run that
  // stopped before recording its result is dropped here, so it runs again.
  for (const Prepared* q : todo_) {
    if (!q->spec->conversation || conversations_.count(*q->spec->conversation) != 0) continue;
    const std::string& name = *q->spec->conversation;
    generate::Conversation c;
    if (writer_) {
      std::vector<std::string> pending, dropped;
      for (const Prepared* t : todo_)
        if (t->spec->conversation == name) pending.push_back(t->spec->id);
      c = ctx_.store.load_for_rerun(name, ctx_.tok, pending, &dropped);
      for (const std::string& id : dropped)
        log::warn("{}: dropping turn '{}', saved by a run that stopped before recording its result; it runs again",
                  ctx_.store.path_of(name).string(), id);
    }
    if (split_kv_) {
      std::string stored = writer_ ? generate::conversation_to_json(c) : std::string();
      for (comm::Communicator* group : {&tp_, &pp_}) stored = train::broadcast_string(*group, stored);
      if (!writer_) c = generate::conversation_from_json(stored, ctx_.store.path_of(name));
    }
    conversations_.emplace(name, std::move(c));
  }
}

/// The prompt of a conversation's turn, made from the conversation so far; empty when it can run, else
/// why not.
std::string GenRun::turn_request(const Prepared& q, generate::GenerationRequest& r) const {
  const std::string& name = *q.spec->conversation;
  if (failed_conversations_.count(name) != 0)
    return fmt::format("prompt '{}' did not run: an earlier turn of conversation '{}' could not", q.spec->id, name);
  try {
    r.prompt = generate::conversation_turn_prompt(conversations_.at(name), q.turn, ctx_.tok);
  } catch (const ConfigError& e) {
    return fmt::format("{}: {}", ctx_.input, e.what());
  }
  const auto n = static_cast<std::int64_t>(r.prompt.size());
  if (gen_.room_after(n) > 0) return {};
  return fmt::format(
      "{}: prompt '{}' continues conversation '{}' ({}), which with this turn has {} tokens, but the "
      "model's context is {}: start a new conversation",
      ctx_.input, q.spec->id, name, ctx_.store.path_of(name).string(), n, ctx_.mc.max_position_embeddings);
}

/// A prompt of a wave that continues saved progress: read by the writer (a file that belongs to another
/// request is set aside), then sent to the other ranks of the replica (as the file's JSON).
void GenRun::attach_progress(const Prepared& q, generate::GenerationRequest& r, const std::string& fingerprint) {
  const generate::ProgressStore& store = ctx_.progress_store;
  if (writer_) {
    const std::string& id = q.spec->id;
    if (std::optional<generate::ProgressRecord> p = store.load(id, ctx_.tok.n_vocab())) {
      if (p->fingerprint != fingerprint) {
        const fs::path aside = store.set_aside(id);
        log::warn(
            "prompt '{}': the saved progress in {} was made for another prompt text, sampling, model or "
            "adapter; it starts afresh (the old progress is kept as {})",
            id, store.path_of(id).string(), aside.string());
      } else if (static_cast<std::int64_t>(p->progress.tokens.size()) >=
                 std::min(r.max_new_tokens, gen_.room_after(static_cast<std::int64_t>(r.prompt.size())))) {
        const fs::path aside = store.set_aside(id);
        log::warn(
            "prompt '{}': the saved progress in {} already holds {} tokens, all this prompt may generate; it "
            "starts afresh (kept as {})",
            id, store.path_of(id).string(), p->progress.tokens.size(), aside.string());
      } else {
        log::info_all("prompt '{}': continuing after {} token(s) saved by an earlier run ({})", id,
                      p->progress.tokens.size(), store.path_of(id).string());
        r.resume = std::move(p->progress);
      }
    }
  }
  if (!split_kv_) return;
  std::string saved = writer_ && !r.resume.tokens.empty()
                          ? generate::progress_to_json({.id = q.spec->id, .progress = r.resume})
                          : std::string();
  for (comm::Communicator* group : {&tp_, &pp_})
    if (group->size() > 1) saved = train::broadcast_string(*group, saved);
  if (!writer_ && !saved.empty()) r.resume = generate::progress_from_json(saved, store.path_of(q.spec->id)).progress;
}

/// SIGUSR1/SIGTERM (caught from the process's start, so one that comes while the weights load stops the
/// job after its first step instead of killing it): the replica's ranks agree after each step (they
/// run every step together) and stop.
bool GenRun::stop_requested() {
  std::int64_t sig = stop_signal().load();
  for (comm::Communicator* group : {&tp_, &pp_})
    if (group->size() > 1) group->all_reduce(&sig, 1, comm::CommDType::I64, comm::ReduceOp::Max);
  stopped_by_ = sig;
  return sig != 0;
}

void GenRun::log_plan(const generate::BatchPlan& plan) const {
  const std::string on_device = ctx_.device ? fmt::format(" on cuda:{}", *ctx_.device) : std::string{};
  log::info0(
      "batch: {} prompt(s) in flight (runtime.batch_size = {}); KV cache {} row(s) x {} positions x {} "
      "layer(s) = {} in {}{}",
      plan.rows, job_.runtime.batch_size, plan.rows, plan.capacity, plan.layers, format_bytes(plan.kv_cache_bytes),
      dtype_name(ctx_.kv_dtype), on_device);
  if (plan.device_layers < plan.layers) {
    const std::int64_t spilled = plan.layers - plan.device_layers;
    log::info_all(
        "KV cache spill: {} of {} layer(s) next to the weights{} ({} with {} staging layer(s)), {} "
        "layer(s) in host RAM ({}; runtime.kv_device_layers = {})",
        plan.device_layers, plan.layers, on_device, format_bytes(plan.kv_device_bytes),
        model::KvCache::staging_layers(spilled), spilled, format_bytes(plan.kv_host_bytes),
        job_.runtime.kv_device_layers);
  }
}

fs::path GenRun::kv_file_of(const std::string& conversation) const {
  return ctx_.store.dir() / (split_kv_ ? fmt::format("{}.tp{}of{}.pp{}of{}.kv", conversation, tp_.rank(), tp_.size(),
                                                     pp_.rank(), pp_.size())
                                       : conversation + ".kv");
}

/// Called as each prompt finishes (finishing order): its conversation is saved, then its record is on
/// disk, before the next step.
void GenRun::on_finished(const Wave& w, std::size_t index, generate::GenerationOutput&& o) {
  const Prepared& q = *w.running[index];
  generate::Conversation* conv = nullptr;
  if (q.spec->conversation) {
    conv = &conversations_.at(*q.spec->conversation);
    generate::conversation_add_turn(*conv, q.turn, w.requests[index].prompt, o);
  }
  if (!writer_) return;
  ++n_finished_;
  n_generated_ += static_cast<std::int64_t>(o.tokens.size());
  const double tps =
      o.decode_s > 0 ? static_cast<double>(o.tokens.size() > 1 ? o.tokens.size() - 1 : 0) / o.decode_s : 0.0;
  generate::ResultRecord r;
  r.id = q.spec->id;
  r.text = o.text;
  r.prompt_tokens = static_cast<std::int64_t>(w.requests[index].prompt.size());
  r.cached_prompt_tokens = o.cached_prompt_tokens;
  r.completion_tokens = static_cast<std::int64_t>(o.tokens.size());
  r.finish_reason = generate::finish_reason_name(o.reason);
  r.time_to_first_token_s = o.time_to_first_token_s;
  r.tokens_per_s = tps;
  if (conv) {
    ctx_.store.save(*conv);
    r.conversation = conv->name;
  }
  if (q.spec->output) {
    const fs::path out = generate::output_path_inside(job_.output.dir, *q.spec->output, q.spec->id);
    fs::create_directories(out.parent_path());
    // A conversation's turn that continues a cut reply writes the whole reply so far; with output_code
    // only its code.
    const std::string reply = conv ? generate::conversation_reply_chain(*conv, ctx_.tok) : o.text;
    file_write_atomic(out,
                      q.spec->output_code.value_or(job_.defaults.output_code) ? generate::extract_code(reply) : reply);
    r.output_file = *q.spec->output;
  }
  results_->append(r);
  ctx_.progress_store.remove(q.spec->id);
  const std::string cached =
      r.cached_prompt_tokens > 0 ? fmt::format(" ({} cached)", r.cached_prompt_tokens) : std::string();
  log::info0("[{}/{}] {}: {} prompt{} + {} new tokens ({}), first token {:.3f} s, {:.1f} tokens/s", n_finished_,
             todo_.size(), q.spec->id, r.prompt_tokens, cached, r.completion_tokens, r.finish_reason,
             o.time_to_first_token_s, tps);
}

/// output.conversation_kv: a turn loads its conversation's stored KV cache.
std::int64_t GenRun::load_prefix(const Wave& w, std::size_t index, model::KvCache& cache, std::int64_t row,
                                 std::span<const std::int32_t> tokens) const {
  const Prepared& q = *w.running[index];
  if (!q.spec->conversation) return 0;
  const fs::path file = kv_file_of(*q.spec->conversation);
  const generate::KvSnapshotLoad got = generate::kv_snapshot_load(file, cache, row, tokens, kv_identity_);
  if (!got.why_not.empty())
    log::warn("prompt '{}': not using {}: {}; prefilling the whole conversation", q.spec->id, file.string(),
              got.why_not);
  // The ranks of a split model run each forward together: they go on from the shortest prefix any
  // of them loaded (each rank's file holds a prefix of the same conversation).
  std::int64_t neg = -got.positions;
  for (comm::Communicator* group : {&tp_, &pp_})
    if (group->size() > 1) group->all_reduce(&neg, 1, comm::CommDType::I64, comm::ReduceOp::Max);
  const std::int64_t positions = -neg;
  if (positions > 0 && writer_) {
    log::info_all("prompt '{}': loaded the KV cache of {} of its {} tokens from {}{}", q.spec->id, positions,
                  tokens.size(), file.string(), split_kv_ ? " (each rank its part)" : "");
  }
  return positions;
}

/// output.conversation_kv: a finished turn leaves its conversation's KV cache (every rank its part).
void GenRun::save_prefix(const Wave& w, std::size_t index, model::KvCache& cache, std::int64_t row,
                         std::span<const std::int32_t> tokens) const {
  const Prepared& q = *w.running[index];
  if (!q.spec->conversation) return;
  const fs::path file = kv_file_of(*q.spec->conversation);
  try {
    generate::kv_snapshot_save(file, cache, row, tokens, kv_identity_);
  } catch (const IoError& e) {  // the conversation itself is still saved; its next turn prefills it whole
    log::warn("prompt '{}': could not keep the conversation's KV cache: {}", q.spec->id, e.what());
  }
}

void GenRun::run_wave(int wave, std::vector<const Prepared*>& pending) {
  std::vector<const Prepared*> now, later;
  std::set<std::string> taken;
  for (const Prepared* q : pending) {
    if (q->spec->conversation && !taken.insert(*q->spec->conversation).second) later.push_back(q);
    else now.push_back(q);
  }
  pending = std::move(later);
  Wave w;
  std::vector<std::string> refused;
  for (const Prepared* q : now) {
    generate::GenerationRequest r = q->request;
    if (q->spec->conversation) {
      if (std::string why = turn_request(*q, r); !why.empty()) {
        failed_conversations_.insert(*q->spec->conversation);
        refused.push_back(std::move(why));
        continue;
      }
    }
    w.running.push_back(q);
    w.requests.push_back(std::move(r));
  }
  if (wave == 0) {
    // A turn that cannot start (system after the first turn, nothing to continue, a full context)
    // stops the job before anything is generated, on every replica alike.
    std::int64_t n_refused = writer_ ? static_cast<std::int64_t>(refused.size()) : 0;
    app_.world().all_reduce(&n_refused, 1, comm::CommDType::I64, comm::ReduceOp::Sum);
    if (n_refused > 0) {
      if (writer_)
        for (const std::string& why : refused) log::error("{}", why);
      throw train::CollectiveError(
          fmt::format("{} prompt(s) of {} cannot run (above); nothing was generated", n_refused, ctx_.input),
          ADAPT_HERE, ExitCode::Usage);
    }
  } else {
    if (writer_)
      for (const std::string& why : refused) log::error("{}", why);
    n_failed_ += static_cast<std::int64_t>(refused.size());
    if (!w.requests.empty())
      log::info0("{} turn(s) that follow earlier turns of their conversation in this job{}", w.requests.size(),
                 dp_ > 1 ? " (rank 0)" : "");
  }
  if (w.requests.empty()) return;
  for (std::size_t i = 0; i < w.requests.size(); ++i) {
    w.fingerprints.push_back(generate::request_fingerprint(w.requests[i], fingerprint_context_));
    attach_progress(*w.running[i], w.requests[i], w.fingerprints.back());
  }
  log_plan(gen_.plan_batch(w.requests, job_.runtime.batch_size));

  generate::Generator::BatchHooks hooks{
      .on_finished = [&](std::size_t index, generate::GenerationOutput&& o) { on_finished(w, index, std::move(o)); },
      .on_progress =
          [&](std::size_t index, generate::SequenceProgress&& p) {
            if (stopped_by_ != 0) ++n_saved_;
            if (!writer_) return;
            ctx_.progress_store.save(
                {.id = w.running[index]->spec->id, .fingerprint = w.fingerprints[index], .progress = std::move(p)});
          },
      .stop = [&] { return stop_requested(); }};
  if (job_.output.conversation_kv) {
    hooks.load_prefix = [&](std::size_t index, model::KvCache& cache, std::int64_t row,
                            std::span<const std::int32_t> tokens) { return load_prefix(w, index, cache, row, tokens); };
    hooks.save_prefix = [&](std::size_t index, model::KvCache& cache, std::int64_t row,
                            std::span<const std::int32_t> tokens) { save_prefix(w, index, cache, row, tokens); };
  }
  if (!gen_.run_batch(w.requests, job_.runtime.batch_size, hooks) && writer_) {
    // Said by the stopped replica's writer (with dp > 1 the signal may have reached another replica only).
    log::info_all(
        "received {}: saved the progress of {} prompt(s) in flight in {}; stopping (exit code {}: "
        "run the job again, or requeue it, to continue them)",
        stop_signal_name(stopped_by_), n_saved_, ctx_.progress_store.dir().string(), kExitRequeue);
  }
}

int GenRun::finish(double seconds) {
  std::int64_t totals[4] = {n_finished_, n_generated_, writer_ ? n_failed_ : 0,
                            writer_ && stopped_by_ != 0 ? 1 : 0};  // over every replica's writer
  app_.world().all_reduce(totals, 4, comm::CommDType::I64, comm::ReduceOp::Sum);
  if (dp_ > 1) {
    train::on_root(app_.world(), "merge the results of the replicas",
                   [&] { generate::results_parts_merge(ctx_.results_path); });
  }
  log::info0("{}: {} prompt(s) finished, {} new tokens in {:.1f} s ({:.1f} tokens/s overall); results in {}",
             totals[3] > 0 ? "stopped" : "done", totals[0], totals[1], seconds,
             seconds > 0 ? static_cast<double>(totals[1]) / seconds : 0.0, ctx_.results_path.string());
  if (totals[3] > 0) {
    log::info0("stopped by a signal ({} replica(s)); the prompts in flight continue when the job runs again",
               totals[3]);
    return kExitRequeue;
  }
  if (totals[2] > 0) {
    log::info0("{} prompt(s) could not run (errors above); the others are done", totals[2]);
    return static_cast<int>(ExitCode::Usage);
  }
  return 0;
}

int GenRun::run() {
  open_results();
  select_todo();
  load_conversations();
  Timer total;
  // Turns of one conversation run one after another: each wave takes every pending prompt without a
  // conversation (the first wave) and the next turn of each conversation. Wave 0 always runs: its check
  // is collective.
  std::vector<const Prepared*> pending = todo_;
  for (int wave = 0; stopped_by_ == 0 && (wave == 0 || !pending.empty()); ++wave) run_wave(wave, pending);
  return finish(total.seconds());
}

}  // namespace

int gen_run(const GenJobContext& ctx, const std::vector<Prepared>& prepared, generate::Generator& gen,
            ParallelApp& app) {
  return GenRun(ctx, prepared, gen, app).run();
}

}  // namespace adapt::apps
