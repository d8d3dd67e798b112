// adapt_model_gpu_bench: the Llama model on one CUDA device — a training step (forward + backward through
// frozen bf16 base weights into adapters) and greedy decode tokens/s — on the shapes of Llama-3.1-8B
// with few layers (what `adapt_model make --preset llama-3.1-8b --layers 4` builds; random weights,
// made in memory). A timing tool, not a test (scripts/gpu_check.sh runs it).
//
//   build/tests/adapt_model_gpu_bench [--layers 4] [--seq 4096] [--context 1024] [--reps 3] [--warmup 1]
//                               [--device 0] [--quick] [--preset llama-3.1-8b] [--gemm 8192]
//
//   --quick    layers 2, seq 512, context 256, 2 reps: a smoke run that checks that everything runs
//   --preset P another model preset's shapes (adapt_model's names; --layers still sets the layers);
//              `tiny` with --gemm 256 is a rehearsal on the CPU emulation of CUDA (tests/cuda_emu/)
//   --gemm N   the size of the GEMM ceiling, N x N x N (default 8192)
//
// Rows (one markdown table row per measurement on stdout; progress on stderr):
//   train lora r16 (q, k, v, o, gate, up, down) and train bottleneck m = 64: one sequence of `seq`
//     tokens, llama_train_step with an AdapterSet on the device, median of `reps` after `warmup`.
//     FLOPs counted (base weights are frozen: they get no weight gradient, so 6·P·tokens is wrong):
//       forward   2·P·N                 P = parameters of the matrices that are multiplied (q, k, v, o,
//                                        gate, up, down per layer, and lm_head; not the embedding)
//       backward  2·P·N                 input gradients dx = dy·W only (the first layer's q, k, v input
//                                        gradient is skipped by the pass and not counted)
//       attention forward 2·N²·H·D per layer (QKᵀ and PV over the causal half), backward 2.5x that
//       adapters  6·A·N with A the adapter's parameters (each takes part in one multiply-add forward
//                 and two backward: LoRA r·(in + out) per site, bottleneck 2·C·m per module, plus
//                 their few bias and norm values)
//     TFLOP/s = FLOPs / time; MFU = TFLOP/s / the device's dense bf16 peak (H100/H200 SXM 989, A100
//     312; "n/a" for other devices) and, beside it, / a cuBLASLt 8192³ bf16 GEMM measured in this run.
//   decode batch 1 and batch 16: `context` prompt tokens per row prefilled, then greedy decode steps of
//     one token per row (llama_forward with the KV cache, logits of each step copied to the host);
//     tokens/s = rows · steps / time. The KV cache is bf16, as adapt_gen's (runtime.kv_cache_dtype =
//     "auto" with bf16 weights). The HBM bound per step reads every weight matrix once (bf16)
//     plus each row's KV cache at its length; bound tokens/s = rows / (those bytes / the
//     device-to-device copy bandwidth measured in this run, counted as read + write).
//   decode batch 16 with the KV cache of the last two layers (models of more than two layers), then of
//     every layer, in pinned host RAM (runtime.kv_device_layers): with two spilled layers only the new
//     positions cross the bus; with more, every step copies the spilled layers' cache to the GPU (bytes
//     and GB/s printed).
//
// Exit 77 with the reason when no CUDA device is visible (also in builds without CUDA).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "core/app_main.h"
#include "core/error.h"
#include "model/attention_compute.h"
#include "model/kv_cache.h"
#include "model/llama_device.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "ops/matmul.h"

using namespace adapt;

