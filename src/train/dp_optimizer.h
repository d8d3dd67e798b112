// DpOptimizer: AdamW over the adapter parameters of one data-parallel replica, with the gradients
// reduced over the dp group. Every replica ends each step with the same adapter weights.
//   zero1 = false: the flat gradient vector is averaged bucket by bucket (parallel::dp_average_gradients),
//     clipped by its global norm, and every replica updates every parameter;
//   zero1 = true (ZeRO stage 1): the gradients are reduce-scattered (parallel::zero1_reduce_scatter_average),
//     each replica keeps AdamW's moments and master weights for its shard of the flat vector
//     (parallel::zero_shard) only, updates it, and the shards are all-gathered into the adapter.
// The global norm is the norm of the averaged gradient of every parameter (under ZeRO-1 the shards'
// squared norms summed over dp). With tensor parallelism (`tp`, the set sharded by
// AdapterSet::shard_for_tp, its gradients summed by tp_reduce_gradients) the norm is that of the whole
// adapter: the squares of the split parameters (AdapterParam::tp_shard_dim >= 0) summed over tp, the
// whole ones counted once, as AdapterSet::tp_grad_norm; every tp rank clips by the same factor. AdamW is elementwise, so both modes give the same update bit for bit;
// with one replica the plain optim::AdamW path runs.
// offload (optim.offload): the master weights, moments and a gradient copy of this replica's part (all
// of it, or its ZeRO-1 shard) live in host RAM (optim::OffloadAdamW: pinned when the parameters are on
// a GPU), the reduced gradients are copied there bucket by bucket, measured and clipped there, updated
// by the multithreaded CPU AdamW, and the weights copied back. Same updates bit for bit as without.
// overlap (optim.overlap, with offload): the gradients of a GPU set come to its host mirrors layer by
// layer as the backward produces them (stream_grads, from AdapterSet's gradient stream), and step_async
// runs the CPU AdamW on a background thread while the GPU computes the next step's forward, which waits
// per layer (wait_params, from AdapterSet's forward gate) for that layer's updated weights; the updated
// buckets go straight to the device parameters (and the host mirrors). Not under ZeRO-1 with dp > 1: its
// update ends in an all-gather over dp, a collective that the background thread may not issue and that
// every replica must reach in the same order, so that step stays synchronous.
// On a GPU without offload, the moments live on the GPU beside the parameters (optim::DeviceAdamW): the
// gradients are measured, clipped and applied there and nothing crosses PCIe. That holds with one
// replica, and with dp > 1 without ZeRO-1 when the dp group is given as a communicator of device buffers
// (`device_dp`: NCCL, or MPI staging them), over which the gradients are averaged in one flat device
// all-reduce. ZeRO-1 over dp > 1 on a GPU without offload averages and updates on the host mirrors, as
// on the CPU.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "comm/communicator.h"
#include "optim/adamw.h"
#include "optim/device_adamw.h"
#include "optim/offload_adamw.h"

namespace adapt::train {

/// The offload settings of a job: nullopt when `offload` (optim.offload) is false; otherwise the CPU
/// AdamW gets this node's hardware threads divided among the job's ranks on the node (at least 1).
std::optional<optim::OffloadOptions> dp_offload_options(bool offload);

/// Sums the gradients of `params` (f32, all in host memory or all on one GPU) over `group` in one
/// all-reduce of a flat vector beside them, then multiplies them by `scale` (after the sum, as
/// parallel::dp_average_gradients does on the host; 1: the plain sum). Device gradients need a
/// communicator that takes device buffers (NCCL, or MPI staging them); their copies and the scaling are
/// ordered on the compute stream. Called by every rank of `group` with the same shapes.
void sum_gradients(const std::vector<adapters::AdapterParam>& params, comm::Communicator& group, float scale = 1.0f);

class DpOptimizer {
 public:
  /// `params` share storage with the adapter (AdapterSet::parameters()); the same on every replica.
  /// `tp`: the tp group the parameters are sharded over (nullptr or one rank: not sharded).
  /// `offload`: set to keep the optimizer state in host RAM (optim::OffloadAdamW with these options).
  /// `overlap` (optim.overlap; meaningful with `offload`): step_async and the gradient stream.
  /// `device_params`: for a set on a GPU, its device parameters (AdapterSet::parameters(), the same
  /// order as `params`, which are then its host mirrors); empty when `params` are the parameters. Given
  /// without `offload`, and with one dp replica or with `device_dp` and no ZeRO-1, the optimizer works on
  /// them (optim::DeviceAdamW: moments, norm, clipping and update on the GPU; the host mirrors keep only
  /// what restore() puts there).
  /// `device_dp`: the dp group again, as a communicator that takes device buffers (same ranks in the same
  /// order as `dp`); used only for the device gradients' average.
  DpOptimizer(std::vector<adapters::AdapterParam> params, const optim::AdamWOptions& options, comm::Communicator& dp,
              bool zero1, comm::Communicator* tp = nullptr,
              std::optional<optim::OffloadOptions> offload = std::nullopt, bool overlap = false,
              std::vector<adapters::AdapterParam> device_params = {}, comm::Communicator* device_dp = nullptr);
  ~DpOptimizer();

