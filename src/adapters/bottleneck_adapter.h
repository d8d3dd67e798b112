// BottleneckAdapter: one AdapterHub bottleneck module (SPEC-llama.md §6.2) acting on a (N, C) input z:
// A(z) = up(act(down(LN(z)))), added to the residual stream as s·A(z). Which z (f, h + f or h) is the
// placement's business (AdapterSet). Like LoraAdapter it is stateless: the backward recomputes the
// small (N, m) activations from z instead of caching them.
#pragma once

#include <cstdint>
#include <string>

#include "adapters/adapter_config.h"
#include "ops/workspace.h"
#include "tensor/tensor.h"

namespace adapt::adapters {

/// nn.LayerNorm's default epsilon, used by AdapterHub's ln_before.
constexpr double kBnLayerNormEps = 1e-5;

class BottleneckAdapter {
 public:
  /// Zero-filled parameters and gradients named "<prefix>.down.weight", ... ("<prefix>.ln.weight"
  /// and "<prefix>.ln.bias" only with ln_before).
  BottleneckAdapter(std::int64_t hidden, std::int64_t m, BnActivation activation, double scaling, bool ln_before,
                    const std::string& prefix);

  std::int64_t hidden() const { return down_weight.dim(1); }
  std::int64_t width() const { return down_weight.dim(0); }
  bool ln_before() const { return ln_weight.defined(); }
  BnActivation activation() const { return activation_; }
  double scaling() const { return scaling_; }

  /// AdapterHub's "mam_adapter" init: down weight kaiming_uniform(a=√5) = U(−1/√C, 1/√C) from the
  /// stream `key`, down bias 0, up weight and bias 0 (so s·A(z) = 0 exactly), LayerNorm weight 1, bias 0.
  /// Random values are drawn on the host (and copied when the parameters live on a device).
  void init(std::uint64_t key);
  /// Moves every parameter and gradient (values kept) to the memory of `alloc` (host or a CUDA device).
  void to_memory(Allocator& alloc);
  /// Where the parameters and gradients live.
  Device device() const { return down_weight.device(); }

  /// out (N, C) += s·A(z); z (N, C). Contiguous f32 tensors on device() (`ws` too); out may alias z.
  void forward(const Tensor& z, Tensor& out, ops::Workspace& ws) const;
  /// dout (N, C) is the gradient of `out`: accumulates the parameter gradients and writes the gradient
  /// of the adapter's term with respect to z into dz (N, C) (overwritten, not accumulated).
  void backward(const Tensor& z, const Tensor& dout, Tensor& dz, ops::Workspace& ws);

  Tensor ln_weight;    // (C)     adapter_down.0 (LayerNorm), only with ln_before; all f32 on device()
  Tensor ln_bias;      // (C)
  Tensor down_weight;  // (m, C)  adapter_down.{0|1}.weight
  Tensor down_bias;    // (m)
  Tensor up_weight;    // (C, m)  adapter_up.weight
  Tensor up_bias;      // (C)
  Tensor grad_ln_weight, grad_ln_bias, grad_down_weight, grad_down_bias, grad_up_weight, grad_up_bias;

 private:
  BnActivation activation_;
  double scaling_;

  /// zn = LN(z) (or z itself), plus the per-row mean and 1/σ the backward needs.
  Tensor normalized_input(const Tensor& z, ops::Workspace& ws, Tensor* mean_rstd) const;
};

}  // namespace adapt::adapters
