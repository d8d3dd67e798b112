// The sharded loader, run for every rank of tp2, pp2 and tp2×pp2 grids (a loop over ranks, no MPI) on
// a random model folder: every loaded slice equals the same slice of a full load, and the bytes each
// rank read (the reader's counters) equal its share: the stored bytes of its stage's tensors, divided
// by tp for the sharded ones.
#include "parallel/shard_loader.h"

#include <doctest/doctest.h>

#include <map>

#include "core/error.h"
#include "io/sharded.h"
#include "model/llama_config.h"
#include "model/model_folder.h"
#include "model/tensor_parallel.h"
#include "model/weight_names.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::parallel;

namespace {

model::WeightKind weight_kind(LlamaTensor t) {
  switch (t) {
    case LlamaTensor::Embedding: return model::WeightKind::Embedding;
    case LlamaTensor::AttnNorm: return model::WeightKind::AttnNorm;
    case LlamaTensor::Wq: return model::WeightKind::Wq;
    case LlamaTensor::Wk: return model::WeightKind::Wk;
    case LlamaTensor::Wv: return model::WeightKind::Wv;
    case LlamaTensor::Wo: return model::WeightKind::Wo;
    case LlamaTensor::FfnNorm: return model::WeightKind::FfnNorm;
    case LlamaTensor::WGate: return model::WeightKind::WGate;
    case LlamaTensor::WUp: return model::WeightKind::WUp;
    case LlamaTensor::WDown: return model::WeightKind::WDown;
    case LlamaTensor::BiasQ: return model::WeightKind::BiasQ;
    case LlamaTensor::BiasK: return model::WeightKind::BiasK;
    case LlamaTensor::BiasV: return model::WeightKind::BiasV;
    case LlamaTensor::BiasO: return model::WeightKind::BiasO;
    case LlamaTensor::BiasGate: return model::WeightKind::BiasGate;
    case LlamaTensor::BiasUp: return model::WeightKind::BiasUp;
    case LlamaTensor::BiasDown: return model::WeightKind::BiasDown;
    case LlamaTensor::FinalNorm: return model::WeightKind::FinalNorm;
    case LlamaTensor::LmHead: return model::WeightKind::LmHead;
  }
  return model::WeightKind::Embedding;
}

std::string hf_name(LlamaTensor t, int layer) { return model::weight_name(weight_kind(t), layer); }

model::LlamaConfig tiny_config(bool tied) {
  model::LlamaConfig c = model::llama_config_preset("tiny");
  c.n_layers = 3;  // two stages hold 2 and 1 layers
  c.tie_word_embeddings = tied;
  c.attention_bias = !tied;  // biases exercised by one of the two models
  c.mlp_bias = !tied;
  return c;
}

// Element (i, j) of the slice, read from the full (rows, cols) or (n) tensor.
float full_at(const Tensor& full, const TensorSlice& s, std::int64_t i, std::int64_t j) {
  const float* p = full.data<float>();
  const std::int64_t cols = full.rank() == 2 ? full.dim(1) : 1;
  if (s.dim == ShardDim::Rows) return p[(s.range.begin + i) * cols + j];
  if (s.dim == ShardDim::Cols) return p[i * cols + s.range.begin + j];
  return p[i * cols + j];
}

void check_grid(const std::filesystem::path& dir, const model::LlamaConfig& cfg, const comm::ProcessGrid& grid) {
  CAPTURE(grid.str());
  const LlamaDims dims = model::llama_dims(cfg);
  io::ShardedSafetensors files(dir);
  REQUIRE(files.files().size() > 1);  // the folder is sharded
  std::map<std::string, Tensor> full;
  for (const std::string& name : files.tensor_names()) full[name] = files.read(name, DType::F32);
  std::uint64_t all_ranks = 0;
  for (int w = 0; w < grid.world_size(); ++w) {
    CAPTURE(w);
    const comm::GridCoord c = grid.coord(w);
    ShardLoadStats stats;
    const std::vector<LoadedShard> loaded = llama_rank_load(files, dims, grid, w, hf_name, DType::F32, &stats);
    std::uint64_t share = 0;
    for (const LoadedShard& l : loaded) {
      CAPTURE(l.name);
      const Tensor& f = full.at(l.name);
      const TensorSlice& s = l.shard.slice;
      REQUIRE(l.value.shape() == s.local_shape());
      CHECK(l.value.name() == l.name);
      const std::int64_t rows = l.value.dim(0), cols = l.value.rank() == 2 ? l.value.dim(1) : 1;
      const float* v = l.value.data<float>();
      std::int64_t mismatches = 0;
      for (std::int64_t i = 0; i < rows; ++i) {
        for (std::int64_t j = 0; j < cols; ++j) mismatches += v[i * cols + j] != full_at(f, s, i, j);
      }
      CHECK(mismatches == 0);
      // The share, from the tensor's stored size: sharded tensors split evenly over tp in this model.
      const std::uint64_t stored = files.info(l.name).size_bytes();
      share += s.dim == ShardDim::None ? stored : stored / static_cast<std::uint64_t>(grid.tp_size());
      CHECK(l.value.numel() * (s.dim == ShardDim::None ? 1 : grid.tp_size()) == f.numel());
    }
    // What this rank's stage must hold, counted from the config.
    const Range layers = stage_layers(cfg.n_layers, grid.pp_size(), c.pp);
    const std::size_t per_layer = 9 + (cfg.attention_bias ? 4 : 0) + (cfg.mlp_bias ? 3 : 0);
    const bool first = c.pp == 0, last = c.pp == grid.pp_size() - 1, tied = cfg.tie_word_embeddings;
    const std::size_t model_level = (first ? 1 : 0) + (last ? 1 : 0) + (last && !tied ? 1 : 0) +
                                    (last && tied && !first ? 1 : 0);  // embedding, norm, lm_head, tied lm_head
    CHECK(loaded.size() == per_layer * static_cast<std::size_t>(layers.count) + model_level);
    CHECK(stats.bytes_read == share);
    CHECK(stats.bytes_share == share);
    all_ranks += stats.bytes_read;
  }
  // Over the whole grid each sharded tensor is read once per dp replica (tied embeddings twice with
  // pp > 1), each replicated one (norms, biases added after the all-reduce) once per tp rank too.
  std::uint64_t total = 0;
  for (const std::string& name : files.tensor_names()) {
    const bool replicated =
        name.ends_with("norm.weight") || name.ends_with("o_proj.bias") || name.ends_with("down_proj.bias");
    total += files.info(name).size_bytes() * (replicated ? static_cast<std::uint64_t>(grid.tp_size()) : 1);
  }
  if (cfg.tie_word_embeddings && grid.pp_size() > 1) total += files.info("model.embed_tokens.weight").size_bytes();
  CHECK(all_ranks == total * static_cast<std::uint64_t>(grid.dp_size()));
}

}  // namespace

