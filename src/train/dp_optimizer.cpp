#include "train/dp_optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <thread>
#include <utility>

#include "backend/backend.h"
#include "comm/launch_env.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "ops/elementwise.h"
#include "parallel/dp_reducer.h"
#include "parallel/zero_partition.h"

namespace adapt::train {

namespace {
/// A host f32 view with `shape` of the memory at `data` (inside the offloaded state).
Tensor host_view(float* data, const Shape& shape, Device device) {
  return Tensor::wrap(data, shape, DType::F32, device, nullptr);
}

/// The f32 values of `value` (f32 or bf16, on any device) into host memory at `dst`.
void read_weights(float* dst, const Tensor& value, const std::string& name) {
  ADAPT_REQUIRE(value.dtype() == DType::F32 || value.dtype() == DType::BF16, UnsupportedError,
                "optimizer offload (optim.offload = true): adapter parameter '{}' is {}, but the offloaded AdamW "
                "writes weights back as f32 or bf16 only",
                name, dtype_name(value.dtype()));
  Tensor host = Tensor::zeros(value.shape(), value.dtype(), name);
  backend::copy(host, value);
  if (value.dtype() == DType::F32) {
    std::memcpy(dst, host.data<float>(), static_cast<std::size_t>(host.numel()) * sizeof(float));
    return;
  }
  const bf16* b = host.data<bf16>();
  for (std::int64_t i = 0; i < host.numel(); ++i) dst[i] = bf16_to_f32(b[i].bits);
}

}  // namespace

std::optional<optim::OffloadOptions> dp_offload_options(bool offload) {
  if (!offload) return std::nullopt;
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int local = std::max(1, comm::launch_env_from_process().local_size);
  return optim::OffloadOptions{.threads = std::max(1, cores / local)};
}

DpOptimizer::DpOptimizer(std::vector<adapters::AdapterParam> params, const optim::AdamWOptions& options,
                         comm::Communicator& dp, DpOptimizerOptions opts)
    : params_(std::move(params)),
      dp_(dp),
      zero1_(opts.zero1),
      tp_(opts.tp != nullptr && opts.tp->size() > 1 ? opts.tp : nullptr),
      bucket_elems_(opts.bucket_elems),
      device_params_(std::move(opts.device_params)),
      opt_(options),
      overlap_(opts.overlap) {
  comm::Communicator* device_dp = opts.device_dp;
  const std::optional<optim::OffloadOptions>& offload = opts.offload;
  ADAPT_CHECK(bucket_elems_ >= 1, "DpOptimizer: buckets of {} elements", bucket_elems_);
  ADAPT_CHECK(device_dp == nullptr || (device_dp->size() == dp_.size() && device_dp->rank() == dp_.rank()),
              "DpOptimizer: the device dp group (rank {} of {}) is not the dp group (rank {} of {})",
              device_dp ? device_dp->rank() : -1, device_dp ? device_dp->size() : 0, dp_.rank(), dp_.size());
  ADAPT_CHECK(device_params_.empty() || device_params_.size() == params_.size(),
              "DpOptimizer: {} device parameters for {} host mirrors", device_params_.size(), params_.size());
  for (std::size_t i = 0; i < device_params_.size(); ++i)
    ADAPT_CHECK(device_params_[i].value.numel() == params_[i].value.numel() &&
                    device_params_[i].value.dtype() == DType::F32 && device_params_[i].grad.dtype() == DType::F32,
                "DpOptimizer: device parameter '{}' does not match its host mirror", device_params_[i].name);
  for (const auto& p : params_) {
    offsets_.push_back(n_);
    n_ += p.value.numel();
  }
  flat_at_ = offsets_;
  const Device device = params_.empty() ? Device{} : params_.front().value.device();
  // The state on the GPU: one replica, or replicas that average (or, under ZeRO-1, reduce-scatter) their
  // device gradients over device_dp.
  if (!offload && !device_params_.empty() && (single() || device_dp != nullptr)) {
    if (sharded()) {
      device_dp_ = device_dp;
      init_device_zero1(options);
      return;
    }
    std::vector<optim::DeviceAdamWParam> on_gpu;
    for (std::size_t i = 0; i < device_params_.size(); ++i) {
      const auto& d = device_params_[i];
      ADAPT_CHECK(d.name == params_[i].name, "DpOptimizer: device parameter '{}' is not host mirror '{}'", d.name,
                  params_[i].name);
      on_gpu.push_back({.name = d.name, .value = d.value, .grad = d.grad, .decay = d.decay});
    }
    dev_ = std::make_unique<optim::DeviceAdamW>(std::move(on_gpu), options);
    if (!single()) device_dp_ = device_dp;
    log::info0(
        "optimizer state on {}: {} f32 elements x 2 moments beside the adapter{} (optim.offload = true "
        "moves them to host RAM)",
        dev_->device().str(), n_,
        single() ? "" : fmt::format(", gradients averaged over the {} dp replicas on the GPUs", dp_.size()));
    return;
  }
  if (!offload && !device_params_.empty())
    log::info0(
        "optimizer state in host RAM: the {} data-parallel replicas have no communicator over device "
        "buffers, so the gradients are averaged on the host",
        dp_.size());
  if (!device_params_.empty() && overlap_) {
    // Pinned staging, so that the copies run asynchronously (into the pageable mirrors cudaMemcpyAsync
    // would return only once each copy is done, holding the training thread to the GPU's pace).
    copier_ = backend::offload_copier_for(device_params_.front().value.device());
    grad_staging_ =
        Tensor::empty(Shape{std::max<std::int64_t>(n_, 1)}, DType::F32, copier_->host_allocator(), "dp.grad_staging");
    staged_.assign(params_.size(), 0);
  }
  if (sharded()) {
    init_zero1(options, offload, device);
    return;
  }
  if (offload) {
    // With overlap on a GPU the updated buckets go straight to the device parameters (the state in
    // pinned memory, the CUDA copier) and into the host mirrors; otherwise into `params` only.
    const bool direct = overlap_ && !device_params_.empty();
    std::vector<optim::OffloadSegment> segments;
    std::vector<optim::OffloadTarget> targets;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      segments.push_back({.begin = offsets_[i], .count = p.value.numel(), .decay = p.decay});
      if (direct) {
        const auto& d = device_params_[i];
        targets.push_back(
            {.begin = offsets_[i], .count = d.value.numel(), .dst = d.value.raw(), .dtype = d.value.dtype()});
      }
      targets.push_back({.begin = offsets_[i],
                         .count = p.value.numel(),
                         .dst = p.value.raw(),
                         .dtype = p.value.dtype(),
                         .host = direct});
    }
    off_ = std::make_unique<optim::OffloadAdamW>(n_, std::move(segments), options,
                                                 direct ? device_params_.front().value.device() : device, *offload);
    for (std::size_t i = 0; i < params_.size(); ++i)
      read_weights(off_->master() + offsets_[i], params_[i].value, params_[i].name);
    off_->set_targets(std::move(targets));
    log_offload();
  } else {
    for (const auto& p : params_) opt_.add(p.name, p.value, p.grad, p.decay);
  }
  if (!single()) flat_ = Tensor::zeros(Shape{std::max<std::int64_t>(n_, 1)}, DType::F32, "dp.flat");
}

