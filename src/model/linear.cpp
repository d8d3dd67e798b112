#include "model/linear.h"

#include "backend/backend.h"
#include "core/error.h"
#include "ops/cast.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace adapt::model {

// The first GEMM operand in the weight's dtype: on a CUDA device cuBLASLt multiplies one dtype by the
// same dtype, so a bf16 weight takes a bf16 copy of x (device scratch from the caching allocator,
// released in stream order). On the host, or with f32 weights, x itself.
Tensor device_in_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor xc = Tensor::empty(x.shape(), dtype, backend::cuda_allocator(x.device().index), x.name() + ".cast");
  ops::cast(xc, x);
  return xc;
}

Tensor gemm_input(const Tensor& x, const Tensor& w) {
  return x.device().host_accessible() ? x : device_in_dtype(x, w.dtype());
}

Tensor as_rows(const Tensor& t) {
  ADAPT_CHECK(t.rank() >= 1 && t.is_contiguous(), "as_rows: '{}' {} must be contiguous", t.name(), t.shape().str());
  const std::int64_t width = t.dim(-1);
  return t.reshape({width == 0 ? 0 : t.numel() / width, width});
}

void linear(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* bias, const LinearSite& site, AdapterHook* hook,
            const LinearOptions& opts) {
  const bool cast_given = opts.x_for_gemm != nullptr && opts.x_for_gemm->defined();
  ADAPT_CHECK(!cast_given || (opts.x_for_gemm->dtype() == (x.device().host_accessible() ? x.dtype() : w.dtype()) &&
                              opts.x_for_gemm->shape() == x.shape()),
              "linear: x_for_gemm '{}' {} {} is not '{}' {} as the GEMM by '{}' ({}) takes it", opts.x_for_gemm->name(),
              opts.x_for_gemm->shape().str(), dtype_name(opts.x_for_gemm->dtype()), x.name(), x.shape().str(), w.name(),
              dtype_name(w.dtype()));
  ops::matmul(y, cast_given ? *opts.x_for_gemm : gemm_input(x, w), w,
              ops::MatmulOptions{.transpose_b = true, .beta = opts.accumulate ? 1.0f : 0.0f});
  if (bias && bias->defined()) ops::bias_add(y, *bias);
  if (hook && hook->has_linear(site)) {
    Tensor y2 = as_rows(y);
    hook->linear_forward(site, as_rows(x), y2);
  }
}

namespace {
// dx = dy · W (or += with accumulate; zeros, or left as it is, without input_grad): the frozen path.
void frozen_input_grad(Tensor& dx, const Tensor& dy, const Tensor& w, const LinearOptions& opts) {
  if (opts.input_grad) {
    ops::matmul(dx, gemm_input(dy, w), w,
                ops::MatmulOptions{.transpose_b = false, .beta = opts.accumulate ? 1.0f : 0.0f});
  } else if (!opts.accumulate) {
    ops::fill(dx, 0.0f);  // only a hook's share goes into dx
  }
}
}  // namespace

void linear_backward(Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& w, const LinearSite& site,
                     AdapterHook* hook, const LinearOptions& opts) {
  frozen_input_grad(dx, dy, w, opts);
  if (hook && hook->has_linear(site)) {
    Tensor dx2 = as_rows(dx);
    hook->linear_backward(site, as_rows(x), as_rows(dy), dx2);
  }
}

void linear_backward_input(Tensor& dx, const Tensor& dy, const Tensor& x, const Tensor& w, const LinearSite& site,
                           AdapterHook* hook, const LinearOptions& opts) {
  frozen_input_grad(dx, dy, w, opts);
  if (hook && hook->has_linear(site)) {
    Tensor dx2 = as_rows(dx);
    hook->linear_backward_input(site, as_rows(x), as_rows(dy), dx2);
  }
}

void linear_backward_weights(const Tensor& dy, const Tensor& x, const LinearSite& site, AdapterHook* hook) {
  if (hook && hook->has_linear(site)) hook->linear_backward_weights(site, as_rows(x), as_rows(dy));
}

}  // namespace adapt::model
