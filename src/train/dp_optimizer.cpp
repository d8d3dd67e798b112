#include "train/dp_optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>

#include "core/error.h"
#include "parallel/dp_reducer.h"
#include "parallel/zero_partition.h"

namespace adapt::train {

namespace {
/// Elements per gradient bucket (16 MiB of f32): large enough to keep the all-reduces few, small
/// enough that a bucket can leave while the backward fills the next.
constexpr std::int64_t kBucketElems = std::int64_t{1} << 22;
}  // namespace

DpOptimizer::DpOptimizer(std::vector<adapters::AdapterParam> params, const optim::AdamWOptions& options,
                         comm::Communicator& dp, bool zero1, comm::Communicator* tp)
    : params_(std::move(params)), dp_(dp), zero1_(zero1), tp_(tp != nullptr && tp->size() > 1 ? tp : nullptr),
      opt_(options) {
  for (const auto& p : params_) {
    offsets_.push_back(n_);
    n_ += p.value.numel();
  }
  if (single() || !zero1_) {
    for (const auto& p : params_) opt_.add(p.name, p.value, p.grad, p.decay);
    if (!single()) flat_.assign(static_cast<std::size_t>(n_), 0.0f);
    return;
  }
  const int P = dp_.size(), r = dp_.rank();
  shard_count_ = parallel::zero_shard_count(n_, P);
  shard_begin_ = static_cast<std::int64_t>(r) * shard_count_;
  const parallel::Range mine = parallel::zero_shard(n_, P, r);
  flat_.assign(static_cast<std::size_t>(shard_count_ * P), 0.0f);
  shard_grad_.assign(static_cast<std::size_t>(shard_count_), 0.0f);
  shard_master_.assign(static_cast<std::size_t>(shard_count_), 0.0f);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const std::int64_t lo = std::max(offsets_[i], mine.begin);
    const std::int64_t hi = std::min(offsets_[i] + params_[i].value.numel(), mine.end());
    if (hi <= lo) continue;
    pieces_.push_back({.param = static_cast<int>(i), .begin = lo, .count = hi - lo});
    const std::int64_t at = lo - shard_begin_;
    std::memcpy(shard_master_.data() + at, params_[i].value.data<float>() + (lo - offsets_[i]),
                static_cast<std::size_t>(hi - lo) * sizeof(float));
    opt_.add(params_[i].name, Tensor::wrap(shard_master_.data() + at, Shape{hi - lo}, DType::F32, Device{}, nullptr),
             Tensor::wrap(shard_grad_.data() + at, Shape{hi - lo}, DType::F32, Device{}, nullptr), params_[i].decay);
  }
}

void DpOptimizer::flatten_grads(float* dst) const {
  for (std::size_t i = 0; i < params_.size(); ++i)
    std::memcpy(dst + offsets_[i], params_[i].grad.data<float>(),
                static_cast<std::size_t>(params_[i].grad.numel()) * sizeof(float));
}

double DpOptimizer::tp_norm(double split, double whole) const {
  if (tp_ != nullptr) tp_->all_reduce(&split, 1, comm::CommDType::F64, comm::ReduceOp::Sum);
  return std::sqrt(split + whole);
}

namespace {
/// As optim::grad_clip_global_norm, given the norm.
void clip_by(float* g, std::int64_t n, double norm, double max_norm) {
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return;
  const auto c = static_cast<float>(coef);
  for (std::int64_t i = 0; i < n; ++i) g[i] *= c;
}
}  // namespace

