// gen_bench: greedy generation speed of adapt on one model folder, batch 1 — the adapt side of
// scripts/bench_gen.sh (a timing tool, not a test). It runs what generate::Generator::run does per
// token (llama_forward through a KV cache with last-position logits, then generate::Sampler at
// temperature 0), without the tokenizer: no detokenisation, no stop rules, so no EOS stop.
//
//   build/tests/gen_bench MODEL_DIR --ids FILE [--decode 128] [--reps 3] [--warmup 0]
//                         [--storage as-stored|f32] [--kv-dtype auto|f32|bf16] [--cpu-matmul-dtype f32|bf16]
//                         [--attention-dtype auto|f32|bf16] [--tokens-out FILE]
//
//   --ids FILE         the prompt: whitespace-separated token ids (the script writes random ids)
//   --decode N         decode steps after the prefill (each one forward of one token); N + 1 tokens
//                      are generated in all, the first one from the prefill's logits
//   --reps R           repetitions, each with a fresh KV cache; the best time of each phase counts
//   --warmup W         untimed repetitions first (a prefill and min(decode, 8) steps each)
//   --storage S        as-stored (default; what adapt_gen uses: bf16 matrices stay bf16 and are
//                      widened inside the GEMMs) or f32 (every weight widened to f32 at load)
//   --kv-dtype T       the KV cache's element type (adapt_gen's runtime.kv_cache_dtype), default auto: bf16
//                      when attention computes in bf16 products, else f32
//   --cpu-matmul-dtype T  adapt_gen's runtime.cpu_matmul_dtype: f32 (default) or bf16 (bf16 products: the
//                      matrices in bf16 whatever --storage says, activations rounded to bf16)
//   --attention-dtype A  adapt_gen's runtime.attention_dtype, default auto (bf16 products in attention
//                      with --cpu-matmul-dtype bf16); over an f32 KV cache attention stays f32, as in adapt_gen
//   --tokens-out FILE  writes the generated ids of the last repetition, one line
//
// Output (stdout), one `key value` per line for scripts, then a readable summary on stderr:
//   load_s, prompt_tokens, decode_steps, prefill_s, prefill_tok_s, ttft_s, decode_s, decode_tok_s
// prefill_s is the forward pass over the prompt; ttft_s adds the greedy pick of the first token;
// decode_tok_s = decode steps / decode_s, where decode_s runs from the first token to the last.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/app_main.h"
#include "core/error.h"
#include "core/timer.h"
#include "generate/gen_config.h"
#include "generate/sampler.h"
#include "model/attention_compute.h"
#include "model/kv_cache.h"
#include "model/llama_forward.h"
#include "model/llama_weights.h"
#include "ops/matmul.h"

using namespace adapt;

namespace {

constexpr const char* kUsage =
    "usage: gen_bench MODEL_DIR --ids FILE [--decode 128] [--reps 3] [--warmup 0] [--storage as-stored|f32]\n"
    "                 [--kv-dtype auto|f32|bf16] [--cpu-matmul-dtype f32|bf16] [--attention-dtype auto|f32|bf16]\n"
    "                 [--tokens-out FILE]\n";

std::vector<std::int32_t> ids_read(const std::string& path, std::int64_t vocab) {
  std::ifstream in(path);
  ADAPT_REQUIRE(in.good(), IoError, "cannot read the prompt ids file '{}'", path);
  std::vector<std::int32_t> ids;
  long long v = 0;
  while (in >> v) {
    ADAPT_REQUIRE(v >= 0 && v < vocab, ConfigError, "'{}': token id {} is outside the model's vocabulary [0, {})", path,
                  v, vocab);
    ids.push_back(static_cast<std::int32_t>(v));
  }
  ADAPT_REQUIRE(in.eof(), ConfigError, "'{}': expected whitespace-separated integers", path);
  ADAPT_REQUIRE(!ids.empty(), ConfigError, "'{}' holds no token ids", path);
  return ids;
}

std::span<float> logits_row(Tensor& logits) {  // (1, V) → V values
  return {logits.data<float>(), static_cast<std::size_t>(logits.dim(-1))};
}

int run(int argc, char** argv) {
  ADAPT_REQUIRE(argc >= 2 && argv[1][0] != '-', ConfigError, "{}", kUsage);
  const std::string dir = argv[1];
  std::string ids_path, tokens_out, storage = "as-stored", kv_dtype = "auto", matmul_dtype = "f32";
  std::string attention = "auto";
  std::int64_t decode = 128, reps = 3, warmup = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value\n{}", a, kUsage);
    const std::string v = argv[++i];
    if (a == "--ids") ids_path = v;
    else if (a == "--decode") decode = std::stoll(v);
    else if (a == "--reps") reps = std::stoll(v);
    else if (a == "--warmup") warmup = std::stoll(v);
    else if (a == "--storage") storage = v;
    else if (a == "--tokens-out") tokens_out = v;
    else if (a == "--kv-dtype") kv_dtype = v;
    else if (a == "--cpu-matmul-dtype") matmul_dtype = v;
    else if (a == "--attention-dtype") attention = v;
    else ADAPT_THROW(ConfigError, "unknown option '{}'\n{}", a, kUsage);
  }
  ADAPT_REQUIRE(!ids_path.empty(), ConfigError, "--ids FILE is required\n{}", kUsage);
  ADAPT_REQUIRE(decode >= 0 && reps >= 1 && warmup >= 0, ConfigError,
                "--decode and --warmup must be >= 0 and --reps >= 1");
  ADAPT_REQUIRE(storage == "as-stored" || storage == "f32", ConfigError, "--storage is 'as-stored' or 'f32', not '{}'",
                storage);
  ADAPT_REQUIRE(kv_dtype == "auto" || kv_dtype == "f32" || kv_dtype == "bf16", ConfigError,
                "--kv-dtype is 'auto', 'f32' or 'bf16', not '{}'", kv_dtype);

