// The smaller CUDA launchers, called directly on cudaMalloc'd buffers, against the CPU code they mirror:
//   kernels/softmax.h      softmax and log-softmax (also in place)     vs ops::softmax_forward / log_softmax_forward
//   kernels/elementwise.h  add, axpy, scale, fill, bias_add, column_sum, swap_middle, kv_cache_write
//                          vs ops::add, axpy, scale, fill, bias_add, column_sum, to_heads_major, kv_cache_write
//   kernels/grad_norm.h    Σ x² partials and their sum (same bits on every run) vs a compensated double
//                          sum on the host (1e-12 relative)
//   kernels/cast.h         f32 <-> bf16, f32 <-> f16, same-dtype copies vs dtype_convert, bit for bit (an f16
//                          NaN only has to stay a NaN: CUDA's cvt canonicalises it)
//   kernels/adapter_ops.h  LoRA dropout, scaled bias add, activations, LayerNorm forward/backward
//                          vs adapters::detail (src/adapters/adapter_math.cpp, the CPU loops)
// Element-for-element IEEE operations (adds, products, copies, the dropout mask) are compared bit for bit;
// results that go through a reduction or a libm function within the tolerance of gpu_tolerances.h. Sizes
// are not multiples of the block sizes (1, 7, 33, 4099, ...).
#if ADAPT_HAVE_CUDA
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "adapters/adapter_config.h"
#include "adapters/adapter_math.h"
#include "adapters/adapter_rng.h"
#include "core/error.h"
#include "kernels/adapter_ops.h"
#include "kernels/cast.h"
#include "kernels/elementwise.h"
#include "kernels/grad_norm.h"
#include "kernels/softmax.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/softmax.h"
#include "ops/workspace.h"
#include "tests/gpu/ops_gpu_util.h"

using namespace adapt;
using namespace adapt::test;

namespace {

const std::int64_t kCols[] = {1, 7, 33, 4099};
const std::int64_t kLengths[] = {1, 7, 33, 255, 256, 257, 4099, 100003};

/// CHECK that got and want hold the same f32 bit patterns (so also the same signs of zero); names the
/// first difference.
void check_same_bits(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  REQUIRE(got.size() == want.size());
  std::int64_t n_diff = 0, first = -1;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
      if (first < 0) first = static_cast<std::int64_t>(i);
      ++n_diff;
    }
  }
  INFO(what, ": ", n_diff, " of ", got.size(), " values differ",
       first < 0 ? std::string()
                 : fmt::format(", first at [{}]: got {} want {}", first, got[static_cast<std::size_t>(first)],
                               want[static_cast<std::size_t>(first)]));
  CHECK(n_diff == 0);
}

Tensor host_empty(const Shape& shape, const std::string& name) {
  return Tensor::empty(shape, DType::F32, host_allocator(), name);
}

DeviceBuffer upload_f32(const std::vector<float>& v) { return upload(v, DType::F32); }
std::vector<float> download_f32(const DeviceBuffer& d, std::size_t n) { return download(d, n, DType::F32); }

}  // namespace

// ---- kernels/softmax.h --------------------------------------------------------------------------------

TEST_CASE("gpu.parity.softmax forward and log-softmax, out of place and in place") {
  for (std::int64_t cols : kCols) {
    for (std::int64_t rows : {1, 5, 67}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const std::int64_t n = rows * cols;
      // Rows shifted by 0, 40 and 80: exp(x) alone would overflow f32, so the row maximum must come off first.
      std::vector<float> x = random_normal(n, 31, 3.0f);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < cols; ++j) x[r * cols + j] += 40.0f * static_cast<float>(r % 3);
      // The softmax also sees masked (−∞) logits, which give exact zeros (not in the log-softmax input:
      // its −∞ outputs would make the relative comparison meaningless).
      std::vector<float> xm = x;
      for (std::int64_t j = 1; j < cols; j += 3) xm[j] = -INFINITY;
      Tensor X = host_f32({rows, cols}, x, "x"), XM = host_f32({rows, cols}, xm, "x_masked");
      Tensor P = host_empty({rows, cols}, "softmax"), L = host_empty({rows, cols}, "log_softmax");
      ops::softmax_forward(P, XM);
      ops::log_softmax_forward(L, X);

      DeviceBuffer d_x = upload_f32(x), d_xm = upload_f32(xm), d_y(n * sizeof(float));
      kernels::launch_softmax_forward(d_y.f32(), d_xm.f32(), rows, cols, false, nullptr);
      check_close(download_f32(d_y, n), values(P), DType::F32, "softmax");
      kernels::launch_softmax_forward(d_y.f32(), d_x.f32(), rows, cols, true, nullptr);
      check_close(download_f32(d_y, n), values(L), DType::F32, "log-softmax");

      // In place (y aliases x).
      kernels::launch_softmax_forward(d_xm.f32(), d_xm.f32(), rows, cols, false, nullptr);
      check_close(download_f32(d_xm, n), values(P), DType::F32, "softmax in place");
      kernels::launch_softmax_forward(d_x.f32(), d_x.f32(), rows, cols, true, nullptr);
      check_close(download_f32(d_x, n), values(L), DType::F32, "log-softmax in place");
    }
  }
}

