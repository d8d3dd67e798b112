#include "config/gen_config_schema.h"

#include "config/device_runtime_keys.h"

namespace adapt::config {

const Schema<generate::GenJob>& gen_job_schema() {
  static const Schema<generate::GenJob> schema = [] {
    using namespace generate;
    Schema<GenModel> model;
    model.field("path", &GenModel::path, "Model folder in HF layout (relative to this file).").required();
    model.field("tokenizer", &GenModel::tokenizer, "Tokenizer file or folder; default: the model folder's.");
    model.field("adapter", &GenModel::adapter,
                "Adapter folder to apply: PEFT LoRA, AdapterHub bottleneck, or lora+bottleneck (lora/ and "
                "bottleneck/ subfolders); e.g. what adapt_train exports.");

    Schema<GenOutput> output;
    output.field("dir", &GenOutput::dir, "Folder for results and output files (relative to this file).").required();
    output.field("results", &GenOutput::results, "Results file (JSON Lines) inside dir.");
    output.field("conversations", &GenOutput::conversations,
                 "Folder inside dir for the conversations that prompts continue between jobs (one <name>.json "
                 "each: the turns and their token ids).");
    output.field("conversation_kv", &GenOutput::conversation_kv,
                 "Keep each conversation's KV cache beside its JSON (<name>.kv, rewritten after every turn), so "
                 "that the next turn loads the keys and values of the tokens it shares with the conversation and "
                 "prefills only its new message instead of the whole conversation. With tp or pp > 1 each rank "
                 "keeps its part (<name>.tpTofN.ppPofM.kv: its KV heads of its stage's layers). A file from "
                 "another model, adapter, device, weights_dtype, layout or kv_cache_dtype, or a damaged one, is not "
                 "used (the turn is prefilled whole, and the log says why). Size per token: 2 x layers x KV heads x "
                 "head_dim x 4 bytes (2 with a bf16 cache), e.g. 320 KB in bf16 for Llama 3.1 70B.");
    output.field("progress", &GenOutput::progress,
                 "Folder inside dir for the progress of prompts still being generated (one JSON file each: the "
                 "tokens so far and the sampler's state), so a job stopped by a signal, a preemption or a crash "
                 "continues them where they stood when it runs again; removed once a prompt's result is recorded.");

    Schema<GenDefaults> d;
    d.field("max_new_tokens", &GenDefaults::max_new_tokens, "Tokens to generate at most per prompt.")
        .at_least(std::int64_t{1});
    d.field("temperature", &GenDefaults::temperature, "0 = greedy.").at_least(0.0);
    d.field("top_k", &GenDefaults::top_k,
            "Keep the k most likely tokens (0 = off; HF's generate() keeps 50 when sampling unless told). Ties "
            "at the k-th go to the lower ids.")
        .at_least(std::int64_t{0});
    d.field("top_p", &GenDefaults::top_p, "Nucleus sampling mass (1 = off).").range(1e-9, 1.0);
    d.field("min_p", &GenDefaults::min_p, "Drop tokens below min_p x the top probability (0 = off).")
        .range(0.0, 0.999999);
    d.field("repetition_penalty", &GenDefaults::repetition_penalty, "HF repetition penalty (1 = off).")
        .greater_than(0.0);
    d.field("seed", &GenDefaults::seed, "Random seed of the sampler.").at_least(std::int64_t{0});
    d.field("chat", &GenDefaults::chat,
            "Wrap system/user prompts in the Llama 3.1 chat layout as HF's Llama 3.1 chat template writes it (and "
            "adapt_train's chat data): a system block with the lines \"Cutting Knowledge Date: December 2023\" and "
            "\"Today Date: 26 Jul 2024\" comes first, then the system message, whatever the model's own "
            "tokenizer_config.json holds (Llama 3.0's template has no such block; 3.2's writes today's date). "
            "Special-token text inside a message stays text.");
    d.field("stop", &GenDefaults::stop,
            "Stop strings, matched in the decoded text and cut from it with what follows. Special tokens are not "
            "text there, so a stop string like \"<|eot_id|>\" never matches: replies end at the tokenizer's end "
            "tokens (<|end_of_text|>, <|eom_id|>, <|eot_id|>) and at the model's eos_token_id "
            "(generation_config.json, else config.json) anyway.");
    d.field("output_code", &GenDefaults::output_code,
            "A prompt's output file gets only the code of the reply: the contents of its Markdown code fences "
            "(```cpp ... ```, ~~~ ... ~~~; an unclosed last fence runs to the end of a cut reply), joined by "
            "blank lines; a reply without a fence is written whole. The results file keeps the whole text.");

    Schema<GenRuntime> rt;
    rt.field("batch_size", &GenRuntime::batch_size,
             "Prompts decoded together, each in its own KV-cache row; a finished prompt's row takes the next at "
             "once. Texts do not depend on it (bit for bit with share_prefixes = false; with sharing a token can "
             "differ only at a near-tie of the logits; README, Generating). KV cache: batch_size x (longest prompt + "
             "max_new_tokens) positions.")
        .range(std::int64_t{1}, std::int64_t{1024});
    add_device_runtime_keys(
        rt, {.weights = "the weight matrices (embedding, projections, lm_head; norms stay f32)",
             .streamed_layer_cost = "once per forward (a decode step copies them all: worth it for many rows at once, "
                                    "not for one)",
             .attention_extra = "Generation attends over its KV cache: in bf16 only over a bf16 cache "
                                "(kv_cache_dtype; \"auto\" gives one wherever attention computes in bf16)."});
    rt.field("prefill_chunk", &GenRuntime::prefill_chunk,
             "Prompt tokens per forward: a long prompt is prefilled in pieces of this many tokens, so its "
             "activations stay those of prefill_chunk tokens (0 = whole prompts at once).")
        .at_least(std::int64_t{0});
    rt.field("kv_device_layers", &GenRuntime::kv_device_layers,
             "Layers whose KV cache stays on the GPU; the cache of the other layers spills to host RAM (pinned) and "
             "is copied to the GPU layer by layer as the forward reaches it. -1 = as many as fit in the GPU's free "
             "memory after the activations (ranks sharing one GPU each see all of its free memory: give a number "
             "there). With device = \"cpu\" the cache is in host RAM anyway: -1 keeps it in one place, a smaller "
             "number only adds copies.")
        .at_least(std::int64_t{-1});
    rt.enumeration("kv_cache_dtype", &GenRuntime::kv_cache_dtype,
                   {{"auto", KvCacheDtype::Auto}, {"f32", KvCacheDtype::F32}, {"bf16", KvCacheDtype::BF16}},
                   "Element type of the KV cache: f32, or bf16 (half the memory, so twice the context or rows in the "
                   "same space, and half the bytes attention reads; keys and values are rounded to bf16 as they are "
                   "stored; attention computes as attention_dtype says). \"auto\": bf16 where attention computes in "
                   "bf16 (on a GPU with weights_dtype = \"bf16\"; on the CPU with attention_dtype = \"bf16\", or "
                   "\"auto\" with cpu_matmul_dtype = \"bf16\": its products round keys and values to bf16 anyway), "
                   "f32 otherwise.");
    rt.field("share_prefixes", &GenRuntime::share_prefixes,
             "A prompt whose first tokens are those another KV-cache row holds (a prompt in flight, or the last "
             "one a free row ran) copies their keys and values from there and prefills only the rest: prompts "
             "that repeat a long preamble (a specification, the code so far) pay for it once per batch. "
             "results.jsonl's cached_prompt_tokens counts the positions taken. false = every prompt prefilled "
             "whole.");
    rt.field("progress_every", &GenRuntime::progress_every,
             "Save an unfinished prompt's progress (output.progress) after every this many generated tokens, so "
             "a job killed without warning loses at most that many per prompt; 0 = only when the job stops on "
             "SIGUSR1/SIGTERM (it then saves every prompt in flight and exits 75).")
        .at_least(std::int64_t{0});

    Schema<GenParallel> par;
    par.field("tp", &GenParallel::tp,
              "Tensor-parallel ranks; must divide the attention and KV heads and the world size.")
        .at_least(std::int64_t{1});
    par.field("pp", &GenParallel::pp, "Pipeline stages; dp = world / (tp x pp) replicas share out the prompts.")
        .at_least(std::int64_t{1});

    Schema<PromptSpec> p;
    p.field("id", &PromptSpec::id, "Unique name; finished ids are skipped when the job runs again.").required();
    p.field("conversation", &PromptSpec::conversation,
            "Name of a conversation this prompt continues: its tokens are the conversation so far (earlier turns, "
            "in this job or earlier jobs with the same output folder, and the model's replies) followed by this "
            "turn; its reply is added to the conversation. Turns of one conversation run in file order. Without "
            "user or text the model continues its last reply (cut by max_new_tokens), and output then gets the "
            "whole reply so far.");
    p.field("system", &PromptSpec::system, "System message (with user; in a conversation, first turn only).");
    p.field("user", &PromptSpec::user, "User message, chat-formatted.");
    p.field("text", &PromptSpec::text, "Raw prompt text, no template (instead of user).");
    p.field("output", &PromptSpec::output, "File for the completion, relative to output.dir.");
    p.field("output_code", &PromptSpec::output_code, "Overrides defaults.output_code.");
    p.field("max_new_tokens", &PromptSpec::max_new_tokens, "Overrides defaults.max_new_tokens.")
        .at_least(std::int64_t{1});
    p.field("temperature", &PromptSpec::temperature, "Overrides defaults.temperature.").at_least(0.0);
    p.field("top_k", &PromptSpec::top_k, "Overrides defaults.top_k.").at_least(std::int64_t{0});
    p.field("top_p", &PromptSpec::top_p, "Overrides defaults.top_p.").range(1e-9, 1.0);
    p.field("min_p", &PromptSpec::min_p, "Overrides defaults.min_p.").range(0.0, 0.999999);
    p.field("repetition_penalty", &PromptSpec::repetition_penalty, "Overrides defaults.repetition_penalty.")
        .greater_than(0.0);
    p.field("seed", &PromptSpec::seed, "Overrides defaults.seed.").at_least(std::int64_t{0});
    p.field("stop", &PromptSpec::stop, "Overrides defaults.stop.");
    p.check([](const PromptSpec& s) -> std::string {
      if (s.user && s.text)
        return "give one of user (chat-formatted) or text (raw) for prompt '" + s.id + "', not both";
      if (!s.user && !s.text && !s.conversation)
        return "give user (chat-formatted) or text (raw) for prompt '" + s.id +
               "' (only a conversation's turn may have neither: it continues the last reply)";
      if (s.conversation && !conversation_name_ok(*s.conversation))
        return "conversation = \"" + *s.conversation + "\" of prompt '" + s.id +
               "' must be 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'";
      if (s.system && !s.user) return "system needs user (prompt '" + s.id + "')";
      if ((s.user && s.user->empty()) || (s.text && s.text->empty())) return "prompt '" + s.id + "' is empty";
      if (s.output && !path_stays_inside(*s.output))
        return "output = \"" + *s.output + "\" of prompt '" + s.id +
               "' must be a relative path that stays inside output.dir";
      return "";
    });

    Schema<GenJob> job;
    job.table("model", &GenJob::model, model, "The base model.");
    job.table("output", &GenJob::output, output, "Where results go.");
    job.table("defaults", &GenJob::defaults, d, "Sampling and stop rules for every prompt.");
    job.table("runtime", &GenJob::runtime, rt, "How the job runs on this process.");
    job.table("parallel", &GenJob::parallel, par,
              "Ranks: tp x pp x dp = the world size of mpiexec/srun (one process: all 1).");
    job.table_array("prompts", &GenJob::prompts, p, "The prompts ([[prompts]] tables).");
    job.check([](const GenJob& j) -> std::string {
      if (j.prompts.empty()) return "the job has no [[prompts]]; add at least one";
      for (std::size_t a = 0; a < j.prompts.size(); ++a)
        for (std::size_t b = a + 1; b < j.prompts.size(); ++b)
          if (j.prompts[a].id == j.prompts[b].id)
            return "prompt id '" + j.prompts[a].id + "' is used twice (prompts[" + std::to_string(a) +
                   "] and prompts[" + std::to_string(b) + "]); ids must be unique";
      for (std::size_t b = 0; b < j.prompts.size(); ++b) {
        const PromptSpec& p = j.prompts[b];
        if (!p.conversation || !p.system) continue;
        for (std::size_t a = 0; a < b; ++a)
          if (j.prompts[a].conversation == p.conversation)
            return "prompts[" + std::to_string(b) + "] ('" + p.id +
                   "') has system, but it is not the first turn of "
                   "conversation '" +
                   *p.conversation + "' (prompts[" + std::to_string(a) +
                   "] is); system is only "
                   "allowed on a conversation's first turn";
      }
      if (!path_stays_inside(j.output.conversations))
        return "output.conversations = \"" + j.output.conversations + "\" must be a folder inside output.dir";
      if (!path_stays_inside(j.output.progress))
        return "output.progress = \"" + j.output.progress + "\" must be a folder inside output.dir";
      return "";
    });
    return job;
  }();
  return schema;
}

}  // namespace adapt::config
