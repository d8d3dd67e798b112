// cuda_emu's runtime: fibers for the threads of a block, the block and warp barriers, launch checks,
// and the memory API on host memory. See include/cuda_emu.h for what is and is not modelled.
#include "cuda_emu.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif
#ifdef CUDA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// Fibers switch with the assembly below on x86-64 (GCC, Clang), through ucontext elsewhere.
#if defined(__x86_64__) && defined(__GNUC__)
#define CUDA_EMU_ASM_SWITCH 1
#else
#define CUDA_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

// The linker's bounds of the section that holds every static __shared__ array (cuda_emu.h); the dummy
// below keeps the section present in a binary whose kernels declare none.
extern "C" unsigned char __start_cuda_emu_shared[];
extern "C" unsigned char __stop_cuda_emu_shared[];
__attribute__((section("cuda_emu_shared"), used)) static unsigned char cuda_emu_shared_anchor[16];

namespace cuda_emu {

// ---- limits of the oldest target (sm_80, A100) ---------------------------------------------------------
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr unsigned kMaxGridYZ = 65535;
constexpr std::size_t kDefaultDynamicShared = 48 * 1024;  // without cudaFuncSetAttribute
constexpr int kMaxDynamicSharedOptin = 163 * 1024;        // sm_80 (sm_90: 227 KiB; sm_86 / sm_89: 99 KiB)
constexpr int kSmCount = 108;                             // A100
#ifdef CUDA_EMU_ASAN
constexpr std::size_t kStackBytes = 512 * 1024;
#else
constexpr std::size_t kStackBytes = 128 * 1024;
#endif

// ---- context switch ------------------------------------------------------------------------------------
#if CUDA_EMU_ASM_SWITCH
// switch_stack(&save_sp, new_sp): pushes the callee-saved registers, stores rsp, loads new_sp, and pops
// the same frame from there (kernels never change the floating-point control registers, which stay shared). A new
// fiber's stack holds such a frame whose return address is fiber_trampoline, with the entry in r12 and its argument in
// r13.
extern "C" void cuda_emu_switch_stack(void** save_sp, void* new_sp);
extern "C" void cuda_emu_fiber_trampoline();
asm(R"(
.text
.globl cuda_emu_switch_stack
.type cuda_emu_switch_stack,@function
cuda_emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuda_emu_switch_stack,.-cuda_emu_switch_stack
.globl cuda_emu_fiber_trampoline
.type cuda_emu_fiber_trampoline,@function
cuda_emu_fiber_trampoline:
  movq %r13, %rdi
  andq $-16, %rsp
  callq *%r12
  ud2
.size cuda_emu_fiber_trampoline,.-cuda_emu_fiber_trampoline
.section .note.GNU-stack,"",@progbits
.text
)");
#endif

enum class State { Ready, BlockBarrier, WarpBarrier, Done };

struct Thread {
  uint3 tid{};
  int lane = 0, warp = 0;
  State state = State::Ready;
  unsigned warp_mask = 0;
  const char* warp_what = nullptr;  // the warp collective this thread waits in
  int parity = 0;                   // exchange slots in use (double-buffered)
  char* stack = nullptr;
#if CUDA_EMU_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
};

struct Warp {
  std::uint64_t slots[2][32];
  const void* ptrs[32][3];
  unsigned lanes_mask = 0;  // the lanes that exist (a partial last warp has fewer)
};

dim3 g_block_dim, g_grid_dim;

namespace {

struct Launch {
  Body* body = nullptr;
  uint3 block{};
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  std::vector<unsigned char> dyn_shared;  // 128-byte aligned view below
  unsigned char* dyn = nullptr;
  bool failed = false;
  std::string error;
};

Launch g_launch;
Thread* g_current = nullptr;  // the fiber running now
#if CUDA_EMU_ASM_SWITCH
void* g_scheduler_sp = nullptr;
#else
ucontext_t g_scheduler_ctx;
#endif
char* g_stacks = nullptr;
std::size_t g_stacks_count = 0;
std::atomic<cudaError_t> g_last_error{cudaSuccess};  // set by launches on the device thread too
std::map<const void*, int> g_max_dyn_shared;
std::atomic<int> g_shared_optin{kMaxDynamicSharedOptin};  // set_shared_memory_optin
const bool g_reverse = [] {
  const char* o = std::getenv("CUDA_EMU_ORDER");
  return o && std::string(o) == "reverse";
}();

#ifdef CUDA_EMU_ASAN
void* g_asan_fake = nullptr;
const void* g_sched_stack_bottom = nullptr;
std::size_t g_sched_stack_size = 0;
#endif

void to_fiber(Thread& t) {
  g_current = &t;
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(&g_asan_fake, t.stack, kStackBytes);
#endif
#if CUDA_EMU_ASM_SWITCH
  cuda_emu_switch_stack(&g_scheduler_sp, t.sp);
#else
  swapcontext(&g_scheduler_ctx, &t.ctx);
#endif
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(g_asan_fake, nullptr, nullptr);
#endif
  g_current = nullptr;
}

void to_scheduler() {
  Thread& t = *g_current;
#ifdef CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(t.state == State::Done ? nullptr : &fake, g_sched_stack_bottom, g_sched_stack_size);
#endif
#if CUDA_EMU_ASM_SWITCH
  cuda_emu_switch_stack(&t.sp, g_scheduler_sp);
#else
  swapcontext(&t.ctx, &g_scheduler_ctx);
#endif
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
}

void fiber_main(void* arg) {
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
  Thread& t = *static_cast<Thread*>(arg);
  g_launch.body->run();
  t.state = State::Done;
  to_scheduler();
  std::abort();  // a finished fiber is never resumed
}

#if !CUDA_EMU_ASM_SWITCH
void fiber_entry(unsigned lo, unsigned hi) {
  fiber_main(reinterpret_cast<void*>((static_cast<std::uintptr_t>(hi) << 32) | lo));
}
#endif

void ensure_stacks(std::size_t n) {
  if (n <= g_stacks_count) return;
  if (g_stacks) munmap(g_stacks, g_stacks_count * kStackBytes);
  void* p = mmap(nullptr, n * kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::fprintf(stderr, "cuda_emu: cannot map %zu fiber stacks\n", n);
    std::abort();
  }
  g_stacks = static_cast<char*>(p);
  g_stacks_count = n;
}

void start_fiber(Thread& t, char* stack) {
  t.stack = stack;
#ifdef CUDA_EMU_ASAN
  // The previous fiber on this stack may have left poisoned frames (one that never returned, or redzones
  // of frames laid out differently): start from clean shadow memory.
  ASAN_UNPOISON_MEMORY_REGION(stack, kStackBytes);
#endif
#if CUDA_EMU_ASM_SWITCH
  auto* top = reinterpret_cast<std::uint64_t*>(stack + kStackBytes);
  // Frame popped by cuda_emu_switch_stack: r15 r14 r13 r12 rbx rbp ret.
  top -= 2;  // keeps 16-byte alignment room
  *--top = reinterpret_cast<std::uint64_t>(&cuda_emu_fiber_trampoline);
  *--top = 0;                                             // rbp
  *--top = 0;                                             // rbx
  *--top = reinterpret_cast<std::uint64_t>(&fiber_main);  // r12: entry
  *--top = reinterpret_cast<std::uint64_t>(&t);           // r13: argument
  *--top = 0;                                             // r14
  *--top = 0;                                             // r15
  t.sp = top;
#else
  getcontext(&t.ctx);
  t.ctx.uc_stack.ss_sp = stack;
  t.ctx.uc_stack.ss_size = kStackBytes;
  t.ctx.uc_link = nullptr;
  const auto a = reinterpret_cast<std::uintptr_t>(&t);
  makecontext(&t.ctx, reinterpret_cast<void (*)()>(&fiber_entry), 2, static_cast<unsigned>(a),
              static_cast<unsigned>(a >> 32));
#endif
}

std::string dim_str(uint3 d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", d.x, d.y, d.z);
  return buf;
}

void report(const std::string& what) {
  if (g_launch.failed) return;
  g_launch.failed = true;
  g_launch.error = what;
}

// Runs the lanes of warp w until each has exited or waits at __syncthreads, releasing the warp from each
// warp collective once all its lanes have reached it. Reports lanes that wait in different collectives or
// with a mask that names lanes the warp does not have, and a collective that lanes can no longer reach.
void run_warp(std::size_t w) {
  Launch& L = g_launch;
  const std::size_t first = w * 32, last = std::min(L.threads.size(), first + 32), n = last - first;
  for (;;) {
    std::size_t waiting = 0, done = 0, at_block = 0;
    const Thread* head = nullptr;
    bool mixed = false;
    for (std::size_t k = 0; k < n && !L.failed; ++k) {
      Thread& t = L.threads[g_reverse ? last - 1 - k : first + k];
      if (t.state == State::Ready) to_fiber(t);
      if (t.state == State::WarpBarrier) {
        if (!head) head = &t;
        mixed |= t.warp_mask != head->warp_mask ||
                 (t.warp_what != head->warp_what && std::strcmp(t.warp_what, head->warp_what) != 0);
        ++waiting;
      }
      done += t.state == State::Done;
      at_block += t.state == State::BlockBarrier;
    }
    if (L.failed || waiting == 0) return;
    if (waiting < n) {
      report("warp " + std::to_string(w) + ": " + std::to_string(waiting) + " lane(s) wait in " + head->warp_what +
             " while " + std::to_string(done) + " have exited and " + std::to_string(at_block) +
             " wait at __syncthreads (a warp collective needs every lane of its mask)");
      return;
    }
    if (mixed) {
      report("warp " + std::to_string(w) +
             ": lanes wait in different warp collectives or with different masks (one in " + head->warp_what + ")");
      return;
    }
    if (head->warp_mask != L.warps[w].lanes_mask) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "0x%08x", head->warp_mask);
      report("warp " + std::to_string(w) + ": " + head->warp_what + " with mask " + buf + " but the warp has " +
             std::to_string(n) + " lane(s) (blockDim " + dim_str({g_block_dim.x, g_block_dim.y, g_block_dim.z}) + ")");
      return;
    }
    for (std::size_t i = first; i < last; ++i) L.threads[i].state = State::Ready;
  }
}

