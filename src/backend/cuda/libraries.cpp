// Versions of the CUDA libraries this binary links (runtime, cuBLASLt, NCCL). None of these calls
// needs a GPU, so a CPU-only machine can still show what a CUDA build was linked against.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <fmt/format.h>
#if ADAPT_HAVE_NCCL
#include <nccl.h>
#endif

#include "backend/cuda/cuda_runtime.h"

namespace adapt::backend::cuda {

std::string library_versions() {
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  const std::size_t lt = cublasLtGetVersion();
#if ADAPT_CUDA_EMU
  return fmt::format(
      "cuda_emu (the CUDA runtime, kernels, cuBLASLt and NCCL emulated on the CPU), runtime {}, "
      "cuBLASLt {}",
      runtime, lt);
#else
  int nccl = 0;
  ncclGetVersion(&nccl);
  return fmt::format("CUDA runtime {}.{}, cuBLASLt {}.{}.{}, NCCL {}.{}.{}", runtime / 1000, runtime % 1000 / 10,
                     lt / 10000, lt % 10000 / 100, lt % 100, nccl / 10000, nccl % 10000 / 100, nccl % 100);
#endif
}

}  // namespace adapt::backend::cuda
