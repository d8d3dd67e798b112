// The host-side logic of the cuBLASLt GEMM, free of CUDA headers so that it builds and is tested in
// every configuration: the row-major problem, its mapping onto cuBLASLt's column-major operands, and
// the key under which the chosen algorithm is cached.
//
// Row-major to column-major. A row-major R x C matrix with row stride ld is, byte for byte, the
// column-major C x R matrix (its transpose) with leading dimension ld. So the row-major product
//     C (M x N) = op(A) (M x K) · op(B) (K x N)
// is, read column-major, the product of the transposes
//     Cᵀ (N x M) = op(B)ᵀ (N x K) · op(A)ᵀ (K x M),
// which cuBLASLt computes with its "A" = our B and its "B" = our A, the transpose flags kept as they
// are (op(B)ᵀ of the column-major view of B is op(B) applied to the stored matrix), and
//     m_lt = N, n_lt = M, k_lt = K.
// The layouts describe the matrices as stored (before op), column-major:
//     lt A (our B): rows = transpose_b ? K : N, cols = transpose_b ? N : K, ld = ldb
//     lt B (our A): rows = transpose_a ? M : K, cols = transpose_a ? K : M, ld = lda
//     lt C = lt D:  rows = N, cols = M, ld = ldc
// A bias of N values (one per column of the row-major C) is then one per row of the column-major
// D, which is what CUBLASLT_EPILOGUE_BIAS broadcasts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "dtype/dtype.h"

namespace adapt::ops::cuda {

/// C = alpha · op(A) · op(B) + beta · C on row-major matrices (the ops::matmul convention), possibly
/// a strided batch of them. Leading dimensions and batch strides are in elements; 0 means packed.
struct GemmProblem {
  std::int64_t m = 0, n = 0, k = 0;
  bool transpose_a = false;  // A is stored (K, M) and used transposed
  bool transpose_b = false;  // B is stored (N, K) and used transposed (a weight in HF layout)
  DType a_type = DType::BF16, b_type = DType::BF16;
  DType c_type = DType::F32;  // C and the output; f32 or the inputs' dtype
  std::int64_t lda = 0, ldb = 0, ldc = 0;
  std::int64_t batch = 1;
  std::int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  bool allow_tf32 = false;  // f32 inputs only: let cuBLASLt round them to TF32 (CUBLAS_COMPUTE_32F_FAST_TF32)
  bool bias = false;        // add a vector of N values (dtype c_type) to every row of C

  /// "gemm m=.. n=.. k=.. batch=.. A bf16 (N) lda=.. B bf16 (T) ldb=.. C f32 ldc=.."
  std::string str() const;
};

/// One operand as cuBLASLt sees it (column-major, before its op).
struct LtMatrix {
  DType dtype = DType::F32;
  std::uint64_t rows = 0, cols = 0;
  std::int64_t ld = 0;
  std::int64_t batch_stride = 0;
};

/// The cuBLASLt call for a GemmProblem (see the mapping above).
struct LtGemm {
  std::int64_t m = 0, n = 0, k = 0;  // of the column-major product
  bool transpose_a = false;          // op of lt A (= our B)
  bool transpose_b = false;          // op of lt B (= our A)
  LtMatrix a, b, c;                  // c also describes D
  std::int32_t batch = 1;
};

/// Fills in packed leading dimensions and strides, checks dtypes, dimensions, leading dimensions
/// (ShapeError) and dtype combinations (UnsupportedError), and maps to cuBLASLt. m or n may be 0
/// (nothing to do); k must be > 0.
LtGemm lt_gemm_for(const GemmProblem& p);

/// The largest power of two (at most 256) dividing the address: what cuBLASLt's
/// CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES preferences are told. 256 for nullptr.
std::uint32_t pointer_alignment(const void* p);

/// Everything the heuristic's answer depends on: problem shape, strides, dtypes, transposes, math
/// mode, epilogue, operand alignments and the device.
struct GemmKey {
  int device = 0;
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  std::int64_t lda = 0, ldb = 0, ldc = 0, stride_a = 0, stride_b = 0, stride_c = 0;
  DType a_type = DType::F32, b_type = DType::F32, c_type = DType::F32;
  bool transpose_a = false, transpose_b = false, allow_tf32 = false, bias = false;
  std::uint32_t align_a = 256, align_b = 256, align_c = 256, align_bias = 256;

  friend bool operator==(const GemmKey&, const GemmKey&) = default;
  std::string str() const;
};

struct GemmKeyHash {
  std::size_t operator()(const GemmKey& k) const;
};

/// The key of `p` (already completed by lt_gemm_for's rules: packed ld and strides filled in) on
/// `device` with these operand pointers.
GemmKey gemm_key(const GemmProblem& p, int device, const void* a, const void* b, const void* c, const void* bias);

/// `p` with 0 leading dimensions and strides replaced by the packed values.
GemmProblem with_packed_defaults(GemmProblem p);

}  // namespace adapt::ops::cuda
