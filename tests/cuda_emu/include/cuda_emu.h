// cuda_emu: the part of CUDA that kernels/ uses, for compiling the device code as C++ and running it on
// the CPU. Every thread of a block is a fiber on one OS thread; blocks run one after another. The
// emulator checks what a GPU would refuse or leave undefined: launch shapes and dynamic shared memory
// beyond sm_80's limits, __syncthreads reached by only part of a block, warp collectives (shuffles,
// __syncwarp, wmma) with lanes missing, wmma pointers and strides off their required alignment.
//
// What it does not model: warp-level timing (lanes run one after another between synchronisation
// points, so reads that race with another lane's writes see a stale or a fresh value depending on the
// order: CUDA_EMU_ORDER=reverse runs the lanes and warps of a block backwards), the tensor cores' own
// summation order, and nvcc's FMA contraction of a * b + c (the emulated code rounds each operation).
//
// Included through the stand-ins cuda_runtime.h, cuda_bf16.h, cuda_fp16.h and mma.h of this folder; a
// kernel launch `k<<<grid, block, smem, stream>>>(args)` is rewritten by transform.cmake into
// `k % ::cuda_emu::Cfg(grid, block, smem, stream) % ::cuda_emu::pack(args)`.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "dtype/dtype.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// Static shared arrays live in their own section, which the emulator fills with 0xff (NaN in every float
// format) before each block: a kernel that reads shared memory it has not written sees garbage, as on the GPU.
#define __shared__ static __attribute__((section("cuda_emu_shared")))
#define __align__(n) __attribute__((aligned(n)))

// ---- vector types and built-in variables -------------------------------------------------------------

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }

namespace cuda_emu {
extern dim3 g_block_dim, g_grid_dim;
// Whether threads, warps and blocks run backwards (CUDA_EMU_ORDER=reverse).
bool reverse_order();
const uint3& thread_idx();
const uint3& block_idx();
void* dynamic_shared();

void syncthreads();
void syncwarp(unsigned mask);
// Writes this lane's value into its warp's exchange slots and waits for the lanes of `mask`; returns
// the 32 slots (valid until this lane's next-but-one exchange).
const std::uint64_t* warp_exchange(unsigned mask, std::uint64_t value);
// Warp-collective entry of a wmma operation (a __syncwarp that names the operation in errors).
void warp_collective(const char* what);
// Publishes three pointers of this lane for a warp-wide operation; returns the 32 lanes' triples.
const void* const (*warp_publish(const void* a, const void* b, const void* c))[3];
int lane_id();
// Reports a fault of the running kernel (the launch then fails, as with a device-side error).
void kernel_error(const char* what);
}  // namespace cuda_emu

#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::g_block_dim)
#define gridDim (::cuda_emu::g_grid_dim)
#define warpSize 32

inline void __syncthreads() { ::cuda_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cuda_emu::syncwarp(mask); }

namespace cuda_emu {
template <typename T>
std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move values of up to 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace cuda_emu

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const std::uint64_t* s = ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(v));
  const int lane = ::cuda_emu::lane_id();
  return ::cuda_emu::from_bits<T>(s[(lane & ~(width - 1)) + (src & (width - 1))]);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const std::uint64_t* s = ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(v));
  const int lane = ::cuda_emu::lane_id();
  const int src = lane ^ lane_mask;
  return ::cuda_emu::from_bits<T>(s[(src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane]);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const std::uint64_t* s = ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(v));
  const int lane = ::cuda_emu::lane_id();
  const int src = lane + static_cast<int>(delta);
  return ::cuda_emu::from_bits<T>(s[(src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane]);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const std::uint64_t* s = ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(v));
  const int lane = ::cuda_emu::lane_id();
  const int src = lane - static_cast<int>(delta);
  return ::cuda_emu::from_bits<T>(s[src >= (lane & ~(width - 1)) ? src : lane]);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  const std::uint64_t* s = ::cuda_emu::warp_exchange(mask, pred != 0);
  unsigned r = 0;
  for (int i = 0; i < 32; ++i)
    if ((mask >> i & 1u) && s[i]) r |= 1u << i;
  return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ---- atomics (fibers switch only at synchronisation points, so a read-modify-write is atomic) ------------

template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  const T old = *p;
  if (v > old) *p = v;
  return old;
}
template <typename T>
T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}

