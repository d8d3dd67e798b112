// The generation loop of one sequence on one rank: prefill the prompt into a KV cache, then decode
// token by token (sampler → stop rules → incremental UTF-8-safe detokenisation) until a stop rule
// fires. The cache is sized to the prompt plus max_new_tokens, never past the model's context.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "generate/sampler.h"
#include "generate/stop.h"
#include "model/llama_weights.h"
#include "ops/workspace.h"
#include "tokenizer/tokenizer.h"

namespace adapt::generate {

struct GenerationOutput {
  std::vector<std::int32_t> tokens;  // generated ids (the EOS id included when it ended the sequence)
  std::string text;                  // decoded without special tokens, stop string removed
  FinishReason reason = FinishReason::None;
  double time_to_first_token_s = 0;  // prefill + first sample
  double decode_s = 0;               // from the first token to the last
};

class Generator {
 public:
  /// `model` and `tokenizer` must outlive the generator. ConfigError when the tokenizer's vocabulary
  /// does not fit the model's embedding.
  Generator(const model::LlamaModel& model, const tokenizer::Tokenizer& tokenizer);

  /// Largest number of new tokens a prompt of `n_prompt` tokens can get within the context.
  std::int64_t room_after(std::int64_t n_prompt) const;

  /// Generates for one prompt. `max_new_tokens` is capped at room_after(prompt.size()) (the output
  /// then ends with finish reason "length"); ConfigError when the prompt alone fills the context.
  /// `on_text` receives text as it becomes final (for streaming).
  GenerationOutput run(std::span<const std::int32_t> prompt, const SamplingParams& sampling,
                       const std::vector<std::string>& stop_strings, std::int64_t max_new_tokens,
                       const std::function<void(std::string_view)>& on_text = {});

 private:
  const model::LlamaModel& model_;
  const tokenizer::Tokenizer& tokenizer_;
  ops::Workspace workspace_;
};

}  // namespace adapt::generate
