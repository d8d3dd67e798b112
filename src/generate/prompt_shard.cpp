#include "generate/prompt_shard.h"

#include <charconv>
#include <filesystem>

#include "core/error.h"

namespace adapt::generate {

namespace {

bool parse_count(std::string_view s, std::int64_t& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

PromptShard prompt_shard_parse(std::string_view text) {
  const auto slash = text.find('/');
  PromptShard s;
  const bool ok = slash != std::string_view::npos && parse_count(text.substr(0, slash), s.index) &&
                  parse_count(text.substr(slash + 1), s.count) && s.count >= 1 && s.index >= 0 && s.index < s.count;
  ADAPT_REQUIRE(ok, ConfigError, "--shard '{}': expected I/N with 0 <= I < N, e.g. --shard 0/4 for the first of 4 shares",
                std::string(text));
  return s;
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
