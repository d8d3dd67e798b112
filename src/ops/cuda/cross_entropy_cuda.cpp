#include "ops/cuda/cross_entropy_cuda.h"

#include <vector>

#include "backend/backend.h"
#include "kernels/cross_entropy.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {

namespace {
void check_logits(const char* op, const Tensor& logits, const Tensor& targets) {
  detail::require_float(op, logits);
  detail::require_ids(op, targets);
  ADAPT_REQUIRE(logits.rank() >= 1 && logits.dim(-1) > 0, ShapeError, "{}: logits '{}' {} need a vocabulary dimension",
                op, logits.name(), logits.shape().str());
  ADAPT_REQUIRE(targets.numel() == detail::rows_of(logits), ShapeError,
                "{}: targets '{}' {} must hold one entry per row of logits '{}' {}", op, targets.name(),
                targets.shape().str(), logits.name(), logits.shape().str());
}

void check_row_values(const char* op, const Tensor& t, std::int64_t rows) {
  detail::require_dtype(op, t, DType::F32);
  ADAPT_REQUIRE(t.numel() == rows, ShapeError, "{}: '{}' {} must hold one value per row ({})", op, t.name(),
                t.shape().str(), rows);
}
}  // namespace

CrossEntropyResult cross_entropy_forward_backward(Tensor& logits, const Tensor& targets,
                                                  const CrossEntropyOptions& opts, Tensor* row_loss) {
  constexpr const char* op = "cross_entropy_forward_backward";
  detail::require_device_contiguous(op, logits, {&targets, row_loss});
  check_logits(op, logits, targets);
  const std::int64_t V = logits.dim(-1), rows = detail::rows_of(logits);
  const std::vector<std::int64_t> y = detail::ids_to_host(targets);
  for (std::size_t r = 0; r < y.size(); ++r) {
    ADAPT_REQUIRE(y[r] == opts.ignore_index || (y[r] >= 0 && y[r] < V), ShapeError,
                  "{}: target {} of row {} in '{}' is outside the vocabulary [0, {}) and is not the ignore index {}; "
                  "the labels do not belong to this model's tokenizer",
                  op, y[r], r, targets.name(), V, opts.ignore_index);
  }
  Tensor own_loss;
  if (row_loss) {
    check_row_values(op, *row_loss, rows);
  } else {
    own_loss = Tensor::empty({rows}, DType::F32, backend::cuda_allocator(logits.device().index), "ce_row_loss");
  }
  Tensor& loss = row_loss ? *row_loss : own_loss;
  kernels::launch_cross_entropy_forward_backward(logits.raw(), detail::f32_ptr(loss), targets.raw(), targets.dtype(),
                                                 rows, V, V, opts.grad_scale, opts.ignore_index, opts.grad,
                                                 logits.dtype(), nullptr);
  std::vector<float> host(static_cast<std::size_t>(rows));
  if (rows > 0)
    ADAPT_CUDA_CHECK(cudaMemcpy(host.data(), loss.raw(), host.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CrossEntropyResult res;
  for (std::size_t r = 0; r < host.size(); ++r) {  // in row order, as the CPU
    if (y[r] == opts.ignore_index) continue;
    res.loss_sum += host[r];
    ++res.n_valid;
  }
  return res;
}

void cross_entropy_row_max(Tensor& row_max, const Tensor& logits) {
  constexpr const char* op = "cross_entropy_row_max";
  detail::require_device_contiguous(op, logits, {&row_max});
  detail::require_float(op, logits);
  const std::int64_t V = logits.dim(-1), rows = detail::rows_of(logits);
  check_row_values(op, row_max, rows);
  kernels::launch_cross_entropy_row_max(detail::f32_ptr(row_max), logits.raw(), rows, V, V, logits.dtype(), nullptr);
}

void cross_entropy_sum_exp(Tensor& sum_exp, Tensor& target_logit, const Tensor& logits, const Tensor& row_max,
                           const Tensor& targets, std::int64_t vocab_begin) {
  constexpr const char* op = "cross_entropy_sum_exp";
  detail::require_device_contiguous(op, logits, {&sum_exp, &target_logit, &row_max, &targets});
  check_logits(op, logits, targets);
  const std::int64_t V = logits.dim(-1), rows = detail::rows_of(logits);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&sum_exp, &target_logit, &row_max})
    check_row_values(op, *t, rows);
  kernels::launch_cross_entropy_sum_exp(detail::f32_ptr(sum_exp), detail::f32_ptr(target_logit), logits.raw(),
                                        detail::f32_ptr(row_max), targets.raw(), targets.dtype(), rows, V, V,
                                        vocab_begin, logits.dtype(), nullptr);
}

void cross_entropy_finish(Tensor& logits, Tensor* row_loss, const Tensor& row_max, const Tensor& sum_exp,
                          const Tensor& target_logit, const Tensor& targets, std::int64_t vocab_begin,
                          const CrossEntropyOptions& opts) {
  constexpr const char* op = "cross_entropy_finish";
  detail::require_device_contiguous(op, logits, {row_loss, &row_max, &sum_exp, &target_logit, &targets});
  check_logits(op, logits, targets);
  const std::int64_t V = logits.dim(-1), rows = detail::rows_of(logits);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&sum_exp, &target_logit, &row_max})
    check_row_values(op, *t, rows);
  if (row_loss) check_row_values(op, *row_loss, rows);
  kernels::launch_cross_entropy_finish(logits.raw(), detail::f32_ptr(row_loss), detail::f32_ptr(row_max),
                                       detail::f32_ptr(sum_exp), detail::f32_ptr(target_logit), targets.raw(),
                                       targets.dtype(), rows, V, V, vocab_begin, opts.grad_scale, opts.ignore_index,
                                       opts.grad, logits.dtype(), nullptr);
}

}  // namespace adapt::ops::cuda
