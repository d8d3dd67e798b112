// llama_forward_bench: times loading, prefill and KV-cache decode of a model folder (no assertions;
// a tool, not a test). Prints one line per phase with tokens/s.
//
//   build/tests/llama_forward_bench MODEL_DIR [--prompt 512] [--decode 64] [--batch 1] [--reps 3]
//                                   [--bf16 1]   (keep bf16 weights as stored: WeightStorage::AsStored)
//                                   [--ragged 1] (as adapt_gen's scheduler: sequence b gets a prompt of
//                                                 prompt·(1 − b/(2·batch)) tokens, prefilled alone into its
//                                                 cache row; then all rows decode together, each at its
//                                                 own position)
//                                   [--group G]  (decode at most G rows per forward; 0: all rows in one)
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/timer.h"
#include "model/llama_forward.h"

using namespace adapt;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [--prompt N] [--decode N] [--batch B] [--reps R]\n", argv[0]);
    return 2;
  }
  std::int64_t prompt = 512, decode = 64, batch = 1, reps = 3, bf16 = 0, ragged = 0, group = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::int64_t v = std::atoll(argv[i + 1]);
    if (k == "--prompt") prompt = v;
    else if (k == "--decode") decode = v;
    else if (k == "--batch") batch = v;
    else if (k == "--reps") reps = v;
    else if (k == "--bf16") bf16 = v;
    else if (k == "--ragged") ragged = v;
    else if (k == "--group") group = v;
  }
  try {
    model::LlamaLoadStats ls;
    const model::LlamaModel m = model::llama_model_load(
        argv[1], {.storage = bf16 ? model::WeightStorage::AsStored : model::WeightStorage::F32}, &ls);
    std::printf("%s", fmt::format("load      {:.3f} s ({:.1f} MB read, {:.1f} MB resident)\n", ls.seconds,
                                  ls.bytes_read / 1e6, ls.bytes_resident / 1e6)
                          .c_str());
    Tensor ids = Tensor::empty({batch, prompt}, DType::I32);
    for (std::int64_t i = 0; i < ids.numel(); ++i)
      ids.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 7919) % m.config.vocab_size);
    ops::Workspace ws;
    double best_prefill = 1e30, best_decode = 1e30;
    std::vector<std::int64_t> rows(static_cast<std::size_t>(batch));
    for (std::int64_t b = 0; b < batch; ++b) rows[static_cast<std::size_t>(b)] = b;
    const std::int64_t G = group > 0 ? std::min(group, batch) : batch;
    std::int64_t n_prefill = 0;
    for (std::int64_t r = 0; r < reps; ++r) {
      model::KvCache cache(m.config, batch, prompt + decode);
      Timer t;
      Tensor logits;
      if (ragged) {
        n_prefill = 0;
        for (std::int64_t b = 0; b < batch; ++b) {
          const std::int64_t P = std::max<std::int64_t>(1, prompt - prompt * b / (2 * batch));
          n_prefill += P;
          Tensor one = Tensor::empty({1, P}, DType::I32);
          one.copy_from(ids.narrow(0, b, 1).narrow(1, 0, P));
          logits = model::llama_forward(
              m, one, &cache, {.last_position_only = true, .cache_rows = {&rows[static_cast<std::size_t>(b)], 1}}, &ws);
        }
      } else {
        n_prefill = batch * prompt;
        logits = model::llama_forward(m, ids, &cache, {.last_position_only = true}, &ws);
      }
      best_prefill = std::min(best_prefill, t.seconds());
      Tensor step = Tensor::empty({batch, 1}, DType::I32);
      for (std::int64_t b = 0; b < batch; ++b) step.data<std::int32_t>()[b] = 1;
      t.reset();
      for (std::int64_t s = 0; s < decode; ++s) {
        for (std::int64_t b0 = 0; b0 < batch; b0 += G) {
          const std::int64_t n = std::min(G, batch - b0);
          logits =
              model::llama_forward(m, step.narrow(0, b0, n), &cache,
                                   {.last_position_only = true,
                                    .cache_rows = {&rows[static_cast<std::size_t>(b0)], static_cast<std::size_t>(n)}},
                                   &ws);
        }
      }
      best_decode = std::min(best_decode, t.seconds());
    }
    std::printf("%s", fmt::format("prefill   B={} T={}{}: {:.3f} s, {:.0f} tokens/s\n", batch, prompt,
                                  ragged ? " (ragged, one row at a time)" : "", best_prefill,
                                  static_cast<double>(n_prefill) / best_prefill)
                          .c_str());
    std::printf("%s", fmt::format("decode    B={} {} steps after {}{}{}: {:.3f} s, {:.1f} tokens/s ({:.2f} ms/step)\n",
                                  batch, decode, prompt, ragged ? " (ragged)" : "",
                                  G < batch ? fmt::format(" in forwards of {} rows", G) : "", best_decode,
                                  batch * decode / best_decode, 1e3 * best_decode / static_cast<double>(decode))
                          .c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return static_cast<int>(e.exit_code());
  }
  return 0;
}
