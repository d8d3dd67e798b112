#include "apps/gen_dry_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "config/config_printer.h"
#include "config/gen_config_schema.h"
#include "core/error.h"
#include "core/strings.h"
#include "generate/generator.h"
#include "generate/results.h"
#include "generate/results_parts.h"
#include "plan/plan.h"

namespace adapt::apps {

namespace {

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

TurnPreview dry_run_turn(const GenJobContext& ctx, const Prepared& q, DryConversation& dc) {
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

}  // namespace

void dry_run_report(const GenJobContext& ctx, const std::vector<Prepared>& prepared) {
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

}  // namespace adapt::apps
