// The launch environment read from fake environments: the variables below are what Open MPI 4.1.4's
// mpirun and Slurm 22.05's srun and sbatch set (recorded on a two-node Slurm with 3 tasks per node and
// 2 GPUs per node), so each case is one rank's view of a real launch. Also the GPU choice and the
// comparison with MPI's rank and size, with their error messages.
#include "comm/launch_env.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "core/error.h"

using namespace adapt;
using namespace adapt::comm;

namespace {

using Vars = std::map<std::string, std::string>;

LaunchEnv read(const Vars& vars) {
  return launch_env_from([&vars](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

Vars merged(Vars a, const Vars& b) {
  for (const auto& [k, v] : b) a[k] = v;
  return a;
}

// What every process of a 2-node, 3-tasks-per-node job inherits from the batch script.
const Vars kBatch = {{"SLURM_JOB_NUM_NODES", "2"},   {"SLURM_NNODES", "2"},
                     {"SLURM_NODEID", "0"},          {"SLURM_LOCALID", "0"},
                     {"SLURM_PROCID", "0"},          {"SLURM_NTASKS", "6"},
                     {"SLURM_NTASKS_PER_NODE", "3"}, {"SLURM_TASKS_PER_NODE", "3(x2)"},
                     {"SLURM_GPUS_ON_NODE", "2"},    {"CUDA_VISIBLE_DEVICES", "0,1"}};

// Task `rank` of `srun --mpi=pmix` over the whole job (block distribution: ranks 0-2 on node 0).
Vars srun_task(int rank) {
  return merged(kBatch, {{"SLURM_STEP_ID", "0"},
                         {"SLURM_STEPID", "0"},
                         {"SLURM_PROCID", std::to_string(rank)},
                         {"SLURM_LOCALID", std::to_string(rank % 3)},
                         {"SLURM_NODEID", std::to_string(rank / 3)},
                         {"SLURM_STEP_NUM_TASKS", "6"},
                         {"SLURM_STEP_NUM_NODES", "2"},
                         {"SLURM_STEP_TASKS_PER_NODE", "3(x2)"},
                         {"SLURM_TASKS_PER_NODE", "3(x2)"},
                         {"PMIX_RANK", std::to_string(rank)}});
}

// Rank `rank` of `mpirun` (no -np) in the same job: 3 ranks per node. The ranks of the second node
// run under Open MPI's daemon, which was started by an srun step of one task per node, so they see
// that step's SLURM_* (SLURM_PROCID = 1, SLURM_STEP_NUM_TASKS = 2); those of the first node see the
// batch script's (SLURM_PROCID = 0).
Vars mpirun_rank(int rank) {
  Vars v = kBatch;
  if (rank >= 3) {
    v = merged(v, {{"SLURM_STEP_ID", "0"},
                   {"SLURM_PROCID", "1"},
                   {"SLURM_NODEID", "1"},
                   {"SLURM_LOCALID", "0"},
                   {"SLURM_NTASKS", "2"},
                   {"SLURM_STEP_NUM_TASKS", "2"},
                   {"SLURM_STEP_NUM_NODES", "2"},
                   {"SLURM_NTASKS_PER_NODE", "1"},
                   {"SLURM_STEP_TASKS_PER_NODE", "1(x2)"},
                   {"SLURM_TASKS_PER_NODE", "1(x2)"}});
  }
  return merged(v, {{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
                    {"OMPI_COMM_WORLD_SIZE", "6"},
                    {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(rank % 3)},
                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "3"},
                    {"OMPI_COMM_WORLD_NODE_RANK", std::to_string(rank % 3)},
                    {"PMIX_RANK", std::to_string(rank)}});
}

// Open MPI's mpiexec on one machine, no Slurm.
Vars mpiexec_rank(int rank, int size) {
  return {{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
          {"OMPI_COMM_WORLD_SIZE", std::to_string(size)},
          {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(rank)},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(size)},
          {"OMPI_COMM_WORLD_NODE_RANK", std::to_string(rank)}};
}

LaunchEnv env_of(LaunchSource source, int rank, int size, int local_rank, int local_size, std::optional<int> node,
                 std::optional<int> nodes) {
  LaunchEnv e;
  e.source = source;
  e.world_rank = rank;
  e.world_size = size;
  e.local_rank = local_rank;
  e.local_size = local_size;
  e.node_index = node;
  e.node_count = nodes;
  return e;
}

}  // namespace

TEST_CASE("no launcher: one process, rank 0 of 1 on node 0 of 1") {
  const LaunchEnv e = read({});
  CHECK(e == env_of(LaunchSource::None, 0, 1, 0, 1, 0, 1));
  CHECK(describe(e) == "rank 0 of 1, local rank 0 of 1 on node 0 of 1 (no launcher)");
  // Unrelated variables and empty launcher variables change nothing.
  CHECK(read({{"PATH", "/usr/bin"}, {"OMPI_COMM_WORLD_RANK", ""}, {"SLURM_STEP_ID", ""}}) == e);
}

TEST_CASE("a batch script running the binary directly is one process, whatever SLURM_NTASKS says") {
  const LaunchEnv e = read(kBatch);
  CHECK(e.source == LaunchSource::None);
  CHECK(e.world_rank == 0);
  CHECK(e.world_size == 1);
  CHECK(e.local_size == 1);
  // Malformed job-level variables are not read outside a step.
  CHECK(read(merged(kBatch, {{"SLURM_NTASKS", "six"}, {"SLURM_TASKS_PER_NODE", "3(x"}})).world_size == 1);
}

TEST_CASE("srun step: rank, local rank and node from SLURM_*, local size from the step's tasks per node") {
  for (int rank = 0; rank < 6; ++rank) {
    CAPTURE(rank);
    CHECK(read(srun_task(rank)) == env_of(LaunchSource::Slurm, rank, 6, rank % 3, 3, rank / 3, 2));
  }
  CHECK(describe(read(srun_task(4))) == "rank 4 of 6, local rank 1 of 3 on node 1 of 2 (srun step)");

  SUBCASE("a step of fewer tasks: SLURM_NTASKS_PER_NODE keeps the job's 3, the step has 2 and 1") {
    const Vars step = {{"SLURM_STEP_ID", "1"},         {"SLURM_STEP_NUM_TASKS", "3"},
                       {"SLURM_NTASKS", "3"},          {"SLURM_STEP_NUM_NODES", "2"},
                       {"SLURM_NNODES", "2"},          {"SLURM_STEP_TASKS_PER_NODE", "2,1"},
                       {"SLURM_TASKS_PER_NODE", "2,1"}};
    CHECK(read(merged(kBatch, merged(step, {{"SLURM_PROCID", "1"}, {"SLURM_LOCALID", "1"}, {"SLURM_NODEID", "0"}}))) ==
          env_of(LaunchSource::Slurm, 1, 3, 1, 2, 0, 2));
    CHECK(read(merged(kBatch, merged(step, {{"SLURM_PROCID", "2"}, {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "1"}}))) ==
          env_of(LaunchSource::Slurm, 2, 3, 0, 1, 1, 2));
  }
  SUBCASE("uneven nodes in a compressed list") {
    // 10 tasks: 4 on nodes 0 and 1, 1 on node 2, 1 on node 3.
    const Vars step = {{"SLURM_STEP_ID", "0"},
                       {"SLURM_PROCID", "8"},
                       {"SLURM_LOCALID", "0"},
                       {"SLURM_NODEID", "2"},
                       {"SLURM_STEP_NUM_TASKS", "10"},
                       {"SLURM_STEP_NUM_NODES", "4"},
                       {"SLURM_STEP_TASKS_PER_NODE", "4(x2),1(x2)"}};
    CHECK(read(step) == env_of(LaunchSource::Slurm, 8, 10, 0, 1, 2, 4));
    CHECK(read(merged(step, {{"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"}, {"SLURM_NODEID", "1"}})) ==
          env_of(LaunchSource::Slurm, 5, 10, 1, 4, 1, 4));
  }
  SUBCASE("without the SLURM_STEP_* names, SLURM_NTASKS, SLURM_NNODES and SLURM_TASKS_PER_NODE") {
    const Vars step = {
        {"SLURM_STEP_ID", "3"}, {"SLURM_PROCID", "3"}, {"SLURM_LOCALID", "1"},           {"SLURM_NODEID", "1"},
        {"SLURM_NTASKS", "4"},  {"SLURM_NNODES", "2"}, {"SLURM_TASKS_PER_NODE", "2(x2)"}};
    CHECK(read(step) == env_of(LaunchSource::Slurm, 3, 4, 1, 2, 1, 2));
  }
}

TEST_CASE("Open MPI: OMPI_COMM_WORLD_* win over the SLURM_* that mpirun's ranks inherit") {
  SUBCASE("mpiexec on one machine") {
    for (int rank = 0; rank < 4; ++rank) {
      CAPTURE(rank);
      CHECK(read(mpiexec_rank(rank, 4)) == env_of(LaunchSource::OpenMpi, rank, 4, rank, 4, 0, 1));
    }
  }
  SUBCASE("mpirun inside a one-node allocation: every rank sees SLURM_PROCID = 0") {
    const Vars batch = {{"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "0"},
                        {"SLURM_NTASKS", "4"}, {"SLURM_NNODES", "1"},  {"SLURM_TASKS_PER_NODE", "4"}};
    for (int rank = 0; rank < 4; ++rank) {
      CAPTURE(rank);
      const LaunchEnv e = read(merged(batch, mpiexec_rank(rank, 4)));
      CHECK(e == env_of(LaunchSource::OpenMpi, rank, 4, rank, 4, 0, 1));
    }
  }
  SUBCASE("mpirun on two nodes: the second node's ranks sit in the daemons' srun step") {
    for (int rank = 0; rank < 6; ++rank) {
      CAPTURE(rank);
      const LaunchEnv e = read(mpirun_rank(rank));
      // Rank, size and local rank are Open MPI's; the node number is unknown (not Slurm's step's).
      CHECK(e == env_of(LaunchSource::OpenMpi, rank, 6, rank % 3, 3, std::nullopt, std::nullopt));
    }
    CHECK(describe(read(mpirun_rank(4))) == "rank 4 of 6, local rank 1 of 3 on node ? (Open MPI)");
  }
}

TEST_CASE("malformed or missing launcher variables are errors naming the variable") {
  const auto rejects = [](const Vars& vars, const std::string& name) {
    CAPTURE(name);
    CHECK_THROWS_WITH_AS(read(vars), doctest::Contains(name.c_str()), ConfigError);
  };
  for (const char* bad : {"abc", "-1", "+1", "1.5", " 2", "2 ", "0x10", "2147483648", "99999999999999999999"}) {
    CAPTURE(bad);
    for (const char* name :
         {"SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NUM_NODES"}) {
      rejects(merged(srun_task(4), {{name, bad}}), name);
    }
    for (const char* name :
         {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"}) {
      rejects(merged(mpirun_rank(4), {{name, bad}}), name);
    }
  }
  // The message quotes the value.
  CHECK_THROWS_WITH_AS(read(merged(srun_task(1), {{"SLURM_PROCID", "one"}})),
                       doctest::Contains("SLURM_PROCID = \"one\" is not a non-negative integer"), ConfigError);

  SUBCASE("tasks per node") {
    for (const char* bad : {"3(x2", "3(2)", "(x2)", "3(x)", "3(x0)", "3,,3", "3,", ",3", "3(x2)x", "3 (x2)", "x"}) {
      CAPTURE(bad);
      rejects(merged(srun_task(4), {{"SLURM_STEP_TASKS_PER_NODE", bad}}), "SLURM_STEP_TASKS_PER_NODE");
    }
    // Lists that do not add up to the step's nodes or tasks.
    rejects(merged(srun_task(4), {{"SLURM_STEP_TASKS_PER_NODE", "3(x3)"}}), "SLURM_STEP_TASKS_PER_NODE");
    rejects(merged(srun_task(4), {{"SLURM_STEP_TASKS_PER_NODE", "3,2"}}), "SLURM_STEP_NUM_TASKS");
    rejects(merged(srun_task(4), {{"SLURM_STEP_TASKS_PER_NODE", "6"}}), "SLURM_STEP_NUM_NODES");
  }
  SUBCASE("values that contradict each other") {
    rejects(merged(srun_task(4), {{"SLURM_PROCID", "6"}}), "SLURM_PROCID = 6 must be below SLURM_STEP_NUM_TASKS = 6");
    rejects(merged(srun_task(4), {{"SLURM_NODEID", "2"}}), "SLURM_NODEID = 2 must be below SLURM_STEP_NUM_NODES = 2");
    rejects(merged(srun_task(4), {{"SLURM_LOCALID", "3"}}), "SLURM_LOCALID = 3 must be below the 3 tasks of node 1");
    rejects(merged(srun_task(4), {{"SLURM_STEP_NUM_TASKS", "0"}}), "SLURM_STEP_NUM_TASKS = 0 must be at least 1");
    rejects(merged(mpirun_rank(4), {{"OMPI_COMM_WORLD_RANK", "6"}}), "OMPI_COMM_WORLD_RANK = 6 must be below");
    rejects(merged(mpirun_rank(4), {{"OMPI_COMM_WORLD_LOCAL_RANK", "3"}}),
            "OMPI_COMM_WORLD_LOCAL_RANK = 3 must be below");
    rejects(merged(mpirun_rank(4), {{"OMPI_COMM_WORLD_SIZE", "0"}}), "OMPI_COMM_WORLD_SIZE = 0 must be at least 1");
    rejects(merged(mpiexec_rank(0, 2), {{"OMPI_COMM_WORLD_LOCAL_SIZE", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}}),
            "OMPI_COMM_WORLD_LOCAL_SIZE = 3 exceeds OMPI_COMM_WORLD_SIZE = 2");
  }
  SUBCASE("a variable the launcher always sets is missing") {
    Vars v = srun_task(4);
    v.erase("SLURM_LOCALID");
    rejects(v, "SLURM_LOCALID is not set");
    v = srun_task(4);
    v.erase("SLURM_STEP_TASKS_PER_NODE");
    v.erase("SLURM_TASKS_PER_NODE");
    rejects(v, "SLURM_STEP_TASKS_PER_NODE or SLURM_TASKS_PER_NODE is not set");
    v = srun_task(4);
    v.erase("SLURM_STEP_NUM_TASKS");
    v.erase("SLURM_NTASKS");
    rejects(v, "SLURM_STEP_NUM_TASKS or SLURM_NTASKS is not set");
    v = mpiexec_rank(1, 2);
    v["OMPI_COMM_WORLD_LOCAL_SIZE"] = "";  // empty counts as unset
    rejects(v, "OMPI_COMM_WORLD_LOCAL_SIZE is not set");
    v = mpiexec_rank(1, 2);
    v.erase("OMPI_COMM_WORLD_RANK");  // SIZE alone still means Open MPI
    rejects(v, "OMPI_COMM_WORLD_RANK is not set");
  }
  SUBCASE("exit code: usage") {
    try {
      read(merged(srun_task(0), {{"SLURM_PROCID", "x"}}));
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.exit_code() == ExitCode::Usage);
    }
  }
}

TEST_CASE("the GPU of a rank: its local rank, or device 0 when Slurm bound one GPU per task") {
  SUBCASE("every device visible: local rank") {
    for (int rank = 0; rank < 6; ++rank) {
      CAPTURE(rank);
      const LaunchEnv e = read(srun_task(rank));
      CHECK(device_for_rank(e, 3) == rank % 3);
      CHECK(device_for_rank(e, 8) == rank % 3);
    }
  }
  SUBCASE("one visible device (--gpus-per-task=1): device 0 for every local rank") {
    for (int rank = 0; rank < 6; ++rank) CHECK(device_for_rank(read(srun_task(rank)), 1) == 0);
  }
  SUBCASE("Open MPI ranks, node unknown") { CHECK(device_for_rank(read(mpirun_rank(5)), 4) == 2); }
  SUBCASE("more ranks on a node than visible devices: every rank of the node fails alike") {
    for (int local = 0; local < 3; ++local) {
      CAPTURE(local);
      const LaunchEnv e = read(srun_task(3 + local));
      CHECK_THROWS_AS(device_for_rank(e, 2), ConfigError);
      try {
        device_for_rank(e, 2);
      } catch (const Error& err) {
        const std::string m = err.what();
        CHECK(err.exit_code() == ExitCode::Usage);
        CHECK(m.find("node 1 of 2 runs 3 ranks") != std::string::npos);
        CHECK(m.find("2 CUDA devices are visible") != std::string::npos);
        CHECK(m.find("--gpus-per-node=3") != std::string::npos);
        CHECK(m.find("--ntasks-per-node=3") != std::string::npos);
        CHECK(m.find("--gpus-per-task=1") != std::string::npos);
        CHECK(m.find("at most 2 tasks per node") != std::string::npos);
      }
    }
    CHECK_THROWS_WITH_AS(device_for_rank(read(mpirun_rank(0)), 2), doctest::Contains("node ? runs 3 ranks"),
                         ConfigError);
  }
  SUBCASE("no visible device") {
    CHECK_THROWS_WITH_AS(device_for_rank(read(srun_task(2)), 0), doctest::Contains("no CUDA device is visible"),
                         UnsupportedError);
  }
}

TEST_CASE("MPI's rank and size must match the launcher's") {
  SUBCASE("agreeing views pass") {
    for (int rank = 0; rank < 6; ++rank) {
      CHECK_NOTHROW(launch_env_check_mpi(read(srun_task(rank)), rank, 6));
      CHECK_NOTHROW(launch_env_check_mpi(read(mpirun_rank(rank)), rank, 6));
    }
    CHECK_NOTHROW(launch_env_check_mpi(read({}), 0, 1));
    CHECK_NOTHROW(launch_env_check_mpi(read(kBatch), 0, 1));
  }
  SUBCASE("srun without PMIx: N singleton MPI jobs") {
    for (int rank = 0; rank < 6; ++rank) {
      CAPTURE(rank);
      const LaunchEnv e = read(srun_task(rank));
      CHECK_THROWS_AS(launch_env_check_mpi(e, 0, 1), ConfigError);
      try {
        launch_env_check_mpi(e, 0, 1);
      } catch (const Error& err) {
        const std::string m = err.what();
        CHECK(err.exit_code() == ExitCode::Usage);
        CHECK(m.find("started as 6 separate MPI jobs") != std::string::npos);
        CHECK(m.find("srun --mpi=pmix") != std::string::npos);
        CHECK(m.find("MpiDefault=pmix") != std::string::npos);
        CHECK(m.find("mpirun") != std::string::npos);
        CHECK(m.find("task " + std::to_string(rank) + " here") != std::string::npos);
      }
    }
  }
  SUBCASE("other disagreements name both views") {
    CHECK_THROWS_WITH_AS(launch_env_check_mpi(read(srun_task(2)), 1, 6),
                         doctest::Contains("MPI reports rank 1 of 6, but the launcher's variables say rank 2 of 6"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(launch_env_check_mpi(read(mpirun_rank(2)), 2, 12),
                         doctest::Contains("MPI reports rank 2 of 12, but the launcher's variables say rank 2 of 6"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(launch_env_check_mpi(read({}), 1, 4),
                         doctest::Contains("MPI reports rank 1 of 4, but no launcher variables were found"),
                         ConfigError);
  }
}

TEST_CASE("launch_env_from_process reads std::getenv") {
  // Whatever launched this test: the same result (or the same error) through both entry points.
  const auto from_getenv = [] {
    return launch_env_from([](const char* name) -> const char* { return std::getenv(name); });
  };
  try {
    const LaunchEnv mine = launch_env_from_process();
    CHECK(mine == from_getenv());
  } catch (const ConfigError&) {
    CHECK_THROWS_AS(from_getenv(), ConfigError);
  }
}
