// A job in which rank 1 skips a collective: the other ranks must time out, print which collective in
// which group, and abort the job (run by expect_comm_abort.sh, which checks the exit status and the
// message). Mode "world" skips an all_reduce on the world; "group" a reduce_scatter in a tp group;
// "started" a started all-reduce (all_reduce_start) on the world, whose wait() must time out naming
// its own call number; "thread" has a helper thread end the job while the main thread waits in a
// collective, as the NCCL watchdog does.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "comm/mpi_communicator.h"

using namespace adapt::comm;

int main(int argc, char** argv) {
  mpi_init(&argc, &argv);
  const std::string mode = argc > 1 ? argv[1] : "world";
  {
    // Every rank is up before the short timeouts start (process start-up on a loaded machine is slow).
    MpiCommunicator::world({.timeout_s = 60})->barrier();
    int me = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    // Rank 0 gives up first, so its message is the one the checker looks for.
    const CommOptions options{.timeout_s = me == 0 ? 2.0 : 20.0};
    std::vector<float> v(64, 1.f), out(64);
    if (mode == "world") {
      auto world = MpiCommunicator::world(options);
      if (me != 1) world->all_reduce(std::span<float>(v), ReduceOp::Sum);
    } else if (mode == "thread") {
      // Rank 0's main thread waits in a collective rank 1 never joins (with a long timeout), and a
      // helper thread, as the NCCL watchdog does, gives up after 2 s and ends the job.
      auto world = MpiCommunicator::world({.timeout_s = 30.0});
      std::thread watchdog;
      if (me == 0) {
        watchdog = std::thread([] {
          std::this_thread::sleep_for(std::chrono::seconds(2));
          comm_abort_job(comm_timeout_message(0, Collective::AllReduce, 2.0, "world", 1));
        });
      }
      if (me != 1) world->all_reduce(std::span<float>(v), ReduceOp::Sum);
      if (watchdog.joinable()) watchdog.join();
    } else if (mode == "started") {
      auto world = MpiCommunicator::world(options);
      world->all_reduce(std::span<float>(v), ReduceOp::Sum);  // call #1, with every rank
      if (me != 1) world->all_reduce_start(v.data(), 64, CommDType::F32, ReduceOp::Sum).wait();  // call #2
    } else {
      const ProcessGrid grid(2, 1, size / 2);
      MPI_Comm tp_comm = MPI_COMM_NULL;
      MPI_Comm_split(MPI_COMM_WORLD, grid.group_index(GridAxis::Tp, me), grid.rank_in(GridAxis::Tp, me), &tp_comm);
      MpiCommunicator tp(tp_comm, grid.group_name(GridAxis::Tp, me), options);
      if (me != 1) tp.reduce_scatter(v.data(), out.data(), 32, CommDType::F32, ReduceOp::Sum);
    }
    // Rank 1 is the stuck rank; the others wait too, so that rank 0's abort is what ends the job.
    if (me != 0) std::this_thread::sleep_for(std::chrono::seconds(60));
  }
  MPI_Finalize();
  std::fprintf(stderr, "the job was expected to abort but finished\n");
  return 0;
}
