// A tp group's rank as AdapterSet::shard_for_tp and the adapters' hook see it: a rank and a size, and
// no traffic. Sharding an adapter moves nothing, and neither does a hook's backward, so any collective
// on it is a bug: it throws InternalError with the message given.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "comm/communicator.h"
#include "core/error.h"

namespace adapt::test {

class RankOnly final : public comm::Communicator {
 public:
  RankOnly(int rank, int size, std::string why = "this code must not communicate")
      : Communicator("tp", {}), rank_(rank), size_(size), why_(std::move(why)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }

 protected:
  [[noreturn]] void no() const { ADAPT_THROW(InternalError, "{}", why_); }
  void do_all_reduce(void*, std::int64_t, comm::CommDType, comm::ReduceOp) override { no(); }
  void do_all_gather(const void*, void*, std::int64_t, comm::CommDType) override { no(); }
  void do_reduce_scatter(const void*, void*, std::int64_t, comm::CommDType, comm::ReduceOp) override { no(); }
  void do_broadcast(void*, std::int64_t, comm::CommDType, int) override { no(); }
  void do_send(const void*, std::int64_t, comm::CommDType, int, comm::Tag) override { no(); }
  void do_recv(void*, std::int64_t, comm::CommDType, int, comm::Tag) override { no(); }
  void do_send_recv(const void*, std::int64_t, int, comm::Tag, void*, std::int64_t, int, comm::Tag,
                    comm::CommDType) override {
    no();
  }
  void do_barrier() override { no(); }
  std::unique_ptr<comm::Communicator> do_split(int, int, const std::string&) override { no(); }

 private:
  int rank_, size_;
  std::string why_;
};

}  // namespace adapt::test
