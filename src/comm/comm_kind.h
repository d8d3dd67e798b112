// Which library carries a group's collectives when the model lives on GPUs: NCCL when every rank of
// the group computes on its own GPU and the build has NCCL; otherwise MPI, which stages device buffers
// through host memory (mpi_communicator.h). NCCL refuses two ranks of one communicator on the same GPU,
// so ranks sharing a GPU (correctness runs on a one-GPU machine) get MPI. The choice is made per group
// from every rank's GPU identity (its UUID, not its index: index 0 on two nodes is two GPUs).
#pragma once

#include <array>
#include <span>
#include <string>
#include <string_view>

#include "comm/communicator.h"

namespace adapt::comm {

enum class CommKind { Mpi, Nccl };
/// "mpi" or "nccl".
std::string_view comm_kind_name(CommKind kind);

struct CommKindChoice {
  CommKind kind = CommKind::Mpi;
  std::string reason;  // why, for the startup log: "every rank of tp[pp0,dp0] has its own GPU", ...
};

/// The choice for one group. `gpu_ids` holds one entry per rank of the group, in rank order: the
/// identity of the GPU the rank computes on (backend::cuda_device_uuid), empty for a rank on the CPU.
/// NCCL when the group has more than one rank, every rank has a GPU, no two ranks share one and
/// `nccl_built`; MPI otherwise (a group of one rank moves nothing). `group` names the group in the
/// reason. Pure: no communication, no device calls.
CommKindChoice comm_kind_choose(std::span<const std::string> gpu_ids, bool nccl_built, std::string_view group);

/// comm_kind_choose for `group` after gathering every rank's GPU identity over it (cuda_device < 0: this
/// rank computes on the CPU). Called by every rank of the group; every rank gets the same answer.
CommKindChoice comm_kind_for_group(Communicator& group, int cuda_device);

/// The ranks that share a GPU, from every rank's GPU identity (as comm_kind_choose takes them; "" for a
/// rank on the CPU): "" when no two do, else "ranks 0, 1 and 2 share GPU <id>; ranks 3 and 4 share GPU
/// <id>" (ranks in `gpu_ids` order, GPUs by their first rank).
std::string shared_gpus_describe(std::span<const std::string> gpu_ids);

/// shared_gpus_describe over `group`'s ranks (collective: every rank gathers their identities).
std::string shared_gpus_in_group(Communicator& group, int cuda_device);

/// True when this binary was built with NCCL (ADAPT_HAVE_NCCL).
bool nccl_built();

/// Which groups device_grid_comms gives device-buffer communicators. The model's passes hand the tp
/// and pp collectives device buffers; data-parallel averaging runs on the adapters' host mirrors
/// (AdapterSet::host_parameters) with optim.offload, so dp keeps its host (MPI) communicator unless
/// asked (adapt_train asks when the optimizer state stays on the GPUs).
struct DeviceCommsOptions {
  bool tp = true;
  bool pp = true;
  bool dp = false;
};

/// The communicators for a model on cuda:`cuda_device`: for each group of `bootstrap` (MPI
/// communicators from grid_comms_split) named in `which`, an NcclCommunicator made over that group where
/// comm_kind_for_group chooses NCCL, else the bootstrap communicator itself (moved out of `bootstrap`;
/// device buffers staged through host memory). Groups not named keep their bootstrap communicator. An
/// NCCL communicator runs its collectives on its own stream, ordered after the device ops queued so far
/// and before those queued later (set_compute_stream with backend::cuda_compute_stream()): a collective
/// runs beside the compute queued before it; the host does not wait for it (its copies from the device,
/// on the default stream, do). The pp communicator's neighbours are connected here (connect_neighbours). `kinds`
/// (optional) receives the choice for each group, indexed by GridAxis. Called by every rank of the world with the same
/// `which`; every group of `bootstrap` is moved out.
GridComms device_grid_comms(GridComms& bootstrap, int cuda_device, const CommOptions& options = {},
                            std::array<CommKindChoice, 3>* kinds = nullptr, const DeviceCommsOptions& which = {});

/// What the apps call for a tp/pp model on cuda:`cuda_device`: a fresh grid_comms_split of `world` by
/// `grid` handed to device_grid_comms (tp and pp, and dp when `dp`: the optimizer averaging device
/// gradients), with one line per group on rank 0 naming the kind chosen and why. The apps' host-side
/// communicators stay as they are. Called by every rank with the same `dp`.
GridComms device_grid_comms_for_model(Communicator& world, const ProcessGrid& grid, int cuda_device,
                                      const CommOptions& options, bool dp = false);

}  // namespace adapt::comm
