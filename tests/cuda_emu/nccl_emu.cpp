// NCCL for an ADAPT_CUDA=EMU build (include/nccl.h): communicators between the processes of one host,
// over a POSIX shared-memory segment per communicator, named after the unique id.
//
// On a blocking communicator every call completes before it returns, as the emulated streams do: a
// collective waits for the other ranks of its communicator. A non-blocking one (config.blocking = 0)
// runs its calls in order on a thread of its own and answers ncclInProgress, to the call and to
// ncclCommGetAsyncError until they are done (the data is in place by then). With cuda_emu's deferred
// streams (CUDA_EMU_STREAMS=deferred) a call is instead queued on its stream: the stream hands it to the
// communicator's thread when it gets there and waits for it, and the call is "in progress" only until
// queued, as NCCL's. What real NCCL would leave to a hang or to corrupt data, the emulation reports with
// NCCL's error codes and a message in ncclGetLastError:
//   - ranks that call different collectives, counts, types, operators or roots at the same point;
//   - a send and its receive that disagree on the count or the type;
//   - buffers that are not device memory (cudaMalloc) or pinned host memory (cudaHostAlloc);
//   - two ranks of one communicator on one device ("Duplicate GPU detected"), a unique id that was not
//     made by ncclGetUniqueId, ranks that disagree on the size;
//   - a peer that called ncclCommAbort, or whose process exited (ncclRemoteError / ncclSystemError).
// A rank that waits longer than CUDA_EMU_NCCL_TIMEOUT_S (default 300 s) for its peers prints where it
// waits and aborts the process: the program deadlocked.
#include "nccl.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dtype/dtype.h"

namespace {

constexpr char kIdMagic[] = "cuda_emu nccl id ";
constexpr int kMaxRanks = 64;
constexpr std::size_t kSlotBytes = std::size_t(1) << 20;   // per rank: one chunk of a collective
constexpr std::size_t kBoxBytes = std::size_t(256) << 10;  // per ordered pair of ranks: send/recv bytes

static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::int32_t>::is_always_lock_free,
              "the shared segment needs lock-free atomics");

/// What a rank calls: every rank of a communicator must call the same at the same point.
struct CallDesc {
  std::int32_t kind = 0;  // Kind
  std::int32_t type = 0;
  std::int32_t op = 0;
  std::int32_t root = 0;
  std::uint64_t count = 0;
};

enum Kind : std::int32_t { kAllReduce = 1, kBroadcast, kReduceScatter, kAllGather, kSplit };

const char* kind_name(std::int32_t k) {
  switch (k) {
    case kAllReduce: return "ncclAllReduce";
    case kBroadcast: return "ncclBroadcast";
    case kReduceScatter: return "ncclReduceScatter";
    case kAllGather: return "ncclAllGather";
    case kSplit: return "ncclCommSplit";
  }
  return "?";
}

/// A ring of bytes from one rank to another (the bytes follow the header block).
struct alignas(64) Box {
  std::atomic<std::uint64_t> head;  // bytes written, ever
  std::atomic<std::uint64_t> tail;  // bytes read, ever
};

/// The start of the segment. A new segment is all zero bytes, which is the state before anyone joined.
struct Header {
  std::atomic<std::int32_t> nranks;
  std::atomic<std::int32_t> joined;
  std::atomic<std::int32_t> aborted;   // 1 + the rank that called ncclCommAbort
  std::atomic<std::uint64_t> arrived;  // barrier arrivals, ever
  std::atomic<std::int32_t> pid[kMaxRanks];
  std::atomic<std::int32_t> device[kMaxRanks];
  CallDesc call[kMaxRanks];
};

struct Layout {
  std::size_t boxes, slots, box_data, total;
  explicit Layout(int n) {
    const auto un = static_cast<std::size_t>(n);
    boxes = (sizeof(Header) + 4095) / 4096 * 4096;
    slots = boxes + (un * un * sizeof(Box) + 4095) / 4096 * 4096;
    box_data = slots + un * kSlotBytes;
    total = box_data + un * un * kBoxBytes;
  }
};

std::size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
  }
}

double timeout_s() {
  static const double t = [] {
    const char* env = std::getenv("CUDA_EMU_NCCL_TIMEOUT_S");
    const double v = env ? std::atof(env) : 0.0;
    return v > 0 ? v : 300.0;
  }();
  return t;
}

}  // namespace

struct ncclComm;
namespace {
std::mutex g_live_mutex;
std::set<ncclComm*> g_live;  // communicators not yet destroyed: a call queued on a deferred stream checks
}  // namespace

