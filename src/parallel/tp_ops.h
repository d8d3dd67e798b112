// The tensor-parallel ops with their collectives placed (Megatron): column/row-parallel linear,
// vocab-parallel embedding and vocab-parallel cross-entropy. Every rank holds its ShardSpec slice of
// the weight (llama_sharding.h); the results equal the single-rank ops up to summation order.
// Every function here is called by all ranks of the tp group, in the same order. Tensors may be host
// tensors or CUDA device tensors (a model on a GPU); device tensors reach the communicator as device
// buffers (NCCL takes them, MPI stages them through host memory), host tensors as host buffers.
#pragma once

#include <span>

#include "comm/communicator.h"
#include "ops/cross_entropy.h"
#include "parallel/shard_spec.h"
#include "tensor/tensor.h"

namespace adapt::parallel {

/// y = x · w_localᵀ. Column-parallel (split = Rows): w_local (out/tp, in), x (N, in) whole, y (N, out/tp)
/// the rank's output features; no collective. Row-parallel (split = Cols): w_local (out, in/tp), x
/// (N, in/tp) the rank's input features, y (N, out) all-reduced over tp (add a bias after this).
void tp_linear_forward(Tensor& y, const Tensor& x, const Tensor& w_local, ShardDim split, comm::Communicator& tp);

/// dx = dy · w_local. Column-parallel: dy (N, out/tp), dx (N, in) all-reduced over tp. Row-parallel:
/// dy (N, out) whole, dx (N, in/tp) the rank's input features; no collective.
void tp_linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& w_local, ShardDim split,
                              comm::Communicator& tp);

/// out (.., C) f32 = table[ids]: table_shard (V/tp, C) f32 or bf16 holds the vocabulary rows `vocab`;
/// each rank writes the rows of its ids and zeros elsewhere, then one all-reduce over tp. ShapeError
/// for an id outside [0, vocab_size) (checked on the host before the all-reduce). out and the table on
/// one device (host or CUDA); ids i32/i64 anywhere (copied where they are needed).
void vocab_parallel_embedding_forward(Tensor& out, const Tensor& table_shard, const Range& vocab,
                                      std::int64_t vocab_size, const Tensor& ids, comm::Communicator& tp);

/// Cross-entropy over logits split by vocabulary: logits (N, V/tp) f32 contiguous hold entries `vocab`
/// of each row, targets (N) i32/i64 are global ids (or opts.ignore_index), on any device. Three
/// all-reduces of N values over tp (row max, Σ exp, the target's logit): in f64 for Σ exp and the
/// target's logit on the host, in f32 on a CUDA device (kernels/cross_entropy.h). Returns the loss sum and the valid
/// rows over the whole vocabulary (the same on every rank); with opts.grad the local logits become the rank's slice of
/// (softmax − onehot) · grad_scale, as ops::cross_entropy_forward_backward writes.
ops::CrossEntropyResult vocab_parallel_cross_entropy(Tensor& logits, const Tensor& targets, const Range& vocab,
                                                     std::int64_t vocab_size, comm::Communicator& tp,
                                                     const ops::CrossEntropyOptions& opts = {});

/// The part `slice` of `full` (its global shape) as a new contiguous f32 tensor: what a rank keeps of
/// a tensor that every rank holds whole (an adapter initialised or loaded whole, then sharded).
Tensor shard_take(const Tensor& full, const TensorSlice& slice);

/// full = every rank's `local` of the tp group put side by side along `dim` in rank order (Rows: the
/// first dimension, Cols: the last), the inverse of shard_take over the parts split_range gives, whose
/// sizes may differ by a block. f32 contiguous tensors, each on the host or a CUDA device (a device
/// part is gathered in device buffers and put together on the host); `full` has local's shape but for
/// the extent along `dim`, which must be the sum of the parts. Two all-gathers (the parts' extents,
/// then the data padded to the largest part). With one rank a copy.
void tp_gather(Tensor& full, const Tensor& local, ShardDim dim, comm::Communicator& tp);

/// In place: `values` (host memory) become their element-wise reduction over `group`. For a model on
/// a CUDA device (`device`) they travel through a device buffer, as an NCCL communicator needs;
/// with a host device they go as they are. Called by every rank of the group.
void all_reduce_host_values(comm::Communicator& group, std::span<double> values, comm::ReduceOp op, Device device);

}  // namespace adapt::parallel
