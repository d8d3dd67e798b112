#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "comm/mpi_communicator.h"
#include "comm/poll.h"
#include "core/error.h"
#include "core/log.h"

namespace adapt::comm {

namespace {

ncclDataType_t nccl_type(CommDType t) {
  switch (t) {
    case CommDType::F32: return ncclFloat32;
    case CommDType::F64: return ncclFloat64;
    case CommDType::BF16: return ncclBfloat16;
    case CommDType::F16: return ncclFloat16;
    case CommDType::I32: return ncclInt32;
    case CommDType::I64: return ncclInt64;
    case CommDType::U8: return ncclUint8;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Sum ? ncclSum : ncclMax; }

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t own_stream = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  int rank = 0;
  int size = 1;
  float* scratch = nullptr;  // device floats for barrier() (0) and connect_neighbours() (0 to 2)
  // Ordering against compute (set_compute_stream): collectives run on own_stream after `before` is
  // recorded on `compute`, and `compute` waits for each collective's done event.
  cudaStream_t compute = nullptr;
  cudaEvent_t before = nullptr;
  bool async = false;
  struct Pending {  // async mode: collectives queued but not yet seen complete
    Collective c;
    std::int64_t seq;
    cudaEvent_t done;
    PollClock::time_point deadline;
  };
  std::deque<Pending> pending;  // under `mutex`: the watchdog retires entries too
  std::mutex mutex;
  // Async mode's watchdog: a thread that retires and checks the pending collectives every 20 ms, so
  // that a collective that hangs or fails aborts the job (naming it) even while the host thread waits
  // elsewhere, e.g. in a device-to-host copy queued behind it (c10d's NCCL watchdog).
  std::thread watchdog;
  std::mutex watchdog_mutex;
  std::condition_variable watchdog_wake;
  bool watchdog_stop = false;

  ~Impl() {
    stop_watchdog();
    for (const Pending& p : pending) cudaEventDestroy(p.done);
    if (before) cudaEventDestroy(before);
    if (comm) ncclCommDestroy(comm);
    if (scratch) cudaFree(scratch);
    if (own_stream) cudaStreamDestroy(own_stream);
  }

  // The job ends at the first failure (comm_abort_job: once, whichever thread sees it), its message
  // printed before anything that could block. No ncclCommAbort first: with a kernel stuck on a dead peer
  // it can block for long in some NCCL versions, before anything was said, and MPI_Abort ends every
  // process (and so its communicators) anyway.
  [[noreturn]] void fail(const std::string& message) const { comm_abort_job(message); }

  // Checks the immediate status of an NCCL call (ncclInProgress is fine: the call runs on).
  void check(ncclResult_t rc, Collective c, const char* call, const std::string& group, std::int64_t seq) const {
    if (rc == ncclSuccess || rc == ncclInProgress) return;
    fail(fmt::format("rank {}: {} failed in group {} (call #{}): {}: {} ({})", log::world_rank(), collective_name(c),
                     group, seq, call, ncclGetErrorString(rc), comm ? ncclGetLastError(comm) : ""));
  }

  // Waits until the communicator has no call in progress and the stream is drained, or the deadline.
  void wait(Collective c, double timeout_s, const std::string& group, std::int64_t seq) const {
    const auto until = poll_deadline(timeout_s);
    PollBackoff backoff;
    for (;;) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      if (async != ncclSuccess && async != ncclInProgress) check(async, c, "ncclCommGetAsyncError", group, seq);
      const cudaError_t q = stream ? cudaStreamQuery(stream) : cudaSuccess;
      if (q != cudaSuccess && q != cudaErrorNotReady) {
        fail(fmt::format("rank {}: {} failed in group {} (call #{}): cudaStreamQuery: {} ({}) on device {}",
                         log::world_rank(), collective_name(c), group, seq, cudaGetErrorName(q), cudaGetErrorString(q),
                         device));
      }
      if (async == ncclSuccess && q == cudaSuccess) return;
      if (PollClock::now() > until) fail(comm_timeout_message(log::world_rank(), c, timeout_s, group, seq));
      backoff.pause();
    }
  }

  void cuda_check(cudaError_t e, Collective c, const char* call, const std::string& group, std::int64_t seq) const {
    if (e == cudaSuccess) return;
    fail(fmt::format("rank {}: {} failed in group {} (call #{}): {}: {} ({}) on device {}", log::world_rank(),
                     collective_name(c), group, seq, call, cudaGetErrorName(e), cudaGetErrorString(e), device));
  }