struct ncclComm {
  std::string name;  // of the shared-memory segment
  int rank = 0;
  int nranks = 0;
  int device = 0;
  bool blocking = true;
  void* base = nullptr;
  std::size_t bytes = 0;
  Header* h = nullptr;
  Box* boxes = nullptr;
  char* slots = nullptr;
  char* box_data = nullptr;
  std::uint64_t barriers = 0;  // barriers this rank has passed
  int splits = 0;
  std::atomic<ncclResult_t> async{ncclSuccess};
  bool in_progress = false;  // non-blocking: the next ncclCommGetAsyncError answers ncclInProgress
  std::string last_error;    // written before `async`

  // A non-blocking communicator runs its collectives and sends on a thread of its own, in call order, as
  // a real one runs them on a stream while the host goes on: ncclCommGetAsyncError answers
  // ncclInProgress until they are done, and a peer that never joins leaves the caller polling (and its
  // own timeout to fire), not stuck in the call.
  std::mutex mu;
  std::condition_variable cv;
  struct Queued {
    std::function<ncclResult_t()> f;
    std::function<void()> finished;  // deferred streams: lets the stream go on, whether f ran or not
  };
  std::deque<Queued> queue;
  bool running = false;
  bool stop = false;
  std::thread worker;

  bool idle() {
    std::lock_guard<std::mutex> lock(mu);
    return queue.empty() && !running;
  }
  void wait_idle() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return queue.empty() && !running; });
  }
  void work() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty()) return;
      Queued q = std::move(queue.front());
      queue.pop_front();
      running = true;
      lock.unlock();
      const ncclResult_t rc = async.load() == ncclSuccess ? q.f() : async.load();  // after an error, nothing runs
      if (q.finished) q.finished();
      lock.lock();
      running = false;
      if (rc != ncclSuccess && async.load() == ncclSuccess) async.store(rc);
      cv.notify_all();
    }
  }
  void join() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    if (worker.joinable()) worker.join();
  }

  char* slot(int r) const { return slots + static_cast<std::size_t>(r) * kSlotBytes; }
  Box& box(int from, int to) const { return boxes[from * nranks + to]; }
  char* box_bytes(int from, int to) const {
    return box_data + static_cast<std::size_t>(from * nranks + to) * kBoxBytes;
  }

  ~ncclComm() {
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      g_live.erase(this);
    }
    join();
    if (base) munmap(base, bytes);
  }
};

