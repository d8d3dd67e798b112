// LaunchEnv: where this process sits in the job, as its launcher tells it through environment
// variables, before (and independently of) MPI: world rank and size, rank and size on its node, the
// node's index. Read from Open MPI's OMPI_COMM_WORLD_* (mpirun/mpiexec) or, inside an srun step, from
// Slurm's SLURM_*; nothing depends on host names. The GPU a rank drives is chosen from its local rank
// (device_for_rank), and launch_env_check_mpi catches launches whose ranks did not become one MPI job.
//
// Precedence (see README.md in this folder for the variables each launcher sets):
//   1. OMPI_COMM_WORLD_RANK or OMPI_COMM_WORLD_SIZE set: Open MPI started the ranks. They win over
//      Slurm's, because under mpirun inside an allocation the ranks are not Slurm tasks: they inherit
//      SLURM_PROCID = 0 from the batch script (or the index of the node's Open MPI daemon).
//   2. SLURM_STEP_ID set: an srun step (srun --mpi=pmix, or MpiDefault=pmix); SLURM_PROCID etc.
//   3. Otherwise (no launcher, or a batch script running the binary directly, whose SLURM_PROCID = 0
//      and SLURM_NTASKS describe the job, not this process): one process, rank 0 of 1.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace adapt::comm {

enum class LaunchSource { None, OpenMpi, Slurm };
/// "none", "Open MPI (OMPI_COMM_WORLD_*)", "srun step (SLURM_*)".
std::string launch_source_name(LaunchSource source);

struct LaunchEnv {
  LaunchSource source = LaunchSource::None;
  int world_rank = 0;  // 0 .. world_size-1
  int world_size = 1;
  int local_rank = 0;  // this rank's index among the ranks of the job on its node
  int local_size = 1;  // ranks of the job on this node
  /// Index of this node among the job's nodes (0 .. node_count-1) and their number. Unknown
  /// (nullopt) under Open MPI on several nodes: Open MPI does not export a node index
  /// (OMPI_COMM_WORLD_NODE_RANK is a rank within the node, not the node's number).
  std::optional<int> node_index = 0;
  std::optional<int> node_count = 1;

  friend bool operator==(const LaunchEnv&, const LaunchEnv&) = default;
};

/// "rank 5 of 8, local rank 1 of 4 on node 1 of 2 (srun step (SLURM_*))"; "node ?" when unknown.
std::string describe(const LaunchEnv& env);

/// The launch environment as seen through `getenv` (a name → value, or nullptr when unset; an empty
/// value counts as unset). Pure: tests pass a map. A variable that is set but is not a non-negative
/// decimal integer (or, for SLURM_STEP_TASKS_PER_NODE, a list like "4(x2),3"), a variable its
/// launcher always sets that is missing, or values that contradict each other (rank >= size, a
/// per-node list that does not add up to the task count) throw ConfigError naming the variables.
LaunchEnv launch_env_from(const std::function<const char*(const char*)>& getenv);
/// The same, reading this process's environment (std::getenv).
LaunchEnv launch_env_from_process();

/// The CUDA device this rank drives, given the devices it can see (after CUDA_VISIBLE_DEVICES):
/// with one visible device, device 0 (Slurm bound one GPU per task, e.g. --gpus-per-task=1, or the
/// job has one rank per node); otherwise the local rank, so the ranks of a node take one GPU each.
/// ConfigError (exit code 2, a launch/allocation mistake, not a CUDA failure) when the node runs more
/// ranks than it has visible devices, naming the node, both counts and the sbatch options that
/// fix it; UnsupportedError when no device is visible at all.
int device_for_rank(const LaunchEnv& env, int visible_devices);

/// Compares the launcher's view with MPI's (MPI_Comm_rank/size of MPI_COMM_WORLD after MPI_Init).
/// ConfigError when the launcher started N > 1 tasks but MPI sees a world of 1 (srun without a
/// working PMIx plugin starts N separate singleton MPI jobs), or when the ranks or sizes otherwise
/// differ (the message names both), including an MPI world of N > 1 with no launcher variables found
/// (the local rank, and so the GPU, would be unknown). Pure: no communication.
void launch_env_check_mpi(const LaunchEnv& env, int mpi_rank, int mpi_size);

}  // namespace adapt::comm