void run_block() {
  Launch& L = g_launch;
  const std::size_t n = L.threads.size(), n_warps = L.warps.size();
  for (std::size_t i = 0; i < n; ++i) {
    Thread& t = L.threads[i];
    t.state = State::Ready;
    t.parity = 0;
    start_fiber(t, g_stacks + i * kStackBytes);
  }
  if (!L.dyn_shared.empty()) std::memset(L.dyn, 0xff, L.dyn_shared.size() - 128);  // NaN in f32, bf16 and f16
  std::memset(__start_cuda_emu_shared, 0xff,
              static_cast<std::size_t>(__stop_cuda_emu_shared - __start_cuda_emu_shared));
  for (;;) {
    for (std::size_t k = 0; k < n_warps && !L.failed; ++k) run_warp(g_reverse ? n_warps - 1 - k : k);
    if (L.failed) return;
    std::size_t done = 0;
    for (const Thread& t : L.threads) done += t.state == State::Done;
    if (done == n) return;
    if (done > 0) {
      report(std::to_string(n - done) + " thread(s) wait at __syncthreads while " + std::to_string(done) +
             " have exited (__syncthreads must be reached by the whole block)");
      return;
    }
    for (Thread& t : L.threads) t.state = State::Ready;  // everyone is at the barrier
  }
}

