// adapt_gen: runs a generation job from a prompts TOML file, runtime.batch_size prompts at a time
// (generate::Generator's batch scheduler). Results are written as prompts finish (one JSON line each,
// plus optional per-prompt output files), so a restarted job skips what is done. With runtime.device
// = "cuda" the weights are read on the host and copied once to the rank's GPU, where every step runs.
//
//   adapt_gen --input prompts.toml [--set key=value ...] [--shard I/N] [--dry-run]
#include <fmt/format.h>

#include <array>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "apps/app_device.h"
#include "apps/app_parallel.h"
#include "backend/backend.h"
#include "comm/comm_kind.h"
#include "config/config_binder.h"
#include "config/config_printer.h"
#include "config/gen_config_schema.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/stop_signal.h"
#include "core/strings.h"
#include "core/timer.h"
#include "generate/code_blocks.h"
#include "generate/conversation.h"
#include "generate/generator.h"
#include "generate/kv_snapshot.h"
#include "generate/progress.h"
#include "generate/prompt_shard.h"
#include "generate/results.h"
#include "generate/results_parts.h"
#include "model/attention_compute.h"
#include "model/kv_cache.h"
#include "model/llama_config.h"
#include "model/llama_device.h"
#include "model/llama_weights.h"
#include "model/tensor_parallel.h"
#include "model/weight_stream.h"
#include "ops/matmul.h"
#include "plan/plan.h"
#include "tokenizer/tokenizer.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage = R"(usage: adapt_gen --input prompts.toml [--set key=value ...] [--shard I/N] [--dry-run]

Runs every prompt of the job that is not already in the results file, runtime.batch_size at a time
(they decode together; a finished prompt's place goes to the next one), and appends one JSON line per
prompt as it finishes (id, text, prompt_tokens, cached_prompt_tokens, completion_tokens, finish_reason,
time_to_first_token_s, tokens_per_s; output_file and conversation for prompts that have them) to
output.dir/output.results, in finishing order.
Prompts with `output` also get their completion written to that file (inside output.dir). Texts do not
depend on the batch size (bit for bit with runtime.share_prefixes = false; with sharing a token can differ
only at a near-tie of the logits). Progress goes to stderr. A prompt that starts with tokens another KV-cache
row holds (a prompt in flight, or the last one a free row ran) copies their keys and values and
prefills only the rest (runtime.share_prefixes; cached_prompt_tokens counts them).

  --input FILE      the job (see inputs/prompts.toml)
  --set key=value   override one key, e.g. --set defaults.temperature=0.7 or --set prompts[0].seed=3
  --shard I/N       run share I of N (0 <= I < N): the prompts whose position in the file is I modulo N,
                    with results in <results stem>.shard-I-of-N.jsonl (one share per job of a Slurm job
                    array; the shares do not overlap and together cover every prompt)
  --dry-run         validate the job (with runtime.device = "cuda": find the GPU), tokenize the prompts,
                    read the adapter, print the resolved job, what a run would do with each prompt (skip
                    it, in the results already; its prompt tokens; a conversation turn that could not
                    run: exit 2), the device and the memory per rank (weights, KV cache, activations, as
                    adapt_plan counts them); generate nothing

A prompt that does not fit the model's context is an error before anything is generated; a completion
that would run past the context is cut there (finish_reason "length").

Conversations: a prompt with conversation = "name" is the next turn of that conversation, kept in
output.dir/output.conversations/name.json between jobs. Its tokens are the conversation so far (the
earlier prompts and the model's replies, as token ids) followed by the turn's user message or text;
with neither, the model continues its last reply, and the prompt's output file gets the whole reply so
far. Its reply is saved to the conversation before its result is recorded. Turns of one conversation
run in file order, one at a time, in one process (a replica, a --shard); a turn whose conversation no
longer fits the context is not run, and the job then exits 2 once the others are done. With
output.conversation_kv = true the conversation's KV cache is kept beside it (name.kv; with tp or
pp > 1 each rank keeps its part, name.tpTofN.ppPofM.kv), and the next turn prefills only its new
tokens; its text is that of a whole prefill, up to a near-tie of the logits (the reply's keys and
values were computed a token at a time, which a prefill rounds differently).

Several ranks (mpiexec -n N, srun): tp and pp come from [parallel], dp = N / (tp x pp). The dp
replicas share out the prompts (of the --shard): replica r runs the prompts at positions r modulo dp,
writing each record as it finishes to its own <results stem>.dp-r-of-dp.jsonl; rank 0 merges those
into the results file at the end (and parts left by an interrupted run when the job starts again).
With tp > 1 the tp ranks of a replica split the weights, the attention heads and the KV cache (tp
must divide the attention and KV heads); with pp > 1 each of pp stages holds a range of layers and
every step runs through the stages in turn. Either way a replica produces the tokens one process
would, and its first rank writes them.

On a GPU (runtime.device = "cuda" or "cuda:N"): the model is read on the host, then its weights
(runtime.weights_dtype) and the adapter are copied once to the device, where the KV cache and every
step live; only the sampled positions' logits come back. "cuda" takes the GPU of the rank's local rank.
With tp or pp > 1 each rank copies its shard or stage to its GPU; the tp and pp groups communicate
over NCCL when every rank of the group has its own GPU, else over MPI through host memory (ranks
sharing a GPU: correct but slow). Without a usable GPU the job stops before it reads the weights or
writes anything.

Preemption: a prompt still being generated saves its progress (the tokens so far and the sampler's
state) to output.dir/output.progress every runtime.progress_every tokens. SIGUSR1 or SIGTERM (Slurm
before a time limit or a preemption; slurm/generate.sbatch forwards it) stops the job after the current
step: every prompt in flight saves its progress and the job exits 75. Run the same job again (the
script requeues it) and those prompts continue where they stood: their prompt and saved tokens are
prefilled, and sampling goes on from the saved state, so the text is the one an uninterrupted run
gives (up to a near-tie of the logits, which a prefill rounds differently from the steps). Progress
saved for another prompt text, sampling, model or adapter is set aside (<file>.stale), and that prompt
starts afresh.

exit codes: 0 done; 2 bad job file or option (or a layout that does not fit: the message lists those
that do); 3 missing/invalid model, tokenizer or unwritable output; 4 CUDA failure; 5 MPI failure; 6
unsupported (e.g. runtime.device = "cuda" with no usable GPU); 70 internal error; 75 stopped on
SIGUSR1/SIGTERM after saving the progress of the prompts in flight: run it again (requeue) to continue.

job keys:
)";

