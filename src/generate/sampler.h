// Token sampling: repetition penalty, then temperature, top-k, top-p and min-p, then a draw (or argmax
// when temperature is 0). The order and formulas follow HF transformers' logits processors, so a
// seeded run is reproducible and greedy decoding matches HF generate(do_sample=False).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace adapt::generate {

struct SamplingParams {
  double temperature = 0.0;         // 0 = greedy (argmax; ties go to the lowest id)
  std::int64_t top_k = 0;           // 0 = off
  double top_p = 1.0;               // 1 = off: keep the smallest set whose probability reaches top_p
  double min_p = 0.0;               // 0 = off: drop tokens with p < min_p * p_max
  double repetition_penalty = 1.0;  // 1 = off: HF's rule (divide positive logits, multiply negative ones)
  std::uint64_t seed = 0;
};

/// Throws ConfigError naming `where` (e.g. "prompts[3]") when a value is out of range.
void sampling_params_validate(const SamplingParams& p, const std::string& where);

/// One sampler per sequence. Not thread-safe; cheap to construct. Its cost per token is O(V) plus a
/// partial sort as deep as the filters and the draw reach (not a sort of the vocabulary), and the
/// repetition penalty keeps the distinct ids of the history as it grows (not a sort of the history),
/// so long generations with large vocabularies stay cheap on the host.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  /// Picks the next token from `logits` (V values; modified in place by the penalty and filters).
  /// `history` holds the ids of the prompt and of everything generated so far (for the penalty).
  std::int32_t sample(std::span<float> logits, std::span<const std::int32_t> history);

  /// Probabilities after every processor (for tests and for --per-token diagnostics): writes V values.
  void probabilities(std::span<float> logits, std::span<const std::int32_t> history, std::vector<double>& probs);

  const SamplingParams& params() const { return params_; }
  /// The generator state as text (std::mt19937_64 stream form), so a job can resume exactly.
  std::string rng_state() const;
  void set_rng_state(const std::string& state);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  // Candidate ids; order_[0, sorted_) holds the sorted_ largest logits in descending order (ties: lower
  // id first), the rest any order (each of them after all of those).
  std::vector<std::int32_t> order_;
  std::size_t sorted_ = 0;
  std::vector<double> probs_;  // scratch of sample()
  // Without top-k: the largest logit and the softmax's denominator, for prob_at().
  double max_logit_ = 0, total_ = 1;
  // The repetition penalty's view of the history: the ids absorbed so far (to see that the next history
  // extends them), and which are distinct.
  std::vector<std::int32_t> absorbed_;
  std::vector<std::int32_t> distinct_;
  std::vector<std::uint8_t> seen_;

  void apply_penalty(std::span<float> logits, std::span<const std::int32_t> history);
  // Sorts order_ up to position k (exclusive).
  void ensure_sorted(std::span<const float> logits, std::size_t k);
  // Without top-k: the probability of token `id`, and that of the i-th largest logit (sorting as far as
  // needed).
  double prob_of(std::span<const float> logits, std::int32_t id) const;
  double prob_at(std::span<const float> logits, std::size_t i);
  // Leaves the surviving candidates in order_[0..n) (descending logit) and returns n, with `probs` the
  // first probs.size() of their probabilities (normalised over the survivors). All n unless every token
  // survives (no top-k, top-p or min-p cut): then probs may be shorter and prob_at() gives the rest, or
  // with `whole` it holds all V.
  std::size_t filter(std::span<const float> logits, std::vector<double>& probs, bool whole);
};

}  // namespace adapt::generate
