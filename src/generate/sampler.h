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

/// One sampler per sequence. Not thread-safe; cheap to construct.
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
  std::vector<std::int32_t> order_;  // scratch: candidate ids sorted by logit

  void apply_penalty(std::span<float> logits, std::span<const std::int32_t> history) const;
  // Leaves the surviving candidates in order_[0..n) (descending logit) with probs in probs_; returns n.
  std::size_t filter(std::span<const float> logits, std::vector<double>& probs);
};

}  // namespace adapt::generate