namespace {

thread_local std::string g_last_error;  // of calls without a communicator

ncclResult_t fail(ncclComm* c, ncclResult_t rc, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
ncclResult_t fail(ncclComm* c, ncclResult_t rc, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  (c ? c->last_error : g_last_error) = buf;
  if (c && (rc == ncclRemoteError || rc == ncclSystemError || rc == ncclInvalidUsage)) c->async.store(rc);
  return rc;
}

/// The result of a call that succeeded: ncclInProgress on a non-blocking communicator.
ncclResult_t done(ncclComm* c) {
  if (c->blocking) return ncclSuccess;
  c->in_progress = true;
  return ncclInProgress;
}

/// Waits until `ready()`: spins, then sleeps. Fails when a peer aborted or exited; aborts the process,
/// saying where it waited, after timeout_s() (a deadlock).
template <typename F>
ncclResult_t wait_until(ncclComm* c, const char* what, F ready) {
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t spins = 0; !ready(); ++spins) {
    if (const int a = c->h->aborted.load(std::memory_order_acquire)) {
      return fail(c, ncclRemoteError, "%s: rank %d of this communicator called ncclCommAbort", what, a - 1);
    }
    if (spins % 1024 == 1023) {
      for (int r = 0; r < c->nranks; ++r) {
        const int pid = c->h->pid[r].load(std::memory_order_relaxed);
        if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
          return fail(c, ncclSystemError, "%s: rank %d (pid %d) of this communicator exited", what, r, pid);
        }
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_s()) {
        std::fprintf(stderr,
                     "cuda_emu nccl: rank %d of %d (pid %d) waited %.0f s in %s for its peers: deadlock (set "
                     "CUDA_EMU_NCCL_TIMEOUT_S to wait longer)\n",
                     c->rank, c->nranks, static_cast<int>(getpid()), waited, what);
        std::abort();
      }
    }
    if (spins < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  return ncclSuccess;
}

ncclResult_t barrier(ncclComm* c, const char* what) {
  const std::uint64_t target = ++c->barriers * static_cast<std::uint64_t>(c->nranks);
  c->h->arrived.fetch_add(1, std::memory_order_acq_rel);
  return wait_until(c, what, [&] { return c->h->arrived.load(std::memory_order_acquire) >= target; });
}

std::string segment_name(const ncclUniqueId& id) {
  return "/adapt_nccl_emu_" + std::string(id.internal + sizeof kIdMagic - 1, 32);
}

ncclResult_t init_rank(ncclComm_t* out, int nranks, const std::string& name, int rank, bool blocking) {
  *out = nullptr;
  if (nranks < 1 || nranks > kMaxRanks) {
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: nranks %d (the emulation takes 1 to %d)", nranks,
                kMaxRanks);
  }
  if (rank < 0 || rank >= nranks) {
    return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
  }
  const Layout layout(nranks);
  const int fd = shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
  if (fd < 0) return fail(nullptr, ncclSystemError, "shm_open(%s): %s", name.c_str(), std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 ||
      (static_cast<std::size_t>(st.st_size) < layout.total && ftruncate(fd, static_cast<off_t>(layout.total)) != 0)) {
    const int e = errno;
    close(fd);
    return fail(nullptr, ncclSystemError, "sizing %s to %zu bytes: %s", name.c_str(), layout.total, std::strerror(e));
  }
  void* base = mmap(nullptr, layout.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) return fail(nullptr, ncclSystemError, "mmap(%s): %s", name.c_str(), std::strerror(errno));

  auto c = new ncclComm;
  c->name = name;
  c->rank = rank;
  c->nranks = nranks;
  c->device = cuda_emu::rt_get_device();
  c->blocking = blocking;
  c->base = base;
  c->bytes = layout.total;
  c->h = static_cast<Header*>(base);
  c->boxes = reinterpret_cast<Box*>(static_cast<char*>(base) + layout.boxes);
  c->slots = static_cast<char*>(base) + layout.slots;
  c->box_data = static_cast<char*>(base) + layout.box_data;
  auto give_up = [&](ncclResult_t rc) {
    g_last_error = c->last_error;
    delete c;
    return rc;
  };

  int expected = 0;
  if (!c->h->nranks.compare_exchange_strong(expected, nranks) && expected != nranks) {
    fail(c, ncclInvalidArgument, "ncclCommInitRank: rank %d says the communicator has %d ranks, another rank said %d",
         rank, nranks, expected);
    return give_up(ncclInvalidArgument);
  }
  int no_pid = 0;
  if (!c->h->pid[rank].compare_exchange_strong(no_pid, static_cast<int>(getpid()))) {
    fail(c, ncclInvalidUsage, "ncclCommInitRank: rank %d joined twice (pids %d and %d)", rank, no_pid,
         static_cast<int>(getpid()));
    return give_up(ncclInvalidUsage);
  }
  c->h->device[rank].store(c->device + 1);
  c->h->joined.fetch_add(1, std::memory_order_acq_rel);
  if (wait_until(c, "ncclCommInitRank (waiting for every rank to join)",
                 [&] { return c->h->joined.load(std::memory_order_acquire) >= nranks; }) != ncclSuccess) {
    return give_up(c->async);
  }
  if (rank == 0) shm_unlink(name.c_str());  // every rank has it mapped
  for (int r = 0; r < nranks; ++r) {
    if (r != rank && c->h->device[r].load() == c->device + 1) {
      fail(c, ncclInvalidUsage, "Duplicate GPU detected : rank %d and rank %d both on CUDA device %d", rank, r,
           c->device);
      return give_up(ncclInvalidUsage);
    }
  }
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live.insert(c);
  }
  *out = c;
  return done(c);
}

/// Every rank states its call; all must agree. Then the call's chunks may use the slots.
ncclResult_t agree(ncclComm* c, const CallDesc& mine) {
  c->h->call[c->rank] = mine;
  if (const ncclResult_t rc = barrier(c, kind_name(mine.kind)); rc != ncclSuccess) return rc;
  for (int r = 0; r < c->nranks; ++r) {
    const CallDesc& d = c->h->call[r];
    if (d.kind == mine.kind && d.type == mine.type && d.op == mine.op && d.root == mine.root && d.count == mine.count)
      continue;
    return fail(c, ncclInvalidUsage,
                "ranks disagree: rank %d calls %s (count %llu, type %d, op %d, root %d), rank %d calls %s (count "
                "%llu, type %d, op %d, root %d)",
                c->rank, kind_name(mine.kind), static_cast<unsigned long long>(mine.count), mine.type, mine.op,
                mine.root, r, kind_name(d.kind), static_cast<unsigned long long>(d.count), d.type, d.op, d.root);
  }
  // A call states the next one only after a barrier of its own, which an empty collective lacks.
  if (mine.count == 0 && mine.kind != kSplit) return barrier(c, kind_name(mine.kind));
  return ncclSuccess;
}

ncclResult_t check_buffer(ncclComm* c, const char* call, const char* which, const void* p, std::size_t bytes) {
  if (bytes == 0 || cuda_emu::rt_device_accessible(p, bytes)) return ncclSuccess;
  return fail(c, ncclInvalidArgument, "%s: %s %p (%zu bytes) is not device memory (cudaMalloc) or pinned host memory",
              call, which, p, bytes);
}

