// GEMM on the CPU. Four paths, one thread pool:
//  * few rows (decoding) against a weight stored (N, K): our own streaming kernels, since OpenBLAS
//    0.3.21's sgemv reads weights at ~15 GB/s per core where a plain loop reaches ~25: each weight
//    vector is loaded once for all rows, with AVX-512 (skinny_avx512.cpp) or AVX2 (skinny_avx2.cpp),
//    else one dot product per row (skinny_cpu.cpp);
//  * CPUs with AVX-512: our packed sgemm (gemm_avx512.cpp) for f32 and bf16 weights alike (bf16 is
//    widened while packing, so it costs nothing extra); 3-6% faster than OpenBLAS 0.3.21 per core on
//    Zen 4 and no C clearing or panel widening passes (docs/PERFORMANCE.md, "CPU GEMM");
//  * CPUs with AVX2 and FMA: the same loop nest (gemm_packed_loop.h) with 6 x 16 tiles (gemm_avx2.cpp)
//    for attention's tiles (gemm_serial: 1.1-1.7x OpenBLAS on Zen 3); the products below for the rest
//    (docs/PERFORMANCE.md, 2026-11-23);
//  * other CPUs and products, f32: OpenBLAS sgemm (sgemv for a single row of a transposed product);
//  * other CPUs and products, bf16 weights: panels widened to f32 (exact) into a per-thread buffer,
//    then sgemm;
//  * bf16 products (ops::cpu_matmul_dtype() = bf16, bf16 weights): the bf16 dot-product kernel
//    (gemm_avx512_bf16.cpp) on CPUs with AVX512_BF16, split as the packed kernel; few rows, or other
//    CPUs: a copy of a rounded to bf16, then the paths above. gemm_serial's bf16 products (attention's
//    tiles in bf16) round both operands the same way.
// OpenBLAS is kept single-threaded and products are split over OpenMP threads here (by output columns,
// or rows when there are few columns): OpenBLAS's own pthreads spinning next to OpenMP's made
// decoding 2.5x slower on 2 cores. Splits never cut K, so every thread count gives the same bits.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/gemm_avx2.h"
#include "ops/cpu/gemm_avx512.h"
#include "ops/cpu/gemm_avx512_bf16.h"
#include "ops/cpu/gemm_packed_loop.h"
#include "ops/cpu/skinny_avx2.h"
#include "ops/cpu/skinny_avx512.h"

