// DpOptimizer: AdamW over the adapter parameters of one data-parallel replica, with the gradients
// reduced over the dp group. Every replica ends each step with the same adapter weights.
//   zero1 = false: the flat gradient vector is averaged bucket by bucket (parallel::dp_average_gradients),
//     clipped by its global norm, and every replica updates every parameter;
//   zero1 = true (ZeRO stage 1): the flat vector is cut into units of whole decoder layers
//     (parallel::zero1_layout over AdapterParam::layer, up to `bucket_elems` each) and each unit is split
//     over dp on its own. The gradients are reduce-scattered unit by unit, each replica keeps AdamW's
//     moments and master weights for its chunk of every unit only, updates them, and the units are
//     all-gathered into the adapter.
// The global norm is the norm of the averaged gradient of every parameter (under ZeRO-1 the chunks'
// squared norms summed over dp). With tensor parallelism (`tp`, the set sharded by
// AdapterSet::shard_for_tp, its gradients summed by tp_reduce_gradients) the norm is that of the whole
// adapter: the squares of the split parameters (AdapterParam::tp_shard_dim >= 0) summed over tp, the
// whole ones counted once, as AdapterSet::tp_grad_norm; every tp rank clips by the same factor. AdamW is
// elementwise, so both modes give the same update bit for bit; with one replica the plain optim::AdamW
// path runs.
// offload (optim.offload): the master weights, moments and a gradient copy of this replica's part (all
// of it, or its ZeRO-1 chunks) live in host RAM (optim::OffloadAdamW: pinned when the parameters are on
// a GPU), the reduced gradients land there, are measured and clipped there, updated by the
// multithreaded CPU AdamW, and the weights copied back. Same updates bit for bit as without.
// overlap (optim.overlap, with offload): the gradients of a GPU set come to its host mirrors layer by
// layer as the backward produces them (stream_grads, from AdapterSet's gradient stream), and step_async
// runs the CPU AdamW on a background thread while the GPU computes the next step's forward, which waits
// per layer (wait_params, from AdapterSet's forward gate) for that layer's updated weights; the updated
// buckets go straight to the device parameters (and the host mirrors). Under ZeRO-1 over dp > 1 the
// background thread updates this replica's chunks unit by unit and makes no collective call: the
// training thread all-gathers each unit in wait_params, when the forward first needs one of its layers
// (and once it is updated here), and the rest in finish(). Every replica's forward reaches its layers in
// the same order, so the all-gathers match.
// On a GPU without offload, the moments live on the GPU beside the parameters (optim::DeviceAdamW): the
// gradients are measured, clipped and applied there and nothing crosses PCIe. That holds with one
// replica, and with dp > 1 when the dp group is given as a communicator of device buffers (`device_dp`:
// NCCL, or MPI staging them): without ZeRO-1 the gradients are averaged in one flat device all-reduce;
// with it the units are reduce-scattered into device chunks, DeviceAdamW updates this replica's chunks
// (their master weights on the GPU too) and the units are all-gathered into the device parameters.
// Without `device_dp`, ZeRO-1 over dp > 1 on a GPU without offload averages and updates on the host
// mirrors, as on the CPU.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapters/adapter_set.h"
#include "comm/communicator.h"
#include "optim/adamw.h"
#include "optim/device_adamw.h"
#include "optim/offload_adamw.h"
#include "parallel/zero_partition.h"

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

struct DpOptimizerOptions {
  /// ZeRO-1 (parallel.zero1): each replica keeps the optimizer state of its chunks only.
  bool zero1 = false;
  /// The tp group the parameters are sharded over (nullptr or one rank: not sharded).
  comm::Communicator* tp = nullptr;
  /// Set to keep the optimizer state in host RAM (optim::OffloadAdamW with these options).
  std::optional<optim::OffloadOptions> offload;
  /// optim.overlap (meaningful with `offload`): step_async and the gradient stream.
  bool overlap = false;
  /// For a set on a GPU, its device parameters (AdapterSet::parameters(), the same order as `params`,
  /// which are then its host mirrors); empty when `params` are the parameters. Given without `offload`,
  /// and with one dp replica or with `device_dp`, the optimizer works on them (optim::DeviceAdamW:
  /// moments, norm, clipping and update on the GPU, over this replica's chunks under ZeRO-1; the host
  /// mirrors keep only what restore() puts there).
  std::vector<adapters::AdapterParam> device_params;
  /// The dp group again, as a communicator that takes device buffers (same ranks in the same order as
  /// `dp`); used only for the device gradients' average (or reduce-scatter) and ZeRO-1's all-gather.
  comm::Communicator* device_dp = nullptr;
  /// Elements per gradient bucket (the averaging's all-reduces) and per ZeRO-1 unit (a unit holds whole
  /// decoder layers, so it may be larger).
  std::int64_t bucket_elems = parallel::kDpBucketElems;
};

