// Versions of the CUDA libraries this binary links (runtime, cuBLASLt, NCCL). None of these calls
// needs a GPU, so a CPU-only machine can still show what a CUDA build was linked against.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include "backend/cuda/cuda_runtime.h"

namespace adapt::backend::cuda {

std::string library_versions() {
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  const std::size_t lt = cublasLtGetVersion();
  int nccl = 0;
  ncclGetVersion(&nccl);
  return fmt::format("CUDA runtime {}.{}, cuBLASLt {}.{}.{}, NCCL {}.{}.{}", runtime / 1000, runtime % 1000 / 10,
                     lt / 10000, lt % 10000 / 100, lt % 100, nccl / 10000, nccl % 10000 / 100, nccl % 100);
}

}  // namespace adapt::backend::cuda
