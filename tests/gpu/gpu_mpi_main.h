// main() of the GPU tests that run under mpiexec (mpi*.gpu.*): MPI up, then every rank skips together
// (exit 77, the reason printed once by rank 0, so no rank waits in a collective for one that left)
// when the caller gives a reason or any rank sees no CUDA device; otherwise `setup` (globals, the
// "running on" line) and doctest on every rank (rank 0 reports in full), and every rank exits with the
// worst result.
#pragma once

#include <doctest/doctest.h>
#include <mpi.h>

#include <cstdio>
#include <functional>
#include <string>

#include "backend/backend.h"
#include "core/log.h"

namespace adapt::test {

struct GpuMpiWorld {
  int rank = 0, size = 1;
  int min_devices = 0;  // the fewest CUDA devices any rank sees
};

inline int gpu_mpi_main(int argc, char** argv, std::string skip_reason,
                        const std::function<void(const GpuMpiWorld&)>& setup) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  GpuMpiWorld w;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  log::set_rank(w.rank, w.size);
  const int devices = backend::cuda_device_count();
  MPI_Allreduce(&devices, &w.min_devices, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (skip_reason.empty() && w.min_devices == 0)
    skip_reason = "a rank sees no CUDA device: " + backend::cuda_unavailable_reason();
  if (!skip_reason.empty()) {
    if (w.rank == 0) std::printf("skipped: %s\n", skip_reason.c_str());
    MPI_Finalize();
    return 77;
  }
  setup(w);
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  if (w.rank != 0) ctx.setOption("minimal", true);
  const int result = ctx.run();
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}

}  // namespace adapt::test
