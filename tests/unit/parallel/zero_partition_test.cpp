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

TEST_CASE("the ZeRO-1 layout by units: whole groups per unit, each unit split over dp on its own") {
  // Groups (decoder layers) of 100, 50, 300, 10, 10 and 5 elements, units of at least 120.
  const Zero1Layout z = zero1_layout({100, 50, 300, 10, 10, 5}, 120, 4, 16);
  REQUIRE(z.units.size() == 3);
  CHECK(z.dp_size == 4);
  const Zero1Unit& u0 = z.units[0];
  CHECK(u0.first_group == 0);
  CHECK(u0.n_groups == 2);
  CHECK(u0.elems == Range{0, 150});
  CHECK(u0.chunk == zero_shard_count(150, 4, 16));  // 48
  CHECK(u0.padded_begin == 0);
  CHECK(u0.shard_begin == 0);
  CHECK(u0.owned(0) == Range{0, 48});
  CHECK(u0.owned(3) == Range{144, 6});
  const Zero1Unit& u1 = z.units[1];
  CHECK(u1.elems == Range{150, 300});
  CHECK(u1.chunk == 80);
  CHECK(u1.padded_begin == 4 * 48);
  CHECK(u1.shard_begin == 48);
  CHECK(u1.owned(1) == Range{230, 80});
  CHECK(z.units[2].elems == Range{450, 25});
  CHECK(z.units[2].owned(2) == Range{475, 0});  // 16 per rank: ranks 2 and 3 own nothing of it
  CHECK(z.shard == 48 + 80 + 16);
  CHECK(z.padded == 4 * z.shard);
  // Every element is owned by exactly one rank, in flat order unit by unit.
  for (int dp = 1; dp <= 5; ++dp) {
    const Zero1Layout l = zero1_layout({7, 130, 1, 64, 64, 200}, 100, dp, 16);
    std::int64_t next = 0;
    for (const Zero1Unit& u : l.units)
      for (int r = 0; r < dp; ++r) {
        const Range o = u.owned(r);
        CHECK(o.begin == next);
        CHECK(o.count <= u.chunk);
        next = o.end();
      }
    CHECK(next == 7 + 130 + 1 + 64 + 64 + 200);
  }
  // One unit: the contiguous split of zero_shard.
  const Zero1Layout one = zero1_layout({1000}, kDpBucketElems, 4, 16);
  REQUIRE(one.units.size() == 1);
  CHECK(one.padded == zero_shard_count(1000, 4, 16) * 4);
  for (int r = 0; r < 4; ++r) CHECK(one.units[0].owned(r) == zero_shard(1000, 4, r, 16));
  CHECK(zero1_layout({}, 10, 2).units.empty());
}