namespace adapt::ops::cpu {

// skinny_cpu.cpp
void skinny_rows_f32(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M, const float* w,
                     std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end, std::int64_t K, float alpha,
                     float beta);
void skinny_rows_bf16(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M,
                      const std::uint16_t* w, std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end,
                      std::int64_t K, float alpha, float beta);

namespace {

constexpr std::int64_t kParallelMinMacs = 1 << 18;  // below: run on the calling thread
constexpr std::int64_t kSplitAlign = 16;            // thread ranges are whole 16-column panels
static_assert(kSplitAlign % kGemmAvx512ColAlign == 0, "column cuts where the packed kernel wastes no work");
constexpr std::int64_t kSkinnyMaxRows = 8;      // few-rows kernels without AVX-512: up to here the weights dominate
constexpr std::int64_t kPanelFloats = 1 << 18;  // bf16 widening buffer per thread: 1 MB
constexpr std::int64_t kChunksPerThread = 4;    // packed kernel: ranges per thread (dynamic schedule)
constexpr std::int64_t kPackedMinChunk = 256;   // packed kernel: rows or columns per range, at least

blasint ld_of(std::int64_t ld, std::int64_t cols) {
  return static_cast<blasint>(std::max<std::int64_t>({ld, cols, 1}));
}

// One BLAS call; a_cols / b_cols are the stored column counts (for the leading-dimension minimum).
void blas_call(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
               std::int64_t lda, std::int64_t a_cols, const float* b, std::int64_t ldb, std::int64_t b_cols, float beta,
               float* c, std::int64_t ldc) {
  if (M == 1 && !trans_a) {
    // y (N) = op(b) · x: b stored (N, K) when trans_b, else (K, N).
    cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, static_cast<blasint>(trans_b ? N : K),
                static_cast<blasint>(trans_b ? K : N), alpha, b, ld_of(ldb, b_cols), a, 1, beta, c, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, a, ld_of(lda, a_cols),
              b, ld_of(ldb, b_cols), beta, c, ld_of(ldc, N));
}

// Columns [n0, n1) of c from bf16 b: widen panels of op(b) columns, then sgemm each panel.
void gemm_bf16_cols(bool trans_a, bool trans_b, std::int64_t M, std::int64_t n0, std::int64_t n1, std::int64_t K,
                    float alpha, const float* a, std::int64_t lda, std::int64_t a_cols, const std::uint16_t* b,
                    std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  thread_local std::vector<float> panel;  // reused across calls: no allocation once warm
  const std::int64_t width = std::max<std::int64_t>(kSplitAlign, kPanelFloats / K / kSplitAlign * kSplitAlign);
  panel.resize(static_cast<std::size_t>(width * K));
  for (std::int64_t p0 = n0; p0 < n1; p0 += width) {
    const std::int64_t p = std::min(width, n1 - p0);
    if (trans_b) {
      widen_bf16_rows(panel.data(), K, b + p0 * ldb, ldb, p, K);  // rows p0.. of b (N, K) -> (p, K)
      blas_call(trans_a, true, M, p, K, alpha, a, lda, a_cols, panel.data(), K, K, beta, c + p0, ldc);
    } else {
      widen_bf16_rows(panel.data(), p, b + p0, ldb, K, p);  // columns p0.. of b (K, N) -> (K, p)
      blas_call(trans_a, false, M, p, K, alpha, a, lda, a_cols, panel.data(), p, p, beta, c + p0, ldc);
    }
  }
}

// c = beta · c (a product with K = 0 or alpha = 0); with beta = 0, c may hold garbage (even NaN
// patterns) and is not read.
void scale_c(std::int64_t M, std::int64_t N, float beta, float* c, std::int64_t ldc) {
  if (beta == 1.0f) return;
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

// Before a BLAS call with beta = 0: BLAS may compute 0 · c, and c may hold garbage (even NaN patterns).
void clear_c(std::int64_t M, std::int64_t N, float* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < M; ++i) std::memset(c + i * ldc, 0, static_cast<std::size_t>(N) * sizeof(float));
}

}  // namespace

PackBuffer::~PackBuffer() { std::free(data_); }

float* PackBuffer::get(std::int64_t n_floats) {
  if (n_floats > n_floats_) {
    std::free(data_);
    n_floats_ = 0;
    const std::size_t n_bytes = (static_cast<std::size_t>(n_floats) * sizeof(float) + 63) / 64 * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, n_bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    n_floats_ = n_floats;
  }
  return data_;
}

PackBuffer& a_pack_buffer() {
  thread_local PackBuffer buffer;
  return buffer;
}

PackBuffer& b_pack_buffer() {
  thread_local PackBuffer buffer;
  return buffer;
}

void blas_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

#if ADAPT_HAVE_X86_KERNELS
bool gemm_avx512_supported() {
  // Here, not in gemm_avx512.cpp: that file is compiled for AVX-512 and must not run before this check.
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  return supported;
}
bool gemm_avx2_supported() {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
}
bool skinny_avx2_supported() { return gemm_avx2_supported(); }
bool gemm_avx512_bf16_supported() {
  static const bool supported = gemm_avx512_supported() && __builtin_cpu_supports("avx512bf16");
  return supported;
}
#else
bool gemm_avx512_supported() { return false; }
bool gemm_avx2_supported() { return false; }
bool skinny_avx2_supported() { return false; }
bool gemm_avx512_bf16_supported() { return false; }
void gemm_avx512_bf16(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t,
                      const std::uint16_t*, std::int64_t, float, float*, std::int64_t) {
  ADAPT_CHECK(false, "gemm_avx512_bf16 called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
std::int64_t gemm_avx512_bf16_packed_b_floats(std::int64_t, std::int64_t) { return 0; }
void gemm_avx512_bf16_pack_b(bool, std::int64_t, std::int64_t, const void*, bool, std::int64_t, float*) {
  ADAPT_CHECK(false, "gemm_avx512_bf16_pack_b called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
std::int64_t gemm_avx512_bf16_packed_a_floats(std::int64_t, std::int64_t) { return 0; }
void gemm_avx512_bf16_pack_a(std::int64_t, std::int64_t, const float*, std::int64_t, float*) {
  ADAPT_CHECK(false, "gemm_avx512_bf16_pack_a called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
void gemm_avx512_bf16_packed(std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t, const float*,
                             const float*, float, float*, std::int64_t) {
  ADAPT_CHECK(false, "gemm_avx512_bf16_packed called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
std::int64_t gemm_avx512_packed_b_floats(std::int64_t, std::int64_t) { return 0; }
void gemm_avx512_pack_b(bool, std::int64_t, std::int64_t, const void*, bool, std::int64_t, float*) {
  ADAPT_CHECK(false, "gemm_avx512_pack_b called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
std::int64_t gemm_avx512_packed_a_floats(std::int64_t, std::int64_t) { return 0; }
void gemm_avx512_pack_a(std::int64_t, std::int64_t, const float*, std::int64_t, float*) {
  ADAPT_CHECK(false, "gemm_avx512_pack_a called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
void gemm_avx512_packed(std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t, const float*,
                        const float*, float, float*, std::int64_t) {
  ADAPT_CHECK(false, "gemm_avx512_packed called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
void gemm_avx2(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t, const void*,
               bool, std::int64_t, float, float*, std::int64_t) {
  ADAPT_CHECK(false, "gemm_avx2 called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
void skinny_avx2(float*, std::int64_t, const float*, std::int64_t, std::int64_t, const void*, bool, std::int64_t,
                 std::int64_t, std::int64_t, std::int64_t, float, float) {
  ADAPT_CHECK(false, "skinny_avx2 called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
void gemm_avx512(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t, const void*,
                 bool, std::int64_t, float, float*, std::int64_t) {
  ADAPT_CHECK(false, "gemm_avx512 called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
void skinny_avx512(float*, std::int64_t, const float*, std::int64_t, std::int64_t, const void*, bool, std::int64_t,
                   std::int64_t, std::int64_t, std::int64_t, float, float) {
  ADAPT_CHECK(false, "skinny_avx512 called in a build without it (ADAPT_HAVE_X86_KERNELS = 0)");
}
#endif

void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
          std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
          bool bf16_products) {
  ADAPT_CHECK(!bf16_products || b_bf16, "gemm: bf16 products need bf16 weights (b_bf16)");
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    scale_c(M, N, beta, c, ldc);
    return;
  }
  const auto* bf = static_cast<const float*>(b);
  const auto* bh = static_cast<const std::uint16_t*>(b);
  const std::int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
  const int n_threads = omp_in_parallel() || M * N * K < kParallelMinMacs ? 1 : omp_get_max_threads();
  const bool avx512 = gemm_avx512_supported(), avx2 = !avx512 && gemm_avx2_supported();
  const bool skinny = !trans_a && trans_b && M <= (avx512 ? kSkinnyAvx512MaxRows : kSkinnyMaxRows);
  // bf16 products without the dot-product kernel: the same products of bf16 values from a rounded copy of
  // op(a) (in the calling thread's buffer, kept across calls), through the f32 paths.
  const bool bf16_dot = bf16_products && !skinny && M > 1 && gemm_avx512_bf16_supported();
  if (bf16_products && !bf16_dot) {
    thread_local std::vector<float> rounded;
    rounded.resize(static_cast<std::size_t>(M * K));
    const std::int64_t rows = trans_a ? K : M, cols = trans_a ? M : K;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 18) && !omp_in_parallel())
    for (std::int64_t r = 0; r < rows; ++r) round_bf16_rows(rounded.data() + r * cols, cols, a + r * lda, lda, 1, cols);
    gemm(trans_a, trans_b, M, N, K, alpha, rounded.data(), cols, b, b_bf16, ldb, beta, c, ldc, false);
    return;
  }
  // AVX2: OpenBLAS. The packed kernel ran these products at 0.8-1.05x OpenBLAS and a training step 3-4%
  // slower; it was 1.1-1.8x on products of few columns or a short K, but a kernel chosen by shape
  // changes a product's rounding when tensor or data parallelism changes its shape, and training on
  // another layout then drifts from one rank's (docs/PERFORMANCE.md, 2026-11-23).
  const bool packed = !skinny && M > 1 && avx512;
  if (!skinny && !packed) {
    blas_single_threaded();
    if (beta == 0.0f) clear_c(M, N, c, ldc);
  }
  // Columns when there are enough (each thread streams its own rows of a weight stored (N, K)); rows
  // otherwise (f32 BLAS only; bf16 panels are always split by columns). The packed kernel: by rows
  // unless c is much wider than tall (measured on 2 cores: 512 x 768 x 768 at 220 GFLOP/s by rows,
  // 206 by columns; 512 x 32000 x 768 at 211 by rows, 214 by columns).
  const bool by_cols = skinny || (packed ? N >= 4 * M : b_bf16 || N >= kSplitAlign * n_threads || N >= M);
  const std::int64_t extent = by_cols ? N : M;
  const std::int64_t align = packed && !by_cols ? kGemmAvx512RowAlign : kSplitAlign;
  // The packed kernel gets up to kChunksPerThread ranges per thread, handed out dynamically: when another
  // process takes a core for a while, the other thread does more of the product instead of waiting at
  // the end of it. Each range packs the other operand again, so ranges stay >= kPackedMinChunk.
  const std::int64_t n_chunks = packed && n_threads > 1 ? std::clamp<std::int64_t>(extent / kPackedMinChunk, n_threads,
                                                                                   kChunksPerThread * n_threads)
                                                        : n_threads;
  const std::int64_t step = ((extent + n_chunks - 1) / n_chunks + align - 1) / align * align;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
  for (std::int64_t t = 0; t < n_chunks; ++t) {
    const std::int64_t begin = std::min(extent, t * step), end = std::min(extent, begin + step);
    if (begin == end) continue;
    if (skinny && avx512) {
      skinny_avx512(c, ldc, a, lda, M, b, b_bf16, ldb, begin, end, K, alpha, beta);
    } else if (skinny && avx2) {
      skinny_avx2(c, ldc, a, lda, M, b, b_bf16, ldb, begin, end, K, alpha, beta);
    } else if (skinny) {
      if (b_bf16) {
        skinny_rows_bf16(c, ldc, a, lda, M, bh, ldb, begin, end, K, alpha, beta);
      } else {
        skinny_rows_f32(c, ldc, a, lda, M, bf, ldb, begin, end, K, alpha, beta);
      }
    } else if (packed) {
      // Columns [begin, end) of op(b) are rows of b when trans_b, columns otherwise; rows [begin, end)
      // of op(a) are rows of a, or columns of a when trans_a.
      const std::int64_t b_offset = !by_cols ? 0 : trans_b ? begin * ldb : begin;
      const std::int64_t a_offset = by_cols ? 0 : trans_a ? begin : begin * lda;
      const void* bs = b_bf16 ? static_cast<const void*>(bh + b_offset) : static_cast<const void*>(bf + b_offset);
      float* cs = by_cols ? c + begin : c + begin * ldc;
      const std::int64_t m = by_cols ? M : end - begin, n = by_cols ? end - begin : N;
      if (bf16_dot) {
        gemm_avx512_bf16(trans_a, trans_b, m, n, K, alpha, a + a_offset, lda, bh + b_offset, ldb, beta, cs, ldc);
      } else {
        gemm_avx512(trans_a, trans_b, m, n, K, alpha, a + a_offset, lda, bs, b_bf16, ldb, beta, cs, ldc);
      }
    } else if (b_bf16) {
      gemm_bf16_cols(trans_a, trans_b, M, begin, end, K, alpha, a, lda, a_cols, bh, ldb, beta, c, ldc);
    } else if (by_cols) {
      // Columns [begin, end) of op(b): rows of b when trans_b, columns otherwise.
      const float* bs = trans_b ? bf + begin * ldb : bf + begin;
      blas_call(trans_a, trans_b, M, end - begin, K, alpha, a, lda, a_cols, bs, ldb, trans_b ? K : end - begin, beta,
                c + begin, ldc);
    } else {
      // Rows [begin, end) of op(a): rows of a, or columns of a when trans_a.
      const float* as = trans_a ? a + begin : a + begin * lda;
      blas_call(trans_a, trans_b, end - begin, N, K, alpha, as, lda, trans_a ? end - begin : K, bf, ldb, b_cols, beta,
                c + begin * ldc, ldc);
    }
  }
}

const PackedKernel* packed_kernel(bool bf16_products) {
  static const PackedKernel bf16{
      kGemmAvx512Bf16PackedMaxN,
      kGemmAvx512Bf16PackedMaxK,
      [](bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
         std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
        if (b_bf16) {
          gemm_avx512_bf16(trans_a, trans_b, M, N, K, alpha, a, lda, static_cast<const std::uint16_t*>(b), ldb, beta, c,
                           ldc);
        } else {
          gemm_avx512_bf16(trans_a, trans_b, M, N, K, alpha, a, lda, static_cast<const float*>(b), ldb, beta, c, ldc);
        }
      },
      gemm_avx512_bf16_packed_b_floats,
      gemm_avx512_bf16_pack_b,
      gemm_avx512_bf16_packed_a_floats,
      gemm_avx512_bf16_pack_a,
      gemm_avx512_bf16_packed};
  // f32: not OpenBLAS, which depends on recognising the CPU: Debian's 0.3.21 runs its SSE3 "Prescott"
  // kernels on Xeons newer than itself, at a fifth of the speed (docs/PERFORMANCE.md, 2026-11-22).
  static const PackedKernel f32{kGemmAvx512PackedMaxN,       kGemmAvx512PackedMaxK, gemm_avx512,
                                gemm_avx512_packed_b_floats, gemm_avx512_pack_b,    gemm_avx512_packed_a_floats,
                                gemm_avx512_pack_a,          gemm_avx512_packed};
  if (bf16_products) return gemm_avx512_bf16_supported() ? &bf16 : nullptr;
  return gemm_avx512_supported() ? &f32 : nullptr;
}

void gemm_serial(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc, bool bf16_products) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    scale_c(M, N, beta, c, ldc);
    return;
  }
  if (const PackedKernel* kernel = packed_kernel(bf16_products)) {
    kernel->gemm(trans_a, trans_b, M, N, K, alpha, a, lda, b, false, ldb, beta, c, ldc);
    return;
  }
  if (bf16_products) {
    gemm_serial_bf16_copies(trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (gemm_avx2_supported()) {
    gemm_avx2(trans_a, trans_b, M, N, K, alpha, a, lda, b, false, ldb, beta, c, ldc);
    return;
  }
  blas_single_threaded();
  if (beta == 0.0f) clear_c(M, N, c, ldc);
  blas_call(trans_a, trans_b, M, N, K, alpha, a, lda, trans_a ? M : K, b, ldb, trans_b ? K : N, beta, c, ldc);
}

void gemm_serial(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const std::uint16_t* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc, bool bf16_products) {
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    scale_c(M, N, beta, c, ldc);
    return;
  }
  // The kernels of the f32 overload, each reading b's bf16 values where they are as it packs them.
  if (const PackedKernel* kernel = packed_kernel(bf16_products)) {
    kernel->gemm(trans_a, trans_b, M, N, K, alpha, a, lda, b, true, ldb, beta, c, ldc);
    return;
  }
  if (!bf16_products && gemm_avx2_supported()) {
    gemm_avx2(trans_a, trans_b, M, N, K, alpha, a, lda, b, true, ldb, beta, c, ldc);
    return;
  }
  // Elsewhere op(b) widened into the calling thread's buffer (kept across calls), then the f32 overload.
  thread_local std::vector<float> widened;
  const std::int64_t rows = trans_b ? N : K, cols = trans_b ? K : N;
  widened.resize(static_cast<std::size_t>(rows * cols));
  widen_bf16_rows(widened.data(), cols, b, ldb, rows, cols);
  gemm_serial(trans_a, trans_b, M, N, K, alpha, a, lda, widened.data(), cols, beta, c, ldc, bf16_products);
}

void gemm_serial_bf16_copies(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                             const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                             std::int64_t ldc) {
  thread_local std::vector<float> a_rounded, b_rounded;  // reused across calls: no allocation once warm
  const auto round_copy = [](std::vector<float>& dst, const float* src, std::int64_t ld, std::int64_t rows,
                             std::int64_t cols) {
    dst.resize(static_cast<std::size_t>(rows * cols));
    round_bf16_rows(dst.data(), cols, src, ld, rows, cols);
  };
  const std::int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
  round_copy(a_rounded, a, lda, trans_a ? K : M, a_cols);
  round_copy(b_rounded, b, ldb, trans_b ? N : K, b_cols);
  gemm_serial(trans_a, trans_b, M, N, K, alpha, a_rounded.data(), a_cols, b_rounded.data(), b_cols, beta, c, ldc);
}

void bias_add(float* y, std::int64_t ldy, const float* bias, std::int64_t rows, std::int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 18))
  for (std::int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * ldy;
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) yr[j] += bias[j];
  }
}

}  // namespace adapt::ops::cpu
