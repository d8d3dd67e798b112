#include "apps/gen_job.h"

#include <fmt/format.h>

#include <limits>
#include <map>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "generate/results.h"
#include "generate/sampler.h"
#include "model/llama_config.h"

namespace adapt::apps {

std::vector<std::size_t> share_keys(const std::vector<const generate::PromptSpec*>& prompts) {
  std::map<std::string, std::size_t> first;
  std::vector<std::size_t> keys(prompts.size());
  for (std::size_t i = 0; i < prompts.size(); ++i)
    keys[i] = prompts[i]->conversation ? first.emplace(*prompts[i]->conversation, i).first->second : i;
  return keys;
}

std::vector<Prepared> prepare_prompts(const generate::GenJob& job, const std::string& input,
                                      const generate::PromptShard& shard, const tokenizer::Tokenizer& tok, bool root) {
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
      if (special != tokenizer::kNoToken && tok.is_special(special) && root && warned_stops.insert(s).second)
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
  return prepared;
}

std::vector<std::int32_t> model_eos_ids(const std::filesystem::path& model_dir) {
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

}  // namespace adapt::apps