Thread& self(const char* what) {
  if (!g_current) {
    std::fprintf(stderr, "cuda_emu: %s called outside a kernel\n", what);
    std::abort();
  }
  return *g_current;
}

}  // namespace

bool reverse_order() { return g_reverse; }
const uint3& thread_idx() { return self("threadIdx").tid; }
const uint3& block_idx() { return g_launch.block; }
void* dynamic_shared() { return g_launch.dyn; }
int lane_id() { return self("lane id").lane; }

void syncthreads() {
  Thread& t = self("__syncthreads");
  t.state = State::BlockBarrier;
  to_scheduler();
}

void warp_wait(unsigned mask, const char* what) {
  Thread& t = self(what);
  t.state = State::WarpBarrier;
  t.warp_mask = mask;
  t.warp_what = what;
  to_scheduler();
}

void syncwarp(unsigned mask) { warp_wait(mask, "__syncwarp"); }
void warp_collective(const char* what) { warp_wait(0xffffffffu, what); }

const std::uint64_t* warp_exchange(unsigned mask, std::uint64_t value) {
  Thread& t = self("a warp shuffle");
  Warp& w = g_launch.warps[t.warp];
  t.parity ^= 1;
  const int buf = t.parity;
  w.slots[buf][t.lane] = value;
  warp_wait(mask, "a warp shuffle/vote");
  return w.slots[buf];
}

