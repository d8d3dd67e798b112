// Model folders in HF layout: making a random-weight Llama (config.json, generation_config.json,
// sharded safetensors with the index) and checking a folder against its config before a long job.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/llama_config.h"

namespace adapt::model {

struct RandomModelOptions {
  std::uint64_t seed = 0;
  DType dtype = DType::BF16;                         // storage dtype of the weights
  std::uint64_t max_shard_bytes = 5'000'000'000ull;  // HF's default "5GB"
};

/// Writes config.json, generation_config.json and the weights of a random Llama: every matrix
/// ~ N(0, initializer_range^2), norms 1, biases 0. Deterministic per (seed, tensor name), independent
/// of thread count. Streams tensor by tensor, so memory stays at one tensor. The tokenizer is
/// written separately (tokenizer/).
void random_model_write(const fs::path& dir, const LlamaConfig& cfg, const RandomModelOptions& opts);

/// Fills `n` floats with N(0, std^2) values from the stream keyed by (seed, key); element i depends
/// only on (seed, key, i).
void fill_normal(float* out, std::int64_t n, float std, std::uint64_t seed, std::uint64_t key);

struct ModelCheckReport {
  LlamaConfig config;
  ParamCounts expected;  // from config.json
  std::int64_t params_in_files = 0;
  std::uint64_t data_bytes = 0;     // tensor bytes over all shards
  std::uint64_t file_bytes = 0;     // shard file sizes
  std::vector<std::string> dtypes;  // distinct dtypes of the weights
  std::vector<fs::path> shards;
  std::vector<std::string> notes;  // non-fatal observations (ignored tensors, dtype differences)
};

/// Validates a model folder: config.json, the index and every shard (headers, sizes), and every
/// tensor's presence, shape and dtype against the config. Reads headers only (fast on 140 GB).
/// Throws IoError / ConfigError / ShapeError naming the file and tensor on the first problem.
ModelCheckReport model_check(const fs::path& dir);

}  // namespace adapt::model
