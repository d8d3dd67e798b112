// adapt_gen's prompts as a job runs them: each prompt of this share (--shard) with its request made from
// the job's [defaults] and checked, the position that decides its share, and the model's end ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dtype/dtype.h"
#include "generate/conversation.h"
#include "generate/gen_config.h"
#include "generate/generator.h"
#include "generate/progress.h"
#include "generate/prompt_shard.h"
#include "model/llama_config.h"
#include "tokenizer/tokenizer.h"

namespace adapt::apps {

/// What adapt_gen made of a job, as --dry-run and the run read it.
struct GenJobContext {
  const std::string& input;  // the job file, as messages name it
  const generate::GenJob& job;
  const model::LlamaConfig& mc;
  const tokenizer::Tokenizer& tok;
  const generate::ConversationStore& store;
  const generate::ProgressStore& progress_store;
  const std::filesystem::path& results_path;  // this --shard's results file
  const generate::PromptShard& shard;
  std::optional<int> device;  // the rank's GPU; none on the CPU
  DType kv_dtype;
};

struct Prepared {
  const generate::PromptSpec* spec;
  generate::GenerationRequest request;  // a conversation turn's prompt is made when the turn runs
  generate::TurnInput turn;             // what a conversation turn adds
};

/// The position whose share (--shard, and dp replica) a prompt goes to: its own, or for a
/// conversation's turn that of the conversation's first prompt, so its turns stay in one process,
/// in file order.
std::vector<std::size_t> share_keys(const std::vector<const generate::PromptSpec*>& prompts);

/// The prompts of `job` in `shard`, in file order: each one's sampling, stop strings and limits from
/// the prompt or [defaults] (checked; a stop string that is a special token is warned about once, by
/// the `root` rank) and, unless it continues a conversation, its tokens. ConfigError naming
/// `input`, the prompt's index and id.
std::vector<Prepared> prepare_prompts(const generate::GenJob& job, const std::string& input,
                                      const generate::PromptShard& shard, const tokenizer::Tokenizer& tok, bool root);

/// The model's eos_token_id (generation_config.json, else config.json), as token ids: replies end there
/// as at the tokenizer's end tokens.
std::vector<std::int32_t> model_eos_ids(const std::filesystem::path& model_dir);

}  // namespace adapt::apps
