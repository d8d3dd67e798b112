#include "comm/mpi_communicator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "comm/comm_kind.h"
#include "core/error.h"

namespace adapt::comm {

namespace {

MPI_Datatype mpi_type(CommDType t) {
  switch (t) {
    case CommDType::F32: return MPI_FLOAT;
    case CommDType::F64: return MPI_DOUBLE;
    case CommDType::BF16: return MPI_UINT16_T;  // moved as bits; MPI cannot reduce them
    case CommDType::F16: return MPI_UINT16_T;
    case CommDType::I32: return MPI_INT32_T;
    case CommDType::I64: return MPI_INT64_T;
    case CommDType::U8: return MPI_UINT8_T;
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op, CommDType t, Collective c, const std::string& group) {
  ADAPT_REQUIRE(t == CommDType::F32 || t == CommDType::F64 || t == CommDType::I32 || t == CommDType::I64,
                UnsupportedError,
                "{} on group {}: MPI cannot reduce {} elements; reduce f32, f64, i32 or i64 (widen "
                "bf16/f16 to f32 first)",
                collective_name(c), group, comm_dtype_name(t));
  return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX;
}

char* at(void* p, std::int64_t elems, CommDType t) {
  return static_cast<char*>(p) + elems * static_cast<std::int64_t>(comm_dtype_size(t));
}
const char* at(const void* p, std::int64_t elems, CommDType t) {
  return static_cast<const char*>(p) + elems * static_cast<std::int64_t>(comm_dtype_size(t));
}

// The host side of one buffer of an MPI call. A host buffer is used as it is (no copy, no
// allocation); a CUDA device buffer (backend::pointer_device) is staged: copied down first when it is
// an input, and copied back up by finish() when it is an output. The copies run after the work queued
// on the default stream, so a buffer a device op just wrote is complete.
class HostStage {
 public:
  HostStage(const void* buf, std::int64_t count, CommDType type, bool input)
      : user_(const_cast<void*>(buf)), bytes_(static_cast<std::size_t>(count) * comm_dtype_size(type)) {
    if (count == 0 || backend::pointer_device(buf) < 0) {
      host_ = user_;
      return;
    }
    staged_.resize(bytes_);
    host_ = staged_.data();
    if (input) backend::copy_bytes(host_, buf, bytes_);
  }
  void* get() const { return host_; }
  /// Copies an output back to its device buffer (nothing for a host buffer).
  void finish() const {
    if (host_ != user_) backend::copy_bytes(user_, host_, bytes_);
  }

 private:
  void* user_;
  void* host_ = nullptr;
  std::size_t bytes_;
  std::vector<char> staged_;
};

}  // namespace

bool mpi_stages_buffer(const void* buf) { return backend::pointer_device(buf) >= 0; }

std::unique_ptr<MpiCommunicator> MpiCommunicator::world(const CommOptions& options) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  ADAPT_REQUIRE(initialized && !finalized, CommError,
                "MpiCommunicator::world: MPI is not initialised (or already "
                "finalised); call MPI_Init first");
  MPI_Comm dup = MPI_COMM_NULL;
  const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  ADAPT_REQUIRE(rc == MPI_SUCCESS, CommError, "MPI_Comm_dup(MPI_COMM_WORLD) failed with code {}", rc);
  return std::make_unique<MpiCommunicator>(dup, "world", options);
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options)
    : Communicator(std::move(name), options), comm_(comm) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

namespace {
const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
  }
  return "an unknown level";
}
}  // namespace

int mpi_init(int* argc, char*** argv) {
  // Only the NCCL watchdog calls MPI (MPI_Abort) off the main thread: without NCCL, funneled suffices.
  const int wanted = nccl_built() ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED;
  int provided = MPI_THREAD_SINGLE;
  const int rc = MPI_Init_thread(argc, argv, wanted, &provided);
  ADAPT_REQUIRE(rc == MPI_SUCCESS, CommError,
                "MPI_Init_thread failed with code {}; check the launcher (srun --mpi, "
                "mpiexec) and that the MPI library matches the one adapt was built with",
                rc);
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    ADAPT_THROW(CommError,
                "MPI provides only {}; adapt needs MPI_THREAD_FUNNELED or more ({} for the NCCL watchdog): "
                "use an MPI library built with thread support",
                thread_level_name(provided), thread_level_name(MPI_THREAD_MULTIPLE));
  }
  return provided;
}

