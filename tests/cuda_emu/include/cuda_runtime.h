// Stand-in for CUDA's <cuda_runtime.h> when kernels/ is compiled for cuda_emu (cuda_emu.h).
#pragma once
#include "cuda_emu.h"
