// LocalCommunicator (a group of one) and what the Communicator base does for every implementation:
// argument checks, byte counting per collective, call numbering, the timeout message, grid splits;
// CommRequest (wait once, the destructor's and move-assignment's waits) and the synchronous
// all_reduce_start of the local group and of the base class's default.
#include "comm/local_communicator.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <numeric>
#include <vector>

#include "core/error.h"

using namespace adapt;
using namespace adapt::comm;

TEST_CASE("a single-rank group: reductions keep the data, gathers copy, stats count bytes") {
  LocalCommunicator c;
  CHECK(c.rank() == 0);
  CHECK(c.size() == 1);
  CHECK(c.name() == "world");

  std::vector<double> d = {1.5, -2.0, 3.25};
  c.all_reduce(std::span<double>(d), ReduceOp::Sum);
  CHECK(d == std::vector<double>{1.5, -2.0, 3.25});
  std::vector<std::int64_t> i = {7, 9};
  c.all_reduce(std::span<std::int64_t>(i), ReduceOp::Max);
  CHECK(i == std::vector<std::int64_t>{7, 9});

  std::vector<float> send = {1, 2, 3, 4}, recv(4, 0.f);
  c.all_gather(send.data(), recv.data(), 4, CommDType::F32);
  CHECK(recv == send);
  std::vector<float> scattered(4, 0.f);
  c.reduce_scatter(send.data(), scattered.data(), 4, CommDType::F32, ReduceOp::Sum);
  CHECK(scattered == send);
  c.broadcast(std::span<float>(send), 0);
  c.barrier();

  CHECK(c.stats()[Collective::AllReduce].calls == 2);
  CHECK(c.stats()[Collective::AllReduce].bytes == 3 * 8 + 2 * 8);
  CHECK(c.stats()[Collective::AllGather].bytes == 16);
  CHECK(c.stats()[Collective::ReduceScatter].bytes == 16);
  CHECK(c.stats()[Collective::Broadcast].bytes == 16);
  CHECK(c.stats()[Collective::Barrier].calls == 1);
  CHECK(c.stats().total_bytes() == 40 + 16 + 16 + 16);
  CHECK(c.seq() == 6);
  c.reset_stats();
  CHECK(c.stats().total_bytes() == 0);

  Tensor t = Tensor::zeros({2, 3}, DType::F32, "t");
  c.all_reduce(t, ReduceOp::Sum);
  CHECK(c.stats()[Collective::AllReduce].bytes == 24);
}

TEST_CASE("argument errors throw before any communication") {
  LocalCommunicator c("tp[pp0,dp0]");
  float x = 0;
  CHECK_THROWS_WITH_AS(c.all_reduce(&x, -1, CommDType::F32, ReduceOp::Sum),
                       doctest::Contains("all_reduce on group tp[pp0,dp0]: element count -1 is negative"), CommError);
  CHECK_THROWS_WITH_AS(c.broadcast(&x, 1, CommDType::F32, 1), doctest::Contains("root 1 is not a rank"), CommError);
  CHECK_THROWS_WITH_AS(c.send(&x, 1, CommDType::F32, 0, Tag::Activation),
                       doctest::Contains("peer 0 must be another rank of the group"), CommError);
  CHECK_THROWS_AS(c.recv(&x, 1, CommDType::F32, 1, Tag::Activation), CommError);
  CHECK_THROWS_WITH_AS(c.send_recv(&x, 1, 0, Tag::Activation, &x, 1, 0, Tag::Activation, CommDType::F32),
                       doctest::Contains("send_recv on group tp[pp0,dp0]: peer 0 must be another rank"), CommError);
  CHECK_THROWS_AS(c.split(-1, 0, "x"), CommError);
  CHECK_THROWS_AS(LocalCommunicator("w", {.timeout_s = 0}), ConfigError);
  CHECK_THROWS_AS(LocalCommunicator("w", {.max_elems_per_call = 0}), ConfigError);
  CHECK_THROWS_AS(LocalCommunicator("w", {.max_elems_per_call = 1ll << 31}), ConfigError);
}