  ADAPT_REQUIRE(matmul_dtype == "f32" || matmul_dtype == "bf16", ConfigError,
                "--cpu-matmul-dtype is 'f32' or 'bf16', not '{}'", matmul_dtype);
  const bool bf16_products = matmul_dtype == "bf16";
  ops::set_cpu_matmul_dtype(bf16_products ? DType::BF16 : DType::F32);

  const std::optional<model::AttentionDtype> attention_dtype = model::attention_dtype_parse(attention);
  ADAPT_REQUIRE(attention_dtype.has_value(), ConfigError, "--attention-dtype is 'auto', 'f32' or 'bf16', not '{}'",
                attention);
  // The KV cache's dtype as adapt_gen picks it on the CPU.
  generate::GenRuntime rt;
  rt.kv_cache_dtype = kv_dtype == "auto"  ? generate::KvCacheDtype::Auto
                      : kv_dtype == "f32" ? generate::KvCacheDtype::F32
                                          : generate::KvCacheDtype::BF16;
  rt.attention_dtype = *attention_dtype;
  rt.cpu_matmul_dtype = bf16_products ? DType::BF16 : DType::F32;
  const DType cache_dtype = generate::kv_cache_dtype_for(rt, /*on_gpu=*/false);

  model::LlamaLoadStats ls;
  model::LlamaModel m = model::llama_model_load(dir,
                                                {.storage = bf16_products      ? model::WeightStorage::Bf16
                                                            : storage == "f32" ? model::WeightStorage::F32
                                                                               : model::WeightStorage::AsStored},
                                                &ls);
  m.attention_dtype = model::resolve_attention_dtype(m, *attention_dtype);  // as adapt_gen does
  const std::string attention_note =
      fmt::format("{} KV cache, {}", dtype_name(cache_dtype), model::attention_note(m, cache_dtype));
  const std::vector<std::int32_t> prompt = ids_read(ids_path, m.config.vocab_size);
  const auto n_prompt = static_cast<std::int64_t>(prompt.size());

  ops::Workspace ws;
  model::ForwardOptions fo;
  fo.last_position_only = true;
  generate::SamplingParams greedy;  // temperature 0: argmax, ties to the lowest id (as torch.argmax)
  double best_prefill = 1e30, best_ttft = 1e30, best_decode = 1e30;
  std::vector<std::int32_t> tokens;
  for (std::int64_t r = -warmup; r < reps; ++r) {
    const bool timed = r >= 0;
    const std::int64_t steps = timed ? decode : std::min<std::int64_t>(decode, 8);
    generate::Sampler sampler(greedy);
    model::KvCache cache(m.config, /*batch=*/1, n_prompt + decode, 1, host_allocator(), {.dtype = cache_dtype});
    std::vector<std::int32_t> history(prompt.begin(), prompt.end());
    tokens.clear();
    Tensor ids = Tensor::empty({1, n_prompt}, DType::I32);
    std::copy(prompt.begin(), prompt.end(), ids.data<std::int32_t>());

    Timer t;
    Tensor logits = model::llama_forward(m, ids, &cache, fo, &ws);  // (1, V)
    const double prefill = t.seconds();
    std::int32_t next = sampler.sample(logits_row(logits), history);
    const double ttft = t.seconds();
    tokens.push_back(next);
    history.push_back(next);

    Tensor step = Tensor::empty({1, 1}, DType::I32);
    t.reset();
    for (std::int64_t s = 0; s < steps; ++s) {
      step.data<std::int32_t>()[0] = next;
      logits = model::llama_forward(m, step, &cache, fo, &ws);
      next = sampler.sample(logits_row(logits), history);
      tokens.push_back(next);
      history.push_back(next);
    }
    const double dec = t.seconds();
    if (!timed) continue;
    best_prefill = std::min(best_prefill, prefill);
    best_ttft = std::min(best_ttft, ttft);
    best_decode = std::min(best_decode, dec);
  }

  if (!tokens_out.empty()) {
    std::ofstream out(tokens_out);
    ADAPT_REQUIRE(out.good(), IoError, "cannot write '{}'", tokens_out);
    for (std::size_t i = 0; i < tokens.size(); ++i) out << (i ? " " : "") << tokens[i];
    out << "\n";
  }
  const double decode_tps = decode > 0 ? static_cast<double>(decode) / best_decode : 0.0;
  std::printf("%s",
              fmt::format("load_s {:.4f}\nprompt_tokens {}\ndecode_steps {}\nprefill_s {:.6f}\nprefill_tok_s {:.2f}\n"
                          "ttft_s {:.6f}\ndecode_s {:.6f}\ndecode_tok_s {:.3f}\n",
                          ls.seconds, n_prompt, decode, best_prefill, n_prompt / best_prefill, best_ttft, best_decode,
                          decode_tps)
                  .c_str());
  std::fprintf(stderr, "%s",
               fmt::format("gen_bench {} ({} weights, {:.1f} MB resident; {}): prefill {} tokens {:.0f} tok/s, "
                           "first token {:.3f} s, decode {} steps {:.1f} tok/s (best of {})\n",
                           dir, storage, ls.bytes_resident / 1e6, attention_note, n_prompt, n_prompt / best_prefill,
                           best_ttft, decode, decode_tps, reps)
                   .c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return app_main([&]() -> int { return run(argc, argv); });
}