  /// The stream a collective is enqueued on; with a compute stream set, ordered after its work so far.
  cudaStream_t begin_op(Collective c, const std::string& group, std::int64_t seq) {
    if (compute == nullptr) return stream;
    if (before == nullptr)
      cuda_check(cudaEventCreateWithFlags(&before, cudaEventDisableTiming), c, "cudaEventCreate", group, seq);
    cuda_check(cudaEventRecord(before, compute), c, "cudaEventRecord", group, seq);
    cuda_check(cudaStreamWaitEvent(own_stream, before, 0), c, "cudaStreamWaitEvent", group, seq);
    return own_stream;
  }

  /// After a collective is enqueued: the compute stream waits for it (when set); then either the host
  /// waits for it (blocking mode) or it joins the pending list (async mode, see NcclCommunicator::poll).
  void end_op(Collective c, double timeout_s, const std::string& group, std::int64_t seq) {
    if (compute == nullptr && !async) {
      wait(c, timeout_s, group, seq);
      return;
    }
    wait_enqueued(c, timeout_s, group, seq);
    const cudaEvent_t done = record_done(compute != nullptr ? own_stream : stream, c, group, seq);
    if (compute != nullptr) cuda_check(cudaStreamWaitEvent(compute, done, 0), c, "cudaStreamWaitEvent", group, seq);
    add_pending({c, seq, done, poll_deadline(timeout_s)}, group);
  }

  /// A queued collective: blocking mode waits for it on the host; async mode retires what is done.
  void add_pending(const Pending& p, const std::string& group) {
    {
      std::lock_guard lock(mutex);
      pending.push_back(p);
    }
    drain(group, /*block=*/!async);
  }

  void start_watchdog(const std::string& group) {
    if (watchdog.joinable()) return;
    watchdog_stop = false;
    watchdog = std::thread([this, group] {
      cudaSetDevice(device);  // events are queried in the device's context
      std::unique_lock lock(watchdog_mutex);
      while (!watchdog_stop) {
        watchdog_wake.wait_for(lock, std::chrono::milliseconds(20));
        if (watchdog_stop) break;
        lock.unlock();
        drain(group, /*block=*/false);
        lock.lock();
      }
    });
  }

  void stop_watchdog() {
    if (!watchdog.joinable()) return;
    {
      std::lock_guard lock(watchdog_mutex);
      watchdog_stop = true;
    }
    watchdog_wake.notify_all();
    watchdog.join();
  }

