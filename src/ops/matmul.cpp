#include "ops/matmul.h"

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_avx512_bf16.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/elementwise_cuda.h"
#include "ops/cuda/gemm_cublaslt.h"
#endif

namespace adapt::ops {

namespace {
DType g_cpu_matmul_dtype = DType::F32;
}  // namespace

void set_cpu_matmul_dtype(DType dtype) {
  ADAPT_REQUIRE(dtype == DType::F32 || dtype == DType::BF16, ConfigError,
                "cpu matmul dtype {} is not supported: use f32 or bf16", dtype_name(dtype));
  g_cpu_matmul_dtype = dtype;
}

DType cpu_matmul_dtype() { return g_cpu_matmul_dtype; }

bool cpu_bf16_dot_supported() { return cpu::gemm_avx512_bf16_supported(); }

std::string cpu_matmul_note() {
  if (g_cpu_matmul_dtype == DType::F32) return "CPU products in f32 (bf16 weights widened exactly)";
  return cpu_bf16_dot_supported()
             ? "CPU products by the base weights in bf16: weights in bf16, activations rounded to bf16, f32 sums, "
               "on AVX512_BF16 dot products"
             : "CPU products by the base weights in bf16: weights in bf16, activations rounded to bf16, f32 sums; "
               "this CPU has no AVX512_BF16, so they run as f32 products of the rounded values (slower than "
               "runtime.cpu_matmul_dtype = \"f32\")";
}

void matmul(Tensor& c, const Tensor& a, const Tensor& b, const MatmulOptions& opts) {
  constexpr const char* op = "matmul";
  detail::require_same_device(op, c, {&a, &b});
#if ADAPT_HAVE_CUDA
  if (!c.device().host_accessible()) return cuda::matmul(c, a, b, opts);
#endif
  if (!detail::on_cpu(op, c)) return;
  const detail::MatrixView A = detail::as_matrix(op, a), C = detail::as_matrix(op, c);
  ADAPT_REQUIRE(b.dtype() == DType::F32 || b.dtype() == DType::BF16, ShapeError,
                "matmul: '{}' has dtype {}; the second operand (a weight) must be f32 or bf16 (widened to f32 inside "
                "the product)",
                b.name(), dtype_name(b.dtype()));
  const detail::RawMatrixView B = detail::as_matrix_raw(op, b);
  const std::int64_t M = opts.transpose_a ? A.cols : A.rows;
  const std::int64_t K = opts.transpose_a ? A.rows : A.cols;
  const std::int64_t Kb = opts.transpose_b ? B.cols : B.rows;
  const std::int64_t N = opts.transpose_b ? B.rows : B.cols;
  ADAPT_REQUIRE(K == Kb, ShapeError,
                "matmul: inner dimensions differ: '{}' {}{} gives K = {} but '{}' {}{} gives K = {} (for y = x · Wᵀ, "
                "x is (.., in) and W is (out, in))",
                a.name(), a.shape().str(), opts.transpose_a ? "ᵀ" : "", K, b.name(), b.shape().str(),
                opts.transpose_b ? "ᵀ" : "", Kb);
  ADAPT_REQUIRE(C.rows == M && C.cols == N, ShapeError,
                "matmul: output '{}' has shape {} ({} x {} as a matrix) but the product is {} x {}", c.name(),
                c.shape().str(), C.rows, C.cols, M, N);
  cpu::gemm(opts.transpose_a, opts.transpose_b, M, N, K, opts.alpha, A.data, A.ld, B.data, b.dtype() == DType::BF16,
            B.ld, opts.beta, C.data, C.ld, b.dtype() == DType::BF16 && g_cpu_matmul_dtype == DType::BF16);
}

void bias_add(Tensor& y, const Tensor& bias) {
  constexpr const char* op = "bias_add";
  detail::require_same_device(op, y, {&bias});
  const detail::MatrixView Y = detail::as_matrix(op, y);
  detail::require_dtype(op, bias, DType::F32);
  detail::require_contiguous(op, bias);
  detail::require_shape(op, bias, Shape{Y.cols}, "one value per output column");
#if ADAPT_HAVE_CUDA
  if (!y.device().host_accessible()) return cuda::bias_add(y, bias);
#endif
  if (!detail::on_cpu(op, y)) return;
  cpu::bias_add(Y.data, Y.ld, bias.data<float>(), Y.rows, Y.cols);
}

}  // namespace adapt::ops
