// adapt_gen: runs a generation job from a prompts TOML file, runtime.batch_size prompts at a time
// (generate::Generator's batch scheduler). Results are written as prompts finish (one JSON line each,
// plus optional per-prompt output files), so a restarted job skips what is done. With runtime.device
// = "cuda" the weights are read on the host and copied once to the rank's GPU, where every step runs.
//
//   adapt_gen --input prompts.toml [--set key=value ...] [--shard I/N] [--dry-run]
#include <fmt/format.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "apps/app_device.h"
#include "apps/app_parallel.h"
#include "apps/gen_dry_run.h"
#include "apps/gen_job.h"
#include "apps/gen_runner.h"
#include "comm/comm_kind.h"
#include "config/config_binder.h"
#include "config/config_printer.h"
#include "config/gen_config_schema.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/stop_signal.h"
#include "core/strings.h"
#include "generate/conversation.h"
#include "generate/generator.h"
#include "generate/progress.h"
#include "generate/prompt_shard.h"
#include "generate/results.h"
#include "model/attention_compute.h"
#include "model/llama_config.h"
#include "model/llama_device.h"
#include "model/llama_weights.h"
#include "model/tensor_parallel.h"
#include "model/weight_stream.h"
#include "ops/matmul.h"
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

/// adapt_gen's command line.
struct Args {
  std::string input;
  std::vector<std::string> sets;  // --set key=value, in order
  generate::PromptShard shard;
  bool dry_run = false;
  bool help = false;
};

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value; run adapt_gen --help", a);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      args.help = true;
      return args;
    } else if (a == "--input") {
      args.input = value();
    } else if (a == "--set") {
      args.sets.push_back(value());
    } else if (a == "--shard") {
      args.shard = generate::prompt_shard_parse(value());
    } else if (a == "--dry-run") {
      args.dry_run = true;
    } else {
      ADAPT_THROW(ConfigError, "unknown option '{}'{}; run adapt_gen --help", a,
                  did_you_mean(a, {"--input", "--set", "--shard", "--dry-run", "--help"}));
    }
  }
  ADAPT_REQUIRE(!args.input.empty(), ConfigError, "adapt_gen needs --input prompts.toml; run adapt_gen --help");
  return args;
}

int run(int argc, char** argv, apps::ParallelApp& app) {
  const Args args = parse_args(argc, argv);
  if (args.help) {
    if (app.root()) std::printf("%s%s", kUsage, config::help(config::gen_job_schema()).c_str());
    return 0;
  }
  const std::string& input = args.input;
  const generate::PromptShard& shard = args.shard;
  const generate::GenJob job = config::load(input, config::gen_job_schema(), args.sets);
  // The GPU first: a node without one fails here, before the tokenizer or the weights are read.
  const std::optional<int> device = apps::app_device_resolve(
      job.runtime.device, app.launch(), {.name = "runtime.device", .to_cpu = "set runtime.device = \"cpu\""});
  const DType kv_dtype = generate::kv_cache_dtype_for(job.runtime, device.has_value());

  model::model_folder_require(job.model.path, "model.path");  // before the tokenizer, which it may hold
  const fs::path tok_path = job.model.tokenizer ? *job.model.tokenizer : job.model.path;
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(tok_path);

  // Tokenize and validate every prompt before loading weights or generating anything.
  const std::vector<apps::Prepared> prepared = apps::prepare_prompts(job, input, shard, tok, app.root());

  const model::LlamaConfig mc = model::llama_config_load(job.model.path);
  const std::vector<std::int32_t> eos_ids = apps::model_eos_ids(job.model.path);
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
  const apps::GenJobContext ctx{.input = input,
                                .job = job,
                                .mc = mc,
                                .tok = tok,
                                .store = store,
                                .progress_store = progress_store,
                                .results_path = results_path,
                                .shard = shard,
                                .device = device,
                                .kv_dtype = kv_dtype};
  if (args.dry_run) {
    // Rank 0 reports; an error there (a corrupt results file, a turn that cannot run) is every rank's.
    train::on_root(app.world(), "check the job (--dry-run)", [&] { apps::dry_run_report(ctx, prepared); });
    return 0;
  }
  // An output folder that cannot be written fails the job now, not after the weights are read. One job
  // at a time on a results file (each --shard has its own): rank 0 holds its lock until the job ends.
  std::optional<FileLock> results_lock;
  train::on_root(app.world(), "check the output folder", [&] {
    dir_require_writable(job.output.dir, "output.dir");
    fs::create_directories(results_path.parent_path());
    std::string lock_name = ".";  // appended, not `+`: GCC 12 misreads that as an overlapping copy
    lock_name += results_path.filename().string();
    lock_name += ".lock";
    results_lock.emplace(results_path.parent_path() / lock_name,
                         fmt::format("the results file '{}'", results_path.string()));
  });
  // With tp and pp the ranks of a replica each hold their slices of the weights (tp: heads, FFN,
  // vocabulary and KV heads; pp: a stage's layers).
  comm::Communicator& tp = *app.comms().tp;
  comm::Communicator& pp = *app.comms().pp;
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
  // run's host-side broadcasts (prompt lists, conversations, progress) keep the host communicators.
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

  return apps::gen_run(ctx, prepared, gen, app);
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
