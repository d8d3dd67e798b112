#include "ops/cuda/gemm_cublaslt_layout.h"

#include <fmt/format.h>

#include <cstdint>
#include <limits>

#include "core/error.h"

namespace adapt::ops::cuda {
namespace {

bool is_gemm_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

// Stored (row-major) rows and columns of A and B.
std::int64_t a_stored_rows(const GemmProblem& p) { return p.transpose_a ? p.k : p.m; }
std::int64_t a_stored_cols(const GemmProblem& p) { return p.transpose_a ? p.m : p.k; }
std::int64_t b_stored_rows(const GemmProblem& p) { return p.transpose_b ? p.n : p.k; }
std::int64_t b_stored_cols(const GemmProblem& p) { return p.transpose_b ? p.k : p.n; }

}  // namespace

std::string GemmProblem::str() const {
  return fmt::format(
      "gemm m={} n={} k={} batch={}: A {} ({}) lda={} stride={}, B {} ({}) ldb={} stride={}, C {} "
      "ldc={} stride={}{}{}",
      m, n, k, batch, dtype_name(a_type), transpose_a ? "T" : "N", lda, stride_a, dtype_name(b_type),
      transpose_b ? "T" : "N", ldb, stride_b, dtype_name(c_type), ldc, stride_c, bias ? ", bias" : "",
      allow_tf32 ? ", tf32" : "");
}

GemmProblem with_packed_defaults(GemmProblem p) {
  if (p.lda == 0) p.lda = a_stored_cols(p);
  if (p.ldb == 0) p.ldb = b_stored_cols(p);
  if (p.ldc == 0) p.ldc = p.n;
  if (p.stride_a == 0 && p.batch > 1) p.stride_a = a_stored_rows(p) * p.lda;
  if (p.stride_b == 0 && p.batch > 1) p.stride_b = b_stored_rows(p) * p.ldb;
  if (p.stride_c == 0 && p.batch > 1) p.stride_c = p.m * p.ldc;
  return p;
}

LtGemm lt_gemm_for(const GemmProblem& problem) {
  const GemmProblem p = with_packed_defaults(problem);
  ADAPT_REQUIRE(p.m >= 0 && p.n >= 0 && p.k > 0 && p.batch >= 1, ShapeError,
                "{}: dimensions must be m >= 0, n >= 0, k > 0, batch >= 1", p.str());
  ADAPT_REQUIRE(p.batch <= std::numeric_limits<std::int32_t>::max(), ShapeError, "{}: batch above 2^31 - 1", p.str());
  ADAPT_REQUIRE(is_gemm_dtype(p.a_type) && p.a_type == p.b_type, UnsupportedError,
                "{}: A and B must have the same dtype, one of f32, bf16, f16 (convert the other operand first)",
                p.str());
  ADAPT_REQUIRE(p.c_type == DType::F32 || p.c_type == p.a_type, UnsupportedError,
                "{}: C must be f32 or the inputs' dtype ({})", p.str(), dtype_name(p.a_type));
  ADAPT_REQUIRE(!p.allow_tf32 || p.a_type == DType::F32, UnsupportedError, "{}: TF32 applies to f32 inputs only",
                p.str());
  ADAPT_REQUIRE(p.lda >= std::max<std::int64_t>(1, a_stored_cols(p)), ShapeError,
                "{}: lda must be at least the {} columns of the stored A", p.str(), a_stored_cols(p));
  ADAPT_REQUIRE(p.ldb >= std::max<std::int64_t>(1, b_stored_cols(p)), ShapeError,
                "{}: ldb must be at least the {} columns of the stored B", p.str(), b_stored_cols(p));
  ADAPT_REQUIRE(p.ldc >= std::max<std::int64_t>(1, p.n), ShapeError, "{}: ldc must be at least n = {}", p.str(), p.n);
  ADAPT_REQUIRE(p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0, ShapeError,
                "{}: batch strides must not be negative", p.str());
  ADAPT_REQUIRE(p.batch == 1 || p.stride_c >= p.m * p.ldc, ShapeError,
                "{}: the output matrices of a batch overlap (stride_c < m · ldc = {})", p.str(), p.m * p.ldc);

  LtGemm g;
  g.m = p.n;
  g.n = p.m;
  g.k = p.k;
  g.transpose_a = p.transpose_b;
  g.transpose_b = p.transpose_a;
  g.batch = static_cast<std::int32_t>(p.batch);
  // Column-major view of a stored row-major matrix: rows = stored columns, cols = stored rows.
  g.a = LtMatrix{p.b_type, static_cast<std::uint64_t>(b_stored_cols(p)), static_cast<std::uint64_t>(b_stored_rows(p)),
                 p.ldb, p.stride_b};
  g.b = LtMatrix{p.a_type, static_cast<std::uint64_t>(a_stored_cols(p)), static_cast<std::uint64_t>(a_stored_rows(p)),
                 p.lda, p.stride_a};
  g.c = LtMatrix{p.c_type, static_cast<std::uint64_t>(p.n), static_cast<std::uint64_t>(p.m), p.ldc, p.stride_c};
  return g;
}

std::uint32_t pointer_alignment(const void* p) {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t a = 1;
  while (a < 256 && addr % (2 * a) == 0) a *= 2;
  return a;
}

std::string GemmKey::str() const {
  return fmt::format(
      "cuda:{} m={} n={} k={} batch={} ld=({},{},{}) strides=({},{},{}) {}{} x {}{} -> {}{}{} "
      "align=({},{},{},{})",
      device, m, n, k, batch, lda, ldb, ldc, stride_a, stride_b, stride_c, dtype_name(a_type), transpose_a ? "ᵀ" : "",
      dtype_name(b_type), transpose_b ? "ᵀ" : "", dtype_name(c_type), allow_tf32 ? " tf32" : "", bias ? " +bias" : "",
      align_a, align_b, align_c, align_bias);
}

std::size_t GemmKeyHash::operator()(const GemmKey& k) const {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
  auto mix = [&h](std::uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  for (std::int64_t v : {static_cast<std::int64_t>(k.device), k.m, k.n, k.k, k.batch, k.lda, k.ldb, k.ldc, k.stride_a,
                         k.stride_b, k.stride_c}) {
    mix(static_cast<std::uint64_t>(v));
  }
  mix(static_cast<std::uint64_t>(k.a_type) | static_cast<std::uint64_t>(k.b_type) << 8 |
      static_cast<std::uint64_t>(k.c_type) << 16 | static_cast<std::uint64_t>(k.transpose_a) << 24 |
      static_cast<std::uint64_t>(k.transpose_b) << 25 | static_cast<std::uint64_t>(k.allow_tf32) << 26 |
      static_cast<std::uint64_t>(k.bias) << 27);
  mix(static_cast<std::uint64_t>(k.align_a) | static_cast<std::uint64_t>(k.align_b) << 16 |
      static_cast<std::uint64_t>(k.align_c) << 32 | static_cast<std::uint64_t>(k.align_bias) << 48);
  return static_cast<std::size_t>(h);
}

GemmKey gemm_key(const GemmProblem& problem, int device, const void* a, const void* b, const void* c,
                 const void* bias) {
  const GemmProblem p = with_packed_defaults(problem);
  GemmKey k;
  k.device = device;
  k.m = p.m, k.n = p.n, k.k = p.k, k.batch = p.batch;
  k.lda = p.lda, k.ldb = p.ldb, k.ldc = p.ldc;
  k.stride_a = p.stride_a, k.stride_b = p.stride_b, k.stride_c = p.stride_c;
  k.a_type = p.a_type, k.b_type = p.b_type, k.c_type = p.c_type;
  k.transpose_a = p.transpose_a, k.transpose_b = p.transpose_b;
  k.allow_tf32 = p.allow_tf32, k.bias = p.bias;
  k.align_a = pointer_alignment(a), k.align_b = pointer_alignment(b), k.align_c = pointer_alignment(c);
  k.align_bias = p.bias ? pointer_alignment(bias) : 256;
  return k;
}

}  // namespace adapt::ops::cuda