TEST_CASE("the timeout message names the rank, the collective, the time and the group") {
  CHECK(comm_timeout_message(3, Collective::ReduceScatter, 2.5, "dp[tp1,pp0]", 17)
            .starts_with("rank 3: reduce_scatter timed out after 2.5s in group dp[tp1,pp0] (call #17)"));
  CHECK(collective_name(Collective::AllGather) == "all_gather");
  CHECK(comm_dtype_size(CommDType::F64) == 8);
  CHECK(comm_dtype_of(DType::BF16) == CommDType::BF16);
  CHECK(comm_dtype_of<std::int64_t>() == CommDType::I64);
}

TEST_CASE("a one-rank world splits into one-rank tp, pp and dp groups") {
  LocalCommunicator world;
  GridComms g = grid_comms_split(world, ProcessGrid(1, 1, 1));
  CHECK(g.tp->size() == 1);
  CHECK(g.pp->name() == "pp[tp0,dp0]");
  CHECK(g[GridAxis::Dp].name() == "dp[tp0,pp0]");
  CHECK(world.stats()[Collective::Split].calls == 3);
  CHECK_THROWS_WITH_AS(grid_comms_split(world, ProcessGrid(2, 1, 1)),
                       doctest::Contains("needs 2 ranks but communicator 'world' has 1"), ConfigError);
}

namespace {

/// A request state that counts how often it was completed, and where.
struct CountingState final : CommRequest::State {
  int* waits;
  explicit CountingState(int* w) : waits(w) {}
  void wait() override { ++*waits; }
};

/// A two-rank group whose all-reduce doubles the buffer (as if the peer held the same values) and
/// which has no do_all_reduce_start of its own: all_reduce_start must fall back to the base class's
/// synchronous default.
class Doubling final : public Communicator {
 public:
  Doubling() : Communicator("tp[pp0,dp0]", {}) {}
  int rank() const override { return 0; }
  int size() const override { return 2; }
  int reduces = 0;

 private:
  void do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp) override {
    ++reduces;
    REQUIRE(type == CommDType::F32);
    float* f = static_cast<float*>(buf);
    for (std::int64_t i = 0; i < count; ++i) f[i] *= 2;
  }
  void do_all_gather(const void*, void*, std::int64_t, CommDType) override {}
  void do_reduce_scatter(const void*, void*, std::int64_t, CommDType, ReduceOp) override {}
  void do_broadcast(void*, std::int64_t, CommDType, int) override {}
  void do_send(const void*, std::int64_t, CommDType, int, Tag) override {}
  void do_recv(void*, std::int64_t, CommDType, int, Tag) override {}
  void do_send_recv(const void*, std::int64_t, int, Tag, void*, std::int64_t, int, Tag, CommDType) override {}
  void do_barrier() override {}
  std::unique_ptr<Communicator> do_split(int, int, const std::string&) override { return nullptr; }
};

}  // namespace

TEST_CASE("CommRequest: wait completes once; the destructor and move-assignment wait for what is pending") {
  int a = 0, b = 0;
  {
    CommRequest r(std::make_unique<CountingState>(&a));
    CHECK(r.pending());
    r.wait();
    CHECK_FALSE(r.pending());
    CHECK(a == 1);
    r.wait();  // a second wait does nothing
  }
  CHECK(a == 1);  // nor does the destructor after a wait
  { CommRequest r(std::make_unique<CountingState>(&a)); }
  CHECK(a == 2);  // never waited: the destructor did
  {
    CommRequest r(std::make_unique<CountingState>(&a));
    CommRequest moved(std::move(r));
    CHECK(moved.pending());
    r = CommRequest(std::make_unique<CountingState>(&b));  // r was moved from: nothing to wait for
    CHECK(a == 2);
    moved = std::move(r);  // waits for the one `moved` held, then takes r's
    CHECK(a == 3);
    CHECK(b == 0);
    CHECK(moved.pending());
  }
  CHECK(b == 1);
  CHECK_FALSE(CommRequest().pending());
}

