// Stand-in for CUDA's <mma.h> when kernels/ is compiled for cuda_emu (cuda_emu.h).
#pragma once
#include "cuda_emu.h"
