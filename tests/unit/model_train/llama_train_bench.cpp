// A measuring tool (no assertions, not a test): memory and time of training steps on a random model of
// a preset's shape (default `bench`), with and without activation recomputation, without adapters or
// with the test LoRA hook on every projection. Memory is the workspaces' high-water marks (what the
// step itself holds besides the weights) and the process's peak RSS.
//   llama_train_bench [--preset bench] [--batch 1] [--tokens 512] [--steps 3] [--lora-rank 0] [--chunk 0]
// The test hook header pulls in doctest for its helpers; this tool has no test cases.
#define DOCTEST_CONFIG_DISABLE
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "model/llama_config.h"
#include "model/llama_train.h"
#include "model/model_folder.h"
#include "tests/unit/model_train/test_hook.h"

using namespace adapt;

namespace {

Tensor normal(const Shape& s, float std, std::uint64_t key) {
  Tensor t = Tensor::empty(s, DType::F32, host_allocator());
  model::fill_normal(t.data<float>(), t.numel(), std, 7, key);
  return t;
}

model::LlamaModel random_model(const model::LlamaConfig& c) {
  model::LlamaModel m;
  m.config = c;
  m.inv_freq = model::rope_inv_freq(c);
  const std::int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.n_heads * c.head_dim,
                     KD = c.n_kv_heads * c.head_dim;
  std::uint64_t key = 0;
  m.weights.embedding = normal({c.vocab_size, C}, 0.02f, ++key);
  m.weights.lm_head = normal({c.vocab_size, C}, 0.02f, ++key);
  m.weights.final_norm = normal({C}, 0.0f, ++key);
  for (std::int64_t i = 0; i < C; ++i) m.weights.final_norm.data<float>()[i] = 1.0f;
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    model::LayerWeights w;
    w.attn_norm = m.weights.final_norm.to_host(DType::F32);
    w.ffn_norm = m.weights.final_norm.to_host(DType::F32);
    w.wq = normal({HD, C}, 0.02f, ++key);
    w.wk = normal({KD, C}, 0.02f, ++key);
    w.wv = normal({KD, C}, 0.02f, ++key);
    w.wo = normal({C, HD}, 0.02f, ++key);
    w.w_gate = normal({F, C}, 0.02f, ++key);
    w.w_up = normal({F, C}, 0.02f, ++key);
    w.w_down = normal({C, F}, 0.02f, ++key);
    m.weights.layers.push_back(w);
  }
  return m;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "bench";
  std::int64_t B = 1, T = 512, steps = 3, rank = 0, chunk = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--preset") preset = v;
    else if (k == "--batch") B = std::atoll(v);
    else if (k == "--tokens") T = std::atoll(v);
    else if (k == "--steps") steps = std::atoll(v);
    else if (k == "--lora-rank") rank = std::atoll(v);
    else if (k == "--chunk") chunk = std::atoll(v);
    else {
      std::fprintf(stderr,
                   "unknown option %s\nusage: %s [--preset P] [--batch B] [--tokens T] [--steps N] [--lora-rank r] "
                   "[--chunk rows]\n",
                   argv[i], argv[0]);
      return 2;
    }
  }
  const model::LlamaConfig c = model::llama_config_preset(preset);
  const model::LlamaModel m = random_model(c);
  std::printf(
      "preset %s: L=%lld C=%lld H=%lld Hkv=%lld D=%lld F=%lld V=%lld; batch %lld x %lld tokens; LoRA rank %lld; logits "
      "chunk %lld rows\n",
      preset.c_str(), (long long)c.n_layers, (long long)c.hidden_size, (long long)c.n_heads, (long long)c.n_kv_heads,
      (long long)c.head_dim, (long long)c.intermediate_size, (long long)c.vocab_size, (long long)B, (long long)T,
      (long long)rank, (long long)chunk);
  std::printf("peak RSS after building the weights: %.1f MB\n", peak_rss_mb());

  Tensor ids = Tensor::empty({B, T}, DType::I32), targets = Tensor::empty({B, T}, DType::I32);
  for (std::int64_t i = 0; i < B * T; ++i) {
    ids.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 7919 + 13) % c.vocab_size);
    targets.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 104729 + 5) % c.vocab_size);
  }
  for (const bool recompute : {false, true}) {
    test::TestHook hook;
    if (rank > 0) {
      const std::int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.n_heads * c.head_dim,
                         KD = c.n_kv_heads * c.head_dim;
      std::uint64_t salt = 1;
      for (int l = 0; l < static_cast<int>(c.n_layers); ++l) {
        hook.add_lora(l, model::WeightKind::Wq, C, HD, rank, salt += 2);
        hook.add_lora(l, model::WeightKind::Wk, C, KD, rank, salt += 2);
        hook.add_lora(l, model::WeightKind::Wv, C, KD, rank, salt += 2);
        hook.add_lora(l, model::WeightKind::Wo, HD, C, rank, salt += 2);
        hook.add_lora(l, model::WeightKind::WGate, C, F, rank, salt += 2);
        hook.add_lora(l, model::WeightKind::WUp, C, F, rank, salt += 2);
        hook.add_lora(l, model::WeightKind::WDown, F, C, rank, salt += 2);
      }
    }
    model::TrainWorkspace ws;
    const model::TrainInputs in{ids, targets, Tensor(), Tensor()};
    double best = 1e30;
    model::TrainResult r;
    for (std::int64_t s = 0; s < steps; ++s) {
      hook.events.clear();
      const auto t0 = std::chrono::steady_clock::now();
      r = model::llama_train_step(m, in, rank > 0 ? &hook : nullptr,
                                  {.recompute = recompute, .logits_chunk_rows = chunk}, &ws);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    double best_eval = 1e30;
    for (std::int64_t s = 0; s < steps; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      model::llama_train_step(m, in, rank > 0 ? &hook : nullptr,
                              {.recompute = recompute, .backward = false, .logits_chunk_rows = chunk}, &ws);
      best_eval = std::min(best_eval, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf(
        "recompute %-3s: forward + loss only %.3f s; loss %.4f; saved %.1f MB + scratch %.1f MB = %.1f MB "
        "(workspaces); step %.3f s "
        "(best of %lld, %.0f tokens/s); peak RSS so far %.1f MB\n",
        recompute ? "on" : "off", best_eval, r.loss(), r.memory.saved_bytes / 1e6, r.memory.scratch_bytes / 1e6,
        r.memory.total_bytes() / 1e6, best, (long long)steps, static_cast<double>(B * T) / best, peak_rss_mb());
  }
  return 0;
}
