#include "generate/sampler.h"

#include <omp.h>

#include <algorithm>
#include <array>
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

void Sampler::apply_penalty(std::span<float> logits, std::span<const std::int32_t> history) {
  if (params_.repetition_penalty == 1.0) return;
  // The history grows by a token a step: absorb the new ids, unless it is not the one seen so far.
  const bool extends =
      history.size() >= absorbed_.size() && std::equal(absorbed_.begin(), absorbed_.end(), history.begin());
  if (!extends) {
    for (const std::int32_t id : distinct_) seen_[static_cast<std::size_t>(id)] = 0;
    distinct_.clear();
    absorbed_.clear();
  }
  for (std::size_t i = absorbed_.size(); i < history.size(); ++i) {
    const std::int32_t id = history[i];
    if (id < 0) continue;
    if (static_cast<std::size_t>(id) >= seen_.size()) seen_.resize(static_cast<std::size_t>(id) + 1, 0);
    if (!seen_[static_cast<std::size_t>(id)]) {
      seen_[static_cast<std::size_t>(id)] = 1;
      distinct_.push_back(id);
    }
  }
  absorbed_.insert(absorbed_.end(), history.begin() + static_cast<std::ptrdiff_t>(absorbed_.size()), history.end());
  // HF RepetitionPenaltyLogitsProcessor: each distinct id once, whatever its count.
  const float p = static_cast<float>(params_.repetition_penalty);
  for (const std::int32_t id : distinct_) {
    if (static_cast<std::size_t>(id) >= logits.size()) continue;
    float& l = logits[static_cast<std::size_t>(id)];
    l = l < 0 ? l * p : l / p;
  }
}

void Sampler::ensure_sorted(std::span<const float> logits, std::size_t k) {
  k = std::min(k, order_.size());
  if (k <= sorted_) return;
  auto by_logit = [&](std::int32_t a, std::int32_t b) {
    const float la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
    return la > lb || (la == lb && a < b);
  };
  // At least double the sorted part each time: a walk to depth d sorts O(V log d) in all.
  k = std::min(order_.size(), std::max({k, 2 * sorted_, std::size_t{64}}));
  std::partial_sort(order_.begin() + static_cast<std::ptrdiff_t>(sorted_),
                    order_.begin() + static_cast<std::ptrdiff_t>(k), order_.end(), by_logit);
  sorted_ = k;
}

double Sampler::prob_of(std::span<const float> logits, std::int32_t id) const {
  return std::exp((logits[static_cast<std::size_t>(id)] - max_logit_) / params_.temperature) / total_;
}

double Sampler::prob_at(std::span<const float> logits, std::size_t i) {
  ensure_sorted(logits, i + 1);
  return prob_of(logits, order_[i]);
}

std::size_t Sampler::filter(std::span<const float> logits, std::vector<double>& probs, bool whole) {
  const std::size_t V = logits.size();
  order_.resize(V);
  std::iota(order_.begin(), order_.end(), 0);
  sorted_ = 0;
  const double t = params_.temperature;
  probs.clear();
  std::size_t n = V;
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < V) {
    // Top-k: the softmax over the k survivors.
    n = static_cast<std::size_t>(params_.top_k);
    ensure_sorted(logits, n);
    const double max_l = logits[static_cast<std::size_t>(order_[0])];
    probs.resize(n);
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      probs[i] = std::exp((logits[static_cast<std::size_t>(order_[i])] - max_l) / t);
      sum += probs[i];
    }
    for (auto& p : probs) p /= sum;
  } else {
    // The softmax's denominator over the whole vocabulary: 16 fixed slices of the ids, each summed in id
    // order, then the slices in order, so that the bits do not depend on how many threads share them
    // (all of them when one sequence draws alone, as a long generation does; none when the rows of a
    // decode step already draw in parallel). Terms below e^-60 of the largest are left out (together,
    // at most V · 1e-26 of a sum >= 1: below its rounding for any vocabulary).
    float max_f = logits[0];
    for (const float l : logits) max_f = std::max(max_f, l);
    max_logit_ = max_f;
    constexpr int kSlices = 16;
    std::array<double, kSlices> part{};
    const std::size_t slice = (V + kSlices - 1) / kSlices;
#pragma omp parallel for schedule(static) if (V >= 32768 && !omp_in_parallel())
    for (int c = 0; c < kSlices; ++c) {
      double sum = 0;
      const std::size_t end = std::min(V, (static_cast<std::size_t>(c) + 1) * slice);
      for (std::size_t i = static_cast<std::size_t>(c) * slice; i < end; ++i) {
        const double x = (logits[i] - max_logit_) / t;
        if (x > -60.0) sum += std::exp(x);
      }
      part[static_cast<std::size_t>(c)] = sum;
    }
    double total = 0;
    for (const double p : part) total += p;
    total_ = total;
  }
  if (params_.top_p < 1.0) {  // smallest prefix whose mass reaches top_p (at least one token)
    double cum = 0;
    std::size_t keep = 0;
    while (keep < n) {
      if (keep == probs.size()) probs.push_back(prob_at(logits, keep));
      cum += probs[keep++];
      if (cum >= params_.top_p) break;
    }
    n = keep;
  }
  if (params_.min_p > 0.0) {
    if (probs.empty()) probs.push_back(prob_at(logits, 0));
    const double floor = params_.min_p * probs[0];
    std::size_t keep = 1;
    while (keep < n) {
      if (keep == probs.size()) probs.push_back(prob_at(logits, keep));
      if (probs[keep] < floor) break;
      ++keep;
    }
    n = keep;
  }
  if (n == V && probs.size() < V) {  // every token survives, normalised by the whole denominator
    if (whole) {
      probs.resize(V);
      for (std::size_t i = 0; i < V; ++i) probs[i] = prob_of(logits, order_[i]);
    }
    return n;
  }
  probs.resize(n);
  const double sum = std::accumulate(probs.begin(), probs.end(), 0.0);
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
  const std::size_t n = filter(logits, probs_, /*whole=*/false);
  // The draw walks the survivors from the most likely; with every token surviving it sorts only as far
  // as it walks.
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  double cum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    cum += i < probs_.size() ? probs_[i] : prob_at(logits, i);
    if (u < cum) return order_[i];
  }
  ensure_sorted(logits, n);  // u beyond the rounded total: the last survivor
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
  const std::size_t n = filter(logits, probs, /*whole=*/true);
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
  ADAPT_REQUIRE(!s.fail(), IoError, "sampler state '{}...' is not a saved random-generator state", state.substr(0, 32));
}

}  // namespace adapt::generate
