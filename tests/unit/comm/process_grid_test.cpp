// ProcessGrid for every rank of small grids, checked against the layout formula written out by hand
// (world_rank = (dp·pp + pp_rank)·tp + tp_rank) and against each other (groups partition the world).
#include "comm/process_grid.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "core/error.h"

using namespace adapt;
using namespace adapt::comm;

namespace {

void check_grid(int tp, int pp, int dp) {
  CAPTURE(tp);
  CAPTURE(pp);
  CAPTURE(dp);
  const ProcessGrid g(tp, pp, dp);
  REQUIRE(g.world_size() == tp * pp * dp);
  int r = 0;
  for (int d = 0; d < dp; ++d) {
    for (int p = 0; p < pp; ++p) {
      for (int t = 0; t < tp; ++t, ++r) {
        CAPTURE(r);
        const GridCoord c = g.coord(r);
        CHECK(c == GridCoord{.tp = t, .pp = p, .dp = d});
        CHECK(g.rank_of(c) == r);
        CHECK(g.rank_in(GridAxis::Tp, r) == t);
        CHECK(g.rank_in(GridAxis::Pp, r) == p);
        CHECK(g.rank_in(GridAxis::Dp, r) == d);

        std::vector<int> tp_members, pp_members, dp_members;
        for (int i = 0; i < tp; ++i) tp_members.push_back((d * pp + p) * tp + i);
        for (int i = 0; i < pp; ++i) pp_members.push_back((d * pp + i) * tp + t);
        for (int i = 0; i < dp; ++i) dp_members.push_back((i * pp + p) * tp + t);
        CHECK(g.group_members(GridAxis::Tp, r) == tp_members);
        CHECK(g.group_members(GridAxis::Pp, r) == pp_members);
        CHECK(g.group_members(GridAxis::Dp, r) == dp_members);

        CHECK(g.is_first_stage(r) == (p == 0));
        CHECK(g.is_last_stage(r) == (p == pp - 1));
        CHECK(g.prev_stage(r) == (p > 0 ? std::optional<int>((d * pp + p - 1) * tp + t) : std::nullopt));
        CHECK(g.next_stage(r) == (p < pp - 1 ? std::optional<int>((d * pp + p + 1) * tp + t) : std::nullopt));
      }
    }
  }
  // Every axis: group indices are in range, members share the index, and the groups partition the world.
  for (GridAxis axis : {GridAxis::Tp, GridAxis::Pp, GridAxis::Dp}) {
    CAPTURE(grid_axis_name(axis));
    const int n_groups = g.world_size() / g.size(axis);
    std::set<int> seen;
    std::set<std::string> names;
    for (int w = 0; w < g.world_size(); ++w) {
      const int idx = g.group_index(axis, w);
      CHECK(idx >= 0);
      CHECK(idx < n_groups);
      for (int m : g.group_members(axis, w)) {
        CHECK(g.group_index(axis, m) == idx);
        CHECK(g.group_name(axis, m) == g.group_name(axis, w));
      }
      const auto members = g.group_members(axis, w);
      CHECK(members[static_cast<std::size_t>(g.rank_in(axis, w))] == w);
      seen.insert(idx);
      names.insert(g.group_name(axis, w));
    }
    CHECK(static_cast<int>(seen.size()) == n_groups);
    CHECK(static_cast<int>(names.size()) == n_groups);
  }
}

}  // namespace

TEST_CASE("ProcessGrid maps ranks tp-innermost") {
  for (int tp : {1, 2, 3, 4}) {
    for (int pp : {1, 2, 3}) {
      for (int dp : {1, 2, 3}) check_grid(tp, pp, dp);
    }
  }
  const ProcessGrid g(2, 2, 2);
  CHECK(g.coord(5) == GridCoord{.tp = 1, .pp = 0, .dp = 1});
  CHECK(g.group_members(GridAxis::Dp, 5) == std::vector<int>{1, 5});
  CHECK(g.group_name(GridAxis::Tp, 5) == "tp[pp0,dp1]");
  CHECK(g.str() == "tp2 × pp2 × dp2");
  CHECK_THROWS_AS(g.coord(8), InternalError);
  CHECK_THROWS_AS(g.rank_of({.tp = 2, .pp = 0, .dp = 0}), InternalError);
  CHECK_THROWS_AS(ProcessGrid(0, 1, 1), ConfigError);
}

TEST_CASE("ProcessGrid::make derives dp and rejects layouts that do not fit, listing those that do") {
  const GridModelLimits llama8b{.n_heads = 32, .n_kv_heads = 8, .n_layers = 32};
  const ProcessGrid g = ProcessGrid::make(16, 4, 2, llama8b);
  CHECK(g.tp_size() == 4);
  CHECK(g.pp_size() == 2);
  CHECK(g.dp_size() == 2);

  CHECK(ProcessGrid::valid_tp_sizes(16, llama8b) == std::vector<int>{1, 2, 4, 8});
  CHECK(ProcessGrid::valid_tp_sizes(12, llama8b) == std::vector<int>{1, 2, 4});
  CHECK(ProcessGrid::valid_pp_sizes(12, 2, llama8b) == std::vector<int>{1, 2, 3, 6});
  CHECK(ProcessGrid::valid_pp_sizes(8, 1, {.n_heads = 4, .n_kv_heads = 2, .n_layers = 2}) == std::vector<int>{1, 2});

  // tp = 16 divides the world and the query heads but not the 8 KV heads.
  CHECK_THROWS_WITH_AS(
      ProcessGrid::make(16, 16, 1, llama8b),
      doctest::Contains("parallel.tp = 16 does not divide num_key_value_heads = 8. Choose tp in {1, 2, 4, 8}"),
      ConfigError);
  // tp = 3 divides the world 12 but neither head count.
  CHECK_THROWS_WITH_AS(ProcessGrid::make(12, 3, 1, llama8b),
                       doctest::Contains("does not divide num_attention_heads = 32 and does not divide "
                                         "num_key_value_heads = 8"),
                       ConfigError);
  // A world size that does not factor: 6 ranks with tp 4.
  CHECK_THROWS_WITH_AS(ProcessGrid::make(6, 4, 1, llama8b),
                       doctest::Contains("does not divide the world size 6. Choose tp in {1, 2}"), ConfigError);
  CHECK_THROWS_WITH_AS(ProcessGrid::make(6, 4, 1, llama8b), doctest::Contains("tp×pp = 1×1, 1×2, 1×3, 1×6, 2×1, 2×3"),
                       ConfigError);
  // pp that does not divide world / tp, and pp above the layers.
  CHECK_THROWS_WITH_AS(
      ProcessGrid::make(8, 2, 3, llama8b),
      doctest::Contains("parallel.pp = 3 does not divide world size / tp = 8 / 2 = 4. With tp = 2 choose "
                        "pp in {1, 2, 4}"),
      ConfigError);
  CHECK_THROWS_WITH_AS(ProcessGrid::make(4, 1, 4, {.n_heads = 4, .n_kv_heads = 2, .n_layers = 2}),
                       doctest::Contains("exceeds num_hidden_layers = 2"), ConfigError);
  CHECK_THROWS_AS(ProcessGrid::make(0, 1, 1, llama8b), ConfigError);
}
