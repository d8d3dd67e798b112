// Host launcher for dtype casts on the device (f32 <-> bf16, f32 <-> f16, same-dtype copies).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"

namespace adapt::kernels {

/// dst[i] = convert(src[i]) for i < n, on `stream`. Both pointers are device memory.
/// Throws UnsupportedError for pairs other than f32<->bf16, f32<->f16 and identical dtypes.
void launch_cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, std::int64_t n, cudaStream_t stream);

}  // namespace adapt::kernels
