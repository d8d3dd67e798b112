// PromptShard: one share of a prompt file, for splitting a generation job over independent jobs (a
// Slurm job array): share i of n holds the prompts whose position in the file is i modulo n, so the
// shares do not overlap and together hold every prompt. Each share writes its own results file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace adapt::generate {

struct PromptShard {
  std::int64_t index = 0;  // 0-based
  std::int64_t count = 1;  // 1: the whole file
};

/// "I/N" with 0 <= I < N (e.g. "3/16"); ConfigError naming `text` otherwise.
PromptShard prompt_shard_parse(std::string_view text);

/// Whether the prompt at `position` (0-based, in file order) belongs to `shard`.
bool prompt_shard_contains(const PromptShard& shard, std::size_t position);

/// The results file name of a share: "results.jsonl" -> "results.shard-3-of-16.jsonl" (the name
/// unchanged for the whole file).
std::string prompt_shard_results_name(const std::string& results, const PromptShard& shard);

}  // namespace adapt::generate
