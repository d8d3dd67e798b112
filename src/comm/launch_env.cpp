#include "comm/launch_env.h"

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <string_view>

#include "core/error.h"
#include "core/strings.h"

namespace adapt::comm {

namespace {

using Getenv = std::function<const char*(const char*)>;

// The value of `name`, or nullopt when it is unset or empty.
std::optional<std::string_view> lookup(const Getenv& getenv, const char* name) {
  const char* v = getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string_view(v);
}

// A non-negative decimal integer that fits an int: digits only (no sign, no spaces), or nullopt.
std::optional<int> parse_count(std::string_view s) {
  const std::optional<std::int64_t> value = parse_int(s);
  if (!value || s.front() == '-' || *value > std::numeric_limits<int>::max()) return std::nullopt;
  return static_cast<int>(*value);
}

// A parsed variable and its name, for messages.
struct Named {
  int value;
  const char* name;
};

// The first of `names` that is set, parsed (ConfigError when it is not a non-negative integer), or
// nullopt when none is set.
std::optional<Named> read_count(const Getenv& getenv, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (const auto v = lookup(getenv, name)) {
      const auto n = parse_count(*v);
      ADAPT_REQUIRE(n.has_value(), ConfigError,
                    "launch environment: {} = \"{}\" is not a non-negative integer (the launcher sets it; "
                    "check the job script for an export that overwrites it)",
                    name, *v);
      return Named{*n, name};
    }
  }
  return std::nullopt;
}

// As read_count, but ConfigError when none is set (`who`: the launcher that always sets them).
Named require_count(const Getenv& getenv, std::initializer_list<const char*> names, std::string_view who) {
  if (auto n = read_count(getenv, names)) return *n;
  std::string list;
  for (const char* name : names) list += (list.empty() ? "" : " or ") + std::string(name);
  ADAPT_THROW(ConfigError, "launch environment: {} is not set, although {} always sets it", list, who);
}

void require_size(const Named& size) {
  ADAPT_REQUIRE(size.value >= 1, ConfigError, "launch environment: {} = {} must be at least 1", size.name, size.value);
}

void require_below(const Named& index, const Named& size) {
  ADAPT_REQUIRE(index.value < size.value, ConfigError, "launch environment: {} = {} must be below {} = {}", index.name,
                index.value, size.name, size.value);
}

// Slurm's compressed tasks-per-node list ("4(x2),3": 4 tasks on each of the first two nodes, 3 on the
// third). Returns the entry of node `node_index`; checks that the list covers `node_count` nodes and
// `world_size` tasks.
int tasks_on_node(std::string_view list, const char* name, const Named& node_index, const Named& node_count,
                  const Named& world_size) {
  const auto malformed = [&] {
    return ConfigError(fmt::format("launch environment: {} = \"{}\" is not a list of task counts per node "
                                   "like \"4(x2),3\"",
                                   name, list),
                       ADAPT_HERE);
  };
  std::int64_t nodes = 0;
  std::int64_t tasks = 0;
  std::optional<int> here;
  std::string_view rest = list;
  while (true) {
    const std::size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    int repeat = 1;
    if (const std::size_t paren = item.find('('); paren != std::string_view::npos) {
      std::string_view times = item.substr(paren);
      if (times.size() < 4 || times.substr(0, 2) != "(x" || times.back() != ')') throw malformed();
      const auto r = parse_count(times.substr(2, times.size() - 3));
      if (!r || *r < 1) throw malformed();
      repeat = *r;
      item = item.substr(0, paren);
    }
    const auto count = parse_count(item);
    if (!count) throw malformed();
    if (!here && node_index.value < nodes + repeat) here = *count;
    nodes += repeat;
    tasks += static_cast<std::int64_t>(*count) * repeat;
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  ADAPT_REQUIRE(nodes == node_count.value && tasks == world_size.value, ConfigError,
                "launch environment: {} = \"{}\" lists {} tasks on {} nodes, but {} = {} and {} = {}", name, list,
                tasks, nodes, world_size.name, world_size.value, node_count.name, node_count.value);
  ADAPT_CHECK(here.has_value(), "node {} not in \"{}\"", node_index.value, list);
  return *here;
}

LaunchEnv from_open_mpi(const Getenv& getenv) {
  constexpr std::string_view who = "Open MPI's mpirun";
  const Named rank = require_count(getenv, {"OMPI_COMM_WORLD_RANK"}, who);
  const Named size = require_count(getenv, {"OMPI_COMM_WORLD_SIZE"}, who);
  const Named local_rank = require_count(getenv, {"OMPI_COMM_WORLD_LOCAL_RANK"}, who);
  const Named local_size = require_count(getenv, {"OMPI_COMM_WORLD_LOCAL_SIZE"}, who);
  require_size(size);
  require_size(local_size);
  require_below(rank, size);
  require_below(local_rank, local_size);
  ADAPT_REQUIRE(local_size.value <= size.value, ConfigError, "launch environment: {} = {} exceeds {} = {}",
                local_size.name, local_size.value, size.name, size.value);
  LaunchEnv env;
  env.source = LaunchSource::OpenMpi;
  env.world_rank = rank.value;
  env.world_size = size.value;
  env.local_rank = local_rank.value;
  env.local_size = local_size.value;
  // All ranks on this node: a single node. Otherwise Open MPI exports no node number.
  const bool one_node = local_size.value == size.value;
  env.node_index = one_node ? std::optional<int>(0) : std::nullopt;
  env.node_count = one_node ? std::optional<int>(1) : std::nullopt;
  return env;
}

LaunchEnv from_slurm_step(const Getenv& getenv) {
  constexpr std::string_view who = "srun";
  // Inside a step SLURM_NTASKS, SLURM_NNODES and SLURM_TASKS_PER_NODE describe the step too, but the
  // SLURM_STEP_* names say so explicitly. SLURM_NTASKS_PER_NODE is not used: it keeps the job's value
  // in a step of fewer tasks (srun -n 3 in a job of 3 tasks per node gives "2,1").
  const Named rank = require_count(getenv, {"SLURM_PROCID"}, who);
  const Named size = require_count(getenv, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"}, who);
  const Named local_rank = require_count(getenv, {"SLURM_LOCALID"}, who);
  const Named node = require_count(getenv, {"SLURM_NODEID"}, who);
  const Named nodes = require_count(getenv, {"SLURM_STEP_NUM_NODES", "SLURM_NNODES"}, who);
  require_size(size);
  require_size(nodes);
  require_below(rank, size);
  require_below(node, nodes);
  const char* list_name = "SLURM_STEP_TASKS_PER_NODE";
  auto list = lookup(getenv, list_name);
  if (!list) {
    list_name = "SLURM_TASKS_PER_NODE";
    list = lookup(getenv, list_name);
  }
  ADAPT_REQUIRE(list.has_value(), ConfigError,
                "launch environment: SLURM_STEP_TASKS_PER_NODE or SLURM_TASKS_PER_NODE is not set, although {} "
                "always sets it",
                who);
  const int local_size = tasks_on_node(*list, list_name, node, nodes, size);
  ADAPT_REQUIRE(local_rank.value < local_size, ConfigError,
                "launch environment: {} = {} must be below the {} tasks of node {} ({} = \"{}\")", local_rank.name,
                local_rank.value, local_size, node.value, list_name, *list);
  LaunchEnv env;
  env.source = LaunchSource::Slurm;
  env.world_rank = rank.value;
  env.world_size = size.value;
  env.local_rank = local_rank.value;
  env.local_size = local_size;
  env.node_index = node.value;
  env.node_count = nodes.value;
  return env;
}

std::string node_text(const LaunchEnv& env) {
  if (!env.node_index) return "node ?";
  if (!env.node_count) return fmt::format("node {}", *env.node_index);
  return fmt::format("node {} of {}", *env.node_index, *env.node_count);
}

}  // namespace

std::string launch_source_name(LaunchSource source) {
  switch (source) {
    case LaunchSource::None: return "no launcher";
    case LaunchSource::OpenMpi: return "Open MPI";
    case LaunchSource::Slurm: return "srun step";
  }
  return "?";
}

std::string describe(const LaunchEnv& env) {
  return fmt::format("rank {} of {}, local rank {} of {} on {} ({})", env.world_rank, env.world_size, env.local_rank,
                     env.local_size, node_text(env), launch_source_name(env.source));
}

LaunchEnv launch_env_from(const std::function<const char*(const char*)>& getenv) {
  if (lookup(getenv, "OMPI_COMM_WORLD_RANK") || lookup(getenv, "OMPI_COMM_WORLD_SIZE")) return from_open_mpi(getenv);
  if (lookup(getenv, "SLURM_STEP_ID")) return from_slurm_step(getenv);
  return LaunchEnv{};
}

LaunchEnv launch_env_from_process() {
  return launch_env_from([](const char* name) -> const char* { return std::getenv(name); });
}

int device_for_rank(const LaunchEnv& env, int visible_devices) {
  ADAPT_REQUIRE(visible_devices >= 1, UnsupportedError,
                "no CUDA device is visible to {}; ask Slurm for GPUs (sbatch --gpus-per-node=N or "
                "--gpus-per-task=1) or run on the CPU backend",
                describe(env));
  if (visible_devices == 1) return 0;
  ADAPT_REQUIRE(env.local_size <= visible_devices && env.local_rank < visible_devices, ConfigError,
                "{} runs {} ranks of this job but {} CUDA devices are visible to its local rank {} (world rank {}): "
                "every rank needs a GPU of its own. Give the node one GPU per task (sbatch --gpus-per-node={} with "
                "--ntasks-per-node={}, or --gpus-per-task=1), or start at most {} tasks per node "
                "(--ntasks-per-node={})",
                node_text(env), env.local_size, visible_devices, env.local_rank, env.world_rank, env.local_size,
                env.local_size, visible_devices, visible_devices);
  return env.local_rank;
}

void launch_env_check_mpi(const LaunchEnv& env, int mpi_rank, int mpi_size) {
  ADAPT_CHECK(mpi_size >= 1 && mpi_rank >= 0 && mpi_rank < mpi_size, "MPI rank {} of {}", mpi_rank, mpi_size);
  ADAPT_REQUIRE(!(env.world_size > 1 && mpi_size == 1), ConfigError,
                "the launcher ({}) started {} tasks, but MPI sees a world of 1 in each: the tasks were started as "
                "{} separate MPI jobs (task {} here). Launch with `srun --mpi=pmix` (or set MpiDefault=pmix in "
                "slurm.conf) or with mpirun; `srun --mpi=list` shows the plugins this Slurm has",
                launch_source_name(env.source), env.world_size, env.world_size, env.world_rank);
  if (env.source == LaunchSource::None) {
    ADAPT_REQUIRE(mpi_size == 1, ConfigError,
                  "MPI reports rank {} of {}, but no launcher variables were found (OMPI_COMM_WORLD_* from Open "
                  "MPI's mpirun, or SLURM_* inside an srun step), so the rank's place on its node and its GPU "
                  "are unknown; launch with Open MPI's mpirun or with `srun --mpi=pmix`",
                  mpi_rank, mpi_size);
    return;
  }
  ADAPT_REQUIRE(mpi_rank == env.world_rank && mpi_size == env.world_size, ConfigError,
                "MPI reports rank {} of {}, but the launcher's variables say rank {} of {} ({}); the launch "
                "environment does not belong to this MPI job (variables exported by hand or inherited from an "
                "outer launcher?)",
                mpi_rank, mpi_size, env.world_rank, env.world_size, launch_source_name(env.source));
}

}  // namespace adapt::comm
