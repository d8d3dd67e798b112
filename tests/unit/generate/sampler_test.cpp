// Sampler: greedy and filters against their definitions (HF logits processors); sampled frequencies
// against the exact probabilities; determinism and exact resume of the random state.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
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
