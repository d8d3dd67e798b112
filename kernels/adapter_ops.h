// Host launchers of the adapter kernels (src/adapters/): the LoRA dropout mask (the hash of
// src/adapters/adapter_rng_hash.h, so the mask is the CPU's bit for bit), and the bottleneck adapter's
// bias add, column sums (bias gradients, in double), activations and LayerNorm (ln_before), with the
// formulas of src/adapters/adapter_math.cpp. Every tensor is f32, row-major and contiguous on one device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace adapt::kernels {

/// One LoRA dropout mask (src/adapters/lora_adapter.h LoraDropout): element i of the (n_rows, n_cols)
/// input is kept when rng_hash_dropout_keep(stream, rng_hash_dropout_element(i, n_cols, width,
/// col_offset), p), and kept elements are scaled by keep_scale (1 / (1 − p) rounded to f32).
struct LoraDropoutMask {
  double p = 0.0;
  float keep_scale = 1.0f;
  std::uint64_t stream = 0;
  std::int64_t width = 0;       // row width of the whole input on a row-parallel tp site; 0: whole
  std::int64_t col_offset = 0;  // first column of this rank's slice within the whole input
  std::int64_t row_offset = 0;  // rows of the micro-step's whole input before this rank's (data parallelism)
};

/// accumulate = false: out = mask ⊙ x · keep_scale (dropped elements 0; out may alias x).
/// accumulate = true: out += mask ⊙ x · keep_scale (dropped elements leave out unchanged).
void launch_lora_dropout(float* out, const float* x, std::int64_t n_rows, std::int64_t n_cols,
                         const LoraDropoutMask& mask, bool accumulate, cudaStream_t stream);

/// y[i, j] += alpha · bias[j] for the (n_rows, n_cols) y; alpha · bias[j] is rounded to f32 first, as
/// the CPU does.
void launch_adapter_bias_add(float* y, const float* bias, std::int64_t n_rows, std::int64_t n_cols, float alpha,
                             cudaStream_t stream);

/// The bottleneck activations (AdapterHub's "relu", "swish" = x·σ(x), "gelu" = the exact erf form).
enum class AdapterActivation : int { Relu = 0, Swish = 1, Gelu = 2 };

/// out = act(pre) over n elements (out may alias pre).
void launch_adapter_activation_forward(float* out, const float* pre, std::int64_t n, AdapterActivation act,
                                       cudaStream_t stream);
/// grad *= act'(pre) over n elements.
void launch_adapter_activation_backward(float* grad, const float* pre, std::int64_t n, AdapterActivation act,
                                        cudaStream_t stream);

/// nn.LayerNorm over the n_cols of each row: out = (z − μ)·ρ·w + b with μ and the biased variance
/// summed in double, ρ = 1/√(var + eps); mean_rstd (n_rows, 2) receives (μ, ρ) rounded to f32, as the
/// CPU keeps them. One block per row. out must not alias z.
void launch_adapter_layer_norm_forward(float* out, float* mean_rstd, const float* z, const float* w, const float* b,
                                       std::int64_t n_rows, std::int64_t n_cols, double eps, cudaStream_t stream);

/// The LayerNorm backward given the gradient dzn of its output: with ẑ = (z − μ)·ρ and u = dzn ⊙ w,
/// dz = ρ·(u − mean(u) − ẑ·mean(u ⊙ ẑ)) (row means in double; dz overwritten) and
/// dw_terms (n_rows, n_cols) = dzn ⊙ ẑ, whose column sums are the weight gradient (the caller adds
/// them with launch_column_sum (kernels/elementwise.h), and those of dzn for the bias). One block per row.
void launch_adapter_layer_norm_backward(float* dz, float* dw_terms, const float* dzn, const float* z,
                                        const float* mean_rstd, const float* w, std::int64_t n_rows,
                                        std::int64_t n_cols, cudaStream_t stream);

}  // namespace adapt::kernels
