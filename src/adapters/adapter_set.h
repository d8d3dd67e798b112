// AdapterSet: the adapters of one job (LoRA sites, bottleneck modules or both, over the selected
// layers), implementing model::AdapterHook: LoRA answers the linear sites, the bottleneck modules the
// sub-block ends, so with kind lora+bottleneck the one hook applies both. It owns the f32 parameters and their
// gradients, lists them under stable names for the optimizer and checkpoints, and merges LoRA into f32 base weights for
// inference. Forward and backward recompute what they need from their inputs, so recomputation, micro-batches and the
// order of calls across layers need no bookkeeping; dropout masks are keyed by (seed, step, micro-batch, layer, site,
// element). Parameters and gradients live on the host or, after to_device(), on one CUDA device, where all of the
// hook's math runs (kernels/adapter_ops.h, cuBLASLt); host mirrors (host_parameters) serve the optimizer and
// checkpoints, which read host memory.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "adapters/adapter_config.h"
#include "adapters/bottleneck_adapter.h"
#include "adapters/lora_adapter.h"
#include "model/adapter_hook.h"
#include "model/llama_config.h"
#include "model/tensor_parallel.h"
#include "ops/workspace.h"
#include "parallel/shard_spec.h"

namespace adapt::model {
struct LlamaModel;
}

namespace adapt::adapters {

/// One trainable tensor, as the optimizer (optim::AdamW::add) and checkpoints take it.
struct AdapterParam {
  std::string name;   // stable: "layers.3.q.lora_a", "layers.3.mlp_adapter.down.weight", ...
  Tensor value;       // f32, contiguous, on AdapterSet::device(); shares storage with the adapter
  Tensor grad;        // f32, same shape; accumulated by backward, cleared by zero_grad()
  bool decay = true;  // false for biases and LayerNorm parameters (no weight decay)
  /// Tensor parallelism (DESIGN.md "Parallel layout"): the dimension split over the tp group like the
  /// base weight (LoRA B of a column-parallel projection: 0; LoRA A of a row-parallel one: 1), or −1
  /// when replicated (the other LoRA factor, every bottleneck tensor). Replicated LoRA factors get
  /// partial gradients on each tp rank that must be summed over the group
  /// (AdapterSet::tp_reduce_gradients); bottleneck gradients are whole on every rank.
  int tp_shard_dim = -1;
  /// The decoder layer it belongs to (−1: none given). Data parallelism keeps a layer's parameters in
  /// one ZeRO-1 unit (train::DpOptimizer), so that the forward can wait for a layer's update alone.
  int layer = -1;
};

class AdapterSet final : public model::AdapterHook {
 public:
  /// Validates `config` against `model` (ConfigError naming the adapter.* key), allocates every
  /// parameter and initialises it from config.seed: LoRA A per lora.init and B = 0; bottleneck per
  /// AdapterHub's "mam_adapter" (up projection 0). Either way the adapted model starts equal to the base.
  /// With kind lora+bottleneck each part is initialised exactly as the single-kind set of the same
  /// config would initialise it (distinct random streams per site).
  AdapterSet(const model::LlamaConfig& model, const AdapterConfig& config);

  const AdapterConfig& config() const { return config_; }
  const model::LlamaConfig& model_config() const { return model_; }
  AdapterKind kind() const { return config_.kind; }
  /// The decoder layers that carry adapters, ascending.
  const std::vector<int>& layers() const { return layers_; }

  // ---- model::AdapterHook (contract in model/adapter_hook.h) ----
  bool has_linear(const model::LinearSite& site) const override;
  void linear_forward(const model::LinearSite& site, const Tensor& x, Tensor& y) override;
  void linear_backward(const model::LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) override;
  /// The two halves of linear_backward (LoraAdapter::backward_input / backward_weights): the same
  /// dropout masks, and together the same bits as linear_backward.
  void linear_backward_input(const model::LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) override;
  void linear_backward_weights(const model::LinearSite& site, const Tensor& x, const Tensor& dy) override;
  bool has_block(int layer, model::BlockSite site) const override;
  void block_forward(int layer, model::BlockSite site, const Tensor& h, const Tensor& f, Tensor& out) override;
  /// dh and df must be distinct tensors (each receives its own share).
  void block_backward(int layer, model::BlockSite site, const Tensor& h, const Tensor& f, const Tensor& dout,
                      Tensor& dh, Tensor& df) override;