/// Both buffers of a collective (a size of 0 is not checked).
ncclResult_t check_buffers(ncclComm* c, const char* call, const void* send, std::size_t send_bytes, const void* recv,
                           std::size_t recv_bytes) {
  if (const ncclResult_t rc = check_buffer(c, call, "sendbuff", send, send_bytes); rc != ncclSuccess) return rc;
  return check_buffer(c, call, "recvbuff", recv, recv_bytes);
}

/// A collective in chunks of `per` elements of `call.count`, after the ranks agree on it: each rank
/// puts its part of a chunk in the slots (`stage(off, n)`), all meet, each takes what it needs
/// (`take(off, n)`), and all meet again before the slots are reused.
template <typename Stage, typename Take>
ncclResult_t chunked(ncclComm* c, const CallDesc& call, std::size_t per, Stage stage, Take take) {
  if (const ncclResult_t rc = agree(c, call); rc != ncclSuccess) return rc;
  const char* what = kind_name(call.kind);
  for (std::size_t off = 0; off < call.count; off += per) {
    const std::size_t n = std::min<std::size_t>(per, call.count - off);
    stage(off, n);
    if (const ncclResult_t rc = barrier(c, what); rc != ncclSuccess) return rc;
    take(off, n);
    if (const ncclResult_t rc = barrier(c, what); rc != ncclSuccess) return rc;
  }
  return ncclSuccess;
}

template <typename T>
T apply(ncclRedOp_t op, T a, T b) {
  switch (op) {
    case ncclProd: return a * b;
    case ncclMax: return std::max(a, b);
    case ncclMin: return std::min(a, b);
    default: return a + b;
  }
}

/// out[i] = in[0][i] op in[1][i] op ... in rank order (each step rounded to T, as a ring rounds per hop).
template <typename T>
void reduce_typed(void* out, const std::vector<const char*>& in, std::size_t n, ncclRedOp_t op) {
  for (std::size_t i = 0; i < n; ++i) {
    T acc;
    std::memcpy(&acc, in[0] + i * sizeof(T), sizeof(T));
    for (std::size_t r = 1; r < in.size(); ++r) {
      T x;
      std::memcpy(&x, in[r] + i * sizeof(T), sizeof(T));
      acc = apply(op, acc, x);
    }
    if (op == ncclAvg) acc = static_cast<T>(acc / static_cast<T>(in.size()));
    std::memcpy(static_cast<char*>(out) + i * sizeof(T), &acc, sizeof(T));
  }
}

template <float (*ToF32)(std::uint16_t), std::uint16_t (*FromF32)(float)>
void reduce_half(void* out, const std::vector<const char*>& in, std::size_t n, ncclRedOp_t op) {
  for (std::size_t i = 0; i < n; ++i) {
    auto load = [&](std::size_t r) {
      std::uint16_t b;
      std::memcpy(&b, in[r] + i * 2, 2);
      return ToF32(b);
    };
    float acc = load(0);
    for (std::size_t r = 1; r < in.size(); ++r) acc = ToF32(FromF32(apply(op, acc, load(r))));
    if (op == ncclAvg) acc /= static_cast<float>(in.size());
    const std::uint16_t b = FromF32(acc);
    std::memcpy(static_cast<char*>(out) + i * 2, &b, 2);
  }
}

float f16_in(std::uint16_t h) { return adapt::f16_to_f32(h); }
std::uint16_t f16_out(float f) { return adapt::f32_to_f16(f); }

void reduce(void* out, const std::vector<const char*>& in, std::size_t n, ncclDataType_t type, ncclRedOp_t op) {
  switch (type) {
    case ncclInt8: reduce_typed<std::int8_t>(out, in, n, op); break;
    case ncclUint8: reduce_typed<std::uint8_t>(out, in, n, op); break;
    case ncclInt32: reduce_typed<std::int32_t>(out, in, n, op); break;
    case ncclUint32: reduce_typed<std::uint32_t>(out, in, n, op); break;
    case ncclInt64: reduce_typed<std::int64_t>(out, in, n, op); break;
    case ncclUint64: reduce_typed<std::uint64_t>(out, in, n, op); break;
    case ncclFloat32: reduce_typed<float>(out, in, n, op); break;
    case ncclFloat64: reduce_typed<double>(out, in, n, op); break;
    case ncclFloat16: reduce_half<f16_in, f16_out>(out, in, n, op); break;
    case ncclBfloat16: reduce_half<adapt::bf16_to_f32, adapt::f32_to_bf16>(out, in, n, op); break;
    default: break;
  }
}

ncclResult_t check_comm(ncclComm* c, const char* call) {
  if (c == nullptr) return fail(nullptr, ncclInvalidArgument, "%s: comm is NULL", call);
  if (const ncclResult_t failed = c->async.load(); failed != ncclSuccess) {
    return fail(c, failed, "%s on a communicator that failed before: %s", call, c->last_error.c_str());
  }
  return ncclSuccess;
}

