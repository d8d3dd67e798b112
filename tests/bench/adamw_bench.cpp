// CPU AdamW throughput: the offloaded optimizer's update (optim::OffloadAdamW, each instruction set this
// CPU has) and the plain optim::AdamW loop (OpenMP), in parameters per second, for the sizes and thread
// counts given. The adapt side of scripts/bench_adamw.sh, which runs torch.optim.AdamW beside it and
// prints the table.
//
//   adamw_bench SIZES THREADS REPS TENSOR_ELEMS
//     SIZES         comma-separated parameter counts, e.g. 10000000,100000000
//     THREADS       comma-separated thread counts, e.g. 1,2
//     REPS          timed steps per row (after one untimed step); the median counts
//     TENSOR_ELEMS  elements per parameter tensor (the state is cut into tensors of this size, as an
//                   adapter's LoRA factors are; the last one takes the rest)
// Prints one line per row: "adapt <implementation> <size> <threads> <median seconds per step>".
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "optim/adamw.h"
#include "optim/offload_adamw.h"
#include "tests/bench/bench_util.h"

using namespace adapt;
using adapt::bench::parse_list;
using namespace adapt::optim;

namespace {

template <typename F>
double median_seconds(int reps, F&& step) {
  step();  // untimed: first touch of the pages, thread start-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    step();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  return bench::median(std::move(t));
}

void fill(float* x, std::int64_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (std::int64_t i = 0; i < n; ++i) x[i] = d(rng);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s SIZES THREADS REPS TENSOR_ELEMS (see the file header)\n", argv[0]);
    return 2;
  }
  const std::vector<std::int64_t> sizes = parse_list(argv[1]), threads = parse_list(argv[2]);
  const int reps = std::atoi(argv[3]);
  const std::int64_t tensor_elems = std::atoll(argv[4]);
  const AdamWOptions opt{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
  std::vector<CpuIsa> isas{cpu_isa_best()};
  if (cpu_isa_best() == CpuIsa::Avx512) isas.push_back(CpuIsa::Avx2);
  for (const std::int64_t n : sizes) {
    std::vector<OffloadSegment> segments;
    for (std::int64_t at = 0; at < n; at += tensor_elems)
      segments.push_back({.begin = at, .count = std::min(tensor_elems, n - at), .decay = true});
    for (const std::int64_t t : threads) {
      {
        OffloadAdamW state(n, segments, opt, Device{}, {.threads = static_cast<int>(t)});
        fill(state.master(), n, 1);
        fill(state.grad(), n, 2);
        for (const CpuIsa isa : isas) {
          state.set_isa(isa);
          const double s = median_seconds(reps, [&] { state.step(1e-3); });
          std::printf("adapt offload(%s) %lld %lld %.6f\n", std::string(cpu_isa_name(isa)).c_str(),
                      static_cast<long long>(n), static_cast<long long>(t), s);
          std::fflush(stdout);
        }
      }
      {
        omp_set_num_threads(static_cast<int>(t));
        AdamW plain(opt);
        for (const OffloadSegment& seg : segments) {
          Tensor p = Tensor::empty(Shape{seg.count}, DType::F32), g = Tensor::empty(Shape{seg.count}, DType::F32);
          fill(p.data<float>(), seg.count, 1);
          fill(g.data<float>(), seg.count, 2);
          plain.add("p", p, g);
        }
        const double s = median_seconds(reps, [&] { plain.step(1e-3); });
        std::printf("adapt AdamW(openmp) %lld %lld %.6f\n", static_cast<long long>(n), static_cast<long long>(t), s);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
