// MpiCommunicator under mpiexec (2 and 4 ranks): every collective's result equals a reference the
// rank computes locally from the inputs all ranks would have, for f32, f64 and i64, with the default
// chunk size and with chunking forced (a few elements per MPI call); sub-communicators of the grid;
// the bytes counted per collective; all_reduce_start (several requests in flight, completed out of
// order, against the blocking all_reduce; the destructor's wait).
#include <doctest/doctest.h>
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "comm/mpi_communicator.h"
#include "core/error.h"

using namespace adapt;
using namespace adapt::comm;

namespace {

// The value rank r contributes at index i: integer-valued, so float sums are exact in any order.
template <typename T>
T input(int r, std::int64_t i) {
  return static_cast<T>((r + 1) * 1000 + (i * 7 + r * 3) % 101);
}

template <typename T>
void check_all_reduce(Communicator& c, std::int64_t n) {
  std::vector<T> sum(static_cast<std::size_t>(n)), max(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) sum[i] = max[i] = input<T>(c.rank(), i);
  c.all_reduce(std::span<T>(sum), ReduceOp::Sum);
  c.all_reduce(std::span<T>(max), ReduceOp::Max);
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    T ref_sum = 0, ref_max = input<T>(0, i);
    for (int r = 0; r < c.size(); ++r) {
      ref_sum += input<T>(r, i);
      ref_max = std::max(ref_max, input<T>(r, i));
    }
    bad += sum[i] != ref_sum || max[i] != ref_max;
  }
  CHECK(bad == 0);
}

void check_collectives(Communicator& c, std::int64_t n) {
  CAPTURE(n);
  CAPTURE(c.options().max_elems_per_call);
  const int size = c.size(), me = c.rank();
  check_all_reduce<float>(c, n);
  check_all_reduce<double>(c, n);
  check_all_reduce<std::int64_t>(c, n);

  // all_gather: rank r's block lands at r·n.
  std::vector<float> mine(static_cast<std::size_t>(n)), gathered(static_cast<std::size_t>(n * size), -1.f);
  for (std::int64_t i = 0; i < n; ++i) mine[i] = input<float>(me, i);
  c.all_gather(mine.data(), gathered.data(), n, CommDType::F32);
  std::int64_t bad = 0;
  for (int r = 0; r < size; ++r) {
    for (std::int64_t i = 0; i < n; ++i) bad += gathered[r * n + i] != input<float>(r, i);
  }
  CHECK(bad == 0);

  // reduce_scatter: block b of the sum over ranks of their (size·n) inputs.
  std::vector<double> full(static_cast<std::size_t>(n * size)), part(static_cast<std::size_t>(n), -1.0);
  for (std::int64_t i = 0; i < n * size; ++i) full[i] = input<double>(me, i);
  c.reduce_scatter(full.data(), part.data(), n, CommDType::F64, ReduceOp::Sum);
  bad = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    double ref = 0;
    for (int r = 0; r < size; ++r) ref += input<double>(r, me * n + i);
    bad += part[i] != ref;
  }
  CHECK(bad == 0);

  // broadcast from the last rank.
  std::vector<std::int64_t> b(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) b[i] = input<std::int64_t>(me, i);
  c.broadcast(std::span<std::int64_t>(b), size - 1);
  bad = 0;
  for (std::int64_t i = 0; i < n; ++i) bad += b[i] != input<std::int64_t>(size - 1, i);
  CHECK(bad == 0);

  // send/recv between pairs (0↔1, 2↔3): the even rank sends first.
  const int peer = me ^ 1;
  if (peer < size) {
    std::vector<float> out(static_cast<std::size_t>(n)), in(static_cast<std::size_t>(n), -1.f);
    for (std::int64_t i = 0; i < n; ++i) out[i] = input<float>(me, i);
    if (me % 2 == 0) {
      c.send(out.data(), n, CommDType::F32, peer, Tag::Activation);
      c.recv(in.data(), n, CommDType::F32, peer, Tag::ActivationGrad);
    } else {
      c.recv(in.data(), n, CommDType::F32, peer, Tag::Activation);
      c.send(out.data(), n, CommDType::F32, peer, Tag::ActivationGrad);
    }
    bad = 0;
    for (std::int64_t i = 0; i < n; ++i) bad += in[i] != input<float>(peer, i);
    CHECK(bad == 0);
  }

  // send_recv around the ring: every rank sends right and receives from the left at once (with
  // blocking sends of large messages this pattern waits forever). Received messages are one longer.
  const int right = (me + 1) % size, left = (me + size - 1) % size;
  std::vector<double> out(static_cast<std::size_t>(n)), in(static_cast<std::size_t>(n + 1), -1.0);
  for (std::int64_t i = 0; i < n; ++i) out[i] = input<double>(me, i);
  std::vector<double> out_long(static_cast<std::size_t>(n + 1));
  for (std::int64_t i = 0; i <= n; ++i) out_long[i] = input<double>(me, i);
  const std::int64_t before = c.stats()[Collective::SendRecv].bytes;
  c.send_recv(out_long.data(), n + 1, right, Tag::Activation, in.data(), n + 1, left, Tag::Activation, CommDType::F64);
  CHECK(c.stats()[Collective::SendRecv].bytes - before == 2 * (n + 1) * 8);
  bad = 0;
  for (std::int64_t i = 0; i <= n; ++i) bad += in[i] != input<double>(left, i);
  CHECK(bad == 0);
  // Unequal lengths in the two directions (a pipeline stage sends activations, receives gradients).
  if (size == 2) {
    std::vector<double> got(static_cast<std::size_t>(me == 0 ? n + 1 : n), -1.0);
    if (me == 0) {
      c.send_recv(out.data(), n, 1, Tag::Activation, got.data(), n + 1, 1, Tag::ActivationGrad, CommDType::F64);
    } else {
      c.send_recv(out_long.data(), n + 1, 0, Tag::ActivationGrad, got.data(), n, 0, Tag::Activation, CommDType::F64);
    }
    bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) bad += got[i] != input<double>(1 - me, static_cast<std::int64_t>(i));
    CHECK(bad == 0);
  }
  c.barrier();
}

}  // namespace

