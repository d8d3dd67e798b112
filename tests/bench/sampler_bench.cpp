// Host cost of drawing one token: generate::Sampler (the partial sort as deep as the filters and the
// draw reach; the repetition penalty over the distinct ids kept as the history grows) beside the
// sampler as it was written before, which sorted the whole vocabulary and the whole history for every
// token, on the same logits. The adapt side of scripts/bench_sampler.sh, which runs HF transformers'
// logits processors beside it.
//
//   sampler_bench VOCAB HISTORY REPS LOGITS_OUT
//     VOCAB       vocabulary size (Llama 3: 128256)
//     HISTORY     prompt + generated tokens the repetition penalty looks at (grows by one per draw)
//     REPS        draws per row; the median counts
//     LOGITS_OUT  file for the logits (VOCAB f32, little-endian) and the history (HISTORY i32) used, for
//                 the peer
// Prints one line per row: "adapt <case> <implementation> <median microseconds per draw>".
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "generate/sampler.h"
#include "tests/bench/bench_util.h"

using namespace adapt;
using adapt::generate::Sampler;
using adapt::generate::SamplingParams;

namespace {

// The sampler before: the penalty sorts and dedups the history, the filters sort the vocabulary (or
// partially, for top-k), the softmax sums in sorted order.
class SortingSampler {
 public:
  explicit SortingSampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  std::int32_t sample(std::span<float> logits, std::span<const std::int32_t> history) {
    if (p_.repetition_penalty != 1.0) {
      std::vector<std::int32_t> ids(history.begin(), history.end());
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
      for (std::int32_t id : ids) {
        float& l = logits[static_cast<std::size_t>(id)];
        l = l < 0 ? l * static_cast<float>(p_.repetition_penalty) : l / static_cast<float>(p_.repetition_penalty);
      }
    }
    if (p_.temperature == 0.0)
      return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    const std::size_t V = logits.size();
    order_.resize(V);
    std::iota(order_.begin(), order_.end(), 0);
    auto by = [&](std::int32_t a, std::int32_t b) {
      return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
             (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
    };
    std::size_t n = V;
    if (p_.top_k > 0 && static_cast<std::size_t>(p_.top_k) < V) {
      n = static_cast<std::size_t>(p_.top_k);
      std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(n), order_.end(), by);
    } else {
      std::sort(order_.begin(), order_.end(), by);
    }
    const double max_l = logits[static_cast<std::size_t>(order_[0])];
    std::vector<double> probs(n);
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i)
      sum += probs[i] = std::exp((logits[static_cast<std::size_t>(order_[i])] - max_l) / p_.temperature);
    for (auto& x : probs) x /= sum;
    if (p_.top_p < 1.0) {
      double cum = 0;
      std::size_t keep = 0;
      while (keep < n) {
        cum += probs[keep++];
        if (cum >= p_.top_p) break;
      }
      n = keep;
    }
    if (p_.min_p > 0.0) {
      std::size_t keep = 1;
      while (keep < n && probs[keep] >= p_.min_p * probs[0]) ++keep;
      n = keep;
    }
    sum = std::accumulate(probs.begin(), probs.begin() + static_cast<std::ptrdiff_t>(n), 0.0);
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) * sum;
    double cum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      cum += probs[i];
      if (u < cum) return order_[i];
    }
    return order_[n - 1];
  }

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::int32_t> order_;
};

struct Case {
  const char* name;
  double temperature, top_p, min_p, repetition_penalty;
  std::int64_t top_k;
};

template <class S>
double median_us(const Case& c, const std::vector<float>& logits, const std::vector<std::int32_t>& history, int reps) {
  SamplingParams p;
  p.temperature = c.temperature;
  p.top_p = c.top_p;
  p.min_p = c.min_p;
  p.repetition_penalty = c.repetition_penalty;
  p.top_k = c.top_k;
  p.seed = 7;
  S s(p);
  std::vector<float> l(logits.size());
  std::vector<double> t;
  const std::size_t h0 = history.size() - static_cast<std::size_t>(reps) - 1;
  for (int i = 0; i <= reps; ++i) {
    std::copy(logits.begin(), logits.end(), l.begin());  // the copy is timed on both sides
    const std::span<const std::int32_t> h(history.data(), h0 + static_cast<std::size_t>(i));
    const auto a = std::chrono::steady_clock::now();
    volatile std::int32_t tok = s.sample(l, h);
    (void)tok;
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
    if (i > 0) t.push_back(us);  // the first draw sizes the buffers
  }
  return bench::median(std::move(t));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: sampler_bench VOCAB HISTORY REPS LOGITS_OUT\n");
    return 2;
  }
  const std::size_t V = std::strtoull(argv[1], nullptr, 10), H = std::strtoull(argv[2], nullptr, 10);
  const int reps = std::atoi(argv[3]);
  // Logits spread like a language model's: a long normal tail and a head of a few dozen likely tokens.
  std::mt19937_64 gen(2026);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(V);
  for (auto& x : logits) x = normal(gen);
  for (int i = 0; i < 40; ++i) logits[gen() % V] += 12.0f + static_cast<float>(i % 7);
  std::vector<std::int32_t> history(H + static_cast<std::size_t>(reps) + 1);
  for (auto& id : history)
    id = static_cast<std::int32_t>(gen() % std::min<std::size_t>(V, 20000));  // code: a small working vocabulary
  if (std::FILE* f = std::fopen(argv[4], "wb")) {
    std::fwrite(logits.data(), sizeof(float), V, f);
    std::fwrite(history.data(), sizeof(std::int32_t), H, f);
    std::fclose(f);
  } else {
    std::fprintf(stderr, "cannot write %s\n", argv[4]);
    return 1;
  }
  const Case cases[] = {{"greedy", 0.0, 1.0, 0.0, 1.0, 0},          {"t0.7", 0.7, 1.0, 0.0, 1.0, 0},
                        {"t1.0_top-p0.95", 1.0, 0.95, 0.0, 1.0, 0}, {"t0.6_top-k50", 0.6, 1.0, 0.0, 1.0, 50},
                        {"t0.8_min-p0.05", 0.8, 1.0, 0.05, 1.0, 0}, {"t0.7_top-p0.95_rep1.1", 0.7, 0.95, 0.0, 1.1, 0}};
  for (const Case& c : cases) {
    std::printf("adapt %s sampler %.2f\n", c.name, median_us<Sampler>(c, logits, history, reps));
    std::printf("adapt %s sorting %.2f\n", c.name, median_us<SortingSampler>(c, logits, history, reps));
  }
  return 0;
}
