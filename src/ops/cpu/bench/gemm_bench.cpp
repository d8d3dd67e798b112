// GEMM timing tool (not a test): GFLOP/s of adapt's cpu::gemm (the entry point ops::matmul calls,
// thread split included) or of OpenBLAS cblas_sgemm, one implementation per process so that only one
// thread pool exists; and the FMA peak of this CPU from register-only loops. scripts/bench_gemm.sh runs
// it for each implementation and thread count and prints the comparison table.
//
//   gemm_bench --impl adapt|openblas --threads N [--dtype f32|bf16|bf16dot] [--layout nt|nn|tn]
//              [--shapes M,N,K[;M,N,K...]] [--min-time SECONDS]
//   gemm_bench --fma-peak [--threads N]
//
// Layouts name op(a), op(b) as BLAS does: nt is y = x · Wᵀ with W stored (N, K) (the forward), nn is
// dx = g · W, tn is dW = gᵀ · x. --dtype bf16 stores b in bf16 (widened inside the f32 product); bf16dot
// also rounds a to bf16 and runs bf16 products (cpu::gemm's bf16_products, runtime.cpu_matmul_dtype =
// "bf16"; its difference to OpenBLAS is then that rounding). Each shape runs once to warm up, then
// repeatedly for at least --min-time seconds; the best wall time counts. Output, one line per shape:
//   impl threads dtype layout M N K gflops best_ms max_rel_diff_vs_openblas_1thread
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "ops/cpu/cpu_kernels.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU time of the calling thread: the FMA-peak loops are timed with it, so that other processes
// sharing the cores (time slicing) do not lower the per-core figures.
double thread_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// ---- FMA peak -------------------------------------------------------------------------------------

// 400 dependent 64-bit multiplies, 3 cycles each on x86 cores of the last decade (Intel since Nehalem,
// AMD Zen): cycles per second. Not dependent adds of an immediate: Golden Cove and later fold those at
// register renaming, several per cycle, which read as a 13-17 GHz clock.
double core_ghz() {
  const long iters = 1'000'000;
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    std::uint64_t x = 3;
    const double t0 = thread_seconds();
    for (long i = 0; i < iters; ++i) {
#define ADAPT_MUL10                                                             \
  "imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\t" \
  "imul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\timul %0, %0\n\t"
#define ADAPT_MUL100                                                                                          \
  ADAPT_MUL10 ADAPT_MUL10 ADAPT_MUL10 ADAPT_MUL10 ADAPT_MUL10 ADAPT_MUL10 ADAPT_MUL10 ADAPT_MUL10 ADAPT_MUL10 \
      ADAPT_MUL10
      __asm__ volatile(ADAPT_MUL100 ADAPT_MUL100 ADAPT_MUL100 ADAPT_MUL100 : "+r"(x));
    }
    best = std::min(best, thread_seconds() - t0);
  }
  return 3.0 * 400.0 * iters / best / 1e9;
}

// 12 independent FMA chains (latency 4 cycles, so throughput-bound), registers only. Return FMA
// instructions per second of the calling thread's CPU time.
#define ADAPT_F512(r) "vfmadd231ps %%zmm12, %%zmm13, %%zmm" #r "\n\t"
#define ADAPT_F256(r) "vfmadd231ps %%ymm12, %%ymm13, %%ymm" #r "\n\t"
// No target attribute: the compiler emits baseline code around the asm (an AVX-512 target would let it
// use AVX-512 there too, which AVX2-only CPUs cannot run); callers check the CPU first.
template <int Bits>
double fma_rate(long iters) {
  const double t0 = thread_seconds();
  for (long i = 0; i < iters; ++i) {
    if constexpr (Bits == 512) {
      __asm__ volatile(ADAPT_F512(0) ADAPT_F512(1) ADAPT_F512(2) ADAPT_F512(3) ADAPT_F512(4) ADAPT_F512(5) ADAPT_F512(6)
                           ADAPT_F512(7) ADAPT_F512(8) ADAPT_F512(9) ADAPT_F512(10) ADAPT_F512(11)::
                               : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                                 "xmm10", "xmm11");
    } else {
      __asm__ volatile(ADAPT_F256(0) ADAPT_F256(1) ADAPT_F256(2) ADAPT_F256(3) ADAPT_F256(4) ADAPT_F256(5) ADAPT_F256(6)
                           ADAPT_F256(7) ADAPT_F256(8) ADAPT_F256(9) ADAPT_F256(10) ADAPT_F256(11)::
                               : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                                 "xmm10", "xmm11");
    }
  }
  return 12.0 * iters / (thread_seconds() - t0);
}

