// NCCL groups that go wrong must abort the job (not hang), naming rank, collective, call and group (run
// by tests/mpi/expect_comm_abort.sh, which checks the exit status and the message): mode "skip": rank 1
// never joins an all-reduce of the tp group, so rank 0's times out; mode "mismatch": the ranks reduce
// different counts, which the emulated NCCL of an ADAPT_CUDA=EMU build reports as an error (real NCCL
// may hang instead, so that mode is registered for EMU builds only). Each rank on its own GPU; every
// rank exits 77 (skipped, saying why) with fewer GPUs than ranks or without NCCL.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include "comm/mpi_communicator.h"
#include "gpu_mpi_start.h"

#if ADAPT_HAVE_NCCL
#include <cuda_runtime.h>

#include "comm/nccl_communicator.h"
#endif

using namespace adapt;

int main(int argc, char** argv) {
  const std::optional<test::GpuMpiWorld> w =
      test::gpu_mpi_start(&argc, &argv, ADAPT_HAVE_NCCL ? "" : "this binary was built without NCCL", true);
  if (!w) return 77;
#if ADAPT_HAVE_NCCL
  {
    const int me = w->rank, size = w->size;
    const std::string mode = argc > 1 ? argv[1] : "skip";
    // Every rank is up before the short timeouts start (process start-up on a loaded machine is slow).
    comm::MpiCommunicator::world({.timeout_s = 60})->barrier();
    const comm::ProcessGrid grid(size, 1, 1);
    auto world = comm::MpiCommunicator::world({.timeout_s = 60});
    comm::GridComms mpi = comm::grid_comms_split(*world, grid);
    // Rank 0 gives up first, so its message is the one the checker looks for.
    const comm::CommOptions options{.timeout_s = me == 0 ? 2.0 : 20.0};
    comm::NcclCommunicator tp(*mpi.tp, me, options);
    float* buf = nullptr;
    if (cudaMalloc(reinterpret_cast<void**>(&buf), 64 * sizeof(float)) != cudaSuccess) return 1;
    cudaMemset(buf, 0, 64 * sizeof(float));
    if (mode == "skip") {
      if (me != 1) tp.all_reduce(buf, 64, comm::CommDType::F32, comm::ReduceOp::Sum);
    } else {
      tp.all_reduce(buf, me == 0 ? 64 : 32, comm::CommDType::F32, comm::ReduceOp::Sum);
    }
    // The others wait too, so that rank 0's abort is what ends the job.
    if (me != 0) std::this_thread::sleep_for(std::chrono::seconds(60));
  }
#endif
  MPI_Finalize();
  std::fprintf(stderr, "the job was expected to abort but finished\n");
  return 0;
}
