#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "core/error.h"

namespace adapt::generate {

void sampling_params_validate(const SamplingParams& p, const std::string& where) {
  ADAPT_REQUIRE(p.temperature >= 0.0 && std::isfinite(p.temperature), ConfigError,
                "{}: temperature = {} must be >= 0 (0 means greedy)", where, p.temperature);
  ADAPT_REQUIRE(p.top_k >= 0, ConfigError, "{}: top_k = {} must be >= 0 (0 turns it off)", where, p.top_k);
  ADAPT_REQUIRE(p.top_p > 0.0 && p.top_p <= 1.0, ConfigError, "{}: top_p = {} must be in (0, 1]", where, p.top_p);
  ADAPT_REQUIRE(p.min_p >= 0.0 && p.min_p < 1.0, ConfigError, "{}: min_p = {} must be in [0, 1)", where, p.min_p);
  ADAPT_REQUIRE(p.repetition_penalty > 0.0, ConfigError, "{}: repetition_penalty = {} must be > 0 (1 turns it off)",
                where, p.repetition_penalty);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  sampling_params_validate(params, "sampling");
}

void Sampler::apply_penalty(std::span<float> logits, std::span<const std::int32_t> history) const {
  if (params_.repetition_penalty == 1.0) return;
  const float p = static_cast<float>(params_.repetition_penalty);
  // HF RepetitionPenaltyLogitsProcessor: each distinct id once, whatever its count.
  std::vector<std::int32_t> ids(history.begin(), history.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (std::int32_t id : ids) {
    if (id < 0 || static_cast<std::size_t>(id) >= logits.size()) continue;
    float& l = logits[static_cast<std::size_t>(id)];
    l = l < 0 ? l * p : l / p;
  }
}

std::size_t Sampler::filter(std::span<const float> logits, std::vector<double>& probs) {
  const std::size_t V = logits.size();
  order_.resize(V);
  std::iota(order_.begin(), order_.end(), 0);
  std::size_t n = V;
  auto by_logit = [&](std::int32_t a, std::int32_t b) {
    const float la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
    return la > lb || (la == lb && a < b);
  };
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < V) {
    n = static_cast<std::size_t>(params_.top_k);
    std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(n), order_.end(), by_logit);
  } else {
    std::sort(order_.begin(), order_.end(), by_logit);
  }
  // Softmax over the survivors at the given temperature.
  const double t = params_.temperature;
  const double max_l = logits[static_cast<std::size_t>(order_[0])];
  probs.resize(n);
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    probs[i] = std::exp((logits[static_cast<std::size_t>(order_[i])] - max_l) / t);
    sum += probs[i];
  }
  for (auto& p : probs) p /= sum;
  if (params_.top_p < 1.0) {  // smallest prefix whose mass reaches top_p (at least one token)
    double cum = 0;
    std::size_t keep = 0;
    while (keep < n) {
      cum += probs[keep++];
      if (cum >= params_.top_p) break;
    }
    n = keep;
  }
  if (params_.min_p > 0.0) {
    const double floor = params_.min_p * probs[0];
    std::size_t keep = 1;
    while (keep < n && probs[keep] >= floor) ++keep;
    n = keep;
  }
  probs.resize(n);
  sum = std::accumulate(probs.begin(), probs.end(), 0.0);
  for (auto& p : probs) p /= sum;
  return n;
}

std::int32_t Sampler::sample(std::span<float> logits, std::span<const std::int32_t> history) {
  ADAPT_CHECK(!logits.empty(), "sampling from an empty vocabulary");
  apply_penalty(logits, history);
  if (params_.temperature == 0.0) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < logits.size(); ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<std::int32_t>(best);
  }
  std::vector<double> probs;
  const std::size_t n = filter(logits, probs);
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double cum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    cum += probs[i];
    if (u < cum) return order_[i];
  }
  return order_[n - 1];
}

void Sampler::probabilities(std::span<float> logits, std::span<const std::int32_t> history, std::vector<double>& out) {
  apply_penalty(logits, history);
  out.assign(logits.size(), 0.0);
  if (params_.temperature == 0.0) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < logits.size(); ++i)
      if (logits[i] > logits[best]) best = i;
    out[best] = 1.0;
    return;
  }
  std::vector<double> probs;
  const std::size_t n = filter(logits, probs);
  for (std::size_t i = 0; i < n; ++i) out[static_cast<std::size_t>(order_[i])] = probs[i];
}

std::string Sampler::rng_state() const {
  std::ostringstream s;
  s << rng_;
  return s.str();
}

void Sampler::set_rng_state(const std::string& state) {
  std::istringstream s(state);
  s >> rng_;
  ADAPT_REQUIRE(!s.fail(), IoError, "sampler state '{}...' is not a saved random-generator state",
                state.substr(0, 32));
}

}  // namespace adapt::generate
