// The start of a GPU test under mpiexec (gpu_mpi_main.h for doctest suites; gpu_mpi_start alone for a
// plain main()): MPI up, the world's devices counted, and every rank skipping together when it must.
#pragma once

#include <mpi.h>

#include <cstdio>
#include <optional>
#include <string>

#include "backend/backend.h"
#include "comm/mpi_communicator.h"
#include "core/log.h"

namespace adapt::test {

struct GpuMpiWorld {
  int rank = 0, size = 1;
  int min_devices = 0;  // the fewest CUDA devices any rank sees
};

/// MPI up and the world's devices counted; when the job must skip (`skip_reason` given, a rank sees no
/// CUDA device, or `gpu_per_rank` and some rank shares a GPU), rank 0 prints "skipped: <why>", MPI is
/// finalized and the result is empty: the caller returns 77.
inline std::optional<GpuMpiWorld> gpu_mpi_start(int* argc, char*** argv, std::string skip_reason,
                                                bool gpu_per_rank = false) {
  comm::mpi_init(argc, argv);  // as the applications start MPI
  GpuMpiWorld w;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  log::set_rank(w.rank, w.size);
  const int devices = backend::cuda_device_count();
  MPI_Allreduce(&devices, &w.min_devices, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (skip_reason.empty() && w.min_devices == 0)
    skip_reason = "a rank sees no CUDA device: " + backend::cuda_unavailable_reason();
  if (skip_reason.empty() && gpu_per_rank && w.min_devices < w.size) {
    skip_reason =
        "a GPU per rank is needed (" + std::to_string(w.size) + " ranks, " + std::to_string(w.min_devices) + " GPU(s))";
  }
  if (!skip_reason.empty()) {
    if (w.rank == 0) std::printf("skipped: %s\n", skip_reason.c_str());
    MPI_Finalize();
    return std::nullopt;
  }
  return w;
}

}  // namespace adapt::test
