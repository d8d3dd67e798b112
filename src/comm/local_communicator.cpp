#include "comm/local_communicator.h"

#include <cstring>

#include "core/error.h"

namespace adapt::comm {

LocalCommunicator::LocalCommunicator(std::string name, const CommOptions& options)
    : Communicator(std::move(name), options) {}

void LocalCommunicator::do_all_reduce(void*, std::int64_t, CommDType, ReduceOp) {}

void LocalCommunicator::do_all_gather(const void* send, void* recv, std::int64_t count, CommDType type) {
  if (send != recv) std::memmove(recv, send, static_cast<std::size_t>(count) * comm_dtype_size(type));
}

void LocalCommunicator::do_reduce_scatter(const void* send, void* recv, std::int64_t count, CommDType type, ReduceOp) {
  if (send != recv) std::memmove(recv, send, static_cast<std::size_t>(count) * comm_dtype_size(type));
}

void LocalCommunicator::do_broadcast(void*, std::int64_t, CommDType, int) {}

// The base class refuses a peer equal to the own rank, and rank 0 is the only one: never reached.
void LocalCommunicator::do_send(const void*, std::int64_t, CommDType, int peer, Tag) {
  ADAPT_CHECK(false, "send to peer {} on a single-rank group", peer);
}

void LocalCommunicator::do_recv(void*, std::int64_t, CommDType, int peer, Tag) {
  ADAPT_CHECK(false, "recv from peer {} on a single-rank group", peer);
}

void LocalCommunicator::do_send_recv(const void*, std::int64_t, int send_peer, Tag, void*, std::int64_t, int, Tag,
                                     CommDType) {
  ADAPT_CHECK(false, "send_recv with peer {} on a single-rank group", send_peer);
}

void LocalCommunicator::do_barrier() {}

std::unique_ptr<Communicator> LocalCommunicator::do_split(int, int, const std::string& name) {
  return std::make_unique<LocalCommunicator>(name, options());
}

}  // namespace adapt::comm
