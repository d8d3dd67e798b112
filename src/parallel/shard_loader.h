// Loading a rank's shards of the base weights: only the byte ranges of its slices are read (a row
// slice is one contiguous range, a column slice the same columns of every row), through
// io::ShardedSafetensors, whose counters say how many bytes each rank read.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "io/sharded.h"
#include "parallel/llama_sharding.h"
#include "tensor/tensor.h"

namespace adapt::parallel {

/// The part `slice` of tensor `name`, converted to `as`. ShapeError (naming the file and tensor) when
/// the stored shape is not slice.global; IoError when the tensor is missing.
Tensor shard_read(const io::ShardedSafetensors& files, std::string_view name, const TensorSlice& slice, DType as);

/// The checkpoint name of a base tensor (model::weight_name provides it for HF folders).
using TensorNamer = std::function<std::string(LlamaTensor tensor, int layer)>;

struct LoadedShard {
  TensorShard shard;
  std::string name;
  Tensor value;  // slice.local_shape(); matrices in dtype `as`, vectors (norms, biases) in f32
};

struct ShardLoadStats {
  std::uint64_t bytes_read = 0;   // tensor bytes read from the files for this call
  std::uint64_t bytes_share = 0;  // the stored bytes of the slices (what should be read)
};

/// Reads every shard llama_rank_shards(dims, grid, world_rank, split) lists, in that order: matrices
/// converted to `as` (bf16 rounds to nearest even), vectors (norms, biases) to f32.
std::vector<LoadedShard> llama_rank_load(const io::ShardedSafetensors& files, const LlamaDims& dims,
                                         const comm::ProcessGrid& grid, int world_rank, const TensorNamer& name_of,
                                         DType as, ShardLoadStats* stats = nullptr,
                                         StageSplit split = StageSplit::Even);

}  // namespace adapt::parallel