// ---- arithmetic intrinsics (IEEE round-to-nearest, as on the device) ----------------------------------

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __uint_as_float(unsigned u) { return ::cuda_emu::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return static_cast<unsigned>(::cuda_emu::to_bits(f)); }
inline float __int_as_float(int i) { return __uint_as_float(static_cast<unsigned>(i)); }
inline int __float_as_int(float f) { return static_cast<int>(__float_as_uint(f)); }
template <typename T>
const T& __ldg(const T* p) {
  return *p;
}

// min/max of mixed integer and floating types, as CUDA's device overloads.
template <typename A, typename B>
typename std::common_type<A, B>::type min(A a, B b) {
  using C = typename std::common_type<A, B>::type;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B>
typename std::common_type<A, B>::type max(A a, B b) {
  using C = typename std::common_type<A, B>::type;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

// ---- 16-bit floats ---------------------------------------------------------------------------------------

struct __nv_bfloat16 {
  unsigned short __x;
};
struct __half {
  unsigned short __x;
};
using nv_bfloat16 = __nv_bfloat16;
inline float __bfloat162float(__nv_bfloat16 h) { return adapt::bf16_to_f32(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  if (std::isnan(f)) return __nv_bfloat16{0x7fff};  // the device's canonical NaN
  return __nv_bfloat16{adapt::f32_to_bf16(f)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __half2float(__half h) { return adapt::f16_to_f32(h.__x); }
inline __half __float2half_rn(float f) {
  if (std::isnan(f)) return __half{0x7fff};
  return __half{adapt::f32_to_f16(f)};
}
inline __half __float2half(float f) { return __float2half_rn(f); }

// ---- runtime API -----------------------------------------------------------------------------------------

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidPitchValue = 12,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNotReady = 600,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
struct CUstream_st;
struct CUevent_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventBlockingSync = 1, cudaEventDisableTiming = 2;
constexpr unsigned cudaHostAllocDefault = 0, cudaHostAllocPortable = 1;
enum cudaMemoryType {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};
struct CUuuid_st {
  char bytes[16];
};
struct cudaDeviceProp {
  char name[256];
  CUuuid_st uuid;
  std::size_t totalGlobalMem;
  int major, minor, multiProcessorCount;
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

// The API is static inline over cuda_emu::rt_*: a binary that also links the real CUDA runtime (a CUDA
// build) keeps both apart.
namespace cuda_emu {
cudaError_t rt_last_error(bool reset);
cudaError_t rt_set_last_error(cudaError_t e);  // returns e
const char* rt_error_name(cudaError_t e);
const char* rt_error_string(cudaError_t e);
cudaError_t rt_malloc(void** p, std::size_t bytes);
cudaError_t rt_free(void* p);
cudaError_t rt_device_attribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t set_max_dynamic_shared(const void* kernel, int bytes);
/// Tests: the dynamic shared memory a block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin and
/// cudaFuncSetAttribute's ceiling): sm_80's 163 KiB by default; 99 KiB emulates sm_86 / sm_89 (A10, L40S).
void set_shared_memory_optin(int bytes);
cudaError_t rt_host_alloc(void** p, std::size_t bytes);
cudaError_t rt_free_host(void* p);
cudaError_t rt_set_device(int device);
int rt_get_device();
int rt_device_count();
bool rt_device_accessible(const void* p, std::size_t bytes);  // inside one cudaMalloc or cudaHostAlloc block
cudaError_t rt_pointer_attributes(cudaPointerAttributes* attr, const void* p);
cudaError_t rt_mem_info(std::size_t* free_bytes, std::size_t* total_bytes);
cudaError_t rt_device_properties(cudaDeviceProp* prop, int device);
bool is_device_memory(const void* p);  // inside a cudaMalloc block
bool is_pinned_memory(const void* p);  // inside a cudaHostAlloc block

// Streams and events (cuda_emu_streams.cpp). With CUDA_EMU_STREAMS=sync (the default of test_cuda_emu)
// every call completes before it returns. With CUDA_EMU_STREAMS=deferred (the default of an
// ADAPT_CUDA=EMU build) the calls queued on a stream run later, on a thread of the process's own (the
// device), in stream order, as late as they can: when the host waits for them (a synchronisation, a
// query, a blocking copy) or has called nothing for CUDA_EMU_IDLE_MS (20); among the streams whose next
// call may run, the one queued last goes first. A missing event wait between streams, or a host read of
// an asynchronous copy's destination before a synchronisation, then sees stale data. CUDA_EMU_WAIT_REPORT=1
// prints at exit how often the host waited for queued work, by call and calling function.
bool deferred_streams();
void set_deferred_streams(bool on);  // tests; waits for what is queued first
void set_idle_ms(int ms);            // tests: CUDA_EMU_IDLE_MS
// Runs `work` on `stream` (null, cudaStreamLegacy and cudaStreamPerThread are the device's legacy stream):
// now, or queued (deferred).
void enqueue(cudaStream_t stream, const char* what, std::function<void()> work);
// Queues a call that another thread completes (an NCCL collective): `start(finish)` runs in stream order
// and the stream goes on once `finish()` has been called, from any thread. Deferred streams only.
void enqueue_external(cudaStream_t stream, const char* what, std::function<void(std::function<void()> finish)> start);
// Waits for every stream of the process; `api` and `caller` name the wait in CUDA_EMU_WAIT_REPORT's list.
void synchronize_all(const char* api, const void* caller);
cudaError_t rt_stream_create(cudaStream_t* s);
cudaError_t rt_stream_destroy(cudaStream_t s);
cudaError_t rt_stream_synchronize(cudaStream_t s);
cudaError_t rt_stream_query(cudaStream_t s);
cudaError_t rt_stream_wait_event(cudaStream_t s, cudaEvent_t e);
cudaError_t rt_device_synchronize();
cudaError_t rt_event_create(cudaEvent_t* e);
cudaError_t rt_event_destroy(cudaEvent_t e);
cudaError_t rt_event_record(cudaEvent_t e, cudaStream_t s);
cudaError_t rt_event_query(cudaEvent_t e);
cudaError_t rt_event_synchronize(cudaEvent_t e);
cudaError_t rt_event_elapsed(float* ms, cudaEvent_t start, cudaEvent_t end);
// cudaMemcpy (sync_api) and cudaMemcpyAsync, with the host synchronisation each has for the kinds of
// memory on either side (pageable, pinned, device); cudaMemset and cudaMemsetAsync.
cudaError_t rt_memcpy(void* dst, const void* src, std::size_t bytes, cudaStream_t s, bool sync_api);
cudaError_t rt_memset(void* p, int value, std::size_t bytes, cudaStream_t s, bool sync_api);
}  // namespace cuda_emu

// Devices: CUDA_EMU_DEVICES of them (default 1), each an A100-shaped sm_80 with 80 GiB and a UUID of its
// own, as on one node; the process's memory is every device's memory. Streams and events: see
// deferred_streams() above.
static inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = ::cuda_emu::rt_device_count();
  return cudaSuccess;
}
static inline cudaError_t cudaSetDevice(int device) { return ::cuda_emu::rt_set_device(device); }
static inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
static inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
static inline cudaError_t cudaHostAlloc(void** p, std::size_t bytes, unsigned) {
  return ::cuda_emu::rt_host_alloc(p, bytes);
}
static inline cudaError_t cudaMallocHost(void** p, std::size_t bytes) { return ::cuda_emu::rt_host_alloc(p, bytes); }
static inline cudaError_t cudaFreeHost(void* p) { return ::cuda_emu::rt_free_host(p); }
static inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p) {
  return ::cuda_emu::rt_pointer_attributes(attr, p);
}
static inline cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes) {
  return ::cuda_emu::rt_mem_info(free_bytes, total_bytes);
}
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  return ::cuda_emu::rt_device_properties(prop, device);
}
static inline cudaError_t cudaEventCreate(cudaEvent_t* e) { return ::cuda_emu::rt_event_create(e); }
static inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return ::cuda_emu::rt_event_create(e); }
static inline cudaError_t cudaEventDestroy(cudaEvent_t e) { return ::cuda_emu::rt_event_destroy(e); }
static inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr) {
  return ::cuda_emu::rt_event_record(e, s);
}
static inline cudaError_t cudaEventQuery(cudaEvent_t e) { return ::cuda_emu::rt_event_query(e); }
static inline cudaError_t cudaEventSynchronize(cudaEvent_t e) { return ::cuda_emu::rt_event_synchronize(e); }
static inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  return ::cuda_emu::rt_event_elapsed(ms, start, end);
}
static inline cudaError_t cudaStreamCreate(cudaStream_t* s) { return ::cuda_emu::rt_stream_create(s); }
static inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  return ::cuda_emu::rt_stream_create(s);
}
static inline cudaError_t cudaStreamDestroy(cudaStream_t s) { return ::cuda_emu::rt_stream_destroy(s); }
static inline cudaError_t cudaStreamQuery(cudaStream_t s) { return ::cuda_emu::rt_stream_query(s); }
static inline cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned = 0) {
  return ::cuda_emu::rt_stream_wait_event(s, e);
}

