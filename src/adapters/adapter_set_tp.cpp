// AdapterSet under tensor parallelism: sharding the LoRA factors like their base weights, summing the
// partial gradients of the whole factors over tp, and gathering a whole set back.
#include "adapters/adapter_set.h"

#include <cmath>
#include <span>

#include "adapters/adapter_math.h"
#include "backend/backend.h"
#include "core/error.h"
#if ADAPT_HAVE_NCCL
#include "comm/nccl_communicator.h"
#endif
#include "parallel/llama_sharding.h"
#include "parallel/tp_ops.h"

namespace adapt::adapters {

using model::WeightKind;

namespace {

// parallel::LlamaTensor lists the tensors in WeightKind's order (both are HF's).
parallel::LlamaTensor base_tensor(WeightKind kind) {
  return static_cast<parallel::LlamaTensor>(static_cast<int>(kind));
}

/// t itself when in host memory, otherwise a host copy.
Tensor on_host(const Tensor& t) { return t.device().host_accessible() ? t : detail::copy_to(t, host_allocator()); }

/// NCCL reduces device buffers; the local and MPI communicators take host memory.
bool takes_device_buffers(const comm::Communicator& c) {
#if ADAPT_HAVE_NCCL
  return dynamic_cast<const comm::NcclCommunicator*>(&c) != nullptr;
#else
  (void)c;
  return false;
#endif
}

parallel::LoraShard shard_of(WeightKind kind, std::int64_t r, const model::LlamaConfig& c,
                             const model::TensorParallel& tp) {
  return parallel::lora_shard(base_tensor(kind), r, model::llama_dims(c), tp.size, tp.rank);
}

}  // namespace

void AdapterSet::shard_for_tp(const model::TensorParallel& tp) {
  ADAPT_REQUIRE(!merged_, UnsupportedError, "shard_for_tp: unmerge the LoRA adapters first");
  ADAPT_REQUIRE(!tp_.active(), UnsupportedError, "shard_for_tp: the adapters are already sharded over {} ranks",
                tp_.size);
  ADAPT_REQUIRE(device_.host_accessible(), UnsupportedError,
                "shard_for_tp: the adapters are on {}; shard them on the host first, then call to_device()",
                device_.str());
  if (!tp.active()) return;
  ADAPT_REQUIRE(tp.comm != nullptr && tp.comm->size() == tp.size && tp.comm->rank() == tp.rank, ConfigError,
                "shard_for_tp: the TensorParallel context (rank {} of {}) does not match its communicator", tp.rank,
                tp.size);
  (void)model::tp_local_dims(model_, tp);  // ConfigError when tp does not divide the heads
  for (const int layer : layers_) {
    for (const WeightKind kind : kLoraTargetKinds) {
      LoraAdapter* ad = lora(layer, kind);
      if (!ad) continue;
      const parallel::LoraShard s = shard_of(kind, ad->rank(), model_, tp);
      ad->a = parallel::shard_take(ad->a, s.a);
      ad->grad_a = parallel::shard_take(ad->grad_a, s.a);
      ad->b = parallel::shard_take(ad->b, s.b);
      ad->grad_b = parallel::shard_take(ad->grad_b, s.b);
    }
  }
  tp_ = tp;
}

void AdapterSet::tp_dropout_columns(const model::LinearSite& site, LoraDropout& d) const {
  const LoraAdapter* ad = lora(site.layer, site.kind);
  const parallel::LoraShard s = shard_of(site.kind, ad->rank(), model_, tp_);
  d.width = s.a.global[1];
  d.col_offset = s.a.range.begin;
}

void AdapterSet::tp_reduce_gradients() {
  for (const int layer : layers_) tp_reduce_layer_gradients(layer);
}

void AdapterSet::tp_reduce_layer_gradients(int layer) {
  if (!tp_.active()) return;
  for (const WeightKind kind : kLoraTargetKinds) {
    LoraAdapter* ad = lora(layer, kind);
    if (!ad) continue;
    // The factor that is whole on every rank: A of a column-parallel site, B of a row-parallel one.
    const bool column = kind != WeightKind::Wo && kind != WeightKind::WDown;
    Tensor& g = column ? ad->grad_a : ad->grad_b;
    if (device_.host_accessible() || takes_device_buffers(*tp_.comm)) {
      tp_.comm->all_reduce(g, comm::ReduceOp::Sum);
    } else {  // a device set over a host communicator: through a host copy
      Tensor h = detail::copy_to(g, host_allocator());
      tp_.comm->all_reduce(h, comm::ReduceOp::Sum);
      backend::copy(g, h);
    }
  }
}

AdapterSet AdapterSet::tp_gathered() const {
  AdapterSet whole(model_, config_);
  whole.training_ = training_;
  whole.step_ = step_;
  whole.micro_batch_ = micro_batch_;
  for (const int layer : layers_) {
    for (const WeightKind kind : kLoraTargetKinds) {
      const LoraAdapter* part = lora(layer, kind);
      if (!part) continue;
      LoraAdapter* to = whole.lora(layer, kind);
      if (!tp_.active()) {
        to->a.copy_from(on_host(part->a)), to->grad_a.copy_from(on_host(part->grad_a));
        to->b.copy_from(on_host(part->b)), to->grad_b.copy_from(on_host(part->grad_b));
        continue;
      }
      const parallel::LoraShard s = shard_of(kind, part->rank(), model_, tp_);
      // A device set's parts go to tp_gather as they are: an NCCL communicator takes device buffers
      // only (an MPI one stages them), and tp_gather puts the whole tensor together on the host.
      auto gather = [&](Tensor& full, const Tensor& local, const parallel::TensorSlice& slice) {
        if (slice.dim == parallel::ShardDim::None) {
          full.copy_from(on_host(local));
        } else {
          parallel::tp_gather(full, local, slice.dim, *tp_.comm);
        }
      };
      gather(to->a, part->a, s.a);
      gather(to->grad_a, part->grad_a, s.a);
      gather(to->b, part->b, s.b);
      gather(to->grad_b, part->grad_b, s.b);
    }
  }
  // Bottleneck modules are whole on every rank.
  const std::vector<AdapterParam> from = parameters(), to = whole.parameters();
  for (std::size_t i = 0; i < from.size(); ++i) {
    if (from[i].value.shape() != to[i].value.shape()) continue;  // gathered above
    Tensor v = to[i].value, g = to[i].grad;
    v.copy_from(on_host(from[i].value));
    g.copy_from(on_host(from[i].grad));
  }
  return whole;
}

std::vector<parallel::TensorSlice> AdapterSet::tp_param_slices() const {
  std::vector<parallel::TensorSlice> out;
  for (const AdapterParam& p : parameters()) out.push_back(parallel::shard_slice(p.value.shape(), {}, 1, 0));
  if (!tp_.active()) return out;
  // LoRA factors come in parameters() order: per layer, per target, A then B.
  std::size_t i = 0;
  const std::vector<AdapterParam> params = parameters();
  for (const int layer : layers_) {
    for (const WeightKind kind : kLoraTargetKinds) {
      const LoraAdapter* ad = lora(layer, kind);
      if (!ad) continue;
      while (params[i].value.raw() != ad->a.raw()) ++i;  // skip the layer's bottleneck tensors
      const parallel::LoraShard s = shard_of(kind, ad->rank(), model_, tp_);
      out[i] = s.a;
      out[i + 1] = s.b;
      i += 2;
    }
  }
  return out;
}

double AdapterSet::tp_grad_norm() const {
  double split = 0, whole = 0;
  for (const AdapterParam& p : parameters()) {
    double sq = 0;
    const Tensor grad = on_host(p.grad);
    const float* g = grad.data<float>();
    for (std::int64_t j = 0; j < p.grad.numel(); ++j) sq += static_cast<double>(g[j]) * g[j];
    (tp_.active() && p.tp_shard_dim >= 0 ? split : whole) += sq;
  }
  // Through a device buffer when the set is on a GPU: its tp communicator may take device buffers only (NCCL).
  if (tp_.active())
    parallel::all_reduce_host_values(*tp_.comm, std::span<double>(&split, 1), comm::ReduceOp::Sum, device_);
  return std::sqrt(split + whole);
}

}  // namespace adapt::adapters
