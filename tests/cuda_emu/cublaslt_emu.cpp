// cuda_emu's cuBLASLt matmul on the CPU (include/cublasLt.h): a plain triple loop in f32 per output
// element, k increasing, so a test can tell a wrong layout, transpose, stride or epilogue from rounding.
#include "cublasLt.h"

#include <cmath>
#include <cstring>

namespace {

float load(const void* p, cudaDataType_t t, std::int64_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16BF: return adapt::bf16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
    case CUDA_R_16F: return adapt::f16_to_f32(static_cast<const std::uint16_t*>(p)[i]);
  }
  return NAN;
}

void store(void* p, cudaDataType_t t, std::int64_t i, float v) {
  switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; return;
    case CUDA_R_16BF: static_cast<std::uint16_t*>(p)[i] = adapt::f32_to_bf16(v); return;
    case CUDA_R_16F: static_cast<std::uint16_t*>(p)[i] = adapt::f32_to_f16(v); return;
  }
}

// TF32: 10 explicit mantissa bits, round to nearest even.
float to_tf32(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u += 0xfffu + ((u >> 13) & 1u);
  u &= ~0x1fffu;
  std::memcpy(&x, &u, 4);
  return x;
}

std::int64_t elem_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

}  // namespace

cublasStatus_t cuda_emu_lt_create(cublasLtHandle_t* h) {
  static char context;
  *h = reinterpret_cast<cublasLtHandle_t>(&context);
  return CUBLAS_STATUS_SUCCESS;
}

const char* cuda_emu_lt_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cuda_emu_lt_matmul(const cublasLtMatmulDescOpaque_t* op, const void* alpha_p, const void* a,
                                  const cublasLtMatrixLayoutOpaque_t* la, const void* b,
                                  const cublasLtMatrixLayoutOpaque_t* lb, const void* beta_p, const void* c,
                                  const cublasLtMatrixLayoutOpaque_t* lc, void* d,
                                  const cublasLtMatrixLayoutOpaque_t* ld, cudaStream_t stream) {
  const bool ta = op->trans_a == CUBLAS_OP_T, tb = op->trans_b == CUBLAS_OP_T;
  const std::int64_t m = static_cast<std::int64_t>(ta ? la->cols : la->rows);
  const std::int64_t k = static_cast<std::int64_t>(ta ? la->rows : la->cols);
  const std::int64_t kb = static_cast<std::int64_t>(tb ? lb->cols : lb->rows);
  const std::int64_t n = static_cast<std::int64_t>(tb ? lb->rows : lb->cols);
  if (k != kb || static_cast<std::int64_t>(lc->rows) != m || static_cast<std::int64_t>(lc->cols) != n ||
      ld->rows != lc->rows || ld->cols != lc->cols || la->batch != lb->batch || la->batch != lc->batch ||
      ld->batch != lc->batch)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (lc->type != ld->type) return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool bias = op->epilogue == CUBLASLT_EPILOGUE_BIAS;
  if (bias && !op->bias) return CUBLAS_STATUS_INVALID_VALUE;
  // Host scalars are read at the call, the matrices when the product runs on the stream; the descriptors
  // may be destroyed once the call has returned.
  const float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
  const bool tf32 = op->compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  const void* bias_p = bias ? op->bias : nullptr;
  cuda_emu::enqueue(stream, "cublasLtMatmul", [=, la = *la, lb = *lb, lc = *lc, ld = *ld] {
    auto in = [&](const void* p, cudaDataType_t t, std::int64_t i) {
      const float v = load(p, t, i);
      return tf32 && t == CUDA_R_32F ? to_tf32(v) : v;
    };
    for (std::int32_t bt = 0; bt < la.batch; ++bt) {
      const char* A = static_cast<const char*>(a) + bt * la.stride * elem_bytes(la.type);
      const char* B = static_cast<const char*>(b) + bt * lb.stride * elem_bytes(lb.type);
      const char* C = static_cast<const char*>(c) + bt * lc.stride * elem_bytes(lc.type);
      char* D = static_cast<char*>(d) + bt * ld.stride * elem_bytes(ld.type);
      for (std::int64_t j = 0; j < n; ++j) {
        for (std::int64_t i = 0; i < m; ++i) {
          float acc = 0.0f;
          for (std::int64_t p = 0; p < k; ++p) {
            const float x = in(A, la.type, ta ? p + i * la.ld : i + p * la.ld);
            const float y = in(B, lb.type, tb ? j + p * lb.ld : p + j * lb.ld);
            acc += x * y;
          }
          float v = alpha * acc;
          if (beta != 0.0f) v += beta * load(C, lc.type, i + j * lc.ld);
          if (bias_p) v += load(bias_p, ld.type, i);
          store(D, ld.type, i + j * ld.ld, v);
        }
      }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}
