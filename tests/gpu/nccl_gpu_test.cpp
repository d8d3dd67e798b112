// NCCL communicators under mpiexec on GPUs: one per tp, pp and dp group (nccl_grid_comms, unique ids
// broadcast over the MPI groups), all-reduces checked against the sum of the members' values, the
// compute-stream ordering with events, and async mode with poll()/synchronize(); all_reduce_start (compute
// queued between the start and the wait is not held behind the collective, work after the wait sees
// the sum, requests completed out of order or by their destructor). NCCL refuses two ranks
// of one communicator on the same GPU ("Duplicate GPU detected", NCCL >= 2.5), so with fewer GPUs than
// ranks each rank checks single-rank groups only and says so. Exits 77 (skipped) on every rank when a
// rank sees no GPU or the build has no NCCL.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/log.h"
#include "gpu_mpi_main.h"

#if ADAPT_HAVE_NCCL
#include "backend/cuda/cuda_runtime.h"
#endif

using namespace adapt;

namespace {

int g_device = 0;
bool g_gpu_per_rank = false;

#if ADAPT_HAVE_NCCL
/// f32 device buffer of `n` elements filled with `value`.
struct DeviceFloats {
  float* ptr = nullptr;
  std::int64_t n = 0;
  DeviceFloats(std::int64_t count, float value) : n(count) {
    ADAPT_CUDA_CHECK(cudaMalloc(&ptr, static_cast<std::size_t>(n) * sizeof(float)));
    std::vector<float> h(static_cast<std::size_t>(n), value);
    ADAPT_CUDA_CHECK(cudaMemcpy(ptr, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    // A copy from pageable memory may return before its DMA has landed, and the collectives run on the
    // communicator's non-blocking stream (or after a compute stream), which does not wait for the
    // default stream: the values must be in place before any of them is enqueued. (The default stream
    // only: a device-wide sync would also wait for an async collective already queued.)
    ADAPT_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }
  ~DeviceFloats() { cudaFree(ptr); }
  std::vector<float> host() const {
    std::vector<float> h(static_cast<std::size_t>(n));
    ADAPT_CUDA_CHECK(cudaMemcpy(h.data(), ptr, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
};

/// The grid to test: tp2 x pp1 x dp(world/2) with one GPU per rank; otherwise every rank alone
/// (tp1 x pp1 x dp1 inside a world split by rank), since NCCL cannot put two ranks of a group on one GPU.
struct Groups {
  std::unique_ptr<comm::Communicator> self;  // the world, or this rank alone
  comm::ProcessGrid grid{1, 1, 1};
  comm::GridComms mpi;
  int rank = 0;  // this rank in `grid`

  /// What an all-reduce (sum) over this rank's group on `axis` gives when each member holds its rank + 1.
  float sum_of_members(comm::GridAxis axis) const {
    float sum = 0;
    for (int member : grid.group_members(axis, rank)) sum += static_cast<float>(member + 1);
    return sum;
  }
};

Groups make_groups(comm::MpiCommunicator& world) {
  Groups g;
  if (g_gpu_per_rank && world.size() % 2 == 0) {
    g.rank = world.rank();
    g.grid = comm::ProcessGrid(2, 1, world.size() / 2);
    g.mpi = comm::grid_comms_split(world, g.grid);
  } else {
    g.self = world.split(world.rank(), 0, "self" + std::to_string(world.rank()));
    g.mpi = comm::grid_comms_split(*g.self, g.grid);
  }
  return g;
}

/// The groups over NCCL, with the tp communicator's values: what its all-reduce of rank + 1 gives, and
/// a compute stream of its own to order against.
struct TpSetup {
  std::unique_ptr<comm::MpiCommunicator> world = comm::MpiCommunicator::world({.timeout_s = 120});
  Groups g = make_groups(*world);
  comm::GridComms nccl = comm::nccl_grid_comms(g.mpi, g_device, {.timeout_s = 120});
  comm::NcclCommunicator& tp = dynamic_cast<comm::NcclCommunicator&>(*nccl.tp);
  int r = g.rank;
  float expected = g.sum_of_members(comm::GridAxis::Tp);
  backend::cuda::Stream compute{g_device};
};
#endif

}  // namespace

#if ADAPT_HAVE_NCCL
TEST_CASE("nccl_grid_comms: one communicator per group; all-reduce sums the members' values") {
  auto world = comm::MpiCommunicator::world({.timeout_s = 120});
  Groups g = make_groups(*world);
  comm::GridComms nccl = comm::nccl_grid_comms(g.mpi, g_device, {.timeout_s = 120});
  const int r = g.rank;
  for (comm::GridAxis axis : {comm::GridAxis::Tp, comm::GridAxis::Pp, comm::GridAxis::Dp}) {
    CAPTURE(comm::grid_axis_name(axis));
    comm::Communicator& c = nccl[axis];
    CHECK(c.size() == g.grid.size(axis));
    CHECK(c.rank() == g.grid.rank_in(axis, r));
    CHECK(c.name() == g.mpi[axis].name());
    const float expected = g.sum_of_members(axis);
    DeviceFloats buf(1000003, static_cast<float>(r + 1));  // not a multiple of any NCCL chunk
    c.all_reduce(buf.ptr, buf.n, comm::CommDType::F32, comm::ReduceOp::Sum);
    const std::vector<float> h = buf.host();
    CHECK(h.front() == expected);
    CHECK(h.back() == expected);
    CHECK(c.stats()[comm::Collective::AllReduce].calls == 1);
  }
}

// 1F1B with one micro-batch: a stage's first pipeline exchange is a send of its activation grouped with
// the receive of that activation's gradient, while the next stage's is a lone receive. NCCL makes the
// connections in the first group that needs them and expects both sides to ask for the same ones, so
// nccl_grid_comms makes them first (connect_neighbours); then this pattern completes with the values sent.
TEST_CASE("nccl_grid_comms: a pipeline's first exchange, grouped on one stage only (1F1B, one micro-batch)") {
  auto world = comm::MpiCommunicator::world({.timeout_s = 120});
  if (!g_gpu_per_rank || world->size() < 2) {
    MESSAGE("not run: a pipeline over NCCL needs a GPU per rank and 2 or more ranks");
    return;
  }
  const comm::ProcessGrid grid(1, world->size(), 1);
  comm::GridComms mpi = comm::grid_comms_split(*world, grid);
  comm::GridComms nccl = comm::nccl_grid_comms(mpi, g_device, {.timeout_s = 120});
  comm::Communicator& pp = *nccl.pp;
  const int stage = pp.rank(), last = pp.size() - 1;
  const std::int64_t n = 4099;
  DeviceFloats act_in(n, -1.0f), act_out(n, static_cast<float>(100 + stage)), grad_in(n, -1.0f),
      grad_out(n, static_cast<float>(200 + stage));
  using comm::CommDType, comm::Tag;
  if (stage > 0) pp.recv(act_in.ptr, n, CommDType::F32, stage - 1, Tag::Activation);
  if (stage < last) {
    pp.send_recv(act_out.ptr, n, stage + 1, Tag::Activation, grad_in.ptr, n, stage + 1, Tag::ActivationGrad,
                 CommDType::F32);
  }
  if (stage > 0) pp.send(grad_out.ptr, n, CommDType::F32, stage - 1, Tag::ActivationGrad);
  CHECK(act_in.host().back() == (stage > 0 ? 100.0f + static_cast<float>(stage - 1) : -1.0f));
  CHECK(grad_in.host().front() == (stage < last ? 200.0f + static_cast<float>(stage + 1) : -1.0f));
}

TEST_CASE("NcclCommunicator orders collectives against a compute stream with events, and runs async") {
  TpSetup s;
  auto& [world, g, nccl, tp, r, expected, compute] = s;
  const std::int64_t n = 1 << 22;
  DeviceFloats buf(n, 0.0f);
  std::vector<float> src(static_cast<std::size_t>(n), static_cast<float>(r + 1));
  // The values reach the buffer on the compute stream only; the all-reduce must run after that copy,
  // and the copy back (queued on the compute stream right after) must see the sum.
  tp.set_compute_stream(compute.get());
  ADAPT_CUDA_CHECK(
      cudaMemcpyAsync(buf.ptr, src.data(), src.size() * sizeof(float), cudaMemcpyHostToDevice, compute.get()));
  tp.all_reduce(buf.ptr, n, comm::CommDType::F32, comm::ReduceOp::Sum);
  std::vector<float> out(static_cast<std::size_t>(n));
  ADAPT_CUDA_CHECK(
      cudaMemcpyAsync(out.data(), buf.ptr, out.size() * sizeof(float), cudaMemcpyDeviceToHost, compute.get()));
  compute.synchronize();
  CHECK(out.front() == expected);
  CHECK(out.back() == expected);

  // Async: three all-reduces queued, then checked.
  tp.set_async(true);
  std::vector<std::unique_ptr<DeviceFloats>> bufs;
  for (int k = 0; k < 3; ++k) {
    bufs.push_back(std::make_unique<DeviceFloats>(4096 + k, static_cast<float>(r + 1 + k)));
    tp.all_reduce(bufs.back()->ptr, bufs.back()->n, comm::CommDType::F32, comm::ReduceOp::Sum);
  }
  CHECK(tp.poll() >= 0);
  tp.synchronize();
  CHECK(tp.poll() == 0);
  const float members = static_cast<float>(g.grid.size(comm::GridAxis::Tp));
  for (int k = 0; k < 3; ++k) CHECK(bufs[static_cast<std::size_t>(k)]->host().back() == expected + members * k);
  tp.set_async(false);
  tp.set_compute_stream(nullptr);
}

TEST_CASE("NcclCommunicator all_reduce_start: compute queued before wait() runs alongside; after it sees the sum") {
  TpSetup s;
  auto& [world, g, nccl, tp, r, expected, compute] = s;
  tp.set_compute_stream(compute.get());
  const std::int64_t n = 1 << 22;
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  DeviceFloats buf(n, 0.0f), other(n, 0.0f);
  std::vector<float> src(static_cast<std::size_t>(n), static_cast<float>(r + 1));
  tp.all_reduce(other.ptr, n, comm::CommDType::F32, comm::ReduceOp::Sum);  // warm-up: connections made

  // The values reach buf on the compute stream only: the started all-reduce must run after that copy.
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(buf.ptr, src.data(), bytes, cudaMemcpyHostToDevice, compute.get()));
  world->barrier();
  // With a peer in the group, it starts 1 s late: the compute queued between this rank's start and
  // wait must finish long before that (it is not ordered after the collective).
  const bool late_peer = g.grid.size(comm::GridAxis::Tp) > 1;
  if (late_peer && g.grid.rank_in(comm::GridAxis::Tp, r) == 1) std::this_thread::sleep_for(std::chrono::seconds(1));
  const comm::CollectiveStats before = tp.stats()[comm::Collective::AllReduce];
  comm::CommRequest req = tp.all_reduce_start(buf.ptr, n, comm::CommDType::F32, comm::ReduceOp::Sum);
  CHECK(req.pending());
  CHECK(tp.stats()[comm::Collective::AllReduce].calls == before.calls + 1);
  CHECK(tp.stats()[comm::Collective::AllReduce].bytes == before.bytes + n * 4);
  const auto t0 = std::chrono::steady_clock::now();
  ADAPT_CUDA_CHECK(cudaMemsetAsync(other.ptr, 0, bytes, compute.get()));  // compute not touching buf
  cudaEvent_t between = nullptr;
  ADAPT_CUDA_CHECK(cudaEventCreateWithFlags(&between, cudaEventDisableTiming));
  ADAPT_CUDA_CHECK(cudaEventRecord(between, compute.get()));
  ADAPT_CUDA_CHECK(cudaEventSynchronize(between));
  const double between_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ADAPT_CUDA_CHECK(cudaEventDestroy(between));
  if (late_peer && g.grid.rank_in(comm::GridAxis::Tp, r) == 0) {
    CAPTURE(between_s);
    CHECK(between_s < 0.5);
  }
  req.wait();
  CHECK_FALSE(req.pending());
  std::vector<float> out(static_cast<std::size_t>(n));
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(out.data(), buf.ptr, bytes, cudaMemcpyDeviceToHost, compute.get()));
  compute.synchronize();
  CHECK(out.front() == expected);
  CHECK(out.back() == expected);
  CHECK(other.host().back() == 0.0f);

  // Two in flight, waited out of order; then one left to the destructor; async mode joins poll().
  DeviceFloats a(4096, static_cast<float>(r + 1)), b(4097, static_cast<float>(r + 2));
  {
    comm::CommRequest ra = tp.all_reduce_start(a.ptr, a.n, comm::CommDType::F32, comm::ReduceOp::Sum);
    comm::CommRequest rb = tp.all_reduce_start(b.ptr, b.n, comm::CommDType::F32, comm::ReduceOp::Sum);
    rb.wait();
  }
  const float members = static_cast<float>(g.grid.size(comm::GridAxis::Tp));
  CHECK(a.host().back() == expected);
  CHECK(b.host().back() == expected + members);
  tp.set_async(true);
  comm::CommRequest rc = tp.all_reduce_start(a.ptr, a.n, comm::CommDType::F32, comm::ReduceOp::Sum);
  rc.wait();
  CHECK(tp.poll() >= 0);
  tp.synchronize();
  CHECK(tp.poll() == 0);
  CHECK(a.host().front() == expected * members);
  tp.set_async(false);
  tp.set_compute_stream(nullptr);
}
#endif

int main(int argc, char** argv) {
  return test::gpu_mpi_main(
      argc, argv,
      ADAPT_HAVE_NCCL ? std::string() : "this binary was built without NCCL (ADAPT_CUDA=OFF or NCCL not found)",
      [](const test::GpuMpiWorld& w) {
        g_device = w.rank % w.min_devices;
        g_gpu_per_rank = w.min_devices >= w.size;
        if (w.rank == 0) {
          std::printf("running on %s, %d ranks on %d GPUs%s\n", backend::cuda_device_name(0).c_str(), w.size,
                      w.min_devices,
                      g_gpu_per_rank ? " (tp2 x dp groups)"
                                     : "; NCCL cannot put two ranks of one group on a GPU, so each rank tests "
                                       "single-rank groups");
        }
      });
}