class DpOptimizer {
 public:
  /// `params` share storage with the adapter (AdapterSet::parameters()); the same on every replica.
  DpOptimizer(std::vector<adapters::AdapterParam> params, const optim::AdamWOptions& options, comm::Communicator& dp,
              DpOptimizerOptions opts = {});
  ~DpOptimizer();

  /// After the backward of every micro-batch: the gradients become their average over dp (each
  /// replica's own part of it under ZeRO-1), clipped to `max_norm` by their global norm when
  /// max_norm > 0. Returns the global norm before clipping. Called by all ranks of dp (and of tp).
  double reduce_and_clip(double max_norm);
  /// One AdamW update with learning rate `lr` (then, under ZeRO-1, the all-gather of the shards).
  /// Called by all ranks of dp.
  void step(double lr);

  // ---- overlap (optim.overlap) ----
  /// True when step_async is available: offload and overlap.
  bool overlapped() const { return off_ != nullptr && overlap_; }
  /// The gradients of params()[first, end) are final on the device: queues their copies into the host
  /// mirrors (`params`), after the work queued so far on the compute stream. Nothing to copy when the
  /// parameters are in host memory. From the training thread only (AdapterSet::set_gradient_stream).
  void stream_grads(std::size_t first, std::size_t end);
  /// Blocks until every gradient copy queued by stream_grads is in the host mirrors.
  void wait_streamed_grads();
  /// step(lr) on a background thread (overlapped() only; the thread makes no collective call): returns
  /// at once. The parameters are updated in params() order; until finish(), read or write them only
  /// after wait_params for their range.
  void step_async(double lr);
  /// Blocks until params()[first, end) hold the values of the running step_async (on a GPU: makes the
  /// compute stream wait for their copies); at once without one. For AdapterSet::set_forward_gate.
  /// Under ZeRO-1 over dp > 1 it all-gathers the units up to the one of params()[end - 1] not gathered
  /// yet: called by every rank of dp with the same ranges in the same order (the forward's layers).
  void wait_params(std::size_t first, std::size_t end);
  /// Completes a running step_async (no-op without one; on a GPU the compute stream then waits for
  /// every write-back) and rethrows its exception; under ZeRO-1 over dp > 1 all-gathers the units that
  /// wait_params did not (collective over dp when a step_async runs). Everything but the forward that
  /// reads the parameters, their mirrors or the state (clipping, checkpoints, evaluation, export) calls
  /// it first; the methods of this class do.
  void finish();
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
  /// `device_dp`): the gradients are then averaged, read, and the weights updated, on the device only.
  const optim::DeviceAdamW* on_device() const { return dev_.get(); }

  /// The whole optimizer state with global shapes: "adapter/<param>" (master weights),
  /// "optim/m/<param>", "optim/v/<param>". Under ZeRO-1 the moments are all-gathered over dp, so
  /// every replica returns the same tensors. Called by all ranks of dp.
  std::map<std::string, Tensor> state();
  /// Restores from whole tensors under the names of state(); `get(key)` returns the tensor (of the
  /// parameter's shape) or throws. Each replica keeps its own chunks under ZeRO-1. No communication
  /// (finish() first: call it with no step_async running).
  void restore(const std::function<const Tensor&(const std::string&)>& get);