void DpOptimizer::build_zero1_layout() {
  // The groups that stay in one unit: a decoder layer's parameters (a parameter without a layer alone).
  std::vector<std::int64_t> group_numels;
  std::vector<std::size_t> group_first;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (i == 0 || params_[i].layer < 0 || params_[i].layer != params_[i - 1].layer) {
      group_numels.push_back(0);
      group_first.push_back(i);
    }
    group_numels.back() += params_[i].value.numel();
  }
  group_first.push_back(params_.size());
  const int r = dp_.rank();
  layout_ = parallel::zero1_layout(group_numels, bucket_elems_, dp_.size());
  unit_of_.assign(params_.size(), 0);
  for (std::size_t k = 0; k < layout_.units.size(); ++k) {
    const parallel::Zero1Unit& u = layout_.units[k];
    const std::size_t first = group_first[static_cast<std::size_t>(u.first_group)];
    const std::size_t end = group_first[static_cast<std::size_t>(u.first_group + u.n_groups)];
    unit_params_.emplace_back(first, end);
    const parallel::Range mine = u.owned(r);
    for (std::size_t i = first; i < end; ++i) {
      unit_of_[i] = k;
      flat_at_[i] = u.padded_begin + (offsets_[i] - u.elems.begin);
      const std::int64_t lo = std::max(offsets_[i], mine.begin);
      const std::int64_t hi = std::min(offsets_[i] + params_[i].value.numel(), mine.end());
      if (hi <= lo) continue;
      pieces_.push_back(
          {.param = static_cast<int>(i), .begin = lo, .count = hi - lo, .at = u.shard_begin + (lo - mine.begin)});
    }
  }
}

