// DeviceAdamW's host side: validation of the parameters, the clipping rule, and state() / restore()
// through backend::copy (synchronous copies after the device's queued work). The launches are in
// device_adamw_cuda.cpp; a build without CUDA refuses the construction with an UnsupportedError that
// names ADAPT_CUDA.
#include "optim/device_adamw.h"

#include <cmath>
#include <set>
#include <utility>

#include "backend/backend.h"
#include "core/error.h"

namespace adapt::optim {

namespace {

/// Contiguous f32 on a CUDA device, or the error saying which of these `t` is not.
void check_tensor(const Tensor& t, const char* what, const std::string& name) {
  ADAPT_REQUIRE(t.defined(), ShapeError, "optim::DeviceAdamW: the {} of parameter '{}' is an undefined tensor", what,
                name);
  ADAPT_REQUIRE(t.device().kind == DeviceKind::Cuda, UnsupportedError,
                "optim::DeviceAdamW: the {} of parameter '{}' lives on {}, but DeviceAdamW keeps the optimizer "
                "state beside the parameters on a GPU and needs CUDA tensors. Hint: for parameters in host memory "
                "use optim::AdamW (optim.offload = false on the CPU) or optim::OffloadAdamW (optim.offload = true)",
                what, name, t.device().str());
  ADAPT_REQUIRE(t.dtype() == DType::F32 && t.is_contiguous(), ShapeError,
                "optim::DeviceAdamW: the {} of parameter '{}' is a {}{} tensor; it must be contiguous f32 (the "
                "fp32 master weights and their gradient)",
                what, name, t.is_contiguous() ? "" : "non-contiguous ", dtype_name(t.dtype()));
}

}  // namespace

DeviceAdamW::DeviceAdamW(std::vector<DeviceAdamWParam> params, const AdamWOptions& options)
    : params_(std::move(params)), options_(options) {
#if !ADAPT_HAVE_CUDA
  ADAPT_THROW(UnsupportedError,
              "optim::DeviceAdamW keeps the optimizer state on a GPU, but this binary was built without CUDA "
              "(ADAPT_CUDA=OFF or nvcc not found at configure time); rebuild with -DADAPT_CUDA=ON, or run on the "
              "CPU backend (runtime.device = \"cpu\")");
#endif
  ADAPT_REQUIRE(options_.beta1 >= 0 && options_.beta1 < 1 && options_.beta2 >= 0 && options_.beta2 < 1, ConfigError,
                "AdamW betas must be in [0, 1), got ({}, {})", options_.beta1, options_.beta2);
  ADAPT_REQUIRE(options_.eps > 0 && options_.weight_decay >= 0, ConfigError,
                "AdamW needs eps > 0 and weight_decay >= 0, got eps = {}, weight_decay = {}", options_.eps,
                options_.weight_decay);
  std::set<std::string> names;
  for (const DeviceAdamWParam& p : params_) {
    check_tensor(p.value, "weights", p.name);
    check_tensor(p.grad, "gradient", p.name);
    ADAPT_REQUIRE(p.value.shape() == p.grad.shape(), ShapeError,
                  "optim::DeviceAdamW: parameter '{}' has weights {} but gradient {}", p.name, p.value.shape().str(),
                  p.grad.shape().str());
    const DeviceAdamWParam& first = params_.front();
    ADAPT_REQUIRE(p.value.device() == first.value.device() && p.grad.device() == first.value.device(), UnsupportedError,
                  "optim::DeviceAdamW: parameter '{}' (weights on {}, gradient on {}) is not on {} like parameter "
                  "'{}'; one DeviceAdamW updates the parameters of one GPU",
                  p.name, p.value.device().str(), p.grad.device().str(), first.value.device().str(), first.name);
    ADAPT_CHECK(names.insert(p.name).second, "optim::DeviceAdamW: parameter name '{}' appears twice", p.name);
    offsets_.push_back(n_);
    n_ += p.value.numel();
  }
  if (params_.empty()) return;
  device_ = params_.front().value.device();
  init_device();
}

DeviceAdamW::~DeviceAdamW() = default;

double DeviceAdamW::sum_squares() const {
  std::vector<std::size_t> all(params_.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  return sum_squares(all);
}

double DeviceAdamW::clip_global_norm(double max_norm) {
  ADAPT_REQUIRE(max_norm > 0, ConfigError, "gradient clipping needs max_norm > 0, got {}", max_norm);
  const double norm = std::sqrt(sum_squares());
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) clip(coef);
  return norm;
}

Tensor DeviceAdamW::moment_view(int which, std::size_t i) const {
  const Tensor& flat = which == 0 ? m_ : v_;
  const DeviceAdamWParam& p = params_[i];
  return Tensor::wrap(static_cast<float*>(flat.raw()) + offsets_[i], p.value.shape(), DType::F32, device_, nullptr,
                      p.name + (which == 0 ? ".exp_avg" : ".exp_avg_sq"));
}

std::map<std::string, Tensor> DeviceAdamW::state() const {
  std::map<std::string, Tensor> out;
  if (params_.empty()) return out;
  backend::synchronize(device_.index);  // every queued step is in the copies
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const DeviceAdamWParam& p = params_[i];
    const Tensor src[] = {p.value, moment_view(0, i), moment_view(1, i)};
    const std::string keys[] = {"adapter/" + p.name, "optim/m/" + p.name, "optim/v/" + p.name};
    for (int k = 0; k < 3; ++k) {
      Tensor host = Tensor::zeros(p.value.shape(), DType::F32, k == 0 ? p.name : src[k].name());
      backend::copy(host, src[k]);
      out[keys[k]] = std::move(host);
    }
  }
  return out;
}

void DeviceAdamW::restore(const std::function<const Tensor&(const std::string&)>& get) {
  if (params_.empty()) return;
  backend::synchronize(device_.index);  // no queued step still reads the old values
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const DeviceAdamWParam& p = params_[i];
    Tensor dst[] = {p.value, moment_view(0, i), moment_view(1, i)};
    const std::string keys[] = {"adapter/" + p.name, "optim/m/" + p.name, "optim/v/" + p.name};
    for (int k = 0; k < 3; ++k) {
      const Tensor& src = get(keys[k]);
      ADAPT_REQUIRE(src.dtype() == DType::F32 && src.shape() == p.value.shape() && src.is_contiguous(), ShapeError,
                    "optim::DeviceAdamW::restore: '{}' is a {} {} tensor, but parameter '{}' needs contiguous f32 {}",
                    keys[k], dtype_name(src.dtype()), src.shape().str(), p.name, p.value.shape().str());
      backend::copy(dst[k], src);
    }
  }
  backend::synchronize(device_.index);
}

#if !ADAPT_HAVE_CUDA
// Unreachable: the constructor throws in builds without CUDA. Defined so that callers link.
void DeviceAdamW::init_device() { ADAPT_THROW(InternalError, "optim::DeviceAdamW without CUDA"); }
void DeviceAdamW::step(double) { ADAPT_THROW(InternalError, "optim::DeviceAdamW without CUDA"); }
double DeviceAdamW::sum_squares(std::span<const std::size_t>) const {
  ADAPT_THROW(InternalError, "optim::DeviceAdamW without CUDA");
}
void DeviceAdamW::clip(double) { ADAPT_THROW(InternalError, "optim::DeviceAdamW without CUDA"); }
#endif

}  // namespace adapt::optim
