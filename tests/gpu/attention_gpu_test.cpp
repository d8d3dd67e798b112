// CUDA attention (kernels/attention.h, kernels/decode_attention.h) against the CPU op
// (ops::attention_forward / attention_backward) on random inputs: every path (tensor cores for bf16
// with head_dim 64/128, the generic kernels for f32, f16 and other head dims), T = 1, 17, 128, 333
// (not multiples of the 64-row tiles), GQA 4/1, 8/8, 8/2, a query position offset, packed segments
// with padding, a ragged prefill over a shared cache, and decode over ragged cache rows with 1 to
// many splits. bf16/f16 cases compare against the CPU op run on the inputs rounded to that dtype.
// The Tensor glue (ops/cuda/attention_cuda.h) is run once per entry point, including a KV-cache view.
// Tolerances: tests/gpu/gpu_tolerances.h (relative to the largest reference magnitude).
#include <doctest/doctest.h>

#if ADAPT_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backend/backend.h"
#include "kernels/attention.h"
#include "kernels/decode_attention.h"
#include "ops/attention.h"
#if !ADAPT_CUDA_EMU
#include "ops/cuda/attention_cuda.h"
#endif
#include "tests/gpu/gpu_tolerances.h"
#include "tests/support/test_support.h"

using namespace adapt;
using kernels::AttentionBackwardArgs;
using kernels::AttentionForwardArgs;

namespace {

std::uint16_t to_bits(float f, DType dt) { return dt == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f); }
float from_bits(std::uint16_t b, DType dt) { return dt == DType::BF16 ? bf16_to_f32(b) : f16_to_f32(b); }

/// Rounds every value to `dt` (no-op for f32), so the CPU reference sees exactly what the GPU reads.
void round_to(std::vector<float>& v, DType dt) {
  if (dt == DType::F32) return;
  for (float& x : v) x = from_bits(to_bits(x, dt), dt);
}