/// --dry-run's memory line: what adapt_plan counts for one rank of the job's tp × pp (the busiest stage)
/// with `rows` KV-cache rows of `capacity` positions (the longest prompt and its new tokens), prompts of
/// up to `longest` tokens prefilled.
std::string dry_run_memory(const generate::GenJob& job, const model::LlamaConfig& mc,
                           const adapters::AdapterConfig* adapter, bool on_gpu, std::int64_t rows,
                           std::int64_t capacity, std::int64_t longest) {
  if (rows <= 0 || capacity <= 0) return "";
  const DType kv = generate::kv_cache_dtype_for(job.runtime, on_gpu);
  adapters::AdapterConfig none;
  none.kind = adapters::AdapterKind::Lora;
  none.lora.targets.clear();  // no adapter: no LoRA sites
  const plan::GenJob g{.batch = rows,
                       .context = capacity,
                       .kv_bytes = static_cast<int>(dtype_size(kv)),
                       .prefill_chunk = job.runtime.prefill_chunk,
                       .weights_device_layers = on_gpu ? job.runtime.weights_device_layers : -1,
                       .weight_bytes = on_gpu ? static_cast<int>(dtype_size(job.runtime.weights_dtype))
                                       : job.runtime.cpu_matmul_dtype == DType::BF16 ? 2  // bf16 products
                                                                                     : 0,
                       .prompt = longest};
  const plan::Layout layout{.tp = static_cast<int>(job.parallel.tp), .pp = static_cast<int>(job.parallel.pp), .dp = 1};
  const plan::GenMemory m =
      plan::gen_memory(mc, adapter ? *adapter : none, layout, g, on_gpu ? plan::Backend::Gpu : plan::Backend::Cpu);
  return fmt::format(
      "# memory per rank of tp{} × pp{} (adapt_plan's figures): weights {}, KV cache {} ({} row(s) × {} positions, "
      "{}{}), activations {} (prefill pieces of up to {} tokens){}; total {}\n",
      layout.tp, layout.pp, format_bytes(m.weights), format_bytes(m.kv_cache), rows, capacity, dtype_name(kv),
      on_gpu && job.runtime.kv_device_layers >= 0 ? "; runtime.kv_device_layers moves part of it to host RAM" : "",
      format_bytes(m.activations),
      job.runtime.prefill_chunk > 0 ? std::min(job.runtime.prefill_chunk, longest) : longest,
      on_gpu ? fmt::format(", workspaces and bf16 operand copies {}", format_bytes(m.libraries + m.operand_copies))
             : fmt::format(", attention's packed keys and values {}", format_bytes(m.attention_buffers)),
      format_bytes(m.device_total()));
}

/// The model's eos_token_id (generation_config.json, else config.json), as token ids: replies end there
/// as at the tokenizer's end tokens.
std::vector<std::int32_t> model_eos_ids(const fs::path& model_dir) {
  std::vector<std::int32_t> ids;
  for (const std::int64_t id : model::model_eos_token_ids(model_dir)) {
    ADAPT_REQUIRE(id <= std::numeric_limits<std::int32_t>::max(), ConfigError,
                  "the model's eos_token_id {} (in '{}') is not a token id; fix it in generation_config.json or "
                  "config.json",
                  id, model_dir.string());
    ids.push_back(static_cast<std::int32_t>(id));
  }
  return ids;
}

struct Prepared {
  const generate::PromptSpec* spec;
  generate::GenerationRequest request;  // a conversation turn's prompt is made when the turn runs
  generate::TurnInput turn;             // what a conversation turn adds
};

/// The position whose share (--shard, and dp replica) a prompt goes to: its own, or for a
/// conversation's turn that of the conversation's first prompt, so its turns stay in one process,
/// in file order.
std::vector<std::size_t> share_keys(const std::vector<const generate::PromptSpec*>& prompts) {
  std::map<std::string, std::size_t> first;
  std::vector<std::size_t> keys(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i)
    keys[i] = prompts[i]->conversation ? first.emplace(*prompts[i]->conversation, i).first->second : i;
  return keys;
}

/// What --dry-run reads from: the job and what run() made of it.
struct DryRunContext {
  const std::string& input;
  const generate::GenJob& job;
  const model::LlamaConfig& mc;
  const tokenizer::Tokenizer& tok;
  const generate::ConversationStore& store;
  const generate::ProgressStore& progress_store;
  const fs::path& results_path;
  std::optional<int> device;
};

/// A conversation as --dry-run follows it through the job: as stored (less the turns a run would
/// drop), then with each of this job's turns, whose replies are not known yet.
struct DryConversation {
  generate::Conversation c;
  std::int64_t replies_ahead = 0;  // new tokens of this job's earlier turns (up to their max_new_tokens)
  std::string failed;              // the first of this job's turns that could not run
};

/// --dry-run's view of one conversation turn: its line's text after the id, whether it would run, and
/// its prompt tokens with this job's earlier replies at their longest (at most the model's context).
struct TurnPreview {
  std::string line;
  bool runs = false;
  std::int64_t n_prompt = 0;
};

