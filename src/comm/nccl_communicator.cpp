#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

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
  float* scratch = nullptr;  // one device float for barrier()

  ~Impl() {
    if (comm) ncclCommDestroy(comm);
    if (scratch) cudaFree(scratch);
    if (own_stream) cudaStreamDestroy(own_stream);
  }

  [[noreturn]] void fail(const std::string& message) const {
    if (comm) ncclCommAbort(comm);
    comm_abort_job(message);
  }

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
};

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl, std::string name, const CommOptions& options)
    : Communicator(std::move(name), options), impl_(std::move(impl)) {}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, int cuda_device, const CommOptions& options)
    : Communicator(bootstrap.name(), options), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.device = cuda_device;
  m.rank = bootstrap.rank();
  m.size = bootstrap.size();
  cudaError_t ce = cudaSetDevice(cuda_device);
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL group {}: cudaSetDevice({}) failed: {}", name(), cuda_device,
                cudaGetErrorString(ce));
  ce = cudaStreamCreateWithFlags(&m.own_stream, cudaStreamNonBlocking);
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL group {}: cudaStreamCreate failed: {}", name(),
                cudaGetErrorString(ce));
  m.stream = m.own_stream;
  ce = cudaMalloc(reinterpret_cast<void**>(&m.scratch), sizeof(float));
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
}

NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }

void NcclCommunicator::set_stream(void* cuda_stream) {
  impl_->stream = cuda_stream ? static_cast<cudaStream_t>(cuda_stream) : impl_->own_stream;
}

void NcclCommunicator::do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) {
  impl_->check(ncclAllReduce(buf, buf, static_cast<std::size_t>(count), nccl_type(type), nccl_op(op), impl_->comm,
                             impl_->stream),
               Collective::AllReduce, "ncclAllReduce", name(), seq());
  impl_->wait(Collective::AllReduce, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_all_gather(const void* send, void* recv, std::int64_t count, CommDType type) {
  impl_->check(ncclAllGather(send, recv, static_cast<std::size_t>(count), nccl_type(type), impl_->comm, impl_->stream),
               Collective::AllGather, "ncclAllGather", name(), seq());
  impl_->wait(Collective::AllGather, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type,
                                         ReduceOp op) {
  impl_->check(ncclReduceScatter(send, recv, static_cast<std::size_t>(count), nccl_type(type), nccl_op(op), impl_->comm,
                                 impl_->stream),
               Collective::ReduceScatter, "ncclReduceScatter", name(), seq());
  impl_->wait(Collective::ReduceScatter, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_broadcast(void* buf, std::int64_t count, CommDType type, int root) {
  impl_->check(
      ncclBroadcast(buf, buf, static_cast<std::size_t>(count), nccl_type(type), root, impl_->comm, impl_->stream),
      Collective::Broadcast, "ncclBroadcast", name(), seq());
  impl_->wait(Collective::Broadcast, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_send(const void* buf, std::int64_t count, CommDType type, int peer, Tag) {
  impl_->check(ncclSend(buf, static_cast<std::size_t>(count), nccl_type(type), peer, impl_->comm, impl_->stream),
               Collective::Send, "ncclSend", name(), seq());
  impl_->wait(Collective::Send, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_recv(void* buf, std::int64_t count, CommDType type, int peer, Tag) {
  impl_->check(ncclRecv(buf, static_cast<std::size_t>(count), nccl_type(type), peer, impl_->comm, impl_->stream),
               Collective::Recv, "ncclRecv", name(), seq());
  impl_->wait(Collective::Recv, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_send_recv(const void* send, std::int64_t send_count, int send_peer, Tag, void* recv,
                                    std::int64_t recv_count, int recv_peer, Tag, CommDType type) {
  impl_->check(ncclGroupStart(), Collective::SendRecv, "ncclGroupStart", name(), seq());
  if (send_count > 0) {
    impl_->check(
        ncclSend(send, static_cast<std::size_t>(send_count), nccl_type(type), send_peer, impl_->comm, impl_->stream),
        Collective::SendRecv, "ncclSend", name(), seq());
  }
  if (recv_count > 0) {
    impl_->check(
        ncclRecv(recv, static_cast<std::size_t>(recv_count), nccl_type(type), recv_peer, impl_->comm, impl_->stream),
        Collective::SendRecv, "ncclRecv", name(), seq());
  }
  impl_->check(ncclGroupEnd(), Collective::SendRecv, "ncclGroupEnd", name(), seq());
  impl_->wait(Collective::SendRecv, options().timeout_s, name(), seq());
}

void NcclCommunicator::do_barrier() {
  impl_->check(ncclAllReduce(impl_->scratch, impl_->scratch, 1, ncclFloat32, ncclSum, impl_->comm, impl_->stream),
               Collective::Barrier, "ncclAllReduce", name(), seq());
  impl_->wait(Collective::Barrier, options().timeout_s, name(), seq());
}

std::unique_ptr<Communicator> NcclCommunicator::do_split(int color, int key, const std::string& new_name) {
  auto sub = std::make_unique<Impl>();
  sub->device = impl_->device;
  cudaError_t ce = cudaStreamCreateWithFlags(&sub->own_stream, cudaStreamNonBlocking);
  ADAPT_REQUIRE(ce == cudaSuccess, CudaError, "NCCL split of {}: cudaStreamCreate failed: {}", name(),
                cudaGetErrorString(ce));
  sub->stream = sub->own_stream;
  ce = cudaMalloc(reinterpret_cast<void**>(&sub->scratch), sizeof(float));
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
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(sub), new_name, options()));
}

}  // namespace adapt::comm
