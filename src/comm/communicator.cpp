#include "comm/communicator.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace adapt::comm {

std::size_t comm_dtype_size(CommDType t) {
  switch (t) {
    case CommDType::F32: return 4;
    case CommDType::F64: return 8;
    case CommDType::BF16: return 2;
    case CommDType::F16: return 2;
    case CommDType::I32: return 4;
    case CommDType::I64: return 8;
    case CommDType::U8: return 1;
  }
  return 0;
}

std::string_view comm_dtype_name(CommDType t) {
  switch (t) {
    case CommDType::F32: return "f32";
    case CommDType::F64: return "f64";
    case CommDType::BF16: return "bf16";
    case CommDType::F16: return "f16";
    case CommDType::I32: return "i32";
    case CommDType::I64: return "i64";
    case CommDType::U8: return "u8";
  }
  return "?";
}

CommDType comm_dtype_of(DType t) {
  switch (t) {
    case DType::F32: return CommDType::F32;
    case DType::BF16: return CommDType::BF16;
    case DType::F16: return CommDType::F16;
    case DType::I32: return CommDType::I32;
    case DType::I64: return CommDType::I64;
    case DType::U8: return CommDType::U8;
  }
  return CommDType::U8;
}

std::string_view collective_name(Collective c) {
  switch (c) {
    case Collective::AllReduce: return "all_reduce";
    case Collective::AllGather: return "all_gather";
    case Collective::ReduceScatter: return "reduce_scatter";
    case Collective::Broadcast: return "broadcast";
    case Collective::Send: return "send";
    case Collective::Recv: return "recv";
    case Collective::SendRecv: return "send_recv";
    case Collective::Barrier: return "barrier";
    case Collective::Split: return "split";
  }
  return "?";
}

std::int64_t CommStats::total_bytes() const {
  std::int64_t n = 0;
  for (const CollectiveStats& s : by_collective) n += s.bytes;
  return n;
}

void Communicator::set_timeout(double seconds) {
  ADAPT_REQUIRE(seconds > 0, ConfigError, "communicator '{}': timeout {}s must be positive", name_, seconds);
  options_.timeout_s = seconds;
}

std::string comm_timeout_message(int world_rank, Collective c, double timeout_s, std::string_view group,
                                 std::int64_t seq) {
  return fmt::format(
      "rank {}: {} timed out after {}s in group {} (call #{}). A peer of this group did not reach "
      "the same collective: it failed, is stuck, or the ranks issue collectives in different orders",
      world_rank, collective_name(c), timeout_s, group, seq);
}

CommOptions comm_options_from_env() {
  CommOptions o;
  if (const char* v = std::getenv("ADAPT_COMM_TIMEOUT_S"); v != nullptr && *v != '\0') {
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    ADAPT_REQUIRE(end != v && *end == '\0' && s > 0 && std::isfinite(s), ConfigError,
                  "ADAPT_COMM_TIMEOUT_S = '{}': give the seconds a collective may wait for its peers (e.g. 1800)", v);
    o.timeout_s = s;
  }
  return o;
}

Communicator::Communicator(std::string name, const CommOptions& options) : name_(std::move(name)), options_(options) {
  ADAPT_REQUIRE(options.timeout_s > 0, ConfigError, "communicator '{}': timeout {}s must be positive", name_,
                options.timeout_s);
  ADAPT_REQUIRE(options.max_elems_per_call >= 1 && options.max_elems_per_call <= 2147483647, ConfigError,
                "communicator '{}': max_elems_per_call = {} must be in 1 .. 2147483647 (MPI counts are int)", name_,
                options.max_elems_per_call);
}

void Communicator::begin(Collective c, std::int64_t count, std::int64_t bytes) {
  ADAPT_REQUIRE(count >= 0, CommError, "{} on group {}: element count {} is negative", collective_name(c), name_,
                count);
  CollectiveStats& s = stats_.by_collective[static_cast<std::size_t>(c)];
  ++s.calls;
  s.bytes += bytes;
  ++seq_;
}

void Communicator::all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) {
  begin(Collective::AllReduce, count, count * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (count > 0) do_all_reduce(buf, count, type, op);
}

CommRequest& CommRequest::operator=(CommRequest&& other) {
  if (this != &other) {
    wait();
    state_ = std::move(other.state_);
  }
  return *this;
}

void CommRequest::wait() {
  if (!state_) return;
  // Released first: a wait that throws is not repeated by the destructor.
  const std::unique_ptr<State> state = std::move(state_);
  state->wait();
}

CommRequest Communicator::all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op) {
  begin(Collective::AllReduce, count, count * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (count == 0) return {};
  return do_all_reduce_start(buf, count, type, op);
}

CommRequest Communicator::do_all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op) {
  do_all_reduce(buf, count, type, op);
  return {};
}

