// The merged model: base + LoRA written as a new HF model folder (W' = W + s·B·A for every LoRA site,
// every other tensor copied byte for byte), so that tools that know nothing of adapters (transformers,
// vLLM without LoRA, adapt_gen without model.adapter) run the fine-tuned model. Used by
// `adapt_model merge` and `adapt_train --merge`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "dtype/dtype.h"

namespace adapt::adapters {

namespace fs = std::filesystem;

struct MergeOptions {
  /// Replace an existing non-empty output folder (adapt_train's own <run.dir>/merged). Otherwise an
  /// existing output folder must be empty.
  bool replace = false;
};

struct MergeReport {
  std::int64_t n_sites = 0;      // LoRA sites merged
  std::vector<fs::path> shards;  // the written safetensors files (final paths)
  std::uint64_t bytes = 0;       // tensor data written
  std::vector<fs::path> copied;  // config.json, tokenizer files, ... (final paths)
};

/// Writes `base_dir` with the LoRA adapter of `adapter_dir` merged into `out_dir`:
///  * the safetensors files of the base with the same names, tensors, dtypes and metadata (a sharded
///    base gives the same shards and a copy of model.safetensors.index.json; a single file stays one);
///    a LoRA-adapted projection is read as f32, gets s·B·A added in f32 and is stored back in its own
///    dtype (a bf16 base stays bf16);
///  * config.json, generation_config.json and the tokenizer files (tokenizer.json, tokenizer.model,
///    tokenizer_config.json, special_tokens_map.json, added_tokens.json, chat_template.json,
///    chat_template.jinja) that the base has, copied unchanged. Nothing else of the base is copied.
/// Everything is written into a sibling `.<name>.tmp` folder that is renamed to `out_dir` at the end,
/// so `out_dir` is either absent or complete; a failure removes the temporary folder.
/// UnsupportedError for a bottleneck or lora+bottleneck adapter (only LoRA is linear; the message says
/// how to merge the LoRA part of a lora+bottleneck folder); IoError when `out_dir` exists and is not an
/// empty folder (unless options.replace), for an unreadable base or adapter, or when writing fails;
/// ShapeError when the adapter does not fit the base.
MergeReport merged_model_write(const fs::path& base_dir, const fs::path& adapter_dir, const fs::path& out_dir,
                               const MergeOptions& options = {});

}  // namespace adapt::adapters
