#include "generate/prompt_shard.h"

#include <filesystem>
#include <optional>

#include "core/error.h"
#include "core/strings.h"

namespace adapt::generate {

PromptShard prompt_shard_parse(std::string_view text) {
  const auto slash = text.find('/');
  const bool has_slash = slash != std::string_view::npos;
  const std::optional<std::int64_t> index = has_slash ? parse_int(text.substr(0, slash)) : std::nullopt;
  const std::optional<std::int64_t> count = has_slash ? parse_int(text.substr(slash + 1)) : std::nullopt;
  const bool ok = index && count && *count >= 1 && *index >= 0 && *index < *count;
  ADAPT_REQUIRE(ok, ConfigError,
                "--shard '{}': expected I/N with 0 <= I < N, e.g. --shard 0/4 for the first of 4 shares",
                std::string(text));
  return {.index = *index, .count = *count};
}

bool prompt_shard_contains(const PromptShard& shard, std::size_t position) {
  return static_cast<std::int64_t>(position % static_cast<std::size_t>(shard.count)) == shard.index;
}

std::string prompt_shard_results_name(const std::string& results, const PromptShard& shard) {
  if (shard.count == 1) return results;
  const std::filesystem::path p(results);
  const std::string tag = ".shard-" + std::to_string(shard.index) + "-of-" + std::to_string(shard.count);
  return (p.parent_path() / (p.stem().string() + tag + p.extension().string())).string();
}

}  // namespace adapt::generate