void DpOptimizer::init_zero1(const optim::AdamWOptions& options, const std::optional<optim::OffloadOptions>& offload,
                             Device device) {
  build_zero1_layout();
  const bool pinned = copier_ != nullptr;
  flat_ = Tensor::empty(Shape{std::max<std::int64_t>(layout_.padded, 1)}, DType::F32,
                        pinned ? copier_->host_allocator() : host_allocator(), "dp.flat");
  std::fill_n(flat(), flat_.numel(), 0.0f);
  if (!offload) {
    shard_grad_.assign(static_cast<std::size_t>(layout_.shard), 0.0f);
    shard_master_.assign(static_cast<std::size_t>(layout_.shard), 0.0f);
  }
  std::vector<optim::OffloadSegment> segments;
  for (const Piece& pc : pieces_)
    segments.push_back({.begin = pc.at, .count = pc.count, .decay = params_[static_cast<std::size_t>(pc.param)].decay});
  // The chunks' master weights: the offloaded state's own (the units are all-gathered from there, so
  // its update writes nowhere else), or shard_master_ under the plain AdamW.
  if (offload)
    off_ = std::make_unique<optim::OffloadAdamW>(layout_.shard, std::move(segments), options, device, *offload);
  float* master = off_ ? off_->master() : shard_master_.data();
  for (const Piece& pc : pieces_) {
    const auto& p = params_[static_cast<std::size_t>(pc.param)];
    std::memcpy(master + pc.at, p.value.data<float>() + in_param(pc),
                static_cast<std::size_t>(pc.count) * sizeof(float));
    if (!off_)
      opt_.add(p.name, Tensor::wrap(shard_master_.data() + pc.at, Shape{pc.count}, DType::F32, Device{}, nullptr),
               Tensor::wrap(shard_grad_.data() + pc.at, Shape{pc.count}, DType::F32, Device{}, nullptr), p.decay);
  }
  if (off_) log_offload();
}

namespace {
/// `count` f32 at element `at` of the contiguous f32 tensor `t` (any device), as a 1-D view.
Tensor f32_slice(const Tensor& t, std::int64_t at, std::int64_t count) {
  return Tensor::wrap(static_cast<float*>(t.raw()) + at, Shape{count}, DType::F32, t.device(), nullptr);
}
}  // namespace