// The widest FMA the CPU has (512-bit with AVX-512F, else 256-bit with AVX2 and FMA), on one thread and
// on all of them at once.
int fma_peak(int threads) {
  const bool has512 = __builtin_cpu_supports("avx512f");
  if (!has512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    std::fprintf(stderr, "gemm_bench: this CPU has neither AVX-512F nor AVX2 with FMA; the FMA peak loop needs one\n");
    return 1;
  }
  const double ghz = core_ghz();
  const long iters = 50'000'000;
  double r512 = 0, r256 = 0;
  for (int rep = 0; rep < 3; ++rep) {
    if (has512) r512 = std::max(r512, fma_rate<512>(iters));
    r256 = std::max(r256, fma_rate<256>(iters));
  }
  // All threads at once, each its own chains: per-thread CPU-time rates summed (the peak of these
  // cores), and the FMAs done over the wall time (lower when other processes share the cores).
  const int bits = has512 ? 512 : 256;
  double all_cpu = 0, all_wall = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double sum = 0;
    const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    sum += has512 ? fma_rate<512>(iters) : fma_rate<256>(iters);
    all_cpu = std::max(all_cpu, sum);
    all_wall = std::max(all_wall, 12.0 * iters * threads / seconds_since(t0));
  }
  const double flops = bits / 32 * 2;  // per FMA instruction
  std::printf("clock (dependent-multiply loop, 1 thread): %.2f GHz\n", ghz);
  if (has512) {
    std::printf("1 thread, 512-bit FMA: %.2f per cycle, %.1f GFLOP/s f32\n", r512 / (ghz * 1e9), r512 * 32 / 1e9);
  } else {
    std::printf("1 thread, 512-bit FMA: none (no AVX-512F)\n");
  }
  std::printf("1 thread, 256-bit FMA: %.2f per cycle, %.1f GFLOP/s f32\n", r256 / (ghz * 1e9), r256 * 16 / 1e9);
  std::printf("%d threads, %d-bit FMA: %.1f GFLOP/s f32 in CPU time, %.1f GFLOP/s in wall time\n", threads, bits,
              all_cpu * flops / 1e9, all_wall * flops / 1e9);
  return 0;
}

// ---- GEMM -----------------------------------------------------------------------------------------

struct Shape {
  std::int64_t M, N, K;
};

std::vector<Shape> parse_shapes(const std::string& text) {
  std::vector<Shape> shapes;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = std::min(text.find(';', pos), text.size());
    Shape s{};
    if (std::sscanf(text.substr(pos, end - pos).c_str(), "%ld,%ld,%ld", &s.M, &s.N, &s.K) != 3) {
      std::fprintf(stderr, "gemm_bench: --shapes wants M,N,K[;M,N,K...], got '%s'\n", text.c_str());
      std::exit(2);
    }
    shapes.push_back(s);
    pos = end + 1;
  }
  return shapes;
}

std::uint16_t to_bf16(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return static_cast<std::uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);  // round to nearest even
}