ncclResult_t check_args(ncclComm* c, const char* call, ncclDataType_t type, ncclRedOp_t op) {
  if (const ncclResult_t rc = check_comm(c, call); rc != ncclSuccess) return rc;
  if (type_size(type) == 0) return fail(c, ncclInvalidArgument, "%s: unknown datatype %d", call, type);
  if (op < ncclSum || op >= ncclNumOps) return fail(c, ncclInvalidArgument, "%s: unknown operator %d", call, op);
  return ncclSuccess;
}

// --- groups -------------------------------------------------------------------------------------------

/// A send or a receive: the bytes of a 16-byte header (count in bytes, datatype) and then the data.
struct P2p {
  ncclComm* comm = nullptr;
  bool send = false;
  int peer = 0;
  char* buf = nullptr;
  std::size_t bytes = 0;
  ncclDataType_t type = ncclUint8;
  std::size_t moved = 0;  // of 16 + bytes
  unsigned char head[16] = {};

  std::size_t total() const { return 16 + bytes; }
};

thread_local int g_group_depth = 0;
thread_local std::vector<std::function<ncclResult_t()>> g_group_collectives;
thread_local std::vector<ncclComm*> g_group_comms;  // of the collectives
thread_local std::vector<P2p> g_group_p2p;
thread_local cudaStream_t g_group_stream = nullptr;  // of the group's first call

/// Moves what it can of `p` through its box; fails on a header that does not match the receive.
ncclResult_t progress(P2p& p) {
  ncclComm* c = p.comm;
  const int from = p.send ? c->rank : p.peer, to = p.send ? p.peer : c->rank;
  Box& box = c->box(from, to);
  char* ring = c->box_bytes(from, to);
  const std::uint64_t head = box.head.load(std::memory_order_acquire), tail = box.tail.load(std::memory_order_acquire);
  std::size_t n = p.send ? kBoxBytes - static_cast<std::size_t>(head - tail) : static_cast<std::size_t>(head - tail);
  n = std::min(n, p.total() - p.moved);
  if (!p.send && p.moved < 16) n = std::min(n, 16 - p.moved);  // the header alone first, to check it
  std::uint64_t at = p.send ? head : tail;
  for (std::size_t k = 0; k < n;) {  // byte runs up to the ring's end
    const std::size_t off = static_cast<std::size_t>(at % kBoxBytes);
    const std::size_t run = std::min(n - k, kBoxBytes - off);
    const std::size_t v = p.moved + k;  // offset in the header-and-data stream
    for (std::size_t i = 0; i < run;) {
      const std::size_t vi = v + i;
      const std::size_t piece = vi < 16 ? std::min(run - i, 16 - vi) : run - i;
      unsigned char* mine = vi < 16 ? p.head + vi : reinterpret_cast<unsigned char*>(p.buf) + (vi - 16);
      if (p.send) {
        std::memcpy(ring + off + i, mine, piece);
      } else {
        std::memcpy(mine, ring + off + i, piece);
      }
      i += piece;
    }
    k += run;
    at += run;
  }
  if (p.send) {
    box.head.store(head + n, std::memory_order_release);
  } else {
    box.tail.store(tail + n, std::memory_order_release);
  }
  p.moved += n;
  if (!p.send && n > 0 && p.moved == 16) {
    std::uint64_t sent_bytes;
    std::int32_t sent_type;
    std::memcpy(&sent_bytes, p.head, 8);
    std::memcpy(&sent_type, p.head + 8, 4);
    if (sent_bytes != p.bytes || sent_type != p.type) {
      return fail(c, ncclInvalidUsage,
                  "ncclRecv on rank %d: rank %d sent %llu bytes of datatype %d, this receive takes %zu bytes of "
                  "datatype %d",
                  c->rank, p.peer, static_cast<unsigned long long>(sent_bytes), sent_type, p.bytes, p.type);
    }
  }
  return ncclSuccess;
}

/// Runs the sends and receives together until all are done (so a send and a receive between two ranks
/// in one group cannot wait on each other).
ncclResult_t run_p2p(std::vector<P2p>& ops) {
  if (ops.empty()) return ncclSuccess;
  const auto all_done = [&] {
    return std::all_of(ops.begin(), ops.end(), [](const P2p& p) { return p.moved == p.total(); });
  };
  ncclResult_t failed = ncclSuccess;
  ncclComm* c = ops.front().comm;
  const ncclResult_t rc = wait_until(c, ops.front().send ? "ncclSend" : "ncclRecv", [&] {
    for (P2p& p : ops) {
      if (p.moved == p.total()) continue;
      if (const ncclResult_t e = progress(p); e != ncclSuccess) {
        failed = e;
        return true;
      }
    }
    return all_done();
  });
  return failed != ncclSuccess ? failed : rc;
}

