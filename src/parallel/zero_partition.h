// Data-parallel partitions: the ZeRO-1 split of a flat parameter vector over the dp group (rank r
// updates and keeps optimizer state for one contiguous shard; as llm.c's multi_gpu_get_shard_offset),
// the grouping of parameters into gradient buckets that are reduced as soon as they are complete, and
// the ZeRO-1 layout by units (buckets of whole decoder layers, each split over dp on its own) that
// lets a unit's all-gather run as soon as every rank has updated its part of it.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/shard_spec.h"

namespace adapt::parallel {

/// Elements per bucket of the data-parallel gradient collectives (16 MiB of f32): large enough to keep
/// the collectives few, small enough that a bucket can leave while the backward fills the next.
/// train::DpOptimizer's default, and what adapt_plan counts with.
inline constexpr std::int64_t kDpBucketElems = std::int64_t{1} << 22;

/// Elements per dp rank in the padded flat vector: ceil(n / dp_size) rounded up to `align`. The
/// reduce-scatter of gradients runs on dp_size × this count (the tail padded with zeros).
std::int64_t zero_shard_count(std::int64_t n, int dp_size, std::int64_t align = 16);

/// The real elements of [0, n) that `dp_rank` owns: [r·c, min((r+1)·c, n)) with c = zero_shard_count;
/// empty (count 0) for ranks past the end.
Range zero_shard(std::int64_t n, int dp_size, int dp_rank, std::int64_t align = 16);

/// Consecutive parameters whose gradients are reduced together.
struct GradBucket {
  int first_param = 0;
  int n_params = 0;
  Range elems;  // in the flat gradient vector
};

/// Groups parameters (their element counts, in flat-vector order) into buckets of at least
/// `bucket_elems` elements (the last may be smaller); a parameter is never split across buckets.
std::vector<GradBucket> gradient_buckets(const std::vector<std::int64_t>& param_numels, std::int64_t bucket_elems);

/// One unit of the ZeRO-1 layout: whole groups (decoder layers) [first_group, first_group + n_groups),
/// their real elements `elems` of the flat vector, split over dp in chunks of `chunk` elements (the
/// last rank's chunk padded with zeros). In the padded vector the unit is dp × chunk elements from
/// `padded_begin`, rank r's chunk at padded_begin + r·chunk; in each rank's shard vector its chunk is at
/// `shard_begin`.
struct Zero1Unit {
  int first_group = 0;
  int n_groups = 0;
  Range elems;
  std::int64_t chunk = 0;
  std::int64_t padded_begin = 0;
  std::int64_t shard_begin = 0;
  /// The real elements of the flat vector in dp rank r's chunk (possibly empty).
  Range owned(int dp_rank) const;
};

struct Zero1Layout {
  int dp_size = 1;
  std::vector<Zero1Unit> units;
  std::int64_t padded = 0;  // Σ dp × chunk: the reduce-scatter's input, the all-gather's output
  std::int64_t shard = 0;   // Σ chunk: the elements of each rank's optimizer state
};

/// The ZeRO-1 layout of a flat vector made of groups of `group_numels` elements (in flat order) that
/// must not be split between units: units of whole groups up to `bucket_elems` (as gradient_buckets
/// groups parameters), each split over `dp_size` ranks in chunks of zero_shard_count(unit, dp, align).
/// With one unit it is the plain contiguous split of zero_shard.
Zero1Layout zero1_layout(const std::vector<std::int64_t>& group_numels, std::int64_t bucket_elems, int dp_size,
                         std::int64_t align = 16);

}  // namespace adapt::parallel
