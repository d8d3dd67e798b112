// adapt_gen: runs a generation job from a prompts TOML file, runtime.batch_size prompts at a time
// (generate::Generator's batch scheduler). Results are written as prompts finish (one JSON line each,
// plus optional per-prompt output files), so a restarted job skips what is done.
//
//   adapt_gen --input prompts.toml [--set key=value ...] [--dry-run]
#include <fmt/format.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "config/config_binder.h"
#include "config/config_printer.h"
#include "config/gen_config_schema.h"
#include "core/app_main.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "generate/generator.h"
#include "generate/results.h"
#include "model/llama_weights.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage = R"(usage: adapt_gen --input prompts.toml [--set key=value ...] [--dry-run]

Runs every prompt of the job that is not already in the results file, runtime.batch_size at a time
(they decode together; a finished prompt's place goes to the next one), and appends one JSON line per
prompt as it finishes (id, text, prompt_tokens, completion_tokens, finish_reason,
time_to_first_token_s, tokens_per_s, output_file) to output.dir/output.results, in finishing order.
Prompts with `output` also get their completion written to that file (inside output.dir). Texts do not
depend on the batch size. Progress goes to stderr.

  --input FILE      the job (see inputs/prompts.toml)
  --set key=value   override one key, e.g. --set defaults.temperature=0.7 or --set prompts[0].seed=3
  --dry-run         validate the job, tokenize the prompts, print the resolved job, generate nothing

A prompt that does not fit the model's context is an error before anything is generated; a completion
that would run past the context is cut there (finish_reason "length").

exit codes: 0 done; 2 bad job file or option; 3 missing/invalid model, tokenizer or unwritable output;
6 unsupported; 70 internal error.

job keys:
)";

struct Prepared {
  const generate::PromptSpec* spec;
  generate::GenerationRequest request;
};

