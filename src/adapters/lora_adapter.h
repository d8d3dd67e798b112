// LoraAdapter: one LoRA site (PEFT, SPEC-llama.md §5.4) on a frozen projection W (out, in):
// y += s·(dropout(x)·Aᵀ)·Bᵀ. Stateless between forward and backward: the backward recomputes the
// dropped input and u = x·Aᵀ (r ≪ out, so this costs a fraction of the base GEMM) instead of caching
// per-call activations, which keeps recomputation and micro-batching trivially correct.
#pragma once

#include <cstdint>
#include <string>

#include "adapters/adapter_config.h"
#include "adapters/adapter_rng_hash.h"
#include "ops/workspace.h"
#include "tensor/tensor.h"

namespace adapt::adapters {

/// The dropout applied to one call's input: element i of x (row-major) is kept when
/// dropout_keep(stream, i, p), and kept elements are scaled by 1 / (1 − p). p = 0: no dropout.
struct LoraDropout {
  double p = 0.0;
  std::uint64_t stream = 0;
  /// Tensor parallelism on a row-parallel site (x holds columns [col_offset, col_offset + in) of rows
  /// `width` wide): the mask of element (n, j) is that of element n·width + col_offset + j of the whole
  /// x, as on one rank. 0: x is whole.
  std::int64_t width = 0;
  std::int64_t col_offset = 0;
  /// Data parallelism: the rows of the micro-step's whole input (every replica's rows, in rank order)
  /// before this x's first row, so that a row's mask does not depend on the replica it runs on.
  std::int64_t row_offset = 0;
  bool active() const { return p > 0.0; }
  /// The element of the whole x that element i of an x with `in` columns is.
  std::int64_t element(std::int64_t i, std::int64_t in) const {
    return rng_hash_dropout_element(i, in, width, col_offset, row_offset);
  }
};

class LoraAdapter {
 public:
  /// Zero-filled A, B and gradients named "<prefix>.lora_a" / "<prefix>.lora_b".
  LoraAdapter(std::int64_t in, std::int64_t out, std::int64_t r, double scaling, const std::string& prefix);

  std::int64_t in() const { return a.dim(1); }
  std::int64_t out() const { return b.dim(0); }
  std::int64_t rank() const { return a.dim(0); }
  double scaling() const { return scaling_; }

  /// A from `init` (PEFT: U(−1/√in, 1/√in); gaussian: N(0, 1/r²)) with the counter-based stream
  /// `key`; B = 0, so the site starts as an exact no-op. The values are drawn on the host (and copied
  /// when the parameters live on a device).
  void init(LoraInit init, std::uint64_t key);
  /// Moves A, B and their gradients (values kept) to the memory of `alloc` (host or a CUDA device).
  void to_memory(Allocator& alloc);
  /// Where A, B and the gradients live.
  Device device() const { return a.device(); }

  /// y (N, out) += s·(dropout(x)·Aᵀ)·Bᵀ; x (N, in). Contiguous f32 tensors on device(); `ws` on the same
  /// device.
  void forward(const Tensor& x, Tensor& y, const LoraDropout& dropout, ops::Workspace& ws) const;
  /// With u = x̃·Aᵀ (x̃ the dropped input) and g = dy (N, out): grad_b += s·gᵀ·u, grad_a += s·(g·B)ᵀ·x̃,
  /// dx (N, in) += mask ⊙ s·(g·B)·A. Same x and dropout as the forward.
  void backward(const Tensor& x, const Tensor& dy, Tensor& dx, const LoraDropout& dropout, ops::Workspace& ws);
  /// backward in two halves (model::AdapterHook::linear_backward_input / _weights), so that the tp
  /// all-reduce of dx can run during the parameter-gradient work. backward_input: only
  /// dx += mask ⊙ s·(g·B)·A. backward_weights, with the same x, dy and dropout: only grad_b and grad_a.
  /// The weights half recomputes g·B (N, r) rather than keeping it between the calls (an extra
  /// N·out·r multiply-adds, small next to the base dx GEMM's N·out·in). Together they give backward's
  /// bits: the same ops on the same operands, each result written by one of the halves.
  void backward_input(const Tensor& x, const Tensor& dy, Tensor& dx, const LoraDropout& dropout,
                      ops::Workspace& ws) const;
  void backward_weights(const Tensor& x, const Tensor& dy, const LoraDropout& dropout, ops::Workspace& ws);

  /// w (out, in), f32: w += sign·s·B·A (sign = +1 merges, −1 unmerges).
  void merge_into(Tensor& w, double sign) const;

  Tensor a;       // (r, in)   lora_A.weight; f32 on device()
  Tensor b;       // (out, r)  lora_B.weight
  Tensor grad_a;  // (r, in)
  Tensor grad_b;  // (out, r)

 private:
  double scaling_;
  /// x̃ = x ⊙ mask / (1 − p) in workspace memory, or x itself without dropout.
  Tensor dropped_input(const Tensor& x, const LoraDropout& dropout, ops::Workspace& ws) const;
  /// The steps backward and its halves share (so their bits agree by construction).
  void check_backward(const char* what, const Tensor& x, const Tensor& dy, const Tensor* dx) const;
  /// gu (N, r) = dy · B, in workspace memory.
  Tensor grad_u(const Tensor& dy, ops::Workspace& ws) const;
  /// grad_b += s·dyᵀ·(x̃·Aᵀ), grad_a += s·guᵀ·x̃.
  void accumulate_grads(const Tensor& xd, const Tensor& dy, const Tensor& gu, ops::Workspace& ws);
  /// dx += mask ⊙ s·gu·A.
  void add_input_share(Tensor& dx, const Tensor& gu, const LoraDropout& dropout, ops::Workspace& ws) const;
};

}  // namespace adapt::adapters