static inline cudaError_t cudaGetLastError() { return ::cuda_emu::rt_last_error(true); }
static inline cudaError_t cudaPeekAtLastError() { return ::cuda_emu::rt_last_error(false); }
static inline const char* cudaGetErrorName(cudaError_t e) { return ::cuda_emu::rt_error_name(e); }
static inline const char* cudaGetErrorString(cudaError_t e) { return ::cuda_emu::rt_error_string(e); }
template <typename T>
static inline cudaError_t cudaMalloc(T** p, std::size_t bytes) {
  return ::cuda_emu::rt_malloc(reinterpret_cast<void**>(p), bytes);
}
static inline cudaError_t cudaFree(void* p) { return ::cuda_emu::rt_free(p); }
static inline cudaError_t cudaMemset(void* p, int value, std::size_t bytes) {
  return ::cuda_emu::rt_memset(p, value, bytes, nullptr, true);
}
static inline cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t s = nullptr) {
  return ::cuda_emu::rt_memset(p, value, bytes, s, false);
}
static inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind) {
  return ::cuda_emu::rt_memcpy(dst, src, bytes, nullptr, true);
}
static inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind,
                                          cudaStream_t s = nullptr) {
  return ::cuda_emu::rt_memcpy(dst, src, bytes, s, false);
}
// `height` rows of `width` bytes at pitches (as CUDA: each pitch at least the width), in stream order.
static inline cudaError_t cudaMemcpy2DAsync(void* dst, std::size_t dpitch, const void* src, std::size_t spitch,
                                            std::size_t width, std::size_t height, cudaMemcpyKind,
                                            cudaStream_t s = nullptr) {
  if (width > dpitch || width > spitch) return ::cuda_emu::rt_set_last_error(cudaErrorInvalidPitchValue);
  for (std::size_t r = 0; r < height; ++r) {
    const cudaError_t e = ::cuda_emu::rt_memcpy(static_cast<char*>(dst) + r * dpitch,
                                                static_cast<const char*>(src) + r * spitch, width, s, false);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
static inline cudaError_t cudaDeviceSynchronize() { return ::cuda_emu::rt_device_synchronize(); }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t s) { return ::cuda_emu::rt_stream_synchronize(s); }
static inline cudaError_t cudaGetDevice(int* device) {
  *device = ::cuda_emu::rt_get_device();
  return cudaSuccess;
}
static inline cudaError_t cudaDeviceReset() { return cudaSuccess; }
static inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  return ::cuda_emu::rt_device_attribute(value, attr, device);
}
template <typename F>
static inline cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return ::cuda_emu::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
}