// ---- kernels/elementwise.h ----------------------------------------------------------------------------

TEST_CASE("gpu.parity.elementwise add, axpy, scale and fill, bit for bit") {
  for (std::int64_t n : kLengths) {
    CAPTURE(n);
    const std::vector<float> a = random_normal(n, 41), b = random_normal(n, 42, 3.0f);
    const Shape s{n};
    Tensor A = host_f32(s, a, "a"), B = host_f32(s, b, "b"), Out = host_empty(s, "out");
    ops::add(Out, A, B);
    DeviceBuffer d_a = upload_f32(a), d_b = upload_f32(b), d_out(n * sizeof(float));
    kernels::launch_add(d_out.f32(), d_a.f32(), d_b.f32(), n, nullptr);
    check_same_bits(download_f32(d_out, n), values(Out), "add");
    kernels::launch_add(d_a.f32(), d_a.f32(), d_b.f32(), n, nullptr);
    check_same_bits(download_f32(d_a, n), values(Out), "add in place of a");
    DeviceBuffer d_a2 = upload_f32(a);
    kernels::launch_add(d_b.f32(), d_a2.f32(), d_b.f32(), n, nullptr);
    check_same_bits(download_f32(d_b, n), values(Out), "add in place of b");

    constexpr float kAlpha = -0.37f;
    Tensor Y = host_f32(s, b, "y");
    ops::axpy(Y, A, kAlpha);
    DeviceBuffer d_y = upload_f32(b);
    kernels::launch_axpy(d_y.f32(), d_a2.f32(), kAlpha, n, nullptr);
    check_same_bits(download_f32(d_y, n), values(Y), "axpy");

    ops::scale(Y, 1.7f);
    kernels::launch_scale(d_y.f32(), 1.7f, n, nullptr);
    check_same_bits(download_f32(d_y, n), values(Y), "scale");

    ops::fill(Y, -2.5f);
    kernels::launch_fill(d_y.f32(), -2.5f, n, nullptr);
    check_same_bits(download_f32(d_y, n), values(Y), "fill");
  }
}

TEST_CASE("gpu.parity.elementwise bias_add and column_sum") {
  for (std::int64_t cols : kCols) {
    for (std::int64_t rows : {1, 5, 33, 200}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const std::int64_t n = rows * cols;
      const std::vector<float> y = random_normal(n, 51), bias = random_normal(cols, 52);
      Tensor Y = host_f32({rows, cols}, y, "y"), Bias = host_f32({cols}, bias, "bias");
      ops::bias_add(Y, Bias);
      DeviceBuffer d_y = upload_f32(y), d_bias = upload_f32(bias);
      kernels::launch_bias_add(d_y.f32(), d_bias.f32(), rows, cols, nullptr);
      check_same_bits(download_f32(d_y, n), values(Y), "bias_add");

      // out += alpha · Σ_rows x, into a nonzero out: the sum is added, not stored.
      constexpr float kAlpha = 0.37f;
      const std::vector<float> x = random_normal(n, 53), out0 = random_normal(cols, 54);
      Tensor X = host_f32({rows, cols}, x, "x"), Out = host_f32({cols}, out0, "out");
      ops::column_sum(Out, X, kAlpha);
      DeviceBuffer d_x = upload_f32(x), d_out = upload_f32(out0);
      kernels::launch_column_sum(d_out.f32(), d_x.f32(), kAlpha, rows, cols, nullptr);
      const std::vector<float> got = download_f32(d_out, cols);
      check_close(got, values(Out), DType::F32, "column_sum");
      // No atomics: the same bits on a second run.
      DeviceBuffer d_out2 = upload_f32(out0);
      kernels::launch_column_sum(d_out2.f32(), d_x.f32(), kAlpha, rows, cols, nullptr);
      check_same_bits(download_f32(d_out2, cols), got, "column_sum run twice");
    }
  }
}

