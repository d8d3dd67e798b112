// NcclCommunicator: collectives over NCCL on device buffers, for the CUDA backend. Created from any
// bootstrap communicator of the same group (rank 0 makes the ncclUniqueId, the bootstrap broadcasts
// it), eagerly, so failures show at startup. NCCL runs non-blocking (config.blocking = 0): every call
// is enqueued on the communicator's stream and then polled (stream + ncclCommGetAsyncError) against
// the timeout; on timeout or an NCCL/CUDA error the rank prints the collective and group and aborts
// the job with MPI_Abort (the first failure only, whichever thread sees it). With a compute stream set, each collective
// runs on the communicator's own stream after an event recorded on the compute stream, and the compute stream waits for
// the collective's done event (llm.c's zero.cuh ordering), so compute queued before a collective is not serialised
// behind it and compute queued after it sees its result. In async mode the host does not wait: queued collectives are
// checked (async error, CUDA error, deadline) by poll(), synchronize(), each later call and a watchdog thread, as
// c10d's watchdog does (the watchdog ends the job with MPI_Abort from its own thread, which is why comm::mpi_init asks
// for MPI_THREAD_MULTIPLE). all_reduce_start enqueues the same way but records the collective's done event without
// making the compute stream wait: that happens in the request's wait(), so compute queued on the compute stream between
// the start and the wait runs alongside the collective (Megatron's asynchronous tensor-parallel all-reduce). Compiled
// only with ADAPT_HAVE_NCCL (nccl_grid_comms also without, where it throws); this header has no CUDA types.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"

namespace adapt::comm {

class NcclCommunicator final : public Communicator {
 public:
  /// Called by every rank of `bootstrap`'s group, each with its CUDA device. The new communicator has
  /// the same size, ranks and name as `bootstrap`.
  NcclCommunicator(Communicator& bootstrap, int cuda_device, const CommOptions& options = {});
  ~NcclCommunicator() override;

  int rank() const override;
  int size() const override;
  /// Orders the collectives after the work already queued on `cuda_stream` (a cudaStream_t); the
  /// default is the communicator's own stream.
  void set_stream(void* cuda_stream);
  /// Runs each later collective on comm_stream(), after the work queued so far on `cuda_stream` (a
  /// cudaStream_t; recorded event), and makes `cuda_stream` wait for it (done event). The default is the
  /// legacy default stream (backend::cuda_compute_stream(), where the ops run); a split inherits its
  /// parent's. nullptr: set_stream's behaviour (no ordering: the caller's job). Waits for pending
  /// collectives first.
  void set_compute_stream(void* cuda_stream);
  /// Async mode: collectives return once queued (their buffers must stay valid and unchanged until
  /// they complete); poll() or synchronize() check them, and so does a watchdog thread every 20 ms, so
  /// that a collective that hangs or fails aborts the job even while the host waits elsewhere. Turning
  /// it off synchronizes.
  void set_async(bool async);
  bool async() const;
  /// Retires completed collectives and returns how many are still running. Aborts the job, naming the
  /// collective, its call number and the group, on an NCCL async error (ncclCommGetAsyncError), a
  /// CUDA error, or a collective running past the timeout.
  std::int64_t poll();
  /// Waits for every queued collective, with the same checks as poll().
  void synchronize();
  /// The communicator's own stream (a cudaStream_t).
  void* comm_stream() const;
  /// Makes the point-to-point connections with ranks rank − 1 and rank + 1, on every rank of the group at
  /// once (all call it; one grouped send and receive of one element each way). NCCL makes them lazily, in
  /// the first ncclGroupEnd that needs them, and expects both sides to ask for the same ones: a pipeline
  /// whose first exchange is a grouped send + receive on one stage and a lone receive on the next (1F1B
  /// with one micro-batch) would otherwise fail (pp = 2) or hang (pp > 2) in that setup.
  void connect_neighbours();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  struct AllReduceRequest;  // the CommRequest state of do_all_reduce_start

  NcclCommunicator(std::unique_ptr<Impl> impl, std::string name, const CommOptions& options);

  void do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) override;
  /// Enqueued like do_all_reduce (after the compute stream's work so far). The request's wait() makes
  /// the compute stream (the one set at the start) wait for the collective, then, in blocking mode,
  /// waits on the host for it (with the timeout and error checks of the blocking call); in async mode
  /// it joins the collectives poll() and synchronize() check. Without a compute stream the collective
  /// runs on set_stream's stream, ordered with the work there.
  CommRequest do_all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op) override;
  void do_all_gather(const void* send, void* recv, std::int64_t count, CommDType type) override;
  void do_reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type, ReduceOp op) override;
  void do_broadcast(void* buf, std::int64_t count, CommDType type, int root) override;
  /// NCCL has no tags: messages between two ranks arrive in the order they were sent.
  void do_send(const void* buf, std::int64_t count, CommDType type, int peer, Tag tag) override;
  void do_recv(void* buf, std::int64_t count, CommDType type, int peer, Tag tag) override;
  void do_send_recv(const void* send, std::int64_t send_count, int send_peer, Tag send_tag, void* recv,
                    std::int64_t recv_count, int recv_peer, Tag recv_tag, CommDType type) override;
  void do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key, const std::string& name) override;
};

/// One NCCL communicator per tp, pp and dp group of this rank, each created from a unique id that rank 0
/// of the group makes and broadcasts over the group's bootstrap communicator (`bootstrap`, e.g. the MPI
/// communicators of grid_comms_split), eagerly, so that failures show at startup. Called by every rank
/// of the world, with its CUDA device; the new communicators keep the bootstrap groups' names.
/// UnsupportedError in builds without NCCL.
GridComms nccl_grid_comms(GridComms& bootstrap, int cuda_device, const CommOptions& options = {});

}  // namespace adapt::comm
