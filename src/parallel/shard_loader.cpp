#include "parallel/shard_loader.h"

#include "core/error.h"

namespace adapt::parallel {

Tensor shard_read(const io::ShardedSafetensors& files, std::string_view name, const TensorSlice& slice, DType as) {
  const io::TensorInfo& info = files.info(name);
  ADAPT_REQUIRE(info.shape == slice.global, ShapeError,
                "{}: tensor '{}' has shape {} but the model's config.json implies {}. The weights and config.json come "
                "from different models.",
                files.file_of(name).path().string(), name, info.shape.str(), slice.global.str());
  switch (slice.dim) {
    case ShardDim::None: return files.read(name, as);
    case ShardDim::Rows: return files.read_rows(name, slice.range.begin, slice.range.count, as);
    case ShardDim::Cols: return files.read_cols(name, slice.range.begin, slice.range.count, as);
  }
  return {};
}

std::vector<LoadedShard> llama_rank_load(const io::ShardedSafetensors& files, const LlamaDims& dims,
                                         const comm::ProcessGrid& grid, int world_rank, const TensorNamer& name_of,
                                         DType as, ShardLoadStats* stats, StageSplit split) {
  const std::uint64_t before = files.bytes_read();
  std::uint64_t share = 0;
  std::vector<LoadedShard> out;
  for (const TensorShard& s : llama_rank_shards(dims, grid, world_rank, split)) {
    std::string name = name_of(s.tensor, s.layer);
    Tensor t = shard_read(files, name, s.slice, s.slice.global.rank() == 2 ? as : DType::F32);
    t.set_name(name);
    const io::TensorInfo& info = files.info(name);
    if (info.shape.numel() > 0) share += info.size_bytes() / info.shape.numel() * s.slice.numel();
    out.push_back({.shard = s, .name = std::move(name), .value = std::move(t)});
  }
  if (stats) {
    stats->bytes_read = files.bytes_read() - before;
    stats->bytes_share = share;
  }
  return out;
}

}  // namespace adapt::parallel