 private:
  std::vector<adapters::AdapterParam> params_;
  comm::Communicator& dp_;
  bool zero1_;
  comm::Communicator* tp_ = nullptr;  // set when the parameters are sharded over more than one tp rank
  std::int64_t bucket_elems_ = parallel::kDpBucketElems;
  // A GPU set's parameters (params_: its host mirrors). Declared before off_, so destroyed after it:
  // ~OffloadAdamW joins a running step_async, whose write-backs go into these tensors.
  std::vector<adapters::AdapterParam> device_params_;
  // ZeRO-1 on the GPU (dev_ over dp > 1): the padded flat vector, this replica's chunks' master weights
  // and gradients. Declared before dev_, whose parameters are views into them.
  Tensor dev_flat_, dev_master_, dev_grad_;
  optim::AdamW opt_;                          // without offload
  std::unique_ptr<optim::OffloadAdamW> off_;  // with offload: this replica's part of the flat vector
  std::unique_ptr<optim::DeviceAdamW> dev_;   // a GPU set without offload: state on the GPU (its chunks under ZeRO-1)
  comm::Communicator* device_dp_ = nullptr;   // with dev_ and dp > 1: the dp group over device buffers
  bool overlap_ = false;
  double waited_s_ = 0;                // blocked on step_async's progress (take_wait_seconds)
  std::vector<std::int64_t> offsets_;  // of each parameter in the flat vector
  std::vector<std::int64_t> flat_at_;  // of each parameter in flat_ (the padded vector under ZeRO-1)
  std::int64_t n_ = 0;                 // real elements of the flat vector
  Tensor grad_staging_;                // f32 (n), pinned: streamed gradients land here, then go to the mirrors
  // f32, layout_.padded (ZeRO-1) or n (averaging): gradients, then parameters. Pinned with overlap on a
  // GPU: the gathered units go from here to the device parameters.
  Tensor flat_;
  // Declared after the host buffers, so destroyed before them: its destructor waits for their copies.
  std::unique_ptr<backend::OffloadCopier> copier_;  // a GPU set with overlap: gradients out, gathered units in
  std::vector<char> staged_;                        // per parameter: streamed into grad_staging_ since the last wait
  std::int64_t last_grad_ticket_ = 0;
  // ZeRO-1 over dp > 1.
  parallel::Zero1Layout layout_;                                  // the units
  std::vector<std::size_t> unit_of_;                              // per parameter: its unit
  std::vector<std::pair<std::size_t, std::size_t>> unit_params_;  // per unit: its parameters [first, end)
  std::vector<float> shard_grad_;    // this rank's averaged gradient chunks (layout_.shard), without offload
  std::vector<float> shard_master_;  // this rank's master weights, without offload
  std::size_t gathered_ = 0;         // units all-gathered since the running step_async began
  struct Piece {                     // the part of parameter `param` inside this rank's chunks
    int param = 0;
    std::int64_t begin = 0;  // in the flat vector
    std::int64_t count = 0;
    std::int64_t at = 0;  // in the shard vector
  };
  std::vector<Piece> pieces_;  // in AdamW slot order

  bool single() const { return dp_.size() == 1; }
  /// Where piece `pc` starts inside its parameter.
  std::int64_t in_param(const Piece& pc) const { return pc.begin - offsets_[static_cast<std::size_t>(pc.param)]; }
  bool sharded() const { return zero1_ && !single(); }
  bool split(std::size_t param) const { return tp_ != nullptr && params_[param].tp_shard_dim >= 0; }
  float* flat() { return flat_.data<float>(); }
  /// This rank's updated master weights of its chunks (layout_.shard elements).
  const float* shard_weights() const { return off_ ? off_->master() : shard_master_.data(); }
  /// sqrt(split + whole) after summing `split` (Σ g² of the split parameters) over tp.
  double tp_norm(double split, double whole) const;
  void flatten_grads(float* dst) const;
  void log_offload() const;
  /// The ZeRO-1 units of AdapterParam::layer groups and this rank's pieces of them (layout_, unit_of_,
  /// unit_params_, flat_at_, pieces_).
  void build_zero1_layout();
  /// Builds the ZeRO-1 host buffers and state (the constructor's ZeRO-1 part on the host).
  void init_zero1(const optim::AdamWOptions& options, const std::optional<optim::OffloadOptions>& offload,
                  Device device);
  /// The same on the GPU: device chunks and DeviceAdamW over this rank's pieces.
  void init_device_zero1(const optim::AdamWOptions& options);
  /// ZeRO-1 on the GPU: the device gradients reduce-scattered unit by unit over device_dp_, averaged,
  /// measured and clipped; returns the norm.
  double device_zero1_reduce_and_clip(double max_norm);
  /// ZeRO-1 on the GPU: every replica's updated chunks all-gathered into the device parameters.
  void device_zero1_gather();
  /// Norm (and clipping) of the whole gradients `grads` (one per parameter), as without ZeRO-1.
  double whole_norm_and_clip(std::vector<Tensor>& grads, double max_norm) const;
  /// Norm (and clipping) of this rank's ZeRO-1 gradient chunks at `shard` (layout_.shard elements).
  double shard_norm_and_clip(float* shard, double max_norm) const;
  /// Norm (and clipping) of the device gradients (dev_), the split ones' squares summed over tp (and
  /// under ZeRO-1 the pieces' over dp).
  double device_norm_and_clip(double max_norm);
  /// ZeRO-1: all-gathers units [first, end) from every rank's updated chunks into flat_, then into the
  /// parameters (the host mirrors, and with the copier the device parameters, which the compute stream
  /// then waits for). Collective over dp.
  void gather_units(std::size_t first, std::size_t end);
  /// The flat vector of AdamW moment `which` (0: m, 1: v) of every parameter (all-gathered under ZeRO-1).
  std::vector<float> gather_moment(int which);
  /// Every rank's `shard` (layout_.shard elements, host) all-gathered unit by unit into the padded vector.
  std::vector<float> gather_shards(const std::vector<float>& shard);
  /// state() of ZeRO-1 on the GPU: whole tensors on the host.
  std::map<std::string, Tensor> device_zero1_state();
};

}  // namespace adapt::train
