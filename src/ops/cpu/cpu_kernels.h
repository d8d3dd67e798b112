// The CPU reference kernels behind the ops/ entry points: raw f32 pointers, int64 sizes, row strides
// (ld) in elements, no Tensor. Plain loops (OpenMP across rows or heads where it pays), written to be
// read and to be the truth the CUDA kernels are compared with. Entry points have checked the shapes.
#pragma once

#include <cstdint>

namespace adapt::ops::cpu {

/// Puts OpenBLAS in single-threaded mode, once per process: every parallel loop of the CPU backend is
/// an OpenMP loop that calls BLAS from its threads (two thread pools fought over the cores).
void blas_single_threaded();

/// c = alpha · op(a) · op(b) + beta · c, row-major. b holds f32, or bf16 bit patterns when b_bf16
/// (widened exactly to f32; all arithmetic is f32). With beta = 0, c is not read.
/// bf16_products (b_bf16 only): op(a) is rounded to bf16 (nearest even) first, so every product is one of
/// two bf16 values (exact in f32) and the sums are f32: the bf16 dot-product kernel (gemm_avx512_bf16.h)
/// on CPUs with AVX512_BF16 and for more than one row; otherwise a rounded copy of a through the f32
/// paths (the same products, summed in another order).
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
          std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
          bool bf16_products = false);
/// c = alpha · op(a) · op(b) + beta · c on the calling thread, all f32 (products inside OpenMP tasks, such
/// as attention's tiles): the packed AVX-512 or AVX2 kernel where the CPU runs it, else single-threaded
/// OpenBLAS. With beta = 0, c is not read.
/// bf16_products: op(a) and op(b) are rounded to bf16 (nearest even) first, products exact in f32, f32
/// sums: the bf16 dot-product kernel on CPUs with AVX512_BF16, else rounded copies (in the calling
/// thread's buffers) through the f32 kernels (the same products, summed in another order).
void gemm_serial(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc, bool bf16_products = false);
/// The same with b in bf16 bit patterns (a bf16 KV cache's tiles), taken exactly: the same bits as the f32
/// overload on b widened. The packed kernels read b where it is; elsewhere a widened copy (in the calling
/// thread's buffer, kept across calls) goes through the f32 overload.
void gemm_serial(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                 const float* a, std::int64_t lda, const std::uint16_t* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc, bool bf16_products = false);
/// A packed AVX-512 kernel's entries (gemm_avx512.h, gemm_avx512_bf16.h): the whole product (b in f32 or,
/// b_bf16, bf16 bit patterns), and the pieces for products that share a packed operand (attention's key
/// and value tiles): one block of op(b) holds up to max_n columns and max_k values of k.
struct PackedKernel {
  std::int64_t max_n, max_k;
  void (*gemm)(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a,
               std::int64_t lda, const void* b, bool b_bf16, std::int64_t ldb, float beta, float* c, std::int64_t ldc);
  std::int64_t (*b_floats)(std::int64_t N, std::int64_t K);
  void (*pack_b)(bool trans_b, std::int64_t N, std::int64_t K, const void* b, bool b_bf16, std::int64_t ldb,
                 float* dst);
  std::int64_t (*a_floats)(std::int64_t M, std::int64_t K);
  void (*pack_a)(std::int64_t M, std::int64_t K, const float* a, std::int64_t lda, float* dst);
  void (*product)(std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* a, std::int64_t lda,
                  const float* packed_a, const float* packed_b, float beta, float* c, std::int64_t ldc);
};
/// The kernel gemm_serial runs on this CPU for f32 products (AVX-512) or bf16 products (AVX512_BF16), or
/// null where it takes another path (AVX2, OpenBLAS, rounded copies). Products that pack an operand
/// once through its pieces get the bits gemm_serial gives.
const PackedKernel* packed_kernel(bool bf16_products);
/// gemm_serial's bf16 products on CPUs without AVX512_BF16: copies of op(a) and op(b) rounded to bf16 (in
/// the calling thread's buffers, kept across calls), then the f32 kernels. Callable on any CPU (tests).
void gemm_serial_bf16_copies(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
                             const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                             std::int64_t ldc);
void bias_add(float* y, std::int64_t ldy, const float* bias, std::int64_t rows, std::int64_t cols);
/// dst (rows, cols) = src (rows, cols) of bf16 bit patterns widened to f32 (exact); row strides ldd, lds.
void widen_bf16_rows(float* dst, std::int64_t ldd, const std::uint16_t* src, std::int64_t lds, std::int64_t rows,
                     std::int64_t cols);
/// dst (rows, cols) = src (rows, cols) f32 rounded to bf16 values (nearest even), kept as f32; row strides
/// ldd, lds; dst may be src (in place, ldd = lds).
void round_bf16_rows(float* dst, std::int64_t ldd, const float* src, std::int64_t lds, std::int64_t rows,
                     std::int64_t cols);

/// rstd may be null.
void rms_norm_forward(float* y, std::int64_t ldy, float* rstd, const float* x, std::int64_t ldx, const float* w,
                      std::int64_t rows, std::int64_t cols, float eps);

/// cos/sin (n_pos, half) contiguous.
void rope_table_fill(float* cos, float* sin, const float* inv_freq, std::int64_t half, std::int64_t pos_begin,
                     std::int64_t n_pos);
/// x (B, T, Hx, D) contiguous, in place; cos/sin (T, D/2).
void rope_forward(float* x, std::int64_t B, std::int64_t T, std::int64_t Hx, std::int64_t D, const float* cos,
                  const float* sin);

struct AttentionArgs {
  const float* q = nullptr;  // (B, T, H, D) contiguous
  const float* k = nullptr;  // (B, Hkv, S, D) with the strides below (unit stride along D)
  const float* v = nullptr;
  // Or, for a bf16 KV cache (attention_forward only): k and v as bf16 bit patterns, same layout; the
  // products take each tile's values exactly (gemm_serial's bf16 overload).
  const std::uint16_t* k_bf16 = nullptr;
  const std::uint16_t* v_bf16 = nullptr;
  float* out = nullptr;  // (B, T, H, D) contiguous
  float* lse = nullptr;  // (B, H, T) or null
  std::int64_t B = 0, T = 0, H = 0, Hkv = 0, D = 0, S = 0;
  std::int64_t k_stride_b = 0, k_stride_h = 0, k_stride_s = 0;
  std::int64_t v_stride_b = 0, v_stride_h = 0, v_stride_s = 0;
  std::int64_t q_pos_offset = 0;
  const std::int64_t* q_pos_offsets = nullptr;  // (B) per-sequence offsets (ragged batch), or null: q_pos_offset
  const std::int64_t* kv_rows = nullptr;        // (B) batch row of k/v read by sequence b, or null: row b
  float scale = 0.0f;
  // Every operand of the products (q, k, v and the probabilities) rounded to bf16 (nearest even); the
  // softmax and every sum f32 (ops::AttentionOptions::bf16_products).
  bool bf16_products = false;
};
void attention_forward(const AttentionArgs& args);

void swiglu_forward(float* out, std::int64_t ldo, const float* gate, std::int64_t ldg, const float* up,
                    std::int64_t ldu, std::int64_t rows, std::int64_t cols);

/// ids already checked to lie in [0, V); table rows are f32, or bf16 bit patterns when table_bf16.
void embedding_forward(float* out, std::int64_t ldo, const void* table, bool table_bf16, std::int64_t C,
                       const std::int32_t* ids32, const std::int64_t* ids64, std::int64_t n);

void softmax_forward(float* y, std::int64_t ldy, const float* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols,
                     bool log);

}  // namespace adapt::ops::cpu
