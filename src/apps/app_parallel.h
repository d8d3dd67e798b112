// The multi-rank start and end shared by adapt_train and adapt_gen.
//
// Launched by mpiexec/srun with more than one rank, the program initialises MPI (comm::mpi_init:
// MPI_THREAD_MULTIPLE asked with NCCL, MPI_THREAD_FUNNELED needed) and works on a duplicate of MPI_COMM_WORLD;
// a plain start (no launcher, or one rank) needs no MPI at all. Startup (command line, job file,
// config.json) runs on every rank; then start() has every rank agree on whether it succeeded (one
// timed all-reduce), checks the layout with comm::ProcessGrid::make (tp and pp from the job, dp =
// world / (tp·pp); the error lists the values that work), and splits the tp, pp and dp communicators.
//
// Errors: one that every rank meets alike (startup, the layout, train::CollectiveError) is printed by
// rank 0 only, and every rank exits with its code; an error of one rank later on is printed with the
// rank's tag and ends the whole job (MPI_Abort with the error's exit code), so no rank waits forever.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "comm/comm_kind.h"
#include "comm/communicator.h"
#include "comm/launch_env.h"
#include "comm/local_communicator.h"
#include "comm/mpi_communicator.h"
#include "comm/process_grid.h"
#include "core/app_main.h"
#include "core/error.h"
#include "core/log.h"
#include "train/parallel_util.h"

