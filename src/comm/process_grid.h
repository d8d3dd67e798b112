// ProcessGrid: the rank layout of a job, world = tp × pp × dp with tp innermost (a tp group shares a
// node and its NVLink), then pp, then dp. Pure arithmetic on rank numbers, no MPI: every rank builds
// the same grid from the same (world, tp, pp) and derives its coordinates, its groups' members and
// its pipeline neighbours from it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace adapt::comm {

/// A rank's place in the grid.
struct GridCoord {
  int tp = 0;
  int pp = 0;
  int dp = 0;
  friend bool operator==(const GridCoord&, const GridCoord&) = default;
};

/// What the model requires of a layout: tp must divide the query and KV heads, pp may not exceed the
/// layers (stages hold contiguous, balanced layer ranges).
struct GridModelLimits {
  std::int64_t n_heads = 1;     // H
  std::int64_t n_kv_heads = 1;  // Hkv
  std::int64_t n_layers = 1;    // L
};

/// The groups of the grid. Group members are listed in the order of their rank inside the group.
enum class GridAxis { Tp, Pp, Dp };
std::string grid_axis_name(GridAxis axis);  // "tp", "pp", "dp"

/// world_rank = (dp_rank * pp_size + pp_rank) * tp_size + tp_rank.
class ProcessGrid {
 public:
  /// A grid of tp × pp × dp ranks; ConfigError if any size is below 1.
  ProcessGrid(int tp_size, int pp_size, int dp_size);

  /// The layout for `world_size` ranks with the requested tp and pp (dp = world / (tp·pp)), checked
  /// against the model: ConfigError when tp·pp does not divide the world, tp does not divide the
  /// heads or KV heads, or pp exceeds the layers. The message lists the tp and pp values that work.
  static ProcessGrid make(int world_size, int tp_size, int pp_size, const GridModelLimits& limits);

  /// The tp values that divide the heads, the KV heads and the world size (ascending).
  static std::vector<int> valid_tp_sizes(int world_size, const GridModelLimits& limits);
  /// The pp values, for a given tp, that divide world / tp and do not exceed the layers (ascending).
  static std::vector<int> valid_pp_sizes(int world_size, int tp_size, const GridModelLimits& limits);

  int world_size() const { return tp_size_ * pp_size_ * dp_size_; }
  int tp_size() const { return tp_size_; }
  int pp_size() const { return pp_size_; }
  int dp_size() const { return dp_size_; }
  int size(GridAxis axis) const;

  /// Coordinates of `world_rank` (InternalError when out of range).
  GridCoord coord(int world_rank) const;
  /// The world rank at `c` (InternalError when out of range).
  int rank_of(const GridCoord& c) const;
  /// `world_rank`'s rank inside its `axis` group (its tp, pp or dp coordinate).
  int rank_in(GridAxis axis, int world_rank) const;

  /// World ranks of the `axis` group that contains `world_rank`, ordered by rank in the group.
  std::vector<int> group_members(GridAxis axis, int world_rank) const;
  /// Index of that group among the groups of `axis` (0 .. world/size(axis) - 1): the colour used to
  /// split a world communicator. Ranks share a group exactly when they share this index.
  int group_index(GridAxis axis, int world_rank) const;
  /// A name for the group, e.g. "tp[pp1,dp0]", "pp[tp0,dp1]", "dp[tp1,pp0]" (used in error messages).
  std::string group_name(GridAxis axis, int world_rank) const;

  bool is_first_stage(int world_rank) const { return coord(world_rank).pp == 0; }
  bool is_last_stage(int world_rank) const { return coord(world_rank).pp == pp_size_ - 1; }
  /// World rank of the previous / next pipeline stage (same tp and dp), nullopt at the ends.
  std::optional<int> prev_stage(int world_rank) const;
  std::optional<int> next_stage(int world_rank) const;

  /// "tp2 × pp2 × dp1".
  std::string str() const;

 private:
  int tp_size_;
  int pp_size_;
  int dp_size_;
};

}  // namespace adapt::comm