  // ---- training ----
  /// Dropout is applied only in training mode (default: off, i.e. inference).
  void set_training(bool training);
  bool training() const { return training_; }
  /// Selects the dropout masks of the next calls. Call it before each micro-batch's forward and again
  /// (same values) before its backward/recomputation. With data parallelism, micro_batch is the
  /// micro-step (the same on every replica) and row_offset the rows (sequences × positions) of that
  /// micro-step's global batch before this replica's: a row then gets the same mask on any layout.
  void set_step(std::int64_t step, std::int64_t micro_batch = 0, std::int64_t row_offset = 0);
  std::int64_t step() const { return step_; }
  std::int64_t micro_batch() const { return micro_batch_; }
  /// Sets every gradient to zero.
  void zero_grad();
  /// Every parameter in a stable order (layer, then LoRA sites q, k, v, o, gate, up, down, then
  /// bottleneck sites attn, mlp, then tensor), sharing storage with the adapters (so on device()).
  std::vector<AdapterParam> parameters() const;
  /// The parameter named `name` (as in parameters()), or nullptr.
  const Tensor* find_parameter(std::string_view name) const;
  std::int64_t n_parameters() const;
  /// The adapters' own workspace (reset at every site call) at its largest so far.
  std::size_t workspace_high_water_bytes() const { return ws_->high_water_bytes(); }
  /// The parameters of the LoRA sites / of the bottleneck modules (their sum is n_parameters()).
  std::int64_t n_lora_parameters() const;
  std::int64_t n_bottleneck_parameters() const;

  // ---- device (parameters and gradients on a CUDA device; the hook's tensors must be there too) ----
  /// Where the parameters and gradients live: the host (cpu) unless to_device() moved them.
  Device device() const { return device_; }
  /// Moves every parameter and gradient (values kept bit for bit) and the hook's scratch memory to
  /// cuda:`index`; afterwards the hook takes tensors on that device only (ShapeError naming the tensor
  /// otherwise) and runs there, and parameters() are device tensors. Creates the host mirrors of
  /// host_parameters(), holding the current values. Call it after shard_for_tp(). UnsupportedError
  /// without CUDA or with no such device. A set already on cuda:`index` is left as it is.
  void to_device(int index);
  /// Moves everything back to host memory (values kept) and drops the host mirrors.
  void to_host();
  /// What the optimizer (optim::AdamW, train::DpOptimizer), gradient reductions and checkpoints take:
  /// on the host, parameters() itself; on a device, host mirrors (same names, order, shapes, decay and
  /// tp_shard_dim) that stay the same tensors for the life of this placement, so an optimizer can keep
  /// them. A device set's mirrors move only through the three calls below: per optimizer step
  /// gradients_to_host() after the last backward (and tp_reduce_gradients), the host-side reduction,
  /// clipping and update on the mirrors, then values_from_host(); after restoring values into the
  /// mirrors (checkpoint resume) values_from_host() too. All three are no-ops on a host set.
  std::vector<AdapterParam> host_parameters() const;
  /// Copies the device gradients into the host mirrors (synchronous).
  void gradients_to_host();
  /// Copies the host mirrors' values to the device parameters (synchronous).
  void values_from_host();
  /// Copies the device parameter values into the host mirrors (synchronous).
  void values_to_host();

  // ---- sites ----
  /// nullptr when the site has no adapter.
  LoraAdapter* lora(int layer, model::WeightKind kind);
  const LoraAdapter* lora(int layer, model::WeightKind kind) const;
  BottleneckAdapter* bottleneck(int layer, model::BlockSite site);
  const BottleneckAdapter* bottleneck(int layer, model::BlockSite site) const;

