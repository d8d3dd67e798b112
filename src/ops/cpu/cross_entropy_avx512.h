// The cross-entropy of one row of logits on CPUs with AVX-512: the three passes of
// rows_backward_cpu.cpp's cross_entropy_row (max, exponentials and their sum, scaling) written with
// intrinsics. GCC 12 left that row's loop scalar in every target_clones variant (~15 cycles per logit
// at vocabulary 32,000, 4.5% of a training step of the bench preset) until adapt_ops was built with
// -fno-trapping-math; it vectorises the AVX2 clone since, and this file stays what AVX-512 CPUs run.
// Its translation unit alone is compiled for AVX-512.
#pragma once

#include <cstdint>

namespace adapt::ops::cpu {

/// −log softmax(z)[y] of one row of V logits; when grad, z becomes its gradient in place:
/// grad_scale · (softmax(z) − onehot(y)). The exponentials are vec_math.h's exp_f32 on 16 lanes, summed
/// in double (16 lanes, combined in a fixed order). Precondition: gemm_avx512_supported(), V >= 1.
double cross_entropy_row_avx512(float* z, std::int64_t V, std::int64_t y, float grad_scale, bool grad);

}  // namespace adapt::ops::cpu