  /// A non-blocking communicator may still be putting the last call on the stream (ncclInProgress): an
  /// event recorded on the stream must come after it, so this waits for the enqueue (not for the
  /// collective).
  void wait_enqueued(Collective c, double timeout_s, const std::string& group, std::int64_t seq) const {
    const auto until = poll_deadline(timeout_s);
    PollBackoff backoff;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm, &state);
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) check(state, c, "ncclCommGetAsyncError", group, seq);
      if (PollClock::now() > until) fail(comm_timeout_message(log::world_rank(), c, timeout_s, group, seq));
      backoff.pause();
    }
  }

  /// A new event recorded on `used` after the collective just enqueued there (call wait_enqueued first).
  cudaEvent_t record_done(cudaStream_t used, Collective c, const std::string& group, std::int64_t seq) const {
    cudaEvent_t done = nullptr;
    cuda_check(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), c, "cudaEventCreate", group, seq);
    cuda_check(cudaEventRecord(done, used), c, "cudaEventRecord", group, seq);
    return done;
  }

  /// Retires completed pending collectives in order; with `block`, waits for all of them. Aborts the job
  /// on an NCCL async error, a CUDA error or a passed deadline, naming the collective, call and group.
  /// From the host thread or the watchdog (the lock is not held while a blocking drain pauses).
  void drain(const std::string& group, bool block) {
    PollBackoff backoff;
    for (;;) {
      {
        std::lock_guard lock(mutex);
        while (!pending.empty()) {
          const Pending& p = pending.front();
          ncclResult_t async_rc = ncclSuccess;
          ncclCommGetAsyncError(comm, &async_rc);
          if (async_rc != ncclSuccess && async_rc != ncclInProgress)
            check(async_rc, p.c, "ncclCommGetAsyncError", group, p.seq);
          const cudaError_t q = cudaEventQuery(p.done);
          if (q != cudaSuccess) {
            if (q != cudaErrorNotReady) cuda_check(q, p.c, "cudaEventQuery", group, p.seq);
            if (PollClock::now() > p.deadline)
              fail(comm_timeout_message(log::world_rank(), p.c, timeout_s, group, p.seq));
            break;
          }
          cudaEventDestroy(p.done);
          pending.pop_front();
        }
        if (pending.empty() || !block) return;
      }
      backoff.pause();
    }
  }

  double timeout_s = 600.0;  // the communicator's, for the messages of pending collectives
};

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl, std::string name, const CommOptions& options)
    : Communicator(std::move(name), options), impl_(std::move(impl)) {}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, int cuda_device, const CommOptions& options)
    : Communicator(bootstrap.name(), options), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.device = cuda_device;
  m.timeout_s = options.timeout_s;
  m.rank = bootstrap.rank();
  m.size = bootstrap.size();
  cudaError_t ce = cudaSetDevice(cuda_device);
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL group {}: cudaSetDevice({}) failed: {}", name(), cuda_device,
                cudaGetErrorString(ce));
  ce = cudaStreamCreateWithFlags(&m.own_stream, cudaStreamNonBlocking);
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL group {}: cudaStreamCreate failed: {}", name(),
                cudaGetErrorString(ce));
  m.stream = m.own_stream;
  ce = cudaMalloc(reinterpret_cast<void**>(&m.scratch), 3 * sizeof(float));
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL group {}: cudaMalloc failed: {}", name(), cudaGetErrorString(ce));

  ncclUniqueId id{};
  if (m.rank == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    ADAPT_REQUIRE(rc == ncclSuccess, CommError, "NCCL group {}: ncclGetUniqueId failed: {}", name(),
                  ncclGetErrorString(rc));
  }
  bootstrap.broadcast(&id, static_cast<std::int64_t>(sizeof(id)), CommDType::U8, /*root=*/0);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  m.check(ncclCommInitRankConfig(&m.comm, m.size, id, m.rank, &config), Collective::Split, "ncclCommInitRankConfig",
          name(), seq());
  m.stream = nullptr;  // initialisation queues nothing on a stream
  m.wait(Collective::Split, options.timeout_s, name(), seq());
  m.stream = m.own_stream;
  // Ordered against the legacy default stream, where the ops run, unless told otherwise: a collective
  // must not read a buffer before the kernel writing it is done, nor may a buffer be reused before it is.
  m.compute = cudaStreamLegacy;
}

NcclCommunicator::~NcclCommunicator() {
  if (!impl_) return;
  impl_->stop_watchdog();
  // Never free buffers under a collective still running: wait (with the timeout) for what is queued.
  if (impl_->comm) impl_->drain(name(), /*block=*/true);
}

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }

void NcclCommunicator::set_stream(void* cuda_stream) {
  impl_->stream = cuda_stream ? static_cast<cudaStream_t>(cuda_stream) : impl_->own_stream;
}

void NcclCommunicator::set_compute_stream(void* cuda_stream) {
  impl_->drain(name(), /*block=*/true);
  impl_->compute = static_cast<cudaStream_t>(cuda_stream);
}

void NcclCommunicator::set_async(bool async) {
  if (async) {
    impl_->start_watchdog(name());
  } else {
    impl_->stop_watchdog();
    impl_->drain(name(), /*block=*/true);
  }
  impl_->async = async;
}

bool NcclCommunicator::async() const { return impl_->async; }

std::int64_t NcclCommunicator::poll() {
  impl_->drain(name(), /*block=*/false);
  std::lock_guard lock(impl_->mutex);
  return static_cast<std::int64_t>(impl_->pending.size());
}

void NcclCommunicator::synchronize() { impl_->drain(name(), /*block=*/true); }

void* NcclCommunicator::comm_stream() const { return impl_->own_stream; }

void NcclCommunicator::do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) {
  const cudaStream_t s = impl_->begin_op(Collective::AllReduce, name(), seq());
  impl_->check(ncclAllReduce(buf, buf, static_cast<std::size_t>(count), nccl_type(type), nccl_op(op), impl_->comm, s),
               Collective::AllReduce, "ncclAllReduce", name(), seq());
  impl_->end_op(Collective::AllReduce, options().timeout_s, name(), seq());
}