  // ---- LoRA merge (inference) ----
  /// W += s·B·A for every LoRA site, into `model`'s f32 base weights; afterwards has_linear() is false
  /// everywhere, so the hook adds nothing for LoRA (bottleneck modules of a lora+bottleneck set still
  /// run through the hook). UnsupportedError for bf16-stored weights (load the model with
  /// WeightStorage::F32) or a bottleneck-only set; ShapeError when `model` is not the model of this set.
  void merge(model::LlamaModel& model);
  /// W −= s·B·A, undoing merge(). Not bit-exact: each element is restored to within
  /// 2^-23·(|W| + |s·B·A|) (two f32 roundings of W ± s·B·A), see README.md.
  void unmerge(model::LlamaModel& model);
  bool merged() const { return merged_; }

  // ---- tensor parallelism (DESIGN.md "Parallel layout"; adapter_set_tp.cpp) ----
  /// Keeps this rank's slices of the LoRA factors and their gradients (parallel::lora_shard: on q, k,
  /// v, gate, up B is split by rows like the base weight and A is whole; on o, down A is split by
  /// columns and B is whole), for a model loaded with model::llama_model_load_tp over `tp`; bottleneck
  /// modules stay whole (they act on the full hidden state, after the all-reduce). Call it on a whole
  /// set (just initialised, or loaded from files), so every rank starts from the single-rank values;
  /// afterwards the hook, parameters() and merge() work on the rank's slices. No-op with one rank.
  /// UnsupportedError when merged, already sharded or on a device (shard first, then to_device).
  void shard_for_tp(const model::TensorParallel& tp);
  /// The tp group the LoRA factors are sharded over (one rank when not sharded).
  const model::TensorParallel& tp() const { return tp_; }
  /// Sums the gradients of the whole LoRA factors over the tp group: with sharded sites each rank holds
  /// a partial sum for A of q/k/v/gate/up and B of o/down. Call it once per optimizer step, after the
  /// last backward and before clipping, data-parallel averaging or the update. Bottleneck gradients
  /// are already whole on every rank. Collective over tp; no-op with one rank. On a device set the
  /// device gradients are reduced in place with an NCCL communicator, through host copies with the
  /// local or MPI one.
  void tp_reduce_gradients();
  /// A whole (unsharded) set with this set's config, values and gradients, on every rank of the tp
  /// group (a collective): what export, checkpoints and comparisons with one rank take. An unsharded
  /// set is copied. The result is always on the host, whatever device() is.
  AdapterSet tp_gathered() const;
  /// The slice of the whole tensor each parameter holds, in parameters() order (dim None for whole
  /// ones): parallel::shard_take(whole, slice) cuts a rank's part of a per-parameter tensor (optimizer
  /// moments on resume), parallel::tp_gather(whole, part, slice.dim, tp) puts the parts back together.
  std::vector<parallel::TensorSlice> tp_param_slices() const;
  /// The global norm of the gradients of the whole set, from the shards: Σ g² of the split factors
  /// summed over tp, the whole tensors counted once (call after tp_reduce_gradients; collective over
  /// tp). For clipping: every rank scales its own gradients by the same max_norm / (norm + 1e-6). On a
  /// device set the gradients are copied to the host for the sum.
  double tp_grad_norm() const;

  // ---- overlap with the optimizer (adapter_set_overlap.cpp) ----
  // Gradients leave layer by layer during the step's last backward (streaming), and the next step's
  // forward waits only for its own layer's updated parameters (the forward gate), so that an optimizer
  // running on the host (optim.offload with optim.overlap) overlaps with the GPU's work.

  /// Receives decoder layer `layer` and its parameters: parameters()[first_param, end_param).
  using LayerParamsFn = std::function<void(int layer, std::size_t first_param, std::size_t end_param)>;
  /// The range of parameters() that belongs to decoder layer `layer` (parameters() are layer-major); an
  /// empty range for a layer without adapters.
  std::pair<std::size_t, std::size_t> layer_params(int layer) const;
  /// Installs the receiver of streamed layers (an empty function: the layers are only reduced over tp).
  void set_gradient_stream(LayerParamsFn on_layer);
  /// Arms streaming for the next backward pass (the last micro-batch of a step): each
  /// layer_backward_done(l) of a layer with adapters then sums the layer's partial LoRA factor gradients
  /// over tp (tp_reduce_gradients for that layer: a collective over tp) and hands the layer to the
  /// receiver, once. Arm only a pass after which the layers' gradients no longer change in this step.
  void arm_gradient_stream();
  /// After the step's backward: reduces over tp and hands to the receiver every layer with adapters not
  /// streamed since the last end_gradient_stream (all of them when nothing was armed; under the
  /// pipeline schedule the other stages' layers), highest layer first, and disarms. Between two calls every layer with
  /// adapters is handed exactly once, in descending order, so with this pair tp_reduce_gradients() is not called.
  /// Collective over tp (every rank of the group hands the same layers in the same order).
  void end_gradient_stream();
  /// model::AdapterHook: streams `layer` when armed (see arm_gradient_stream).
  void layer_backward_done(int layer) override;

