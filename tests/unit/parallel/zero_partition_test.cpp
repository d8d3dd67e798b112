// ZeRO-1 shards and gradient buckets: they tile the flat vector, shards are equal (padded) for the
// reduce-scatter and aligned, buckets never split a parameter.
#include "parallel/zero_partition.h"

#include <doctest/doctest.h>

#include "core/error.h"

using namespace adapt;
using namespace adapt::parallel;

TEST_CASE("ZeRO-1 shards tile the parameters, aligned, equal in the padded vector") {
  CHECK(zero_shard_count(1000, 4, 16) == 256);
  CHECK(zero_shard(1000, 4, 0, 16) == Range{0, 256});
  CHECK(zero_shard(1000, 4, 3, 16) == Range{768, 232});
  CHECK(zero_shard(10, 4, 3, 16) == Range{10, 0});  // nothing left for the last ranks
  for (std::int64_t n : {0, 1, 15, 16, 17, 1000, 123457}) {
    for (int dp = 1; dp <= 8; ++dp) {
      CAPTURE(n);
      CAPTURE(dp);
      const std::int64_t c = zero_shard_count(n, dp, 16);
      CHECK(c % 16 == 0);
      CHECK(c * dp >= n);
      std::int64_t next = 0;
      for (int r = 0; r < dp; ++r) {
        const Range s = zero_shard(n, dp, r, 16);
        CHECK(s.begin == next);
        CHECK(s.count <= c);
        CHECK((s.count == 0 || s.begin % 16 == 0));
        next = s.end();
      }
      CHECK(next == n);
    }
  }
  CHECK_THROWS_AS(zero_shard(10, 2, 2), InternalError);
}

TEST_CASE("gradient buckets group whole parameters up to the bucket size") {
  const auto b = gradient_buckets({100, 50, 300, 10, 10, 5}, 120);
  REQUIRE(b.size() == 3);
  CHECK(b[0].first_param == 0);
  CHECK(b[0].n_params == 2);
  CHECK(b[0].elems == Range{0, 150});
  CHECK(b[1].first_param == 2);
  CHECK(b[1].elems == Range{150, 300});
  CHECK(b[2].n_params == 3);
  CHECK(b[2].elems == Range{450, 25});
  CHECK(gradient_buckets({}, 10).empty());
  CHECK_THROWS_AS(gradient_buckets({1}, 0), InternalError);
}
