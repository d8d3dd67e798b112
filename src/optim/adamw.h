// AdamW over fp32 master weights (decoupled weight decay, bias correction), written to follow
// PyTorch's single-tensor AdamW operation by operation, so a run can be checked against torch.
// The moments live beside the master weights in host memory; gradients arrive as f32.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace adapt::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: p ← p·(1 − lr·wd) before the Adam update
};

/// One optimised tensor: fp32 master weights, their gradient, and the two moments.
struct AdamWSlot {
  std::string name;
  Tensor master;      // f32, any shape, contiguous host memory; updated in place
  Tensor grad;        // f32, same shape
  Tensor m;           // f32, first moment (exp_avg)
  Tensor v;           // f32, second moment (exp_avg_sq)
  bool decay = true;  // false for tensors excluded from weight decay (e.g. norm weights)
};

class AdamW {
 public:
  explicit AdamW(const AdamWOptions& options);

  /// Registers a tensor; its moments start at zero. ShapeError when master and grad differ or are
  /// not contiguous host f32 tensors.
  void add(std::string name, Tensor master, Tensor grad, bool decay = true);

  /// One update of every registered tensor with learning rate `lr`; advances the step count.
  void step(double lr);

  std::int64_t n_steps() const { return n_steps_; }
  /// For resuming from a checkpoint (moments are restored through slots()).
  void set_n_steps(std::int64_t n) { n_steps_ = n; }
  std::vector<AdamWSlot>& slots() { return slots_; }
  const std::vector<AdamWSlot>& slots() const { return slots_; }
  const AdamWOptions& options() const { return options_; }

 private:
  AdamWOptions options_;
  std::vector<AdamWSlot> slots_;
  std::int64_t n_steps_ = 0;
};

/// sqrt(Σ g²) over all tensors, accumulated in double.
double grad_global_norm(std::span<const Tensor> grads);

/// Scales every gradient by max_norm / (norm + 1e-6) when the global norm exceeds max_norm
/// (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
double grad_clip_global_norm(std::span<Tensor> grads, double max_norm);

}  // namespace adapt::optim