// ---- kernel launches ---------------------------------------------------------------------------------------

namespace cuda_emu {

struct Cfg {
  dim3 grid, block;
  std::size_t smem;
  cudaStream_t stream;
  Cfg(dim3 g, dim3 b, std::size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}
};

class Body {
 public:
  virtual ~Body() = default;
  virtual void run() = 0;  // one thread's execution of the kernel
};
// Checks the configuration (a bad one is reported on stderr and by cudaGetLastError, as a refused launch),
// then runs `body` for every thread of the grid on cfg.stream (enqueue); a synchronisation error in the
// kernel is reported the same way, as a failed launch.
void launch(const void* kernel, const Cfg& cfg, std::shared_ptr<Body> body);

template <typename... P>
struct Bound {
  void (*fn)(P...);
  Cfg cfg;
};
template <typename... A>
struct Pack {
  std::tuple<A...> args;
};
template <typename... A>
Pack<typename std::decay<A>::type...> pack(A&&... a) {
  return {std::tuple<typename std::decay<A>::type...>(std::forward<A>(a)...)};
}
template <typename... P>
Bound<P...> operator%(void (*fn)(P...), const Cfg& cfg) {
  return {fn, cfg};
}
template <typename... P, typename... A>
void operator%(const Bound<P...>& b, Pack<A...>&& p) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  struct Call final : Body {
    void (*fn)(P...);
    std::tuple<typename std::decay<P>::type...> params;  // converted once, copied into each thread's call
    Call(void (*f)(P...), std::tuple<A...>& a) : fn(f), params(std::make_from_tuple<decltype(params)>(a)) {}
    void run() override { std::apply(fn, params); }
  };
  launch(reinterpret_cast<const void*>(b.fn), b.cfg, std::make_shared<Call>(b.fn, p.args));
}

}  // namespace cuda_emu