void DpOptimizer::init_device_zero1(const optim::AdamWOptions& options) {
  build_zero1_layout();
  const Device gpu = device_params_.front().value.device();
  Allocator& alloc = backend::cuda_allocator(gpu.index);
  auto zeros = [&](std::int64_t n, const char* name) {
    Tensor t = Tensor::empty(Shape{std::max<std::int64_t>(n, 1)}, DType::F32, alloc, name);
    ops::fill(t, 0.0f);
    return t;
  };
  dev_flat_ = zeros(layout_.padded, "dp.flat");
  dev_master_ = zeros(layout_.shard, "dp.chunk_master");
  dev_grad_ = zeros(layout_.shard, "dp.chunk_grad");
  // One DeviceAdamW tensor per piece: a parameter has at most one piece on a rank (it lies in one unit,
  // of which the rank owns one contiguous range), so the pieces keep the parameters' names.
  std::vector<optim::DeviceAdamWParam> pieces;
  for (const Piece& pc : pieces_) {
    const auto& d = device_params_[static_cast<std::size_t>(pc.param)];
    Tensor master = f32_slice(dev_master_, pc.at, pc.count);
    ops::copy(master, f32_slice(d.value, in_param(pc), pc.count));
    pieces.push_back(
        {.name = d.name, .value = master, .grad = f32_slice(dev_grad_, pc.at, pc.count), .decay = d.decay});
  }
  dev_ = std::make_unique<optim::DeviceAdamW>(std::move(pieces), options);
  log::info0(
      "optimizer state on {}: ZeRO-1 over the {} dp replicas on the GPUs, {} of {} f32 elements per replica "
      "x 2 moments and master weights, in {} unit{} of whole layers (optim.offload = true moves them to "
      "host RAM)",
      gpu.str(), dp_.size(), layout_.shard, n_, layout_.units.size(), layout_.units.size() == 1 ? "" : "s");
}

double DpOptimizer::device_zero1_reduce_and_clip(double max_norm) {
  ops::fill(dev_flat_, 0.0f);  // the padding past each unit's real elements
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor dst = f32_slice(dev_flat_, flat_at_[i], device_params_[i].grad.numel());
    ops::copy(dst, device_params_[i].grad.reshape(Shape{device_params_[i].grad.numel()}));
  }
  auto* flat = static_cast<float*>(dev_flat_.raw());
  auto* grad = static_cast<float*>(dev_grad_.raw());
  for (const parallel::Zero1Unit& u : layout_.units)
    device_dp_->reduce_scatter(flat + u.padded_begin, grad + u.shard_begin, u.chunk, comm::CommDType::F32,
                               comm::ReduceOp::Sum);
  // The average as parallel::zero1_reduce_scatter_average takes it: the sum, then times 1/dp in f32.
  ops::scale(dev_grad_, 1.0f / static_cast<float>(dp_.size()));
  return device_norm_and_clip(max_norm);
}

void DpOptimizer::device_zero1_gather() {
  auto* flat = static_cast<float*>(dev_flat_.raw());
  const auto* master = static_cast<const float*>(dev_master_.raw());
  for (const parallel::Zero1Unit& u : layout_.units)
    device_dp_->all_gather(master + u.shard_begin, flat + u.padded_begin, u.chunk, comm::CommDType::F32);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor dst = device_params_[i].value.reshape(Shape{device_params_[i].value.numel()});
    ops::copy(dst, f32_slice(dev_flat_, flat_at_[i], device_params_[i].value.numel()));
  }
}

std::map<std::string, Tensor> DpOptimizer::device_zero1_state() {
  // This replica's pieces (host copies), their moments placed in the shard vector and gathered whole.
  const std::map<std::string, Tensor> mine = dev_->state();
  std::vector<float> m(static_cast<std::size_t>(layout_.shard), 0.0f), v(m.size(), 0.0f);
  for (const Piece& pc : pieces_) {
    const std::string& name = params_[static_cast<std::size_t>(pc.param)].name;
    const auto bytes = static_cast<std::size_t>(pc.count) * sizeof(float);
    std::memcpy(m.data() + pc.at, mine.at("optim/m/" + name).data<float>(), bytes);
    std::memcpy(v.data() + pc.at, mine.at("optim/v/" + name).data<float>(), bytes);
  }
  const std::vector<float> all_m = gather_shards(m), all_v = gather_shards(v);
  std::map<std::string, Tensor> out;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    Tensor value = Tensor::zeros(p.value.shape(), DType::F32, p.name);
    backend::copy(value, device_params_[i].value);
    out["adapter/" + p.name] = value;
    for (const auto& [prefix, src] : {std::pair{"optim/m/", &all_m}, std::pair{"optim/v/", &all_v}}) {
      Tensor t = Tensor::zeros(p.value.shape(), DType::F32, prefix + p.name);
      std::memcpy(t.data<float>(), src->data() + flat_at_[i], static_cast<std::size_t>(t.numel()) * sizeof(float));
      out[prefix + p.name] = t;
    }
  }
  return out;
}

