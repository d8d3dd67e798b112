// GenJob: a generation job as written in a prompts TOML file (inputs/prompts.toml): the model, the
// output folder, default sampling and stop rules, how the job runs (batch size, device), and the
// prompts, each of which may override the defaults.
// Header-only plain structs (and the parser of runtime.device); config/ fills them, generate/ validates
// and runs them.
#pragma once

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dtype/dtype.h"
#include "model/attention_options.h"

namespace adapt::generate {

struct GenModel {
  std::filesystem::path path;                      // HF model folder (config.json, *.safetensors, tokenizer)
  std::optional<std::filesystem::path> tokenizer;  // default: the model folder's tokenizer
  std::optional<std::filesystem::path>
      adapter;  // adapter folder: PEFT LoRA, AdapterHub bottleneck, or lora/ + bottleneck/
};

struct GenOutput {
  std::filesystem::path dir;                    // everything the job writes goes below it
  std::string results = "results.jsonl";        // inside dir
  std::string conversations = "conversations";  // folder inside dir: one <name>.json per conversation
  bool conversation_kv = false;       // keep each conversation's KV cache beside it (<name>.kv, generate/kv_snapshot.h)
  std::string progress = "progress";  // folder inside dir: unfinished prompts' saved progress
};

struct GenDefaults {
  std::int64_t max_new_tokens = 256;
  double temperature = 0.0;
  std::int64_t top_k = 0;
  double top_p = 1.0;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  std::int64_t seed = 0;
  bool chat = true;  // wrap system/user prompts in the Llama 3.1 chat layout
  std::vector<std::string> stop;
  bool output_code = false;  // a prompt's output file gets only the reply's fenced code (extract_code)
};

/// runtime.kv_cache_dtype: Auto is bf16 where attention computes in bf16 (on a GPU with bf16 weights, as
/// HF keeps a bf16 model's cache; on the CPU with attention in bf16 products), f32 otherwise
/// (kv_cache_dtype_for).
enum class KvCacheDtype : std::uint8_t { Auto, F32, BF16 };

struct GenRuntime {
  std::int64_t batch_size = 8;        // sequences decoded together, each in its own KV-cache row
  std::string device = "cpu";         // "cpu", "cuda" (the GPU of the rank's local rank) or "cuda:N"
  DType weights_dtype = DType::BF16;  // F32 or BF16: the matrices' dtype in the device copy
  /// Decoder layers whose weights stay on the GPU; the rest in pinned host RAM, copied layer by layer
  /// (model/weight_stream.h). −1: all of them.
  std::int64_t weights_device_layers = -1;
  /// What attention computes in on a GPU (model/attention_options.h); a prefill over the KV cache runs in
  /// bf16 only over a bf16 cache.
  model::AttentionDtype attention_dtype = model::AttentionDtype::Auto;
  /// With device = "cpu": how products by the base weights compute (ops::set_cpu_matmul_dtype). F32: the
  /// reference, bf16 weights widened exactly. BF16: the weights kept in bf16 (rounded at load where the
  /// checkpoint is f32) and the activations rounded to bf16 for each product, f32 sums: the GPU path's
  /// bf16 GEMMs, on the CPU's bf16 dot-product instructions (AVX512_BF16).
  DType cpu_matmul_dtype = DType::F32;
  std::int64_t prefill_chunk = 512;                  // prompt tokens per forward (0: whole prompts)
  std::int64_t kv_device_layers = -1;                // layers whose KV cache stays on the GPU (-1: as many as fit)
  KvCacheDtype kv_cache_dtype = KvCacheDtype::Auto;  // the KV cache's element type (kv_cache_dtype_for)
  std::int64_t progress_every =
      256;                     // save an unfinished prompt's progress every this many tokens (0: on signals only)
  bool share_prefixes = true;  // prompts starting alike copy the shared positions' KV cache
};

/// The KV cache's element type of a job whose model runs on a GPU (`on_gpu`) or on the host. Auto on the
/// host: bf16 when attention computes in bf16 products there (attention_dtype "bf16", or "auto" with
/// cpu_matmul_dtype "bf16": model::host_attention_dtype, which model::resolve_attention_dtype applies).
/// Those products round keys and values to bf16 anyway, so the cache stores exactly what they take, in
/// half the memory; over an f32 cache a generation's attention would stay f32
/// (model::attention_dtype_over_cache).
inline DType kv_cache_dtype_for(const GenRuntime& rt, bool on_gpu) {
  switch (rt.kv_cache_dtype) {
    case KvCacheDtype::F32: return DType::F32;
    case KvCacheDtype::BF16: return DType::BF16;
    case KvCacheDtype::Auto: break;
  }
  if (on_gpu) return rt.weights_dtype == DType::BF16 ? DType::BF16 : DType::F32;
  return model::host_attention_dtype(rt.attention_dtype, rt.cpu_matmul_dtype);
}

/// runtime.device, parsed: the host, or a CUDA device given by index or chosen from the local rank.
struct GenDevice {
  bool cuda = false;
  std::optional<int> index;  // "cuda:N": N; "cuda": nullopt (comm::device_for_rank picks it)
};

/// "cpu", "cuda" or "cuda:N" (N a decimal integer >= 0) as a GenDevice; nullopt for anything else.
inline std::optional<GenDevice> gen_device_parse(std::string_view text) {
  if (text == "cpu") return GenDevice{};
  if (text == "cuda") return GenDevice{.cuda = true};
  constexpr std::string_view kPrefix = "cuda:";
  if (!text.starts_with(kPrefix) || text.size() == kPrefix.size() || text.size() > kPrefix.size() + 6)
    return std::nullopt;
  int index = 0;
  const char* first = text.data() + kPrefix.size();
  const char* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, index);
  if (*first < '0' || *first > '9' || ec != std::errc{} || end != last) return std::nullopt;
  return GenDevice{.cuda = true, .index = index};
}