TEST_CASE("gpu.parity.elementwise swap_middle and kv_cache_write, bit for bit") {
  struct Dims4 {
    std::int64_t b, x, y, d;
  };
  for (const Dims4 s : {Dims4{1, 1, 1, 1}, Dims4{2, 7, 3, 33}, Dims4{3, 33, 5, 7}, Dims4{2, 67, 8, 129}}) {
    CAPTURE(s.b);
    CAPTURE(s.x);
    CAPTURE(s.y);
    CAPTURE(s.d);
    const std::int64_t n = s.b * s.x * s.y * s.d;
    const std::vector<float> src = random_normal(n, 61);
    Tensor Src = host_f32({s.b, s.x, s.y, s.d}, src, "src"), Dst = host_empty({s.b, s.y, s.x, s.d}, "dst");
    ops::to_heads_major(Dst, Src);
    DeviceBuffer d_src = upload_f32(src), d_dst(n * sizeof(float));
    kernels::launch_swap_middle(d_dst.f32(), d_src.f32(), s.b, s.x, s.y, s.d, nullptr);
    check_same_bits(download_f32(d_dst, n), values(Dst), "swap_middle");
  }

  // cache (R, G, S, D) ← src (B, T, G, D); 70 sequences take two launches of 64 (the argument chunk).
  struct KvDims {
    std::int64_t b, t, g, d, s, r;
  };
  for (const KvDims k : {KvDims{1, 1, 1, 1, 1, 1}, KvDims{3, 7, 2, 33, 20, 5}, KvDims{70, 3, 2, 7, 11, 80}}) {
    CAPTURE(k.b);
    CAPTURE(k.t);
    CAPTURE(k.r);
    // Distinct cache rows (7 is prime to every R here), so no two sequences write the same element.
    std::vector<std::int64_t> rows(static_cast<std::size_t>(k.b)), positions(static_cast<std::size_t>(k.b));
    for (std::int64_t i = 0; i < k.b; ++i) {
      rows[static_cast<std::size_t>(i)] = (i * 7 + 3) % k.r;
      positions[static_cast<std::size_t>(i)] = (i * 5) % (k.s - k.t + 1);
    }
    const std::int64_t n_src = k.b * k.t * k.g * k.d, n_cache = k.r * k.g * k.s * k.d;
    const std::vector<float> src = random_normal(n_src, 62), cache0 = random_normal(n_cache, 63);
    Tensor Src = host_f32({k.b, k.t, k.g, k.d}, src, "src"), Cache = host_f32({k.r, k.g, k.s, k.d}, cache0, "cache");
    ops::kv_cache_write(Cache, Src, rows, positions);
    DeviceBuffer d_src = upload_f32(src), d_cache = upload_f32(cache0);
    kernels::launch_kv_cache_write(d_cache.f32(), d_src.f32(), rows.data(), positions.data(), k.b, k.t, k.g, k.d, k.s,
                                   nullptr);
    check_same_bits(download_f32(d_cache, n_cache), values(Cache), "kv_cache_write (the rest of the cache unchanged)");
  }
}

// ---- kernels/grad_norm.h ------------------------------------------------------------------------------

namespace {
/// A double sum with Neumaier's compensation: the reference's own rounding (a plain sum in index order
/// drifts by about √n·2^-53, 7.6e-13 relative for the 10^6 squares below) must not use up the 1e-12.
struct CompensatedSum {
  double sum = 0.0, carry = 0.0;
  void add(double v) {
    const double t = sum + v;
    carry += std::fabs(sum) >= std::fabs(v) ? (sum - t) + v : (v - t) + sum;
    sum = t;
  }
  double value() const { return sum + carry; }
};
}  // namespace