void sum_gradients(const std::vector<adapters::AdapterParam>& params, comm::Communicator& group, float scale) {
  if (group.size() == 1 || params.empty()) return;
  const Device dev = params.front().grad.device();
  std::int64_t n = 0;
  for (const auto& p : params) n += p.grad.numel();
  Tensor flat = Tensor::empty(
      Shape{n}, DType::F32, dev.host_accessible() ? host_allocator() : backend::cuda_allocator(dev.index), "grad_sum");
  auto slice = [&](std::int64_t at, const Tensor& like) {
    return Tensor::wrap(static_cast<float*>(flat.raw()) + at, like.shape(), DType::F32, flat.device(), nullptr);
  };
  std::int64_t at = 0;
  for (const auto& p : params) {
    Tensor dst = slice(at, p.grad);
    ops::copy(dst, p.grad);
    at += p.grad.numel();
  }
  group.all_reduce(flat, comm::ReduceOp::Sum);
  if (scale != 1.0f) ops::scale(flat, scale);
  at = 0;
  for (const auto& p : params) {
    Tensor dst = p.grad;
    ops::copy(dst, slice(at, p.grad));
    at += p.grad.numel();
  }
}

DpOptimizer::~DpOptimizer() = default;  // a running step_async is joined by ~OffloadAdamW

void DpOptimizer::log_offload() const {
  log::info0(
      "optimizer state in host RAM ({} memory): {} f32 elements per rank x 4 (master, moments, gradient), "
      "CPU AdamW on {} thread{} ({}){}{}",
      off_->host_device().str(), off_->size(), off_->threads(), off_->threads() == 1 ? "" : "s",
      optim::cpu_isa_name(off_->isa()), overlapped() ? ", overlapping the next step's forward" : "",
      sharded() ? fmt::format("; ZeRO-1 over {} replicas in {} unit{} of whole layers", dp_.size(),
                              layout_.units.size(), layout_.units.size() == 1 ? "" : "s")
                : "");
}

void DpOptimizer::stream_grads(std::size_t first, std::size_t end) {
  ADAPT_CHECK(first <= end && end <= params_.size(), "stream_grads: parameters [{}, {}) of {}", first, end,
              params_.size());
  if (device_params_.empty()) return;  // the parameters are in host memory: their gradients are there already
  ADAPT_CHECK(copier_ != nullptr, "stream_grads: a device set's gradients stream with optim.overlap only");
  if (first == end) return;
  std::vector<backend::HostCopy> copies;  // the layer's parameters: one event for all of them
  for (std::size_t i = first; i < end; ++i) {
    copies.push_back({.host_dst = grad_staging_.data<float>() + offsets_[i],
                      .src = device_params_[i].grad.raw(),
                      .n_bytes = static_cast<std::size_t>(params_[i].grad.numel()) * sizeof(float)});
    staged_[i] = 1;
  }
  last_grad_ticket_ = copier_->to_host(copies, backend::cuda_compute_stream());
}

void DpOptimizer::wait_streamed_grads() {
  if (!copier_) return;
  copier_->wait_host(last_grad_ticket_);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!staged_[i]) continue;
    std::memcpy(params_[i].grad.data<float>(), grad_staging_.data<float>() + offsets_[i],
                static_cast<std::size_t>(params_[i].grad.numel()) * sizeof(float));
    staged_[i] = 0;
  }
}

void DpOptimizer::step_async(double lr) {
  ADAPT_CHECK(overlapped(), "DpOptimizer::step_async needs optim.offload and optim.overlap");
  finish();
  void* compute = device_params_.empty() ? nullptr : backend::cuda_compute_stream();
  if (sharded()) {
    // The thread updates this rank's chunks; the units are all-gathered, and copied to the device, by
    // wait_params and finish on this thread. Those copies wait for the compute queued so far (the
    // backward), which may still read the old weights.
    if (copier_) copier_->order_after(compute);
    off_->step_async(lr);
    gathered_ = 0;
    return;
  }
  off_->step_async(lr, compute);
}