/// Queues `f` on the communicator's thread (started on first use); `finished` runs after it (or instead,
/// once the communicator has failed).
void to_worker(ncclComm* c, std::function<ncclResult_t()> f, std::function<void()> finished) {
  {
    std::lock_guard<std::mutex> lock(c->mu);
    if (!c->worker.joinable()) c->worker = std::thread([c] { c->work(); });
    c->queue.push_back({std::move(f), std::move(finished)});
  }
  c->cv.notify_all();
}

/// Runs `f` now on a blocking communicator; queues it on the communicator's thread otherwise. With
/// cuda_emu's deferred streams, `f` is a call on `stream`: it goes to the communicator's thread when the
/// stream reaches it, and the stream waits for it there, as a real NCCL kernel holds its stream.
ncclResult_t submit(ncclComm* c, cudaStream_t stream, std::function<ncclResult_t()> f) {
  if (cuda_emu::deferred_streams()) {
    cuda_emu::enqueue_external(stream, "nccl", [c, f = std::move(f)](std::function<void()> finish) mutable {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      if (!g_live.count(c)) return finish();  // destroyed or aborted before the stream got here
      to_worker(c, std::move(f), std::move(finish));
    });
    return done(c);
  }
  if (c->blocking) return f();
  to_worker(c, std::move(f), nullptr);
  return ncclInProgress;
}

ncclResult_t queue_p2p(bool send, const void* buf, std::size_t count, ncclDataType_t type, int peer, ncclComm* c,
                       cudaStream_t stream) {
  const char* call = send ? "ncclSend" : "ncclRecv";
  if (const ncclResult_t rc = check_args(c, call, type, ncclSum); rc != ncclSuccess) return rc;
  if (peer < 0 || peer >= c->nranks)
    return fail(c, ncclInvalidArgument, "%s: peer %d of %d ranks", call, peer, c->nranks);
  const std::size_t bytes = count * type_size(type);
  if (const ncclResult_t rc = check_buffer(c, call, send ? "sendbuff" : "recvbuff", buf, bytes); rc != ncclSuccess)
    return rc;
  P2p p;
  p.comm = c;
  p.send = send;
  p.peer = peer;
  p.buf = static_cast<char*>(const_cast<void*>(buf));
  p.bytes = bytes;
  p.type = type;
  const std::uint64_t b = bytes;
  const std::int32_t t = type;
  std::memcpy(p.head, &b, 8);
  std::memcpy(p.head + 8, &t, 4);
  if (g_group_depth > 0) {
    if (g_group_p2p.empty() && g_group_collectives.empty()) g_group_stream = stream;
    g_group_p2p.push_back(p);
    return ncclSuccess;
  }
  return submit(c, stream, [p]() mutable {
    std::vector<P2p> one{p};
    return run_p2p(one);
  });
}

/// Runs a collective (submit), or keeps it for ncclGroupEnd inside a group.
ncclResult_t run_or_queue(ncclComm* c, cudaStream_t stream, std::function<ncclResult_t()> f) {
  if (g_group_depth > 0) {
    if (g_group_p2p.empty() && g_group_collectives.empty()) g_group_stream = stream;
    g_group_collectives.push_back(std::move(f));
    g_group_comms.push_back(c);
    return ncclSuccess;
  }
  return submit(c, stream, std::move(f));
}

}  // namespace

