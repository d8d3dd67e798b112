// doctest main for multi-rank suites run under mpiexec: every rank runs every test case (test cases
// use MPI_COMM_WORLD collectively), only rank 0 reports unless a rank fails, and the exit status is
// the maximum over ranks, so a failure on any rank fails the CTest entry.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <cstdio>

#include "comm/mpi_communicator.h"
#include "core/log.h"

int main(int argc, char** argv) {
  adapt::comm::mpi_init(&argc, &argv);  // as the applications start MPI
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  adapt::log::set_rank(rank, size);
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  if (rank != 0) ctx.setOption("minimal", true);  // other ranks print only failures
  int result = ctx.run();
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) std::fprintf(stderr, "%d ranks; worst rank status %d\n", size, worst);
  MPI_Finalize();
  return worst;
}