int mpi_thread_level() {
  int initialized = 0, finalized = 0, level = MPI_THREAD_SINGLE;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Query_thread(&level);
  return level;
}

void comm_abort_job(const std::string& message) {
  // The first failure ends the job, whichever thread (the host's, an NCCL watchdog) and communicator
  // saw it; a failure seen meanwhile waits for that to end the process.
  static std::atomic_flag ending = ATOMIC_FLAG_INIT;
  if (ending.test_and_set()) {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  int main_thread = 1;
  if (initialized && !finalized) MPI_Is_thread_main(&main_thread);
  const int level = mpi_thread_level();  // however MPI was started
  std::fprintf(stderr, "%s\n", message.c_str());
  if (!main_thread && level < MPI_THREAD_MULTIPLE) {
    std::fprintf(stderr,
                 "(ending the job from a helper thread, where MPI provides %s: this MPI does not promise that "
                 "MPI_Abort works there; should the job not end, cancel it)\n",
                 thread_level_name(level));
  }
  std::fflush(stderr);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, static_cast<int>(ExitCode::Comm));
  std::abort();  // without MPI, or should MPI_Abort ever return
}

void MpiCommunicator::check(int rc, Collective c, const char* call, std::int64_t call_seq) const {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  comm_abort_job(fmt::format("rank {}: {} failed in group {} (call #{}): {}: {}", world_rank_, collective_name(c),
                             name(), call_seq < 0 ? seq() : call_seq, call,
                             std::string(text, static_cast<std::size_t>(len))));
}

void MpiCommunicator::wait(MPI_Request& req, Collective c, PollClock::time_point until, std::int64_t call_seq) const {
  PollBackoff backoff;
  for (;;) {
    int done = 0;
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), c, "MPI_Test", call_seq);
    if (done) return;
    if (PollClock::now() > until) {
      comm_abort_job(
          comm_timeout_message(world_rank_, c, options().timeout_s, name(), call_seq < 0 ? seq() : call_seq));
    }
    backoff.pause();
  }
}

void MpiCommunicator::run_chunked(Collective c, const char* call, std::int64_t count, std::int64_t chunk,
                                  const std::function<int(std::int64_t, int, MPI_Request*)>& post,
                                  const std::function<void(std::int64_t, int)>& after) const {
  const auto until = poll_deadline(options().timeout_s);
  for (std::int64_t off = 0; off < count; off += chunk) {
    const int n = static_cast<int>(std::min(chunk, count - off));
    MPI_Request req;
    check(post(off, n, &req), c, call);
    wait(req, c, until);
    if (after) after(off, n);
  }
}

std::int64_t MpiCommunicator::chunk_elems(CommDType type) const {
  constexpr std::int64_t kMaxBytesPerCall = std::int64_t{1} << 30;
  return std::min(options().max_elems_per_call, kMaxBytesPerCall / static_cast<std::int64_t>(comm_dtype_size(type)));
}

void MpiCommunicator::do_all_reduce(void* user_buf, std::int64_t count, CommDType type, ReduceOp op) {
  const MPI_Op mop = mpi_op(op, type, Collective::AllReduce, name());
  const HostStage stage(user_buf, count, type, /*input=*/true);
  void* buf = stage.get();
  run_chunked(Collective::AllReduce, "MPI_Iallreduce", count, chunk_elems(type),
              [&](std::int64_t off, int n, MPI_Request* req) {
                return MPI_Iallreduce(MPI_IN_PLACE, at(buf, off, type), n, mpi_type(type), mop, comm_, req);
              });
  stage.finish();
}

// The chunks of one started all-reduce, all posted at once (MPI lets several non-blocking collectives
// of a communicator be in flight; every rank posts them in the same order) and completed in wait()
// with the blocking path's checks: one deadline, counted from the start, names the call it belongs to.
struct MpiCommunicator::AllReduceRequest final : CommRequest::State {
  const MpiCommunicator* comm = nullptr;
  std::vector<MPI_Request> reqs;
  PollClock::time_point until;
  std::int64_t seq = 0;

  void wait() override {
    for (MPI_Request& r : reqs) comm->wait(r, Collective::AllReduce, until, seq);
  }
};

