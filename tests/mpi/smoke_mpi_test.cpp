// Multi-rank smoke test: the MPI launcher, rank-aware logging and basic collectives work under
// mpiexec -n 2 --oversubscribe (the same way every later MPI suite runs).
#include <doctest/doctest.h>
#include <mpi.h>

#include <numeric>
#include <vector>

#include "core/log.h"

TEST_CASE("ranks see each other through all-reduce, broadcast and point-to-point") {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  REQUIRE(size >= 2);
  CHECK(adapt::log::world_rank() == rank);
  CHECK(adapt::log::world_size() == size);

  std::vector<double> v(1000, rank + 1.0), sum(1000);
  MPI_Allreduce(v.data(), sum.data(), 1000, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  CHECK(sum[999] == size * (size + 1) / 2.0);

  long long token = rank == 0 ? 0x5eed : 0;
  MPI_Bcast(&token, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  CHECK(token == 0x5eed);

  int right = (rank + 1) % size, left = (rank + size - 1) % size, got = -1;
  MPI_Sendrecv(&rank, 1, MPI_INT, right, 7, &got, 1, MPI_INT, left, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  CHECK(got == left);
  adapt::log::info_all("smoke test rank {} of {} done", rank, size);
}