double DpOptimizer::reduce_and_clip(double max_norm) {
  if (single() || !zero1_) {
    std::vector<Tensor> grads;
    for (const auto& p : params_) grads.push_back(p.grad);
    if (!single()) {
      flatten_grads(flat_.data());
      std::vector<std::int64_t> numels;
      for (const auto& p : params_) numels.push_back(p.grad.numel());
      parallel::dp_average_gradients(flat_, parallel::gradient_buckets(numels, kBucketElems), dp_);
      for (std::size_t i = 0; i < params_.size(); ++i)
        std::memcpy(params_[i].grad.data<float>(), flat_.data() + offsets_[i],
                    static_cast<std::size_t>(params_[i].grad.numel()) * sizeof(float));
    }
    if (tp_ == nullptr)
      return max_norm > 0 ? optim::grad_clip_global_norm(grads, max_norm) : optim::grad_global_norm(grads);
    double ss[2] = {0, 0};  // split, whole
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const double n = optim::grad_global_norm(std::span<const Tensor>(&grads[i], 1));
      ss[split(i) ? 0 : 1] += n * n;
    }
    const double norm = tp_norm(ss[0], ss[1]);
    if (max_norm > 0)
      for (Tensor& g : grads) clip_by(g.data<float>(), g.numel(), norm, max_norm);
    return norm;
  }
  std::fill(flat_.begin(), flat_.end(), 0.0f);
  flatten_grads(flat_.data());
  parallel::zero1_reduce_scatter_average(flat_, shard_grad_, dp_);
  double ss[2] = {0, 0};  // split over tp, whole (the padding is zero and belongs to no parameter)
  for (const Piece& pc : pieces_) {
    const float* g = shard_grad_.data() + (pc.begin - shard_begin_);
    double s = 0;
    for (std::int64_t j = 0; j < pc.count; ++j) s += static_cast<double>(g[j]) * g[j];
    ss[split(static_cast<std::size_t>(pc.param)) ? 0 : 1] += s;
  }
  dp_.all_reduce(ss, 2, comm::CommDType::F64, comm::ReduceOp::Sum);
  const double norm = tp_norm(ss[0], ss[1]);
  if (max_norm > 0) clip_by(shard_grad_.data(), static_cast<std::int64_t>(shard_grad_.size()), norm, max_norm);
  return norm;
}

void DpOptimizer::step(double lr) {
  opt_.step(lr);
  if (single() || !zero1_) return;
  parallel::zero1_all_gather(shard_master_, flat_, dp_);
  for (std::size_t i = 0; i < params_.size(); ++i)
    std::memcpy(params_[i].value.data<float>(), flat_.data() + offsets_[i],
                static_cast<std::size_t>(params_[i].value.numel()) * sizeof(float));
}

std::vector<float> DpOptimizer::gather_moment(int which) const {
  std::vector<float> shard(static_cast<std::size_t>(shard_count_), 0.0f);
  for (std::size_t k = 0; k < pieces_.size(); ++k) {
    const Tensor& t = which == 0 ? opt_.slots()[k].m : opt_.slots()[k].v;
    std::memcpy(shard.data() + (pieces_[k].begin - shard_begin_), t.data<float>(),
                static_cast<std::size_t>(pieces_[k].count) * sizeof(float));
  }
  std::vector<float> full(static_cast<std::size_t>(shard_count_ * dp_.size()), 0.0f);
  parallel::zero1_all_gather(shard, full, dp_);
  return full;
}

std::map<std::string, Tensor> DpOptimizer::state() const {
  std::map<std::string, Tensor> out;
  if (single() || !zero1_) {
    for (const auto& s : opt_.slots()) {
      out["adapter/" + s.name] = s.master;
      out["optim/m/" + s.name] = s.m;
      out["optim/v/" + s.name] = s.v;
    }
    return out;
  }
  const std::vector<float> m = gather_moment(0), v = gather_moment(1);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    out["adapter/" + p.name] = p.value;
    for (const auto& [prefix, src] : {std::pair{"optim/m/", &m}, std::pair{"optim/v/", &v}}) {
      Tensor t = Tensor::zeros(p.value.shape(), DType::F32, prefix + p.name);
      std::memcpy(t.data<float>(), src->data() + offsets_[i], static_cast<std::size_t>(t.numel()) * sizeof(float));
      out[prefix + p.name] = t;
    }
  }
  return out;
}

void DpOptimizer::restore(const std::function<const Tensor&(const std::string&)>& get) {
  for (auto& p : params_) p.value.copy_from(get("adapter/" + p.name));
  if (single() || !zero1_) {
    for (auto& s : opt_.slots()) {
      s.m.copy_from(get("optim/m/" + s.name));
      s.v.copy_from(get("optim/v/" + s.name));
    }
    return;
  }
  for (std::size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& pc = pieces_[k];
    const auto& p = params_[static_cast<std::size_t>(pc.param)];
    const std::int64_t in_param = pc.begin - offsets_[static_cast<std::size_t>(pc.param)];
    const auto bytes = static_cast<std::size_t>(pc.count) * sizeof(float);
    std::memcpy(shard_master_.data() + (pc.begin - shard_begin_), p.value.data<float>() + in_param, bytes);
    std::memcpy(opt_.slots()[k].m.data<float>(), get("optim/m/" + p.name).data<float>() + in_param, bytes);
    std::memcpy(opt_.slots()[k].v.data<float>(), get("optim/v/" + p.name).data<float>() + in_param, bytes);
  }
}

}  // namespace adapt::train
