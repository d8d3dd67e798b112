// Communicator: the collectives parallel code uses (all-reduce, all-gather, reduce-scatter, broadcast,
// send/recv, barrier, split), one interface over the local (size 1), MPI (host memory) and NCCL
// (device memory) implementations. The public methods check arguments, count the bytes each
// collective moves and number the calls; implementations only move data. Element counts are int64.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "comm/process_grid.h"
#include "dtype/dtype.h"
#include "tensor/tensor.h"

namespace adapt::comm {

/// Element types a collective moves: the tensor DTypes plus f64 (loss and norm accumulators).
enum class CommDType : std::uint8_t { F32, F64, BF16, F16, I32, I64, U8 };
std::size_t comm_dtype_size(CommDType t);
std::string_view comm_dtype_name(CommDType t);
CommDType comm_dtype_of(DType t);

template <typename T>
constexpr CommDType comm_dtype_of();
template <>
constexpr CommDType comm_dtype_of<float>() {
  return CommDType::F32;
}
template <>
constexpr CommDType comm_dtype_of<double>() {
  return CommDType::F64;
}
template <>
constexpr CommDType comm_dtype_of<bf16>() {
  return CommDType::BF16;
}
template <>
constexpr CommDType comm_dtype_of<f16>() {
  return CommDType::F16;
}
template <>
constexpr CommDType comm_dtype_of<std::int32_t>() {
  return CommDType::I32;
}
template <>
constexpr CommDType comm_dtype_of<std::int64_t>() {
  return CommDType::I64;
}
template <>
constexpr CommDType comm_dtype_of<std::uint8_t>() {
  return CommDType::U8;
}

enum class ReduceOp { Sum, Max };

/// Point-to-point message kinds. A send and its recv must use the same tag.
enum class Tag : int { Activation = 1, ActivationGrad = 2, Control = 3 };

enum class Collective { AllReduce, AllGather, ReduceScatter, Broadcast, Send, Recv, SendRecv, Barrier, Split };
inline constexpr std::size_t kCollectiveCount = 9;
/// "all_reduce", "all_gather", ... (the names used in logs and error messages).
std::string_view collective_name(Collective c);

struct CommOptions {
  /// Seconds a collective may wait for its peers before the job is aborted.
  double timeout_s = 600.0;
  /// Most elements passed to one call of the underlying library (MPI takes int counts); larger
  /// transfers are split into chunks of at most this many elements (and, over MPI, of at most 1 GiB).
  /// 1 .. INT_MAX.
  std::int64_t max_elems_per_call = 2147483647;
};

/// CommOptions with the timeout from $ADAPT_COMM_TIMEOUT_S when set (seconds, > 0), else the default.
/// ConfigError naming the variable for a value that is not a positive number.
CommOptions comm_options_from_env();

/// Traffic of one collective kind on one communicator, as seen by this rank.
struct CollectiveStats {
  std::int64_t calls = 0;
  std::int64_t bytes = 0;  // see Communicator for what each collective counts
};

struct CommStats {
  std::array<CollectiveStats, kCollectiveCount> by_collective{};
  const CollectiveStats& operator[](Collective c) const { return by_collective[static_cast<std::size_t>(c)]; }
  std::int64_t total_bytes() const;
};

/// "rank 3: all_reduce timed out after 30s in group tp[pp1,dp0] (call #17)": what a rank prints before
/// it aborts the job.
std::string comm_timeout_message(int world_rank, Collective c, double timeout_s, std::string_view group,
                                 std::int64_t seq);

/// A collective started and not yet complete (Communicator::all_reduce_start). wait() completes it;
/// a request never waited for is completed by its destructor, so no collective is left in flight on
/// a buffer when an exception unwinds its owner. Move-only; it must not outlive its communicator.
class CommRequest {
 public:
  /// What an implementation keeps for a collective in flight; wait() is called once.
  class State {
   public:
    virtual ~State() = default;
    virtual void wait() = 0;
  };

  /// A completed request (what synchronous implementations return).
  CommRequest() = default;
  explicit CommRequest(std::unique_ptr<State> state) : state_(std::move(state)) {}
  CommRequest(CommRequest&&) noexcept = default;
  /// Waits for the request held so far, then takes `other`'s.
  CommRequest& operator=(CommRequest&& other);
  CommRequest(const CommRequest&) = delete;
  CommRequest& operator=(const CommRequest&) = delete;
  ~CommRequest() { wait(); }

  /// Completes the collective (see Communicator::all_reduce_start for what "complete" means per
  /// implementation). A second call does nothing.
  void wait();
  /// True until wait() has been called (or for a request that was done when made: false).
  bool pending() const { return state_ != nullptr; }

 private:
  std::unique_ptr<State> state_;
};

/// Collective contract (as c10d's): every rank of the group calls the same collectives in the same
/// order with matching counts and types. A rank that waits longer than the timeout, or sees the
/// library fail, prints the message above and aborts the whole job (it does not throw: its peers
/// would hang). Argument errors found before any communication (negative counts, bad peers) throw.
/// Buffers are host memory for the local and MPI implementations and device memory for NCCL. Calls
/// block until this rank's part is done (all_reduce_start: until its wait()). Not thread-safe: one
/// thread issues a communicator's calls.
///
/// Bytes counted per call (this rank's view): all_reduce and broadcast the buffer; all_gather the
/// gathered output (count × size); reduce_scatter the input (count × size); send and recv the
/// message; send_recv both messages; barrier and split nothing.
class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// The group's name ("world", "tp[pp0,dp1]", ...), used in error messages.
  const std::string& name() const { return name_; }
  const CommOptions& options() const { return options_; }
  /// The timeout of the calls made from now on (> 0): e.g. longer while the other ranks wait for work
  /// that rank 0 alone does, such as a first tokenization of a large corpus.
  void set_timeout(double seconds);
  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  /// Calls issued so far (the sequence number of the next call, for desync debugging).
  std::int64_t seq() const { return seq_; }