  /// After the backward of every micro-batch: the gradients become their average over dp (each
  /// replica's own part of it under ZeRO-1), clipped to `max_norm` by their global norm when
  /// max_norm > 0. Returns the global norm before clipping. Called by all ranks of dp (and of tp).
  double reduce_and_clip(double max_norm);
  /// One AdamW update with learning rate `lr` (then, under ZeRO-1, the all-gather of the shards).
  /// Called by all ranks of dp.
  void step(double lr);

  // ---- overlap (optim.overlap) ----
  /// True when step_async is available: offload and overlap, and not ZeRO-1 over more than one replica.
  bool overlapped() const { return off_ != nullptr && overlap_ && (single() || !zero1_); }
  /// The gradients of params()[first, end) are final on the device: queues their copies into the host
  /// mirrors (`params`), after the work queued so far on the compute stream. Nothing to copy when the
  /// parameters are in host memory. From the training thread only (AdapterSet::set_gradient_stream).
  void stream_grads(std::size_t first, std::size_t end);
  /// Blocks until every gradient copy queued by stream_grads is in the host mirrors.
  void wait_streamed_grads();
  /// step(lr) on a background thread (overlapped() only; no communication): returns at once. The
  /// parameters are updated in params() order; until finish(), read or write them only after
  /// wait_params for their range.
  void step_async(double lr);
  /// Blocks until params()[first, end) hold the values of the running step_async (on a GPU: makes the
  /// compute stream wait for their copies); at once without one. For AdapterSet::set_forward_gate.
  void wait_params(std::size_t first, std::size_t end);
  /// Completes a running step_async (no-op without one; on a GPU the compute stream then waits for
  /// every write-back) and rethrows its exception. Everything but the forward that reads the parameters,
  /// their mirrors or the state (clipping, checkpoints, evaluation, export) calls it first; the methods
  /// of this class do.
  void finish() const;
  /// Seconds the calling thread spent blocked in wait_params and finish() on a running step_async since
  /// the last call (how much of the CPU update the next step's compute did not hide); resets the count.
  double take_wait_seconds();

  std::int64_t n_steps() const { return dev_ ? dev_->n_steps() : off_ ? off_->n_steps() : opt_.n_steps(); }
  void set_n_steps(std::int64_t n) { dev_ ? dev_->set_n_steps(n) : off_ ? off_->set_n_steps(n) : opt_.set_n_steps(n); }
  const std::vector<adapters::AdapterParam>& params() const { return params_; }
  bool zero1() const { return zero1_; }
  /// The offloaded state (nullptr when the optimizer is not offloaded).
  const optim::OffloadAdamW* offloaded() const { return off_.get(); }
  /// The state on the parameters' GPU (nullptr unless a GPU set without offload, at dp == 1 or with
  /// `device_dp` and no ZeRO-1): the gradients are then averaged, read, and the weights updated, on the
  /// device only.
  const optim::DeviceAdamW* on_device() const { return dev_.get(); }

