// ShardSpec: how a tensor is split over a group (which dimension, in whole blocks of how many
// elements), and the slice a rank owns. Splits are balanced: with n blocks over p parts, the first
// n % p parts get one block more, so uneven vocabularies and FFN widths still shard.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/shape.h"

namespace adapt::parallel {

/// [begin, begin + count).
struct Range {
  std::int64_t begin = 0;
  std::int64_t count = 0;
  std::int64_t end() const { return begin + count; }
  friend bool operator==(const Range&, const Range&) = default;
};

/// Part `index` of `n` elements split over `parts` in whole blocks of `block` elements (n must be a
/// multiple of block). InternalError on bad arguments.
Range split_range(std::int64_t n, std::int64_t block, int parts, int index);

/// The split dimension: none (every rank holds the whole tensor), 0 (rows: output features of a
/// column-parallel weight, the vocabulary of the embedding) or 1 (columns: input features of a
/// row-parallel weight).
enum class ShardDim { None, Rows, Cols };

struct ShardSpec {
  ShardDim dim = ShardDim::None;
  std::int64_t block = 1;  // split in whole blocks, e.g. head_dim so that a head is never cut
  friend bool operator==(const ShardSpec&, const ShardSpec&) = default;
};

/// The part of a tensor one rank holds: `range` along `dim` (the whole extent when dim is None).
struct TensorSlice {
  Shape global;  // the full tensor's shape
  ShardDim dim = ShardDim::None;
  Range range;  // along dim; [0, global[0]) when dim is None
  /// The shape of the part held.
  Shape local_shape() const;
  std::int64_t numel() const { return local_shape().numel(); }
  std::string str() const;  // "(1024, 64) rows [512, 1024)"
};

/// The slice of a tensor of shape `global` that part `index` of `parts` holds under `spec`.
/// InternalError when the split dimension does not exist or is not a multiple of the block.
TensorSlice shard_slice(const Shape& global, const ShardSpec& spec, int parts, int index);

}  // namespace adapt::parallel
