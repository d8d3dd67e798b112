#include "generate/generator.h"

#include <algorithm>

#include "core/error.h"
#include "core/timer.h"
#include "model/kv_cache.h"
#include "model/llama_forward.h"
#include "tokenizer/stream_decoder.h"

namespace adapt::generate {

Generator::Generator(const model::LlamaModel& model, const tokenizer::Tokenizer& tokenizer)
    : model_(model), tokenizer_(tokenizer) {
  ADAPT_REQUIRE(tokenizer.n_vocab() <= model.config.vocab_size, ConfigError,
                "the tokenizer ({}) has {} tokens but the model's vocab_size is {}: ids beyond {} have no embedding. "
                "Use the tokenizer that belongs to the model in '{}'.", tokenizer.description(), tokenizer.n_vocab(),
                model.config.vocab_size, model.config.vocab_size - 1, model.dir.string());
}

std::int64_t Generator::room_after(std::int64_t n_prompt) const {
  return std::max<std::int64_t>(0, model_.config.max_position_embeddings - n_prompt);
}

GenerationOutput Generator::run(std::span<const std::int32_t> prompt, const SamplingParams& sampling,
                                const std::vector<std::string>& stop_strings, std::int64_t max_new_tokens,
                                const std::function<void(std::string_view)>& on_text) {
  const auto n_prompt = static_cast<std::int64_t>(prompt.size());
  ADAPT_REQUIRE(n_prompt > 0, ConfigError, "the prompt is empty after tokenisation");
  const std::int64_t room = room_after(n_prompt);
  ADAPT_REQUIRE(room > 0, ConfigError,
                "the prompt has {} tokens but the model's context is {} (max_position_embeddings): shorten it",
                n_prompt, model_.config.max_position_embeddings);
  const std::int64_t n_new = std::min(max_new_tokens, room);

  GenerationOutput out;
  Sampler sampler(sampling);
  std::vector<std::int32_t> eos(tokenizer_.eos_ids().begin(), tokenizer_.eos_ids().end());
  StopChecker stop(eos, stop_strings, n_new);
  tokenizer::DecodeOptions dopts;
  dopts.skip_special = true;  // completions are text (source code): special tokens are not written
  tokenizer::StreamDecoder decoder(tokenizer_, dopts);
  model::KvCache cache(model_.config, /*batch=*/1, n_prompt + n_new);
  std::vector<std::int32_t> history(prompt.begin(), prompt.end());

  Timer timer;
  Tensor ids = Tensor::empty({1, n_prompt}, DType::I32);
  std::copy(prompt.begin(), prompt.end(), ids.data<std::int32_t>());
  model::ForwardOptions fo;
  fo.last_position_only = true;
  std::size_t streamed = 0;
  for (;;) {
    Tensor logits = model::llama_forward(model_, ids, &cache, fo, &workspace_);  // (1, V)
    std::span<float> row(logits.data<float>(), static_cast<std::size_t>(logits.dim(-1)));
    const std::int32_t next = sampler.sample(row, history);
    if (out.tokens.empty()) {
      out.time_to_first_token_s = timer.seconds();
      timer.reset();
    }
    out.tokens.push_back(next);
    history.push_back(next);
    const bool is_eos = std::find(eos.begin(), eos.end(), next) != eos.end();
    std::string piece = is_eos ? std::string() : decoder.push(next);
    FinishReason r = stop.push(next, piece);
    if (r == FinishReason::None) {
      if (on_text && stop.stable_size() > streamed) {
        on_text(std::string_view(stop.text()).substr(streamed, stop.stable_size() - streamed));
        streamed = stop.stable_size();
      }
      ids = Tensor::empty({1, 1}, DType::I32);
      ids.data<std::int32_t>()[0] = next;
      continue;
    }
    if (r != FinishReason::StopString) {
      const std::string tail = decoder.finish();
      if (!tail.empty() && stop.push(-1, tail) == FinishReason::StopString) r = FinishReason::StopString;
    }
    out.reason = r;
    break;
  }
  out.decode_s = timer.seconds();
  out.text = stop.text();
  if (on_text && out.text.size() > streamed) on_text(std::string_view(out.text).substr(streamed));
  return out;
}

}  // namespace adapt::generate
