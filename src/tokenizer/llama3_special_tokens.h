// The 256 Llama 3.1 special tokens (SPEC-llama §4.2, "HF 3.1" column) and the ids of the ones the
// rest of adapt needs. Special tokens sit after the BPE vocabulary: id = base + index, where
// base = 128000 for Meta's vocabulary and 256 + n_merges for a vocabulary trained by bpe_train.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace adapt::tokenizer {

/// Number of special tokens in a Llama 3 vocabulary (11 named + 245 reserved).
inline constexpr std::int64_t kLlama3NumSpecialTokens = 256;
/// Id of <|begin_of_text|> in Meta's 128,256-token vocabulary (= number of BPE ranks).
inline constexpr std::int64_t kLlama3SpecialBase = 128000;

/// Index of a named special token within the 256 (its id is base + index).
enum class Llama3Special : std::int64_t {
  BeginOfText = 0,       // <|begin_of_text|>: BOS, prepended by HF's post-processor
  EndOfText = 1,         // <|end_of_text|>: EOS of base models; a stop token
  FinetuneRightPad = 4,  // <|finetune_right_pad_id|>: padding for fine-tuning
  StartHeader = 6,       // <|start_header_id|>
  EndHeader = 7,         // <|end_header_id|>
  EomId = 8,             // <|eom_id|>: end of message (tool call pending); a stop token
  EotId = 9,             // <|eot_id|>: end of turn; a stop token
  PythonTag = 10,        // <|python_tag|>
};

/// The 256 special token strings in id order: the 11 named tokens of Llama 3.1, then
/// <|reserved_special_token_3|> … <|reserved_special_token_247|>.
std::vector<std::string> llama3_special_tokens();

/// Id of a named special token when the specials start at `base`.
constexpr std::int64_t llama3_special_id(std::int64_t base, Llama3Special token) {
  return base + static_cast<std::int64_t>(token);
}

}  // namespace adapt::tokenizer