CommRequest MpiCommunicator::do_all_reduce_start(void* buf, std::int64_t count, CommDType type, ReduceOp op) {
  const MPI_Op mop = mpi_op(op, type, Collective::AllReduce, name());
  if (mpi_stages_buffer(buf)) {
    do_all_reduce(buf, count, type, op);
    return {};
  }
  auto state = std::make_unique<AllReduceRequest>();
  state->comm = this;
  state->until = poll_deadline(options().timeout_s);
  state->seq = seq();
  const std::int64_t chunk = chunk_elems(type);
  state->reqs.reserve(static_cast<std::size_t>((count + chunk - 1) / chunk));
  for (std::int64_t off = 0; off < count; off += chunk) {
    const int n = static_cast<int>(std::min(chunk, count - off));
    MPI_Request& req = state->reqs.emplace_back(MPI_REQUEST_NULL);
    check(MPI_Iallreduce(MPI_IN_PLACE, at(buf, off, type), n, mpi_type(type), mop, comm_, &req), Collective::AllReduce,
          "MPI_Iallreduce");
  }
  return CommRequest(std::move(state));
}

// One call of the gather and scatter families moves chunk × size elements, so their chunk is the limit
// over the group size. Chunked, each rank's part of a chunk is staged contiguously.
void MpiCommunicator::do_all_gather(const void* user_send, void* user_recv, std::int64_t count, CommDType type) {
  const HostStage send_stage(user_send, count, type, /*input=*/true);
  const HostStage recv_stage(user_recv, count * size_, type, /*input=*/false);
  const void* send = send_stage.get();
  void* recv = recv_stage.get();
  const std::int64_t chunk = std::max<std::int64_t>(1, chunk_elems(type) / size_);
  const bool direct = count <= chunk;
  const std::size_t esize = comm_dtype_size(type);
  std::vector<char> staged(direct ? 0 : static_cast<std::size_t>(chunk * size_) * esize);
  run_chunked(
      Collective::AllGather, "MPI_Iallgather", count, chunk,
      [&](std::int64_t off, int n, MPI_Request* req) {
        return MPI_Iallgather(at(send, off, type), n, mpi_type(type), direct ? recv : staged.data(), n, mpi_type(type),
                              comm_, req);
      },
      [&](std::int64_t off, int n) {
        if (direct) return;
        for (int r = 0; r < size_; ++r) {
          std::memcpy(at(recv, r * count + off, type), staged.data() + static_cast<std::size_t>(r) * n * esize,
                      static_cast<std::size_t>(n) * esize);
        }
      });
  recv_stage.finish();
}

void MpiCommunicator::do_reduce_scatter(const void* user_send, void* user_recv, std::int64_t count, CommDType type,
                                        ReduceOp op) {
  const MPI_Op mop = mpi_op(op, type, Collective::ReduceScatter, name());
  const HostStage send_stage(user_send, count * size_, type, /*input=*/true);
  const HostStage recv_stage(user_recv, count, type, /*input=*/false);
  const void* send = send_stage.get();
  void* recv = recv_stage.get();
  const std::int64_t chunk = std::max<std::int64_t>(1, chunk_elems(type) / size_);
  const bool direct = count <= chunk;
  const std::size_t esize = comm_dtype_size(type);
  std::vector<char> staged(direct ? 0 : static_cast<std::size_t>(chunk * size_) * esize);
  run_chunked(Collective::ReduceScatter, "MPI_Ireduce_scatter_block", count, chunk,
              [&](std::int64_t off, int n, MPI_Request* req) {
                if (direct) return MPI_Ireduce_scatter_block(send, recv, n, mpi_type(type), mop, comm_, req);
                for (int r = 0; r < size_; ++r) {
                  std::memcpy(staged.data() + static_cast<std::size_t>(r) * n * esize, at(send, r * count + off, type),
                              static_cast<std::size_t>(n) * esize);
                }
                return MPI_Ireduce_scatter_block(staged.data(), at(recv, off, type), n, mpi_type(type), mop, comm_,
                                                 req);
              });
  recv_stage.finish();
}