const void* const (*warp_publish(const void* a, const void* b, const void* c))[3] {
  Thread& t = self("wmma::mma_sync");
  Warp& w = g_launch.warps[t.warp];
  w.ptrs[t.lane][0] = a, w.ptrs[t.lane][1] = b, w.ptrs[t.lane][2] = c;
  warp_wait(0xffffffffu, "wmma::mma_sync");
  return w.ptrs;
}

void kernel_error(const char* what) { report(what); }

cudaError_t set_max_dynamic_shared(const void* kernel, int bytes) {
  if (bytes < 0 || bytes > g_shared_optin.load()) return cudaErrorInvalidValue;
  g_max_dyn_shared[kernel] = bytes;
  return cudaSuccess;
}

void set_shared_memory_optin(int bytes) { g_shared_optin.store(bytes); }

namespace {
// Runs every thread of the grid (the configuration was checked by launch()); a kernel fault is reported
// on stderr and through cudaGetLastError.
void run_grid(const Cfg& cfg, Body& body) {
  Launch& L = g_launch;
  L.body = &body;
  L.failed = false;
  L.error.clear();
  g_block_dim = cfg.block;
  g_grid_dim = cfg.grid;
  const unsigned n = cfg.block.x * cfg.block.y * cfg.block.z;
  L.threads.assign(n, Thread{});
  L.warps.assign((n + 31) / 32, Warp{});
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = L.threads[i];
    t.tid = {i % cfg.block.x, i / cfg.block.x % cfg.block.y, i / (cfg.block.x * cfg.block.y)};
    t.lane = static_cast<int>(i % 32);
    t.warp = static_cast<int>(i / 32);
    L.warps[i / 32].lanes_mask |= 1u << (i % 32);
  }
  L.dyn_shared.assign(cfg.smem ? cfg.smem + 128 : 0, 0);
  L.dyn = cfg.smem ? reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(L.dyn_shared.data()) + 127) &
                                                      ~std::uintptr_t(127))
                   : nullptr;
  ensure_stacks(n);
  const std::uint64_t blocks = std::uint64_t(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  for (std::uint64_t b = 0; b < blocks && !L.failed; ++b) {
    const std::uint64_t bb = g_reverse ? blocks - 1 - b : b;
    L.block = {static_cast<unsigned>(bb % cfg.grid.x), static_cast<unsigned>(bb / cfg.grid.x % cfg.grid.y),
               static_cast<unsigned>(bb / (std::uint64_t(cfg.grid.x) * cfg.grid.y))};
    run_block();
  }
  if (L.failed) {
    std::fprintf(stderr, "cuda_emu: kernel failed in block %s (grid %s, block %s): %s\n", dim_str(L.block).c_str(),
                 dim_str({cfg.grid.x, cfg.grid.y, cfg.grid.z}).c_str(),
                 dim_str({cfg.block.x, cfg.block.y, cfg.block.z}).c_str(), L.error.c_str());
    g_last_error = cudaErrorLaunchFailure;
  }
}
}  // namespace

