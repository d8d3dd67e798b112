// Sampler: greedy and filters against their definitions (HF logits processors); sampled frequencies
// against the exact probabilities; determinism and exact resume of the random state.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "core/error.h"
#include "generate/sampler.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::generate;

namespace {
std::vector<double> softmax(const std::vector<float>& l, double t) {
  double m = *std::max_element(l.begin(), l.end()), s = 0;
  std::vector<double> p(l.size());
  for (std::size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp((l[i] - m) / t);
  for (auto& x : p) x /= s;
  return p;
}
}  // namespace

TEST_CASE("greedy takes the argmax, lowest id on ties") {
  Sampler s(SamplingParams{});
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  CHECK(s.sample(l, {}) == 1);
}

TEST_CASE("repetition penalty follows HF: divide positive logits, multiply negative ones, once per id") {
  SamplingParams p;
  p.repetition_penalty = 2.0;
  Sampler s(p);
  std::vector<float> l = {3.0f, 2.0f, -1.0f, 0.5f};
  std::vector<std::int32_t> hist = {0, 0, 2};
  std::vector<double> probs;
  s.probabilities(l, hist, probs);
  CHECK(l[0] == 1.5f);
  CHECK(l[2] == -2.0f);
  CHECK(l[1] == 2.0f);
  CHECK(probs[1] == 1.0);  // greedy after the penalty: token 1 now wins
}

TEST_CASE("temperature sampling matches the softmax probabilities") {
  SamplingParams p;
  p.temperature = 0.7;
  p.seed = test::kSeed;
  Sampler s(p);
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f};
  const auto want = softmax(logits, 0.7);
  std::map<int, int> counts;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = logits;
    counts[s.sample(l, {})]++;
  }
  for (int i = 0; i < 5; ++i) {
    const double se = std::sqrt(want[i] * (1 - want[i]) / n);
    CHECK(std::abs(counts[i] / double(n) - want[i]) < 5 * se);
  }
}

TEST_CASE("top-k, top-p and min-p keep exactly the tokens their definitions keep") {
  const std::vector<float> logits = {2.0f, 1.0f, 0.0f, -1.0f, -2.0f};
  const auto p = softmax(logits, 1.0);  // ~0.636 0.234 0.086 0.032 0.012
  std::vector<double> probs;
  auto kept = [&](SamplingParams sp) {
    sp.temperature = 1.0;
    Sampler s(sp);
    std::vector<float> l = logits;
    s.probabilities(l, {}, probs);
    int n = 0;
    for (double x : probs) n += x > 0;
    return n;
  };
  SamplingParams k;
  k.top_k = 2;
  CHECK(kept(k) == 2);
  CHECK(probs[0] == doctest::Approx(p[0] / (p[0] + p[1])));
  SamplingParams tp;
  tp.top_p = 0.85;  // 0.636 < 0.85 <= 0.636 + 0.234
  CHECK(kept(tp) == 2);
  tp.top_p = 0.88;  // 0.6364 + 0.2341 = 0.8705 < 0.88
  CHECK(kept(tp) == 3);
  SamplingParams mp;
  mp.min_p = 0.1;  // floor 0.0636: keeps 0.636, 0.234, 0.086
  CHECK(kept(mp) == 3);
  mp.min_p = 0.5;
  CHECK(kept(mp) == 1);
}

TEST_CASE("same seed, same tokens; the random state resumes exactly") {
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<std::int32_t> seq_a, seq_b;
  const std::vector<float> logits(50, 0.0f);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> l = logits;
    seq_a.push_back(a.sample(l, {}));
  }
  for (int i = 0; i < 10; ++i) {
    std::vector<float> l = logits;
    seq_b.push_back(b.sample(l, {}));
  }
  Sampler c(p);
  c.set_rng_state(b.rng_state());
  for (int i = 0; i < 10; ++i) {
    std::vector<float> l = logits;
    seq_b.push_back(c.sample(l, {}));
  }
  CHECK(seq_a == seq_b);
}

