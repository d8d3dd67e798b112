#include "generate/sequence.h"

#include <algorithm>

#include "core/error.h"

namespace adapt::generate {

namespace {
tokenizer::DecodeOptions completion_decode_options() {
  tokenizer::DecodeOptions o;
  o.skip_special = true;  // completions are text (source code): special tokens are not written
  return o;
}
}  // namespace

Sequence::Sequence(const GenerationRequest& request, std::int64_t n_new, const tokenizer::Tokenizer& tokenizer,
                   std::span<const std::int32_t> eos)
    : eos_(eos.begin(), eos.end()),
      sampler_(request.sampling),
      stop_(eos_, request.stop, n_new),
      decoder_(tokenizer, completion_decode_options()),
      history_(request.prompt) {
  history_.reserve(request.prompt.size() + static_cast<std::size_t>(n_new));
  out_.tokens.reserve(static_cast<std::size_t>(n_new));
}

std::int32_t Sequence::draw(std::span<float> logits) {
  ADAPT_CHECK(!finished_, "Sequence::draw after the sequence finished");
  return sampler_.sample(logits, history_);
}

FinishReason Sequence::accept(std::int32_t next) {
  ADAPT_CHECK(!finished_, "Sequence::accept after the sequence finished");
  if (out_.tokens.empty()) {
    out_.time_to_first_token_s = timer_.seconds();
    timer_.reset();
  }
  return push(next);
}

FinishReason Sequence::resume(const SequenceProgress& p) {
  ADAPT_CHECK(out_.tokens.empty() && !finished_, "Sequence::resume after a step");
  if (p.tokens.empty()) return FinishReason::None;
  out_.time_to_first_token_s = p.time_to_first_token_s;
  decode_before_ = p.decode_s;
  timer_.reset();
  // A token that ends the sequence (progress saved under other stop rules) ends it here; later ones
  // are dropped.
  FinishReason r = FinishReason::None;
  for (std::size_t i = 0; i < p.tokens.size() && r == FinishReason::None; ++i) r = push(p.tokens[i]);
  if (!p.rng_state.empty()) sampler_.set_rng_state(p.rng_state);
  streamed_ = stop_.stable_size();  // the earlier run streamed this text already
  return r;
}

SequenceProgress Sequence::progress() const {
  return {.tokens = out_.tokens,
          .rng_state = sampler_.rng_state(),
          .time_to_first_token_s = out_.time_to_first_token_s,
          .decode_s = decode_before_ + timer_.seconds()};
}

FinishReason Sequence::push(std::int32_t next) {
  out_.tokens.push_back(next);
  history_.push_back(next);
  const bool is_eos = std::find(eos_.begin(), eos_.end(), next) != eos_.end();
  const std::string piece = is_eos ? std::string() : decoder_.push(next);
  FinishReason r = stop_.push(next, piece);
  if (r == FinishReason::None) return r;
  if (r != FinishReason::StopString) {
    // Bytes the decoder held back may complete a stop string.
    const std::string tail = decoder_.finish();
    if (!tail.empty() && stop_.push(-1, tail) == FinishReason::StopString) r = FinishReason::StopString;
  }
  out_.reason = r;
  out_.decode_s = decode_before_ + timer_.seconds();
  finished_ = true;
  return r;
}

std::string_view Sequence::take_stable_text() {
  const std::size_t end = finished_ ? stop_.text().size() : stop_.stable_size();
  if (end <= streamed_) return {};
  const std::string_view piece = std::string_view(stop_.text()).substr(streamed_, end - streamed_);
  streamed_ = end;
  return piece;
}

GenerationOutput Sequence::finish() {
  ADAPT_CHECK(finished_, "Sequence::finish before a stop rule fired");
  out_.text = stop_.text();
  return std::move(out_);
}

}  // namespace adapt::generate
