#include "core/log.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace adapt::log {
namespace {

int env_int(const char* const* names, int fallback) {
  for (const char* const* n = names; *n; ++n) {
    if (const char* v = std::getenv(*n); v && *v) return std::atoi(v);
  }
  return fallback;
}

// Until an application calls set_rank() after MPI_Init. SLURM_* describe this process only inside an
// srun step (SLURM_STEP_ID set): a batch script running the binary directly is one process.
const bool kInSrunStep = std::getenv("SLURM_STEP_ID") != nullptr;
const char* const kRankVars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                 kInSrunStep ? "SLURM_PROCID" : nullptr, nullptr};
const char* const kSizeVars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", kInSrunStep ? "SLURM_STEP_NUM_TASKS" : nullptr,
                                 nullptr};

// Process start (static initialisation), so elapsed times count from launch, not from the first line.
const std::chrono::steady_clock::time_point kProcessStart = std::chrono::steady_clock::now();

struct State {
  int rank = env_int(kRankVars, 0);
  int size = env_int(kSizeVars, 1);
  std::string grid_tag;
  Level level = Level::Info;
  std::chrono::steady_clock::time_point start = kProcessStart;
  std::mutex mutex;
};

State& state() {
  static State s;
  return s;
}

}  // namespace

int world_rank() { return state().rank; }
int world_size() { return state().size; }
void set_rank(int world_rank, int world_size) {
  state().rank = world_rank;
  state().size = world_size;
}
void set_grid_tag(std::string_view tag) { state().grid_tag = std::string(tag); }
void set_level(Level level) { state().level = level; }
Level level() { return state().level; }

void write(Level lvl, bool all_ranks, std::string_view message) {
  State& s = state();
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.start).count();
  const char* tag = lvl == Level::Warn ? "warning: " : lvl == Level::Error ? "error: " : "";
  std::string prefix;
  if (s.size > 1 && (all_ranks || lvl >= Level::Warn)) {
    prefix = s.grid_tag.empty() ? fmt::format("[r{}/{}] ", s.rank, s.size)
                                : fmt::format("[r{}/{} {}] ", s.rank, s.size, s.grid_tag);
  }
  std::string line = fmt::format("[{:8.3f}] {}{}{}\n", t, prefix, tag, message);
  std::lock_guard<std::mutex> lock(s.mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace adapt::log