// --- the API ------------------------------------------------------------------------------------------

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id) {
  *unique_id = ncclUniqueId{};
  std::memcpy(unique_id->internal, kIdMagic, sizeof kIdMagic - 1);
  std::random_device rd;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) unique_id->internal[sizeof kIdMagic - 1 + i] = kHex[rd() % 16];
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId comm_id, int rank,
                                    ncclConfig_t* config) {
  if (std::memcmp(comm_id.internal, kIdMagic, sizeof kIdMagic - 1) != 0) {
    *comm = nullptr;
    return fail(nullptr, ncclInvalidArgument,
                "ncclCommInitRank: rank %d was given a unique id that ncclGetUniqueId did not make (was it sent "
                "to every rank?)",
                rank);
  }
  const bool blocking = config == nullptr || config->blocking != 0;
  return init_rank(comm, nranks, segment_name(comm_id), rank, blocking);
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId comm_id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, comm_id, rank, nullptr);
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config) {
  *newcomm = nullptr;
  if (const ncclResult_t rc = check_comm(comm, "ncclCommSplit"); rc != ncclSuccess) return rc;
  cuda_emu::synchronize_all("ncclCommSplit", nullptr);  // deferred streams: after the calls queued on them
  comm->wait_idle();                                    // after the calls queued before it
  if (comm->async.load() != ncclSuccess) return comm->async.load();
  CallDesc mine{kSplit, 0, 0, 0, 0};
  if (const ncclResult_t rc = agree(comm, mine); rc != ncclSuccess) return rc;
  const std::int32_t ck[2] = {color, key};
  std::memcpy(comm->slot(comm->rank), ck, sizeof ck);
  if (const ncclResult_t rc = barrier(comm, "ncclCommSplit"); rc != ncclSuccess) return rc;
  struct Member {
    int key, rank;
  };
  std::vector<Member> members;
  for (int r = 0; r < comm->nranks; ++r) {
    std::int32_t other[2];
    std::memcpy(other, comm->slot(r), sizeof other);
    if (other[0] == color) members.push_back({other[1], r});
  }
  if (const ncclResult_t rc = barrier(comm, "ncclCommSplit"); rc != ncclSuccess) return rc;
  const int split = ++comm->splits;
  if (color == NCCL_SPLIT_NOCOLOR) return done(comm);
  std::stable_sort(members.begin(), members.end(),
                   [](const Member& a, const Member& b) { return a.key != b.key ? a.key < b.key : a.rank < b.rank; });
  int new_rank = 0;
  while (members[static_cast<std::size_t>(new_rank)].rank != comm->rank) ++new_rank;
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, "%d:%d", split, color);
  char name[64];
  std::snprintf(name, sizeof name, "/adapt_nccl_emu_%016zx", std::hash<std::string>()(comm->name + suffix));
  const bool blocking =
      config == nullptr || config->blocking == NCCL_CONFIG_UNDEF_INT ? comm->blocking : config->blocking != 0;
  const ncclResult_t rc = init_rank(newcomm, static_cast<int>(members.size()), name, new_rank, blocking);
  if (rc != ncclSuccess && rc != ncclInProgress) return fail(comm, rc, "ncclCommSplit: %s", g_last_error.c_str());
  return done(comm);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  comm->h->aborted.store(comm->rank + 1, std::memory_order_release);  // what the thread waits on ends
  std::deque<ncclComm::Queued> dropped;
  {
    std::lock_guard<std::mutex> lock(comm->mu);
    dropped.swap(comm->queue);
  }
  for (ncclComm::Queued& q : dropped) {
    if (q.finished) q.finished();  // the streams waiting on them go on
  }
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (comm == nullptr) return ncclInvalidArgument;
  const ncclResult_t failed = comm->async.load();
  // With deferred streams the calls run on their streams: in progress only until queued, as NCCL's.
  if (failed == ncclSuccess && !cuda_emu::deferred_streams() && !comm->idle()) {
    *async_error = ncclInProgress;
    return ncclSuccess;
  }
  if (failed == ncclSuccess && comm->in_progress) {
    comm->in_progress = false;
    *async_error = ncclInProgress;
    return ncclSuccess;
  }
  *async_error = failed;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (comm == nullptr) return ncclInvalidArgument;
  *count = comm->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (comm == nullptr) return ncclInvalidArgument;
  *device = comm->device;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (comm == nullptr) return ncclInvalidArgument;
  *rank = comm->rank;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : g_last_error.c_str(); }

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (const ncclResult_t rc = check_args(comm, "ncclAllReduce", datatype, op); rc != ncclSuccess) return rc;
  const std::size_t es = type_size(datatype);
  if (const ncclResult_t rc = check_buffers(comm, "ncclAllReduce", sendbuff, count * es, recvbuff, count * es);
      rc != ncclSuccess)
    return rc;
  return run_or_queue(comm, stream, [=]() -> ncclResult_t {
    std::vector<const char*> in(static_cast<std::size_t>(comm->nranks));
    for (int r = 0; r < comm->nranks; ++r) in[static_cast<std::size_t>(r)] = comm->slot(r);
    return chunked(
        comm, {kAllReduce, datatype, op, 0, count}, kSlotBytes / es,
        [&](std::size_t off, std::size_t n) {
          std::memcpy(comm->slot(comm->rank), static_cast<const char*>(sendbuff) + off * es, n * es);
        },
        [&](std::size_t off, std::size_t n) { reduce(static_cast<char*>(recvbuff) + off * es, in, n, datatype, op); });
  });
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, std::size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  if (const ncclResult_t rc = check_args(comm, "ncclBroadcast", datatype, ncclSum); rc != ncclSuccess) return rc;
  if (root < 0 || root >= comm->nranks)
    return fail(comm, ncclInvalidArgument, "ncclBroadcast: root %d of %d ranks", root, comm->nranks);
  const std::size_t es = type_size(datatype);
  const std::size_t send_bytes = comm->rank == root ? count * es : 0;  // only the root's is read
  if (const ncclResult_t rc = check_buffers(comm, "ncclBroadcast", sendbuff, send_bytes, recvbuff, count * es);
      rc != ncclSuccess)
    return rc;
  return run_or_queue(comm, stream, [=]() -> ncclResult_t {
    return chunked(
        comm, {kBroadcast, datatype, 0, root, count}, kSlotBytes / es,
        [&](std::size_t off, std::size_t n) {
          if (comm->rank == root) std::memcpy(comm->slot(root), static_cast<const char*>(sendbuff) + off * es, n * es);
        },
        [&](std::size_t off, std::size_t n) {
          std::memcpy(static_cast<char*>(recvbuff) + off * es, comm->slot(root), n * es);
        });
  });
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, std::size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (const ncclResult_t rc = check_args(comm, "ncclReduceScatter", datatype, op); rc != ncclSuccess) return rc;
  const std::size_t es = type_size(datatype);
  const auto nr = static_cast<std::size_t>(comm->nranks);
  if (const ncclResult_t rc =
          check_buffers(comm, "ncclReduceScatter", sendbuff, nr * recvcount * es, recvbuff, recvcount * es);
      rc != ncclSuccess)
    return rc;
  return run_or_queue(comm, stream, [=]() -> ncclResult_t {
    const std::size_t per = kSlotBytes / (es * nr);  // each slot holds a part of the chunk for every rank
    std::vector<const char*> in(nr);
    for (std::size_t r = 0; r < nr; ++r)
      in[r] = comm->slot(static_cast<int>(r)) + static_cast<std::size_t>(comm->rank) * per * es;
    return chunked(
        comm, {kReduceScatter, datatype, op, 0, recvcount}, per,
        [&](std::size_t off, std::size_t n) {
          for (std::size_t r = 0; r < nr; ++r) {  // part r of this chunk goes to rank r
            std::memcpy(comm->slot(comm->rank) + r * per * es,
                        static_cast<const char*>(sendbuff) + (r * recvcount + off) * es, n * es);
          }
        },
        [&](std::size_t off, std::size_t n) { reduce(static_cast<char*>(recvbuff) + off * es, in, n, datatype, op); });
  });
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, std::size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  if (const ncclResult_t rc = check_args(comm, "ncclAllGather", datatype, ncclSum); rc != ncclSuccess) return rc;
  const std::size_t es = type_size(datatype);
  const auto nr = static_cast<std::size_t>(comm->nranks);
  if (const ncclResult_t rc =
          check_buffers(comm, "ncclAllGather", sendbuff, sendcount * es, recvbuff, nr * sendcount * es);
      rc != ncclSuccess)
    return rc;
  return run_or_queue(comm, stream, [=]() -> ncclResult_t {
    return chunked(
        comm, {kAllGather, datatype, 0, 0, sendcount}, kSlotBytes / es,
        [&](std::size_t off, std::size_t n) {
          std::memcpy(comm->slot(comm->rank), static_cast<const char*>(sendbuff) + off * es, n * es);
        },
        [&](std::size_t off, std::size_t n) {
          for (std::size_t r = 0; r < nr; ++r) {
            std::memcpy(static_cast<char*>(recvbuff) + (r * sendcount + off) * es, comm->slot(static_cast<int>(r)),
                        n * es);
          }
        });
  });
}

