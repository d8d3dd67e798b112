// gpu_ops_bench: speed of every CUDA op at Llama-3.1-8B shapes against ceilings measured in the same
// run — the op table of scripts/gpu_check.sh (a timing tool, not a test; built only with CUDA).
//
//   build/tests/gpu_ops_bench [--tokens 4096] [--reps 20] [--warmup 3] [--device 0] [--quick]
//                             [--preset llama-3.1-8b] [--gemm 8192]
//
//   --tokens T   rows of the training-shaped ops (one sequence of T tokens); default 4096
//   --reps R     timed repetitions per op; the median counts
//   --warmup W   untimed repetitions first (cuBLASLt's algorithm choice, the allocator's first cudaMalloc)
//   --quick      T = 512, decode contexts 1k/4k, 5 reps: a smoke run that checks that every op launches
//   --preset P   the shapes of another model preset (adapt_model's names); `tiny` with --gemm 256 is
//                a rehearsal on the CPU emulation of CUDA (tests/cuda_emu/), which checks that the
//                harness runs, not speed
//   --gemm N     the size of the GEMM ceiling, N x N x N (default 8192)
//
// Shapes (Llama-3.1-8B by default): hidden C = 4096, FFN F = 14336, 32 query heads and 8 KV heads of
// D = 128, vocabulary V = 128256, 32 layers (AdamW's LoRA size); activations and weights bf16 (norm
// weights, rstd and optimizer state f32, as in the ops). Every op goes through its ops:: entry point on
// device tensors (the dispatch the model uses), decode attention through ops::cuda::decode_attention,
// AdamW through its launcher.
//
// Timing: one pair of CUDA events around each repetition on the legacy default stream (where the
// ops run), the median of R. Ceilings, measured first in the same process:
//   - bandwidth: cudaMemcpy device to device of 1 GiB, counted as 2 GiB moved (read + write), as
//     CUDA's bandwidthTest does;
//   - bf16 GEMM: cuBLASLt (ops::cuda::gemm) at 8192 x 8192 x 8192, bf16 in and out, f32 accumulation.
// Memory-bound ops report GB/s over the bytes they must move at least (each input read once, each
// output written once; the "bytes" column says which), so a two-pass kernel shows below 1 even when it
// streams at the copy's rate. GEMMs and attention report TFLOP/s over 2·M·N·K, and causal attention over
// half the T x S square (forward 4·T²·H·D/2, backward 2.5x the forward: five products instead of two).
// Decode attention reports GB/s over the KV cache it reads; its ceiling row is the HBM bound (the
// cache's bytes / the copy bandwidth) as a time.
//
// Where ops copy ids to the host for their range checks (embedding, cross-entropy) or copy host
// lengths to the device (decode), those copies are inside the timed region: that is what a caller pays.
//
// Output: a markdown table on stdout; progress on stderr. Exit 77 with the reason when no CUDA device
// is visible.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_runtime.h"
#include "core/app_main.h"
#include "core/error.h"
#include "dtype/dtype.h"
#include "kernels/adamw.h"
#include "kernels/launch_plan.h"
#include "model/llama_config.h"
#include "ops/attention.h"
#include "ops/cast.h"
#include "ops/cross_entropy.h"
#include "ops/cuda/attention_cuda.h"
#include "ops/cuda/gemm_cublaslt.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "tensor/tensor.h"

using namespace adapt;

