// Matrix products in f32 (or bf16 products by bf16 weights on request: set_cpu_matmul_dtype): the one
// GEMM entry point of the forward and backward passes. Weights stay in HF's nn.Linear layout (out, in),
// so the forward is y = x · Wᵀ and the backward reuses the same call with other transpose flags:
// dx = g · W, dW += gᵀ · x (beta = 1 accumulates).
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace adapt::ops {

struct MatmulOptions {
  bool transpose_a = false;  // use aᵀ
  bool transpose_b = true;   // use bᵀ: b is a weight stored (out, in)
  float alpha = 1.0f;
  float beta = 0.0f;  // 0: overwrite c; 1: c += alpha · op(a) · op(b) (residual adds, gradient sums)
};

/// c (M, N) = alpha · op(a) (M, K) · op(b) (K, N) + beta · c, in f32 arithmetic (on the CPU with
/// cpu_matmul_dtype() = bf16 and a bf16 b: op(a) rounded to bf16 first).
/// a and c are f32; b (a weight) is f32 or bf16: bf16 is widened to f32 exactly inside the product,
/// so both give the same numbers up to summation order (docs/NUMERICS.md). Every tensor is viewed as
/// a matrix whose rows are its leading dimensions flattened (x may be (B, T, C) and c (B, T, N));
/// views with one row stride are accepted. With beta = 0, c is not read (it may hold garbage).
/// CPU: own packed sgemm with AVX-512 (OpenBLAS otherwise), own streaming kernels for few rows (<= 32
/// with AVX-512, <= 8 without), split over OpenMP threads.
/// ShapeError names the tensors and the mismatching dimension.
void matmul(Tensor& c, const Tensor& a, const Tensor& b, const MatmulOptions& opts = {});

/// How matmul multiplies by bf16 weights on the CPU, for the whole process (as torch's
/// set_float32_matmul_precision); the apps set it from runtime.cpu_matmul_dtype. DType::F32 (the
/// default, the reference): bf16 weights are widened exactly and everything is f32. DType::BF16: the first
/// operand (activations, output gradients) is rounded to bf16 (nearest even) too, so each product is one
/// of two bf16 values, summed in f32 — the GPU path's bf16 GEMMs — on the CPU's bf16 dot-product
/// instructions where it has them (cpu_bf16_dot_supported()). Products by f32 operands (adapters,
/// attention) and GPU tensors are unaffected. Set it before the threads that call matmul start.
void set_cpu_matmul_dtype(DType dtype);
DType cpu_matmul_dtype();
/// True when this CPU has AVX512_BF16 (Zen 4, Sapphire Rapids and later): cpu_matmul_dtype() = bf16 then
/// runs vdpbf16ps, twice the multiply-adds per instruction of f32; without it bf16 products are f32
/// products of rounded values (the same numbers up to summation order, slower than f32).
bool cpu_bf16_dot_supported();
/// One line for the logs: how products by bf16 weights run on this CPU under cpu_matmul_dtype().
std::string cpu_matmul_note();

/// y (.., N) += bias (N) on every row.
void bias_add(Tensor& y, const Tensor& bias);

}  // namespace adapt::ops
