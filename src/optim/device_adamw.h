// DeviceAdamW: AdamW with the fp32 moments on the GPU beside the parameters (optim.offload = false on a
// CUDA device), so nothing crosses PCIe in a step. The update is kernels/adamw.h's launch_adamw_step
// (the CPU optim::AdamW's bits), queued on the compute stream (backend::cuda_compute_stream) so it
// orders after the backward and before the next forward without events. The gradient norm is a
// deterministic double reduction on the device (kernels/grad_norm.h). CUDA parts: device_adamw_cuda.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "tensor/tensor.h"

namespace adapt::optim {

/// One tensor updated by DeviceAdamW (the shape of adapters::AdapterParam, which optim cannot see).
struct DeviceAdamWParam {
  std::string name;   // unique; the keys of state(): "adapter/<name>", "optim/m/<name>", "optim/v/<name>"
  Tensor value;       // f32, contiguous, on cuda:d: the fp32 master weights themselves, updated in place
  Tensor grad;        // f32, contiguous, same shape and device as value
  bool decay = true;  // false: no weight decay (biases, LayerNorm parameters)
};

class DeviceAdamW {
 public:
  /// Allocates m and v (one flat f32 buffer each, zero) on the parameters' device. Every value and grad
  /// must be a contiguous f32 tensor on one CUDA device: UnsupportedError for host tensors or several
  /// devices, ShapeError for other dtypes, shapes or layouts, UnsupportedError naming ADAPT_CUDA in
  /// builds without CUDA and naming the device when it is not visible. An empty list is allowed (every
  /// call is then a no-op). Holds `params`' tensors (their storage) for its lifetime.
  DeviceAdamW(std::vector<DeviceAdamWParam> params, const AdamWOptions& options);
  ~DeviceAdamW();
  DeviceAdamW(const DeviceAdamW&) = delete;
  DeviceAdamW& operator=(const DeviceAdamW&) = delete;

  /// One update of every parameter with learning rate `lr` (advances n_steps()): one launch per tensor
  /// on the compute stream; returns without waiting for it.
  void step(double lr);

  /// Σ g² of the gradients of params()[i] for i in `which` (any order, each index at most once), in
  /// double on the device, after the work queued on the compute stream; blocks the host until the value
  /// is back. Deterministic: the same bits on every run for the same `which`.
  double sum_squares(std::span<const std::size_t> which) const;
  /// Σ g² of every gradient.
  double sum_squares() const;
  /// Every gradient *= (float)factor on the compute stream (optim::grad_clip_global_norm's rounding).
  void clip(double factor);
  /// optim::grad_clip_global_norm on the device: norm = sqrt(sum_squares()); when max_norm / (norm +
  /// 1e-6) < 1 the gradients are scaled by it. Returns the norm before clipping. ConfigError unless
  /// max_norm > 0. With tensor parallelism the caller sums the squares itself (sum_squares + clip).
  double clip_global_norm(double max_norm);

  std::int64_t n_steps() const { return n_steps_; }
  /// For resuming from a checkpoint (the moments come back through restore()).
  void set_n_steps(std::int64_t n) { n_steps_ = n; }
  const std::vector<DeviceAdamWParam>& params() const { return params_; }
  const AdamWOptions& options() const { return options_; }
  /// The parameters' device (cuda:0 for an empty list).
  Device device() const { return device_; }
  /// Elements of m (and of v): the sum of the parameters' sizes.
  std::int64_t size() const { return n_; }

  /// Host copies (contiguous f32, the parameters' shapes) under DpOptimizer::state()'s names:
  /// "adapter/<name>" (the weights), "optim/m/<name>", "optim/v/<name>". Waits for the queued work.
  std::map<std::string, Tensor> state() const;
  /// The inverse of state(): `get(key)` returns a contiguous f32 tensor of the parameter's shape (host
  /// or device memory) or throws; weights and moments are copied onto the device. ShapeError on a
  /// shape or dtype mismatch. n_steps is restored separately (set_n_steps).
  void restore(const std::function<const Tensor&(const std::string&)>& get);

 private:
  std::vector<DeviceAdamWParam> params_;
  AdamWOptions options_;
  Device device_{DeviceKind::Cuda, 0};
  std::vector<std::int64_t> offsets_;  // of each parameter in m_ and v_
  std::int64_t n_ = 0;
  std::int64_t n_partials_ = 0;  // doubles in the norm workspace before its result slot
  Tensor m_;                     // (n_) f32 on device_: first moments, flat in parameter order
  Tensor v_;                     // (n_) f32 on device_: second moments
  Tensor norm_ws_;               // u8 on device_: n_partials_ + 1 doubles (partials, then the sum)
  void* stream_ = nullptr;       // cudaStream_t: backend::cuda_compute_stream()
  std::int64_t n_steps_ = 0;

  /// Device checks, allocation of m_, v_ and the workspace, zeroing of the moments (CUDA only).
  void init_device();
  /// The f32 view (the parameter's shape) of moment `which` (0: m, 1: v) of parameter i.
  Tensor moment_view(int which, std::size_t i) const;
};

}  // namespace adapt::optim
