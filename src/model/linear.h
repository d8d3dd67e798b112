// The single call site of every projection of the model (STYLE principle 5, llama.cpp's
// llm_build_lora_mm): y = x · Wᵀ (+ b), then the adapter hook's term for that site; and its backward,
// dx = dy · W, then the hook's backward with the same x. Base weights are frozen: there is no dW.
#pragma once

#include "model/adapter_hook.h"
#include "tensor/tensor.h"

namespace adapt::model {

struct LinearOptions {
  bool accumulate = false;  // forward: y += x · Wᵀ (+ b) (the residual add fused into the GEMM);
                            // backward: dx += dy · W (gradients of x from several projections)
  bool input_grad = true;   // backward: false when nothing reads dx (the first layer's q, k, v: the
                            // embedding is frozen): dy · W is skipped and dx holds only the hook's share
  /// forward: x already in the weight's dtype (gemm_input(x, w)), so that the projections of one input
  /// (q, k, v; gate, up) share one cast of it; the hook still gets x. Null: linear casts x itself.
  const Tensor* x_for_gemm = nullptr;
};

/// `x` (on a CUDA device) in `dtype`: `x` itself when it already is, else a contiguous copy from the
/// device's caching allocator (released in stream order). For gemm_input and attention's bf16 operands.
Tensor device_in_dtype(const Tensor& x, DType dtype);

/// x as the GEMM of a projection by `w` takes it: on a CUDA device with bf16 weights a bf16 copy
/// (cuBLASLt multiplies one dtype by the same dtype), else x itself. For LinearOptions::x_for_gemm.
Tensor gemm_input(const Tensor& x, const Tensor& w);

/// y (.., out) = x (.., in) · Wᵀ (+ bias) for w (out, in) (f32 or bf16), or += with accumulate; then,
/// when `hook` has `site`, hook->linear_forward(site, x, y) on (N, in) / (N, out) views adds the
/// adapter's term. x and y contiguous (or rows with one stride for the GEMM; the hook needs contiguous).
void linear(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* bias, const LinearSite& site,
            AdapterHook* hook = nullptr, const LinearOptions& opts = {});

/// The backward of linear() for a frozen W: dx (.., in) = dy (.., out) · W, or += with accumulate;
/// then, when `hook` has `site`, hook->linear_backward(site, x, dy, dx) with the forward's x
/// accumulates the adapter's parameter gradients and adds its share to dx. No gradient of W or bias.
void linear_backward(Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& w, const LinearSite& site,
                     AdapterHook* hook = nullptr, const LinearOptions& opts = {});

/// linear_backward in two halves, so that the caller can start the tp all-reduce of dx between them
/// and overlap it with the adapter's parameter-gradient work (Megatron's asynchronous tensor-parallel
/// all-reduce). linear_backward_input: dx as linear_backward computes it (dy · W, opts as there, then
/// the hook's share of dx through hook->linear_backward_input), no parameter gradient.
/// linear_backward_weights, called later with the same dy and x (unchanged in between): the hook's
/// parameter gradients (hook->linear_backward_weights); dx is not touched. Together they give what
/// linear_backward gives (bit for bit with adapters::AdapterSet on the CPU).
void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& w, const LinearSite& site,
                           AdapterHook* hook = nullptr, const LinearOptions& opts = {});
void linear_backward_weights(const Tensor& dy, const Tensor& x, const LinearSite& site, AdapterHook* hook = nullptr);

/// (N, width) contiguous view of a contiguous tensor whose last dimension is `width`: the 2-D shape
/// the hook interface promises its implementations.
Tensor as_rows(const Tensor& t);

}  // namespace adapt::model