namespace {

constexpr const char* kUsage =
    "usage: adapt_model_gpu_bench [--layers L] [--seq T] [--context S] [--reps R] [--warmup W] [--device I] [--quick]\n"
    "                             [--preset llama-3.1-8b] [--gemm 8192]";

struct Options {
  std::int64_t layers = 4, seq = 4096, context = 1024;
  int reps = 3, warmup = 1, device = 0;
  std::string preset = "llama-3.1-8b";
  std::int64_t gemm = 8192;
};

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Median seconds of `reps` runs of f after `warmup` untimed ones; each run ends with a device sync.
template <class F>
double time_median(const Options& o, F&& f) {
  for (int i = 0; i < o.warmup; ++i) f(), backend::synchronize(o.device);
  std::vector<double> t;
  for (int i = 0; i < o.reps; ++i) {
    const double t0 = now_s();
    f();
    backend::synchronize(o.device);
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Deterministic pseudo-random bf16 weights (splitmix64), uniform in ±scale.
Tensor random_bf16(const Shape& shape, std::uint64_t salt, float scale, const std::string& name) {
  Tensor t = Tensor::empty(shape, DType::BF16, host_allocator(), name);
  auto* p = t.data<bf16>();
  const std::int64_t n = t.numel();
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint64_t z = (static_cast<std::uint64_t>(i) + salt * 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
    const float u = static_cast<float>((z >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
    p[i] = bf16{f32_to_bf16(u * scale)};
  }
  return t;
}

Tensor ones(std::int64_t n, const std::string& name) {
  Tensor t = Tensor::empty({n}, DType::F32, host_allocator(), name);
  std::fill_n(t.data<float>(), n, 1.0f);
  return t;
}

model::LlamaModel make_host_model(const Options& o) {
  model::LlamaModel m;
  m.config = model::llama_config_preset(o.preset);
  m.config.n_layers = o.layers;
  m.inv_freq = model::rope_inv_freq(m.config);
  const model::LlamaConfig& c = m.config;
  const std::int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.n_heads * c.head_dim,
                     KD = c.n_kv_heads * c.head_dim, V = c.vocab_size;
  std::uint64_t salt = 1;
  const float s = 0.02f;
  m.weights.embedding = random_bf16({V, C}, ++salt, s, "embed_tokens");
  m.weights.lm_head = random_bf16({V, C}, ++salt, s, "lm_head");
  m.weights.final_norm = ones(C, "norm");
  for (std::int64_t l = 0; l < o.layers; ++l) {
    model::LayerWeights w;
    w.attn_norm = ones(C, "input_layernorm");
    w.ffn_norm = ones(C, "post_attention_layernorm");
    w.wq = random_bf16({HD, C}, ++salt, s, "q_proj");
    w.wk = random_bf16({KD, C}, ++salt, s, "k_proj");
    w.wv = random_bf16({KD, C}, ++salt, s, "v_proj");
    w.wo = random_bf16({C, HD}, ++salt, s, "o_proj");
    w.w_gate = random_bf16({F, C}, ++salt, s, "gate_proj");
    w.w_up = random_bf16({F, C}, ++salt, s, "up_proj");
    w.w_down = random_bf16({C, F}, ++salt, s, "down_proj");
    m.weights.layers.push_back(std::move(w));
  }
  return m;
}

struct Ceilings {
  double copy_gbs = 0;     // device-to-device copy, read + write
  double gemm_tflops = 0;  // cuBLASLt bf16 at --gemm³ (8192³)
  double peak_tflops = 0;  // nominal dense bf16 peak of the device (0: unknown)
};

Ceilings measure_ceilings(const Options& o) {
  Ceilings c;
  Allocator& dev = backend::cuda_allocator(o.device);
  {
    const std::int64_t n = std::int64_t{1} << 28;  // 1 GiB of f32
    Tensor a = Tensor::empty({n}, DType::F32, dev, "copy_src"), b = Tensor::empty({n}, DType::F32, dev, "copy_dst");
    const double t = time_median(o, [&] { backend::copy(b, a); });
    c.copy_gbs = 2.0 * static_cast<double>(a.size_bytes()) / t / 1e9;
  }
  {
    const std::int64_t n = o.gemm;
    Tensor a = Tensor::empty({n, n}, DType::BF16, dev, "gemm_a"), b = Tensor::empty({n, n}, DType::BF16, dev, "gemm_b");
    Tensor y = Tensor::empty({n, n}, DType::BF16, dev, "gemm_c");
    const Tensor ha = random_bf16({n, n}, 7, 1.0f, "gemm_a");
    backend::copy(a, ha);
    backend::copy(b, ha);
    const double t = time_median(o, [&] { ops::matmul(y, a, b); });
    c.gemm_tflops = 2.0 * n * n * n / t / 1e12;
  }
  const std::string name = backend::cuda_device_name(o.device);
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) c.peak_tflops = 989.4;
  if (name.find("A100") != std::string::npos) c.peak_tflops = 312.0;
  return c;
}

std::string mfu_str(double tflops, const Ceilings& c) {
  const std::string peak = c.peak_tflops > 0 ? fmt::format("{:.1f}%", 100.0 * tflops / c.peak_tflops) : "n/a";
  return fmt::format("{} ({:.1f}% of GEMM)", peak, 100.0 * tflops / c.gemm_tflops);
}

void bench_train(const Options& o, const model::LlamaModel& gpu, adapters::AdapterKind kind, const Ceilings& ceil) {
  const model::LlamaConfig& c = gpu.config;
  adapters::AdapterConfig cfg;
  cfg.kind = kind;
  cfg.lora.r = 16;
  cfg.lora.targets = adapters::lora_target_names();
  cfg.bottleneck.size = 64;
  adapters::AdapterSet set(c, cfg);
  set.to_device(o.device);
  set.set_training(true);
  const std::int64_t T = o.seq, N = T;
  Tensor ids = Tensor::empty({1, T}, DType::I32, host_allocator(), "ids");
  Tensor targets = Tensor::empty({1, T}, DType::I32, host_allocator(), "targets");
  for (std::int64_t t = 0; t < T; ++t) {
    ids.data<std::int32_t>()[t] = static_cast<std::int32_t>((t * 7919) % c.vocab_size);
    targets.data<std::int32_t>()[t] = static_cast<std::int32_t>(((t + 1) * 7919) % c.vocab_size);
  }
  const model::TrainInputs in{ids, targets, Tensor(), Tensor()};
  model::TrainWorkspace ws(model::model_allocator(gpu));
  const double t = time_median(o, [&] {
    set.zero_grad();
    model::llama_train_step(gpu, in, &set, {}, &ws);
  });

  const double C = static_cast<double>(c.hidden_size), F = static_cast<double>(c.intermediate_size),
               HD = static_cast<double>(c.n_heads * c.head_dim), KD = static_cast<double>(c.n_kv_heads * c.head_dim),
               V = static_cast<double>(c.vocab_size), L = static_cast<double>(c.n_layers), n = static_cast<double>(N);
  // The first layer's q, k, v input gradient is skipped by the pass (the embedding is frozen).
  const double qkv = C * (HD + 2 * KD), per_layer = qkv + HD * C + 3 * C * F;
  const double P = L * per_layer + V * C;
  const double base = 2 * P * n + 2 * (P - qkv) * n;
  const double attn = L * 2.0 * n * n * static_cast<double>(c.n_heads * c.head_dim) * 3.5;
  // Every adapter parameter takes part in one multiply-add forward and two backward (dx, its gradient).
  const double adapter = 6.0 * static_cast<double>(set.n_parameters()) * n;
  const double flops = base + attn + adapter;
  const double tflops = flops / t / 1e12;
  fmt::print(
      "| train {}, attention {} | {} | {:.0f} | {:.1f} | {} | {:.3f} s/step, FLOPs/step {:.3g} (base {:.3g}, "
      "attention {:.3g}, adapter {:.3g}) |\n",
      kind == adapters::AdapterKind::Lora ? "lora r16 (all 7 projections)" : "bottleneck m=64",
      dtype_name(gpu.attention_dtype), fmt::format("seq {}", T), n / t, tflops, mfu_str(tflops, ceil), t, flops, base,
      attn, adapter);
  std::fflush(stdout);
}

// `device_layers` < the model's layers: the rest of the KV cache in pinned host RAM (model/kv_cache.h).
void bench_decode(const Options& o, const model::LlamaModel& gpu, std::int64_t rows, const Ceilings& ceil,
                  std::int64_t device_layers = -1) {
  const model::LlamaConfig& c = gpu.config;
  const std::int64_t S = o.context, steps = 16;
  model::KvCache cache(c, rows, S + steps * (o.reps + o.warmup) + 1, 1, model::model_allocator(gpu),
                       {.device_layers = device_layers, .dtype = DType::BF16});
  ops::Workspace ws(model::model_allocator(gpu));
  Tensor prompt = Tensor::empty({1, S}, DType::I32, host_allocator(), "prompt");
  for (std::int64_t t = 0; t < S; ++t)
    prompt.data<std::int32_t>()[t] = static_cast<std::int32_t>((t * 104729) % c.vocab_size);
  for (std::int64_t r = 0; r < rows; ++r)
    model::llama_forward(gpu, prompt, &cache, {.last_position_only = true, .cache_rows = {&r, 1}}, &ws);
  Tensor step = Tensor::empty({rows, 1}, DType::I32, host_allocator(), "step_ids");
  std::fill_n(step.data<std::int32_t>(), rows, 1);
  const double t = time_median(o, [&] {
    for (std::int64_t s = 0; s < steps; ++s) {
      const Tensor logits = model::llama_forward(gpu, step, &cache, {.last_position_only = true}, &ws);
      for (std::int64_t r = 0; r < rows; ++r) {  // greedy: the argmax feeds the next step
        const float* row = logits.data<float>() + r * c.vocab_size;
        step.data<std::int32_t>()[r] = static_cast<std::int32_t>(std::max_element(row, row + c.vocab_size) - row);
      }
    }
  });
  const double tok_s = static_cast<double>(rows * steps) / t;
  // Bytes per step: every weight matrix once (bf16) + each row's KV cache at the mean length.
  const double C = static_cast<double>(c.hidden_size), F = static_cast<double>(c.intermediate_size),
               HD = static_cast<double>(c.n_heads * c.head_dim), KD = static_cast<double>(c.n_kv_heads * c.head_dim);
  const double weights = (static_cast<double>(c.n_layers) * (C * (HD + 2 * KD) + HD * C + 3 * C * F) +
                          static_cast<double>(c.vocab_size) * C) *
                         2.0;
  const double kv =
      2.0 * static_cast<double>(c.n_layers) * KD * (static_cast<double>(S) + steps) * 2.0 * static_cast<double>(rows);
  const double bound_tok_s = static_cast<double>(rows) / ((weights + kv) / (ceil.copy_gbs * 1e9));
  const std::int64_t spilled = c.n_layers - cache.device_layers();
  if (spilled == 0) {
    fmt::print(
        "| decode batch {} | context {} | {:.1f} | - | {:.1f}% of HBM bound | bound {:.1f} tok/s ({:.2f} GB "
        "weights + {:.2f} GB KV per step at {:.0f} GB/s) |\n",
        rows, S, tok_s, 100.0 * tok_s / bound_tok_s, bound_tok_s, weights / 1e9, kv / 1e9, ceil.copy_gbs);
  } else {
    // More than two spilled layers: each step brings every spilled layer's cache over (host → device).
    const double moved = spilled > 2 ? kv * static_cast<double>(spilled) / static_cast<double>(c.n_layers) : 0.0;
    fmt::print(
        "| decode batch {}, KV of {} of {} layers in host RAM | context {} | {:.1f} | - | {:.1f}% of HBM "
        "bound | {:.2f} GB host to device per step ({:.1f} GB/s) |\n",
        rows, spilled, c.n_layers, S, tok_s, 100.0 * tok_s / bound_tok_s, moved / 1e9,
        moved / 1e9 * tok_s / static_cast<double>(rows));
  }
  std::fflush(stdout);
}

int run(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      fmt::print("{}\n", kUsage);
      return 0;
    }
    if (a == "--quick") {
      o.layers = 2, o.seq = 512, o.context = 256, o.reps = 2, o.warmup = 1;
      continue;
    }
    ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value\n{}", a, kUsage);
    const std::string v = argv[++i];
    if (a == "--layers") o.layers = std::stoll(v);
    else if (a == "--seq") o.seq = std::stoll(v);
    else if (a == "--context") o.context = std::stoll(v);
    else if (a == "--reps") o.reps = std::stoi(v);
    else if (a == "--warmup") o.warmup = std::stoi(v);
    else if (a == "--device") o.device = std::stoi(v);
    else if (a == "--preset") o.preset = v;
    else if (a == "--gemm") o.gemm = std::stoll(v);
    else ADAPT_THROW(ConfigError, "unknown option '{}'\n{}", a, kUsage);
  }
  ADAPT_REQUIRE(o.layers > 0 && o.seq > 1 && o.context > 0 && o.reps > 0 && o.warmup >= 0 && o.gemm > 0, ConfigError,
                "--layers, --seq, --context, --reps and --gemm must be positive\n{}", kUsage);
  (void)model::llama_config_preset(o.preset);  // an unknown name fails here, before the GPU is touched
  if (backend::cuda_device_count() == 0) {
    fmt::print(stderr, "adapt_model_gpu_bench: skipped: {}\n", backend::cuda_unavailable_reason());
    return 77;
  }
  fmt::print(stderr, "adapt_model_gpu_bench on cuda:{} ({}): {} shapes, {} layers, median of {} after {} warm-up\n",
             o.device, backend::cuda_device_name(o.device), o.preset, o.layers, o.reps, o.warmup);
  const Ceilings ceil = measure_ceilings(o);
  fmt::print(stderr, "ceilings: copy {:.0f} GB/s, cuBLASLt bf16 GEMM {:.0f} TFLOP/s\n", ceil.copy_gbs,
             ceil.gemm_tflops);
  model::LlamaModel gpu = model::llama_model_to_device(make_host_model(o), o.device, DType::BF16);
  fmt::print("| measurement | shape | tokens/s | TFLOP/s | MFU | notes |\n|---|---|---|---|---|---|\n");
  // Attention as adapt_train runs it by default (runtime.attention_dtype = "auto": bf16 on tensor cores
  // at head_dim 128), then in f32 for the difference.
  gpu.attention_dtype = model::resolve_attention_dtype(gpu, model::AttentionDtype::Auto);
  bench_train(o, gpu, adapters::AdapterKind::Lora, ceil);
  bench_train(o, gpu, adapters::AdapterKind::Bottleneck, ceil);
  gpu.attention_dtype = DType::F32;
  bench_train(o, gpu, adapters::AdapterKind::Lora, ceil);
  bench_decode(o, gpu, 1, ceil);
  bench_decode(o, gpu, 16, ceil);
  if (o.layers > 2) bench_decode(o, gpu, 16, ceil, o.layers - 2);  // two layers spilled (only new positions move)
  bench_decode(o, gpu, 16, ceil, 0);                               // every layer spilled
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return app_main([&]() -> int { return run(argc, argv); });
}
