// The communicator kind per group (comm_kind.h): NCCL only when every rank of a group of several has
// its own GPU and NCCL is built, MPI otherwise, with a reason that names the ranks and the GPU; and the
// MPI communicator's staging decision, which must leave host buffers alone (no device query answers
// "device" for host memory, on machines with or without a GPU).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "backend/backend.h"
#include "comm/comm_kind.h"
#include "comm/local_communicator.h"
#include "comm/mpi_communicator.h"
#include "tensor/tensor.h"

using namespace adapt;
using comm::CommKind;

TEST_CASE("comm_kind_choose: NCCL for a GPU per rank with NCCL built, MPI otherwise, saying why") {
  const std::vector<std::string> distinct{"gpu-a", "gpu-b", "gpu-c", "gpu-d"};
  const comm::CommKindChoice nccl = comm::comm_kind_choose(distinct, /*nccl_built=*/true, "tp[pp0,dp0]");
  CHECK(nccl.kind == CommKind::Nccl);
  CHECK(nccl.reason.find("tp[pp0,dp0]") != std::string::npos);

  const comm::CommKindChoice no_nccl = comm::comm_kind_choose(distinct, /*nccl_built=*/false, "tp[pp0,dp0]");
  CHECK(no_nccl.kind == CommKind::Mpi);
  CHECK(no_nccl.reason.find("without NCCL") != std::string::npos);

  // Ranks 1 and 3 on one GPU (a one-GPU machine, or per-task binding of the same device).
  const std::vector<std::string> shared{"gpu-a", "gpu-b", "gpu-c", "gpu-b"};
  const comm::CommKindChoice s = comm::comm_kind_choose(shared, /*nccl_built=*/true, "pp[tp1,dp0]");
  CHECK(s.kind == CommKind::Mpi);
  CHECK(s.reason.find("ranks 1 and 3 of group pp[tp1,dp0] share GPU gpu-b") != std::string::npos);

  const std::vector<std::string> all_shared{"gpu-a", "gpu-a"};
  CHECK(comm::comm_kind_choose(all_shared, true, "tp").kind == CommKind::Mpi);

  // A rank on the CPU: host buffers, MPI.
  const std::vector<std::string> cpu_rank{"gpu-a", ""};
  const comm::CommKindChoice c = comm::comm_kind_choose(cpu_rank, true, "dp");
  CHECK(c.kind == CommKind::Mpi);
  CHECK(c.reason.find("rank 1 of group dp computes on the CPU") != std::string::npos);

  // One rank: nothing moves, no NCCL communicator is worth making.
  const std::vector<std::string> one{"gpu-a"};
  CHECK(comm::comm_kind_choose(one, true, "tp").kind == CommKind::Mpi);
  CHECK(comm::comm_kind_choose({}, true, "tp").kind == CommKind::Mpi);

  CHECK(comm::comm_kind_name(CommKind::Nccl) == "nccl");
  CHECK(comm::comm_kind_name(CommKind::Mpi) == "mpi");
  CHECK(comm::nccl_built() == (ADAPT_HAVE_NCCL != 0));
}

TEST_CASE("comm_kind_for_group on a CPU rank alone gathers its identity and chooses MPI") {
  comm::LocalCommunicator self;
  const comm::CommKindChoice c = comm::comm_kind_for_group(self, /*cuda_device=*/-1);
  CHECK(c.kind == CommKind::Mpi);
  CHECK(self.stats()[comm::Collective::AllGather].calls == 1);  // the same collective on every rank
}

TEST_CASE("the MPI staging decision leaves host buffers alone") {
  int on_stack = 3;
  std::vector<double> on_heap(1000, 1.0);
  Tensor t = Tensor::zeros({4, 4}, DType::F32, "host_tensor");
  CHECK_FALSE(comm::mpi_stages_buffer(&on_stack));
  CHECK_FALSE(comm::mpi_stages_buffer(on_heap.data()));
  CHECK_FALSE(comm::mpi_stages_buffer(t.raw()));
  CHECK_FALSE(comm::mpi_stages_buffer(nullptr));
  CHECK(backend::pointer_device(on_heap.data()) == -1);
  CHECK(backend::pointer_device(nullptr) == -1);
  // copy_bytes between host buffers is a plain copy.
  std::vector<double> copy(1000, 0.0);
  backend::copy_bytes(copy.data(), on_heap.data(), on_heap.size() * sizeof(double));
  CHECK(copy == on_heap);
  if (backend::cuda_device_count() > 0) {
    // Device memory is recognised (and would be staged).
    Tensor d = Tensor::empty({4}, DType::F32, backend::cuda_allocator(0), "device_tensor");
    CHECK(backend::pointer_device(d.raw()) == 0);
    CHECK(comm::mpi_stages_buffer(d.raw()));
  }
}

TEST_CASE("device_grid_comms keeps host communicators where MPI is chosen, and dp unless asked") {
  comm::GridComms boot;
  boot.tp = std::make_unique<comm::LocalCommunicator>("tp");
  boot.pp = std::make_unique<comm::LocalCommunicator>("pp");
  boot.dp = std::make_unique<comm::LocalCommunicator>("dp");
  const comm::Communicator* tp = boot.tp.get();
  const comm::Communicator* dp = boot.dp.get();
  std::array<comm::CommKindChoice, 3> kinds;
  comm::GridComms out = comm::device_grid_comms(boot, /*cuda_device=*/-1, {}, &kinds);
  CHECK(out.tp.get() == tp);  // one rank per group: MPI (here the local communicator) is kept
  CHECK(out.dp.get() == dp);
  CHECK(boot.tp == nullptr);
  for (const comm::CommKindChoice& k : kinds) CHECK(k.kind == CommKind::Mpi);
  CHECK(kinds[static_cast<std::size_t>(comm::GridAxis::Dp)].reason.find("keeps its host communicator") !=
        std::string::npos);
  // The tp and pp groups were asked for their identities (one gather each), dp was not.
  CHECK(out.tp->stats()[comm::Collective::AllGather].calls == 1);
  CHECK(out.pp->stats()[comm::Collective::AllGather].calls == 1);
  CHECK(out.dp->stats()[comm::Collective::AllGather].calls == 0);
}

TEST_CASE("shared_gpus_describe: the ranks of each shared GPU, nothing when every rank has its own") {
  CHECK(comm::shared_gpus_describe(std::vector<std::string>{"gpu-a", "gpu-b", "gpu-c"}).empty());
  CHECK(comm::shared_gpus_describe(std::vector<std::string>{"", "", "gpu-a"}).empty());  // ranks on the CPU share none
  CHECK(comm::shared_gpus_describe(std::vector<std::string>{"gpu-a", "gpu-b", "gpu-a", "gpu-a", "gpu-c", "gpu-b"}) ==
        "ranks 0, 2 and 3 share GPU gpu-a; ranks 1 and 5 share GPU gpu-b");
  CHECK(comm::shared_gpus_describe(std::vector<std::string>{"gpu-x", "gpu-x"}) == "ranks 0 and 1 share GPU gpu-x");
}