namespace adapt::apps {

/// Where the launcher put this process (comm/launch_env.h): Open MPI's OMPI_COMM_WORLD_* or, inside
/// an srun step, SLURM_*. PMI_SIZE alone (another MPI's launcher) also starts MPI, so that a mismatch
/// is reported by launch_env_check_mpi instead of N copies running as single ranks. A malformed
/// variable is a usage error naming it.
inline comm::LaunchEnv launch_env_or_exit(bool& start_mpi) {
  try {
    comm::LaunchEnv env = comm::launch_env_from_process();
    const char* pmi = std::getenv("PMI_SIZE");
    start_mpi = env.world_size > 1 || (pmi != nullptr && std::atoi(pmi) > 1);
    return env;
  } catch (const Error& e) {
    log::error("{}", e.what());
    std::exit(static_cast<int>(e.exit_code()));
  }
}

class ParallelApp {
 public:
  /// Initialises MPI when the launcher started more than one rank.
  ParallelApp(int& argc, char**& argv) {
    app_process_setup();
    bool start_mpi = false;
    launch_ = launch_env_or_exit(start_mpi);
    if (start_mpi) {
      try {
        comm::mpi_init(&argc, &argv);
      } catch (const Error& e) {
        log::error("{}", e.what());
        std::exit(static_cast<int>(e.exit_code()));
      }
      mpi_ = true;
      int rank = 0, size = 1;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      MPI_Comm_size(MPI_COMM_WORLD, &size);
      log::set_rank(rank, size);
      comm::CommOptions options;
      try {
        comm::launch_env_check_mpi(launch_, rank, size);
        options = comm::comm_options_from_env();
      } catch (const Error& e) {
        log::error("{}", e.what());
        if (size > 1) MPI_Abort(MPI_COMM_WORLD, static_cast<int>(e.exit_code()));
        MPI_Finalize();
        std::exit(static_cast<int>(e.exit_code()));
      }
      log::debug("launch: {}", comm::describe(launch_));
      if (size > 1) world_ = comm::MpiCommunicator::world(options);
    }
    if (!world_) world_ = std::make_unique<comm::LocalCommunicator>();
  }
  ~ParallelApp() {
    comms_ = {};
    world_.reset();
    int finalized = 0;
    if (mpi_ && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
  }
  ParallelApp(const ParallelApp&) = delete;
  ParallelApp& operator=(const ParallelApp&) = delete;

  int world_size() const { return world_->size(); }
  int world_rank() const { return world_->rank(); }
  bool root() const { return world_->rank() == 0; }
  comm::Communicator& world() { return *world_; }
  /// The launcher's view of this process (local rank and node: the GPU a rank drives comes from it).
  const comm::LaunchEnv& launch() const { return launch_; }
  const comm::ProcessGrid& grid() const { return *grid_; }
  comm::GridComms& comms() { return comms_; }

  /// Every rank agrees that its startup succeeded, then the layout of `tp` × `pp` × dp is made and
  /// checked against the model (`limits`) and by `check` (the job's own rules, e.g. the batch over
  /// dp), and the group communicators are split. Called by every rank. Errors here are the same on
  /// every rank (CollectiveError).
  void start(std::int64_t tp, std::int64_t pp, const comm::GridModelLimits& limits,
             const std::function<void(const comm::ProcessGrid&)>& check = {}) {
    agree(0);
    try {
      grid_.emplace(comm::ProcessGrid::make(world_size(), static_cast<int>(tp), static_cast<int>(pp), limits));
      if (check) check(*grid_);
    } catch (const train::CollectiveError&) {
      throw;
    } catch (const Error& e) {
      throw train::CollectiveError(e.what(), e.where(), e.exit_code());
    }
    comms_ = comm::grid_comms_split(*world_, *grid_);
    if (world_size() > 1) {
      const comm::GridCoord c = grid_->coord(world_rank());
      log::set_grid_tag(fmt::format("tp{} pp{} dp{}", c.tp, c.pp, c.dp));
    }
  }

  /// With the model on GPUs (`cuda_device`: this rank's), rank 0 warns when ranks share a GPU: several
  /// ranks may see one GPU (a one-GPU machine, Slurm's --gpus-per-node=1 for several tasks), which works
  /// but is slow, each rank holding its own copy of what it computes with. Collective.
  void warn_shared_gpus(std::optional<int> cuda_device) {
    if (!cuda_device || world_size() < 2) return;
    const std::string shared = comm::shared_gpus_in_group(*world_, *cuda_device);
    if (!shared.empty() && root()) {
      log::warn(
          "{}: correct but slow, each rank holding its own copy of its weights and buffers there (NCCL cannot "
          "join two ranks on one GPU). Give every rank a GPU of its own: --gpus-per-task=1, or --gpus-per-node "
          "equal to --ntasks-per-node",
          shared);
    }
  }

  /// Runs the program's body and turns its errors into the exit code (see the file comment).
  int run(const std::function<int()>& body) {
    try {
      return body();
    } catch (const Error& e) {
      const int code = static_cast<int>(e.exit_code());
      if (!agreed_) {  // startup: the ranks compare notes first
        const auto [worst, n_failed] = agree(code);
        if (n_failed < world_size() || root()) log::error("{}", e.what());
        return worst;
      }
      if (dynamic_cast<const train::CollectiveError*>(&e) != nullptr) {
        if (root() && e.what()[0] != '\0') log::error("{}", e.what());
        return code;
      }
      return fail_alone(e.what(), code);
    } catch (const std::exception& e) {
      const UnexpectedError u = classify_unexpected(e);
      return fail_alone(u.message, static_cast<int>(u.code));
    }
  }

 private:
  bool mpi_ = false;
  comm::LaunchEnv launch_;
  bool agreed_ = false;
  std::unique_ptr<comm::Communicator> world_;
  std::optional<comm::ProcessGrid> grid_;
  comm::GridComms comms_;

  /// The worst exit code over the ranks and how many ranks failed; throws a silent CollectiveError
  /// on ranks that did not fail when another did.
  std::pair<int, int> agree(int code) {
    agreed_ = true;
    std::int64_t v[2] = {code, code != 0 ? 1 : 0};
    if (world_size() > 1) {
      world_->all_reduce(&v[0], 1, comm::CommDType::I64, comm::ReduceOp::Max);
      world_->all_reduce(&v[1], 1, comm::CommDType::I64, comm::ReduceOp::Sum);
    }
    if (code == 0 && v[0] != 0) throw train::CollectiveError("", ADAPT_HERE, static_cast<ExitCode>(v[0]));
    return {static_cast<int>(v[0]), static_cast<int>(v[1])};
  }

  int fail_alone(const std::string& message, int code) {
    log::error("{}", message);
    if (world_size() > 1) MPI_Abort(MPI_COMM_WORLD, code);
    return code;
  }
};

}  // namespace adapt::apps
