// Base + LoRA merged into a new HF model folder, written under a temporary name and renamed.
#include "adapters/adapter_merge.h"

#include <fmt/format.h>

#include <map>
#include <string>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "core/error.h"
#include "core/file.h"
#include "io/safetensors_writer.h"
#include "io/sharded.h"
#include "model/llama_config.h"
#include "model/weight_names.h"

namespace adapt::adapters {

namespace {

/// The files of a model folder besides its weights that a merged folder carries over unchanged.
constexpr const char* kCopiedFiles[] = {"config.json",       "generation_config.json", "tokenizer.json",
                                        "tokenizer.model",   "tokenizer_config.json",  "special_tokens_map.json",
                                        "added_tokens.json", "chat_template.json",     "chat_template.jinja"};
constexpr const char* kIndexFile = "model.safetensors.index.json";

/// UnsupportedError unless `adapter_dir` is a LoRA-only folder.
void require_lora_only(const fs::path& adapter_dir) {
  switch (adapter_format_detect(adapter_dir)) {
    case AdapterFormat::Peft: return;
    case AdapterFormat::AdapterHub:
      ADAPT_THROW(UnsupportedError,
                  "'{}' is a bottleneck adapter, which cannot be merged into the base weights: it is nonlinear (an "
                  "activation between its two projections) and adds a module rather than changing a weight; run it "
                  "through the adapter hook instead (adapt_gen model.adapter, adapt_eval --adapter)",
                  adapter_dir.string());
    case AdapterFormat::LoraBottleneck:
      ADAPT_THROW(UnsupportedError,
                  "'{}' holds a LoRA and a bottleneck adapter (lora+bottleneck); only the LoRA part can be merged into "
                  "the base weights. Merge it alone with --adapter {} and apply the bottleneck part on top of the "
                  "merged model (adapt_gen model.adapter / adapt_eval --adapter {}): that computes the same as the "
                  "base with both",
                  adapter_dir.string(), (adapter_dir / kLoraSubdir).string(),
                  (adapter_dir / kBottleneckSubdir).string());
  }
}

/// out_dir without a trailing separator, absolute.
fs::path clean_out(const fs::path& out_dir) {
  fs::path p = fs::absolute(out_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p;
}

void check_out(const fs::path& out, bool replace) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  ADAPT_REQUIRE(fs::is_directory(out, ec), IoError, "'{}' exists and is not a folder; choose another output folder",
                out.string());
  ADAPT_REQUIRE(replace || fs::is_empty(out, ec), IoError,
                "'{}' already exists and is not empty; the merged model goes into a new (or empty) folder: choose "
                "another output folder or remove this one",
                out.string());
}

/// tmp → out: out (if any) is moved aside first and removed after the rename, so out is always whole.
void commit(const fs::path& tmp, const fs::path& out) {
  std::error_code ec;
  fs::path old;
  if (fs::exists(out, ec)) {
    old = out.parent_path() / fmt::format(".{}.old", out.filename().string());
    fs::remove_all(old, ec);
    fs::rename(out, old, ec);
    ADAPT_REQUIRE(!ec, IoError, "cannot move the existing '{}' aside to '{}': {}", out.string(), old.string(),
                  ec.message());
  }
  fs::rename(tmp, out, ec);
  if (ec) {
    const std::string why = ec.message();
    if (!old.empty()) fs::rename(old, out, ec);
    ADAPT_THROW(IoError, "cannot rename '{}' to '{}': {}", tmp.string(), out.string(), why);
  }
  dir_fsync(out.parent_path());
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace

MergeReport merged_model_write(const fs::path& base_dir, const fs::path& adapter_dir, const fs::path& out_dir,
                               const MergeOptions& options) {
  const fs::path out = clean_out(out_dir);
  ADAPT_REQUIRE(fs::is_directory(base_dir), IoError, "base model folder '{}' does not exist or is not a folder",
                base_dir.string());
  ADAPT_REQUIRE(out != clean_out(base_dir), IoError, "the merged model cannot be written over its base '{}'",
                base_dir.string());
  check_out(out, options.replace);
  require_lora_only(adapter_dir);
  const model::LlamaConfig config = model::llama_config_load(base_dir);
  const AdapterSet set = adapter_load(adapter_dir, config);
  const io::ShardedSafetensors base(base_dir);

  // The LoRA site of each adapted base tensor, checked against the base before anything is written.
  std::map<std::string, const LoraAdapter*> sites;
  for (const int layer : set.layers())
    for (const std::string& target : lora_target_names()) {
      const model::WeightKind kind = lora_target_kind(target);
      const LoraAdapter* ad = set.lora(layer, kind);
      if (!ad) continue;
      const std::string name = model::weight_name(kind, layer);
      const io::TensorInfo& info = base.info(name);
      const fs::path& file = base.file_of(name).path();
      ADAPT_REQUIRE(info.shape == Shape({ad->out(), ad->in()}), ShapeError,
                    "'{}': tensor '{}' has shape {} but the LoRA adapter in '{}' expects ({}, {}) (hint: maybe wrong "
                    "base model?)",
                    file.string(), name, info.shape.str(), adapter_dir.string(), ad->out(), ad->in());
      ADAPT_REQUIRE(info.dtype && is_float(*info.dtype), UnsupportedError,
                    "'{}': tensor '{}' is stored as {}; LoRA merges into BF16, F16 or F32 weights only", file.string(),
                    name, info.dtype_name);
      sites[name] = ad;
    }

  const fs::path tmp = out.parent_path() / fmt::format(".{}.tmp", out.filename().string());
  MergeReport report;
  std::error_code ec;
  fs::remove_all(tmp, ec);  // left by a merge that was killed
  fs::create_directories(tmp, ec);
  ADAPT_REQUIRE(!ec, IoError, "cannot create the folder '{}': {}", tmp.string(), ec.message());
  try {
    for (const auto& file : base.files()) {
      std::vector<io::TensorSource> sources;
      for (const io::TensorInfo& info : file->tensors()) {
        ADAPT_REQUIRE(info.dtype.has_value(), UnsupportedError,
                      "'{}': tensor '{}' is stored as {}, which adapt cannot copy into the merged model",
                      file->path().string(), info.name, info.dtype_name);
        io::TensorSource src{.name = info.name, .dtype = *info.dtype, .shape = info.shape, .fill = {}};
        const io::SafetensorsFile* f = file.get();
        const auto it = sites.find(info.name);
        if (it == sites.end()) {
          src.fill = [f, name = info.name, bytes = info.size_bytes()](void* dst) {
            f->read_bytes(name, 0, bytes, dst);
          };
        } else {
          src.fill = [f, name = info.name, dtype = *info.dtype, ad = it->second](void* dst) {
            Tensor w = f->read(name, DType::F32);
            ad->merge_into(w, +1.0);
            dtype_convert(dst, dtype, w.raw(), DType::F32, w.numel());
          };
          ++report.n_sites;
        }
        report.bytes += info.size_bytes();
        sources.push_back(std::move(src));
      }
      const fs::path name = file->path().filename();
      io::safetensors_write(tmp / name, sources, file->metadata());
      report.shards.push_back(out / name);
    }
    ADAPT_CHECK(report.n_sites == static_cast<std::int64_t>(sites.size()), "merged {} of {} LoRA sites", report.n_sites,
                sites.size());
    // The index of a sharded base holds the same weight_map and total_size for the merged shards.
    std::vector<const char*> names(std::begin(kCopiedFiles), std::end(kCopiedFiles));
    names.push_back(kIndexFile);
    for (const char* name : names) {
      if (!fs::is_regular_file(base_dir / name)) continue;
      file_write_atomic(tmp / name, file_read_text(base_dir / name));
      report.copied.push_back(out / name);
    }
    commit(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return report;
}

}  // namespace adapt::adapters
