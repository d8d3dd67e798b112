// GEMM through cuBLASLt: C = alpha · op(A) · op(B) + beta · C (+ bias) on row-major matrices, for
// f32, bf16 and f16 inputs with fp32 accumulation (CUBLAS_COMPUTE_32F; f32 inputs use TF32 only when
// GemmProblem::allow_tf32 asks), strided batches, and an optional bias epilogue. Each (device, stream)
// gets a workspace of kGemmWorkspaceBytes from the device's caching allocator; the algorithm is chosen
// once per GemmKey by cublasLtMatmulAlgoGetHeuristic and cached. The row-major to column-major mapping
// is written down in gemm_cublaslt_layout.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ops/cuda/gemm_cublaslt_layout.h"
#include "ops/matmul.h"
#include "tensor/tensor.h"

namespace adapt::ops::cuda {

constexpr std::size_t kGemmWorkspaceBytes = std::size_t{32} << 20;

/// Queues `p` on `stream` of cuda:`device`. a, b, c (and bias when p.bias) are device pointers with the
/// layout of `p`; with beta = 0, C is not read. Errors: ShapeError / UnsupportedError from
/// lt_gemm_for, CudaError naming the cuBLASLt call, its status and the problem.
void gemm(const GemmProblem& p, float alpha, const void* a, const void* b, float beta, void* c, const void* bias,
          int device, cudaStream_t stream);

struct GemmAlgoCacheStats {
  std::size_t entries = 0;
  std::int64_t hits = 0;    // gemm() calls that found their algorithm cached
  std::int64_t misses = 0;  // heuristic queries
};
GemmAlgoCacheStats gemm_algo_cache_stats();
/// Forgets every cached algorithm (the next call of each shape asks the heuristic again).
void gemm_algo_cache_clear();

/// ops::matmul on CUDA tensors: c (M, N) = alpha · op(a) · op(b) + beta · c, with the same shape rules
/// (rows are the leading dimensions flattened, one row stride per tensor). a and b must share a dtype
/// (f32, bf16, f16); c is f32 or that dtype. Queued on `stream` (default: the legacy default stream);
/// not synchronised.
void matmul(Tensor& c, const Tensor& a, const Tensor& b, const MatmulOptions& opts = {}, cudaStream_t stream = nullptr,
            bool allow_tf32 = false);

}  // namespace adapt::ops::cuda