void Communicator::all_gather(const void* send, void* recv, std::int64_t count, CommDType type) {
  begin(Collective::AllGather, count, count * size() * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (count > 0) do_all_gather(send, recv, count, type);
}

void Communicator::reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type, ReduceOp op) {
  begin(Collective::ReduceScatter, count, count * size() * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (count > 0) do_reduce_scatter(send, recv, count, type, op);
}

void Communicator::broadcast(void* buf, std::int64_t count, CommDType type, int root) {
  ADAPT_REQUIRE(root >= 0 && root < size(), CommError,
                "broadcast on group {}: root {} is not a rank of the group (size {})", name_, root, size());
  begin(Collective::Broadcast, count, count * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (count > 0) do_broadcast(buf, count, type, root);
}

void Communicator::require_peer(Collective c, int peer) const {
  ADAPT_REQUIRE(peer >= 0 && peer < size() && peer != rank(), CommError,
                "{} on group {}: peer {} must be another rank of the group (rank {}, size {})", collective_name(c),
                name_, peer, rank(), size());
}

void Communicator::send(const void* buf, std::int64_t count, CommDType type, int peer, Tag tag) {
  require_peer(Collective::Send, peer);
  begin(Collective::Send, count, count * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (count > 0) do_send(buf, count, type, peer, tag);
}

void Communicator::recv(void* buf, std::int64_t count, CommDType type, int peer, Tag tag) {
  require_peer(Collective::Recv, peer);
  begin(Collective::Recv, count, count * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (count > 0) do_recv(buf, count, type, peer, tag);
}

void Communicator::send_recv(const void* send, std::int64_t send_count, int send_peer, Tag send_tag, void* recv,
                             std::int64_t recv_count, int recv_peer, Tag recv_tag, CommDType type) {
  require_peer(Collective::SendRecv, send_peer);
  require_peer(Collective::SendRecv, recv_peer);
  ADAPT_REQUIRE(send_count >= 0, CommError, "send_recv on group {}: send count {} is negative", name_, send_count);
  begin(Collective::SendRecv, recv_count, (send_count + recv_count) * static_cast<std::int64_t>(comm_dtype_size(type)));
  if (send_count > 0 || recv_count > 0) {
    do_send_recv(send, send_count, send_peer, send_tag, recv, recv_count, recv_peer, recv_tag, type);
  }
}

void Communicator::barrier() {
  begin(Collective::Barrier, 0, 0);
  do_barrier();
}

std::unique_ptr<Communicator> Communicator::split(int color, int key, const std::string& name) {
  ADAPT_REQUIRE(color >= 0, CommError, "split of group {}: colour {} must be >= 0", name_, color);
  begin(Collective::Split, 0, 0);
  return do_split(color, key, name);
}

namespace {

void require_contiguous(const Tensor& t, std::string_view what, const std::string& group) {
  ADAPT_REQUIRE(t.defined() && t.is_contiguous(), ShapeError,
                "{} on group {}: tensor '{}' must be defined and contiguous", what, group, t.name());
}

}  // namespace

void Communicator::all_reduce(Tensor& t, ReduceOp op) {
  require_contiguous(t, "all_reduce", name_);
  all_reduce(t.raw(), t.numel(), comm_dtype_of(t.dtype()), op);
}

CommRequest Communicator::all_reduce_start(Tensor& t, ReduceOp op) {
  require_contiguous(t, "all_reduce_start", name_);
  return all_reduce_start(t.raw(), t.numel(), comm_dtype_of(t.dtype()), op);
}

void Communicator::broadcast(Tensor& t, int root) {
  require_contiguous(t, "broadcast", name_);
  broadcast(t.raw(), t.numel(), comm_dtype_of(t.dtype()), root);
}

Communicator& GridComms::operator[](GridAxis axis) {
  switch (axis) {
    case GridAxis::Tp: return *tp;
    case GridAxis::Pp: return *pp;
    case GridAxis::Dp: return *dp;
  }
  return *tp;
}

GridComms grid_comms_split(Communicator& world, const ProcessGrid& grid) {
  ADAPT_REQUIRE(world.size() == grid.world_size(), ConfigError,
                "the parallel layout {} needs {} ranks but communicator '{}' has {}", grid.str(), grid.world_size(),
                world.name(), world.size());
  const int r = world.rank();
  GridComms out;
  for (GridAxis axis : {GridAxis::Tp, GridAxis::Pp, GridAxis::Dp}) {
    auto sub = world.split(grid.group_index(axis, r), grid.rank_in(axis, r), grid.group_name(axis, r));
    ADAPT_CHECK(sub->size() == grid.size(axis) && sub->rank() == grid.rank_in(axis, r),
                "{} group of rank {}: size {} rank {}, expected size {} rank {}", grid_axis_name(axis), r, sub->size(),
                sub->rank(), grid.size(axis), grid.rank_in(axis, r));
    if (axis == GridAxis::Tp) out.tp = std::move(sub);
    if (axis == GridAxis::Pp) out.pp = std::move(sub);
    if (axis == GridAxis::Dp) out.dp = std::move(sub);
  }
  return out;
}

}  // namespace adapt::comm