TEST_CASE("bad sampling values are errors naming where they came from") {
  SamplingParams p;
  p.top_p = 1.5;
  CHECK_THROWS_WITH_AS(sampling_params_validate(p, "prompts[2]"), doctest::Contains("prompts[2]: top_p = 1.5"),
                       ConfigError);
  p = {};
  p.temperature = -1;
  CHECK_THROWS_AS(sampling_params_validate(p, "defaults"), ConfigError);
}

namespace {
// The filters by their definitions, on a fully sorted vocabulary: top-k, the softmax at temperature t,
// top-p's smallest prefix, min-p's floor, renormalised. Returns the survivors (descending logit, ties by
// id) and their probabilities.
std::pair<std::vector<std::int32_t>, std::vector<double>> reference_filter(const std::vector<float>& l,
                                                                           const SamplingParams& sp) {
  std::vector<std::int32_t> order(l.size());
  for (std::size_t i = 0; i < l.size(); ++i) order[i] = static_cast<std::int32_t>(i);
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return l[static_cast<std::size_t>(a)] > l[static_cast<std::size_t>(b)] ||
           (l[static_cast<std::size_t>(a)] == l[static_cast<std::size_t>(b)] && a < b);
  });
  std::size_t n = sp.top_k > 0 ? std::min<std::size_t>(static_cast<std::size_t>(sp.top_k), l.size()) : l.size();
  std::vector<double> p(n);
  double sum = 0;
  const double max_l = l[static_cast<std::size_t>(order[0])];
  for (std::size_t i = 0; i < n; ++i)
    sum += p[i] = std::exp((l[static_cast<std::size_t>(order[i])] - max_l) / sp.temperature);
  for (auto& x : p) x /= sum;
  if (sp.top_p < 1) {
    double cum = 0;
    std::size_t keep = 0;
    while (keep < n && cum < sp.top_p) cum += p[keep++];
    n = keep;
  }
  if (sp.min_p > 0) {
    std::size_t keep = 1;
    while (keep < n && p[keep] >= sp.min_p * p[0]) ++keep;
    n = keep;
  }
  p.resize(n);
  order.resize(n);
  sum = 0;
  for (double x : p) sum += x;
  for (auto& x : p) x /= sum;
  return {order, p};
}
}  // namespace

// Llama 3's vocabulary size, logits spread like a language model's (a few large, a long tail): every
// filter combination keeps the tokens of its definition with their probabilities (to 1e-12: the
// sampler sums the softmax's denominator in id order and sorts only as deep as it needs), and a seeded
// draw picks the token the definition's cumulative walk picks for the same uniform numbers.
TEST_CASE("sampling at vocabulary 128,256: the definitions' survivors, probabilities and draws") {
  const std::size_t V = 128256;
  std::mt19937_64 gen(test::kSeed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(V);
  for (auto& x : logits) x = normal(gen);
  for (int i = 0; i < 40; ++i) logits[gen() % V] += 12.0f + static_cast<float>(i % 7);  // a head of likely tokens
  logits[77] = logits[78] = logits[79];                                                 // ties, broken by id
  struct Case {
    double t, top_p, min_p;
    std::int64_t top_k;
  };
  for (const Case c :
       {Case{0.7, 1.0, 0.0, 0}, Case{1.0, 0.95, 0.0, 0}, Case{0.8, 0.9, 0.05, 0}, Case{1.2, 1.0, 0.02, 0},
        Case{0.6, 0.95, 0.0, 50}, Case{3.0, 0.999, 0.0, 0}, Case{1.0, 1.0, 0.0, 200000}}) {
    CAPTURE(c.t);
    CAPTURE(c.top_p);
    CAPTURE(c.min_p);
    CAPTURE(c.top_k);
    SamplingParams sp;
    sp.temperature = c.t;
    sp.top_p = c.top_p;
    sp.min_p = c.min_p;
    sp.top_k = c.top_k;
    sp.seed = 11;
    const auto [ids, want] = reference_filter(logits, sp);
    Sampler s(sp);
    std::vector<float> l = logits;
    std::vector<double> got;
    s.probabilities(l, {}, got);
    std::size_t n_got = 0;
    for (double x : got) n_got += x > 0;
    CHECK(n_got == ids.size());
    double max_rel = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const double g = got[static_cast<std::size_t>(ids[i])];
      if (want[i] > 1e-300) max_rel = std::max(max_rel, std::abs(g - want[i]) / want[i]);
    }
    CHECK(max_rel < 1e-12);
    // Draws: the definition's walk over the same uniform numbers (the sampler's generator, replayed).
    std::mt19937_64 replay(sp.seed);
    int same = 0;
    const int n_draws = 50;
    for (int d = 0; d < n_draws; ++d) {
      std::vector<float> ld = logits;
      const std::int32_t tok = s.sample(ld, {});
      const double u = std::uniform_real_distribution<double>(0.0, 1.0)(replay);
      double cum = 0;
      std::int32_t ref = ids.back();
      for (std::size_t i = 0; i < ids.size(); ++i) {
        cum += want[i];
        if (u < cum) {
          ref = ids[i];
          break;
        }
      }
      same += tok == ref;
    }
    CHECK(same == n_draws);
  }
}

