// An MPI program that prints what a rank knows about its launch: MPI rank and size, SLURM_PROCID,
// SLURM_LOCALID, SLURM_NODEID, CUDA_VISIBLE_DEVICES, and the sum of an all-reduce over the ranks
// (1 + 2 + ... + size when every rank reaches every other). Exit code 1 when the sum is wrong.
// Used by slurm_e2e.sh in adapt_train's place and by local_cluster.sh selftest.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

static const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "-";
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  long mine = rank + 1, sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  std::printf("launch rank=%d size=%d procid=%s localid=%s nodeid=%s gpus=%s sum=%ld\n", rank, size,
              env("SLURM_PROCID"), env("SLURM_LOCALID"), env("SLURM_NODEID"), env("CUDA_VISIBLE_DEVICES"), sum);
  MPI_Finalize();
  return sum == static_cast<long>(size) * (size + 1) / 2 ? 0 : 1;
}