TurnPreview dry_run_turn(const DryRunContext& ctx, const Prepared& q, DryConversation& dc) {
  generate::Conversation& c = dc.c;
  const model::LlamaConfig& mc = ctx.mc;
  const std::int64_t ahead = dc.replies_ahead;
  TurnPreview t;
  t.line = fmt::format("a turn of conversation '{}' ({}: {} turn(s), {} tokens so far", c.name,
                       ctx.store.path_of(c.name).string(), c.turns.size(), c.tokens.size() + ahead);
  std::string problem;
  if (!dc.failed.empty()) {
    problem = fmt::format("an earlier turn of the conversation ('{}') could not run", dc.failed);
  } else {
    try {
      const std::vector<std::int32_t> ids = generate::conversation_turn_prompt(c, q.turn, ctx.tok);
      t.n_prompt = static_cast<std::int64_t>(ids.size()) + ahead;
      // Certain only without the earlier replies of this job, whose lengths are not known yet.
      if (generate::room_after(mc, static_cast<std::int64_t>(ids.size())) <= 0)
        problem = fmt::format(
            "with this turn it has {} tokens, but the model's context is {}: start a new "
            "conversation",
            ids.size(), mc.max_position_embeddings);
      c.tokens = ids;  // the reply, unknown here, is counted in replies_ahead
      c.turns.push_back({.id = q.spec->id});
    } catch (const ConfigError& e) {
      problem = e.what();
    }
  }
  if (!problem.empty()) {
    t.line += fmt::format("); would not run: {}", problem);
    if (dc.failed.empty()) dc.failed = q.spec->id;
    return t;
  }
  t.runs = true;
  t.line += fmt::format("); {} prompt tokens{}", t.n_prompt,
                        ahead > 0 ? fmt::format(", with up to {} of this job's earlier replies", ahead) : "");
  if (generate::room_after(mc, t.n_prompt) <= 0) {
    t.line += fmt::format(
        " (more than the model's context, {}: should those replies be that long, this turn "
        "will not run)",
        mc.max_position_embeddings);
    t.n_prompt = mc.max_position_embeddings;
  }
  dc.replies_ahead = ahead + std::min(q.request.max_new_tokens, generate::room_after(mc, t.n_prompt));
  return t;
}

/// --dry-run: the job as read, then what a run would do with each prompt (skip it, being in the results
/// already; run it; or not run it, saying why), the device, and the memory line. A conversation's turns
/// follow one another: each later turn of this job sees the turns before it. ConfigError when a prompt
/// would not run.
void dry_run_report(const DryRunContext& ctx, const std::vector<Prepared>& prepared) {
  const generate::GenJob& job = ctx.job;
  const model::LlamaConfig& mc = ctx.mc;
  std::printf("%s", config::to_toml(job, config::gen_job_schema()).c_str());
  const std::set<std::string> done = generate::results_done_ids(ctx.results_path);
  std::map<std::string, DryConversation> conversations;  // each conversation file read once
  std::int64_t n_fail = 0, n_run = 0;                    // prompts that would not run, and that would
  std::int64_t capacity = 0;  // KV-cache positions a row needs: the longest prompt + its new tokens
  std::int64_t longest = 0;   // the most tokens one prefill takes (a resumed prompt's saved ones too)
  for (const auto& q : prepared) {
    const std::string& id = q.spec->id;
    if (done.count(id) != 0) {
      std::printf("# %s: in %s already: skipped\n", id.c_str(), ctx.results_path.c_str());
      continue;
    }
    TurnPreview t;
    if (!q.spec->conversation) {
      t = {.line = fmt::format("{} prompt tokens", q.request.prompt.size()),
           .runs = true,
           .n_prompt = static_cast<std::int64_t>(q.request.prompt.size())};
    } else {
      const std::string& name = *q.spec->conversation;
      auto it = conversations.find(name);
      if (it == conversations.end()) {
        std::vector<std::string> pending;  // as a run drops them: turns saved without their result run again
        for (const auto& p : prepared)
          if (p.spec->conversation == name && done.count(p.spec->id) == 0) pending.push_back(p.spec->id);
        it = conversations.emplace(name, DryConversation{.c = ctx.store.load_for_rerun(name, ctx.tok, pending)}).first;
      }
      t = dry_run_turn(ctx, q, it->second);
    }
    if (t.runs) {
      ++n_run;
      const std::int64_t n_new = std::min(q.request.max_new_tokens, generate::room_after(mc, t.n_prompt));
      capacity = std::max(capacity, t.n_prompt + n_new);
    } else {
      ++n_fail;
    }
    // Saved progress is read (a malformed file is an error here too); whether it belongs to this
    // request is decided when the prompt runs.
    std::int64_t prefill = t.n_prompt;
    if (const auto p = ctx.progress_store.load(id, ctx.tok.n_vocab())) {
      t.line += fmt::format("; progress saved after {} token(s) ({})", p->progress.tokens.size(),
                            ctx.progress_store.path_of(id).string());
      prefill += static_cast<std::int64_t>(p->progress.tokens.size());
    }
    if (t.runs) longest = std::max(longest, std::min(prefill, capacity));
    std::printf("# %s: %s\n", id.c_str(), t.line.c_str());
  }
  if (ctx.device) {
    std::printf("%s", fmt::format("# device: cuda:{}, {} (rank 0), {} weights\n", *ctx.device,
                                  backend::cuda_device_name(*ctx.device), dtype_name(job.runtime.weights_dtype))
                          .c_str());
  } else {
    std::printf("# device: cpu\n");
  }
  if (n_run == 0) std::printf("# nothing to run, so no memory is needed\n");
  // The adapter is read (and so checked) here too; its shape enters the estimate.
  const adapters::AdapterConfig adapter_cfg =
      job.model.adapter ? adapters::adapter_load(*job.model.adapter, mc).config() : adapters::AdapterConfig{};
  std::printf("%s", dry_run_memory(job, mc, job.model.adapter ? &adapter_cfg : nullptr, ctx.device.has_value(),
                                   std::min<std::int64_t>(job.runtime.batch_size, std::max<std::int64_t>(n_run, 1)),
                                   capacity, longest)
                        .c_str());
  std::fflush(stdout);
  ADAPT_REQUIRE(n_fail == 0, ConfigError, "{}: {} prompt(s) would not run (the lines above say why)", ctx.input,
                n_fail);
}