int run_gemm(const std::string& impl, int threads, bool bf16, bool bf16_products, const std::string& layout,
             const std::vector<Shape>& shapes, double min_time) {
  const bool trans_a = layout == "tn", trans_b = layout == "nt";
  if (impl == "openblas") {
    openblas_set_num_threads(threads);
  } else {
    omp_set_num_threads(threads);
    openblas_set_num_threads(1);  // the reference product below
  }
  std::mt19937_64 rng(20261121);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const Shape& s : shapes) {
    const std::int64_t M = s.M, N = s.N, K = s.K;
    std::vector<float> a(static_cast<std::size_t>(M * K)), b(static_cast<std::size_t>(N * K));
    std::vector<float> c(static_cast<std::size_t>(M * N)), ref(static_cast<std::size_t>(M * N));
    for (float& x : a) x = dist(rng);
    for (float& x : b) x = bf16 ? 0.0f : dist(rng);
    std::vector<std::uint16_t> b16;
    if (bf16) {  // the same values in both copies: b holds the bf16 numbers widened
      b16.resize(b.size());
      for (std::size_t i = 0; i < b.size(); ++i) {
        b16[i] = to_bf16(dist(rng));
        const std::uint32_t bits = static_cast<std::uint32_t>(b16[i]) << 16;
        std::memcpy(&b[i], &bits, 4);
      }
    }
    const std::int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
    auto product = [&] {
      if (impl == "openblas") {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                    static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), 1.0f, a.data(),
                    static_cast<blasint>(lda), b.data(), static_cast<blasint>(ldb), 0.0f, c.data(),
                    static_cast<blasint>(N));
      } else {
        adapt::ops::cpu::gemm(trans_a, trans_b, M, N, K, 1.0f, a.data(), lda,
                              bf16 ? static_cast<const void*>(b16.data()) : b.data(), bf16, ldb, 0.0f, c.data(), N,
                              bf16_products);
      }
    };
    product();  // warm-up: page faults, packing buffers, thread pools
    double best = 1e30, total = 0;
    int reps = 0;
    while (reps < 3 || total < min_time) {
      const auto t0 = Clock::now();
      product();
      const double t = seconds_since(t0);
      best = std::min(best, t);
      total += t;
      ++reps;
    }
    double max_rel = 0;
    if (impl != "openblas" || threads != 1) {
      if (impl == "openblas") openblas_set_num_threads(1);
      cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                  static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), 1.0f, a.data(),
                  static_cast<blasint>(lda), b.data(), static_cast<blasint>(ldb), 0.0f, ref.data(),
                  static_cast<blasint>(N));
      if (impl == "openblas") openblas_set_num_threads(threads);
      double max_diff = 0, max_ref = 1e-30;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        max_diff = std::max(max_diff, static_cast<double>(std::fabs(c[i] - ref[i])));
        max_ref = std::max(max_ref, static_cast<double>(std::fabs(ref[i])));
      }
      max_rel = max_diff / max_ref;
    }
    std::printf("%s %d %s %s %ld %ld %ld %.1f %.3f %.1e\n", impl.c_str(), threads,
                bf16_products ? "bf16dot"
                : bf16        ? "bf16"
                              : "f32",
                layout.c_str(), M, N, K, 2.0 * M * N * K / best / 1e9, best * 1e3, max_rel);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string impl = "adapt", dtype = "f32", layout = "nt";
  std::string shapes = "512,768,768;512,2048,768;512,768,2048";
  int threads = 1;
  double min_time = 0.3;
  bool peak = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gemm_bench: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--impl") {
      impl = value();
    } else if (arg == "--threads") {
      threads = std::atoi(value().c_str());
    } else if (arg == "--dtype") {
      dtype = value();
    } else if (arg == "--layout") {
      layout = value();
    } else if (arg == "--shapes") {
      shapes = value();
    } else if (arg == "--min-time") {
      min_time = std::atof(value().c_str());
    } else if (arg == "--fma-peak") {
      peak = true;
    } else {
      std::fprintf(stderr,
                   "usage: gemm_bench --impl adapt|openblas --threads N [--dtype f32|bf16|bf16dot] [--layout nt|nn|tn] "
                   "[--shapes M,N,K;...] [--min-time S]\n       gemm_bench --fma-peak [--threads N]\n");
      return 2;
    }
  }
  const bool dtype_ok = dtype == "f32" || dtype == "bf16" || dtype == "bf16dot";
  if (threads < 1 || (impl != "adapt" && impl != "openblas") || !dtype_ok ||
      (layout != "nt" && layout != "nn" && layout != "tn") || (impl == "openblas" && dtype != "f32")) {
    std::fprintf(stderr,
                 "gemm_bench: bad combination (impl %s, dtype %s, layout %s, threads %d); OpenBLAS has no "
                 "bf16 product\n",
                 impl.c_str(), dtype.c_str(), layout.c_str(), threads);
    return 2;
  }
  if (peak) return fma_peak(threads);
  return run_gemm(impl, threads, dtype != "f32", dtype == "bf16dot", layout, parse_shapes(shapes), min_time);
}