TEST_CASE("mpi_init records the thread level MPI provides: at least funneled") {
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  CHECK(mpi_thread_level() == provided);
  CHECK(mpi_thread_level() >= MPI_THREAD_FUNNELED);
}

TEST_CASE("collectives equal a local reference, with and without chunking") {
  auto world = MpiCommunicator::world();
  REQUIRE(world->size() >= 2);
  CHECK(world->name() == "world");
  for (std::int64_t n : {1, 100, 1000, 300000}) check_collectives(*world, n);
  // A few elements per MPI call: every transfer is split into many chunks.
  auto chunked = MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = 7});
  for (std::int64_t n : {1, 7, 8, 100, 1001}) check_collectives(*chunked, n);
  auto one = MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = 1});
  check_collectives(*one, 13);
}

TEST_CASE("bytes are counted per collective; empty transfers and unsupported reductions") {
  auto world = MpiCommunicator::world();
  const std::int64_t size = world->size();
  std::vector<float> v(10, 1.f), g(static_cast<std::size_t>(10 * size));
  world->all_reduce(std::span<float>(v), ReduceOp::Sum);
  CHECK(v[3] == static_cast<float>(size));
  world->all_gather(v.data(), g.data(), 10, CommDType::F32);
  world->all_reduce(v.data(), 0, CommDType::F32, ReduceOp::Sum);  // nothing to move, still a call
  CHECK(world->stats()[Collective::AllReduce].calls == 2);
  CHECK(world->stats()[Collective::AllReduce].bytes == 40);
  CHECK(world->stats()[Collective::AllGather].bytes == 40 * size);
  CHECK(world->seq() == 3);
  std::vector<std::uint16_t> half(4);
  CHECK_THROWS_WITH_AS(world->all_reduce(half.data(), 4, CommDType::BF16, ReduceOp::Sum),
                       doctest::Contains("MPI cannot reduce bf16"), UnsupportedError);
  world->broadcast(half.data(), 4, CommDType::BF16, 0);  // moving bf16 bits is fine
  Tensor t = Tensor::zeros({3, 2}, DType::F32, "t");
  t.data<float>()[5] = static_cast<float>(world->rank());
  world->all_reduce(t, ReduceOp::Max);
  CHECK(t.data<float>()[5] == static_cast<float>(size - 1));
}

TEST_CASE("grid sub-communicators reduce within their group only") {
  auto world = MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = 3});
  const int size = world->size(), me = world->rank();
  // tp2 × pp(size/2) when the size is even, and the pure data-parallel grid.
  std::vector<ProcessGrid> grids{ProcessGrid(1, 1, size)};
  if (size % 2 == 0) grids.emplace_back(2, size / 2, 1);
  if (size % 4 == 0) grids.emplace_back(2, 1, size / 2);
  for (const ProcessGrid& grid : grids) {
    CAPTURE(grid.str());
    GridComms g = grid_comms_split(*world, grid);
    for (GridAxis axis : {GridAxis::Tp, GridAxis::Pp, GridAxis::Dp}) {
      Communicator& c = g[axis];
      CHECK(c.size() == grid.size(axis));
      CHECK(c.rank() == grid.rank_in(axis, me));
      CHECK(c.name() == grid.group_name(axis, me));
      // The sum of the members' world ranks: only the group's members contribute.
      std::vector<std::int64_t> v(5, me);
      c.all_reduce(std::span<std::int64_t>(v), ReduceOp::Sum);
      std::int64_t ref = 0;
      for (int m : grid.group_members(axis, me)) ref += m;
      CHECK(v[4] == ref);
    }
    // Activations travel to the next pipeline stage over the pp group.
    if (grid.pp_size() > 1) {
      std::vector<float> act(10, static_cast<float>(me)), in(10, -1.f);
      if (auto next = grid.next_stage(me))
        g.pp->send(act.data(), 10, CommDType::F32, grid.rank_in(GridAxis::Pp, *next), Tag::Activation);
      if (auto prev = grid.prev_stage(me)) {
        g.pp->recv(in.data(), 10, CommDType::F32, grid.rank_in(GridAxis::Pp, *prev), Tag::Activation);
        CHECK(in[9] == static_cast<float>(*prev));
      }
    }
  }
}