int run(int argc, char** argv, apps::ParallelApp& app) {
  std::string input;
  std::vector<std::string> sets;
  bool dry_run = false;
  generate::PromptShard shard;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value; run adapt_gen --help", a);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      if (app.root()) std::printf("%s%s", kUsage, config::help(config::gen_job_schema()).c_str());
      return 0;
    } else if (a == "--input") {
      input = value();
    } else if (a == "--set") {
      sets.push_back(value());
    } else if (a == "--shard") {
      shard = generate::prompt_shard_parse(value());
    } else if (a == "--dry-run") {
      dry_run = true;
    } else {
      ADAPT_THROW(ConfigError, "unknown option '{}'{}; run adapt_gen --help", a,
                  did_you_mean(a, {"--input", "--set", "--shard", "--dry-run", "--help"}));
    }
  }
  ADAPT_REQUIRE(!input.empty(), ConfigError, "adapt_gen needs --input prompts.toml; run adapt_gen --help");
  const generate::GenJob job = config::load(input, config::gen_job_schema(), sets);
  // The GPU first: a node without one fails here, before the tokenizer or the weights are read.
  const std::optional<int> device = apps::app_device_resolve(
      job.runtime.device, app.launch(), {.name = "runtime.device", .to_cpu = "set runtime.device = \"cpu\""});
  const DType kv_dtype = generate::kv_cache_dtype_for(job.runtime, device.has_value());

  model::model_folder_require(job.model.path, "model.path");  // before the tokenizer, which it may hold
  const fs::path tok_path = job.model.tokenizer ? *job.model.tokenizer : job.model.path;
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(tok_path);

  // Tokenize and validate every prompt before loading weights or generating anything.
  std::vector<Prepared> prepared;
  const auto& d = job.defaults;
  std::vector<const generate::PromptSpec*> all;
  for (const auto& p : job.prompts) all.push_back(&p);
  const std::vector<std::size_t> file_keys = share_keys(all);
  std::set<std::string> warned_stops;  // special-token stop strings, said once each
  for (std::size_t i = 0; i < job.prompts.size(); ++i) {
    if (!generate::prompt_shard_contains(shard, file_keys[i])) continue;
    const auto& p = job.prompts[i];
    Prepared q{&p, {}, {.id = p.id, .system = p.system, .user = p.user, .text = p.text, .chat = d.chat}};
    generate::GenerationRequest& r = q.request;
    r.max_new_tokens = p.max_new_tokens.value_or(d.max_new_tokens);
    r.stop = p.stop.value_or(d.stop);
    for (const std::string& s : r.stop) {
      const tokenizer::TokenId special = tok.token_id(s);
      if (special != tokenizer::kNoToken && tok.is_special(special) && app.root() && warned_stops.insert(s).second)
        log::warn(
            "{}: prompts[{}] ('{}'): stop string \"{}\" is a special token, which the decoded text never "
            "holds, so it never matches (replies end at the model's end tokens anyway); remove it",
            input, i, p.id, s);
    }
    r.sampling.temperature = p.temperature.value_or(d.temperature);
    r.sampling.top_k = p.top_k.value_or(d.top_k);
    r.sampling.top_p = p.top_p.value_or(d.top_p);
    r.sampling.min_p = p.min_p.value_or(d.min_p);
    r.sampling.repetition_penalty = p.repetition_penalty.value_or(d.repetition_penalty);
    r.sampling.seed = static_cast<std::uint64_t>(p.seed.value_or(d.seed));
    generate::sampling_params_validate(r.sampling, fmt::format("{}: prompts[{}] ('{}')", input, i, p.id));
    // A conversation's turn follows the conversation's earlier turns, known when it runs; any other
    // prompt is the first turn of a conversation of its own.
    if (!p.conversation) r.prompt = generate::conversation_turn_prompt({}, q.turn, tok);
    if (p.output) generate::output_path_inside(job.output.dir, *p.output, fmt::format("prompts[{}]", i));
    prepared.push_back(std::move(q));
  }

  const model::LlamaConfig mc = model::llama_config_load(job.model.path);
  const std::vector<std::int32_t> eos_ids = model_eos_ids(job.model.path);
  // A conversation's turn is checked when it runs: its tokens depend on the turns before it.
  for (const auto& q : prepared) {
    const auto n = static_cast<std::int64_t>(q.request.prompt.size());
    ADAPT_REQUIRE(q.spec->conversation || generate::room_after(mc, n) > 0, ConfigError,
                  "{}: prompts[{}] ('{}') has {} tokens, but the model's context is {} tokens: shorten the prompt",
                  input, q.spec - job.prompts.data(), q.spec->id, n, mc.max_position_embeddings);
  }
  app.start(job.parallel.tp, job.parallel.pp,
            {.n_heads = mc.n_heads, .n_kv_heads = mc.n_kv_heads, .n_layers = mc.n_layers});
  app.warn_shared_gpus(device);
  model::LlamaLoadStats stats;
  const generate::ConversationStore store(
      generate::output_path_inside(job.output.dir, job.output.conversations, "output.conversations"));
  const generate::ProgressStore progress_store(
      generate::output_path_inside(job.output.dir, job.output.progress, "output.progress"));
  const fs::path results_path = generate::output_path_inside(
      job.output.dir, generate::prompt_shard_results_name(job.output.results, shard), "output.results");
  if (dry_run) {
    // Rank 0 reports; an error there (a corrupt results file, a turn that cannot run) is every rank's.
    train::on_root(app.world(), "check the job (--dry-run)", [&] {
      dry_run_report({.input = input,
                      .job = job,
                      .mc = mc,
                      .tok = tok,
                      .store = store,
                      .progress_store = progress_store,
                      .results_path = results_path,
                      .device = device},
                     prepared);
    });
    return 0;
  }
  // An output folder that cannot be written fails the job now, not after the weights are read. One job
  // at a time on a results file (each --shard has its own): rank 0 holds its lock until the job ends.
  std::optional<FileLock> results_lock;
  train::on_root(app.world(), "check the output folder", [&] {
    dir_require_writable(job.output.dir, "output.dir");
    fs::create_directories(results_path.parent_path());
    results_lock.emplace(results_path.parent_path() / ("." + results_path.filename().string() + ".lock"),
                         fmt::format("the results file '{}'", results_path.string()));
  });
  const int dp = app.grid().dp_size(), dp_rank = app.comms().dp->rank();
  // With tp and pp, the ranks of a replica each hold their slices of the weights (tp: heads, FFN,
  // vocabulary and KV heads; pp: a stage's layers) and run every step together; each gets the whole
  // logits, so the same sampler picks the same token on all of them. The replica's first rank (tp 0,
  // pp 0) writes its results.
  comm::Communicator& tp = *app.comms().tp;
  comm::Communicator& pp = *app.comms().pp;
  const bool writer = tp.rank() == 0 && pp.rank() == 0;
  // Weights as stored (bf16 stays bf16); all matrices in bf16 for bf16 products on the CPU.
  const bool cpu_bf16 = !device && job.runtime.cpu_matmul_dtype == DType::BF16;
  const model::WeightStorage storage = cpu_bf16 ? model::WeightStorage::Bf16 : model::WeightStorage::AsStored;
  ops::set_cpu_matmul_dtype(cpu_bf16 ? DType::BF16 : DType::F32);
  if (cpu_bf16) log::info0("{}", ops::cpu_matmul_note());
  model::LlamaModel model =
      tp.size() > 1 || pp.size() > 1
          ? model::llama_model_load_tp(job.model.path, app.grid(), app.world_rank(), tp,
                                       {.storage = storage, .stage_split = parallel::kGenSplit}, &stats)
          : model::llama_model_load(job.model.path, {.storage = storage}, &stats);
  log::info0("loaded {} ({} layers, vocab {}) in {:.2f} s; tokenizer {}", job.model.path.string(),
             model.config.n_layers, model.config.vocab_size, stats.seconds, tok.description());
  if (tok.n_vocab() < model.config.vocab_size)
    log::info0("the model's vocab_size ({}) is padded past the tokenizer's {} tokens: ids {} to {} are never drawn",
               model.config.vocab_size, tok.n_vocab(), tok.n_vocab(), model.config.vocab_size - 1);
  // With the model on GPUs, its tp collectives and the pipeline's transfers take device buffers: NCCL
  // where every rank of the group has its own GPU, else MPI staging them through host memory. The
  // host-side broadcasts below keep the host communicators (tp, pp).
  comm::GridComms device_comms;
  comm::Communicator* model_pp = &pp;
  // The whole model, or this rank's tp shard of its pipeline stage.
  model = model::llama_model_place(std::move(model),
                                   {.device = device,
                                    .weights_dtype = job.runtime.weights_dtype,
                                    .weights_device_layers = job.runtime.weights_device_layers,
                                    .attention_dtype = job.runtime.attention_dtype,
                                    .cpu_matmul_dtype = job.runtime.cpu_matmul_dtype,
                                    .kv_dtype = kv_dtype},
                                   app.world_rank(), app.world_size());
  if (device && (tp.size() > 1 || pp.size() > 1)) {
    device_comms = comm::device_grid_comms_for_model(app.world(), app.grid(), *device, tp.options());
    model.tp.comm = device_comms.tp.get();
    model_pp = device_comms.pp.get();
  }
  generate::Generator gen(model, tok);
  gen.set_options({.prefill_chunk = job.runtime.prefill_chunk,
                   .kv_device_layers = job.runtime.kv_device_layers,
                   .kv_dtype = kv_dtype,
                   .progress_every = job.runtime.progress_every,
                   .share_prefixes = job.runtime.share_prefixes,
                   .eos_ids = eos_ids});
  if (pp.size() > 1) gen.set_pipeline(model_pp);
  std::optional<adapters::AdapterSet> adapter;
  if (job.model.adapter) {
    adapter.emplace(adapters::adapter_load(*job.model.adapter, model.config));
    adapter->shard_for_tp(model.tp);
    if (device) adapter->to_device(*device);
    gen.set_hook(&*adapter);
    log::info0("adapter {}: {} parameters", job.model.adapter->string(), format_count(adapter->n_parameters()));
  }

  fs::create_directories(job.output.dir);
  // With several replicas, each writes its own part file; parts left by an interrupted multi-rank run
  // are merged first (by rank 0, or the one process).
  train::on_root(app.world(), "merge the results of an earlier run", [&] {
    if (const std::int64_t n = generate::results_parts_merge(results_path); n > 0)
      log::info0("{}: merged {} record(s) left in part files by an earlier run", results_path.string(), n);
    if (dp > 1) generate::ResultsFile check(results_path);  // drops a record cut by a crash before the others read
  });
  std::optional<generate::ResultsFile> finished;  // the merged results, read only
  std::optional<generate::ResultsFile> results;   // this replica's records (its writer only)
  if (writer) {
    if (dp > 1) finished.emplace(results_path);
    results.emplace(dp > 1 ? generate::results_part_path(results_path, dp_rank, dp) : results_path);
  }
  if (shard.count > 1) {
    log::info0(
        "share {} of {}: {} of the {} prompts (positions {} modulo {}; a conversation's later turns go "
        "with its first)",
        shard.index, shard.count, prepared.size(), job.prompts.size(), shard.index, shard.count);
  }
  std::vector<const Prepared*> todo;
  std::int64_t n_mine = 0;
  // The writer decides what is left to run; the other ranks of the replica run the same list (from
  // the writer over tp, then from the first stage over pp).
  std::vector<std::uint8_t> skip(prepared.size(), 0);
  if (writer) {
    for (std::size_t j = 0; j < prepared.size(); ++j) {
      skip[j] = results->done(prepared[j].spec->id) || (finished && finished->done(prepared[j].spec->id));
      // Progress left by a run that stopped between recording a result and removing its progress.
      if (skip[j]) progress_store.remove(prepared[j].spec->id);
    }
  }
  for (comm::Communicator* group : {&tp, &pp})
    if (group->size() > 1 && !skip.empty())
      group->broadcast(skip.data(), static_cast<std::int64_t>(skip.size()), comm::CommDType::U8, 0);
  std::vector<const generate::PromptSpec*> specs;
  for (const auto& q : prepared) specs.push_back(q.spec);
  const std::vector<std::size_t> dp_keys = share_keys(specs);
  for (std::size_t j = 0; j < prepared.size(); ++j) {
    const auto& q = prepared[j];
    if (!generate::prompt_shard_contains({.index = dp_rank, .count = dp}, dp_keys[j])) continue;
    ++n_mine;
    if (skip[j] != 0) continue;
    todo.push_back(&q);
  }
  if (dp > 1) {
    log::info0("{} data-parallel replicas share the {} prompt(s); rank 0's share: {}", dp, prepared.size(), n_mine);
  }
  const std::int64_t n_skipped = n_mine - static_cast<std::int64_t>(todo.size());
  log::info0("{} prompt(s), {} already in {}, {} to run{}{}", n_mine, n_skipped, results_path.string(), todo.size(),
             dp > 1 ? " on rank 0" : "",
             n_skipped > 0 ? " (a finished prompt is not run again, whatever the settings: to rerun one, choose "
                             "another output.dir, or remove its line from the results; for a conversation's turn, "
                             "only its last turn can run again)"
                           : "");

  // The conversations this replica continues, as stored: read by the writer, then sent to the other
  // ranks of the replica (tp, then pp), which follow the same turns. A turn saved by a run that
  // stopped before recording its result is dropped here, so it runs again.
  std::map<std::string, generate::Conversation> conversations;
  for (const Prepared* q : todo) {
    if (!q->spec->conversation || conversations.count(*q->spec->conversation) != 0) continue;
    const std::string& name = *q->spec->conversation;
    generate::Conversation c;
    if (writer) {
      std::vector<std::string> pending, dropped;
      for (const Prepared* t : todo)
        if (t->spec->conversation == name) pending.push_back(t->spec->id);
      c = store.load_for_rerun(name, tok, pending, &dropped);
      for (const std::string& id : dropped)
        log::warn("{}: dropping turn '{}', saved by a run that stopped before recording its result; it runs again",
                  store.path_of(name).string(), id);
    }
    if (tp.size() > 1 || pp.size() > 1) {
      std::string stored = writer ? generate::conversation_to_json(c) : std::string();
      for (comm::Communicator* group : {&tp, &pp}) stored = train::broadcast_string(*group, stored);
      if (!writer) c = generate::conversation_from_json(stored, store.path_of(name));
    }
    conversations.emplace(name, std::move(c));
  }

  // Turns of one conversation run one after another: each wave takes every pending prompt without a
  // conversation (the first wave) and the next turn of each conversation.
  std::int64_t n_failed = 0;  // turns that could not run (their conversation is full, ...)
  std::set<std::string> failed_conversations;
  auto turn_request = [&](const Prepared& q, generate::GenerationRequest& r) -> std::string {
    const std::string& name = *q.spec->conversation;
    if (failed_conversations.count(name) != 0)
      return fmt::format("prompt '{}' did not run: an earlier turn of conversation '{}' could not", q.spec->id, name);
    try {
      r.prompt = generate::conversation_turn_prompt(conversations.at(name), q.turn, tok);
    } catch (const ConfigError& e) {
      return fmt::format("{}: {}", input, e.what());
    }
    const auto n = static_cast<std::int64_t>(r.prompt.size());
    if (gen.room_after(n) > 0) return {};
    return fmt::format(
        "{}: prompt '{}' continues conversation '{}' ({}), which with this turn has {} tokens, but the "
        "model's context is {}: start a new conversation",
        input, q.spec->id, name, store.path_of(name).string(), n, model.config.max_position_embeddings);
  };
  auto log_plan = [&](const generate::BatchPlan& plan) {
    log::info0(
        "batch: {} prompt(s) in flight (runtime.batch_size = {}); KV cache {} row(s) x {} positions x {} "
        "layer(s) = {} in {}{}",
        plan.rows, job.runtime.batch_size, plan.rows, plan.capacity, plan.layers, format_bytes(plan.kv_cache_bytes),
        dtype_name(kv_dtype), device ? fmt::format(" on cuda:{}", *device) : std::string{});
    if (plan.device_layers < plan.layers) {
      const std::int64_t spilled = plan.layers - plan.device_layers;
      log::info_all(
          "KV cache spill: {} of {} layer(s) next to the weights{} ({} with {} staging layer(s)), {} "
          "layer(s) in host RAM ({}; runtime.kv_device_layers = {})",
          plan.device_layers, plan.layers, device ? fmt::format(" on cuda:{}", *device) : std::string{},
          format_bytes(plan.kv_device_bytes), model::KvCache::staging_layers(spilled), spilled,
          format_bytes(plan.kv_host_bytes), job.runtime.kv_device_layers);
    }
  };

  // output.conversation_kv: each conversation's KV cache beside its JSON, for the computation that made
  // it (model, adapter, device, weights dtype, layout). With tp or pp > 1 every rank keeps its part
  // (its KV heads of its stage's layers) in a file of its own.
  const bool keep_kv = job.output.conversation_kv;
  const bool split_kv = tp.size() > 1 || pp.size() > 1;
  const std::string kv_identity =
      keep_kv ? generate::kv_compute_identity(
                    job.model.path, job.model.adapter,
                    fmt::format("device {} tp {}/{} pp {}/{}",
                                device ? fmt::format("cuda weights {}", dtype_name(job.runtime.weights_dtype))
                                       : std::string("cpu"),
                                tp.rank(), tp.size(), pp.rank(), pp.size()))
              : std::string();
  auto kv_file_of = [&](const std::string& name) {
    return store.dir() / (split_kv
                              ? fmt::format("{}.tp{}of{}.pp{}of{}.kv", name, tp.rank(), tp.size(), pp.rank(), pp.size())
                              : name + ".kv");
  };

  // Saved progress belongs to a request of this model and adapter (generate/progress.h).
  const std::string fingerprint_context =
      fs::weakly_canonical(job.model.path).string() + "\n" +
      (job.model.adapter ? fs::weakly_canonical(*job.model.adapter).string() : std::string());
  // The prompts of a wave that continue saved progress: read by the writer (a file that belongs to
  // another request is set aside), then sent to the other ranks of the replica (as the file's JSON).
  auto attach_progress = [&](const Prepared& q, generate::GenerationRequest& r, const std::string& fingerprint) {
    if (writer) {
      const std::string& id = q.spec->id;
      if (std::optional<generate::ProgressRecord> p = progress_store.load(id, tok.n_vocab())) {
        if (p->fingerprint != fingerprint) {
          const fs::path aside = progress_store.set_aside(id);
          log::warn(
              "prompt '{}': the saved progress in {} was made for another prompt text, sampling, model or "
              "adapter; it starts afresh (the old progress is kept as {})",
              id, progress_store.path_of(id).string(), aside.string());
        } else if (static_cast<std::int64_t>(p->progress.tokens.size()) >=
                   std::min(r.max_new_tokens, gen.room_after(static_cast<std::int64_t>(r.prompt.size())))) {
          const fs::path aside = progress_store.set_aside(id);
          log::warn(
              "prompt '{}': the saved progress in {} already holds {} tokens, all this prompt may generate; it "
              "starts afresh (kept as {})",
              id, progress_store.path_of(id).string(), p->progress.tokens.size(), aside.string());
        } else {
          log::info_all("prompt '{}': continuing after {} token(s) saved by an earlier run ({})", id,
                        p->progress.tokens.size(), progress_store.path_of(id).string());
          r.resume = std::move(p->progress);
        }
      }
    }
    if (tp.size() == 1 && pp.size() == 1) return;
    std::string saved = writer && !r.resume.tokens.empty()
                            ? generate::progress_to_json({.id = q.spec->id, .progress = r.resume})
                            : std::string();
    for (comm::Communicator* group : {&tp, &pp})
      if (group->size() > 1) saved = train::broadcast_string(*group, saved);
    if (!writer && !saved.empty())
      r.resume = generate::progress_from_json(saved, progress_store.path_of(q.spec->id)).progress;
  };
  // SIGUSR1/SIGTERM (caught from the start, so one that comes while the weights load stops the job
  // after its first step instead of killing it): the replica's ranks agree after each step (they run
  // every step together) and stop.
  std::int64_t stopped_by = 0;
  auto stop_requested = [&] {
    std::int64_t sig = stop_signal().load();
    for (comm::Communicator* group : {&tp, &pp})
      if (group->size() > 1) group->all_reduce(&sig, 1, comm::CommDType::I64, comm::ReduceOp::Max);
    stopped_by = sig;
    return sig != 0;
  };

  std::size_t k = 0;
  std::int64_t n_generated = 0;
  std::int64_t n_saved = 0;  // prompts whose progress this replica saved when it stopped
  Timer total;
  std::vector<const Prepared*> pending = todo;
  for (int wave = 0; stopped_by == 0 && (wave == 0 || !pending.empty());
       ++wave) {  // wave 0 always: its check is collective
    std::vector<const Prepared*> now, later;
    std::set<std::string> taken;
    for (const Prepared* q : pending) {
      if (q->spec->conversation && !taken.insert(*q->spec->conversation).second) later.push_back(q);
      else now.push_back(q);
    }
    pending = std::move(later);
    std::vector<const Prepared*> running;
    std::vector<generate::GenerationRequest> requests;
    std::vector<std::string> refused;
    for (const Prepared* q : now) {
      generate::GenerationRequest r = q->request;
      if (q->spec->conversation) {
        if (std::string why = turn_request(*q, r); !why.empty()) {
          failed_conversations.insert(*q->spec->conversation);
          refused.push_back(std::move(why));
          continue;
        }
      }
      running.push_back(q);
      requests.push_back(std::move(r));
    }
    if (wave == 0) {
      // A turn that cannot start (system after the first turn, nothing to continue, a full context)
      // stops the job before anything is generated, on every replica alike.
      std::int64_t n_refused = writer ? static_cast<std::int64_t>(refused.size()) : 0;
      app.world().all_reduce(&n_refused, 1, comm::CommDType::I64, comm::ReduceOp::Sum);
      if (n_refused > 0) {
        if (writer)
          for (const std::string& why : refused) log::error("{}", why);
        throw train::CollectiveError(
            fmt::format("{} prompt(s) of {} cannot run (above); nothing was generated", n_refused, input), ADAPT_HERE,
            ExitCode::Usage);
      }
    } else {
      if (writer)
        for (const std::string& why : refused) log::error("{}", why);
      n_failed += static_cast<std::int64_t>(refused.size());
      if (!requests.empty())
        log::info0("{} turn(s) that follow earlier turns of their conversation in this job{}", requests.size(),
                   dp > 1 ? " (rank 0)" : "");
    }
    if (requests.empty()) continue;
    std::vector<std::string> fingerprints;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      fingerprints.push_back(generate::request_fingerprint(requests[i], fingerprint_context));
      attach_progress(*running[i], requests[i], fingerprints.back());
    }
    log_plan(gen.plan_batch(requests, job.runtime.batch_size));

    // Called as each prompt finishes (finishing order): its conversation is saved, then its record is
    // on disk, before the next step.
    auto on_finished = [&](std::size_t index, generate::GenerationOutput&& o) {
      const Prepared& q = *running[index];
      generate::Conversation* conv = nullptr;
      if (q.spec->conversation) {
        conv = &conversations.at(*q.spec->conversation);
        generate::conversation_add_turn(*conv, q.turn, requests[index].prompt, o);
      }
      if (!writer) return;
      ++k;
      n_generated += static_cast<std::int64_t>(o.tokens.size());
      const double tps =
          o.decode_s > 0 ? static_cast<double>(o.tokens.size() > 1 ? o.tokens.size() - 1 : 0) / o.decode_s : 0.0;
      generate::ResultRecord r;
      r.id = q.spec->id;
      r.text = o.text;
      r.prompt_tokens = static_cast<std::int64_t>(requests[index].prompt.size());
      r.cached_prompt_tokens = o.cached_prompt_tokens;
      r.completion_tokens = static_cast<std::int64_t>(o.tokens.size());
      r.finish_reason = generate::finish_reason_name(o.reason);
      r.time_to_first_token_s = o.time_to_first_token_s;
      r.tokens_per_s = tps;
      if (conv) {
        store.save(*conv);
        r.conversation = conv->name;
      }
      if (q.spec->output) {
        const fs::path out = generate::output_path_inside(job.output.dir, *q.spec->output, q.spec->id);
        fs::create_directories(out.parent_path());
        // A conversation's turn that continues a cut reply writes the whole reply so far; with output_code
        // only its code.
        const std::string reply = conv ? generate::conversation_reply_chain(*conv, tok) : o.text;
        file_write_atomic(
            out, q.spec->output_code.value_or(job.defaults.output_code) ? generate::extract_code(reply) : reply);
        r.output_file = *q.spec->output;
      }
      results->append(r);
      progress_store.remove(q.spec->id);
      const std::string cached =
          r.cached_prompt_tokens > 0 ? fmt::format(" ({} cached)", r.cached_prompt_tokens) : std::string();
      log::info0("[{}/{}] {}: {} prompt{} + {} new tokens ({}), first token {:.3f} s, {:.1f} tokens/s", k, todo.size(),
                 q.spec->id, r.prompt_tokens, cached, r.completion_tokens, r.finish_reason, o.time_to_first_token_s,
                 tps);
    };
    // output.conversation_kv: a turn loads its conversation's stored KV cache, and leaves its own.
    auto load_prefix = [&](std::size_t index, model::KvCache& cache, std::int64_t row,
                           std::span<const std::int32_t> tokens) -> std::int64_t {
      const Prepared& q = *running[index];
      if (!q.spec->conversation) return 0;
      const fs::path file = kv_file_of(*q.spec->conversation);
      const generate::KvSnapshotLoad got = generate::kv_snapshot_load(file, cache, row, tokens, kv_identity);
      if (!got.why_not.empty())
        log::warn("prompt '{}': not using {}: {}; prefilling the whole conversation", q.spec->id, file.string(),
                  got.why_not);
      // The ranks of a split model run each forward together: they go on from the shortest prefix any
      // of them loaded (each rank's file holds a prefix of the same conversation).
      std::int64_t neg = -got.positions;
      for (comm::Communicator* group : {&tp, &pp})
        if (group->size() > 1) group->all_reduce(&neg, 1, comm::CommDType::I64, comm::ReduceOp::Max);
      const std::int64_t positions = -neg;
      if (positions > 0 && writer) {
        log::info_all("prompt '{}': loaded the KV cache of {} of its {} tokens from {}{}", q.spec->id, positions,
                      tokens.size(), file.string(), split_kv ? " (each rank its part)" : "");
      }
      return positions;
    };
    auto save_prefix = [&](std::size_t index, model::KvCache& cache, std::int64_t row,
                           std::span<const std::int32_t> tokens) {
      const Prepared& q = *running[index];
      if (!q.spec->conversation) return;
      const fs::path file = kv_file_of(*q.spec->conversation);  // every rank keeps its part
      try {
        generate::kv_snapshot_save(file, cache, row, tokens, kv_identity);
      } catch (const IoError& e) {  // the conversation itself is still saved; its next turn prefills it whole
        log::warn("prompt '{}': could not keep the conversation's KV cache: {}", q.spec->id, e.what());
      }
    };
    auto on_progress = [&](std::size_t index, generate::SequenceProgress&& p) {
      if (stopped_by != 0) ++n_saved;
      if (!writer) return;
      progress_store.save(
          {.id = running[index]->spec->id, .fingerprint = fingerprints[index], .progress = std::move(p)});
    };
    generate::Generator::BatchHooks hooks{
        .on_finished = on_finished, .on_progress = on_progress, .stop = stop_requested};
    if (keep_kv) {
      hooks.load_prefix = load_prefix;
      hooks.save_prefix = save_prefix;
    }
    if (!gen.run_batch(requests, job.runtime.batch_size, hooks)) {
      // Said by the stopped replica's writer (with dp > 1 the signal may have reached another replica only).
      if (writer) {
        log::info_all(
            "received {}: saved the progress of {} prompt(s) in flight in {}; stopping (exit code {}: "
            "run the job again, or requeue it, to continue them)",
            stop_signal_name(stopped_by), n_saved, progress_store.dir().string(), kExitRequeue);
      }
    }
  }
  std::int64_t totals[4] = {static_cast<std::int64_t>(k), n_generated, writer ? n_failed : 0,
                            writer && stopped_by != 0 ? 1 : 0};  // over every replica's writer
  app.world().all_reduce(totals, 4, comm::CommDType::I64, comm::ReduceOp::Sum);
  if (dp > 1) {
    train::on_root(app.world(), "merge the results of the replicas",
                   [&] { generate::results_parts_merge(results_path); });
  }
  const double seconds = total.seconds();
  log::info0("{}: {} prompt(s) finished, {} new tokens in {:.1f} s ({:.1f} tokens/s overall); results in {}",
             totals[3] > 0 ? "stopped" : "done", totals[0], totals[1], seconds,
             seconds > 0 ? static_cast<double>(totals[1]) / seconds : 0.0, results_path.string());
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

}  // namespace

int main(int argc, char** argv) {
  // SIGUSR1/SIGTERM from the process's start stop the job after its current step (see run()), also
  // when they come while MPI starts or the model loads (exit 75, and the job is requeued).
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