ncclResult_t ncclSend(const void* sendbuff, std::size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return queue_p2p(true, sendbuff, count, datatype, peer, comm, stream);
}

ncclResult_t ncclRecv(void* recvbuff, std::size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return queue_p2p(false, recvbuff, count, datatype, peer, comm, stream);
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--g_group_depth > 0) return ncclSuccess;
  std::vector<std::function<ncclResult_t()>> collectives;
  std::vector<P2p> p2p;
  std::vector<ncclComm*> comms;
  collectives.swap(g_group_collectives);
  comms.swap(g_group_comms);
  p2p.swap(g_group_p2p);
  for (const P2p& p : p2p) comms.push_back(p.comm);
  // The collectives in the order they were called, then the sends and receives together: on the
  // communicator's thread when they all use one non-blocking communicator, here otherwise.
  auto run = [collectives = std::move(collectives), p2p = std::move(p2p)]() mutable -> ncclResult_t {
    for (auto& f : collectives) {
      if (const ncclResult_t rc = f(); rc != ncclSuccess) return rc;
    }
    return run_p2p(p2p);
  };
  if (!comms.empty() && std::all_of(comms.begin(), comms.end(), [&](ncclComm* c) { return c == comms.front(); }))
    return submit(comms.front(), g_group_stream, std::move(run));
  // Calls on several communicators: here, in order, after what their streams hold.
  if (cuda_emu::deferred_streams()) cuda_emu::synchronize_all("ncclGroupEnd", nullptr);
  return run();
}