TEST_CASE("gpu.parity.grad_norm Σ x² partials and total against a double sum, the same bits on every run") {
  for (std::int64_t n : {0, 1, 255, 256, 257, 1000003}) {
    CAPTURE(n);
    // Magnitudes from 1e-3 to 1e3, so the squares span twelve decades.
    std::vector<float> x = random_normal(n, 71);
    for (std::int64_t i = 0; i < n; ++i)
      x[static_cast<std::size_t>(i)] *= std::pow(10.0f, static_cast<float>(i % 7) - 3);
    const std::int64_t blocks = kernels::sum_squares_blocks(n);
    const std::int64_t stride = blocks * kernels::kSumSquaresThreads;
    // Host: partial b holds the elements i with (i mod blocks·256) / 256 = b. Each square is exact in
    // double (48 significant bits), so the sums' rounding is all the reference has.
    std::vector<CompensatedSum> part_sums(static_cast<std::size_t>(blocks));
    CompensatedSum total;
    for (std::int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(x[static_cast<std::size_t>(i)]) * x[static_cast<std::size_t>(i)];
      part_sums[static_cast<std::size_t>((i % stride) / kernels::kSumSquaresThreads)].add(v);
      total.add(v);
    }
    const double want = total.value();
    std::vector<double> want_part;
    for (const CompensatedSum& p : part_sums) want_part.push_back(p.value());

    DeviceBuffer d_x = upload_f32(x), d_part(blocks * sizeof(double)), d_sum(sizeof(double));
    std::vector<double> first_part;
    double first_sum = 0.0;
    for (int run = 0; run < 3; ++run) {
      CAPTURE(run);
      // NaN bytes first: every partial must be written (also the single 0 for n = 0).
      ADAPT_TEST_CUDA(cudaMemset(d_part.get(), 0xff, blocks * sizeof(double)));
      kernels::launch_sum_squares_partials(d_x.f32(), n, static_cast<double*>(d_part.get()), nullptr);
      kernels::launch_sum_partials(static_cast<const double*>(d_part.get()), blocks, static_cast<double*>(d_sum.get()),
                                   nullptr);
      std::vector<double> part(static_cast<std::size_t>(blocks));
      double sum = 0.0;
      ADAPT_TEST_CUDA(cudaMemcpy(part.data(), d_part.get(), blocks * sizeof(double), cudaMemcpyDeviceToHost));
      ADAPT_TEST_CUDA(cudaMemcpy(&sum, d_sum.get(), sizeof(double), cudaMemcpyDeviceToHost));
      if (run == 0) {
        for (std::int64_t b = 0; b < blocks; ++b) {
          const double g = part[static_cast<std::size_t>(b)], w = want_part[static_cast<std::size_t>(b)];
          INFO("partial ", b, " of ", blocks, ": got ", g, " want ", w);
          CHECK(std::fabs(g - w) <= 1e-12 * w);
        }
        INFO("total: got ", sum, " want ", want);
        CHECK(std::fabs(sum - want) <= 1e-12 * want);
        first_part = part;
        first_sum = sum;
      } else {
        CHECK(std::memcmp(part.data(), first_part.data(), part.size() * sizeof(double)) == 0);
        CHECK(std::memcmp(&sum, &first_sum, sizeof(double)) == 0);
      }
    }
  }
  // No partials: the sum is 0.
  DeviceBuffer d_sum(sizeof(double));
  ADAPT_TEST_CUDA(cudaMemset(d_sum.get(), 0xff, sizeof(double)));
  kernels::launch_sum_partials(nullptr, 0, static_cast<double*>(d_sum.get()), nullptr);
  double sum = -1.0;
  ADAPT_TEST_CUDA(cudaMemcpy(&sum, d_sum.get(), sizeof(double), cudaMemcpyDeviceToHost));
  CHECK(sum == 0.0);
}

// ---- kernels/cast.h -----------------------------------------------------------------------------------