int run(int argc, char** argv) {
  std::string input;
  std::vector<std::string> sets;
  bool dry_run = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value; run adapt_gen --help", a);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf("%s%s", kUsage, config::help(config::gen_job_schema()).c_str());
      return 0;
    } else if (a == "--input") {
      input = value();
    } else if (a == "--set") {
      sets.push_back(value());
    } else if (a == "--dry-run") {
      dry_run = true;
    } else {
      ADAPT_THROW(ConfigError, "unknown option '{}'{}; run adapt_gen --help", a,
                  did_you_mean(a, {"--input", "--set", "--dry-run", "--help"}));
    }
  }
  ADAPT_REQUIRE(!input.empty(), ConfigError, "adapt_gen needs --input prompts.toml; run adapt_gen --help");
  const generate::GenJob job = config::load(input, config::gen_job_schema(), sets);

  const fs::path tok_path = job.model.tokenizer ? *job.model.tokenizer : job.model.path;
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(tok_path);

  // Tokenize and validate every prompt before loading weights or generating anything.
  std::vector<Prepared> prepared;
  const auto& d = job.defaults;
  for (std::size_t i = 0; i < job.prompts.size(); ++i) {
    const auto& p = job.prompts[i];
    Prepared q{&p, {}};
    generate::GenerationRequest& r = q.request;
    r.max_new_tokens = p.max_new_tokens.value_or(d.max_new_tokens);
    r.stop = p.stop.value_or(d.stop);
    r.sampling.temperature = p.temperature.value_or(d.temperature);
    r.sampling.top_k = p.top_k.value_or(d.top_k);
    r.sampling.top_p = p.top_p.value_or(d.top_p);
    r.sampling.min_p = p.min_p.value_or(d.min_p);
    r.sampling.repetition_penalty = p.repetition_penalty.value_or(d.repetition_penalty);
    r.sampling.seed = static_cast<std::uint64_t>(p.seed.value_or(d.seed));
    generate::sampling_params_validate(r.sampling, fmt::format("{}: prompts[{}] ('{}')", input, i, p.id));
    if (p.user && d.chat) {
      std::vector<tokenizer::ChatMessage> msgs;
      if (p.system) msgs.push_back({"system", *p.system});
      msgs.push_back({"user", *p.user});
      for (auto id : tokenizer::chat_encode(tok, msgs)) r.prompt.push_back(static_cast<std::int32_t>(id));
    } else {
      const std::string text = p.user ? (p.system ? *p.system + "\n\n" + *p.user : *p.user) : *p.text;
      tokenizer::EncodeOptions eo;
      eo.bos = true;
      for (auto id : tok.encode(text, eo)) r.prompt.push_back(static_cast<std::int32_t>(id));
    }
    if (p.output) generate::output_path_inside(job.output.dir, *p.output, fmt::format("prompts[{}]", i));
    prepared.push_back(std::move(q));
  }

  model::LlamaLoadStats stats;
  if (dry_run) {
    std::printf("%s", config::to_toml(job, config::gen_job_schema()).c_str());
    for (const auto& q : prepared)
      std::printf("# %s: %zu prompt tokens\n", q.spec->id.c_str(), q.request.prompt.size());
    return 0;
  }
  const model::LlamaModel model = model::llama_model_load(job.model.path, {.storage = model::WeightStorage::AsStored}, &stats);
  log::info0("loaded {} ({} layers, vocab {}) in {:.2f} s; tokenizer {}", job.model.path.string(), model.config.n_layers,
             model.config.vocab_size, stats.seconds, tok.description());
  generate::Generator gen(model, tok);
  std::optional<adapters::AdapterSet> adapter;
  if (job.model.adapter) {
    adapter.emplace(adapters::adapter_load(*job.model.adapter, model.config));
    gen.set_hook(&*adapter);
    log::info0("adapter {}: {} parameters", job.model.adapter->string(), format_count(adapter->n_parameters()));
  }
  for (std::size_t i = 0; i < prepared.size(); ++i) {
    const auto n = static_cast<std::int64_t>(prepared[i].request.prompt.size());
    ADAPT_REQUIRE(gen.room_after(n) > 0, ConfigError,
                  "{}: prompts[{}] ('{}') has {} tokens, but the model's context is {} tokens: shorten the prompt",
                  input, i, prepared[i].spec->id, n, model.config.max_position_embeddings);
  }

  fs::create_directories(job.output.dir);
  generate::ResultsFile results(generate::output_path_inside(job.output.dir, job.output.results, "output.results"));
  std::vector<const Prepared*> todo;
  std::vector<generate::GenerationRequest> requests;
  for (const auto& q : prepared) {
    if (results.done(q.spec->id)) continue;
    todo.push_back(&q);
    requests.push_back(q.request);
  }
  log::info0("{} prompt(s), {} already in {}, {} to run", prepared.size(), prepared.size() - todo.size(),
             results.path().string(), todo.size());
  const generate::BatchPlan plan = gen.plan_batch(requests, job.runtime.batch_size);
  if (!requests.empty()) {
    log::info0("batch: {} prompt(s) in flight (runtime.batch_size = {}); KV cache {} row(s) x {} positions = {}",
               plan.rows, job.runtime.batch_size, plan.rows, plan.capacity, format_bytes(plan.kv_cache_bytes));
  }
  std::size_t k = 0;
  std::int64_t n_generated = 0;
  Timer total;
  // Called as each prompt finishes (finishing order): its record is on disk before the next step.
  auto on_finished = [&](std::size_t index, generate::GenerationOutput&& o) {
    const Prepared& q = *todo[index];
    ++k;
    n_generated += static_cast<std::int64_t>(o.tokens.size());
    const double tps = o.decode_s > 0 ? static_cast<double>(o.tokens.size() > 1 ? o.tokens.size() - 1 : 0) / o.decode_s : 0.0;
    generate::ResultRecord r;
    r.id = q.spec->id;
    r.text = o.text;
    r.prompt_tokens = static_cast<std::int64_t>(q.request.prompt.size());
    r.completion_tokens = static_cast<std::int64_t>(o.tokens.size());
    r.finish_reason = generate::finish_reason_name(o.reason);
    r.time_to_first_token_s = o.time_to_first_token_s;
    r.tokens_per_s = tps;
    if (q.spec->output) {
      const fs::path out = generate::output_path_inside(job.output.dir, *q.spec->output, q.spec->id);
      fs::create_directories(out.parent_path());
      file_write_atomic(out, o.text);
      r.output_file = *q.spec->output;
    }
    results.append(r);
    log::info0("[{}/{}] {}: {} prompt + {} new tokens ({}), first token {:.3f} s, {:.1f} tokens/s", k, todo.size(),
               q.spec->id, r.prompt_tokens, r.completion_tokens, r.finish_reason, o.time_to_first_token_s, tps);
  };
  gen.run_batch(requests, job.runtime.batch_size, on_finished);
  const double seconds = total.seconds();
  log::info0("done: {} prompt(s), {} new tokens in {:.1f} s ({:.1f} tokens/s overall); results in {}", k, n_generated,
             seconds, seconds > 0 ? static_cast<double>(n_generated) / seconds : 0.0, results.path().string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return adapt::app_main([&]() -> int {
    if (argc < 2) {
      std::fputs(kUsage, stderr);
      return static_cast<int>(ExitCode::Usage);
    }
    return run(argc, argv);
  });
}
