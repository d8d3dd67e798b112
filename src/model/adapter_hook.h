// The one place adapters attach to the model (STYLE principle 5, llama.cpp's llm_build_lora_mm):
// every projection goes through linear(), which calls linear_forward/backward for its LinearSite,
// and every decoder layer calls block_forward/backward at the end of its attention and MLP
// sub-blocks. The model knows nothing else about adapters; adapters/ implements this interface.
#pragma once

#include "model/weight_names.h"
#include "tensor/tensor.h"

namespace adapt::model {

/// Which projection a linear() call computes: LoRA keys on this.
struct LinearSite {
  int layer = -1;                    // -1 for lm_head
  WeightKind kind = WeightKind::Wq;  // Wq, Wk, Wv, Wo, WGate, WUp, WDown or LmHead
};

/// The end of a decoder layer's sub-block: bottleneck adapters key on this.
enum class BlockSite { Attention, Mlp };

/// Contract, for the model's forward and backward passes:
///  * forward calls come in layer order; backward calls in reverse order, each after the forward
///    of the same step. With activation recomputation the forward of a layer runs again just before
///    its backward: an implementation must then produce the same values (e.g. dropout masks are a
///    function of (step seed, site, position), not of a running random stream);
///  * all tensors are 2-D (N tokens, width), contiguous, f32, on the model's device (host memory on the
///    CPU backend, the CUDA device after model::llama_model_to_device);
///  * backward calls accumulate parameter gradients (across micro-batches) and add to dx/dh/df.
class AdapterHook {
 public:
  virtual ~AdapterHook() = default;

  virtual bool has_linear(const LinearSite& site) const = 0;
  /// y (N, out) already holds x·Wᵀ (+ bias); add the adapter's term, e.g. LoRA's s·(x·Aᵀ)·Bᵀ.
  virtual void linear_forward(const LinearSite& site, const Tensor& x, Tensor& y) = 0;
  /// dy (N, out), the same x (N, in); dx (N, in) already holds dy·W (the frozen path): accumulate
  /// the adapter's parameter gradients and add its share to dx.
  virtual void linear_backward(const LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) = 0;
  /// linear_backward in two halves, so that the model can start the tp all-reduce of dx before the
  /// parameter-gradient work and overlap the two (Megatron's asynchronous tensor-parallel all-reduce):
  /// linear_backward_input only adds the adapter's share to dx; linear_backward_weights, called later
  /// with the same x and dy (still valid), only accumulates the parameter gradients. Both together give
  /// what linear_backward gives. The defaults do all of it in the first half.
  virtual void linear_backward_input(const LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) {
    linear_backward(site, x, dy, dx);
  }
  virtual void linear_backward_weights(const LinearSite& site, const Tensor& x, const Tensor& dy) {
    (void)site, (void)x, (void)dy;
  }

  virtual bool has_block(int layer, BlockSite site) const = 0;
  /// h (N, C): the sub-block's input (the residual stream before its RMSNorm); f (N, C): the
  /// sub-block's output; out (N, C) already holds h + f. Add the adapter's term (bottleneck A with
  /// scaling s: Houlsby s·A(f), Pfeiffer s·A(h + f), parallel s·A(h)).
  virtual void block_forward(int layer, BlockSite site, const Tensor& h, const Tensor& f, Tensor& out) = 0;
  /// dout (N, C); dh and df (N, C) already hold dout each: accumulate parameter gradients and add the
  /// adapter's shares to dh and df.
  virtual void block_backward(int layer, BlockSite site, const Tensor& h, const Tensor& f, const Tensor& dout,
                              Tensor& dh, Tensor& df) = 0;

  /// Called once per backward pass after the backward of decoder layer `layer` is complete: none of that
  /// layer's parameter gradients changes again in this pass, so after the last micro-batch of a step
  /// they can leave for the optimizer while earlier layers are still computing. Default: nothing.
  virtual void layer_backward_done(int layer) { (void)layer; }
};

}  // namespace adapt::model