namespace {

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// f32 values for the down-casts: random bit patterns (every exponent, NaN payloads, subnormals), the
/// bf16 rounding ties and their neighbours for every upper half, the f16 ties and neighbours in the
/// normal and subnormal ranges, the f16 overflow edge, and signed zeros, infinities and NaNs.
std::vector<float> f32_cast_sweep() {
  std::vector<float> v;
  std::mt19937 rng(static_cast<std::uint32_t>(kSeed ^ 0xca57));
  for (int i = 0; i < 1 << 17; ++i) v.push_back(from_bits(rng()));
  for (std::uint32_t hi = 0; hi < 65536; ++hi)
    for (std::uint32_t lo : {0x7fffu, 0x8000u, 0x8001u}) v.push_back(from_bits((hi << 16) | lo));
  for (std::uint32_t e = 113; e <= 142; ++e) {  // f32 exponents of the f16 normals
    for (int k = 0; k < 256; ++k) {
      const std::uint32_t top = (rng() & 0x80000000u) | (e << 23) | (rng() & 0x7fe000u);
      for (std::uint32_t lo : {0x0fffu, 0x1000u, 0x1001u}) v.push_back(from_bits(top | lo));
    }
  }
  for (int k = 0; k < 1024; ++k) {  // (2k + 1)·2^-25: halfway between two f16 subnormals
    const float tie = std::ldexp(static_cast<float>(2 * k + 1), -25);
    v.push_back(tie);
    v.push_back(-std::nextafter(tie, 0.0f));
    v.push_back(std::nextafter(tie, 1.0f));
  }
  for (float f : {65504.0f, 65519.996f, 65520.0f, 65536.0f, std::ldexp(1.0f, -24), std::ldexp(1.0f, -25),
                  std::ldexp(1.0f, -26), std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::max(), 0.0f, -0.0f, INFINITY, -INFINITY})
    v.push_back(f);
  for (std::uint32_t nan : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7fa00000u})
    v.push_back(from_bits(nan));
  return v;
}

/// Casts n elements of `src` (host bytes of src_dtype) on the device.
std::vector<std::uint8_t> device_cast(const std::vector<std::uint8_t>& src, DType src_dtype, DType dst_dtype,
                                      std::int64_t n) {
  DeviceBuffer d_src = upload_raw(src), d_dst(static_cast<std::size_t>(n) * dtype_size(dst_dtype));
  kernels::launch_cast(d_dst.get(), dst_dtype, d_src.get(), src_dtype, n, nullptr);
  ADAPT_TEST_CUDA(cudaDeviceSynchronize());
  std::vector<std::uint8_t> out(d_dst.bytes());
  ADAPT_TEST_CUDA(cudaMemcpy(out.data(), d_dst.get(), out.size(), cudaMemcpyDeviceToHost));
  return out;
}

/// CHECK got == want element for element (elements of `size` bytes). nan_of decodes an element as f32:
/// where it is given, two NaNs count as equal whatever their sign and payload.
void check_cast_bits(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want, std::size_t size,
                     float (*nan_of)(const std::uint8_t*), const std::string& what) {
  REQUIRE(got.size() == want.size());
  std::int64_t n_diff = 0, first = -1;
  for (std::size_t i = 0; i < got.size() / size; ++i) {
    const std::uint8_t *g = got.data() + i * size, *w = want.data() + i * size;
    if (std::memcmp(g, w, size) == 0) continue;
    if (nan_of && std::isnan(nan_of(g)) && std::isnan(nan_of(w))) continue;
    if (first < 0) first = static_cast<std::int64_t>(i);
    ++n_diff;
  }
  INFO(what, ": ", n_diff, " of ", got.size() / size, " elements differ (first at ", first, ")");
  CHECK(n_diff == 0);
}

