// Rank-aware logging on stderr with fmt: one line per event, with elapsed time and, on multi-rank
// runs, a [r<rank>/<size>] tag. info0 prints on world rank 0 only (llm.c's printf0); info_all,
// warn and error print on every rank.
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace adapt::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };

/// Rank and size as seen by the launcher (SLURM_PROCID / OMPI_COMM_WORLD_RANK / PMI_RANK), until
/// set_rank() is called with the values from MPI.
int world_rank();
int world_size();
void set_rank(int world_rank, int world_size);
/// Extra tag for multi-rank lines, e.g. "tp1 pp0 dp3" (set once the process grid is known).
void set_grid_tag(std::string_view tag);
void set_level(Level level);
Level level();

void write(Level level, bool all_ranks, std::string_view message);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Debug) write(Level::Debug, true, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info0(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Info && world_rank() == 0)
    write(Level::Info, false, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info_all(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Info) write(Level::Info, true, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Warn) write(Level::Warn, true, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::Error, true, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace adapt::log