/// Whether `relative` names a path below an output folder: not empty, not absolute, not the folder
/// itself and not climbing out of it with "..". (output_path_inside and the prompt file's checks.)
inline bool path_stays_inside(const std::string& relative) {
  const std::filesystem::path norm = std::filesystem::path(relative).lexically_normal();
  return !relative.empty() && norm.is_relative() && !norm.empty() && norm != "." && *norm.begin() != "..";
}

/// A conversation's name: 1 to 128 of [A-Za-z0-9._-], not starting with '.' (it names a file).
inline bool conversation_name_ok(std::string_view name) {
  if (name.empty() || name.size() > 128 || name.front() == '.') return false;
  for (const char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                    ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

/// The parallel layout: tp and pp from the job, dp = world size / (tp · pp) from the launcher; the dp
/// replicas share out the prompts.
struct GenParallel {
  std::int64_t tp = 1;
  std::int64_t pp = 1;
};

struct PromptSpec {
  std::string id;
  std::optional<std::string> conversation;  // the next turn of this conversation (generate/conversation.h)
  std::optional<std::string> system;
  std::optional<std::string> user;    // chat-formatted (with `system`)
  std::optional<std::string> text;    // raw text, no template (neither, in a conversation: continue the last reply)
  std::optional<std::string> output;  // file to write the completion to, relative to output.dir
  std::optional<std::int64_t> max_new_tokens;
  std::optional<double> temperature;
  std::optional<std::int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
  std::optional<std::int64_t> seed;
  std::optional<std::vector<std::string>> stop;
  std::optional<bool> output_code;
};

struct GenJob {
  GenModel model;
  GenOutput output;
  GenDefaults defaults;
  GenRuntime runtime;
  GenParallel parallel;
  std::vector<PromptSpec> prompts;
};

}  // namespace adapt::generate