float f16_at(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
float f32_at(const std::uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

}  // namespace

TEST_CASE("gpu.parity.cast f32 <-> bf16 and f32 <-> f16 against dtype_convert, bit for bit") {
  // The f16 conversions of CUDA (cvt) return the canonical NaN 0x7fff rather than keeping the sign and
  // payload as the host's f32_to_f16 / f16_to_f32 do; for f16 a NaN must stay a NaN, every other value
  // (±0, subnormals, ties, ±Inf) must have the host's bits. The bf16 conversions are the same integer code
  // on both sides (kernels/common/convert.cuh), NaNs included.
  SUBCASE("all 65,536 bf16 and f16 patterns up to f32") {
    std::vector<std::uint16_t> all(65536);
    for (std::uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<std::uint16_t>(i);
    std::vector<std::uint8_t> src(all.size() * 2);
    std::memcpy(src.data(), all.data(), src.size());
    for (DType from : {DType::BF16, DType::F16}) {
      CAPTURE(dtype_name(from));
      std::vector<std::uint8_t> want(all.size() * 4);
      dtype_convert(want.data(), DType::F32, src.data(), from, 65536);
      check_cast_bits(device_cast(src, from, DType::F32, 65536), want, 4, from == DType::F16 ? f32_at : nullptr,
                      "up-cast");
    }
  }
  SUBCASE("f32 down to bf16 and f16: random bits, ties, subnormals, overflow, Inf and NaN") {
    const std::vector<float> v = f32_cast_sweep();
    const auto n = static_cast<std::int64_t>(v.size());
    std::vector<std::uint8_t> src(v.size() * 4);
    std::memcpy(src.data(), v.data(), src.size());
    for (DType to : {DType::BF16, DType::F16}) {
      CAPTURE(dtype_name(to));
      std::vector<std::uint8_t> want(v.size() * 2);
      dtype_convert(want.data(), to, src.data(), DType::F32, n);
      check_cast_bits(device_cast(src, DType::F32, to, n), want, 2, to == DType::F16 ? f16_at : nullptr, "down-cast");
    }
  }
  SUBCASE("short casts write n elements only; same-dtype casts copy; bf16 <-> f16 is refused") {
    const std::vector<float> v = random_normal(40, 81);
    DeviceBuffer d_src = upload_f32(v);
    for (std::int64_t n : {1, 7, 33}) {
      CAPTURE(n);
      DeviceBuffer d_dst(40 * 2);
      ADAPT_TEST_CUDA(cudaMemset(d_dst.get(), 0xab, 40 * 2));
      kernels::launch_cast(d_dst.get(), DType::BF16, d_src.get(), DType::F32, n, nullptr);
      std::vector<std::uint8_t> got(40 * 2), want(40 * 2, 0xab);
      dtype_convert(want.data(), DType::BF16, v.data(), DType::F32, n);
      ADAPT_TEST_CUDA(cudaDeviceSynchronize());
      ADAPT_TEST_CUDA(cudaMemcpy(got.data(), d_dst.get(), got.size(), cudaMemcpyDeviceToHost));
      CHECK(got == want);
    }
    DeviceBuffer d_copy(40 * 4);
    kernels::launch_cast(d_copy.get(), DType::F32, d_src.get(), DType::F32, 33, nullptr);
    std::vector<float> want(40, 0.0f);
    std::copy(v.begin(), v.begin() + 33, want.begin());
    check_same_bits(download_f32(d_copy, 40), want, "f32 -> f32 copy of 33 elements");
    DeviceBuffer d_half(40 * 2);
    CHECK_THROWS_AS(kernels::launch_cast(d_half.get(), DType::F16, d_copy.get(), DType::BF16, 7, nullptr),
                    UnsupportedError);
  }
}

// ---- kernels/adapter_ops.h ----------------------------------------------------------------------------

TEST_CASE("gpu.parity.adapter_ops LoRA dropout: the CPU's mask and values, bit for bit") {
  struct Rc {
    std::int64_t rows, cols;
  };
  for (const Rc s : {Rc{1, 1}, Rc{3, 7}, Rc{5, 33}, Rc{67, 4099}}) {
    for (double p : {0.1, 0.5}) {
      // width 0: the whole input; otherwise this rank holds columns [cols, 2·cols) of rows 3·cols wide.
      for (bool tp : {false, true}) {
        CAPTURE(s.rows);
        CAPTURE(s.cols);
        CAPTURE(p);
        CAPTURE(tp);
        const std::int64_t n = s.rows * s.cols;
        const std::uint64_t stream = adapters::dropout_stream({.seed = 11, .step = 3, .layer = 1, .site = 2});
        const adapters::LoraDropout d{
            .p = p, .stream = stream, .width = tp ? 3 * s.cols : 0, .col_offset = tp ? s.cols : 0};
        const kernels::LoraDropoutMask mask{.p = d.p,
                                            .keep_scale = static_cast<float>(1.0 / (1.0 - d.p)),
                                            .stream = d.stream,
                                            .width = d.width,
                                            .col_offset = d.col_offset};
        std::vector<float> x = random_normal(n, 91);
        for (float& v : x) v += v >= 0 ? 0.5f : -0.5f;  // no zeros: a dropped element is told by its 0
        const std::vector<float> acc0 = random_normal(n, 92);
        Tensor X = host_f32({s.rows, s.cols}, x, "x"), Out = host_empty({s.rows, s.cols}, "x_dropped");
        Tensor Acc = host_f32({s.rows, s.cols}, acc0, "dx");
        adapters::detail::lora_dropout_apply(Out, X, d);
        adapters::detail::lora_dropout_accumulate(Acc, X, d);

        DeviceBuffer d_x = upload_f32(x), d_out(n * sizeof(float)), d_acc = upload_f32(acc0);
        kernels::launch_lora_dropout(d_out.f32(), d_x.f32(), s.rows, s.cols, mask, false, nullptr);
        check_same_bits(download_f32(d_out, n), values(Out), "dropout");
        kernels::launch_lora_dropout(d_acc.f32(), d_x.f32(), s.rows, s.cols, mask, true, nullptr);
        check_same_bits(download_f32(d_acc, n), values(Acc), "dropout accumulated (dropped elements unchanged)");
        kernels::launch_lora_dropout(d_x.f32(), d_x.f32(), s.rows, s.cols, mask, false, nullptr);
        check_same_bits(download_f32(d_x, n), values(Out), "dropout in place");
      }
    }
  }
}

TEST_CASE("gpu.parity.adapter_ops scaled bias add, and relu, swish and gelu forward and backward") {
  for (std::int64_t cols : kCols) {
    for (std::int64_t rows : {1, 5, 67}) {
      for (float alpha : {1.0f, 0.3f}) {
        CAPTURE(rows);
        CAPTURE(cols);
        CAPTURE(alpha);
        const std::int64_t n = rows * cols;
        const std::vector<float> y = random_normal(n, 101), bias = random_normal(cols, 102);
        Tensor Y = host_f32({rows, cols}, y, "y"), Bias = host_f32({cols}, bias, "bias");
        ops::Workspace ws;
        adapters::detail::bias_add_scaled(Y, Bias, alpha, ws);
        DeviceBuffer d_y = upload_f32(y), d_bias = upload_f32(bias);
        kernels::launch_adapter_bias_add(d_y.f32(), d_bias.f32(), rows, cols, alpha, nullptr);
        check_same_bits(download_f32(d_y, n), values(Y), "bias_add_scaled");
      }
    }
  }

  struct Act {
    adapters::BnActivation cpu;
    kernels::AdapterActivation gpu;
    const char* name;
  };
  const Act acts[] = {{adapters::BnActivation::Relu, kernels::AdapterActivation::Relu, "relu"},
                      {adapters::BnActivation::Swish, kernels::AdapterActivation::Swish, "swish"},
                      {adapters::BnActivation::Gelu, kernels::AdapterActivation::Gelu, "gelu"}};
  // The sweep lengths, and the edge values on their own (zeros, tiny, and large enough for exp(−a) to
  // overflow), so that their size does not set the scale of the sweep's comparison.
  std::vector<std::vector<float>> inputs;
  for (std::int64_t n : kLengths) inputs.push_back(random_normal(n, 103 + static_cast<std::uint64_t>(n), 3.0f));
  inputs.push_back({0.0f, -0.0f, 1e-30f, -1e-30f, 1e-3f, -1e-3f, 20.0f, -20.0f, 88.0f, -88.0f, 100.0f, -100.0f});
  for (const Act& act : acts) {
    for (const std::vector<float>& pre : inputs) {
      CAPTURE(act.name);
      const auto n = static_cast<std::int64_t>(pre.size());
      CAPTURE(n);
      const std::vector<float> g = random_normal(n, 104);
      Tensor Pre = host_f32({n}, pre, "pre"), Out = host_empty({n}, "out"), G = host_f32({n}, g, "grad");
      adapters::detail::activation_forward(Out, Pre, act.cpu);
      adapters::detail::activation_backward(G, Pre, act.cpu);

      DeviceBuffer d_pre = upload_f32(pre), d_out(n * sizeof(float)), d_g = upload_f32(g);
      kernels::launch_adapter_activation_forward(d_out.f32(), d_pre.f32(), n, act.gpu, nullptr);
      kernels::launch_adapter_activation_backward(d_g.f32(), d_pre.f32(), n, act.gpu, nullptr);
      const std::vector<float> got = download_f32(d_out, n), got_g = download_f32(d_g, n);
      if (act.cpu == adapters::BnActivation::Relu) {  // no libm: the same bits
        check_same_bits(got, values(Out), "relu forward");
        check_same_bits(got_g, values(G), "relu backward");
      } else {  // expf / erff of the device against the host's: a few ulps
        check_close(got, values(Out), DType::F32, "forward");
        check_close(got_g, values(G), DType::F32, "backward");
      }
      kernels::launch_adapter_activation_forward(d_pre.f32(), d_pre.f32(), n, act.gpu, nullptr);
      check_close(download_f32(d_pre, n), values(Out), DType::F32, "forward in place");
    }
  }
}

TEST_CASE("gpu.parity.adapter_ops LayerNorm forward (out, mean and rstd) and backward (dz, dw, db)") {
  constexpr double kEps = 1e-5;
  for (std::int64_t cols : kCols) {
    for (std::int64_t rows : {1, 5, 67, 200}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const std::int64_t n = rows * cols;
      std::vector<float> z = random_normal(n, 111, 2.0f), w = random_normal(cols, 112, 0.5f);
      for (float& v : z) v += 0.5f;
      for (float& v : w) v += 1.0f;
      const std::vector<float> b = random_normal(cols, 113, 0.5f), dzn = random_normal(n, 114);
      const std::vector<float> dw0 = random_normal(cols, 115, 0.1f), db0 = random_normal(cols, 116, 0.1f);
      Tensor Z = host_f32({rows, cols}, z, "z"), W = host_f32({cols}, w, "w"), B = host_f32({cols}, b, "b");
      Tensor Out = host_empty({rows, cols}, "zn"), Stats = host_empty({rows, 2}, "stats");
      adapters::detail::layer_norm_forward(Out, Stats, Z, W, B, kEps);
      Tensor DZN = host_f32({rows, cols}, dzn, "dzn"), DZ = host_empty({rows, cols}, "dz");
      Tensor DW = host_f32({cols}, dw0, "dw"), DB = host_f32({cols}, db0, "db");
      ops::Workspace ws;
      adapters::detail::layer_norm_backward(DZ, DW, DB, DZN, Z, Stats, W, ws);

      DeviceBuffer d_z = upload_f32(z), d_w = upload_f32(w), d_b = upload_f32(b);
      DeviceBuffer d_out(n * sizeof(float)), d_stats(2 * rows * sizeof(float));
      kernels::launch_adapter_layer_norm_forward(d_out.f32(), d_stats.f32(), d_z.f32(), d_w.f32(), d_b.f32(), rows,
                                                 cols, kEps, nullptr);
      check_close(download_f32(d_out, n), values(Out), DType::F32, "out");
      check_close(download_f32(d_stats, 2 * rows), values(Stats), DType::F32, "mean and rstd");

      // The CPU's statistics go to the device, so the backward alone is compared. dz = ρ·(u − mean(u) −
      // ẑ·mean(u ⊙ ẑ)) with u = dzn ⊙ w: the three terms partly cancel (with one column exactly), and dz
      // carries the f32 rounding of their size, so it is compared relative to max |ρ·u|.
      const std::vector<float> st = values(Stats);
      double term_scale = 0.0;
      for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < cols; ++j)
          term_scale = std::max(term_scale, std::fabs(double(st[2 * i + 1]) * dzn[i * cols + j] * w[j]));
      DeviceBuffer d_st = upload_f32(st), d_dzn = upload_f32(dzn), d_dz(n * sizeof(float)), d_terms(n * sizeof(float));
      DeviceBuffer d_dw = upload_f32(dw0), d_db = upload_f32(db0);
      kernels::launch_adapter_layer_norm_backward(d_dz.f32(), d_terms.f32(), d_dzn.f32(), d_z.f32(), d_st.f32(),
                                                  d_w.f32(), rows, cols, nullptr);
      // dw and db: the column sums of dzn ⊙ ẑ and of dzn, added as adapters/cuda/adapter_math_cuda.cpp does.
      kernels::launch_column_sum(d_dw.f32(), d_terms.f32(), 1.0f, rows, cols, nullptr);
      kernels::launch_column_sum(d_db.f32(), d_dzn.f32(), 1.0f, rows, cols, nullptr);
      check_close(download_f32(d_dz, n), values(DZ), DType::F32, "dz", term_scale);
      check_close(download_f32(d_dw, cols), values(DW), DType::F32, "dw (added to its initial value)");
      check_close(download_f32(d_db, cols), values(DB), DType::F32, "db (added to its initial value)");
    }
  }
}
#endif  // ADAPT_HAVE_CUDA
