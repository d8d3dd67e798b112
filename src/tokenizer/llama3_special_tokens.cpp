// Llama 3.1 special-token names, as written by transformers' converter (DEFAULT_LLAMA_SPECIAL_TOKENS
// "3.1") into the hub tokenizer.json files.
#include "tokenizer/llama3_special_tokens.h"

#include <fmt/format.h>

namespace adapt::tokenizer {

std::vector<std::string> llama3_special_tokens() {
  std::vector<std::string> tokens = {
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|reserved_special_token_0|>",
      "<|reserved_special_token_1|>",
      "<|finetune_right_pad_id|>",
      "<|reserved_special_token_2|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|eom_id|>",
      "<|eot_id|>",
      "<|python_tag|>",
  };
  // The 3.1 names renumber the reserved tokens: after the 11 named ones, reserved_3 … reserved_247.
  for (int i = 3; tokens.size() < static_cast<std::size_t>(kLlama3NumSpecialTokens); ++i)
    tokens.push_back(fmt::format("<|reserved_special_token_{}|>", i));
  return tokens;
}

}  // namespace adapt::tokenizer