// A started all-reduce: its done event, recorded on the stream it runs on. The compute stream set at
// the start waits for it only in wait(), so the compute queued in between is not ordered after it.
struct NcclCommunicator::AllReduceRequest final : CommRequest::State {
  Impl* impl = nullptr;
  const std::string* group = nullptr;  // the communicator's name (the request does not outlive it)
  cudaStream_t compute = nullptr;
  cudaEvent_t done = nullptr;  // owned until wait() hands it to the pending list
  std::int64_t seq = 0;
  PollClock::time_point deadline;

  ~AllReduceRequest() override {
    if (done) cudaEventDestroy(done);
  }

  void wait() override {
    if (compute != nullptr) {
      impl->cuda_check(cudaStreamWaitEvent(compute, done, 0), Collective::AllReduce, "cudaStreamWaitEvent", *group,
                       seq);
    }
    const cudaEvent_t d = done;
    done = nullptr;
    impl->add_pending({Collective::AllReduce, seq, d, deadline}, *group);
  }
};

CommRequest NcclCommunicator::do_all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op) {
  Impl& m = *impl_;
  const cudaStream_t s = m.begin_op(Collective::AllReduce, name(), seq());
  m.check(ncclAllReduce(buf, buf, static_cast<std::size_t>(count), nccl_type(type), nccl_op(op), m.comm, s),
          Collective::AllReduce, "ncclAllReduce", name(), seq());
  m.wait_enqueued(Collective::AllReduce, options().timeout_s, name(), seq());
  auto state = std::make_unique<AllReduceRequest>();
  state->impl = &m;
  state->group = &name();
  state->compute = m.compute;
  state->seq = seq();
  state->deadline = poll_deadline(options().timeout_s);
  state->done = m.record_done(s, Collective::AllReduce, name(), seq());
  return CommRequest(std::move(state));
}