TEST_CASE("each rank of tp2, pp2 and tp2×pp2 loads exactly its slices and reads only their bytes") {
  for (bool tied : {false, true}) {
    CAPTURE(tied);
    test::TempDir dir("adapt-shard-load");
    const model::LlamaConfig cfg = tiny_config(tied);
    model::RandomModelOptions opts;
    opts.seed = test::kSeed;
    opts.max_shard_bytes = 60'000;  // several shards
    model::random_model_write(dir.path(), cfg, opts);
    check_grid(dir.path(), cfg, comm::ProcessGrid(2, 1, 1));
    check_grid(dir.path(), cfg, comm::ProcessGrid(1, 2, 1));
    check_grid(dir.path(), cfg, comm::ProcessGrid(2, 2, 1));
    check_grid(dir.path(), cfg, comm::ProcessGrid(2, 2, 2));
  }
}

TEST_CASE("a model folder that does not match the shape is a ShapeError naming the tensor") {
  test::TempDir dir("adapt-shard-load");
  model::LlamaConfig cfg = tiny_config(false);
  model::random_model_write(dir.path(), cfg, {});
  io::ShardedSafetensors files(dir.path());
  LlamaDims dims = model::llama_dims(cfg);
  dims.intermediate = 128;
  CHECK_THROWS_WITH_AS(llama_rank_load(files, dims, comm::ProcessGrid(2, 1, 1), 0, hf_name, DType::F32),
                       doctest::Contains("tensor 'model.layers.0.mlp.gate_proj.weight' has shape (176, 64)"),
                       ShapeError);
}