void DpOptimizer::wait_params(std::size_t first, std::size_t end) {
  if (!off_ || !off_->stepping() || first >= end) return;
  ADAPT_CHECK(end <= params_.size() && overlapped(), "wait_params: parameters [{}, {}) of {}", first, end,
              params_.size());
  const Timer waited;
  if (sharded()) {
    for (const std::size_t last = unit_of_[end - 1]; gathered_ <= last; ++gathered_) {
      const parallel::Zero1Unit& u = layout_.units[gathered_];
      off_->wait_updated(u.shard_begin + u.chunk);
      gather_units(gathered_, gathered_ + 1);
    }
    waited_s_ += waited.seconds();
    return;
  }
  off_->wait_updated(offsets_[end - 1] + params_[end - 1].value.numel());
  waited_s_ += waited.seconds();
  if (!device_params_.empty()) off_->weights_ready(backend::cuda_compute_stream());
}

double DpOptimizer::take_wait_seconds() { return std::exchange(waited_s_, 0.0); }

void DpOptimizer::finish() {
  if (!off_ || !off_->stepping()) return;
  const Timer waited;
  off_->finish();
  if (sharded()) gather_units(gathered_, layout_.units.size());
  waited_s_ += waited.seconds();
  if (!sharded() && !device_params_.empty()) off_->weights_ready(backend::cuda_compute_stream());
}

void DpOptimizer::gather_units(std::size_t first, std::size_t end) {
  const std::span<const float> shard(shard_weights(), static_cast<std::size_t>(layout_.shard));
  float* f = flat();
  for (std::size_t k = first; k < end; ++k) {
    parallel::zero1_all_gather(shard, std::span<float>(f, static_cast<std::size_t>(layout_.padded)), layout_, k, dp_);
    for (std::size_t i = unit_params_[k].first; i < unit_params_[k].second; ++i) {
      const auto bytes = static_cast<std::size_t>(params_[i].value.numel()) * sizeof(float);
      std::memcpy(params_[i].value.data<float>(), f + flat_at_[i], bytes);
      if (copier_) copier_->to_device(device_params_[i].value.raw(), f + flat_at_[i], bytes);
    }
  }
  if (copier_ && first < end) copier_->order_before(backend::cuda_compute_stream());
}