void launch(const void* kernel, const Cfg& cfg, std::shared_ptr<Body> body) {
  auto bad = [&](cudaError_t e, const std::string& why) {
    std::fprintf(stderr, "cuda_emu: launch refused: %s (grid %s, block %s, %zu bytes of dynamic shared memory)\n",
                 why.c_str(), dim_str({cfg.grid.x, cfg.grid.y, cfg.grid.z}).c_str(),
                 dim_str({cfg.block.x, cfg.block.y, cfg.block.z}).c_str(), cfg.smem);
    g_last_error = e;
  };
  if (!deferred_streams() && g_current)
    return bad(cudaErrorInvalidConfiguration, "a kernel launched from inside a kernel");
  const std::uint64_t threads = std::uint64_t(cfg.block.x) * cfg.block.y * cfg.block.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || cfg.block.z > kMaxBlockZ)
    return bad(cudaErrorInvalidConfiguration, "block shape outside 1..1024 threads (z <= 64)");
  if (cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.z == 0 || cfg.grid.x > 0x7fffffffu || cfg.grid.y > kMaxGridYZ ||
      cfg.grid.z > kMaxGridYZ)
    return bad(cudaErrorInvalidConfiguration, "grid shape outside 1..2^31-1 x 1..65535 x 1..65535");
  auto it = g_max_dyn_shared.find(kernel);
  const std::size_t smem_limit = it == g_max_dyn_shared.end() ? kDefaultDynamicShared : std::size_t(it->second);
  if (cfg.smem > smem_limit)
    return bad(cudaErrorInvalidValue, "dynamic shared memory above the kernel's limit of " +
                                          std::to_string(smem_limit) +
                                          " bytes (raise it with cudaFuncSetAttribute, up to 163 KiB on sm_80)");
  enqueue(cfg.stream, "kernel", [cfg, body = std::move(body)] { run_grid(cfg, *body); });
}

}  // namespace cuda_emu

namespace nvcuda::wmma::detail {
// wmma's requirements: a 256-bit aligned pointer and a stride that is a multiple of 16 bytes.
void check_pointer(const void* p, unsigned ldm, std::size_t elem_bytes, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0 || (ldm * elem_bytes) % 16 != 0) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s: pointer %p (needs 32-byte alignment) or ldm %u (needs a multiple of %zu)", what,
                  p, ldm, 16 / elem_bytes);
    cuda_emu::kernel_error(buf);
  }
}
}  // namespace nvcuda::wmma::detail

// ---- runtime API on host memory ------------------------------------------------------------------------------

namespace cuda_emu {

cudaError_t rt_set_last_error(cudaError_t e) { return g_last_error = e; }

cudaError_t rt_last_error(bool reset) { return reset ? g_last_error.exchange(cudaSuccess) : g_last_error.load(); }

const char* rt_error_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* rt_error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure (see the cuda_emu message above)";
  }
  return "unknown error";
}

namespace {
// Each emulated device's memory: 80 GiB (an A100's), or CUDA_EMU_DEVICE_MIB MiB, so that a test can run
// out of it (what does not fit a GPU).
std::size_t device_bytes() {
  static const std::size_t bytes = [] {
    const char* env = std::getenv("CUDA_EMU_DEVICE_MIB");
    if (env == nullptr || *env == '\0') return std::size_t(80) << 30;
    char* end = nullptr;
    const unsigned long long mib = std::strtoull(env, &end, 10);
    if (*end != '\0' || mib == 0) {
      std::fprintf(stderr, "cuda_emu: CUDA_EMU_DEVICE_MIB=%s is not a positive number of MiB\n", env);
      std::abort();
    }
    return static_cast<std::size_t>(mib) << 20;
  }();
  return bytes;
}
std::map<std::uintptr_t, std::size_t> g_device_blocks, g_host_blocks;  // start -> bytes
std::size_t g_device_used = 0;
std::mutex g_mem_mutex;

const std::map<std::uintptr_t, std::size_t>::const_iterator find_block(const std::map<std::uintptr_t, std::size_t>& m,
                                                                       const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = m.upper_bound(a);
  if (it == m.begin()) return m.end();
  --it;
  return a < it->first + it->second ? it : m.end();
}
}  // namespace

bool is_device_memory(const void* p) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  return find_block(g_device_blocks, p) != g_device_blocks.end();
}

bool is_pinned_memory(const void* p) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  return find_block(g_host_blocks, p) != g_host_blocks.end();
}

cudaError_t rt_malloc(void** p, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (g_device_used + bytes > device_bytes()) return g_last_error = cudaErrorMemoryAllocation;
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!*p) return g_last_error = cudaErrorMemoryAllocation;
  std::memset(*p, 0xff, bytes);  // cudaMalloc does not clear: NaN in every float format
  g_device_blocks[reinterpret_cast<std::uintptr_t>(*p)] = bytes;
  g_device_used += bytes;
  return cudaSuccess;
}

