// Data-parallel reduction under mpiexec with the world as the dp group (2 and 4 ranks): bucketed
// averaging equals the mean computed locally from every rank's gradients; ZeRO-1's reduce-scatter,
// a per-shard update and the all-gather give every rank the same parameters as the unsharded update.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "comm/mpi_communicator.h"
#include "parallel/dp_reducer.h"

using namespace adapt;
using namespace adapt::parallel;

namespace {

// Rank r's gradient element i: multiples of 1/8, so sums and the 1/dp scale (dp = 2 or 4) are exact.
float grad(int r, std::int64_t i) { return static_cast<float>(((i * 13 + r * 7) % 29) - 14) / 8.0f; }

}  // namespace

TEST_CASE("bucketed gradient averaging equals the mean over the dp ranks") {
  auto dp = comm::MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = 64});
  const std::vector<std::int64_t> params = {300, 17, 1, 512, 40};
  std::int64_t n = 0;
  for (std::int64_t p : params) n += p;
  for (std::int64_t bucket : {1, 100, 1000, 100000}) {
    CAPTURE(bucket);
    std::vector<float> g(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) g[i] = grad(dp->rank(), i);
    const auto buckets = gradient_buckets(params, bucket);
    const std::int64_t calls_before = dp->stats()[comm::Collective::AllReduce].calls;
    dp_average_gradients(g, buckets, *dp);
    CHECK(dp->stats()[comm::Collective::AllReduce].calls - calls_before == static_cast<std::int64_t>(buckets.size()));
    std::int64_t bad = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      float mean = 0;
      for (int r = 0; r < dp->size(); ++r) mean += grad(r, i);
      bad += g[i] != mean / static_cast<float>(dp->size());
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("ZeRO-1: reduce-scatter, update the own shard, all-gather = the unsharded update") {
  auto dp = comm::MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = 50});
  const int size = dp->size(), me = dp->rank();
  const std::int64_t n = 1001, c = zero_shard_count(n, size);
  const auto padded = static_cast<std::size_t>(c * size);
  std::vector<float> params(padded, 0.f), grads(padded, 0.f);
  for (std::int64_t i = 0; i < n; ++i) {
    params[i] = static_cast<float>(i % 17) / 4.0f;
    grads[i] = grad(me, i);
  }
  // The update every rank would make alone: p -= 0.5 · mean gradient.
  std::vector<float> expected(params);
  for (std::int64_t i = 0; i < n; ++i) {
    float mean = 0;
    for (int r = 0; r < size; ++r) mean += grad(r, i);
    expected[i] -= 0.5f * (mean / static_cast<float>(size));
  }
  std::vector<float> shard(static_cast<std::size_t>(c));
  zero1_reduce_scatter_average(grads, shard, *dp);
  const Range mine = zero_shard(n, size, me);
  std::vector<float> updated(static_cast<std::size_t>(c), 0.f);
  for (std::int64_t i = 0; i < c; ++i) updated[i] = params[me * c + i] - 0.5f * shard[i];
  for (std::int64_t i = mine.count; i < c; ++i) CHECK(shard[i] == 0.0f);  // the padding stays zero
  zero1_all_gather(updated, params, *dp);
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < n; ++i) bad += params[i] != expected[i];
  CHECK(bad == 0);
  CHECK(dp->stats()[comm::Collective::ReduceScatter].bytes == c * size * 4);
}
