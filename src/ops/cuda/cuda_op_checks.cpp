#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda::detail {

std::vector<std::int64_t> ids_to_host(const Tensor& t) {
  const auto n = static_cast<std::size_t>(t.numel());
  std::vector<std::int64_t> out(n);
  if (n == 0) return out;
  if (t.dtype() == DType::I64) {
    ADAPT_CUDA_CHECK(cudaMemcpy(out.data(), t.raw(), n * sizeof(std::int64_t), cudaMemcpyDeviceToHost));
  } else {
    std::vector<std::int32_t> v(n);
    ADAPT_CUDA_CHECK(cudaMemcpy(v.data(), t.raw(), n * sizeof(std::int32_t), cudaMemcpyDeviceToHost));
    for (std::size_t i = 0; i < n; ++i) out[i] = v[i];
  }
  return out;
}

}  // namespace adapt::ops::cuda::detail