void DpOptimizer::flatten_grads(float* dst) const {
  for (std::size_t i = 0; i < params_.size(); ++i)
    std::memcpy(dst + flat_at_[i], params_[i].grad.data<float>(),
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

double DpOptimizer::whole_norm_and_clip(std::vector<Tensor>& grads, double max_norm) const {
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

double DpOptimizer::shard_norm_and_clip(float* shard, double max_norm) const {
  double ss[2] = {0, 0};  // split over tp, whole (the padding is zero and belongs to no parameter)
  for (const Piece& pc : pieces_) {
    const float* g = shard + pc.at;
    double s = 0;
    for (std::int64_t j = 0; j < pc.count; ++j) s += static_cast<double>(g[j]) * g[j];
    ss[split(static_cast<std::size_t>(pc.param)) ? 0 : 1] += s;
  }
  dp_.all_reduce(ss, 2, comm::CommDType::F64, comm::ReduceOp::Sum);
  const double norm = tp_norm(ss[0], ss[1]);
  if (max_norm > 0) clip_by(shard, layout_.shard, norm, max_norm);
  return norm;
}

double DpOptimizer::device_norm_and_clip(double max_norm) {
  if (tp_ == nullptr && !sharded())
    return max_norm > 0 ? dev_->clip_global_norm(max_norm) : std::sqrt(dev_->sum_squares());
  // DeviceAdamW's tensors: the parameters, or under ZeRO-1 this replica's pieces of them, whose squares
  // are summed over dp.
  std::vector<std::size_t> split_tensors, whole_tensors;
  for (std::size_t k = 0; k < dev_->params().size(); ++k)
    (split(sharded() ? static_cast<std::size_t>(pieces_[k].param) : k) ? split_tensors : whole_tensors).push_back(k);
  double ss[2] = {dev_->sum_squares(split_tensors), dev_->sum_squares(whole_tensors)};
  if (sharded()) dp_.all_reduce(ss, 2, comm::CommDType::F64, comm::ReduceOp::Sum);
  const double norm = tp_norm(ss[0], ss[1]);
  const double coef = max_norm / (norm + 1e-6);
  if (max_norm > 0 && coef < 1.0) dev_->clip(coef);
  return norm;
}

double DpOptimizer::reduce_and_clip(double max_norm) {
  finish();
  if (dev_ && sharded()) return device_zero1_reduce_and_clip(max_norm);
  if (dev_) {
    // The average as parallel::dp_average_gradients takes it: the sum, then times 1/dp in f32.
    if (device_dp_ != nullptr) sum_gradients(device_params_, *device_dp_, 1.0f / static_cast<float>(dp_.size()));
    return device_norm_and_clip(max_norm);
  }
  if (sharded()) {
    if (copier_) copier_->synchronize();  // the last units' copies to the device have left flat_
    float* f = flat();
    for (const parallel::Zero1Unit& u : layout_.units)  // the padding past each unit's real elements
      std::fill(f + u.padded_begin + u.elems.count, f + u.padded_begin + u.chunk * dp_.size(), 0.0f);
    flatten_grads(f);
    // The reduced chunks land where the update reads them: the offloaded state's gradient, or shard_grad_.
    float* shard = off_ ? off_->grad() : shard_grad_.data();
    parallel::zero1_reduce_scatter_average(std::span<const float>(f, static_cast<std::size_t>(layout_.padded)),
                                           std::span<float>(shard, static_cast<std::size_t>(layout_.shard)), layout_,
                                           dp_);
    return shard_norm_and_clip(shard, max_norm);
  }
  if (!single()) {
    flatten_grads(flat());
    std::vector<std::int64_t> numels;
    for (const auto& p : params_) numels.push_back(p.grad.numel());
    parallel::dp_average_gradients(std::span<float>(flat(), static_cast<std::size_t>(n_)),
                                   parallel::gradient_buckets(numels, bucket_elems_), dp_);
    for (std::size_t i = 0; i < params_.size(); ++i)
      std::memcpy(params_[i].grad.data<float>(), flat() + offsets_[i],
                  static_cast<std::size_t>(params_[i].grad.numel()) * sizeof(float));
  }
  std::vector<Tensor> grads;
  if (off_) {
    // The reduced gradients are in host memory: copied into the state, whatever its copier.
    for (std::size_t i = 0; i < params_.size(); ++i) {
      off_->load_grads(offsets_[i], params_[i].grad.numel(), params_[i].grad.data<float>());
      grads.push_back(host_view(off_->grad() + offsets_[i], params_[i].grad.shape(), off_->host_device()));
    }
  } else {
    for (const auto& p : params_) grads.push_back(p.grad);
  }
  return whole_norm_and_clip(grads, max_norm);
}

void DpOptimizer::step(double lr) {
  finish();
  if (dev_) {
    dev_->step(lr);  // queued on the compute stream, before the next forward
    if (sharded()) device_zero1_gather();
    return;
  }
  if (off_) {
    off_->step(lr);
    // Host memory here: the copies are done. On a GPU the compute stream would wait with weights_ready.
    off_->synchronize();
  } else {
    opt_.step(lr);
  }
  if (!sharded()) return;
  if (copier_) copier_->order_after(backend::cuda_compute_stream());
  gather_units(0, layout_.units.size());
}

std::vector<float> DpOptimizer::gather_moment(int which) {
  std::vector<float> shard(static_cast<std::size_t>(layout_.shard), 0.0f);
  if (off_) std::memcpy(shard.data(), which == 0 ? off_->m() : off_->v(), shard.size() * sizeof(float));
  for (std::size_t k = 0; k < pieces_.size() && !off_; ++k) {
    const Tensor& t = which == 0 ? opt_.slots()[k].m : opt_.slots()[k].v;
    std::memcpy(shard.data() + pieces_[k].at, t.data<float>(),
                static_cast<std::size_t>(pieces_[k].count) * sizeof(float));
  }
  return gather_shards(shard);
}

std::vector<float> DpOptimizer::gather_shards(const std::vector<float>& shard) {
  std::vector<float> full(static_cast<std::size_t>(layout_.padded), 0.0f);
  for (std::size_t k = 0; k < layout_.units.size(); ++k) parallel::zero1_all_gather(shard, full, layout_, k, dp_);
  return full;
}

std::map<std::string, Tensor> DpOptimizer::state() {
  finish();
  if (dev_ && sharded()) return device_zero1_state();
  if (dev_) return dev_->state();
  std::map<std::string, Tensor> out;
  if (!sharded() && off_) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      const Device d = off_->host_device();
      optim::OffloadAdamW* state = off_.get();  // views into the state; the caller copies what it keeps
      out["adapter/" + p.name] = host_view(state->master() + offsets_[i], p.value.shape(), d).set_name(p.name);
      out["optim/m/" + p.name] = host_view(state->m() + offsets_[i], p.value.shape(), d).set_name(p.name + ".exp_avg");
      out["optim/v/" + p.name] =
          host_view(state->v() + offsets_[i], p.value.shape(), d).set_name(p.name + ".exp_avg_sq");
    }
    return out;
  }
  if (!sharded()) {
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
      std::memcpy(t.data<float>(), src->data() + flat_at_[i], static_cast<std::size_t>(t.numel()) * sizeof(float));
      out[prefix + p.name] = t;
    }
  }
  return out;
}

