// DeviceAdamW's device work, built only with ADAPT_HAVE_CUDA: the moments and the norm workspace from
// the device's caching allocator, and the kernels/ launchers (adamw, grad_norm, scale) on the compute
// stream, so the update needs no event against the forward and backward queued there. The one unit of
// optim that calls kernels/ directly (scripts/check_layering.py lists it with the kernel glue).
#include <algorithm>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_runtime.h"
#include "kernels/adamw.h"
#include "kernels/elementwise.h"
#include "kernels/grad_norm.h"
#include "kernels/launch_plan.h"
#include "optim/device_adamw.h"

namespace adapt::optim {

namespace {
cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
float* f32(const Tensor& t) { return static_cast<float*>(t.raw()); }
}  // namespace

void DeviceAdamW::init_device() {
  backend::cuda::require_device(device_.index);
  backend::cuda::DeviceGuard guard(device_.index);
  stream_ = backend::cuda_compute_stream();
  Allocator& alloc = backend::cuda_allocator(device_.index);
  const Shape flat{std::max<std::int64_t>(n_, 1)};
  m_ = Tensor::empty(flat, DType::F32, alloc, "device_adamw.exp_avg");
  v_ = Tensor::empty(flat, DType::F32, alloc, "device_adamw.exp_avg_sq");
  for (const DeviceAdamWParam& p : params_) n_partials_ += kernels::sum_squares_blocks(p.grad.numel());
  norm_ws_ = Tensor::empty(Shape{(n_partials_ + 1) * static_cast<std::int64_t>(sizeof(double))}, DType::U8, alloc,
                           "device_adamw.norm_workspace");
  ADAPT_CUDA_CHECK(cudaMemsetAsync(m_.raw(), 0, m_.size_bytes(), as_stream(stream_)));
  ADAPT_CUDA_CHECK(cudaMemsetAsync(v_.raw(), 0, v_.size_bytes(), as_stream(stream_)));
}

void DeviceAdamW::step(double lr) {
  ++n_steps_;
  if (params_.empty()) return;
  backend::cuda::DeviceGuard guard(device_.index);
  const AdamWOptions& o = options_;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const DeviceAdamWParam& p = params_[i];
    const kernels::AdamWScalars s =
        kernels::adamw_scalars(lr, n_steps_, o.beta1, o.beta2, o.eps, o.weight_decay, p.decay);
    kernels::launch_adamw_step(f32(p.value), f32(p.grad), f32(m_) + offsets_[i], f32(v_) + offsets_[i],
                               /*copy=*/nullptr, DType::F32, p.value.numel(), s, as_stream(stream_));
  }
}

double DeviceAdamW::sum_squares(std::span<const std::size_t> which) const {
  if (which.empty()) return 0.0;
  std::vector<bool> seen(params_.size(), false);
  for (const std::size_t i : which) {
    ADAPT_CHECK(i < params_.size(), "DeviceAdamW::sum_squares: parameter index {} of {}", i, params_.size());
    ADAPT_CHECK(!seen[i], "DeviceAdamW::sum_squares: parameter index {} ('{}') given twice", i, params_[i].name);
    seen[i] = true;
  }
  backend::cuda::DeviceGuard guard(device_.index);
  const cudaStream_t stream = as_stream(stream_);
  auto* ws = static_cast<double*>(norm_ws_.raw());
  std::int64_t at = 0;  // partials of the tensors in `which`, in that order
  for (const std::size_t i : which) {
    const Tensor& g = params_[i].grad;
    kernels::launch_sum_squares_partials(f32(g), g.numel(), ws + at, stream);
    at += kernels::sum_squares_blocks(g.numel());
  }
  kernels::launch_sum_partials(ws, at, ws + n_partials_, stream);
  double out = 0.0;
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(&out, ws + n_partials_, sizeof(double), cudaMemcpyDeviceToHost, stream));
  ADAPT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

void DeviceAdamW::clip(double factor) {
  if (params_.empty()) return;
  backend::cuda::DeviceGuard guard(device_.index);
  const auto c = static_cast<float>(factor);
  for (const DeviceAdamWParam& p : params_) kernels::launch_scale(f32(p.grad), c, p.grad.numel(), as_stream(stream_));
}

}  // namespace adapt::optim
