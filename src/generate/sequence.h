// One sequence being generated: its sampler (own seed and parameters), stop rules and incremental
// detokeniser, and what it has produced so far. The batch scheduler (generator.h) owns one per busy
// KV-cache row and hands it that row's logits each step; nothing in here knows about the batch, so a
// sequence produces the same tokens whatever it is batched with.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/timer.h"
#include "generate/sampler.h"
#include "generate/stop.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"

namespace adapt::generate {

/// Where a sequence stood when its progress was saved (generate/progress.h): enough to continue it as
/// if it had not stopped.
struct SequenceProgress {
  std::vector<std::int32_t> tokens;  // generated so far (no end reached yet)
  std::string rng_state;             // the sampler's generator after the last of them (Sampler::rng_state)
  double time_to_first_token_s = 0;
  double decode_s = 0;  // decoding time so far
};

/// One prompt to complete.
struct GenerationRequest {
  std::vector<std::int32_t> prompt;  // token ids, at least one
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (cut from the text)
  std::int64_t max_new_tokens = 256;
  /// Continue from saved progress: its tokens are replayed through the stop rules and the
  /// detokeniser, the prompt and they are prefilled together, and sampling goes on from the saved
  /// generator state. Empty tokens: start afresh.
  SequenceProgress resume;
};

struct GenerationOutput {
  std::vector<std::int32_t> tokens;  // generated ids (the EOS id included when it ended the sequence)
  std::string text;                  // decoded without special tokens, stop string removed
  FinishReason reason = FinishReason::None;
  double time_to_first_token_s = 0;  // from the start of this prompt's prefill to its first token
  double decode_s = 0;               // from the first token to the last (shared with the batch's other rows)
  /// Prompt positions whose keys and values were not computed for this prompt: copied from another
  /// prompt of the batch that starts with the same tokens (GenerateOptions::share_prefixes), or loaded
  /// by Generator::BatchHooks::load_prefix.
  std::int64_t cached_prompt_tokens = 0;
};

class Sequence {
 public:
  /// `n_new`: tokens to generate at most (the request's max_new_tokens, capped to the context). The
  /// clock for time_to_first_token starts here. `tokenizer` must outlive the sequence. `eos`: the tokens
  /// that end it (finish reason eos; not part of its text).
  Sequence(const GenerationRequest& request, std::int64_t n_new, const tokenizer::Tokenizer& tokenizer,
           std::span<const std::int32_t> eos);

  /// Samples the next token from `logits` (V values, modified in place by the sampler), feeds it to
  /// the stop rules and the detokeniser, and returns why the sequence ends (None: it goes on).
  FinishReason step(std::span<float> logits) { return accept(draw(logits)); }
  /// The two halves of step(): draw() only samples (it touches this sequence's sampler and nothing
  /// else, so different sequences may draw on different threads), accept() feeds the token on.
  std::int32_t draw(std::span<float> logits);
  FinishReason accept(std::int32_t token);
  /// Continues from `p` (GenerationRequest::resume): feeds its tokens as if they had been sampled and
  /// restores the sampler's generator and the timings. Returns why the sequence ends (None: it goes
  /// on, the next step samples the token after them); call before any step().
  FinishReason resume(const SequenceProgress& p);
  /// Where the sequence stands, for saving (after a step that returned None).
  SequenceProgress progress() const;
  std::int64_t n_generated() const { return static_cast<std::int64_t>(out_.tokens.size()); }
  /// The token the next forward must feed (the last one sampled).
  std::int32_t last_token() const { return out_.tokens.back(); }
  /// Text that became final since the last call (held back while it might start a stop string).
  std::string_view take_stable_text();
  /// After step() returned a reason: the final output; take_stable_text() then returns the rest of
  /// the text. Call once.
  GenerationOutput finish();

 private:
  std::vector<std::int32_t> eos_;
  Sampler sampler_;
  StopChecker stop_;
  tokenizer::StreamDecoder decoder_;
  std::vector<std::int32_t> history_;  // prompt + generated ids (repetition penalty)
  GenerationOutput out_;
  Timer timer_;
  double decode_before_ = 0;  // decoding time of earlier runs (resume)
  std::size_t streamed_ = 0;  // bytes of text handed out by take_stable_text()
  bool finished_ = false;

  // Feeds a token (sampled, or replayed by resume) to the history, the stop rules and the detokeniser.
  FinishReason push(std::int32_t next);
};

}  // namespace adapt::generate
