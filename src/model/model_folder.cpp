#include "model/model_folder.h"

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/safetensors_writer.h"
#include "io/sharded.h"
#include "model/weight_names.h"

namespace adapt::model {

namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// xoshiro256+ seeded from splitmix64: fast, good enough for initial weights.
struct Xoshiro {
  std::uint64_t s[4];
  explicit Xoshiro(std::uint64_t seed) {
    for (auto& v : s) v = splitmix64(seed);
  }
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t next() {
    const std::uint64_t r = s[0] + s[3], t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
  }
  float uniform01() { return static_cast<float>((next() >> 40) + 1) * (1.0f / 16777217.0f); }  // (0, 1]
};

constexpr std::int64_t kChunk = 1 << 16;

}  // namespace

void fill_normal(float* out, std::int64_t n, float std, std::uint64_t seed, std::uint64_t key) {
  const std::int64_t n_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    std::uint64_t mix = seed ^ (key * 0x9e3779b97f4a7c15ull) ^ (static_cast<std::uint64_t>(c) << 32);
    Xoshiro rng(splitmix64(mix));
    const std::int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    for (std::int64_t i = begin; i < end; i += 2) {  // Box-Muller: two normals per pair of uniforms
      const float u1 = rng.uniform01(), u2 = rng.uniform01();
      const float r = std * std::sqrt(-2.0f * std::log(u1));
      const float theta = 6.283185307179586f * u2;
      out[i] = r * std::cos(theta);
      if (i + 1 < end) out[i + 1] = r * std::sin(theta);
    }
  }
}

void random_model_write(const fs::path& dir, const LlamaConfig& cfg, const RandomModelOptions& opts) {
  cfg.validate("the requested model");
  fs::create_directories(dir);
  std::vector<io::TensorSource> sources;
  for (const WeightSpec& w : llama_weight_specs(cfg)) {
    io::TensorSource src;
    src.name = w.name;
    src.dtype = opts.dtype;
    src.shape = w.shape;
    const float std_dev = static_cast<float>(cfg.initializer_range);
    const DType dtype = opts.dtype;
    const std::uint64_t seed = opts.seed, key = fnv1a(w.name);
    const bool is_norm = w.is_norm(), is_bias = w.is_bias();
    src.fill = [=](void* dst) {
      const std::int64_t n = w.shape.numel();
      // Generate in f32 slabs and convert, so a 2 GB bf16 embedding needs no 4 GB f32 copy.
      std::vector<float> slab(static_cast<std::size_t>(std::min<std::int64_t>(n, 1 << 24)));
      for (std::int64_t off = 0; off < n; off += static_cast<std::int64_t>(slab.size())) {
        const std::int64_t m = std::min<std::int64_t>(static_cast<std::int64_t>(slab.size()), n - off);
        if (is_norm) {
          std::fill_n(slab.data(), m, 1.0f);
        } else if (is_bias) {
          std::fill_n(slab.data(), m, 0.0f);
        } else {
          // Element i of the tensor depends on (seed, name, i) only: slabs are aligned to chunks.
          fill_normal(slab.data(), m, std_dev, seed ^ static_cast<std::uint64_t>(off / kChunk) * 0x632be59bd9b4e019ull,
                      key);
        }
        dtype_convert(static_cast<char*>(dst) + off * static_cast<std::int64_t>(dtype_size(dtype)), dtype, slab.data(),
                      DType::F32, m);
      }
    };
    sources.push_back(std::move(src));
  }
  LlamaConfig written = cfg;
  written.torch_dtype = opts.dtype;
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  io::safetensors_write_sharded(dir, sources, opts.max_shard_bytes, meta);

  nlohmann::json gen;
  gen["_from_model_config"] = true;
  gen["bos_token_id"] = cfg.bos_token_id;
  gen["eos_token_id"] = cfg.eos_token_ids;
  gen["do_sample"] = true;
  gen["temperature"] = 0.6;
  gen["top_p"] = 0.9;
  file_write_atomic(dir / "generation_config.json", gen.dump(2) + "\n");
  // config.json last: a folder with a config.json is complete.
  file_write_atomic(dir / "config.json", llama_config_to_json(written));
}

