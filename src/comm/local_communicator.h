// LocalCommunicator: the group of one rank (a job without parallelism, and unit tests). Reductions
// and broadcasts leave the buffer as it is, gathers and scatters copy; there is no peer to send to.
#pragma once

#include "comm/communicator.h"

namespace adapt::comm {

class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string name = "world", const CommOptions& options = {});
  int rank() const override { return 0; }
  int size() const override { return 1; }

 private:
  void do_all_reduce(void* buf, std::int64_t count, CommDType type, ReduceOp op) override;
  void do_all_gather(const void* send, void* recv, std::int64_t count, CommDType type) override;
  void do_reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type, ReduceOp op) override;
  void do_broadcast(void* buf, std::int64_t count, CommDType type, int root) override;
  void do_send(const void* buf, std::int64_t count, CommDType type, int peer, Tag tag) override;
  void do_recv(void* buf, std::int64_t count, CommDType type, int peer, Tag tag) override;
  void do_send_recv(const void* send, std::int64_t send_count, int send_peer, Tag send_tag, void* recv,
                    std::int64_t recv_count, int recv_peer, Tag recv_tag, CommDType type) override;
  void do_barrier() override;
  std::unique_ptr<Communicator> do_split(int color, int key, const std::string& name) override;
};

}  // namespace adapt::comm
