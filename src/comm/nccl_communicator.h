// NcclCommunicator: collectives over NCCL on device buffers, for the CUDA backend. Created from any
// bootstrap communicator of the same group (rank 0 makes the ncclUniqueId, the bootstrap broadcasts
// it), eagerly, so failures show at startup. NCCL runs non-blocking (config.blocking = 0): every call
// is enqueued on the communicator's stream and then polled (stream + ncclCommGetAsyncError) against
// the timeout; on timeout or an NCCL/CUDA error the rank prints the collective and group, calls
// ncclCommAbort and aborts the job. Compiled only with ADAPT_HAVE_NCCL; this header has no CUDA types.
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;

  NcclCommunicator(std::unique_ptr<Impl> impl, std::string name, const CommOptions& options);

  void do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) override;
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

}  // namespace adapt::comm
