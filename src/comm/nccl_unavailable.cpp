// nccl_grid_comms in builds without NCCL: says which option brings it in.
#include "comm/nccl_communicator.h"
#include "core/error.h"

namespace adapt::comm {

GridComms nccl_grid_comms(GridComms& bootstrap, int cuda_device, const CommOptions&) {
  ADAPT_THROW(UnsupportedError,
              "NCCL communicators for the groups of {} on cuda:{} were requested, but this binary was built "
              "without NCCL (ADAPT_CUDA=OFF or NCCL not found); rebuild with -DADAPT_CUDA=ON and NCCL installed, "
              "or use the MPI communicators on the CPU backend",
              bootstrap.dp ? bootstrap.dp->name() : std::string("this rank"), cuda_device);
}

}  // namespace adapt::comm
