#include "comm/process_grid.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"

namespace adapt::comm {

std::string grid_axis_name(GridAxis axis) {
  switch (axis) {
    case GridAxis::Tp: return "tp";
    case GridAxis::Pp: return "pp";
    case GridAxis::Dp: return "dp";
  }
  return "?";
}

ProcessGrid::ProcessGrid(int tp_size, int pp_size, int dp_size)
    : tp_size_(tp_size), pp_size_(pp_size), dp_size_(dp_size) {
  ADAPT_REQUIRE(tp_size >= 1 && pp_size >= 1 && dp_size >= 1, ConfigError,
                "parallel layout tp = {}, pp = {}, dp = {}: every size must be at least 1", tp_size, pp_size, dp_size);
}

std::vector<int> ProcessGrid::valid_tp_sizes(int world_size, const GridModelLimits& limits) {
  std::vector<int> out;
  for (int tp = 1; tp <= world_size; ++tp) {
    if (world_size % tp == 0 && limits.n_heads % tp == 0 && limits.n_kv_heads % tp == 0) out.push_back(tp);
  }
  return out;
}

std::vector<int> ProcessGrid::valid_pp_sizes(int world_size, int tp_size, const GridModelLimits& limits) {
  std::vector<int> out;
  if (tp_size < 1 || world_size % tp_size != 0) return out;
  const int rest = world_size / tp_size;
  for (int pp = 1; pp <= rest; ++pp) {
    if (rest % pp == 0 && pp <= limits.n_layers) out.push_back(pp);
  }
  return out;
}

namespace {

// "tp×pp = 1×1, 1×2, 2×1 (dp = world / (tp·pp))" for every layout that works.
std::string layouts_that_work(int world_size, const GridModelLimits& limits) {
  std::vector<std::string> pairs;
  for (int tp : ProcessGrid::valid_tp_sizes(world_size, limits)) {
    for (int pp : ProcessGrid::valid_pp_sizes(world_size, tp, limits)) pairs.push_back(fmt::format("{}×{}", tp, pp));
  }
  return fmt::format(
      "layouts that work for world size {} (num_attention_heads = {}, num_key_value_heads = {}, "
      "num_hidden_layers = {}): tp×pp = {} (dp = world / (tp·pp))",
      world_size, limits.n_heads, limits.n_kv_heads, limits.n_layers, fmt::join(pairs, ", "));
}

}  // namespace

ProcessGrid ProcessGrid::make(int world_size, int tp_size, int pp_size, const GridModelLimits& limits) {
  ADAPT_REQUIRE(world_size >= 1, ConfigError, "world size {} must be at least 1", world_size);
  ADAPT_REQUIRE(limits.n_heads >= 1 && limits.n_kv_heads >= 1 && limits.n_layers >= 1, ConfigError,
                "model limits H = {}, Hkv = {}, L = {} must be at least 1", limits.n_heads, limits.n_kv_heads,
                limits.n_layers);
  const std::vector<int> tps = valid_tp_sizes(world_size, limits);
  if (tp_size < 1 || world_size % tp_size != 0 || limits.n_heads % tp_size != 0 || limits.n_kv_heads % tp_size != 0) {
    std::vector<std::string> why;
    if (tp_size < 1) why.push_back("is below 1");
    if (tp_size >= 1 && world_size % tp_size != 0)
      why.push_back(fmt::format("does not divide the world size {}", world_size));
    if (tp_size >= 1 && limits.n_heads % tp_size != 0)
      why.push_back(fmt::format("does not divide num_attention_heads = {}", limits.n_heads));
    if (tp_size >= 1 && limits.n_kv_heads % tp_size != 0)
      why.push_back(fmt::format("does not divide num_key_value_heads = {}", limits.n_kv_heads));
    ADAPT_THROW(ConfigError, "parallel.tp = {} {}. Choose tp in {{{}}}; {}", tp_size, fmt::join(why, " and "),
                fmt::join(tps, ", "), layouts_that_work(world_size, limits));
  }
  const int rest = world_size / tp_size;
  if (pp_size < 1 || rest % pp_size != 0 || pp_size > limits.n_layers) {
    std::vector<std::string> why;
    if (pp_size < 1) why.push_back("is below 1");
    if (pp_size >= 1 && rest % pp_size != 0)
      why.push_back(fmt::format("does not divide world size / tp = {} / {} = {}", world_size, tp_size, rest));
    if (pp_size > limits.n_layers) why.push_back(fmt::format("exceeds num_hidden_layers = {}", limits.n_layers));
    ADAPT_THROW(ConfigError, "parallel.pp = {} {}. With tp = {} choose pp in {{{}}}; {}", pp_size,
                fmt::join(why, " and "), tp_size, fmt::join(valid_pp_sizes(world_size, tp_size, limits), ", "),
                layouts_that_work(world_size, limits));
  }
  return ProcessGrid(tp_size, pp_size, rest / pp_size);
}

int ProcessGrid::size(GridAxis axis) const {
  switch (axis) {
    case GridAxis::Tp: return tp_size_;
    case GridAxis::Pp: return pp_size_;
    case GridAxis::Dp: return dp_size_;
  }
  return 0;
}

GridCoord ProcessGrid::coord(int world_rank) const {
  ADAPT_CHECK(world_rank >= 0 && world_rank < world_size(), "rank {} is outside the grid {}", world_rank, str());
  return {
      .tp = world_rank % tp_size_, .pp = (world_rank / tp_size_) % pp_size_, .dp = world_rank / (tp_size_ * pp_size_)};
}

int ProcessGrid::rank_of(const GridCoord& c) const {
  ADAPT_CHECK(c.tp >= 0 && c.tp < tp_size_ && c.pp >= 0 && c.pp < pp_size_ && c.dp >= 0 && c.dp < dp_size_,
              "coordinate (tp {}, pp {}, dp {}) is outside the grid {}", c.tp, c.pp, c.dp, str());
  return (c.dp * pp_size_ + c.pp) * tp_size_ + c.tp;
}

int ProcessGrid::rank_in(GridAxis axis, int world_rank) const {
  const GridCoord c = coord(world_rank);
  switch (axis) {
    case GridAxis::Tp: return c.tp;
    case GridAxis::Pp: return c.pp;
    case GridAxis::Dp: return c.dp;
  }
  return 0;
}

std::vector<int> ProcessGrid::group_members(GridAxis axis, int world_rank) const {
  const GridCoord c = coord(world_rank);
  std::vector<int> out;
  for (int i = 0; i < size(axis); ++i) {
    GridCoord m = c;
    if (axis == GridAxis::Tp) m.tp = i;
    if (axis == GridAxis::Pp) m.pp = i;
    if (axis == GridAxis::Dp) m.dp = i;
    out.push_back(rank_of(m));
  }
  return out;
}

int ProcessGrid::group_index(GridAxis axis, int world_rank) const {
  const GridCoord c = coord(world_rank);
  switch (axis) {
    case GridAxis::Tp: return c.dp * pp_size_ + c.pp;
    case GridAxis::Pp: return c.dp * tp_size_ + c.tp;
    case GridAxis::Dp: return c.pp * tp_size_ + c.tp;
  }
  return 0;
}

std::string ProcessGrid::group_name(GridAxis axis, int world_rank) const {
  const GridCoord c = coord(world_rank);
  switch (axis) {
    case GridAxis::Tp: return fmt::format("tp[pp{},dp{}]", c.pp, c.dp);
    case GridAxis::Pp: return fmt::format("pp[tp{},dp{}]", c.tp, c.dp);
    case GridAxis::Dp: return fmt::format("dp[tp{},pp{}]", c.tp, c.pp);
  }
  return "?";
}

std::optional<int> ProcessGrid::prev_stage(int world_rank) const {
  GridCoord c = coord(world_rank);
  if (c.pp == 0) return std::nullopt;
  --c.pp;
  return rank_of(c);
}

std::optional<int> ProcessGrid::next_stage(int world_rank) const {
  GridCoord c = coord(world_rank);
  if (c.pp == pp_size_ - 1) return std::nullopt;
  ++c.pp;
  return rank_of(c);
}

std::string ProcessGrid::str() const { return fmt::format("tp{} × pp{} × dp{}", tp_size_, pp_size_, dp_size_); }

}  // namespace adapt::comm
