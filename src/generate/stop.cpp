#include "generate/stop.h"

#include <algorithm>

#include "core/error.h"

namespace adapt::generate {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "";
    case FinishReason::Eos: return "eos";
    case FinishReason::StopString: return "stop";
    case FinishReason::Length: return "length";
  }
  return "";
}

StopChecker::StopChecker(std::vector<std::int32_t> eos_ids, std::vector<std::string> stop_strings,
                         std::int64_t max_new_tokens)
    : eos_ids_(std::move(eos_ids)), stop_strings_(std::move(stop_strings)), max_new_tokens_(max_new_tokens) {
  ADAPT_REQUIRE(max_new_tokens_ > 0, ConfigError, "max_new_tokens = {} must be positive", max_new_tokens_);
  for (const auto& s : stop_strings_) ADAPT_REQUIRE(!s.empty(), ConfigError, "stop strings must not be empty");
}

FinishReason StopChecker::push(std::int32_t token, const std::string& new_text) {
  ++n_tokens_;
  if (std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end()) return FinishReason::Eos;
  const std::size_t old_size = text_.size();
  text_ += new_text;
  // Search only where a match could end in the new text.
  std::size_t first_hit = std::string::npos;
  for (const auto& s : stop_strings_) {
    const std::size_t from = old_size >= s.size() ? old_size - s.size() + 1 : 0;
    const std::size_t pos = text_.find(s, from);
    if (pos != std::string::npos) first_hit = std::min(first_hit, pos);
  }
  if (first_hit != std::string::npos) {
    text_.resize(first_hit);
    return FinishReason::StopString;
  }
  if (n_tokens_ >= max_new_tokens_) return FinishReason::Length;
  return FinishReason::None;
}

std::size_t StopChecker::stable_size() const {
  std::size_t hold = 0;
  for (const auto& s : stop_strings_) {
    // Longest suffix of text_ that is a proper prefix of s.
    for (std::size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k) {
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  return text_.size() - hold;
}

}  // namespace adapt::generate