cudaError_t rt_free(void* p) {
  if (!p) return cudaSuccess;
  synchronize_all("cudaFree", __builtin_return_address(0));  // no queued work may still use the block
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  auto it = g_device_blocks.find(reinterpret_cast<std::uintptr_t>(p));
  if (it == g_device_blocks.end()) return g_last_error = cudaErrorInvalidValue;
  g_device_used -= it->second;
  g_device_blocks.erase(it);
  std::free(p);
  return cudaSuccess;
}

cudaError_t rt_host_alloc(void** p, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  *p = std::aligned_alloc(4096, (std::max<std::size_t>(bytes, 1) + 4095) / 4096 * 4096);
  if (!*p) return g_last_error = cudaErrorMemoryAllocation;
  g_host_blocks[reinterpret_cast<std::uintptr_t>(*p)] = bytes;
  return cudaSuccess;
}

cudaError_t rt_free_host(void* p) {
  if (!p) return cudaSuccess;
  synchronize_all("cudaFreeHost", __builtin_return_address(0));
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  if (!g_host_blocks.erase(reinterpret_cast<std::uintptr_t>(p))) return g_last_error = cudaErrorInvalidValue;
  std::free(p);
  return cudaSuccess;
}

namespace {
thread_local int g_current_device = 0;
}  // namespace

int rt_device_count() {
  static const int count = [] {
    const char* env = std::getenv("CUDA_EMU_DEVICES");
    if (env == nullptr || *env == '\0') return 1;
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (*end != '\0' || n < 1 || n > 16) {
      std::fprintf(stderr, "cuda_emu: CUDA_EMU_DEVICES='%s': give a number of devices from 1 to 16\n", env);
      std::abort();
    }
    return static_cast<int>(n);
  }();
  return count;
}

namespace {
bool valid_device(int device) { return device >= 0 && device < rt_device_count(); }
}  // namespace

cudaError_t rt_set_device(int device) {
  if (!valid_device(device)) return g_last_error = cudaErrorInvalidDevice;
  g_current_device = device;
  return cudaSuccess;
}

int rt_get_device() { return g_current_device; }

bool rt_device_accessible(const void* p, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  for (const auto* blocks : {&g_device_blocks, &g_host_blocks}) {
    const auto it = find_block(*blocks, p);
    if (it != blocks->end()) return reinterpret_cast<std::uintptr_t>(p) + bytes <= it->first + it->second;
  }
  return false;
}

cudaError_t rt_pointer_attributes(cudaPointerAttributes* attr, const void* p) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  *attr = cudaPointerAttributes{cudaMemoryTypeUnregistered, -1, nullptr, const_cast<void*>(p)};
  if (find_block(g_device_blocks, p) != g_device_blocks.end()) {
    *attr = cudaPointerAttributes{cudaMemoryTypeDevice, 0, const_cast<void*>(p), nullptr};
  } else if (find_block(g_host_blocks, p) != g_host_blocks.end()) {
    *attr = cudaPointerAttributes{cudaMemoryTypeHost, 0, const_cast<void*>(p), const_cast<void*>(p)};
  }
  return cudaSuccess;
}

cudaError_t rt_mem_info(std::size_t* free_bytes, std::size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  *total_bytes = device_bytes();
  *free_bytes = device_bytes() - g_device_used;
  return cudaSuccess;
}

cudaError_t rt_device_properties(cudaDeviceProp* prop, int device) {
  if (!valid_device(device)) return g_last_error = cudaErrorInvalidDevice;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "cuda_emu (CPU emulation, A100-shaped)");
  for (int i = 0; i < 15; ++i) prop->uuid.bytes[i] = static_cast<char>(0xe0 + i);
  prop->uuid.bytes[15] = static_cast<char>(0xe0 + device);  // one UUID per device
  prop->totalGlobalMem = device_bytes();
  prop->major = 8, prop->minor = 0, prop->multiProcessorCount = kSmCount;
  return cudaSuccess;
}

cudaError_t rt_device_attribute(int* value, cudaDeviceAttr attr, int device) {
  if (!valid_device(device)) return cudaErrorInvalidValue;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = kSmCount; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = g_shared_optin.load(); return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda_emu
