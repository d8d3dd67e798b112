#include "parallel/shard_spec.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace adapt::parallel {

Range split_range(std::int64_t n, std::int64_t block, int parts, int index) {
  ADAPT_CHECK(block >= 1 && n >= 0 && n % block == 0, "split of {} elements in blocks of {}", n, block);
  ADAPT_CHECK(parts >= 1 && index >= 0 && index < parts, "part {} of {}", index, parts);
  const std::int64_t blocks = n / block, base = blocks / parts, extra = blocks % parts;
  const std::int64_t first = index * base + std::min<std::int64_t>(index, extra);
  const std::int64_t mine = base + (index < extra ? 1 : 0);
  return {.begin = first * block, .count = mine * block};
}

Shape TensorSlice::local_shape() const {
  if (dim == ShardDim::None) return global;
  Shape local = global;
  local[dim == ShardDim::Rows ? 0 : 1] = range.count;
  return local;
}

std::string TensorSlice::str() const {
  if (dim == ShardDim::None) return fmt::format("{} whole", global.str());
  return fmt::format("{} {} [{}, {})", global.str(), dim == ShardDim::Rows ? "rows" : "cols", range.begin, range.end());
}

TensorSlice shard_slice(const Shape& global, const ShardSpec& spec, int parts, int index) {
  TensorSlice s{.global = global, .dim = spec.dim, .range = {}};
  if (spec.dim == ShardDim::None) {
    s.range = {.begin = 0, .count = global.rank() > 0 ? global[0] : 1};
    return s;
  }
  const int d = spec.dim == ShardDim::Rows ? 0 : 1;
  ADAPT_CHECK(global.rank() > d, "{} split on dimension {} of a {}-D tensor {}",
              spec.dim == ShardDim::Rows ? "row" : "column", d, global.rank(), global.str());
  s.range = split_range(global[d], spec.block, parts, index);
  return s;
}

}  // namespace adapt::parallel
