// The emulated NCCL (nccl_emu.cpp) under mpiexec, its results against MPI's and against sums computed
// here: all-reduce (f32, bf16, i64; sum, max, avg; in place; more than one chunk), broadcast,
// all-gather, reduce-scatter, send/recv in a group (a ring, both directions at once) and alone,
// ncclCommSplit (colors, keys, NCCL_SPLIT_NOCOLOR), non-blocking communicators (ncclInProgress while a
// late peer is awaited, the caller free meanwhile), and the
// faults it reports instead of hanging: ranks calling different collectives, a receive that expects
// another count, a buffer that is not device memory, two ranks on one device, a unique id that was not
// broadcast, a peer's ncclCommAbort. Run with CUDA_EMU_DEVICES=4 (each rank on its own device).
#include <doctest/doctest.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dtype/dtype.h"

namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

/// A unique id from rank 0, broadcast over MPI as a program would.
ncclUniqueId shared_id() {
  ncclUniqueId id{};
  if (world_rank() == 0) REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  return id;
}

/// A communicator over the world, each rank on device `rank % devices` (or on `device`).
ncclComm_t world_comm(int device = -1) {
  REQUIRE(cudaSetDevice(device >= 0 ? device : world_rank()) == cudaSuccess);
  ncclComm_t comm = nullptr;
  REQUIRE(ncclCommInitRank(&comm, world_size(), shared_id(), world_rank()) == ncclSuccess);
  REQUIRE(comm != nullptr);
  return comm;
}

