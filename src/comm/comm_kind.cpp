#include "comm/comm_kind.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <mpi.h>

#include "backend/backend.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/error.h"
#include "core/log.h"

namespace adapt::comm {

namespace {

// A GPU identity on the wire: backend::cuda_device_uuid's 32 hex digits, zero-padded.
constexpr std::int64_t kIdBytes = 40;

}  // namespace

std::string_view comm_kind_name(CommKind kind) { return kind == CommKind::Nccl ? "nccl" : "mpi"; }

bool nccl_built() { return ADAPT_HAVE_NCCL != 0; }

CommKindChoice comm_kind_choose(std::span<const std::string> gpu_ids, bool with_nccl, std::string_view group) {
  const auto n = static_cast<int>(gpu_ids.size());
  if (n <= 1) return {CommKind::Mpi, fmt::format("group {} has {} rank(s): nothing moves between ranks", group, n)};
  for (int r = 0; r < n; ++r) {
    if (gpu_ids[static_cast<std::size_t>(r)].empty())
      return {CommKind::Mpi, fmt::format("rank {} of group {} computes on the CPU (host buffers: MPI)", r, group)};
  }
  for (int a = 0; a < n; ++a) {
    for (int b = a + 1; b < n; ++b) {
      if (gpu_ids[static_cast<std::size_t>(a)] != gpu_ids[static_cast<std::size_t>(b)]) continue;
      return {CommKind::Mpi,
              fmt::format("ranks {} and {} of group {} share GPU {}; NCCL refuses two ranks of one communicator on "
                          "one GPU, so MPI stages the device buffers through host memory (slow; give every rank its "
                          "own GPU for speed)",
                          a, b, group, gpu_ids[static_cast<std::size_t>(a)])};
    }
  }
  if (!with_nccl) {
    return {CommKind::Mpi,
            fmt::format("every rank of group {} has its own GPU, but this binary was built without NCCL (nccl.h or "
                        "libnccl not found at configure time), so MPI stages the device buffers through host memory; "
                        "install NCCL and reconfigure for speed",
                        group)};
  }
  return {CommKind::Nccl, fmt::format("every rank of group {} has its own GPU", group)};
}

namespace {

/// Every rank's GPU identity over `group` ("" for a rank on the CPU).
std::vector<std::string> gather_gpu_ids(Communicator& group, int cuda_device) {
  std::array<char, kIdBytes> mine{};
  if (cuda_device >= 0) {
    const std::string id = backend::cuda_device_uuid(cuda_device);
    ADAPT_CHECK(static_cast<std::int64_t>(id.size()) < kIdBytes, "GPU identity '{}' is longer than {} bytes", id,
                kIdBytes - 1);
    std::memcpy(mine.data(), id.data(), id.size());
  }
  std::vector<char> all(static_cast<std::size_t>(kIdBytes * group.size()));
  group.all_gather(mine.data(), all.data(), kIdBytes, CommDType::U8);
  std::vector<std::string> ids;
  for (int r = 0; r < group.size(); ++r) ids.emplace_back(all.data() + static_cast<std::size_t>(r * kIdBytes));
  return ids;
}

}  // namespace

CommKindChoice comm_kind_for_group(Communicator& group, int cuda_device) {
  return comm_kind_choose(gather_gpu_ids(group, cuda_device), nccl_built(), group.name());
}

std::string shared_gpus_describe(std::span<const std::string> gpu_ids) {
  std::vector<std::string> parts;
  std::vector<bool> seen(gpu_ids.size(), false);
  for (std::size_t a = 0; a < gpu_ids.size(); ++a) {
    if (seen[a] || gpu_ids[a].empty()) continue;
    std::vector<std::size_t> same{a};
    for (std::size_t b = a + 1; b < gpu_ids.size(); ++b) {
      if (gpu_ids[b] != gpu_ids[a]) continue;
      same.push_back(b);
      seen[b] = true;
    }
    if (same.size() < 2) continue;
    std::string ranks;
    for (std::size_t i = 0; i < same.size(); ++i)
      ranks += fmt::format("{}{}", i == 0 ? "" : i + 1 == same.size() ? " and " : ", ", same[i]);
    parts.push_back(fmt::format("ranks {} share GPU {}", ranks, gpu_ids[a]));
  }
  return fmt::format("{}", fmt::join(parts, "; "));
}

std::string shared_gpus_in_group(Communicator& group, int cuda_device) {
  return shared_gpus_describe(gather_gpu_ids(group, cuda_device));
}

GridComms device_grid_comms(GridComms& bootstrap, int cuda_device, const CommOptions& options,
                            std::array<CommKindChoice, 3>* kinds, const DeviceCommsOptions& which) {
  ADAPT_CHECK(bootstrap.tp && bootstrap.pp && bootstrap.dp, "device_grid_comms: a bootstrap group is missing");
  GridComms out;
  // The same order on every rank: an NCCL group's initialisation completes once all its members joined.
  for (const GridAxis axis : {GridAxis::Tp, GridAxis::Pp, GridAxis::Dp}) {
    std::unique_ptr<Communicator>& from = axis == GridAxis::Tp   ? bootstrap.tp
                                          : axis == GridAxis::Pp ? bootstrap.pp
                                                                 : bootstrap.dp;
    std::unique_ptr<Communicator>& to = axis == GridAxis::Tp ? out.tp : axis == GridAxis::Pp ? out.pp : out.dp;
    const bool device_buffers = axis == GridAxis::Tp ? which.tp : axis == GridAxis::Pp ? which.pp : which.dp;
    const CommKindChoice choice =
        device_buffers
            ? comm_kind_for_group(*from, cuda_device)
            : CommKindChoice{CommKind::Mpi,
                             fmt::format("group {} keeps its host communicator (host buffers)", from->name())};
    if (kinds) (*kinds)[static_cast<std::size_t>(axis)] = choice;
    if (choice.kind == CommKind::Nccl) {
#if ADAPT_HAVE_NCCL
      // The watchdog may end the job with MPI_Abort from its own thread, which MPI promises to work only
      // at MPI_THREAD_MULTIPLE: said once, at startup, rather than only when the job fails.
      static bool level_said = false;
      int mpi_up = 0;
      MPI_Initialized(&mpi_up);
      if (!level_said && mpi_up && mpi_thread_level() < MPI_THREAD_MULTIPLE && log::world_rank() == 0) {
        level_said = true;
        log::warn(
            "this MPI provides less than MPI_THREAD_MULTIPLE: should an NCCL collective fail or hang, the "
            "job may not end by itself (cancel it then); an Open MPI built with thread support avoids this");
      }
      auto nccl = std::make_unique<NcclCommunicator>(*from, cuda_device, options);
      nccl->set_compute_stream(backend::cuda_compute_stream());
      // The host does not wait for each collective (the compute stream does): a wait would drain the
      // GPU's queue twice a layer, exposing every kernel launch behind it. ADAPT_NCCL_BLOCKING=1 makes
      // the host wait for each one, to find which collective fails or hangs.
      const char* blocking = std::getenv("ADAPT_NCCL_BLOCKING");
      nccl->set_async(!(blocking != nullptr && std::string_view(blocking) == "1"));
      // Pipeline neighbours connected now, on every pp rank at once: NCCL connects peers lazily and
      // expects both sides of a first exchange to be grouped alike, which a 1F1B stage's grouped send +
      // receive against its neighbour's lone receive is not.
      if (axis == GridAxis::Pp) nccl->connect_neighbours();
      to = std::move(nccl);
      continue;
#endif
    }
    to = std::move(from);
  }
  return out;
}

GridComms device_grid_comms_for_model(Communicator& world, const ProcessGrid& grid, int cuda_device,
                                      const CommOptions& options, bool dp) {
  GridComms bootstrap = grid_comms_split(world, grid);
  std::array<CommKindChoice, 3> kinds;
  GridComms out = device_grid_comms(bootstrap, cuda_device, options, &kinds, {.tp = true, .pp = true, .dp = dp});
  for (const GridAxis axis : {GridAxis::Tp, GridAxis::Pp, GridAxis::Dp}) {
    if (axis == GridAxis::Dp && !dp) continue;
    const CommKindChoice& k = kinds[static_cast<std::size_t>(axis)];
    log::info0("{} communicator on the GPUs: {} ({})", grid_axis_name(axis), comm_kind_name(k.kind), k.reason);
  }
  return out;
}

}  // namespace adapt::comm