  /// The whole optimizer state with global shapes: "adapter/<param>" (master weights),
  /// "optim/m/<param>", "optim/v/<param>". Under ZeRO-1 the moments are all-gathered over dp, so
  /// every replica returns the same tensors. Called by all ranks of dp.
  std::map<std::string, Tensor> state() const;
  /// Restores from whole tensors under the names of state(); `get(key)` returns the tensor (of the
  /// parameter's shape) or throws. Each replica keeps its own shard under ZeRO-1. No communication.
  void restore(const std::function<const Tensor&(const std::string&)>& get);

 private:
  std::vector<adapters::AdapterParam> params_;
  comm::Communicator& dp_;
  bool zero1_;
  comm::Communicator* tp_ = nullptr;  // set when the parameters are sharded over more than one tp rank
  // A GPU set's parameters (params_: its host mirrors). Declared before off_, so destroyed after it:
  // ~OffloadAdamW joins a running step_async, whose write-backs go into these tensors.
  std::vector<adapters::AdapterParam> device_params_;
  optim::AdamW opt_;                        // without offload
  std::unique_ptr<optim::OffloadAdamW> off_;  // with offload: this replica's part of the flat vector
  std::unique_ptr<optim::DeviceAdamW> dev_;   // a GPU set without offload (and ZeRO-1 over dp): state on the GPU
  comm::Communicator* device_dp_ = nullptr;   // with dev_ and dp > 1: the dp group over device buffers
  bool overlap_ = false;
  mutable double waited_s_ = 0;  // blocked on step_async's progress (take_wait_seconds)
  Tensor grad_staging_;        // f32 (n), pinned: streamed gradients land here, then go to the mirrors
  // Declared after the staging buffer, so destroyed before it: its destructor waits for copies into it.
  std::unique_ptr<optim::OffloadCopier> grad_copier_;  // device → host mirrors, for stream_grads
  std::vector<char> staged_;   // per parameter: streamed into grad_staging_ since the last wait
  std::int64_t last_grad_ticket_ = 0;
  std::vector<std::int64_t> offsets_;  // of each parameter in the flat vector
  std::int64_t n_ = 0;                 // real elements of the flat vector
  std::int64_t shard_count_ = 0;       // ZeRO-1: elements per dp rank (padded)
  std::int64_t shard_begin_ = 0;       // ZeRO-1: first element of this rank's shard
  std::vector<float> flat_;            // dp × shard_count (zero1) or n (averaging): gradients, then parameters
  std::vector<float> shard_grad_;      // ZeRO-1: this rank's averaged gradient shard
  std::vector<float> shard_master_;    // ZeRO-1: this rank's master weights
  struct Piece {                       // ZeRO-1: the part of parameter `param` inside this rank's shard
    int param = 0;
    std::int64_t begin = 0;  // in the flat vector
    std::int64_t count = 0;
  };
  std::vector<Piece> pieces_;  // in AdamW slot order

  bool single() const { return dp_.size() == 1; }
  bool split(std::size_t param) const { return tp_ != nullptr && params_[param].tp_shard_dim >= 0; }
  /// sqrt(split + whole) after summing `split` (Σ g² of the split parameters) over tp.
  double tp_norm(double split, double whole) const;
  void flatten_grads(float* dst) const;
  void log_offload() const;
  /// The averaged gradients into the offloaded state, parameter by parameter (or the shard), in buckets.
  void stage_offload_grads();
  /// Norm (and clipping) of the whole gradients `grads` (one per parameter), as without ZeRO-1.
  double whole_norm_and_clip(std::vector<Tensor>& grads, double max_norm) const;
  /// Norm (and clipping) of this rank's ZeRO-1 gradient shard at `shard` (shard_count_ elements).
  double shard_norm_and_clip(float* shard, double max_norm) const;
  /// Norm (and clipping) of the device gradients (dev_), the split ones' squares summed over tp.
  double device_norm_and_clip(double max_norm);
  /// The flat vector of AdamW moment `which` (0: m, 1: v) of every parameter (all-gathered under ZeRO-1).
  std::vector<float> gather_moment(int which) const;
};

}  // namespace adapt::train
