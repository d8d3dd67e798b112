// The AdamW update of one contiguous f32 range, vectorised for AVX-512 and AVX2 (chosen at run time
// from what the CPU supports) with a scalar fallback. Every path performs AdamW::step's operations in
// the same order without fused multiply-adds (this file and adamw.cpp build with -ffp-contract=off),
// so all of them give AdamW's result bit for bit.
#pragma once

#include <cstdint>
#include <string_view>

#include "optim/adamw.h"

namespace adapt::optim {

/// The f32 scalars of one AdamW step, as torch passes them to its float32 kernels.
struct AdamWScalars {
  float decay = 1.0f;  // 1 − lr·wd, or 1 for tensors without weight decay
  float beta1 = 0.9f;
  float one_minus_beta1 = 0.1f;
  float beta2 = 0.999f;
  float one_minus_beta2 = 0.001f;
  float bias_correction2_sqrt = 1.0f;
  float step_size = 0.0f;  // lr / (1 − beta1^step)
  float eps = 1e-8f;
};

/// The scalars of step number `step` (1-based) with learning rate `lr`; `decay` false gives decay = 1.
AdamWScalars adamw_scalars(const AdamWOptions& options, double lr, std::int64_t step, bool decay);

enum class CpuIsa { Scalar, Avx2, Avx512 };
std::string_view cpu_isa_name(CpuIsa isa);  // "scalar", "avx2", "avx512"
/// The widest of AVX-512F, AVX2 and scalar that this CPU supports.
CpuIsa cpu_isa_best();

/// p, m, v (n) updated in place from g (n): p ← p·decay; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// p ← p − step_size · m / (√v / √bc2 + eps). `isa` must be supported by this CPU (InternalError
/// otherwise). Single-threaded; callers split large ranges over threads.
void adamw_update(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamWScalars& s, CpuIsa isa);

}  // namespace adapt::optim