template <typename T>
struct Device {
  T* ptr = nullptr;
  std::size_t n = 0;
  explicit Device(std::size_t count) : n(count) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&ptr), n * sizeof(T)) == cudaSuccess);
  }
  ~Device() { cudaFree(ptr); }
  void put(const std::vector<T>& h) {
    REQUIRE(h.size() == n);
    REQUIRE(cudaMemcpy(ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  std::vector<T> get() const {
    std::vector<T> h(n);
    REQUIRE(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
};

/// Element i of rank r's input: distinct per rank and per element, exact in f32.
float value(int r, std::size_t i) { return static_cast<float>((r + 1) * 1000 + static_cast<int>(i % 997)); }

}  // namespace

TEST_CASE("nccl_emu: all-reduce over more than one chunk equals MPI_Allreduce; max, avg, bf16, i64, in place") {
  ncclComm_t comm = world_comm();
  const int r = world_rank(), n = world_size();
  int count = 0, rank = -1;
  CHECK(ncclCommCount(comm, &count) == ncclSuccess);
  CHECK(ncclCommUserRank(comm, &rank) == ncclSuccess);
  CHECK(count == n);
  CHECK(rank == r);

  const std::size_t elems = (std::size_t(3) << 20) / 4 + 17;  // 3 MiB of f32 and a tail: 4 chunks
  std::vector<float> mine(elems);
  for (std::size_t i = 0; i < elems; ++i) mine[i] = value(r, i);
  for (const ncclRedOp_t op : {ncclSum, ncclMax}) {
    CAPTURE(op);
    Device<float> send(elems), recv(elems);
    send.put(mine);
    REQUIRE(ncclAllReduce(send.ptr, recv.ptr, elems, ncclFloat32, op, comm, nullptr) == ncclSuccess);
    std::vector<float> want(elems);
    MPI_Allreduce(mine.data(), want.data(), static_cast<int>(elems), MPI_FLOAT, op == ncclSum ? MPI_SUM : MPI_MAX,
                  MPI_COMM_WORLD);
    CHECK(recv.get() == want);
  }
  // In place, average.
  Device<float> buf(elems);
  buf.put(mine);
  REQUIRE(ncclAllReduce(buf.ptr, buf.ptr, elems, ncclFloat32, ncclAvg, comm, nullptr) == ncclSuccess);
  const std::vector<float> avg = buf.get();
  float want_first = 0;
  for (int k = 0; k < n; ++k) want_first += value(k, 0);
  CHECK(avg.front() == doctest::Approx(want_first / static_cast<float>(n)));

  // bf16: small integers, exact in bf16, summed exactly.
  std::vector<std::uint16_t> b(40);  // sums below 256: exact in bf16
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = adapt::f32_to_bf16(static_cast<float>(r + static_cast<int>(i)));
  Device<std::uint16_t> bd(b.size());
  bd.put(b);
  REQUIRE(ncclAllReduce(bd.ptr, bd.ptr, b.size(), ncclBfloat16, ncclSum, comm, nullptr) == ncclSuccess);
  const std::vector<std::uint16_t> bs = bd.get();
  for (std::size_t i = 0; i < b.size(); ++i) {
    CAPTURE(i);
    CHECK(adapt::bf16_to_f32(bs[i]) == static_cast<float>(n * static_cast<int>(i) + n * (n - 1) / 2));
  }
  // i64 beyond 2^53.
  Device<std::int64_t> id(1);
  id.put({(std::int64_t(1) << 60) + r});
  REQUIRE(ncclAllReduce(id.ptr, id.ptr, 1, ncclInt64, ncclSum, comm, nullptr) == ncclSuccess);
  CHECK(id.get()[0] == (std::int64_t(n) << 60) + n * (n - 1) / 2);
  ncclCommDestroy(comm);
}

TEST_CASE("nccl_emu: broadcast, all-gather and reduce-scatter") {
  ncclComm_t comm = world_comm();
  const int r = world_rank(), n = world_size();
  const std::size_t elems = 300001;  // more than one chunk of reduce-scatter's slot share
  const auto un = static_cast<std::size_t>(n);
  std::vector<float> mine(elems);
  for (std::size_t i = 0; i < elems; ++i) mine[i] = value(r, i);

  const int root = n - 1;
  Device<float> b(elems);
  b.put(mine);
  REQUIRE(ncclBroadcast(b.ptr, b.ptr, elems, ncclFloat32, root, comm, nullptr) == ncclSuccess);
  std::vector<float> want(elems);
  for (std::size_t i = 0; i < elems; ++i) want[i] = value(root, i);
  CHECK(b.get() == want);

  Device<float> send(elems), gathered(elems * un);
  send.put(mine);
  REQUIRE(ncclAllGather(send.ptr, gathered.ptr, elems, ncclFloat32, comm, nullptr) == ncclSuccess);
  std::vector<float> all(elems * un);
  MPI_Allgather(mine.data(), static_cast<int>(elems), MPI_FLOAT, all.data(), static_cast<int>(elems), MPI_FLOAT,
                MPI_COMM_WORLD);
  CHECK(gathered.get() == all);

  // Reduce-scatter of the gathered vector, scaled per rank: part r of the sum.
  std::vector<float> big(elems * un);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = all[i] * static_cast<float>(r + 1);
  Device<float> rs_send(elems * un), rs_recv(elems);
  rs_send.put(big);
  REQUIRE(ncclReduceScatter(rs_send.ptr, rs_recv.ptr, elems, ncclFloat32, ncclSum, comm, nullptr) == ncclSuccess);
  std::vector<float> sum(elems * un);
  MPI_Allreduce(big.data(), sum.data(), static_cast<int>(sum.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  CHECK(rs_recv.get() ==
        std::vector<float>(sum.begin() + static_cast<std::ptrdiff_t>(elems * static_cast<std::size_t>(r)),
                           sum.begin() + static_cast<std::ptrdiff_t>(elems * static_cast<std::size_t>(r + 1))));
  ncclCommDestroy(comm);
}

TEST_CASE("nccl_emu: send and receive in a group around a ring both ways; alone; the count checked") {
  ncclComm_t comm = world_comm();
  const int r = world_rank(), n = world_size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  const std::size_t elems = 200003;  // 800 KB: more than a mailbox, so both directions must progress together
  std::vector<float> mine(elems);
  for (std::size_t i = 0; i < elems; ++i) mine[i] = value(r, i);
  Device<float> send(elems), from_prev(elems), from_next(elems);
  send.put(mine);
  REQUIRE(ncclGroupStart() == ncclSuccess);
  REQUIRE(ncclSend(send.ptr, elems, ncclFloat32, next, comm, nullptr) == ncclSuccess);
  REQUIRE(ncclSend(send.ptr, elems, ncclFloat32, prev, comm, nullptr) == ncclSuccess);
  REQUIRE(ncclRecv(from_prev.ptr, elems, ncclFloat32, prev, comm, nullptr) == ncclSuccess);
  REQUIRE(ncclRecv(from_next.ptr, elems, ncclFloat32, next, comm, nullptr) == ncclSuccess);
  REQUIRE(ncclGroupEnd() == ncclSuccess);
  std::vector<float> want_prev(elems), want_next(elems);
  for (std::size_t i = 0; i < elems; ++i) want_prev[i] = value(prev, i), want_next[i] = value(next, i);
  CHECK(from_prev.get() == want_prev);
  CHECK(from_next.get() == want_next);

  // Alone (outside a group), rank 0 to rank 1: a small message is buffered.
  if (n >= 2 && r <= 1) {
    Device<float> one(5);
    if (r == 0) {
      one.put({1, 2, 3, 4, 5});
      CHECK(ncclSend(one.ptr, 5, ncclFloat32, 1, comm, nullptr) == ncclSuccess);
    } else {
      CHECK(ncclRecv(one.ptr, 5, ncclFloat32, 0, comm, nullptr) == ncclSuccess);
      CHECK(one.get() == std::vector<float>{1, 2, 3, 4, 5});
    }
  }
  // A receive of another count than was sent: an error naming both, on the receiver.
  if (n >= 2 && r <= 1) {
    Device<float> d(8);
    if (r == 0) {
      CHECK(ncclSend(d.ptr, 8, ncclFloat32, 1, comm, nullptr) == ncclSuccess);
    } else {
      CHECK(ncclRecv(d.ptr, 4, ncclFloat32, 0, comm, nullptr) == ncclInvalidUsage);
      const std::string why = ncclGetLastError(comm);
      CHECK_MESSAGE(why.find("rank 0 sent 32 bytes") != std::string::npos, why);
    }
  }
  ncclCommDestroy(comm);
}

TEST_CASE("nccl_emu: ncclCommSplit by color and key; NCCL_SPLIT_NOCOLOR gets no communicator") {
  ncclComm_t comm = world_comm();
  const int r = world_rank(), n = world_size();
  // Color by parity; keys reverse the order; the last rank opts out.
  const bool out = r == n - 1 && n > 2;
  ncclComm_t sub = nullptr;
  REQUIRE(ncclCommSplit(comm, out ? NCCL_SPLIT_NOCOLOR : r % 2, -r, &sub, nullptr) == ncclSuccess);
  if (out) {
    CHECK(sub == nullptr);
  } else {
    REQUIRE(sub != nullptr);
    std::vector<int> members;
    for (int k = n - 1; k >= 0; --k) {
      if (k % 2 == r % 2 && !(k == n - 1 && n > 2)) members.push_back(k);
    }
    int size = 0, rank = -1;
    ncclCommCount(sub, &size);
    ncclCommUserRank(sub, &rank);
    CHECK(size == static_cast<int>(members.size()));
    CHECK(members[static_cast<std::size_t>(rank)] == r);
    Device<float> d(1);
    d.put({static_cast<float>(r)});
    REQUIRE(ncclAllReduce(d.ptr, d.ptr, 1, ncclFloat32, ncclSum, sub, nullptr) == ncclSuccess);
    float want = 0;
    for (int m : members) want += static_cast<float>(m);
    CHECK(d.get()[0] == want);
    ncclCommDestroy(sub);
  }
  ncclCommDestroy(comm);
}

TEST_CASE("nccl_emu: a non-blocking communicator answers ncclInProgress and runs its calls while the caller goes on") {
  REQUIRE(cudaSetDevice(world_rank()) == cudaSuccess);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t rc = ncclCommInitRankConfig(&comm, world_size(), shared_id(), world_rank(), &config);
  CHECK(rc == ncclInProgress);
  REQUIRE(comm != nullptr);
  // The state until the communicator has nothing in progress (or fails).
  const auto settle = [&] {
    ncclResult_t state = ncclInProgress;
    while (state == ncclInProgress) REQUIRE(ncclCommGetAsyncError(comm, &state) == ncclSuccess);
    return state;
  };
  CHECK(settle() == ncclSuccess);
  // Rank 1 comes half a second late: the others' call returns at once and stays in progress until then.
  Device<float> d(3);
  d.put({1, 1, 1});
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(ncclAllReduce(d.ptr, d.ptr, 3, ncclFloat32, ncclSum, comm, nullptr) == ncclInProgress);
  const double call_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (world_rank() == 0) {
    CHECK(call_s < 0.25);
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm, &state);
    CHECK(state == ncclInProgress);
  }
  CHECK(settle() == ncclSuccess);
  CHECK(d.get()[2] == static_cast<float>(world_size()));
  ncclCommDestroy(comm);
}

TEST_CASE("nccl_emu: ranks that call different collectives, host buffers, one device twice, ids not broadcast") {
  const int r = world_rank(), n = world_size();
  {
    ncclComm_t comm = world_comm();
    Device<float> d(16);
    // Rank 0 reduces 16 elements, the others 8: every rank gets ncclInvalidUsage naming the difference.
    const ncclResult_t rc = ncclAllReduce(d.ptr, d.ptr, r == 0 ? 16 : 8, ncclFloat32, ncclSum, comm, nullptr);
    CHECK(rc == ncclInvalidUsage);
    const std::string why = ncclGetLastError(comm);
    CHECK_MESSAGE(why.find("ranks disagree") != std::string::npos, why);
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm, &state);
    CHECK(state == ncclInvalidUsage);
    ncclCommDestroy(comm);
  }
  {
    ncclComm_t comm = world_comm();
    std::vector<float> host(4, 1.0f);
    CHECK(ncclAllReduce(host.data(), host.data(), 4, ncclFloat32, ncclSum, comm, nullptr) == ncclInvalidArgument);
    const std::string why = ncclGetLastError(comm);
    CHECK_MESSAGE(why.find("not device memory") != std::string::npos, why);
    ncclCommDestroy(comm);
  }
  if (n >= 2) {
    REQUIRE(cudaSetDevice(0) == cudaSuccess);
    ncclComm_t comm = nullptr;
    CHECK(ncclCommInitRank(&comm, n, shared_id(), r) == ncclInvalidUsage);
    CHECK(comm == nullptr);
    const std::string why = ncclGetLastError(nullptr);
    CHECK_MESSAGE(why.find("Duplicate GPU detected") != std::string::npos, why);
  }
  {
    ncclUniqueId zero{};
    ncclComm_t comm = nullptr;
    CHECK(ncclCommInitRank(&comm, n, zero, r) == ncclInvalidArgument);
    const std::string why = ncclGetLastError(nullptr);
    CHECK_MESSAGE(why.find("did not make") != std::string::npos, why);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_CASE("nccl_emu: after a peer's ncclCommAbort, the others' collectives fail with ncclRemoteError") {
  ncclComm_t comm = world_comm();
  const int r = world_rank();
  MPI_Barrier(MPI_COMM_WORLD);
  if (r == 0) ncclCommAbort(comm);
  MPI_Barrier(MPI_COMM_WORLD);
  if (r != 0) {
    Device<float> d(4);
    CHECK(ncclAllReduce(d.ptr, d.ptr, 4, ncclFloat32, ncclSum, comm, nullptr) == ncclRemoteError);
    const std::string why = ncclGetLastError(comm);
    CHECK_MESSAGE(why.find("rank 0 of this communicator called ncclCommAbort") != std::string::npos, why);
    ncclCommDestroy(comm);
  }
}
