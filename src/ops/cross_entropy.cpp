// Entry point of the fused cross-entropy: target range and shape checks (before any logit is
// overwritten), then cpu::cross_entropy.
#include "ops/cross_entropy.h"

#include "core/error.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/cross_entropy_cuda.h"
#endif

namespace adapt::ops {

CrossEntropyResult cross_entropy_forward_backward(Tensor& logits, const Tensor& targets,
                                                  const CrossEntropyOptions& opts, Tensor* row_loss) {
  constexpr const char* op = "cross_entropy_forward_backward";
  detail::require_same_device(op, logits, {&targets});
  if (row_loss) detail::require_same_device(op, logits, {row_loss});
#if ADAPT_HAVE_CUDA
  if (!logits.device().host_accessible()) return cuda::cross_entropy_forward_backward(logits, targets, opts, row_loss);
#endif
  if (!detail::on_cpu(op, logits)) return {};
  const detail::MatrixView Z = detail::as_matrix(op, logits);
  ADAPT_REQUIRE(targets.dtype() == DType::I32 || targets.dtype() == DType::I64, ShapeError,
                "{}: targets '{}' have dtype {}; i32 or i64 was expected", op, targets.name(),
                dtype_name(targets.dtype()));
  detail::require_contiguous(op, targets);
  ADAPT_REQUIRE(targets.numel() == Z.rows, ShapeError,
                "{}: targets '{}' {} hold {} entries but logits '{}' {} have {} rows (one target per row)", op,
                targets.name(), targets.shape().str(), targets.numel(), logits.name(), logits.shape().str(), Z.rows);
  ADAPT_REQUIRE(Z.cols > 0, ShapeError, "{}: logits '{}' {} have an empty vocabulary dimension", op, logits.name(),
                logits.shape().str());
  cpu::CrossEntropyArgs a;
  a.logits = Z.data;
  a.ld = Z.ld, a.rows = Z.rows, a.V = Z.cols;
  a.targets32 = targets.dtype() == DType::I32 ? targets.data<std::int32_t>() : nullptr;
  a.targets64 = targets.dtype() == DType::I64 ? targets.data<std::int64_t>() : nullptr;
  for (std::int64_t r = 0; r < Z.rows; ++r) {
    const std::int64_t y = a.targets32 ? a.targets32[r] : a.targets64[r];
    ADAPT_REQUIRE(y == opts.ignore_index || (y >= 0 && y < Z.cols), ShapeError,
                  "{}: target {} of row {} in '{}' is outside the vocabulary [0, {}) and is not the ignore index {}; "
                  "the labels do not belong to this model's tokenizer",
                  op, y, r, targets.name(), Z.cols, opts.ignore_index);
  }
  if (row_loss) {
    detail::require_dtype(op, *row_loss, DType::F32);
    detail::require_contiguous(op, *row_loss);
    ADAPT_REQUIRE(row_loss->numel() == Z.rows, ShapeError, "{}: row_loss '{}' {} must hold one value per row ({})", op,
                  row_loss->name(), row_loss->shape().str(), Z.rows);
    a.row_loss = row_loss->data<float>();
  }
  a.ignore_index = opts.ignore_index;
  a.grad_scale = opts.grad_scale;
  a.grad = opts.grad;
  const cpu::CrossEntropySums s = cpu::cross_entropy(a);
  return CrossEntropyResult{s.loss_sum, s.n_valid};
}

}  // namespace adapt::ops
