// Tensor-parallel ops under mpiexec with the world as the tp group (2 and 4 ranks): each rank takes
// its slice of weights and inputs made identically on every rank, and the results must equal the
// single-rank ops on the whole tensors (ops::matmul, a table lookup, ops::cross_entropy).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

#include "comm/mpi_communicator.h"
#include "ops/cross_entropy.h"
#include "ops/matmul.h"
#include "parallel/tp_ops.h"

using namespace adapt;
using namespace adapt::parallel;

namespace {

// A deterministic value in [-1, 1) for (key, i): the same on every rank.
float value(std::uint64_t key, std::int64_t i) {
  std::uint64_t x = (key + 1) * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(i) * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 31;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 29;
  return static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

Tensor matrix(std::int64_t rows, std::int64_t cols, std::uint64_t key, float scale = 1.0f) {
  Tensor t = Tensor::empty({rows, cols}, DType::F32);
  for (std::int64_t i = 0; i < rows * cols; ++i) t.data<float>()[i] = scale * value(key, i);
  return t;
}

// Rows or columns [r.begin, r.end()) of a (rows, cols) matrix, as a new contiguous tensor.
Tensor slice(const Tensor& m, ShardDim dim, const Range& r) {
  const std::int64_t rows = m.dim(0), cols = m.dim(1);
  Tensor out = Tensor::empty(dim == ShardDim::Rows ? Shape{r.count, cols} : Shape{rows, r.count}, DType::F32);
  float* o = out.data<float>();
  const float* p = m.data<float>();
  for (std::int64_t i = 0; i < out.dim(0); ++i) {
    for (std::int64_t j = 0; j < out.dim(1); ++j) {
      o[i * out.dim(1) + j] = dim == ShardDim::Rows ? p[(r.begin + i) * cols + j] : p[i * cols + r.begin + j];
    }
  }
  return out;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  double worst = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
  }
  return worst;
}

}  // namespace

TEST_CASE("column- and row-parallel linear equal the whole product, forward and backward") {
  auto tp = comm::MpiCommunicator::world({.timeout_s = 60, .max_elems_per_call = 5});
  const int size = tp->size(), me = tp->rank();
  const std::int64_t N = 5, in = 12, out = 10;
  const Tensor x = matrix(N, in, 1), w = matrix(out, in, 2), dy = matrix(N, out, 3);
  Tensor y_ref = Tensor::empty({N, out}, DType::F32), dx_ref = Tensor::empty({N, in}, DType::F32);
  ops::matmul(y_ref, x, w);
  ops::matmul(dx_ref, dy, w, {.transpose_b = false});

  // Column-parallel: the rank's output features; the input gradient is all-reduced.
  const Range o = split_range(out, 1, size, me);
  const Tensor w_col = slice(w, ShardDim::Rows, o);
  Tensor y_col = Tensor::empty({N, o.count}, DType::F32), dx_col = Tensor::empty({N, in}, DType::F32);
  tp_linear_forward(y_col, x, w_col, ShardDim::Rows, *tp);
  CHECK(max_abs_diff(y_col, slice(y_ref, ShardDim::Cols, o)) < 1e-6);
  tp_linear_backward_input(dx_col, slice(dy, ShardDim::Cols, o), w_col, ShardDim::Rows, *tp);
  CHECK(max_abs_diff(dx_col, dx_ref) < 1e-5);

  // Row-parallel: the rank's input features; the output is all-reduced.
  const Range i = split_range(in, 1, size, me);
  const Tensor w_row = slice(w, ShardDim::Cols, i);
  Tensor y_row = Tensor::empty({N, out}, DType::F32), dx_row = Tensor::empty({N, i.count}, DType::F32);
  tp_linear_forward(y_row, slice(x, ShardDim::Cols, i), w_row, ShardDim::Cols, *tp);
  CHECK(max_abs_diff(y_row, y_ref) < 1e-5);
  tp_linear_backward_input(dx_row, dy, w_row, ShardDim::Cols, *tp);
  CHECK(max_abs_diff(dx_row, slice(dx_ref, ShardDim::Cols, i)) < 1e-6);
  CHECK(tp->stats()[comm::Collective::AllReduce].calls == 2);
}

TEST_CASE("vocab-parallel embedding gathers every row from the rank that holds it") {
  auto tp = comm::MpiCommunicator::world();
  const std::int64_t V = 11, C = 4;
  const Tensor table = matrix(V, C, 4);
  const Range v = split_range(V, 1, tp->size(), tp->rank());
  const Tensor shard = slice(table, ShardDim::Rows, v);
  Tensor ids = Tensor::empty({2, 5}, DType::I64);
  const std::int64_t id_list[10] = {0, 10, 5, 3, 3, 9, 1, 7, 2, 6};
  for (int k = 0; k < 10; ++k) ids.data<std::int64_t>()[k] = id_list[k];
  Tensor out = Tensor::empty({2, 5, C}, DType::F32);
  vocab_parallel_embedding_forward(out, shard, v, V, ids, *tp);
  std::int64_t bad = 0;
  for (int k = 0; k < 10; ++k) {
    for (std::int64_t c = 0; c < C; ++c) bad += out.data<float>()[k * C + c] != table.data<float>()[id_list[k] * C + c];
  }
  CHECK(bad == 0);
  ids.data<std::int64_t>()[4] = V;
  CHECK_THROWS_AS(vocab_parallel_embedding_forward(out, shard, v, V, ids, *tp), ShapeError);
}

TEST_CASE("vocab-parallel cross-entropy equals the whole-vocabulary loss and gradient") {
  auto tp = comm::MpiCommunicator::world();
  const std::int64_t N = 6, V = 37;
  const Range v = split_range(V, 1, tp->size(), tp->rank());
  Tensor targets = Tensor::empty({N}, DType::I32);
  const std::int32_t t_list[N] = {0, 36, -100, 17, 18, 5};  // both ends of the vocabulary, one ignored row
  for (int k = 0; k < N; ++k) targets.data<std::int32_t>()[k] = t_list[k];
  for (bool grad : {false, true}) {
    CAPTURE(grad);
    Tensor full = matrix(N, V, 5, 4.0f);
    Tensor local = slice(full, ShardDim::Cols, v);
    const ops::CrossEntropyOptions opts{.grad_scale = 0.2f, .grad = grad};
    const ops::CrossEntropyResult ref = ops::cross_entropy_forward_backward(full, targets, opts);
    const ops::CrossEntropyResult got = vocab_parallel_cross_entropy(local, targets, v, V, *tp, opts);
    CHECK(got.n_valid == ref.n_valid);
    CHECK(got.n_valid == 5);
    CHECK(std::abs(got.loss_sum - ref.loss_sum) < 1e-5 * std::abs(ref.loss_sum));
    CHECK(max_abs_diff(local, slice(full, ShardDim::Cols, v)) < 1e-6);  // the gradient slice (or the logits)
  }
}