  /// Installs `gate`, called by linear_forward / block_forward before the first use of a layer's
  /// parameters after arm_forward_gate(): once per layer with adapters, with the layer's parameter range,
  /// on the calling thread. The gate blocks until the layer's new values are in place (and orders the
  /// device's compute after their copies). An empty function removes the gate.
  void set_forward_gate(LayerParamsFn gate);
  /// Re-arms the gate for every layer (after each optimizer step that the forward must wait for).
  void arm_forward_gate();
  /// The layers gate no more until the next arm_forward_gate() (the update has been waited for as a whole).
  void disarm_forward_gate();

 private:
  static constexpr int kNumTargets = 7;  // q, k, v, o, gate, up, down

  model::LlamaConfig model_;
  AdapterConfig config_;
  std::vector<int> layers_;
  std::vector<LoraAdapter> lora_;                      // stable order
  std::vector<std::array<int, kNumTargets>> lora_at_;  // [layer][target] -> index in lora_ or -1
  std::vector<BottleneckAdapter> bn_;
  std::vector<std::array<int, 2>> bn_at_;  // [layer][attn, mlp] -> index in bn_ or -1
  std::unique_ptr<ops::Workspace> ws_;     // on device_
  Device device_{};
  std::vector<AdapterParam> host_mirror_;  // empty on the host
  bool training_ = false;
  bool merged_ = false;
  std::int64_t step_ = 0;
  std::int64_t micro_batch_ = 0;
  std::int64_t row_offset_ = 0;  // set_step's
  model::TensorParallel tp_;     // set by shard_for_tp
  // overlap (adapter_set_overlap.cpp): per decoder layer, whether it was streamed since the last
  // end_gradient_stream / still has to pass the forward gate.
  LayerParamsFn on_layer_grads_;
  LayerParamsFn forward_gate_;
  std::vector<char> streamed_;
  std::vector<char> gated_;
  bool stream_armed_ = false;
  bool gate_armed_ = false;

  /// Sums layer `layer`'s partial LoRA factor gradients over tp (collective over tp).
  void tp_reduce_layer_gradients(int layer);
  /// The forward gate for `layer`, when armed and not passed yet.
  void forward_gate(int layer) {
    if (gate_armed_) forward_gate_slow(layer);
  }
  void forward_gate_slow(int layer);

  LoraDropout dropout_for(const model::LinearSite& site) const;
  /// A row-parallel site's columns of x within the whole x (the masks of one rank).
  void tp_dropout_columns(const model::LinearSite& site, LoraDropout& d) const;
  /// z: f (Houlsby), h + f (Pfeiffer) or h (parallel), in workspace memory when it is a sum.
  Tensor block_input(const Tensor& h, const Tensor& f);
  void merge_all(model::LlamaModel& model, double sign);
};

/// The LoRA target kinds in q, k, v, o, gate, up, down order (the order of parameters() and of the sites).
inline constexpr model::WeightKind kLoraTargetKinds[] = {
    model::WeightKind::Wq,    model::WeightKind::Wk,  model::WeightKind::Wv,   model::WeightKind::Wo,
    model::WeightKind::WGate, model::WeightKind::WUp, model::WeightKind::WDown};

/// Index of a LoRA target kind in q, k, v, o, gate, up, down order; −1 for other kinds.
int lora_target_index(model::WeightKind kind);

}  // namespace adapt::adapters