void NcclCommunicator::do_all_gather(const void* send, void* recv, std::int64_t count, CommDType type) {
  const cudaStream_t s = impl_->begin_op(Collective::AllGather, name(), seq());
  impl_->check(ncclAllGather(send, recv, static_cast<std::size_t>(count), nccl_type(type), impl_->comm, s),
               Collective::AllGather, "ncclAllGather", name(), seq());
  impl_->end_op(Collective::AllGather, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type,
                                         ReduceOp op) {
  const cudaStream_t s = impl_->begin_op(Collective::ReduceScatter, name(), seq());
  impl_->check(
      ncclReduceScatter(send, recv, static_cast<std::size_t>(count), nccl_type(type), nccl_op(op), impl_->comm, s),
      Collective::ReduceScatter, "ncclReduceScatter", name(), seq());
  impl_->end_op(Collective::ReduceScatter, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_broadcast(void* buf, std::int64_t count, CommDType type, int root) {
  const cudaStream_t s = impl_->begin_op(Collective::Broadcast, name(), seq());
  impl_->check(ncclBroadcast(buf, buf, static_cast<std::size_t>(count), nccl_type(type), root, impl_->comm, s),
               Collective::Broadcast, "ncclBroadcast", name(), seq());
  impl_->end_op(Collective::Broadcast, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_send(const void* buf, std::int64_t count, CommDType type, int peer, Tag) {
  const cudaStream_t s = impl_->begin_op(Collective::Send, name(), seq());
  impl_->check(ncclSend(buf, static_cast<std::size_t>(count), nccl_type(type), peer, impl_->comm, s), Collective::Send,
               "ncclSend", name(), seq());
  impl_->end_op(Collective::Send, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_recv(void* buf, std::int64_t count, CommDType type, int peer, Tag) {
  const cudaStream_t s = impl_->begin_op(Collective::Recv, name(), seq());
  impl_->check(ncclRecv(buf, static_cast<std::size_t>(count), nccl_type(type), peer, impl_->comm, s), Collective::Recv,
               "ncclRecv", name(), seq());
  impl_->end_op(Collective::Recv, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_send_recv(const void* send, std::int64_t send_count, int send_peer, Tag, void* recv,
                                    std::int64_t recv_count, int recv_peer, Tag, CommDType type) {
  const cudaStream_t s = impl_->begin_op(Collective::SendRecv, name(), seq());
  impl_->check(ncclGroupStart(), Collective::SendRecv, "ncclGroupStart", name(), seq());
  if (send_count > 0) {
    impl_->check(ncclSend(send, static_cast<std::size_t>(send_count), nccl_type(type), send_peer, impl_->comm, s),
                 Collective::SendRecv, "ncclSend", name(), seq());
  }
  if (recv_count > 0) {
    impl_->check(ncclRecv(recv, static_cast<std::size_t>(recv_count), nccl_type(type), recv_peer, impl_->comm, s),
                 Collective::SendRecv, "ncclRecv", name(), seq());
  }
  impl_->check(ncclGroupEnd(), Collective::SendRecv, "ncclGroupEnd", name(), seq());
  impl_->end_op(Collective::SendRecv, options().timeout_s, name(), seq());
}

void NcclCommunicator::connect_neighbours() {
  Impl& m = *impl_;
  if (m.size < 2) return;
  const cudaStream_t s = m.begin_op(Collective::SendRecv, name(), seq());
  m.check(ncclGroupStart(), Collective::SendRecv, "ncclGroupStart", name(), seq());
  for (const int side : {0, 1}) {
    const int peer = side == 0 ? m.rank - 1 : m.rank + 1;
    if (peer < 0 || peer >= m.size) continue;
    m.check(ncclSend(m.scratch, 1, ncclFloat32, peer, m.comm, s), Collective::SendRecv, "ncclSend", name(), seq());
    m.check(ncclRecv(m.scratch + 1 + side, 1, ncclFloat32, peer, m.comm, s), Collective::SendRecv, "ncclRecv", name(),
            seq());
  }
  m.check(ncclGroupEnd(), Collective::SendRecv, "ncclGroupEnd", name(), seq());
  m.end_op(Collective::SendRecv, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_barrier() {
  const cudaStream_t s = impl_->begin_op(Collective::Barrier, name(), seq());
  impl_->check(ncclAllReduce(impl_->scratch, impl_->scratch, 1, ncclFloat32, ncclSum, impl_->comm, s),
               Collective::Barrier, "ncclAllReduce", name(), seq());
  impl_->end_op(Collective::Barrier, options().timeout_s, name(), seq());
}

std::unique_ptr<Communicator> NcclCommunicator::do_split(int color, int key, const std::string& new_name) {
  impl_->drain(name(), /*block=*/true);
  auto sub = std::make_unique<Impl>();
  sub->device = impl_->device;
  sub->timeout_s = options().timeout_s;
  cudaError_t ce = cudaStreamCreateWithFlags(&sub->own_stream, cudaStreamNonBlocking);
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL split of {}: cudaStreamCreate failed: {}", name(),
                cudaGetErrorString(ce));
  sub->stream = sub->own_stream;
  ce = cudaMalloc(reinterpret_cast<void**>(&sub->scratch), 3 * sizeof(float));
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL split of {}: cudaMalloc failed: {}", name(),
                cudaGetErrorString(ce));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  impl_->check(ncclCommSplit(impl_->comm, color, key, &sub->comm, &config), Collective::Split, "ncclCommSplit", name(),
               seq());
  impl_->wait(Collective::Split, options().timeout_s, name(), seq());
  sub->wait(Collective::Split, options().timeout_s, new_name, seq());
  ncclCommUserRank(sub->comm, &sub->rank);
  ncclCommCount(sub->comm, &sub->size);
  sub->compute = impl_->compute;  // ordered as its parent, and as asynchronous
  auto split = std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(sub), new_name, options()));
  split->set_async(impl_->async);
  return split;
}

GridComms nccl_grid_comms(GridComms& bootstrap, int cuda_device, const CommOptions& options) {
  ADAPT_CHECK(bootstrap.tp && bootstrap.pp && bootstrap.dp, "nccl_grid_comms: a bootstrap group is missing");
  GridComms out;
  // The same order on every rank: a group's ncclCommInitRankConfig completes once all its members joined.
  out.tp = std::make_unique<NcclCommunicator>(*bootstrap.tp, cuda_device, options);
  auto pp = std::make_unique<NcclCommunicator>(*bootstrap.pp, cuda_device, options);
  pp->connect_neighbours();  // before a stage's first lone send or receive
  out.pp = std::move(pp);
  out.dp = std::make_unique<NcclCommunicator>(*bootstrap.dp, cuda_device, options);
  return out;
}

}  // namespace adapt::comm