  /// In place: buf (count) becomes the element-wise reduction over the group.
  void all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op);
  /// recv (size × count) receives every rank's send (count), in rank order.
  void all_gather(const void* send, void* recv, std::int64_t count, CommDType type);
  /// send (size × count) is reduced over the group; rank r receives block r into recv (count).
  void reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type, ReduceOp op);
  /// buf (count) of rank `root` is copied to every rank.
  void broadcast(void* buf, std::int64_t count, CommDType type, int root);
  /// Blocking point-to-point. Called by the two ranks only; the peer posts the matching recv/send.
  void send(const void* buf, std::int64_t count, CommDType type, int peer, Tag tag);
  void recv(void* buf, std::int64_t count, CommDType type, int peer, Tag tag);
  /// Sends `send` (send_count) to `send_peer` while receiving `recv` (recv_count) from `recv_peer`, so
  /// that two ranks that each send to the other first do not wait on each other (pipeline stages
  /// swapping activations and gradients, Megatron's send_forward_recv_backward). The peers post the
  /// matching recv/send (or send_recv) with the same tags.
  void send_recv(const void* send, std::int64_t send_count, int send_peer, Tag send_tag, void* recv,
                 std::int64_t recv_count, int recv_peer, Tag recv_tag, CommDType type);
  void barrier();
  /// A communicator over the ranks that pass the same `color` (>= 0), ordered by `key` then by rank;
  /// `name` names the new group. Called by every rank of this group.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name);

  /// all_reduce without waiting for it: the returned request's wait() completes it, so that work not
  /// touching `buf` can run in between (Megatron's asynchronous tensor-parallel all-reduce of the
  /// input gradient). Until wait() returns, this rank must neither read nor write `buf`. Counted as one
  /// all_reduce (same calls, bytes and call number, taken at the start). Every rank of the group starts
  /// its requests in the same order as its other collectives (the contract below); waits may come in
  /// any order, and other collectives may be issued between a start and its wait. Per implementation:
  /// MPI posts non-blocking calls (MPI_Iallreduce) and wait() polls them against the timeout, counted
  /// from the start (how much runs before wait() is up to the MPI library's progress); device buffers
  /// staged through host memory and the local group complete in the start (wait() does nothing); NCCL
  /// enqueues on its stream and wait() orders the compute stream after the collective
  /// (nccl_communicator.h). Implementations without their own version complete it in the start.
  [[nodiscard]] CommRequest all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op);
  [[nodiscard]] CommRequest all_reduce_start(Tensor& t, ReduceOp op);

  template <typename T>
  void all_reduce(std::span<T> buf, ReduceOp op) {
    all_reduce(buf.data(), static_cast<std::int64_t>(buf.size()), comm_dtype_of<T>(), op);
  }
  template <typename T>
  void broadcast(std::span<T> buf, int root) {
    broadcast(buf.data(), static_cast<std::int64_t>(buf.size()), comm_dtype_of<T>(), root);
  }
  /// Whole contiguous tensors (host tensors for local/MPI, device tensors for NCCL).
  void all_reduce(Tensor& t, ReduceOp op);
  void broadcast(Tensor& t, int root);

 protected:
  Communicator(std::string name, const CommOptions& options);

  virtual void do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) = 0;
  /// Called with count > 0. Default: do_all_reduce, then a completed request.
  virtual CommRequest do_all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op);
  virtual void do_all_gather(const void* send, void* recv, std::int64_t count, CommDType type) = 0;
  virtual void do_reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type, ReduceOp op) = 0;
  virtual void do_broadcast(void* buf, std::int64_t count, CommDType type, int root) = 0;
  virtual void do_send(const void* buf, std::int64_t count, CommDType type, int peer, Tag tag) = 0;
  virtual void do_recv(void* buf, std::int64_t count, CommDType type, int peer, Tag tag) = 0;
  virtual void do_send_recv(const void* send, std::int64_t send_count, int send_peer, Tag send_tag, void* recv,
                            std::int64_t recv_count, int recv_peer, Tag recv_tag, CommDType type) = 0;
  virtual void do_barrier() = 0;
  virtual std::unique_ptr<Communicator> do_split(int color, int key, const std::string& name) = 0;

 private:
  std::string name_;
  CommOptions options_;
  CommStats stats_;
  std::int64_t seq_ = 0;

  void begin(Collective c, std::int64_t count, std::int64_t bytes);
  void require_peer(Collective c, int peer) const;
};

/// The tp, pp and dp communicators of one rank.
struct GridComms {
  std::unique_ptr<Communicator> tp;
  std::unique_ptr<Communicator> pp;
  std::unique_ptr<Communicator> dp;
  Communicator& operator[](GridAxis axis);
};

/// Splits `world` (whose rank numbering is the grid's world numbering) into the groups of `grid`.
/// Called by every rank of `world`; ConfigError when the sizes differ.
GridComms grid_comms_split(Communicator& world, const ProcessGrid& grid);

}  // namespace adapt::comm