namespace {

constexpr const char* kUsage =
    "usage: gpu_ops_bench [--tokens 4096] [--reps 20] [--warmup 3] [--device 0] [--quick] [--preset llama-3.1-8b] "
    "[--gemm 8192]\n";

struct Options {
  std::int64_t tokens = 4096;
  int reps = 20;
  int warmup = 3;
  int device = 0;
  bool quick = false;
  std::string preset = "llama-3.1-8b";
  std::int64_t gemm = 8192;
};

// The model's shapes (--preset; Llama-3.1-8B by default), set once in run().
std::int64_t g_hidden = 0, g_ffn = 0, g_heads = 0, g_kv_heads = 0, g_head_dim = 0, g_vocab = 0, g_layers = 0;

/// Median milliseconds of `reps` runs of f, each between two events on the legacy default stream.
double time_ms(const Options& o, const std::function<void()>& f) {
  for (int i = 0; i < o.warmup; ++i) f();
  ADAPT_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ms;
  backend::cuda::Event start, stop;
  for (int i = 0; i < o.reps; ++i) {
    start.record(nullptr);
    f();
    stop.record(nullptr);
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor dev(const Shape& shape, DType dtype, int device, const char* name) {
  return Tensor::empty(shape, dtype, backend::cuda_allocator(device), name);
}

/// Fills a device tensor with values in [-scale, scale) (float dtypes) by copying one host block of
/// pseudo-random values over it.
void fill(Tensor& t, float scale, std::uint32_t seed = 1) {
  const std::size_t elem = dtype_size(t.dtype());
  const std::size_t n = static_cast<std::size_t>(t.numel());
  const std::size_t block = std::min<std::size_t>(n, std::size_t{1} << 22);
  std::vector<float> v(block);
  std::uint32_t s = seed * 2654435761u + 12345u;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * (static_cast<float>(s >> 8) / 8388608.0f - 1.0f);
  }
  Tensor host_f32 =
      Tensor::wrap(v.data(), Shape{static_cast<std::int64_t>(block)}, DType::F32, Device{}, nullptr, "fill");
  Tensor host = Tensor::empty(Shape{static_cast<std::int64_t>(block)}, t.dtype(), host_allocator(), "fill");
  ops::cast(host, host_f32);
  for (std::size_t off = 0; off < n; off += block) {
    const std::size_t count = std::min(block, n - off);
    ADAPT_CUDA_CHECK(
        cudaMemcpy(static_cast<char*>(t.raw()) + off * elem, host.raw(), count * elem, cudaMemcpyHostToDevice));
  }
}

/// Token ids (i32) in [0, vocab), pseudo-random, on the device.
Tensor ids_on_device(std::int64_t n, std::int64_t vocab, int device, const char* name) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  std::uint64_t s = 88172645463325252ull;
  for (auto& id : ids) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    id = static_cast<std::int32_t>(s % static_cast<std::uint64_t>(vocab));
  }
  Tensor t = dev(Shape{n}, DType::I32, device, name);
  ADAPT_CUDA_CHECK(cudaMemcpy(t.raw(), ids.data(), ids.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  return t;
}

struct Row {
  std::string op, shape, measure;  // measure: "bytes: ..." or "flops: ..."
  double ms = 0;
  double achieved = 0;  // GB/s or TFLOP/s
  std::string unit;     // "GB/s" or "TFLOP/s"
  double ceiling = 0;
};

std::vector<Row> g_rows;
double g_bw = 0;      // GB/s, device-to-device copy
double g_tflops = 0;  // bf16 GEMM at --gemm³ (8192³)

void report(Row r) {
  fmt::print(stderr, "  {:<28} {:>9.3f} ms  {:>8.1f} {}  ({:.0f}% of the ceiling)\n", r.op, r.ms, r.achieved, r.unit,
             100.0 * r.achieved / r.ceiling);
  g_rows.push_back(std::move(r));
}

void mem_row(const std::string& op, const std::string& shape, const std::string& what, double bytes, double ms) {
  report(Row{op, shape, fmt::format("{} ({:.3g} GB)", what, bytes / 1e9), ms, bytes / (ms * 1e-3) / 1e9, "GB/s", g_bw});
}

void flop_row(const std::string& op, const std::string& shape, double flops, double ms) {
  report(
      Row{op, shape, fmt::format("{:.3g} TFLOP", flops / 1e12), ms, flops / (ms * 1e-3) / 1e12, "TFLOP/s", g_tflops});
}

void ceilings(const Options& o) {
  const std::size_t bytes = std::size_t{1} << 30;
  Tensor a = dev(Shape{static_cast<std::int64_t>(bytes)}, DType::U8, o.device, "copy_src");
  Tensor b = dev(Shape{static_cast<std::int64_t>(bytes)}, DType::U8, o.device, "copy_dst");
  ADAPT_CUDA_CHECK(cudaMemset(a.raw(), 1, bytes));
  const double copy_ms =
      time_ms(o, [&] { ADAPT_CUDA_CHECK(cudaMemcpy(b.raw(), a.raw(), bytes, cudaMemcpyDeviceToDevice)); });
  g_bw = 2.0 * static_cast<double>(bytes) / (copy_ms * 1e-3) / 1e9;

  const std::int64_t n = o.gemm;
  Tensor x = dev(Shape{n, n}, DType::BF16, o.device, "gemm_a"), w = dev(Shape{n, n}, DType::BF16, o.device, "gemm_b"),
         y = dev(Shape{n, n}, DType::BF16, o.device, "gemm_c");
  fill(x, 1.0f, 1);
  fill(w, 1.0f, 2);
  ops::cuda::GemmProblem p;
  p.m = p.n = p.k = n;
  p.transpose_b = true;
  p.a_type = p.b_type = p.c_type = DType::BF16;
  const double gemm_ms =
      time_ms(o, [&] { ops::cuda::gemm(p, 1.0f, x.raw(), w.raw(), 0.0f, y.raw(), nullptr, o.device, nullptr); });
  const double flops = 2.0 * static_cast<double>(n) * n * n;
  g_tflops = flops / (gemm_ms * 1e-3) / 1e12;
  g_rows.push_back(Row{"ceiling: D2D copy (cudaMemcpy)", "1 GiB", "2 GiB moved", copy_ms, g_bw, "GB/s", g_bw});
  g_rows.push_back(Row{"ceiling: cuBLASLt bf16 GEMM", fmt::format("{}³", n), fmt::format("{:.3g} TFLOP", flops / 1e12),
                       gemm_ms, g_tflops, "TFLOP/s", g_tflops});
  fmt::print(stderr, "  ceilings: copy {:.0f} GB/s, bf16 GEMM {:.1f} TFLOP/s\n", g_bw, g_tflops);
}

void bench_gemms(const Options& o) {
  const std::int64_t T = o.tokens;
  struct G {
    const char* name;
    std::int64_t n, k;
  };
  // y (T, out) = x (T, in) · W (out, in)ᵀ: the projections of one layer and the LM head
  const G gemms[] = {{"matmul q,k,v (fused)", g_hidden + 2 * g_kv_heads * g_head_dim, g_hidden},
                     {"matmul o_proj", g_hidden, g_hidden},
                     {"matmul gate+up (fused)", 2 * g_ffn, g_hidden},
                     {"matmul down_proj", g_hidden, g_ffn},
                     {"matmul lm_head", g_vocab, g_hidden}};
  for (const G& g : gemms) {
    Tensor x = dev(Shape{T, g.k}, DType::BF16, o.device, "x"), w = dev(Shape{g.n, g.k}, DType::BF16, o.device, "w"),
           y = dev(Shape{T, g.n}, DType::BF16, o.device, "y");
    fill(x, 1.0f, 3);
    fill(w, 0.05f, 4);
    const double ms = time_ms(o, [&] { ops::matmul(y, x, w); });
    flop_row(g.name, fmt::format("{}x{}x{} bf16", T, g.n, g.k), 2.0 * T * g.n * g.k, ms);
  }
  {  // the backward's dx = dy · W (no transpose) for the down projection's input
    Tensor dy = dev(Shape{T, g_hidden}, DType::BF16, o.device, "dy"),
           w = dev(Shape{g_hidden, g_ffn}, DType::BF16, o.device, "w"),
           dx = dev(Shape{T, g_ffn}, DType::BF16, o.device, "dx");
    fill(dy, 1.0f, 5);
    fill(w, 0.05f, 6);
    const double ms = time_ms(o, [&] { ops::matmul(dx, dy, w, ops::MatmulOptions{.transpose_b = false}); });
    flop_row("matmul down_proj dx", fmt::format("{}x{}x{} bf16", T, g_ffn, g_hidden), 2.0 * T * g_ffn * g_hidden, ms);
  }
}

void bench_rows(const Options& o) {
  const std::int64_t T = o.tokens, C = g_hidden, F = g_ffn;
  const double T_ = static_cast<double>(T);
  {  // RMSNorm
    Tensor x = dev(Shape{T, C}, DType::BF16, o.device, "x"), y = dev(Shape{T, C}, DType::BF16, o.device, "y"),
           w = dev(Shape{C}, DType::F32, o.device, "w"), rstd = dev(Shape{T}, DType::F32, o.device, "rstd"),
           dy = dev(Shape{T, C}, DType::BF16, o.device, "dy"), dx = dev(Shape{T, C}, DType::BF16, o.device, "dx"),
           dw = dev(Shape{C}, DType::F32, o.device, "dw");
    fill(x, 1.0f, 7);
    fill(w, 1.0f, 8);
    fill(dy, 1.0f, 9);
    const double fwd = time_ms(o, [&] { ops::rms_norm_forward(y, x, w, 1e-5f, &rstd); });
    mem_row("rms_norm forward", fmt::format("({}, {}) bf16", T, C), "read x, write y", 4.0 * T_ * C, fwd);
    ops::rms_norm_forward(y, x, w, 1e-5f, &rstd);
    const double bwd = time_ms(o, [&] { ops::rms_norm_backward(dx, nullptr, dy, x, w, rstd, {}); });
    mem_row("rms_norm backward (dx)", fmt::format("({}, {}) bf16", T, C), "read dy, x; write dx", 6.0 * T_ * C, bwd);
    const double bwd_w = time_ms(o, [&] { ops::rms_norm_backward(dx, &dw, dy, x, w, rstd, {}); });
    mem_row("rms_norm backward (dx, dw)", fmt::format("({}, {}) bf16", T, C), "read dy, x; write dx", 6.0 * T_ * C,
            bwd_w);
  }
  {  // RoPE on q (the same kernel runs on k with 8 heads)
    const std::int64_t half = g_head_dim / 2;
    std::vector<float> inv_freq(static_cast<std::size_t>(half));
    for (std::int64_t i = 0; i < half; ++i)
      inv_freq[static_cast<std::size_t>(i)] = static_cast<float>(std::pow(500000.0, -2.0 * i / g_head_dim));
    Tensor cos = dev(Shape{T, half}, DType::F32, o.device, "cos"),
           sin = dev(Shape{T, half}, DType::F32, o.device, "sin");
    ops::rope_table_fill(cos, sin, inv_freq, 0);
    Tensor q = dev(Shape{1, T, g_heads, g_head_dim}, DType::BF16, o.device, "q");
    fill(q, 1.0f, 10);
    const double bytes = 4.0 * T_ * g_heads * g_head_dim + 8.0 * T_ * half;
    const std::string shape = fmt::format("(1, {}, {}, {}) bf16", T, g_heads, g_head_dim);
    mem_row("rope forward (q)", shape, "read + write q, read tables", bytes,
            time_ms(o, [&] { ops::rope_forward(q, cos, sin); }));
    mem_row("rope backward (dq)", shape, "read + write dq, read tables", bytes,
            time_ms(o, [&] { ops::rope_backward(q, cos, sin); }));
  }
  {  // SwiGLU
    Tensor g = dev(Shape{T, F}, DType::BF16, o.device, "gate"), u = dev(Shape{T, F}, DType::BF16, o.device, "up"),
           out = dev(Shape{T, F}, DType::BF16, o.device, "out"), dg = dev(Shape{T, F}, DType::BF16, o.device, "dgate"),
           du = dev(Shape{T, F}, DType::BF16, o.device, "dup");
    fill(g, 2.0f, 11);
    fill(u, 1.0f, 12);
    const std::string shape = fmt::format("({}, {}) bf16", T, F);
    mem_row("swiglu forward", shape, "read gate, up; write out", 6.0 * T_ * F,
            time_ms(o, [&] { ops::swiglu_forward(out, g, u); }));
    mem_row("swiglu backward", shape, "read dout, gate, up; write dgate, dup", 10.0 * T_ * F,
            time_ms(o, [&] { ops::swiglu_backward(dg, du, out, g, u); }));
  }
  {  // embedding gather (the backward is a scatter-add into an f32 table: tests only, embeddings are frozen)
    Tensor table = dev(Shape{g_vocab, C}, DType::BF16, o.device, "embed_tokens"),
           out = dev(Shape{T, C}, DType::BF16, o.device, "h");
    fill(table, 0.05f, 13);
    Tensor ids = ids_on_device(T, g_vocab, o.device, "ids");
    mem_row("embedding forward", fmt::format("{} ids of ({}, {}) bf16", T, g_vocab, C), "read T rows, write T rows",
            4.0 * T_ * C, time_ms(o, [&] { ops::embedding_forward(out, table, ids); }));
    Tensor dtable = dev(Shape{g_vocab, C}, DType::F32, o.device, "dtable");
    ADAPT_CUDA_CHECK(cudaMemset(dtable.raw(), 0, dtable.size_bytes()));
    mem_row("embedding backward", fmt::format("{} ids into ({}, {}) f32", T, g_vocab, C),
            "read dout, read + write T f32 rows", 2.0 * T_ * C + 8.0 * T_ * C,
            time_ms(o, [&] { ops::embedding_backward(dtable, out, ids); }));
  }
  {  // fused cross-entropy over the LM head's logits (forward and the gradient in place)
    Tensor logits = dev(Shape{T, g_vocab}, DType::BF16, o.device, "logits");
    Tensor row_loss = dev(Shape{T}, DType::F32, o.device, "row_loss");
    Tensor targets = ids_on_device(T, g_vocab, o.device, "targets");
    fill(logits, 4.0f, 14);
    const ops::CrossEntropyOptions opts{.grad_scale = 1.0f / static_cast<float>(T)};
    // the gradient overwrites the logits; the values stay in range, so rerunning it times the same work
    mem_row("cross_entropy fwd+bwd", fmt::format("({}, {}) bf16", T, g_vocab), "read logits, write dlogits",
            4.0 * T_ * g_vocab,
            time_ms(o, [&] { ops::cross_entropy_forward_backward(logits, targets, opts, &row_loss); }));
  }
  {  // cast f32 -> bf16 (weights to the compute dtype)
    Tensor src = dev(Shape{F, C}, DType::F32, o.device, "src"), dst = dev(Shape{F, C}, DType::BF16, o.device, "dst");
    fill(src, 1.0f, 15);
    mem_row("cast f32 -> bf16", fmt::format("({}, {})", F, C), "read f32, write bf16", 6.0 * F * C,
            time_ms(o, [&] { ops::cast(dst, src); }));
  }
  {  // AdamW over the LoRA parameters of the model (r = 16 on q, k, v, o, gate, up, down of every layer)
    const std::int64_t r = 16, layers = g_layers;
    const std::int64_t per_layer = r * ((g_hidden + g_hidden) + (g_hidden + g_kv_heads * g_head_dim) * 2 +
                                        (g_hidden + g_hidden) + (g_hidden + g_ffn) * 2 + (g_ffn + g_hidden));
    const std::int64_t n = per_layer * layers;
    Tensor p = dev(Shape{n}, DType::F32, o.device, "param"), g = dev(Shape{n}, DType::F32, o.device, "grad"),
           m = dev(Shape{n}, DType::F32, o.device, "m"), v = dev(Shape{n}, DType::F32, o.device, "v"),
           copy = dev(Shape{n}, DType::BF16, o.device, "param_bf16");
    fill(p, 0.02f, 16);
    fill(g, 0.001f, 17);
    ADAPT_CUDA_CHECK(cudaMemset(m.raw(), 0, m.size_bytes()));
    ADAPT_CUDA_CHECK(cudaMemset(v.raw(), 0, v.size_bytes()));
    const kernels::AdamWScalars s = kernels::adamw_scalars(1e-4, 1, 0.9, 0.999, 1e-8, 0.0, false);
    mem_row("adamw step (+ bf16 copy)", fmt::format("{:.1f}M params f32", static_cast<double>(n) / 1e6),
            "read p, g, m, v; write p, m, v, bf16 p", 30.0 * static_cast<double>(n), time_ms(o, [&] {
              kernels::launch_adamw_step(static_cast<float*>(p.raw()), static_cast<const float*>(g.raw()),
                                         static_cast<float*>(m.raw()), static_cast<float*>(v.raw()), copy.raw(),
                                         DType::BF16, n, s, nullptr);
            }));
  }
}

void bench_attention(const Options& o) {
  const std::int64_t T = o.tokens, H = g_heads, Hkv = g_kv_heads, D = g_head_dim;
  Tensor q = dev(Shape{1, T, H, D}, DType::BF16, o.device, "q"),
         k = dev(Shape{1, Hkv, T, D}, DType::BF16, o.device, "k"),
         v = dev(Shape{1, Hkv, T, D}, DType::BF16, o.device, "v"),
         out = dev(Shape{1, T, H, D}, DType::BF16, o.device, "out"),
         lse = dev(Shape{1, H, T}, DType::F32, o.device, "lse"),
         dout = dev(Shape{1, T, H, D}, DType::BF16, o.device, "dout"),
         dq = dev(Shape{1, T, H, D}, DType::BF16, o.device, "dq"),
         dk = dev(Shape{1, Hkv, T, D}, DType::BF16, o.device, "dk"),
         dv = dev(Shape{1, Hkv, T, D}, DType::BF16, o.device, "dv");
  fill(q, 1.0f, 20);
  fill(k, 1.0f, 21);
  fill(v, 1.0f, 22);
  fill(dout, 1.0f, 23);
  const ops::AttentionOptions opts;
  const double fwd_flops = 4.0 * static_cast<double>(T) * T * H * D / 2.0;
  const std::string shape = fmt::format("causal T={} H={}/{} D={} bf16", T, H, Hkv, D);
  flop_row("attention forward", shape, fwd_flops,
           time_ms(o, [&] { ops::attention_forward(out, q, k, v, opts, &lse); }));
  ops::attention_forward(out, q, k, v, opts, &lse);
  flop_row("attention backward", shape, 2.5 * fwd_flops,
           time_ms(o, [&] { ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, opts); }));
}

void bench_decode(const Options& o) {
  const std::int64_t H = g_heads, Hkv = g_kv_heads, D = g_head_dim;
  const std::vector<std::int64_t> contexts =
      o.quick ? std::vector<std::int64_t>{1024, 4096} : std::vector<std::int64_t>{4096, 32768};
  for (const std::int64_t B : {std::int64_t{1}, std::int64_t{16}}) {
    for (const std::int64_t S : contexts) {
      Tensor q = dev(Shape{B, H, D}, DType::BF16, o.device, "q"),
             out = dev(Shape{B, H, D}, DType::BF16, o.device, "out"),
             k = dev(Shape{B, Hkv, S, D}, DType::BF16, o.device, "k_cache"),
             v = dev(Shape{B, Hkv, S, D}, DType::BF16, o.device, "v_cache");
      fill(q, 1.0f, 30);
      fill(k, 1.0f, 31);
      fill(v, 1.0f, 32);
      const std::vector<std::int64_t> lens(static_cast<std::size_t>(B), S);
      const double bytes = 2.0 * static_cast<double>(k.size_bytes());
      const double ms = time_ms(o, [&] { ops::cuda::decode_attention(out, q, k, v, lens); });
      const double bound_ms = bytes / (g_bw * 1e9) * 1e3;
      mem_row(fmt::format("decode attention B={} ctx={}k", B, S / 1024),
              fmt::format("KV cache ({}, {}, {}, {}) bf16 x2", B, Hkv, S, D),
              fmt::format("read the KV cache; HBM bound {:.3f} ms", bound_ms), bytes, ms);
    }
  }
}

void print_table() {
  fmt::print("| op | shape | work | median ms | achieved | ceiling | fraction |\n");
  fmt::print("| --- | --- | --- | ---: | ---: | ---: | ---: |\n");
  for (const Row& r : g_rows) {
    fmt::print("| {} | {} | {} | {:.3f} | {:.1f} {} | {:.1f} {} | {:.2f} |\n", r.op, r.shape, r.measure, r.ms,
               r.achieved, r.unit, r.ceiling, r.unit, r.achieved / r.ceiling);
  }
}

int run(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      fmt::print("{}", kUsage);
      return 0;
    }
    if (a == "--quick") {
      o.quick = true;
      o.tokens = 512;
      o.reps = 5;
      o.warmup = 1;
      continue;
    }
    ADAPT_REQUIRE(i + 1 < argc, ConfigError, "{} needs a value\n{}", a, kUsage);
    const std::string v = argv[++i];
    if (a == "--tokens") o.tokens = std::stoll(v);
    else if (a == "--reps") o.reps = std::stoi(v);
    else if (a == "--warmup") o.warmup = std::stoi(v);
    else if (a == "--device") o.device = std::stoi(v);
    else if (a == "--preset") o.preset = v;
    else if (a == "--gemm") o.gemm = std::stoll(v);
    else ADAPT_THROW(ConfigError, "unknown option '{}'\n{}", a, kUsage);
  }
  ADAPT_REQUIRE(o.tokens > 0 && o.reps > 0 && o.warmup >= 0 && o.gemm > 0, ConfigError,
                "--tokens, --reps and --gemm must be > 0\n{}", kUsage);
  const model::LlamaConfig shape = model::llama_config_preset(o.preset);  // ConfigError names the presets
  g_hidden = shape.hidden_size, g_ffn = shape.intermediate_size, g_heads = shape.n_heads, g_kv_heads = shape.n_kv_heads;
  g_head_dim = shape.head_dim, g_vocab = shape.vocab_size, g_layers = shape.n_layers;
  if (backend::cuda_device_count() == 0) {
    fmt::print(stderr, "gpu_ops_bench: skipped: {}\n", backend::cuda_unavailable_reason());
    return 77;
  }
  backend::cuda::set_device(o.device);
  fmt::print(stderr, "gpu_ops_bench on cuda:{} ({}), {} shapes, T = {}, median of {} after {} warm-up\n", o.device,
             backend::cuda_device_name(o.device), o.preset, o.tokens, o.reps, o.warmup);
  ceilings(o);
  bench_gemms(o);
  bench_rows(o);
  bench_attention(o);
  bench_decode(o);
  print_table();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return app_main([&]() -> int { return run(argc, argv); });
}