TEST_CASE("all_reduce_start on one rank: done at once, counted exactly as all_reduce") {
  LocalCommunicator blocking("tp[pp0,dp0]"), started("tp[pp0,dp0]");
  std::vector<double> d = {1.5, -2.0, 3.25}, e = d;
  blocking.all_reduce(std::span<double>(d), ReduceOp::Sum);
  CommRequest r = started.all_reduce_start(e.data(), 3, CommDType::F64, ReduceOp::Sum);
  CHECK_FALSE(r.pending());
  r.wait();
  CHECK(e == d);
  Tensor t = Tensor::zeros({2, 3}, DType::F32, "t");
  blocking.all_reduce(t, ReduceOp::Max);
  started.all_reduce_start(t, ReduceOp::Max).wait();
  blocking.all_reduce(t.raw(), 0, CommDType::F32, ReduceOp::Sum);  // empty: still a call
  CHECK_FALSE(started.all_reduce_start(t.raw(), 0, CommDType::F32, ReduceOp::Sum).pending());
  CHECK(started.stats()[Collective::AllReduce].calls == blocking.stats()[Collective::AllReduce].calls);
  CHECK(started.stats()[Collective::AllReduce].bytes == blocking.stats()[Collective::AllReduce].bytes);
  CHECK(started.stats()[Collective::AllReduce].bytes == 3 * 8 + 6 * 4);
  CHECK(started.seq() == blocking.seq());
  float x = 0;
  CHECK_THROWS_WITH_AS((void)started.all_reduce_start(&x, -1, CommDType::F32, ReduceOp::Sum),
                       doctest::Contains("all_reduce on group tp[pp0,dp0]: element count -1 is negative"), CommError);
  Tensor strided = Tensor::zeros({4, 4}, DType::F32, "strided").narrow(1, 0, 2);
  CHECK_THROWS_WITH_AS((void)started.all_reduce_start(strided, ReduceOp::Sum),
                       doctest::Contains("all_reduce_start on group tp[pp0,dp0]: tensor 'strided'"), ShapeError);
}

TEST_CASE("all_reduce_start falls back to the blocking all-reduce where an implementation has no own") {
  Doubling c;
  std::vector<float> v = {1, 2, 3};
  CommRequest r = c.all_reduce_start(v.data(), 3, CommDType::F32, ReduceOp::Sum);
  CHECK(c.reduces == 1);  // done in the start
  CHECK_FALSE(r.pending());
  CHECK(v == std::vector<float>{2, 4, 6});
  CHECK(c.stats()[Collective::AllReduce].bytes == 12);
  (void)c.all_reduce_start(v.data(), 0, CommDType::F32, ReduceOp::Sum);
  CHECK(c.reduces == 1);  // nothing to move: the implementation is not called (as for all_reduce)
  CHECK(c.stats()[Collective::AllReduce].calls == 2);
}

TEST_CASE("ADAPT_COMM_TIMEOUT_S sets the collectives' timeout; a bad value names the variable") {
  ::unsetenv("ADAPT_COMM_TIMEOUT_S");
  CHECK(comm_options_from_env().timeout_s == CommOptions{}.timeout_s);
  ::setenv("ADAPT_COMM_TIMEOUT_S", "1800", 1);
  CHECK(comm_options_from_env().timeout_s == 1800.0);
  for (const char* bad : {"0", "-5", "ten", "10s"}) {
    CAPTURE(bad);
    ::setenv("ADAPT_COMM_TIMEOUT_S", bad, 1);
    CHECK_THROWS_WITH_AS(comm_options_from_env(), doctest::Contains("ADAPT_COMM_TIMEOUT_S"), ConfigError);
  }
  ::unsetenv("ADAPT_COMM_TIMEOUT_S");
}
