// Stop rules of one sequence: end-of-sequence ids, stop strings (matched on the decoded text, also
// across token boundaries) and max_new_tokens. The text handed back never contains the stop string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace adapt::generate {

enum class FinishReason { None, Eos, StopString, Length };
/// "eos", "stop", "length" (the JSONL `finish_reason` values); "" for None.
const char* finish_reason_name(FinishReason r);

class StopChecker {
 public:
  StopChecker(std::vector<std::int32_t> eos_ids, std::vector<std::string> stop_strings, std::int64_t max_new_tokens);

  /// Feeds one generated token and the text it completed (may be empty while a UTF-8 sequence is
  /// incomplete). Returns the reason to stop, or None. After a stop, text() is final.
  FinishReason push(std::int32_t token, const std::string& new_text);

  /// The generated text so far, with any matched stop string (and what followed it) removed.
  const std::string& text() const { return text_; }
  std::int64_t n_tokens() const { return n_tokens_; }
  /// Bytes of text() that can be streamed now: held back while they might begin a stop string.
  std::size_t stable_size() const;

 private:
  std::vector<std::int32_t> eos_ids_;
  std::vector<std::string> stop_strings_;
  std::int64_t max_new_tokens_;
  std::int64_t n_tokens_ = 0;
  std::string text_;
};

}  // namespace adapt::generate
