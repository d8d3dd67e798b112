// adapt_eval: mean loss and perplexity of a model over the `text` of each line of a JSONL file, and
// optionally the log-probability of every token. This is how a base model and an adapted one are
// compared on held-out code. With --device cuda the forward pass runs on a GPU (the weights copied
// once, model::llama_model_to_device); the log-probabilities are computed on the host from its logits.
//
//   adapt_eval --model DIR --data FILE.jsonl [--per-token] [--out FILE] [--device cpu|cuda|cuda:N]
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "apps/app_device.h"
#include "backend/backend.h"
#include "core/app_main.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "model/attention_compute.h"
#include "model/llama_config.h"
#include "model/llama_device.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "model/weight_stream.h"
#include "ops/matmul.h"
#include "tokenizer/tokenizer.h"

using namespace adapt;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kUsage =
    R"(usage: adapt_eval --model DIR --data FILE.jsonl [--adapter DIR] [--per-token] [--out FILE] [--tokenizer PATH]
                  [--device cpu|cuda|cuda:N] [--weights-dtype bf16|f32] [--weights-device-layers N]
                  [--attention-dtype auto|bf16|f32] [--cpu-matmul-dtype f32|bf16]

Reads one JSON object per line with a "text" field, tokenizes it (with BOS) and scores every token
given the ones before it. Prints the mean loss (negative log-likelihood per token, natural log) and
perplexity over all scored tokens of the file. Texts longer than the model's context are cut to the
context (a warning names the line).

  --model DIR        model folder in HF layout
  --data FILE        JSON Lines, each line an object with a string "text"
  --per-token        also write one JSON line per input line: {"line", "tokens", "logprobs"}; the
                     first token (BOS) has no log-probability (null)
  --out FILE         where --per-token records go (default: stdout)
  --tokenizer PATH   tokenizer file or folder (default: the model folder's)
  --adapter DIR      apply this adapter (PEFT LoRA or AdapterHub bottleneck folder, or a
                     lora+bottleneck folder with one of each in lora/ and bottleneck/: what
                     adapt_train exports), to compare an adapted model with its base
  --device D         where the forward pass runs: cpu (default); cuda, the GPU of the local rank
                     (device 0 for a plain start); cuda:N, visible device N. The model is read on the
                     host and its weights (and the adapter) copied to the device once
  --weights-dtype T  the weight matrices' dtype on the device: bf16 (default; bf16 GEMMs) or f32
                     (computes as the CPU does); norms stay f32. Only with --device cuda[:N]
  --weights-device-layers N
                     keep only the first N layers' weights on the GPU and stream the others from
                     pinned host RAM as the forward reaches them (as runtime.weights_device_layers of
                     adapt_train and adapt_gen); the same scores. Only with --device cuda[:N]
  --attention-dtype A
                     what attention computes in (as runtime.attention_dtype): auto (default: on a GPU
                     bf16 on tensor cores with bf16 weights and head_dim 64 or 128; on the CPU bf16
                     with --cpu-matmul-dtype bf16; else f32), bf16 (q, k, v and the probabilities
                     rounded to bf16, on a GPU the output too; softmax and sums in f32) or f32
  --cpu-matmul-dtype T
                     how the products by the weights compute on the CPU (as runtime.cpu_matmul_dtype):
                     f32 (default, the reference) or bf16 (weights in bf16, activations rounded to bf16,
                     f32 sums: the GPU's arithmetic, on AVX512_BF16 where the CPU has it). Only on the CPU

adapt_eval is one process (one GPU, or the CPU): started as several ranks (mpiexec, srun -n N) it
refuses, since each would repeat the evaluation.

exit codes: 0 done; 2 bad option (or several ranks); 3 missing/invalid model, tokenizer, adapter or
data file; 4 CUDA failure; 6 an adapter feature adapt does not implement, or --device cuda with no
usable GPU; 70 internal error.
)";

int run(int argc, char** argv) {
  std::string model_dir, data, out, tok_path, adapter_dir, device_text = "cpu", weights_dtype_text, attention_text,
                                                           matmul_text;
  std::optional<std::int64_t> device_layers;
  bool per_token = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value; run adapt_eval --help", a);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--model") {
      model_dir = value();
    } else if (a == "--data") {
      data = value();
    } else if (a == "--out") {
      out = value();
    } else if (a == "--tokenizer") {
      tok_path = value();
    } else if (a == "--adapter") {
      adapter_dir = value();
    } else if (a == "--per-token") {
      per_token = true;
    } else if (a == "--device") {
      device_text = value();
    } else if (a == "--weights-dtype") {
      weights_dtype_text = value();
    } else if (a == "--attention-dtype") {
      attention_text = value();
    } else if (a == "--cpu-matmul-dtype") {
      matmul_text = value();
    } else if (a == "--weights-device-layers") {
      const std::string v = value();
      const std::optional<std::int64_t> n = parse_int(v);
      ADAPT_REQUIRE(n && *n >= 0, ConfigError, "--weights-device-layers {}: give a number of layers >= 0", v);
      device_layers = *n;
    } else {
      ADAPT_THROW(ConfigError, "unknown option '{}'{}; run adapt_eval --help", a,
                  did_you_mean(a, {"--model", "--data", "--out", "--tokenizer", "--adapter", "--per-token", "--device",
                                   "--weights-dtype", "--weights-device-layers", "--attention-dtype",
                                   "--cpu-matmul-dtype", "--help"}));
    }
  }
  ADAPT_REQUIRE(!model_dir.empty() && !data.empty(), ConfigError,
                "adapt_eval needs --model DIR and --data FILE.jsonl; run adapt_eval --help");
  ADAPT_REQUIRE(out.empty() || per_token, ConfigError, "--out is where --per-token records go: pass --per-token too");
  ADAPT_REQUIRE(weights_dtype_text.empty() || weights_dtype_text == "bf16" || weights_dtype_text == "f32", ConfigError,
                "--weights-dtype {} must be bf16 or f32", weights_dtype_text);
  const DType weights_dtype = weights_dtype_text == "f32" ? DType::F32 : DType::BF16;
  const std::optional<model::AttentionDtype> attention =
      attention_text.empty() ? model::AttentionDtype::Auto : model::attention_dtype_parse(attention_text);
  ADAPT_REQUIRE(attention, ConfigError, "--attention-dtype {} must be auto, bf16 or f32", attention_text);
  ADAPT_REQUIRE(matmul_text.empty() || matmul_text == "f32" || matmul_text == "bf16", ConfigError,
                "--cpu-matmul-dtype {} must be f32 or bf16", matmul_text);
  const bool cpu_bf16 = matmul_text == "bf16";
  // One process: started as several ranks, each would repeat the whole evaluation into the same --out.
  const comm::LaunchEnv launch = comm::launch_env_from_process();
  ADAPT_REQUIRE(launch.world_size <= 1, ConfigError,
                "adapt_eval runs as one process, but the launcher started {} ranks ({}); each would repeat the whole "
                "evaluation. Start one process (srun -n 1, or without mpiexec)",
                launch.world_size, comm::describe(launch));
  // The GPU first: without one this fails before the model is read.
  const std::optional<int> device =
      apps::app_device_resolve(device_text, launch, {.name = "--device", .to_cpu = "pass --device cpu"});
  ADAPT_REQUIRE(device || weights_dtype_text.empty(), ConfigError,
                "--weights-dtype sets the dtype of the weights on a GPU: pass --device cuda too, or leave it out");
  ADAPT_REQUIRE(device || !device_layers, ConfigError,
                "--weights-device-layers keeps some weights off a GPU: pass --device cuda too, or leave it out");
  ADAPT_REQUIRE(!device || matmul_text.empty(), ConfigError,
                "--cpu-matmul-dtype sets how the CPU computes; with --device cuda use --weights-dtype bf16 (bf16 "
                "GEMMs), or leave it out");
  ops::set_cpu_matmul_dtype(cpu_bf16 ? DType::BF16 : DType::F32);
  if (cpu_bf16) log::info0("{}", ops::cpu_matmul_note());

  model::model_folder_require(model_dir, "--model");  // before the tokenizer, which it may hold
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(tok_path.empty() ? model_dir : tok_path);
  const std::string text = file_read_text(data);  // before the weights: a missing file fails at once
  model::LlamaLoadStats stats;
  model::LlamaModel model = model::llama_model_load(
      model_dir, {.storage = cpu_bf16 ? model::WeightStorage::Bf16 : model::WeightStorage::AsStored}, &stats);
  ADAPT_REQUIRE(tok.n_vocab() <= model.config.vocab_size, ConfigError,
                "the tokenizer has {} tokens but the model's vocab_size is {}; use the model's own tokenizer",
                tok.n_vocab(), model.config.vocab_size);
  log::info0("loaded {} in {:.2f} s", model_dir, stats.seconds);
  if (!device) {
    model.attention_dtype = model::resolve_attention_dtype(model, *attention);
    log::info0("{}", model::attention_note(model));
  }
  if (device) {
    Timer copy;
    // Frees the host copy layer by layer.
    model = model::llama_model_to_device(std::move(model), *device, weights_dtype, device_layers.value_or(-1));
    model.attention_dtype = model::resolve_attention_dtype(model, *attention);
    log::info0("{} weights on cuda:{} ({}) in {:.2f} s{}; {}", dtype_name(weights_dtype), *device,
               backend::cuda_device_name(*device), copy.seconds(), model::streamed_weights_note(model),
               model::attention_note(model));
  }
  std::optional<adapters::AdapterSet> adapter;
  if (!adapter_dir.empty()) {
    adapter.emplace(adapters::adapter_load(adapter_dir, model.config));
    if (device) adapter->to_device(*device);
    log::info0("adapter {}: {} parameters", adapter_dir, format_count(adapter->n_parameters()));
  }

  std::FILE* sink = stdout;
  std::string out_buf;
  double nll_sum = 0;
  std::int64_t n_scored = 0, line_no = 0, n_lines = 0;
  model::TrainWorkspace ws(model::model_allocator(model));  // on the model's device
  Timer timer;
  std::size_t pos = 0;
  for (std::string_view line; next_line(text, &pos, &line);) {
    ++line_no;
    if (is_blank(line)) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    ADAPT_REQUIRE(j.is_object() && j.contains("text") && j["text"].is_string(), IoError,
                  "{}:{}: expected a JSON object with a string \"text\"", data, line_no);
    tokenizer::EncodeOptions eo;
    eo.bos = true;
    std::vector<tokenizer::TokenId> ids = tok.encode(j["text"].get<std::string>(), eo);
    if (static_cast<std::int64_t>(ids.size()) > model.config.max_position_embeddings) {
      log::warn("{}:{}: {} tokens, cut to the model's context of {}", data, line_no, ids.size(),
                model.config.max_position_embeddings);
      ids.resize(static_cast<std::size_t>(model.config.max_position_embeddings));
    }
    ++n_lines;
    const auto T = static_cast<std::int64_t>(ids.size());
    // The training step's forward and loss, without a backward: the logits are formed 256 rows at a
    // time and reduced to each position's loss, never held whole ((T, V) f32 is 67 GB at 131,072 tokens).
    model::TrainInputs in{.ids = Tensor::empty({1, T}, DType::I32, host_allocator(), "ids"),
                          .targets = Tensor::empty({1, T}, DType::I32, host_allocator(), "targets")};
    for (std::int64_t t = 0; t < T; ++t) {
      in.ids.data<std::int32_t>()[t] = static_cast<std::int32_t>(ids[static_cast<std::size_t>(t)]);
      in.targets.data<std::int32_t>()[t] =
          t + 1 < T ? static_cast<std::int32_t>(ids[static_cast<std::size_t>(t + 1)]) : model::kIgnoreIndex;
    }
    Tensor row_loss = Tensor::empty({1, T}, DType::F32, model::model_allocator(model), "row_loss");
    model::llama_train_step(model, in, adapter ? &*adapter : nullptr, {.backward = false, .row_loss = &row_loss}, &ws);
    Tensor nll = Tensor::empty({1, T}, DType::F32, host_allocator(), "row_loss_host");
    model::copy_between(nll, row_loss);
    json lp = json::array();
    lp.push_back(nullptr);
    for (std::int64_t t = 1; t < T; ++t) {
      const double l = -static_cast<double>(nll.data<float>()[t - 1]);
      nll_sum -= l;
      ++n_scored;
      lp.push_back(l);
    }
    if (per_token) {
      json rec = {{"line", line_no}, {"tokens", ids}, {"logprobs", lp}};
      out_buf += rec.dump() + "\n";
    }
  }
  ADAPT_REQUIRE(n_scored > 0, IoError, "{}: no line has a text of two or more tokens to score", data);
  const double loss = nll_sum / static_cast<double>(n_scored);
  if (per_token) {
    if (out.empty()) {
      std::fwrite(out_buf.data(), 1, out_buf.size(), sink);
    } else {
      file_write_atomic(out, out_buf);
    }
  }
  std::fprintf(
      per_token && out.empty() ? stderr : stdout, "%s\n",
      fmt::format("lines {}  tokens scored {}  loss {:.6f}  perplexity {:.4f}  ({:.1f} tokens/s)", n_lines, n_scored,
                  loss, std::exp(loss), static_cast<double>(n_scored) / std::max(timer.seconds(), 1e-9))
          .c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return adapt::app_main([&]() -> int {
    if (argc < 2) {
      std::fputs(kUsage, stderr);
      return static_cast<int>(ExitCode::Usage);
    }
    return run(argc, argv);
  });
}
