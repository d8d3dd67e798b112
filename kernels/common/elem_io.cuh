// Element loads and stores for the activation dtypes of the row kernels: every kernel computes in f32
// and reads/writes its tensors as f32, bf16 (raw bits, rounded like the host) or f16. A kernel is
// templated on the storage type and the launcher picks the instance from the DType (dispatch_float).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "core/error.h"
#include "dtype/dtype.h"
#include "kernels/common/convert.cuh"

namespace adapt::kernels {

/// bf16 storage on the device: the raw bits, converted with the host's rounding (convert.cuh).
struct Bf16Bits {
  uint16_t bits;
};

__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const Bf16Bits* p) { return bf16_bits_to_f32(p->bits); }
__device__ __forceinline__ float load_f32(const __half* p) { return __half2float(*p); }

__device__ __forceinline__ void store_f32(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f32(Bf16Bits* p, float v) { p->bits = f32_to_bf16_bits(v); }
__device__ __forceinline__ void store_f32(__half* p, float v) { *p = __float2half_rn(v); }

/// Calls f(T{}) with T the storage type of `dtype` (float, Bf16Bits, __half); UnsupportedError naming
/// `what` for any other dtype.
template <typename F>
void dispatch_float(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(Bf16Bits{}); return;
    case DType::F16: f(__half{}); return;
    default:
      ADAPT_THROW(UnsupportedError, "{}: dtype {} is not supported on the device (f32, bf16 or f16)", what,
                  dtype_name(dtype));
  }
}

/// Token ids as i32 or i64, read as int64.
__device__ __forceinline__ int64_t load_id(const void* ids, bool ids64, int64_t i) {
  return ids64 ? static_cast<const int64_t*>(ids)[i] : static_cast<int64_t>(static_cast<const int32_t*>(ids)[i]);
}

inline bool ids_are_64(DType dtype, const char* what) {
  ADAPT_REQUIRE(dtype == DType::I32 || dtype == DType::I64, UnsupportedError, "{}: ids must be i32 or i64, not {}",
                what, dtype_name(dtype));
  return dtype == DType::I64;
}

}  // namespace adapt::kernels