// ---- wmma (nvcuda::wmma, m16n16k16; bf16 or f16 inputs, f32 accumulators) --------------------------------

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// Element e of the logical row-major tile (M×K for a, K×N for b, M×N for the accumulator) lives in lane
// e / num_elements at x[e % num_elements]. The real layout is unspecified; kernels may only apply the same
// operation to every element of x.
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  static constexpr int num_elements = rows * cols / 32;
  T x[num_elements];
};

namespace detail {
inline float to_f(float v) { return v; }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float to_f(__half v) { return __half2float(v); }
template <typename T>
T from_f(float v);
template <>
inline float from_f<float>(float v) {
  return v;
}
template <>
inline __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
inline __half from_f<__half>(float v) {
  return __float2half_rn(v);
}
void check_pointer(const void* p, unsigned ldm, std::size_t elem_bytes, const char* what);

// Reads this lane's elements at entry (a lane's earlier stores must be made visible with __syncwarp, as on
// the device), then waits for the warp.
template <typename Frag, typename T>
void load(Frag& f, const T* p, unsigned ldm, bool row_major, const char* what) {
  check_pointer(p, ldm, sizeof(T), what);
  const int lane = ::cuda_emu::lane_id();
  for (int i = 0; i < Frag::num_elements; ++i) {
    const int e = lane * Frag::num_elements + i, r = e / Frag::cols, c = e % Frag::cols;
    f.x[i] = row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
  ::cuda_emu::warp_collective(what);
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
void fill_fragment(fragment<Use, M, N, K, T, L>& f, V v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = detail::from_f<T>(static_cast<float>(v));
}
template <typename Use, int M, int N, int K, typename T, typename L>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  detail::load(f, p, ldm, std::is_same<L, row_major>::value, "wmma::load_matrix_sync");
}
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout) {
  detail::load(f, p, ldm, layout == mem_row_major, "wmma::load_matrix_sync (accumulator)");
}
// Waits for the warp, then writes this lane's elements: lanes see each other's stores only after a
// __syncwarp, as on the device.
template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  detail::check_pointer(p, ldm, sizeof(float), "wmma::store_matrix_sync");
  ::cuda_emu::warp_collective("wmma::store_matrix_sync");
  const int lane = ::cuda_emu::lane_id();
  for (int i = 0; i < f.num_elements; ++i) {
    const int e = lane * f.num_elements + i, r = e / N, c = e % N;
    p[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.x[i];
  }
}
// d = a·b + c in f32 (products summed in increasing k).
template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  using FA = fragment<matrix_a, M, N, K, T, LA>;
  using FB = fragment<matrix_b, M, N, K, T, LB>;
  const void* const(*lanes)[3] = ::cuda_emu::warp_publish(&a, &b, &c);
  const int lane = ::cuda_emu::lane_id();
  auto a_at = [&](int e) {
    return detail::to_f(static_cast<const FA*>(lanes[e / FA::num_elements][0])->x[e % FA::num_elements]);
  };
  auto b_at = [&](int e) {
    return detail::to_f(static_cast<const FB*>(lanes[e / FB::num_elements][1])->x[e % FB::num_elements]);
  };
  float out[fragment<accumulator, M, N, K, float>::num_elements];
  int row = -1;
  float a_row[K] = {};
  for (int i = 0; i < d.num_elements; ++i) {
    const int e = lane * d.num_elements + i, r = e / N, n = e % N;
    if (r != row) {
      for (int k = 0; k < K; ++k) a_row[k] = a_at(r * K + k);
      row = r;
    }
    float acc = c.x[i];
    for (int k = 0; k < K; ++k) acc += a_row[k] * b_at(k * N + n);
    out[i] = acc;
  }
  ::cuda_emu::warp_collective("wmma::mma_sync");  // every lane has read the others' a and b
  for (int i = 0; i < d.num_elements; ++i) d.x[i] = out[i];
}

}  // namespace nvcuda::wmma