ModelCheckReport model_check(const fs::path& dir) {
  ADAPT_REQUIRE(fs::is_directory(dir), IoError,
                "'{}' is not a folder; pass the model folder (the one holding "
                "config.json and the *.safetensors files)",
                dir.string());
  ModelCheckReport r;
  r.config = llama_config_load(dir);
  r.expected = llama_param_counts(r.config);
  io::ShardedSafetensors weights(dir);
  for (const auto& f : weights.files()) {
    r.shards.push_back(f->path());
    r.file_bytes += fs::file_size(f->path());
  }
  const std::string cfg_path = (dir / "config.json").string();
  std::set<std::string> expected_names;
  std::set<std::string> dtypes;
  for (const WeightSpec& w : llama_weight_specs(r.config)) {
    expected_names.insert(w.name);
    const io::TensorInfo* t = weights.find(w.name);
    if (!t && w.kind == WeightKind::LmHead) {
      ADAPT_THROW(IoError,
                  "{}: tensor 'lm_head.weight' is missing, but {} says tie_word_embeddings = false. Either the "
                  "download is incomplete or the model ties its embeddings (then set \"tie_word_embeddings\": true).",
                  dir.string(), cfg_path);
    }
    ADAPT_REQUIRE(t != nullptr, IoError,
                  "{}: tensor '{}' {} is missing from the weights{}. The download may be "
                  "incomplete, or config.json (num_hidden_layers = {}) does not belong to these weights.",
                  dir.string(), w.name, w.shape.str(),
                  weights.files().size() > 1 ? " and from model.safetensors.index.json" : "", r.config.n_layers);
    ADAPT_REQUIRE(t->shape == w.shape, ShapeError,
                  "{}: tensor '{}' has shape {} but {} implies {}. The weights and "
                  "config.json come from different models.",
                  weights.file_of(w.name).path().string(), w.name, t->shape.str(), cfg_path, w.shape.str());
    ADAPT_REQUIRE(t->dtype && is_float(*t->dtype), IoError,
                  "{}: tensor '{}' is stored as {}; adapt reads base weights in BF16, F16 or F32",
                  weights.file_of(w.name).path().string(), w.name, t->dtype_name);
    dtypes.insert(t->dtype_name);
    r.params_in_files += t->shape.numel();
    r.data_bytes += t->size_bytes();
  }
  for (const std::string& name : weights.tensor_names()) {
    if (expected_names.count(name)) continue;
    if (weight_name_ignored(name)) {
      r.notes.push_back(fmt::format("ignored tensor '{}' (recomputed from the config)", name));
      continue;
    }
    if (name == "lm_head.weight" && r.config.tie_word_embeddings) {
      r.notes.push_back("'lm_head.weight' is present although tie_word_embeddings = true; it is ignored");
      continue;
    }
    ADAPT_THROW(IoError,
                "{}: unexpected tensor '{}' in {}: not part of a LlamaForCausalLM with this config.json "
                "(attention_bias = {}, mlp_bias = {}, {} layers). The weights and config.json come from different "
                "models.",
                dir.string(), name, weights.file_of(name).path().filename().string(), r.config.attention_bias,
                r.config.mlp_bias, r.config.n_layers);
  }
  if (auto total = weights.index_total_size(); total && *total != r.data_bytes) {
    r.notes.push_back(fmt::format("model.safetensors.index.json says total_size = {} but the tensors hold {} bytes",
                                  *total, r.data_bytes));
  }
  r.dtypes.assign(dtypes.begin(), dtypes.end());
  const std::string want = r.config.torch_dtype == DType::BF16  ? "BF16"
                           : r.config.torch_dtype == DType::F16 ? "F16"
                                                                : "F32";
  if (r.dtypes.size() != 1 || r.dtypes[0] != want) {
    r.notes.push_back(fmt::format("config.json says torch_dtype {} but the weights are stored as {}",
                                  dtype_name(r.config.torch_dtype), fmt::join(r.dtypes, ", ")));
  }
  return r;
}

}  // namespace adapt::model
