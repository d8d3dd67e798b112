// main() of the GPU tests that run under mpiexec (mpi*.gpu.*): MPI up, then every rank skips together
// (exit 77, the reason printed once by rank 0, so no rank waits in a collective for one that left)
// when the caller gives a reason or any rank sees no CUDA device; otherwise `setup` (globals, the
// "running on" line) and doctest on every rank (rank 0 reports in full), and every rank exits with the
// worst result.
#pragma once

#include <doctest/doctest.h>
#include <mpi.h>

#include <functional>
#include <optional>
#include <string>

#include "gpu_mpi_start.h"

namespace adapt::test {

inline int gpu_mpi_main(int argc, char** argv, std::string skip_reason,
                        const std::function<void(const GpuMpiWorld&)>& setup) {
  const std::optional<GpuMpiWorld> w = gpu_mpi_start(&argc, &argv, std::move(skip_reason));
  if (!w) return 77;
  setup(*w);
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  if (w->rank != 0) ctx.setOption("minimal", true);
  const int result = ctx.run();
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}

}  // namespace adapt::test