// The repetition penalty over a history that grows a token at a time equals the penalty over the whole
// history at once (a fresh sampler), and a history that is not the one before starts over.
TEST_CASE("repetition penalty over a growing history: the same logits as over the whole history") {
  SamplingParams p;
  p.repetition_penalty = 1.3;
  p.temperature = 0.9;
  Sampler growing(p);
  std::mt19937_64 gen(test::kSeed);
  std::vector<std::int32_t> history;
  std::vector<float> base(1000);
  for (auto& x : base) x = std::uniform_real_distribution<float>(-4.0f, 4.0f)(gen);
  for (int step = 0; step < 50; ++step) {
    for (int k = 0; k < 7; ++k) history.push_back(static_cast<std::int32_t>(gen() % 1000));
    std::vector<double> a, b;
    std::vector<float> la = base, lb = base;
    growing.probabilities(la, history, a);
    Sampler fresh(p);
    fresh.probabilities(lb, history, b);
    CHECK(la == lb);
    CHECK(a == b);
  }
  std::vector<std::int32_t> other = {5, 6, 7};
  std::vector<float> la = base, lb = base;
  std::vector<double> a, b;
  growing.probabilities(la, other, a);
  Sampler(p).probabilities(lb, other, b);
  CHECK(la == lb);
}

// The softmax's denominator is summed in fixed slices over the threads: the same probabilities, bit for
// bit, and the same draws whatever the thread count.
TEST_CASE("sampling at vocabulary 128,256 gives the same bits on 1, 2 and 4 threads") {
  const std::size_t V = 128256;
  std::mt19937_64 gen(test::kSeed + 1);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  std::vector<float> logits(V);
  for (auto& x : logits) x = normal(gen);
  SamplingParams sp;
  sp.temperature = 0.9;
  sp.top_p = 0.97;
  sp.seed = 5;
  const int threads_before = omp_get_max_threads();
  std::vector<std::vector<double>> probs;
  std::vector<std::vector<std::int32_t>> draws;
  for (const int threads : {1, 2, 4}) {
    omp_set_num_threads(threads);
    Sampler s(sp);
    std::vector<float> l = logits;
    probs.emplace_back();
    s.probabilities(l, {}, probs.back());
    draws.emplace_back();
    for (int d = 0; d < 20; ++d) {
      std::vector<float> ld = logits;
      draws.back().push_back(s.sample(ld, {}));
    }
  }
  omp_set_num_threads(threads_before);
  CHECK(probs[1] == probs[0]);
  CHECK(probs[2] == probs[0]);
  CHECK(draws[1] == draws[0]);
  CHECK(draws[2] == draws[0]);
}
