#include "ops/cast.h"

#include "core/error.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/cast_cuda.h"
#endif

namespace adapt::ops {

void cast(Tensor& dst, const Tensor& src) {
  ADAPT_REQUIRE(dst.shape() == src.shape(), ShapeError, "cast '{}' {} -> '{}' {}: shapes differ", src.name(),
                src.shape().str(), dst.name(), dst.shape().str());
  ADAPT_REQUIRE(dst.device() == src.device(), UnsupportedError,
                "cast '{}' on {} -> '{}' on {}: copy to one device first", src.name(), src.device().str(), dst.name(),
                dst.device().str());
  if (src.device().host_accessible()) {
    dst.copy_from(src);
    return;
  }
#if ADAPT_HAVE_CUDA
  cuda::cast(dst, src);
#else
  ADAPT_THROW(UnsupportedError,
              "op 'cast' requested on device {}, but this binary was built with ADAPT_CUDA=OFF; rebuild with "
              "-DADAPT_CUDA=ON or set runtime.device = \"cpu\"",
              src.device().str());
#endif
}

}  // namespace adapt::ops
