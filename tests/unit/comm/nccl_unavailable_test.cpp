// Builds without NCCL: asking for NCCL group communicators fails before any communication, naming the
// group and the build option.
#include <doctest/doctest.h>

#include "comm/local_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/error.h"

using namespace adapt;

#if !ADAPT_HAVE_NCCL
TEST_CASE("nccl_grid_comms without NCCL names the group and the build option") {
  comm::LocalCommunicator world;
  comm::GridComms mpi = comm::grid_comms_split(world, comm::ProcessGrid(1, 1, 1));
  CHECK_THROWS_WITH_AS(comm::nccl_grid_comms(mpi, 0), doctest::Contains("dp[tp0,pp0]"), UnsupportedError);
  CHECK_THROWS_WITH_AS(comm::nccl_grid_comms(mpi, 0), doctest::Contains("-DADAPT_CUDA=ON"), UnsupportedError);
}
#endif