std::vector<float> random_vec(std::size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

/// A device buffer from cudaMalloc, freed on scope exit.
struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(std::size_t bytes) { REQUIRE(cudaMalloc(&p, bytes > 0 ? bytes : 16) == cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(DevBuf&& o) noexcept : p(o.p) { o.p = nullptr; }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf& operator=(DevBuf&&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

DevBuf upload(const std::vector<float>& v, DType dt) {
  DevBuf d(v.size() * dtype_size(dt));
  if (dt == DType::F32) {
    REQUIRE(cudaMemcpy(d.p, v.data(), v.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
  } else {
    std::vector<std::uint16_t> bits(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) bits[i] = to_bits(v[i], dt);
    REQUIRE(cudaMemcpy(d.p, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  }
  return d;
}

template <class T>
DevBuf upload_raw(const std::vector<T>& v) {
  DevBuf d(v.size() * sizeof(T));
  REQUIRE(cudaMemcpy(d.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return d;
}

std::vector<float> download(const DevBuf& d, std::size_t n, DType dt) {
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<float> v(n);
  if (dt == DType::F32) {
    REQUIRE(cudaMemcpy(v.data(), d.p, n * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
  } else {
    std::vector<std::uint16_t> bits(n);
    REQUIRE(cudaMemcpy(bits.data(), d.p, n * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (std::size_t i = 0; i < n; ++i) v[i] = from_bits(bits[i], dt);
  }
  return v;
}

Tensor host_tensor(const Shape& shape, const std::vector<float>& v, const std::string& name) {
  Tensor t = Tensor::empty(shape, DType::F32, host_allocator(), name);
  REQUIRE(static_cast<std::size_t>(t.numel()) == v.size());
  std::memcpy(t.data<float>(), v.data(), v.size() * 4);
  return t;
}

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

/// Relative to want's largest magnitude, or to `scale` when larger (the size of terms that cancel).
void check_close(const char* what, const std::vector<float>& got, const std::vector<float>& want, DType dt,
                 double scale = 0.0) {
  REQUIRE(got.size() == want.size());
  const test::Mismatch m =
      test::compare_relative(got.data(), want.data(), static_cast<std::int64_t>(got.size()), scale);
  INFO(std::string(what), ": ", m.str());
  CHECK(m.rel <= test::gpu_tolerance(dt));
}

/// lse rows that see no key are −inf on both sides; the others compare like any value.
void check_lse(std::vector<float> got, std::vector<float> want, DType dt) {
  std::int64_t mismatched_inf = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool gi = std::isinf(got[i]) && got[i] < 0, wi = std::isinf(want[i]) && want[i] < 0;
    if (gi != wi) ++mismatched_inf;
    if (gi && wi) got[i] = want[i] = 0.0f;
  }
  CHECK(mismatched_inf == 0);
  check_close("lse", got, want, dt);
}

struct Case {
  std::int64_t B = 2, T = 1, H = 4, Hkv = 1, D = 64, offset = 0;
  bool segments = false;
  DType dt = DType::F32;
  std::string str() const {
    return fmt::format("B {} T {} H {} Hkv {} D {} offset {} segments {} {}", B, T, H, Hkv, D, offset, segments,
                       dtype_name(dt));
  }
};

/// Documents of random lengths per row; the last few tokens of row 0 are padding (−1).
std::vector<std::int32_t> make_segments(std::int64_t B, std::int64_t T, std::mt19937& rng) {
  std::vector<std::int32_t> seg(static_cast<std::size_t>(B * T));
  std::uniform_int_distribution<int> boundary(0, 9);
  for (std::int64_t b = 0; b < B; ++b) {
    std::int32_t id = 0;
    const std::int64_t pad = b == 0 ? std::min<std::int64_t>(3, T / 4) : 0;
    for (std::int64_t t = 0; t < T; ++t) {
      if (t > 0 && boundary(rng) == 0) ++id;
      seg[static_cast<std::size_t>(b * T + t)] = t >= T - pad ? -1 : id;
    }
  }
  return seg;
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  const std::int64_t heads[][2] = {{4, 1}, {8, 8}, {8, 2}};
  for (DType dt : {DType::F32, DType::BF16})
    for (std::int64_t D : {64, 128})
      for (const auto& hh : heads)
        for (std::int64_t T : {1, 17, 128, 333}) {
          Case c;
          c.T = T, c.H = hh[0], c.Hkv = hh[1], c.D = D, c.dt = dt;
          c.offset = (T == 17 || T == 128) ? 45 : 0;  // continue a cache: keys 0 .. offset + T − 1
          cases.push_back(c);
          if (T == 128 || T == 333) {
            Case s = c;
            s.offset = 0, s.segments = true;
            cases.push_back(s);
          }
        }
  // the generic kernels with the low-precision types and a head dim without a tensor-core kernel
  for (DType dt : {DType::BF16, DType::F16}) {
    Case c;
    c.T = 70, c.H = 8, c.Hkv = 2, c.D = 96, c.offset = 9, c.dt = dt;
    cases.push_back(c);
    c.offset = 0, c.segments = true;
    cases.push_back(c);
  }
  return cases;
}

std::mt19937 rng_for(const Case& c) {
  return std::mt19937(static_cast<std::uint32_t>(test::kSeed ^ std::hash<std::string>{}(c.str())));
}

/// Random q, k, v, dout (rounded to the case's dtype) and segment ids for a case.
struct Inputs {
  std::vector<float> q, k, v, go;
  std::vector<std::int32_t> seg;
};
Inputs make_inputs(const Case& c) {
  std::mt19937 rng = rng_for(c);
  const std::int64_t S = c.offset + c.T;
  Inputs in;
  in.q = random_vec(static_cast<std::size_t>(c.B * c.T * c.H * c.D), rng);
  in.k = random_vec(static_cast<std::size_t>(c.B * c.Hkv * S * c.D), rng);
  in.v = random_vec(static_cast<std::size_t>(c.B * c.Hkv * S * c.D), rng);
  in.go = random_vec(static_cast<std::size_t>(c.B * c.T * c.H * c.D), rng);
  for (auto* x : {&in.q, &in.k, &in.v, &in.go}) round_to(*x, c.dt);
  if (c.segments) in.seg = make_segments(c.B, c.T, rng);
  return in;
}

void check_forward(const Case& c) {
  CAPTURE(c.str());
  const std::int64_t S = c.offset + c.T;
  const Inputs in = make_inputs(c);
  const std::vector<float>&q = in.q, &k = in.k, &v = in.v;
  const std::vector<std::int32_t>& seg = in.seg;

  Tensor tq = host_tensor({c.B, c.T, c.H, c.D}, q, "q"), tk = host_tensor({c.B, c.Hkv, S, c.D}, k, "k"),
         tv = host_tensor({c.B, c.Hkv, S, c.D}, v, "v");
  Tensor out = Tensor::empty({c.B, c.T, c.H, c.D}, DType::F32, host_allocator(), "out");
  Tensor lse = Tensor::empty({c.B, c.H, c.T}, DType::F32, host_allocator(), "lse");
  ops::AttentionOptions opts;
  opts.q_pos_offset = c.offset;
  opts.segment_ids = seg;
  ops::attention_forward(out, tq, tk, tv, opts, &lse);

  DevBuf dq = upload(q, c.dt), dk = upload(k, c.dt), dv = upload(v, c.dt);
  DevBuf dout(static_cast<std::size_t>(out.numel()) * dtype_size(c.dt));
  DevBuf dlse(static_cast<std::size_t>(lse.numel()) * 4);
  DevBuf dseg = upload_raw(seg.empty() ? std::vector<std::int32_t>{0} : seg);
  AttentionForwardArgs a;
  a.q = dq.p, a.k = dk.p, a.v = dv.p, a.out = dout.p, a.lse = dlse.as<float>();
  a.B = c.B, a.T = c.T, a.H = c.H, a.Hkv = c.Hkv, a.D = c.D, a.S = S, a.B_kv = c.B;
  a.k_stride_b = a.v_stride_b = c.Hkv * S * c.D, a.k_stride_h = a.v_stride_h = S * c.D;
  a.k_stride_s = a.v_stride_s = c.D;
  a.q_pos_offset = c.offset;
  a.segment_ids = c.segments ? dseg.as<std::int32_t>() : nullptr;
  kernels::launch_attention_forward(a, c.dt, nullptr);
  check_close("out", download(dout, static_cast<std::size_t>(out.numel()), c.dt), values(out), c.dt);
  check_lse(download(dlse, static_cast<std::size_t>(lse.numel()), DType::F32), values(lse), c.dt);
}

void check_backward(const Case& c) {
  CAPTURE(c.str());
  const std::int64_t S = c.offset + c.T;
  const Inputs in = make_inputs(c);
  const std::vector<float>&q = in.q, &k = in.k, &v = in.v, &go = in.go;
  const std::vector<std::int32_t>& seg = in.seg;

  const Shape qs{c.B, c.T, c.H, c.D}, ks{c.B, c.Hkv, S, c.D};
  Tensor tq = host_tensor(qs, q, "q"), tk = host_tensor(ks, k, "k"), tv = host_tensor(ks, v, "v");
  Tensor tgo = host_tensor(qs, go, "dout");
  Tensor out = Tensor::empty(qs, DType::F32, host_allocator(), "out");
  Tensor lse = Tensor::empty({c.B, c.H, c.T}, DType::F32, host_allocator(), "lse");
  ops::AttentionOptions opts;
  opts.q_pos_offset = c.offset;
  opts.segment_ids = seg;
  ops::attention_forward(out, tq, tk, tv, opts, &lse);
  // Both backwards read out rounded to the dtype (it enters only through delta = rowsum(dout ⊙ out)).
  std::vector<float> out_r = values(out);
  round_to(out_r, c.dt);
  out = host_tensor(qs, out_r, "out");
  Tensor gq = Tensor::empty(qs, DType::F32, host_allocator(), "dq");
  Tensor gk = Tensor::empty(ks, DType::F32, host_allocator(), "dk");
  Tensor gv = Tensor::empty(ks, DType::F32, host_allocator(), "dv");
  ops::attention_backward(gq, gk, gv, tgo, tq, tk, tv, out, lse, opts);

  // The GPU backward gets the CPU forward's out and lse, so only the backward is tested.
  DevBuf d_q = upload(q, c.dt), d_k = upload(k, c.dt), d_v = upload(v, c.dt), d_go = upload(go, c.dt);
  DevBuf d_out = upload(out_r, c.dt), d_lse = upload(values(lse), DType::F32);
  DevBuf d_gq(static_cast<std::size_t>(gq.numel()) * dtype_size(c.dt));
  DevBuf d_gk(static_cast<std::size_t>(gk.numel()) * dtype_size(c.dt));
  DevBuf d_gv(static_cast<std::size_t>(gv.numel()) * dtype_size(c.dt));
  DevBuf d_delta(static_cast<std::size_t>(kernels::attention_backward_workspace_bytes(c.B, c.H, c.T)));
  DevBuf dseg = upload_raw(seg.empty() ? std::vector<std::int32_t>{0} : seg);
  // Poison the outputs so that an element the kernels never write shows up.
  REQUIRE(cudaMemset(d_gk.p, 0x7f, static_cast<std::size_t>(gk.numel()) * dtype_size(c.dt)) == cudaSuccess);
  REQUIRE(cudaMemset(d_gv.p, 0x7f, static_cast<std::size_t>(gv.numel()) * dtype_size(c.dt)) == cudaSuccess);
  REQUIRE(cudaMemset(d_gq.p, 0x7f, static_cast<std::size_t>(gq.numel()) * dtype_size(c.dt)) == cudaSuccess);
  AttentionBackwardArgs a;
  a.q = d_q.p, a.k = d_k.p, a.v = d_v.p, a.out = d_out.p, a.dout = d_go.p, a.lse = d_lse.as<float>();
  a.dq = d_gq.p, a.dk = d_gk.p, a.dv = d_gv.p, a.delta = d_delta.as<float>();
  a.B = c.B, a.T = c.T, a.H = c.H, a.Hkv = c.Hkv, a.D = c.D, a.S = S, a.q_pos_offset = c.offset;
  a.segment_ids = c.segments ? dseg.as<std::int32_t>() : nullptr;
  kernels::launch_attention_backward(a, c.dt, nullptr);
  // With one visible key per query (T = 1 at offset 0) p = 1 and dP = delta, so dq and dk cancel to zero in
  // exact arithmetic; they are compared relative to the cancelled terms, scale·|delta|·|k| and scale·|delta|·|q|.
  double dq_scale = 0.0, dk_scale = 0.0;
  if (c.T == 1 && c.offset == 0) {
    double max_delta = 0.0, max_q = 0.0, max_k = 0.0;
    for (std::int64_t row = 0; row < c.B * c.T * c.H; ++row) {
      double delta = 0.0;
      for (std::int64_t d = 0; d < c.D; ++d) delta += double(go[row * c.D + d]) * out_r[row * c.D + d];
      max_delta = std::max(max_delta, std::fabs(delta));
    }
    for (float x : q) max_q = std::max(max_q, double(std::fabs(x)));
    for (float x : k) max_k = std::max(max_k, double(std::fabs(x)));
    const double softmax_scale = 1.0 / std::sqrt(double(c.D));
    dq_scale = softmax_scale * max_delta * max_k;
    dk_scale = softmax_scale * max_delta * max_q;
  }
  check_close("dq", download(d_gq, static_cast<std::size_t>(gq.numel()), c.dt), values(gq), c.dt, dq_scale);
  check_close("dk", download(d_gk, static_cast<std::size_t>(gk.numel()), c.dt), values(gk), c.dt, dk_scale);
  check_close("dv", download(d_gv, static_cast<std::size_t>(gv.numel()), c.dt), values(gv), c.dt);
}

}  // namespace

TEST_CASE("gpu.parity.attention forward matches the CPU op (all paths, shapes, offsets, segments)") {
  for (const Case& c : sweep()) check_forward(c);
}

TEST_CASE("gpu.parity.attention backward matches the CPU op (dq, dk, dv summed over GQA groups)") {
  for (const Case& c : sweep()) check_backward(c);
}

// sm_86 / sm_89 GPUs (A10, A40, L4, L40S, RTX 30xx and 40xx) let a block opt in to 99 KiB of shared memory, less
// than the head-width-128 tensor-core kernels take (~121 KiB): attention must run on the generic kernels
// there, with the same results, instead of failing to reserve the memory.
TEST_CASE("gpu.parity.attention bf16 at head width 128 with 99 KiB of shared memory per block: the generic kernels") {
  int device = 0, optin = 0;
  REQUIRE(cudaGetDevice(&device) == cudaSuccess);
  REQUIRE(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess);
#if ADAPT_CUDA_EMU
  struct Restore {
    int bytes;
    ~Restore() { cuda_emu::set_shared_memory_optin(bytes); }
  } restore{optin};
  cuda_emu::set_shared_memory_optin(99 * 1024);
  CHECK(kernels::attention_path_on_device(DType::BF16, 128) == kernels::AttentionPath::Generic);
  CHECK(kernels::attention_path_on_device(DType::BF16, 64) == kernels::AttentionPath::TensorCore);
  for (std::int64_t T : {17, 128}) {
    Case c;
    c.T = T, c.H = 8, c.Hkv = 2, c.D = 128, c.offset = 45, c.dt = DType::BF16;
    check_forward(c);
    check_backward(c);
  }
#else
  MESSAGE("this GPU lets a block have ", optin / 1024, " KiB of shared memory; the emulated GPU checks 99 KiB");
  const bool fits = optin >= 163 * 1024;  // sm_80 and sm_90 (227 KiB); sm_86 / sm_89 have 99 KiB
  CHECK((kernels::attention_path_on_device(DType::BF16, 128) == kernels::AttentionPath::TensorCore) == fits);
#endif
}

TEST_CASE("gpu.parity.attention ragged prefill over shared cache rows (q_pos_offsets, kv_rows)") {
  for (DType dt : {DType::F32, DType::BF16}) {
    CAPTURE(dtype_name(dt));
    const std::int64_t B = 3, T = 17, H = 8, Hkv = 2, D = 128, S = 96, B_kv = 4;
    const std::vector<std::int64_t> offsets = {0, 10, 79}, rows = {1, 3, 0};
    std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed + 7));
    std::vector<float> q = random_vec(static_cast<std::size_t>(B * T * H * D), rng);
    std::vector<float> k = random_vec(static_cast<std::size_t>(B_kv * Hkv * S * D), rng);
    std::vector<float> v = random_vec(static_cast<std::size_t>(B_kv * Hkv * S * D), rng);
    for (auto* x : {&q, &k, &v}) round_to(*x, dt);
    Tensor out = Tensor::empty({B, T, H, D}, DType::F32, host_allocator(), "out");
    Tensor lse = Tensor::empty({B, H, T}, DType::F32, host_allocator(), "lse");
    ops::AttentionOptions opts;
    opts.q_pos_offsets = offsets;
    opts.kv_rows = rows;
    ops::attention_forward(out, host_tensor({B, T, H, D}, q, "q"), host_tensor({B_kv, Hkv, S, D}, k, "k"),
                           host_tensor({B_kv, Hkv, S, D}, v, "v"), opts, &lse);
    DevBuf dq = upload(q, dt), dk = upload(k, dt), dv = upload(v, dt), doff = upload_raw(offsets),
           drows = upload_raw(rows);
    DevBuf dout(static_cast<std::size_t>(out.numel()) * dtype_size(dt));
    DevBuf dlse(static_cast<std::size_t>(lse.numel()) * 4);
    AttentionForwardArgs a;
    a.q = dq.p, a.k = dk.p, a.v = dv.p, a.out = dout.p, a.lse = dlse.as<float>();
    a.B = B, a.T = T, a.H = H, a.Hkv = Hkv, a.D = D, a.S = S, a.B_kv = B_kv;
    a.k_stride_b = a.v_stride_b = Hkv * S * D, a.k_stride_h = a.v_stride_h = S * D, a.k_stride_s = a.v_stride_s = D;
    a.q_pos_offsets = doff.as<std::int64_t>();
    a.kv_rows = drows.as<std::int64_t>();
    kernels::launch_attention_forward(a, dt, nullptr);
    check_close("out", download(dout, static_cast<std::size_t>(out.numel()), dt), values(out), dt);
    check_lse(download(dlse, static_cast<std::size_t>(lse.numel()), DType::F32), values(lse), dt);
  }
}

#if !ADAPT_CUDA_EMU  // the Tensor glue (src/ops/cuda) exists only in a CUDA build, not under tests/cuda_emu
namespace {

/// A device tensor of dtype dt holding `host` (f32 values, rounded to dt).
Tensor device_tensor(const Tensor& host, DType dt) {
  Tensor d = Tensor::empty(host.shape(), dt, backend::cuda_allocator(0), host.name());
  backend::copy(d, host.to_host(dt));
  return d;
}

/// The f32 values of a device tensor.
std::vector<float> device_values(const Tensor& dev) {
  Tensor h = Tensor::empty(dev.shape(), dev.dtype(), host_allocator(), dev.name());
  backend::copy(h, dev);
  return values(h.to_host(DType::F32));
}

}  // namespace

TEST_CASE("gpu.parity.attention Tensor glue: forward, backward and decode on device tensors") {
  for (DType dt : {DType::F32, DType::BF16}) {
    Case c;
    c.T = 70, c.H = 8, c.Hkv = 2, c.D = 64, c.segments = true, c.dt = dt;
    CAPTURE(c.str());
    const Inputs in = make_inputs(c);
    const Shape qs{c.B, c.T, c.H, c.D}, ks{c.B, c.Hkv, c.T, c.D};
    Tensor q = host_tensor(qs, in.q, "q"), k = host_tensor(ks, in.k, "k"), v = host_tensor(ks, in.v, "v");
    Tensor go = host_tensor(qs, in.go, "dout");
    Tensor out = Tensor::empty(qs, DType::F32, host_allocator(), "out");
    Tensor lse = Tensor::empty({c.B, c.H, c.T}, DType::F32, host_allocator(), "lse");
    ops::AttentionOptions opts;
    opts.segment_ids = in.seg;
    ops::attention_forward(out, q, k, v, opts, &lse);
    std::vector<float> out_r = values(out);
    round_to(out_r, dt);
    out = host_tensor(qs, out_r, "out");
    Tensor gq = Tensor::empty(qs, DType::F32, host_allocator(), "dq");
    Tensor gk = Tensor::empty(ks, DType::F32, host_allocator(), "dk");
    Tensor gv = Tensor::empty(ks, DType::F32, host_allocator(), "dv");
    ops::attention_backward(gq, gk, gv, go, q, k, v, out, lse, opts);

    Tensor dq_ = device_tensor(q, dt), dk_ = device_tensor(k, dt), dv_ = device_tensor(v, dt);
    Tensor dgo = device_tensor(go, dt);
    Tensor dout = Tensor::empty(qs, dt, backend::cuda_allocator(0), "out");
    Tensor dlse = Tensor::empty({c.B, c.H, c.T}, DType::F32, backend::cuda_allocator(0), "lse");
    ops::cuda::attention_forward(dout, dq_, dk_, dv_, opts, &dlse);
    check_close("glue out", device_values(dout), out_r, dt);
    check_lse(device_values(dlse), values(lse), dt);

    Tensor dout_ref = device_tensor(out, dt), dlse_ref = device_tensor(lse, DType::F32);
    Tensor ggq = Tensor::empty(qs, dt, backend::cuda_allocator(0), "dq");
    Tensor ggk = Tensor::empty(ks, dt, backend::cuda_allocator(0), "dk");
    Tensor ggv = Tensor::empty(ks, dt, backend::cuda_allocator(0), "dv");
    ops::cuda::attention_backward(ggq, ggk, ggv, dgo, dq_, dk_, dv_, dout_ref, dlse_ref, opts);
    check_close("glue dq", device_values(ggq), values(gq), dt);
    check_close("glue dk", device_values(ggk), values(gk), dt);
    check_close("glue dv", device_values(ggv), values(gv), dt);

    // Decode: the last query of each sequence over its keys, with the cache as k/v (B, Hkv, T, D).
    const std::vector<std::int64_t> lens = {c.T, 33};
    std::vector<float> q1;
    for (std::int64_t b = 0; b < c.B; ++b) {
      const std::int64_t t = lens[static_cast<std::size_t>(b)] - 1;
      const auto first = in.q.begin() + (b * c.T + t) * c.H * c.D;
      q1.insert(q1.end(), first, first + c.H * c.D);
    }
    Tensor q1h = host_tensor({c.B, 1, c.H, c.D}, q1, "q1");
    Tensor o1 = Tensor::empty({c.B, 1, c.H, c.D}, DType::F32, host_allocator(), "o1");
    ops::AttentionOptions dopts;
    const std::vector<std::int64_t> offsets = {lens[0] - 1, lens[1] - 1};
    dopts.q_pos_offsets = offsets;
    ops::attention_forward(o1, q1h, k, v, dopts);
    Tensor dq1 = device_tensor(host_tensor({c.B, c.H, c.D}, q1, "q1"), dt);
    Tensor do1 = Tensor::empty({c.B, c.H, c.D}, dt, backend::cuda_allocator(0), "o1");
    ops::cuda::decode_attention(do1, dq1, dk_, dv_, lens);
    check_close("glue decode", device_values(do1), values(o1), dt);
  }
}
#endif  // !ADAPT_CUDA_EMU

namespace {

/// Decode over cache rows `rows` with `lens` keys each; a length of 0 must give zeros.
void check_decode(DType dt, std::int64_t D, std::int64_t H, std::int64_t Hkv, std::int64_t S_max,
                  const std::vector<std::int64_t>& lens, const std::vector<std::int64_t>& rows, int plan_sms) {
  const std::int64_t B = static_cast<std::int64_t>(lens.size()), B_kv = 4;
  const std::int64_t max_len = *std::max_element(lens.begin(), lens.end());
  CAPTURE(fmt::format("{} D {} H {} Hkv {} S_max {} max_len {} plan_sms {}", dtype_name(dt), D, H, Hkv, S_max, max_len,
                      plan_sms));
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed + static_cast<std::uint64_t>(D * 31 + max_len)));
  std::vector<float> q = random_vec(static_cast<std::size_t>(B * H * D), rng);
  std::vector<float> k = random_vec(static_cast<std::size_t>(B_kv * Hkv * S_max * D), rng);
  std::vector<float> v = random_vec(static_cast<std::size_t>(B_kv * Hkv * S_max * D), rng);
  for (auto* x : {&q, &k, &v}) round_to(*x, dt);
  const kernels::DecodePlan plan = plan_sms > 0 ? kernels::plan_decode_attention(B, H, max_len, plan_sms)
                                                : kernels::decode_attention_plan_for_device(B, H, Hkv, max_len);
  MESSAGE("decode plan: ", plan.n_splits, " splits of ", plan.keys_per_split, " keys");
  DevBuf dq = upload(q, dt), dk = upload(k, dt), dv = upload(v, dt), dlens = upload_raw(lens), drows = upload_raw(rows);
  DevBuf dout(static_cast<std::size_t>(B * H * D) * dtype_size(dt));
  DevBuf ws(static_cast<std::size_t>(kernels::decode_attention_workspace_bytes(plan, B, H, D)));
  kernels::DecodeAttentionArgs a;
  a.q = dq.p, a.k = dk.p, a.v = dv.p, a.out = dout.p, a.seq_lens = dlens.as<std::int64_t>();
  a.kv_rows = drows.as<std::int64_t>();
  a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.S_max = S_max, a.B_kv = B_kv;
  a.k_stride_b = a.v_stride_b = Hkv * S_max * D, a.k_stride_h = a.v_stride_h = S_max * D;
  a.k_stride_s = a.v_stride_s = D;
  a.max_seq_len = max_len;
  a.workspace = ws.as<float>();
  kernels::launch_decode_attention(a, plan, dt, nullptr);
  const std::vector<float> got = download(dout, static_cast<std::size_t>(B * H * D), dt);

  // CPU: the sequences with keys, as a ragged batch of one query each at position len − 1.
  std::vector<std::int64_t> sel, offsets, sel_rows;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto ub = static_cast<std::size_t>(b);
    if (lens[ub] == 0) {
      for (std::int64_t i = 0; i < H * D; ++i) CHECK(got[static_cast<std::size_t>(b * H * D + i)] == 0.0f);
      continue;
    }
    sel.push_back(b), offsets.push_back(lens[ub] - 1), sel_rows.push_back(rows[ub]);
  }
  const std::int64_t Bs = static_cast<std::int64_t>(sel.size());
  std::vector<float> qs, gs;
  for (std::int64_t b : sel) {
    qs.insert(qs.end(), q.begin() + b * H * D, q.begin() + (b + 1) * H * D);
    gs.insert(gs.end(), got.begin() + b * H * D, got.begin() + (b + 1) * H * D);
  }
  Tensor out = Tensor::empty({Bs, 1, H, D}, DType::F32, host_allocator(), "out");
  ops::AttentionOptions opts;
  opts.q_pos_offsets = offsets;
  opts.kv_rows = sel_rows;
  ops::attention_forward(out, host_tensor({Bs, 1, H, D}, qs, "q"), host_tensor({B_kv, Hkv, S_max, D}, k, "k"),
                         host_tensor({B_kv, Hkv, S_max, D}, v, "v"), opts);
  check_close("decode out", gs, values(out), dt);
}

}  // namespace

TEST_CASE("gpu.parity.decode_attention matches the CPU op over ragged cache rows") {
  for (DType dt : {DType::F32, DType::BF16})
    for (std::int64_t D : {64, 128}) {
      // short contexts: one split, and many (a plan made for a huge GPU) so the combine is exercised
      for (int sms : {0, 1, 100000}) check_decode(dt, D, 8, 2, 1600, {1, 37, 0, 1500}, {2, 0, 1, 3}, sms);
      check_decode(dt, D, 4, 1, 333, {333, 17}, {3, 1}, 0);
    }
  // A block takes 8, 4, 2 or 1 query heads of one KV head (decode_heads_per_block): 16 / 2 heads take 8,
  // 8 / 2 and 4 / 1 (above) 4, 6 / 3 two, 6 / 2 and 4 / 4 one.
  for (const auto& [H, Hkv] : {std::pair<std::int64_t, std::int64_t>{16, 2}, {6, 3}, {6, 2}, {4, 4}}) {
    check_decode(DType::BF16, 64, H, Hkv, 700, {1, 650, 0, 333}, {2, 0, 1, 3}, 0);
    check_decode(DType::F32, 128, H, Hkv, 700, {699, 65}, {1, 3}, 100000);
  }
}

TEST_CASE("gpu.parity.decode_attention long contexts are split over the whole GPU") {
  for (DType dt : {DType::F32, DType::BF16}) {
    const kernels::DecodePlan plan = kernels::decode_attention_plan_for_device(2, 8, 2, 20000);
    CHECK(plan.n_splits > 1);
    check_decode(dt, 128, 8, 2, 20000, {20000, 7001}, {0, 2}, 0);
  }
}

// A bf16 KV cache under f32 queries (runtime.kv_cache_dtype = "bf16"): the kernels widen each cache
// element exactly, so decode attention and the generic forward give the bits of an f32 cache holding
// the same values, with the same plan.
TEST_CASE("gpu.parity.attention over a bf16 KV cache under f32 queries equals the f32 cache of the same values") {
  const std::int64_t B = 2, B_kv = 3, H = 8, Hkv = 2, D = 64, S_max = 300, T = 5;
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed + 77));
  std::vector<float> q = random_vec(static_cast<std::size_t>(B * T * H * D), rng);
  std::vector<float> k = random_vec(static_cast<std::size_t>(B_kv * Hkv * S_max * D), rng);
  std::vector<float> v = random_vec(static_cast<std::size_t>(B_kv * Hkv * S_max * D), rng);
  round_to(k, DType::BF16);
  round_to(v, DType::BF16);
  const std::vector<std::int64_t> lens = {299, 41}, rows = {2, 0}, offsets = {294, 36};
  DevBuf dq = upload(q, DType::F32), dlens = upload_raw(lens), drows = upload_raw(rows), doff = upload_raw(offsets);
  DevBuf k32 = upload(k, DType::F32), v32 = upload(v, DType::F32), k16 = upload(k, DType::BF16),
         v16 = upload(v, DType::BF16);
  const std::size_t n_out = static_cast<std::size_t>(B * T * H * D);
  auto strides = [&](auto& a) {
    a.k_stride_b = a.v_stride_b = Hkv * S_max * D, a.k_stride_h = a.v_stride_h = S_max * D;
    a.k_stride_s = a.v_stride_s = D;
  };
  // Decode: query 0 of each sequence over its first lens[b] keys.
  const kernels::DecodePlan plan = kernels::plan_decode_attention(B, H, 299, 100000);  // several splits
  auto decode = [&](const DevBuf& kb, const DevBuf& vb, DType kv) {
    DevBuf out(static_cast<std::size_t>(B * H * D) * sizeof(float));
    DevBuf ws(static_cast<std::size_t>(kernels::decode_attention_workspace_bytes(plan, B, H, D)));
    kernels::DecodeAttentionArgs a;
    a.q = dq.p, a.k = kb.p, a.v = vb.p, a.out = out.p, a.seq_lens = dlens.as<std::int64_t>();
    a.kv_rows = drows.as<std::int64_t>();
    a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.S_max = S_max, a.B_kv = B_kv, a.max_seq_len = 299;
    strides(a);
    a.workspace = ws.as<float>();
    kernels::launch_decode_attention(a, plan, DType::F32, kv, nullptr);
    return download(out, static_cast<std::size_t>(B * H * D), DType::F32);
  };
  const std::vector<float> d16 = decode(k16, v16, DType::BF16), d32 = decode(k32, v32, DType::F32);
  CHECK(d16 == d32);
  // A prefill chunk of T queries at per-sequence offsets (the generic forward).
  auto forward = [&](const DevBuf& kb, const DevBuf& vb, DType kv) {
    DevBuf out(n_out * sizeof(float));
    kernels::AttentionForwardArgs a;
    a.q = dq.p, a.k = kb.p, a.v = vb.p, a.out = out.p;
    a.B = B, a.T = T, a.H = H, a.Hkv = Hkv, a.D = D, a.S = S_max, a.B_kv = B_kv;
    strides(a);
    a.q_pos_offsets = doff.as<std::int64_t>();
    a.kv_rows = drows.as<std::int64_t>();
    kernels::launch_attention_forward(a, DType::F32, kv, nullptr);
    return download(out, n_out, DType::F32);
  };
  const std::vector<float> f16 = forward(k16, v16, DType::BF16), f32 = forward(k32, v32, DType::F32);
  CHECK(f16 == f32);
  // The other mixes are refused by name.
  kernels::AttentionForwardArgs bad;
  CHECK_THROWS_WITH_AS(kernels::launch_attention_forward(bad, DType::BF16, DType::F32, nullptr),
                       doctest::Contains("k/v of type f32 under q of type bf16"), UnsupportedError);
}

#endif  // ADAPT_HAVE_CUDA
