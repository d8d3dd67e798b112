#include "ops/cuda/cast_cuda.h"

#include "backend/cuda/cuda_runtime.h"
#include "kernels/cast.h"

namespace adapt::ops::cuda {

void cast(Tensor& dst, const Tensor& src) {
  ADAPT_REQUIRE(dst.is_contiguous() && src.is_contiguous(), ShapeError, "cast on {}: '{}' and '{}' must be contiguous",
                src.device().str(), src.name(), dst.name());
  ADAPT_CUDA_CHECK(cudaSetDevice(src.device().index));
  // Queued on the legacy default stream like every other op; whoever reads dst on the host synchronises.
  kernels::launch_cast(dst.raw(), dst.dtype(), src.raw(), src.dtype(), src.numel(), nullptr);
}

}  // namespace adapt::ops::cuda