void DpOptimizer::restore(const std::function<const Tensor&(const std::string&)>& get) {
  finish();
  if (off_) off_->synchronize();  // the last write-backs read the master weights overwritten below
  for (auto& p : params_) p.value.copy_from(get("adapter/" + p.name));
  if (dev_ && sharded()) {
    // This replica's pieces of the whole tensors (the device parameters themselves come from the host
    // mirrors: AdapterSet::values_from_host).
    std::map<std::string, Tensor> pieces;
    for (const Piece& pc : pieces_) {
      const std::string& name = params_[static_cast<std::size_t>(pc.param)].name;
      for (const char* prefix : {"adapter/", "optim/m/", "optim/v/"})
        pieces[prefix + name] = f32_slice(get(prefix + name), in_param(pc), pc.count);
    }
    dev_->restore([&](const std::string& key) -> const Tensor& { return pieces.at(key); });
    return;
  }
  if (dev_) {
    dev_->restore(get);
    return;
  }
  if (!sharded() && off_) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      const auto bytes = static_cast<std::size_t>(p.value.numel()) * sizeof(float);
      std::memcpy(off_->master() + offsets_[i], get("adapter/" + p.name).data<float>(), bytes);
      std::memcpy(off_->m() + offsets_[i], get("optim/m/" + p.name).data<float>(), bytes);
      std::memcpy(off_->v() + offsets_[i], get("optim/v/" + p.name).data<float>(), bytes);
    }
    return;
  }
  if (!sharded()) {
    for (auto& s : opt_.slots()) {
      s.m.copy_from(get("optim/m/" + s.name));
      s.v.copy_from(get("optim/v/" + s.name));
    }
    return;
  }
  for (std::size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& pc = pieces_[k];
    const auto& p = params_[static_cast<std::size_t>(pc.param)];
    const std::int64_t from = in_param(pc);
    const auto bytes = static_cast<std::size_t>(pc.count) * sizeof(float);
    float* master = off_ ? off_->master() + pc.at : shard_master_.data() + pc.at;
    float* m = off_ ? off_->m() + pc.at : opt_.slots()[k].m.data<float>();
    float* v = off_ ? off_->v() + pc.at : opt_.slots()[k].v.data<float>();
    std::memcpy(master, p.value.data<float>() + from, bytes);
    std::memcpy(m, get("optim/m/" + p.name).data<float>() + from, bytes);
    std::memcpy(v, get("optim/v/" + p.name).data<float>() + from, bytes);
  }
}

}  // namespace adapt::train