namespace {

// Three all-reduces in flight at once (f32 sum, f64 max, i64 sum), completed in the reverse order, with
// a blocking collective issued between the starts and the waits; each result equals the blocking
// all_reduce's on the same inputs and the bytes and calls counted equal the blocking ones'.
void check_started_all_reduces(Communicator& started, Communicator& blocking, std::int64_t n) {
  CAPTURE(n);
  CAPTURE(started.options().max_elems_per_call);
  const int me = started.rank();
  std::vector<float> f(static_cast<std::size_t>(n));
  std::vector<double> d(static_cast<std::size_t>(n));
  std::vector<std::int64_t> k(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    f[i] = input<float>(me, i);
    d[i] = input<double>(me, i);
    k[i] = input<std::int64_t>(me, i);
  }
  std::vector<float> f_ref = f;
  std::vector<double> d_ref = d;
  std::vector<std::int64_t> k_ref = k;
  blocking.all_reduce(std::span<float>(f_ref), ReduceOp::Sum);
  blocking.all_reduce(std::span<double>(d_ref), ReduceOp::Max);
  blocking.all_reduce(std::span<std::int64_t>(k_ref), ReduceOp::Sum);
  std::vector<std::int64_t> other_ref(3, me);  // what `started` runs between its starts and waits
  blocking.all_reduce(std::span<std::int64_t>(other_ref), ReduceOp::Max);

  const CollectiveStats before = started.stats()[Collective::AllReduce];
  CommRequest rf = started.all_reduce_start(f.data(), n, CommDType::F32, ReduceOp::Sum);
  CommRequest rd = started.all_reduce_start(d.data(), n, CommDType::F64, ReduceOp::Max);
  CommRequest rk = started.all_reduce_start(k.data(), n, CommDType::I64, ReduceOp::Sum);
  CHECK(started.stats()[Collective::AllReduce].calls - before.calls == 3);
  CHECK(started.stats()[Collective::AllReduce].bytes - before.bytes == n * (4 + 8 + 8));
  std::vector<std::int64_t> other(3, me);  // another collective while the three are in flight
  started.all_reduce(std::span<std::int64_t>(other), ReduceOp::Max);
  CHECK(other[2] == started.size() - 1);
  rk.wait();
  rd.wait();
  rf.wait();
  CHECK(f == f_ref);
  CHECK(d == d_ref);
  CHECK(k == k_ref);
}

}  // namespace

TEST_CASE("all_reduce_start: requests in flight together, completed out of order, equal the blocking all_reduce") {
  for (const std::int64_t chunk : {std::int64_t{2147483647}, std::int64_t{7}, std::int64_t{1}}) {
    auto started = MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = chunk});
    auto blocking = MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = chunk});
    for (const std::int64_t n : {1, 8, 100, 1001}) {
      if (chunk == 1 && n > 100) continue;  // a thousand requests in flight per call: slow, nothing new
      check_started_all_reduces(*started, *blocking, n);
    }
    if (chunk == 2147483647) check_started_all_reduces(*started, *blocking, 300000);
    CHECK(started->stats()[Collective::AllReduce].bytes == blocking->stats()[Collective::AllReduce].bytes);
    CHECK(started->stats()[Collective::AllReduce].calls == blocking->stats()[Collective::AllReduce].calls);
  }
}

TEST_CASE("all_reduce_start: the destructor completes a request never waited for; argument errors throw") {
  auto world = MpiCommunicator::world({.timeout_s = 60});
  const int size = world->size();
  Tensor t = Tensor::zeros({5, 3}, DType::F32, "t");
  t.data<float>()[14] = static_cast<float>(world->rank() + 1);
  {
    CommRequest r = world->all_reduce_start(t, ReduceOp::Sum);
    CHECK(r.pending());
  }  // not waited: the destructor did
  CHECK(t.data<float>()[14] == static_cast<float>(size * (size + 1) / 2));
  CHECK(world->stats()[Collective::AllReduce].bytes == 60);
  // Moving a request over a pending one completes the one it replaces first.
  std::vector<double> a(4, 1.0), b(4, 2.0);
  CommRequest r = world->all_reduce_start(a.data(), 4, CommDType::F64, ReduceOp::Sum);
  r = world->all_reduce_start(b.data(), 4, CommDType::F64, ReduceOp::Sum);
  CHECK(a[3] == size);
  r.wait();
  CHECK(b[0] == 2.0 * size);
  std::vector<std::uint16_t> half(4);
  CHECK_THROWS_WITH_AS((void)world->all_reduce_start(half.data(), 4, CommDType::BF16, ReduceOp::Sum),
                       doctest::Contains("MPI cannot reduce bf16"), UnsupportedError);
  world->barrier();
}