void MpiCommunicator::do_broadcast(void* user_buf, std::int64_t count, CommDType type, int root) {
  const HostStage stage(user_buf, count, type, /*input=*/rank_ == root);
  void* buf = stage.get();
  run_chunked(Collective::Broadcast, "MPI_Ibcast", count, chunk_elems(type),
              [&](std::int64_t off, int n, MPI_Request* req) {
                return MPI_Ibcast(at(buf, off, type), n, mpi_type(type), root, comm_, req);
              });
  if (rank_ != root) stage.finish();
}

// Chunks of one message travel in order: MPI does not overtake messages with the same (peer, tag, comm).
void MpiCommunicator::do_send(const void* user_buf, std::int64_t count, CommDType type, int peer, Tag tag) {
  const HostStage stage(user_buf, count, type, /*input=*/true);
  const void* buf = stage.get();
  run_chunked(Collective::Send, "MPI_Isend", count, chunk_elems(type), [&](std::int64_t off, int n, MPI_Request* req) {
    return MPI_Isend(at(buf, off, type), n, mpi_type(type), peer, static_cast<int>(tag), comm_, req);
  });
}

void MpiCommunicator::do_recv(void* user_buf, std::int64_t count, CommDType type, int peer, Tag tag) {
  const HostStage stage(user_buf, count, type, /*input=*/false);
  void* buf = stage.get();
  run_chunked(Collective::Recv, "MPI_Irecv", count, chunk_elems(type), [&](std::int64_t off, int n, MPI_Request* req) {
    return MPI_Irecv(at(buf, off, type), n, mpi_type(type), peer, static_cast<int>(tag), comm_, req);
  });
  stage.finish();
}

// Chunk i of the message out and chunk i of the message in are in flight together; a side with fewer
// chunks posts nothing once it is done.
void MpiCommunicator::do_send_recv(const void* user_send, std::int64_t send_count, int send_peer, Tag send_tag,
                                   void* user_recv, std::int64_t recv_count, int recv_peer, Tag recv_tag,
                                   CommDType type) {
  const HostStage send_stage(user_send, send_count, type, /*input=*/true);
  const HostStage recv_stage(user_recv, recv_count, type, /*input=*/false);
  const void* send = send_stage.get();
  void* recv = recv_stage.get();
  const auto until = poll_deadline(options().timeout_s);
  const std::int64_t chunk = chunk_elems(type);
  for (std::int64_t off = 0; off < std::max(send_count, recv_count); off += chunk) {
    MPI_Request reqs[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    if (off < send_count) {
      const int n = static_cast<int>(std::min(chunk, send_count - off));
      check(MPI_Isend(at(send, off, type), n, mpi_type(type), send_peer, static_cast<int>(send_tag), comm_, &reqs[0]),
            Collective::SendRecv, "MPI_Isend");
    }
    if (off < recv_count) {
      const int n = static_cast<int>(std::min(chunk, recv_count - off));
      check(MPI_Irecv(at(recv, off, type), n, mpi_type(type), recv_peer, static_cast<int>(recv_tag), comm_, &reqs[1]),
            Collective::SendRecv, "MPI_Irecv");
    }
    for (MPI_Request& r : reqs) {
      if (r != MPI_REQUEST_NULL) wait(r, Collective::SendRecv, until);
    }
  }
  recv_stage.finish();
}

void MpiCommunicator::do_barrier() {
  MPI_Request req;
  check(MPI_Ibarrier(comm_, &req), Collective::Barrier, "MPI_Ibarrier");
  wait(req, Collective::Barrier, poll_deadline(options().timeout_s));
}

std::unique_ptr<Communicator> MpiCommunicator::do_split(int color, int key, const std::string& new_name) {
  // MPI_Comm_split blocks without a timeout; a timed gather first proves every rank has arrived.
  const int mine[2] = {color, key};
  std::vector<int> all(static_cast<std::size_t>(2 * size_));
  MPI_Request req;
  check(MPI_Iallgather(mine, 2, MPI_INT, all.data(), 2, MPI_INT, comm_, &req), Collective::Split, "MPI_Iallgather");
  wait(req, Collective::Split, poll_deadline(options().timeout_s));
  MPI_Comm sub = MPI_COMM_NULL;
  check(MPI_Comm_split(comm_, color, key, &sub), Collective::Split, "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub, new_name, options());
}

}  // namespace adapt::comm
