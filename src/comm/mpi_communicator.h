// MpiCommunicator: collectives over MPI on host buffers, so tensor/pipeline/data-parallel code runs
// and is tested on CPU-only machines. CUDA device buffers are accepted too and staged through host
// memory (copied down, moved by MPI, copied back up), so ranks that share one GPU, where NCCL cannot
// run, still run the device code paths (slowly: for correctness runs; comm_kind.h picks NCCL otherwise). Every call is
// non-blocking MPI (MPI_I*) polled against a deadline: a rank whose peers do not arrive within the timeout, or whose
// MPI call fails, prints "rank R: <collective> timed out after Ns in group G" (or the MPI error) and calls MPI_Abort,
// so the job ends instead of hanging. Counts are int64, split into chunks of at most max_elems_per_call.
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/poll.h"

namespace adapt::comm {

/// Initialises MPI: MPI_Init_thread asking for MPI_THREAD_MULTIPLE in builds with NCCL, since the NCCL
/// watchdog thread (nccl_communicator.h) ends the job with comm_abort_job from its own thread, and for
/// MPI_THREAD_FUNNELED otherwise (every other MPI call comes from the main thread). Returns the level
/// provided; throws CommError when the call fails or provides less than MPI_THREAD_FUNNELED (MPI
/// finalized).
int mpi_init(int* argc, char*** argv);
/// The thread level MPI runs at (MPI_Query_thread), however it was started; MPI_THREAD_SINGLE when MPI
/// is not initialised (or already finalised).
int mpi_thread_level();

/// Prints `message` on stderr and ends the whole job: MPI_Abort(MPI_COMM_WORLD, ExitCode::Comm) when MPI
/// is initialised, std::abort otherwise. Only the first call of the process does so; a call from another
/// thread meanwhile waits for it to end the process. For failures inside collectives, where throwing would leave
/// the peers waiting. From a thread other than MPI's main one where MPI provides less than
/// MPI_THREAD_MULTIPLE, the message says that MPI_Abort is called outside what MPI promises.
[[noreturn]] void comm_abort_job(const std::string& message);

/// True when MpiCommunicator stages `buf` through host memory: it is CUDA device (or managed) memory
/// (backend::pointer_device). False for host memory, nullptr, and in builds or on machines without CUDA.
bool mpi_stages_buffer(const void* buf);

class MpiCommunicator final : public Communicator {
 public:
  /// A duplicate of MPI_COMM_WORLD named "world". MPI must be initialised (and not finalised).
  static std::unique_ptr<MpiCommunicator> world(const CommOptions& options = {});
  /// Takes ownership of `comm` (freed by the destructor) and sets MPI_ERRORS_RETURN on it.
  MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm handle() const { return comm_; }

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  int world_rank_ = 0;

  void do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) override;
  /// Host buffers: every chunk's MPI_Iallreduce is posted here and polled in wait(). Device buffers are
  /// staged through host memory synchronously (the copies need the data now): done before returning.
  CommRequest do_all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op) override;
  void do_all_gather(const void* send, void* recv, std::int64_t count, CommDType type) override;
  void do_reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type, ReduceOp op) override;
  void do_broadcast(void* buf, std::int64_t count, CommDType type, int root) override;
  void do_send(const void* buf, std::int64_t count, CommDType type, int peer, Tag tag) override;
  void do_recv(void* buf, std::int64_t count, CommDType type, int peer, Tag tag) override;
  void do_send_recv(const void* send, std::int64_t send_count, int send_peer, Tag send_tag, void* recv,
                    std::int64_t recv_count, int recv_peer, Tag recv_tag, CommDType type) override;
  void do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key, const std::string& name) override;

  struct AllReduceRequest;  // the CommRequest state of do_all_reduce_start

  /// Elements of `type` per MPI call: max_elems_per_call, and at most 1 GiB (some MPI builds and
  /// transports mishandle single messages beyond 2 GiB, which an int count of 8-byte elements reaches).
  std::int64_t chunk_elems(CommDType type) const;

  /// Checks the status of an MPI call; on failure prints the error and aborts the job. `call_seq`:
  /// the call number named in the message (default: the current one).
  void check(int rc, Collective c, const char* call, std::int64_t call_seq = -1) const;
  /// Polls `req` until it completes; aborts the job when `until` passes first.
  void wait(MPI_Request& req, Collective c, PollClock::time_point until, std::int64_t call_seq = -1) const;
  /// Splits `count` elements into chunks of at most `chunk`: for each, `post(offset, n, &request)`
  /// starts one non-blocking call (returning its MPI status), which completes before the next starts,
  /// then `after(offset, n)` runs; one deadline covers the whole collective.
  void run_chunked(Collective c, const char* call, std::int64_t count, std::int64_t chunk,
                   const std::function<int(std::int64_t, int, MPI_Request*)>& post,
                   const std::function<void(std::int64_t, int)>& after = {}) const;
};

}  // namespace adapt::comm
