// Adapter-like parameter sets for the data-parallel optimizer tests (train_dp_mpi_test.cpp,
// offload_mpi_test.cpp): values and per-replica gradients are closed-form functions of (rank, tensor,
// element, step), so every rank can compute any replica's gradient and the single-process reference.
#pragma once

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"

namespace adapt::test {

/// Shapes chosen so ZeRO-1 shards cut through tensors.
inline const std::vector<Shape> kDpParamShapes = {Shape{4, 33}, Shape{50, 4}, Shape{7}, Shape{3, 129}};

/// One parameter per shape, named "p<i>" (tensor names prefixed with `tag`); tensor 2 has no weight
/// decay; with `tp_sharded`, tensors 0 and 3 are sharded along dimension 0 over tensor parallelism.
inline std::vector<adapters::AdapterParam> make_dp_params(const char* tag, const std::vector<Shape>& shapes,
                                                          bool tp_sharded = false) {
  std::vector<adapters::AdapterParam> ps;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    adapters::AdapterParam p;
    p.name = fmt::format("p{}", i);
    p.value = Tensor::zeros(shapes[i], DType::F32, std::string(tag) + p.name);
    p.grad = Tensor::zeros(shapes[i], DType::F32, std::string(tag) + p.name + ".grad");
    p.decay = i != 2;
    p.tp_shard_dim = tp_sharded && (i == 0 || i == 3) ? 0 : -1;
    for (std::int64_t k = 0; k < p.value.numel(); ++k)
      p.value.data<float>()[k] = static_cast<float>(std::sin(0.37 * static_cast<double>(k + 11 * i)));
    ps.push_back(p);
  }
  return ps;
}

/// Replica r's gradient element k of parameter i (step s).
inline float dp_grad(int r, std::size_t i, std::int64_t k, int s) {
  return static_cast<float>(std::cos(0.11 * static_cast<double>(k) + 0.7 * r + 0.3 * static_cast<double>(i) + s));
}

inline void fill_dp_grads(std::vector<adapters::AdapterParam>& ps, int r, int s) {
  for (std::size_t i = 0; i < ps.size(); ++i)
    for (std::int64_t k = 0; k < ps[i].grad.numel(); ++k) ps[i].grad.data<float>()[k] = dp_grad(r, i, k, s);
}

/// The single-process reference: every gradient = the mean of the `replicas` replicas' gradients (step s).
inline void fill_dp_mean_grads(std::vector<adapters::AdapterParam>& ps, int replicas, int s) {
  for (std::size_t i = 0; i < ps.size(); ++i)
    for (std::int64_t k = 0; k < ps[i].grad.numel(); ++k) {
      float mean = 0;
      for (int r = 0; r < replicas; ++r) mean += dp_grad(r, i, k, s);
      ps[i].grad.data<float>()[k] = mean / static_cast<float>(replicas);
    }
}

/// max |a − b| / max |b| over the elements.
inline double max_rel_diff(const Tensor& a, const Tensor& b) {
  double worst = 0, scale = 1e-30;
  for (std::int64_t k = 0; k < b.numel(); ++k)
    scale = std::max(scale, std::fabs(static_cast<double>(b.data<float>()[k])));
  for (std::int64_t k = 0; k < a.numel(); ++k)
    worst = std::max(worst, std::fabs(static_cast<double>(a.data<float>()[k]) - b.data<float>()[k]) / scale);
  return worst;
}

}  // namespace adapt::test
