// Data-parallel partitions: the ZeRO-1 split of a flat parameter vector over the dp group (rank r
// updates and keeps optimizer state for one contiguous shard; as llm.c's multi_gpu_get_shard_offset),
// and the grouping of parameters into gradient buckets that are reduced as soon as they are complete.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/shard_spec.h"

namespace adapt::parallel {

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

}  // namespace adapt::parallel
