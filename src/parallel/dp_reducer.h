// Data-parallel gradient reduction: averaging a flat f32 gradient vector over the dp group bucket by
// bucket (so a bucket can go as soon as the backward pass has filled it), and the two collectives of
// ZeRO-1, where each dp rank keeps optimizer state for one shard only (zero_partition.h): a
// reduce-scatter that leaves each rank the average of its shard, and an all-gather of the updated
// shards. Host buffers (MPI) or device buffers (NCCL), as the communicator takes them.
#pragma once

#include <span>
#include <vector>

#include "comm/communicator.h"
#include "parallel/zero_partition.h"

namespace adapt::parallel {

/// grads becomes its average over dp: one all-reduce per bucket, then a scale by 1/dp. The buckets
/// (gradient_buckets) cover grads exactly. Called by all ranks of `dp` with the same buckets.
void dp_average_gradients(std::span<float> grads, const std::vector<GradBucket>& buckets, comm::Communicator& dp);

/// ZeRO-1 gradient step: grads_padded (dp_size × c, c = zero_shard_count, the tail past the real
/// parameters zero) is reduced over dp; shard (c) receives the average of block dp_rank. Called by
/// all ranks of `dp`.
void zero1_reduce_scatter_average(std::span<const float> grads_padded, std::span<float> shard, comm::Communicator& dp);

/// ZeRO-1 parameter step: every rank's updated shard (c) lands in params_padded (dp_size × c), in dp
/// rank order. Called by all ranks of `dp`.
void zero1_all_gather(std::span<const float> shard, std::span<float> params_padded, comm::Communicator& dp);

/// The ZeRO-1 gradient step over the units of `layout` (zero1_layout): each unit's part of
/// grads_padded (layout.padded) reduce-scattered and averaged into this rank's chunk of shard
/// (layout.shard). Called by all ranks of `dp` (layout.dp_size ranks).
void zero1_reduce_scatter_average(std::span<const float> grads_padded, std::span<float> shard,
                                  const Zero1Layout& layout, comm::Communicator& dp);

/// The ZeRO-1 parameter step of unit `unit` of `layout`: every rank's chunk of it in shard
/// (layout.shard) lands in its place in params_padded (layout.padded). Called by all ranks of `dp`.
void zero1_all_gather(std::span<const float> shard, std::span<float> params_padded, const Zero1Layout& layout,
                      std::size_t unit, comm::Communicator& dp);

}  // namespace adapt::parallel
