#include "plan/plan_report.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "adapters/adapter_config_check.h"
#include "core/error.h"
#include "core/strings.h"
#include "model/kv_cache.h"
#include "model/tensor_parallel.h"
#include "parallel/llama_sharding.h"

namespace adapt::plan {

namespace {

using json = nlohmann::json;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

int ranks_per_node(const PlanRequest& r) {
  if (r.backend == Backend::Cpu) return r.gpus;
  return std::min(r.gpus, std::max(r.cluster.gpu.gpus_per_node, 1));
}

/// Host bytes per node: on the CPU backend every rank's whole memory, on GPUs what they offload.
/// (the checkpoint image once: rank 0's).
std::uint64_t host_per_node(const PlanRequest& r, const TrainMemory& m) {
  const std::uint64_t per_rank = (r.backend == Backend::Cpu ? m.device_total() : m.host_total()) - m.checkpoint;
  return per_rank * static_cast<std::uint64_t>(ranks_per_node(r)) + m.checkpoint;
}

// `total` bytes per rank within the GPU's usable memory (CPU plans: the processes of a node within --host-mem).
bool device_fits(const PlanResult& p, std::uint64_t total) {
  if (p.req.backend == Backend::Cpu) {
    return !p.req.host_mem_gb || static_cast<double>(total) * ranks_per_node(p.req) <= *p.req.host_mem_gb * kGiB;
  }
  return total <= p.usable_bytes();
}

// A GPU plan's host memory per node within --host-mem (when given); CPU plans count it in device_fits.
bool host_fits(const PlanRequest& r, const TrainMemory& m) {
  return r.backend != Backend::Gpu || !r.host_mem_gb ||
         static_cast<double>(host_per_node(r, m)) <= *r.host_mem_gb * kGiB;
}

// A training job's device and host memory within the plan's limits.
bool train_fits(const PlanResult& p, const TrainMemory& m) {
  return device_fits(p, m.device_total()) && host_fits(p.req, m);
}

// The job the "does anything fit" questions ask about: micro-batch 1 with recomputation, at the
// grad_accum the recommendation asks for on `lay` (at least pp).
TrainJob least_train_job(const TrainJob& job, const Layout& lay) {
  TrainJob j = job;
  j.micro_batch = 1;
  j.recompute = true;
  j.grad_accum = std::max<std::int64_t>(job.grad_accum, lay.pp);
  return j;
}

// The largest n in [lo, hi] with fits(n), given fits(lo) and that fits holds up to some n and no further.
std::int64_t largest_that_fits(std::int64_t lo, std::int64_t hi, const std::function<bool(std::int64_t)>& fits) {
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The largest runtime.weights_device_layers with which some layout of the request holds the job
// (training: micro-batch 1 with recomputation; generation: --gen-batch sequences), or -1 when even
// none on the GPU does not. More layers on the GPU never need less memory: a binary search.
std::int64_t stream_layers_that_fit(const PlanResult& p, bool train) {
  const PlanRequest& req = p.req;
  const std::vector<Layout> layouts =
      req.layout ? std::vector<Layout>{*req.layout} : valid_layouts(req.model, req.gpus);
  auto fits = [&](std::int64_t n) {
    for (const Layout& lay : layouts) {
      if (train) {
        TrainJob j = least_train_job(req.train, lay);
        j.weights_device_layers = n;
        if (train_fits(p, train_memory(req.model, req.adapter, lay, j, req.backend))) return true;
      } else {
        GenJob g = req.gen;
        g.weights_device_layers = n;
        if (device_fits(p, gen_memory(req.model, req.adapter, lay, g, req.backend).device_total())) return true;
      }
    }
    return false;
  };
  return fits(0) ? largest_that_fits(0, req.model.n_layers, fits) : -1;
}

// The longest training sequence (a multiple of PlanResult::kSeqStep up to the model's context) that `lay`
// holds at micro-batch 1 with recomputation; 0 when not even kSeqStep tokens fit. Memory grows with the
// sequence: a binary search.
std::int64_t longest_seq_that_fits(const PlanResult& p, const Layout& lay) {
  const PlanRequest& req = p.req;
  TrainJob j = least_train_job(req.train, lay);
  auto fits = [&](std::int64_t steps) {
    j.seq = steps * PlanResult::kSeqStep;
    return train_fits(p, train_memory(req.model, req.adapter, lay, j, req.backend));
  };
  if (!fits(1)) return 0;
  const std::int64_t most = std::max<std::int64_t>(req.model.max_position_embeddings / PlanResult::kSeqStep, 1);
  return largest_that_fits(1, most, fits) * PlanResult::kSeqStep;
}

std::string gib(std::uint64_t b) { return fmt::format("{:.2f}", static_cast<double>(b) / kGiB); }
std::string gb_or_dash(double bytes) { return bytes > 0 ? fmt::format("{:.3g}", bytes / 1e9) : "0"; }

std::string time_str(double s) {
  if (!std::isfinite(s)) return "no link";
  if (s >= 1) return fmt::format("{:.2f} s", s);
  return fmt::format("{:.1f} ms", s * 1e3);
}

}  // namespace

std::uint64_t PlanResult::usable_bytes() const {
  return static_cast<std::uint64_t>(req.cluster.gpu.mem_gb * req.usable * kGiB);
}

PlanResult make_plan(const PlanRequest& req) {
  PlanResult p;
  p.req = req;
  adapters::adapter_config_validate(req.adapter, req.model);
  ADAPT_REQUIRE(req.train.seq > 0, ConfigError, "--seq {}: must be positive (tokens per training sequence)",
                req.train.seq);
  ADAPT_REQUIRE(req.train.micro_batch > 0, ConfigError, "--micro-batch {}: must be positive (sequences per replica)",
                req.train.micro_batch);
  std::vector<Layout> layouts = valid_layouts(req.model, req.gpus);
  if (req.layout) {
    ADAPT_REQUIRE(std::find(layouts.begin(), layouts.end(), *req.layout) != layouts.end(), ConfigError,
                  "--tp {} --pp {}: not a layout of {} GPUs for this model (tp must divide the {} heads and {} KV "
                  "heads and the GPUs, pp the remaining GPUs, pp <= {} layers); layouts that work: {}",
                  req.layout->tp, req.layout->pp, req.gpus, req.model.n_heads, req.model.n_kv_heads, req.model.n_layers,
                  [&] {
                    std::vector<std::string> s;
                    for (const Layout& l : layouts) s.push_back(fmt::format("--tp {} --pp {}", l.tp, l.pp));
                    return join(s, ", ");
                  }());
    layouts = {*req.layout};
  }
  double best_tps = -1, best_gen = -1;
  for (const Layout& lay : layouts) {
    LayoutPlan lp;
    lp.layout = lay;
    lp.mem = train_memory(req.model, req.adapter, lay, req.train, req.backend);
    const std::uint64_t other = lp.mem.device_total() - lp.mem.activations.total() + lp.mem.activations_other.total();
    lp.fits = device_fits(p, lp.mem.device_total());
    lp.fits_other = device_fits(p, other);
    lp.host_fits = host_fits(req, lp.mem);
    lp.comm = train_comm_bytes(req.model, req.adapter, lay, req.train, req.backend);
    if (req.backend == Backend::Gpu) lp.time = train_step_time(req.model, req.adapter, lay, req.train, req.cluster);
    // The fastest micro-batch and recompute setting that fit, at the grad_accum the recommendation asks
    // for (at least pp, which fills the pipeline and keeps that many micro-batches in flight).
    double best = -1;
    for (std::int64_t mb = 1; mb <= 64; mb *= 2) {
      for (const bool rc : {false, true}) {
        TrainJob j = req.train;
        j.micro_batch = mb;
        j.recompute = rc;
        j.grad_accum = std::max<std::int64_t>(req.train.grad_accum, lay.pp);
        if (!train_fits(p, train_memory(req.model, req.adapter, lay, j, req.backend))) continue;
        const double tps =
            req.backend == Backend::Gpu
                ? train_step_time(req.model, req.adapter, lay, j, req.cluster).tokens_per_s
                : static_cast<double>(mb) / (rc ? 4.0 / 3.0 : 1.0);  // CPU: no clock, prefer less recompute
        if (tps > best) {
          best = tps;
          lp.best_micro_batch = mb;
          lp.best_recompute = rc;
          lp.best_grad_accum = j.grad_accum;
          if (req.backend == Backend::Gpu) lp.best_time = train_step_time(req.model, req.adapter, lay, j, req.cluster);
        }
      }
    }
    // Generation.
    lp.gen = gen_memory(req.model, req.adapter, lay, req.gen, req.backend);
    lp.gen_fits = device_fits(p, lp.gen.device_total());
    const std::uint64_t room =
        req.backend == Backend::Gpu
            ? p.usable_bytes()
            : static_cast<std::uint64_t>(req.host_mem_gb ? *req.host_mem_gb * kGiB / ranks_per_node(req) : 0);
    const std::uint64_t fixed = lp.gen.beside_kv();
    lp.gen_max_batch = room > fixed && lp.gen.kv_per_sequence > 0
                           ? static_cast<std::int64_t>((room - fixed) / lp.gen.kv_per_sequence)
                           : 0;
    if (req.backend == Backend::Gpu) lp.decode = decode_step_time(req.model, lay, req.gen, req.cluster);
    const int index = static_cast<int>(p.layouts.size());
    const bool host_ok = lp.host_fits;
    if (lp.best_micro_batch > 0 && host_ok && best > best_tps) {
      best_tps = best;
      p.train_pick = index;
    }
    if (lp.gen_fits && req.backend == Backend::Gpu) best_gen = std::max(best_gen, lp.decode.tokens_per_s);
    p.layouts.push_back(lp);
  }
  // Generation: of the layouts within 5% of the fastest decoding (a margin below the model's precision),
  // the one that holds the most sequences at once.
  for (std::size_t i = 0; i < p.layouts.size(); ++i) {
    const LayoutPlan& lp = p.layouts[i];
    if (!lp.gen_fits || req.backend != Backend::Gpu || lp.decode.tokens_per_s < 0.95 * best_gen) continue;
    const auto held = [](const LayoutPlan& l) { return l.gen_max_batch * l.layout.dp; };
    const LayoutPlan* cur = p.gen_pick >= 0 ? &p.layouts[static_cast<std::size_t>(p.gen_pick)] : nullptr;
    if (!cur || held(lp) > held(*cur) || (held(lp) == held(*cur) && lp.decode.tokens_per_s > cur->decode.tokens_per_s))
      p.gen_pick = static_cast<int>(i);
  }
  if (req.backend == Backend::Gpu && !req.layout && (p.train_pick < 0 || p.gen_pick < 0)) {
    const int per_node = std::max(req.cluster.gpu.gpus_per_node, 1);
    std::vector<int> counts;
    for (int g = req.gpus + 1; g <= per_node; ++g) counts.push_back(g);
    for (int g = (req.gpus / per_node + 1) * per_node; g <= 1024; g += per_node) counts.push_back(g);
    for (const int g : counts) {
      for (const Layout& lay : valid_layouts(req.model, g)) {
        const TrainJob least = least_train_job(req.train, lay);
        if (p.train_pick < 0 && p.min_gpus_train == 0 &&
            train_memory(req.model, req.adapter, lay, least, req.backend).device_total() <= p.usable_bytes())
          p.min_gpus_train = g;
        if (p.gen_pick < 0 && p.min_gpus_gen == 0 &&
            gen_memory(req.model, req.adapter, lay, req.gen, req.backend).device_total() <= p.usable_bytes())
          p.min_gpus_gen = g;
      }
      if ((p.train_pick >= 0 || p.min_gpus_train > 0) && (p.gen_pick >= 0 || p.min_gpus_gen > 0)) break;
    }
  }
  if (req.backend == Backend::Gpu) {
    for (std::size_t i = 0; i < p.layouts.size(); ++i) {
      const std::int64_t seq = longest_seq_that_fits(p, p.layouts[i].layout);
      if (seq > p.longest_train_seq) {
        p.longest_train_seq = seq;
        p.longest_train_seq_layout = static_cast<int>(i);
      }
    }
  }
  if (req.backend == Backend::Gpu && req.train.weights_device_layers < 0) {
    if (p.train_pick < 0) p.stream_train_layers = stream_layers_that_fit(p, true);
    if (p.gen_pick < 0) p.stream_gen_layers = stream_layers_that_fit(p, false);
  }
  return p;
}

namespace {

/// The table's "fastest fit": the setting, and on GPUs its planned step.
std::string best_setting(const PlanRequest& r, const LayoutPlan& lp) {
  std::string s = fmt::format("micro-batch {}{}", lp.best_micro_batch, lp.best_recompute ? " + recompute" : "");
  if (lp.best_grad_accum != r.train.grad_accum) s += fmt::format(", grad_accum {}", lp.best_grad_accum);
  if (r.backend == Backend::Gpu)
    s += fmt::format(": {}, {:.0f} tokens/s", time_str(lp.best_time.step_s), lp.best_time.tokens_per_s);
  return s;
}

}  // namespace

std::string plan_text(const PlanResult& p) {
  const PlanRequest& r = p.req;
  const bool gpu = r.backend == Backend::Gpu;
  std::string s;
  const model::ParamCounts pc = model::llama_param_counts(r.model);
  s += fmt::format("model     {}: {} layers, hidden {}, FFN {}, {}/{} heads, vocab {}; {} parameters\n", r.model_name,
                   r.model.n_layers, r.model.hidden_size, r.model.intermediate_size, r.model.n_heads,
                   r.model.n_kv_heads, r.model.vocab_size, format_count(pc.total));
  s += fmt::format("adapter   {}; {} parameters\n", adapter_spec_str(r.adapter, r.model),
                   format_count(adapter_params(r.model, r.adapter)));
  const std::string recompute =
      !r.train.recompute ? "off"
      : !r.train.shard_saved_inputs && !r.train.bf16_saved_inputs
          ? "on (layer inputs kept whole)"
          : fmt::format("on ({} where that saves memory)", !r.train.bf16_saved_inputs ? "with tp, layer inputs sharded"
                                                           : r.train.shard_saved_inputs
                                                               ? "with tp, layer inputs sharded and kept in bf16"
                                                               : "layer inputs kept in bf16");
  s += fmt::format(
      "training  {} tokens × {} sequence(s) per replica per micro-step × {} micro-step(s); recompute {}; "
      "ZeRO-1 {}{}\n",
      r.train.seq, r.train.micro_batch, r.train.grad_accum, recompute, r.train.zero1 ? "on" : "off",
      r.train.offload ? "; optimizer offloaded to host RAM" : "");
  s += fmt::format("generate  {} sequence(s) of {} tokens in flight per replica\n", r.gen.batch, r.gen.context);
  if (gpu) {
    const GpuSpec& g = r.cluster.gpu;
    s += fmt::format(
        "hardware  {} × {}: {:.0f} GiB ({:.0f}% usable), {:.4g} TFLOP/s bf16 at {:.0f}% MFU, {:.3g} TB/s HBM read "
        "at {:.0f}%, {} {:.0f} GB/s; "
        "{} GPUs per node, network {} ({} × {:.0f} Gb/s per node = {:.1f} GB/s per GPU); {:.0f} µs per "
        "collective beyond its bytes\n",
        r.gpus, g.name, g.mem_gb, r.usable * 100, g.bf16_tflops, r.cluster.mfu * 100, g.hbm_tbps,
        r.cluster.hbm_efficiency * 100, g.intra_name, g.intra_gbps, g.gpus_per_node, r.cluster.network.name,
        r.cluster.nics_per_node, r.cluster.network.gbit_per_nic, r.cluster.inter_gbps_per_gpu(),
        r.cluster.collective_latency_s * 1e6);
    s += fmt::format(
        "precision weights bf16, activations {} (norm statistics and logits f32); adapter, its gradients "
        "and AdamW moments f32; KV cache {}\n",
        Precision::of(r.backend, r.train.act_bytes).activation == 2 ? "bf16" : "f32",
        Precision::of(r.backend, r.train.act_bytes).kv == 2 ? "bf16" : "f32");
  } else {
    s += fmt::format(
        "hardware  {} CPU process(es) (adapt_train's CPU backend: f32 weights, activations and KV cache){}\n", r.gpus,
        r.host_mem_gb ? fmt::format("; {:.0f} GiB host memory", *r.host_mem_gb) : "");
  }
  s += "\n";

  // Layout table.
  s += fmt::format("training, per {} (GiB) and per step{}:\n", gpu ? "GPU" : "process",
                   r.layout ? "" : ", every layout");
  s += fmt::format("  {:<20} {:>10} {:>10} {:>14} {:>14} {:>10} {:>12}  {}\n", "layout",
                   r.train.recompute ? "mem(rc)" : "mem", r.train.recompute ? "mem" : "mem(rc)", "comm GB counted",
                   "GB busiest rank", gpu ? "step" : "", gpu ? "tokens/s" : "", "fastest fit");
  for (std::size_t i = 0; i < p.layouts.size(); ++i) {
    const LayoutPlan& lp = p.layouts[i];
    const std::uint64_t other = lp.mem.device_total() - lp.mem.activations.total() + lp.mem.activations_other.total();
    const double busiest = lp.comm.tp_wire_rank + lp.comm.pp_wire_rank + lp.comm.dp_wire_rank;
    s += fmt::format("  {:<20} {:>9}{} {:>9}{} {:>14} {:>14} {:>10} {:>12}  {}{}\n", lp.layout.str(),
                     gib(lp.mem.device_total()), lp.fits ? ' ' : '!', gib(other), lp.fits_other ? ' ' : '!',
                     gb_or_dash(static_cast<double>(lp.comm.counted())), gb_or_dash(busiest),
                     gpu ? time_str(lp.time.step_s) : "", gpu ? fmt::format("{:.0f}", lp.time.tokens_per_s) : "",
                     lp.best_micro_batch > 0 ? best_setting(r, lp) : "nothing fits",
                     static_cast<int>(i) == p.train_pick ? "   <- recommended" : "");
  }
  s += fmt::format(
      "  ({}mem, comm, step and tokens/s at --micro-batch; fastest fit: the setting with the most tokens/s that "
      "fits{}; comm: bytes the step's collectives count, all ranks, as metrics.jsonl's comm_bytes; busiest rank: "
      "bytes it sends over ring collectives)\n\n",
      gpu ? fmt::format("! = does not fit in {:.1f} GiB; ", static_cast<double>(p.usable_bytes()) / kGiB)
          : (r.host_mem_gb ? "! = the node's processes do not fit in --host-mem; " : ""),
      gpu ? ", its step and tokens/s" : "");

  const int show = p.train_pick >= 0 ? p.train_pick : 0;
  if (!p.layouts.empty()) {
    const LayoutPlan& lp = p.layouts[static_cast<std::size_t>(show)];
    const TrainMemory& m = lp.mem;
    s += fmt::format("memory of the busiest rank of {} (tp rank {}, stage {}), micro-batch {}:\n", lp.layout.str(),
                     m.tp_rank, m.pp_rank, r.train.micro_batch);
    if (lp.layout.pp > 1) {
      const parallel::LlamaDims dims = model::llama_dims(r.model);
      const std::vector<std::int64_t> counts = parallel::stage_layer_counts(dims, lp.layout.pp, parallel::kTrainSplit);
      s += fmt::format(
          "  stages hold {} decoder layers in training (the last also runs the head: {:.1f} layers' "
          "work; generation splits them evenly)\n",
          fmt::join(counts, " | "), parallel::head_layer_share(dims));
    }
    auto line = [&](const char* what, std::uint64_t b, const std::string& note) {
      s += fmt::format("  {:<34} {:>12}  {}\n", what, format_bytes(b), note);
    };
    line("base weights (frozen)", m.weights,
         fmt::format("{} parameters", format_count(m.base_params)) +
             (m.streamed.layers > 0
                  ? fmt::format("; {} layers' weights stream from host RAM ({}), 2 of them staged here",
                                m.streamed.layers, format_bytes(m.streamed.host))
                  : std::string()));
    line("adapter weights", m.adapter, fmt::format("{} parameters, f32", format_count(m.adapter_params)));
    line("adapter gradients", m.gradients, "f32");
    const bool host_state = gpu && r.train.offload;  // without offload DeviceAdamW keeps it on the GPU, at any dp
    line("optimizer state", m.optimizer,
         host_state
             ? "in host RAM (see host)"
             : (gpu ? "AdamW m + v beside the adapter"
                    : (r.train.offload ? "offloaded AdamW: f32 master + m + v + gradient copy" : "AdamW m + v")) +
                   std::string(lp.layout.dp > 1 && r.train.zero1 ? ", this rank's ZeRO-1 shard" : ""));
    line("gradient reduction buffers", m.dp_buffers,
         lp.layout.dp > 1 || lp.layout.pp > 1 ? "flat vectors of the dp / pp reductions" : "");
    if (lp.layout.pp > 1) line("pipeline hidden states", m.pipeline_buffers, "exchanged with the neighbouring stages");
    auto acts = [&](const ActivationBytes& a, bool rc) {
      line(rc ? "activations, with recompute" : "activations, no recompute", a.total(),
           fmt::format("saved {}{} + scratch {} + adapter {}{}", format_bytes(a.saved),
                       m.micro_in_flight > 1 ? fmt::format(" ({} micro-batches in flight)", m.micro_in_flight) : "",
                       format_bytes(a.scratch), format_bytes(a.adapter), rc == r.train.recompute ? "  <- in use" : ""));
    };
    acts(r.train.recompute ? m.activations_other : m.activations, false);
    acts(r.train.recompute ? m.activations : m.activations_other, true);
    if (!gpu) line("checkpoint file image", m.checkpoint, "rank 0, while a checkpoint is written");
    if (gpu) line("library workspaces", m.libraries, "cuBLASLt's GEMM workspace");
    if (m.operand_copies > 0)
      line("bf16 operand copies", m.operand_copies, "casts of GEMM and attention inputs, the most alive at once");
    if (m.attention_buffers > 0)
      line("attention buffers", m.attention_buffers, "the CPU attention's, kept per thread between steps");
    line(gpu ? "total on the GPU" : "total per process", m.device_total(), lp.fits ? "" : "does NOT fit");
    if (gpu) {
      line("host RAM per rank", m.host_total(),
           fmt::format("adapter copies {}; ", format_bytes(m.host_mirrors)) +
               (m.host_optimizer > 0 ? fmt::format("{} {}; ", r.train.offload ? "f32 master + m + v" : "AdamW m + v",
                                                   format_bytes(m.host_optimizer))
                                     : std::string()) +
               (m.host_staging > 0
                    ? fmt::format("gradient copies and reduction vectors {}; ", format_bytes(m.host_staging))
                    : std::string()) +
               (m.streamed.host > 0 ? fmt::format("streamed weights {}; ", format_bytes(m.streamed.host))
                                    : std::string()) +
               fmt::format("checkpoint file image {} (rank 0)", format_bytes(m.checkpoint)));
    }
    line("host RAM per node", host_per_node(r, m),
         fmt::format("{} ranks{}", ranks_per_node(r),
                     r.host_mem_gb
                         ? fmt::format(" of {:.0f} GiB: {}", *r.host_mem_gb, lp.host_fits ? "fits" : "does NOT fit")
                         : ""));
    if (!gpu) s += "  (plus the process itself, not counted: libraries, thread stacks, tokenizer, token cache)\n";
    const CommBytes& c = lp.comm;
    s += fmt::format(
        "  communication per step: tp {} B, pp {} B, dp {} B counted (all ranks); busiest rank sends "
        "tp {} B, pp {} B, dp {} B\n",
        format_count(c.tp_counted), format_count(c.pp_counted), format_count(c.dp_counted),
        format_count(static_cast<std::int64_t>(c.tp_wire_rank)),
        format_count(static_cast<std::int64_t>(c.pp_wire_rank)),
        format_count(static_cast<std::int64_t>(c.dp_wire_rank)));
    if (gpu) {
      const StepTime& t = lp.time;
      s += fmt::format(
          "  step time: {:.3g} TFLOP on the busiest rank → compute {} (HBM {}) × bubble {:.2f}; tp {} "
          "({}), pp {} ({}), dp {} ({}); step {}, {:.0f} tokens/s\n",
          t.flops / 1e12, time_str(t.compute_s), time_str(t.hbm_s), t.bubble, time_str(t.tp_s),
          t.tp_inside_node ? "in a node" : "across nodes", time_str(t.pp_s),
          t.pp_inside_node ? "in a node" : "across nodes", time_str(t.dp_s),
          t.dp_inside_node ? "in a node" : "across nodes", time_str(t.step_s), t.tokens_per_s);
      if (t.stream_s > 0)
        s += fmt::format(
            "  streamed weights: {} of copies a step at {:.0f} GB/s from host RAM (a forward and a "
            "backward per micro-batch), overlapping compute: the step takes the longer of the two\n",
            time_str(t.stream_s), r.cluster.gpu.host_gbps);
    }
    s += "\n";
  }

  s += fmt::format("generation, {} sequence(s) × {} tokens per replica{}:\n", r.gen.batch, r.gen.context,
                   gpu ? "" : " (CPU: f32 KV cache)");
  s += fmt::format("  {:<20} {:>10} {:>12} {:>12} {:>10} {:>14} {:>12}\n", "layout", "weights", "KV cache",
                   "KV/sequence", "total", "max sequences", gpu ? "tokens/s" : "");
  for (std::size_t i = 0; i < p.layouts.size(); ++i) {
    const LayoutPlan& lp = p.layouts[i];
    s += fmt::format("  {:<20} {:>10} {:>12} {:>12} {:>9}{} {:>14} {:>12}{}\n", lp.layout.str(), gib(lp.gen.weights),
                     gib(lp.gen.kv_cache), format_bytes(lp.gen.kv_per_sequence), gib(lp.gen.device_total()),
                     lp.gen_fits ? ' ' : '!', lp.gen_max_batch > 0 ? std::to_string(lp.gen_max_batch) : "-",
                     gpu ? fmt::format("{:.0f}", lp.decode.tokens_per_s) : "",
                     static_cast<int>(i) == p.gen_pick ? "   <- recommended" : "");
  }
  s += "  (GiB per rank; max sequences: of this length beside the weights, per replica; tokens/s: decoding, memory "
       "bound)\n";
  if (!p.layouts.empty() && r.gen.context > 0) {
    // A conversation kept with output.conversation_kv holds the whole cache of its tokens (each rank of a
    // replica its part, the same sum for every layout).
    const LayoutPlan& lp = p.layouts.front();
    const std::uint64_t whole = lp.gen.kv_per_sequence * static_cast<std::uint64_t>(lp.layout.tp * lp.layout.pp);
    s += fmt::format(
        "  a conversation of {} tokens kept between jobs (adapt_gen's output.conversation_kv): {} on "
        "disk, {} a token, split over the tp x pp ranks of a replica\n",
        r.gen.context, format_bytes(whole), format_bytes(whole / static_cast<std::uint64_t>(r.gen.context)));
  }
  if (gpu && !p.layouts.empty() && p.layouts.front().gen.streamed.layers > 0) {
    const LayoutPlan& lp = p.layouts.front();
    s += fmt::format(
        "  weights streamed from host RAM: {} layers per stage ({} per rank of {}); a decode step copies "
        "them ({} at {:.0f} GB/s, stage after stage): worth it for many sequences at once, not for one\n",
        lp.gen.streamed.layers, format_bytes(lp.gen.streamed.host), lp.layout.str(), time_str(lp.decode.stream_s),
        r.cluster.gpu.host_gbps);
  }
  if (gpu && p.gen_pick < 0 && !p.layouts.empty()) {
    // Where the whole KV cache does not fit: adapt_gen's spill (runtime.kv_device_layers) keeps the layers
    // that fit on the GPU, beside two staging layers, and the rest in host RAM. The layout with the
    // least device memory per GPU shows it.
    const LayoutPlan& lp = *std::min_element(p.layouts.begin(), p.layouts.end(), [](const auto& a, const auto& b) {
      return a.gen.device_total() < b.gen.device_total();
    });
    const std::int64_t layers =
        parallel::stage_layers(model::llama_dims(r.model), lp.layout.pp, 0, parallel::kGenSplit).count;
    const std::uint64_t per_layer = lp.gen.kv_cache / static_cast<std::uint64_t>(layers);
    const std::uint64_t fixed = lp.gen.beside_kv();
    const std::uint64_t room = p.usable_bytes() > fixed ? p.usable_bytes() - fixed : 0;
    const std::int64_t on_gpu = per_layer > 0 ? model::KvCache::device_layers_within(room, per_layer, layers) : 0;
    if (on_gpu > 0) {
      s += fmt::format(
          "  the KV cache does not fit whole: with {} it can spill to host RAM (adapt_gen's "
          "runtime.kv_device_layers = {}: {} of {} layers per GPU on the GPU, {} GiB per GPU in host "
          "RAM, {} GiB per node; each decode step then copies the spilled layers' cache to the GPU)\n",
          lp.layout.str(), on_gpu, on_gpu, layers, gib(per_layer * static_cast<std::uint64_t>(layers - on_gpu)),
          gib(per_layer * static_cast<std::uint64_t>(layers - on_gpu) * static_cast<std::uint64_t>(ranks_per_node(r))));
    }
  }
  s += "\n";

  if (p.train_pick >= 0) {
    const LayoutPlan& lp = p.layouts[static_cast<std::size_t>(p.train_pick)];
    s += fmt::format(
        "recommended for training: {} with {} sequence(s) per replica per micro-step{}{}: in adapt_train's "
        "job, [parallel] tp = {}, pp = {} on {} ranks, [train] micro_batch = {}, recompute = {}{}{}\n",
        lp.layout.str(), lp.best_micro_batch, lp.best_recompute ? " and recomputation" : "",
        gpu ? fmt::format(" (planned {} a step, {:.0f} tokens/s)", time_str(lp.best_time.step_s),
                          lp.best_time.tokens_per_s)
            : std::string(),
        lp.layout.tp, lp.layout.pp, lp.layout.world(), lp.best_micro_batch * lp.layout.dp,
        lp.best_recompute ? "true" : "false",
        r.train.weights_device_layers >= 0
            ? fmt::format(", [runtime] weights_device_layers = {}", r.train.weights_device_layers)
            : std::string(),
        lp.layout.pp <= 1 ? std::string()
        : r.train.grad_accum >= lp.layout.pp
            ? fmt::format(", grad_accum = {}", r.train.grad_accum)
            : fmt::format(", grad_accum = {} (at least pp: it fills the pipeline; --grad-accum {} shows its memory)",
                          lp.best_grad_accum, lp.best_grad_accum));
  } else {
    s += fmt::format(
        "recommended for training: nothing fits on {} GPU(s) at micro-batch 1, even with recomputation{}; {}\n", r.gpus,
        r.train.offload ? " and offload" : "",
        p.min_gpus_train > 0
            ? fmt::format("{} × {} would hold it (adapt_plan --gpus {} shows the layouts)", p.min_gpus_train,
                          r.cluster.gpu.name, p.min_gpus_train)
            : std::string("use larger GPUs or a shorter --seq") + (r.train.offload ? "" : ", or --offload"));
    if (p.stream_train_layers >= 0)
      s += fmt::format(
          "  or stream weights from host RAM: with runtime.weights_device_layers = {} (the other layers' "
          "weights in pinned host RAM, copied to the GPU as the passes reach them) a layout fits; "
          "adapt_plan --weights-device-layers {} shows it\n",
          p.stream_train_layers, p.stream_train_layers);
  }
  if (gpu) {
    if (p.longest_train_seq_layout >= 0) {
      s += fmt::format(
          "  longest training sequence that fits: {} tokens ({}, micro-batch 1 with recomputation{}; "
          "multiples of {} up to the model's {})\n",
          format_count(p.longest_train_seq),
          p.layouts[static_cast<std::size_t>(p.longest_train_seq_layout)].layout.str(),
          r.train.offload ? " and offload" : "", format_count(PlanResult::kSeqStep),
          format_count(r.model.max_position_embeddings));
    } else {
      s += fmt::format(
          "  longest training sequence that fits: none of {} tokens or more, at micro-batch 1 with "
          "recomputation{}\n",
          format_count(PlanResult::kSeqStep), r.train.offload ? " and offload" : "");
    }
  }
  if (p.gen_pick >= 0) {
    const LayoutPlan& lp = p.layouts[static_cast<std::size_t>(p.gen_pick)];
    s += fmt::format(
        "recommended for generation: {} (up to {} sequences of {} tokens per replica){}\n", lp.layout.str(),
        lp.gen_max_batch, r.gen.context,
        r.gen.weights_device_layers >= 0
            ? fmt::format("; in adapt_gen's job, [runtime] weights_device_layers = {}", r.gen.weights_device_layers)
            : std::string());
  } else if (gpu) {
    s += fmt::format(
        "recommended for generation: no layout of {} GPU(s) holds the weights and the KV cache of {} "
        "sequence(s){}\n",
        r.gpus, r.gen.batch,
        p.min_gpus_gen > 0 ? fmt::format("; {} × {} would hold it (adapt_plan --gpus {} shows the layouts)",
                                         p.min_gpus_gen, r.cluster.gpu.name, p.min_gpus_gen)
                           : "");
    if (p.stream_gen_layers >= 0)
      s += fmt::format(
          "  or stream weights from host RAM: with runtime.weights_device_layers = {} a layout holds "
          "them; adapt_plan --weights-device-layers {} shows it\n",
          p.stream_gen_layers, p.stream_gen_layers);
  }
  return s;
}

std::string plan_json(const PlanResult& p) {
  const PlanRequest& r = p.req;
  json j;
  j["model"] = {{"name", r.model_name},          {"layers", r.model.n_layers},
                {"hidden", r.model.hidden_size}, {"ffn", r.model.intermediate_size},
                {"heads", r.model.n_heads},      {"kv_heads", r.model.n_kv_heads},
                {"vocab", r.model.vocab_size},   {"parameters", model::llama_param_counts(r.model).total}};
  j["adapter"] = {{"spec", adapter_spec_str(r.adapter, r.model)}, {"parameters", adapter_params(r.model, r.adapter)}};
  j["backend"] = r.backend == Backend::Gpu ? "gpu" : "cpu";
  j["train"] = {{"seq", r.train.seq},
                {"micro_batch", r.train.micro_batch},
                {"grad_accum", r.train.grad_accum},
                {"recompute", r.train.recompute},
                {"zero1", r.train.zero1},
                {"offload", r.train.offload},
                {"activation_bytes", Precision::of(r.backend, r.train.act_bytes).activation}};
  j["gen"] = {{"batch", r.gen.batch}, {"context", r.gen.context}};
  j["gpus"] = r.gpus;
  if (r.backend == Backend::Gpu) {
    const GpuSpec& g = r.cluster.gpu;
    j["hardware"] = {{"gpu", g.name},
                     {"mem_gib", g.mem_gb},
                     {"bf16_tflops", g.bf16_tflops},
                     {"hbm_tbps", g.hbm_tbps},
                     {"intra_gbps", g.intra_gbps},
                     {"gpus_per_node", g.gpus_per_node},
                     {"network", r.cluster.network.name},
                     {"inter_gbps_per_gpu", r.cluster.inter_gbps_per_gpu()},
                     {"mfu", r.cluster.mfu},
                     {"usable", r.usable}};
  }
  auto acts = [](const ActivationBytes& a) {
    return json{{"saved", a.saved}, {"scratch", a.scratch}, {"adapter", a.adapter}, {"total", a.total()}};
  };
  json layouts = json::array();
  for (std::size_t i = 0; i < p.layouts.size(); ++i) {
    const LayoutPlan& lp = p.layouts[i];
    const TrainMemory& m = lp.mem;
    json t;
    t["tp"] = lp.layout.tp;
    t["pp"] = lp.layout.pp;
    t["train_stage_layers"] =
        parallel::stage_layer_counts(model::llama_dims(r.model), lp.layout.pp, parallel::kTrainSplit);
    t["dp"] = lp.layout.dp;
    t["memory"] = {{"rank", {{"tp", m.tp_rank}, {"pp", m.pp_rank}}},
                   {"base_params", m.base_params},
                   {"adapter_params", m.adapter_params},
                   {"weights", m.weights},
                   {"adapter", m.adapter},
                   {"gradients", m.gradients},
                   {"optimizer", m.optimizer},
                   {"dp_buffers", m.dp_buffers},
                   {"pipeline_buffers", m.pipeline_buffers},
                   {"micro_batches_in_flight", m.micro_in_flight},
                   {"activations", acts(m.activations)},
                   {"activations_other_recompute", acts(m.activations_other)},
                   {"libraries", m.libraries},
                   {"operand_copies", m.operand_copies},
                   {"attention_buffers", m.attention_buffers},
                   {"device_total", m.device_total()},
                   {"host_mirrors", m.host_mirrors},
                   {"host_optimizer", m.host_optimizer},
                   {"host_staging", m.host_staging},
                   {"streamed_layers", m.streamed.layers},
                   {"streamed_weights_host", m.streamed.host},
                   {"checkpoint", m.checkpoint},
                   {"host_total", m.host_total()},
                   {"host_per_node", host_per_node(r, m)},
                   {"fits", lp.fits},
                   {"fits_other_recompute", lp.fits_other},
                   {"host_fits", lp.host_fits}};
    const CommBytes& c = lp.comm;
    t["comm"] = {{"counted", c.counted()},
                 {"tp_counted", c.tp_counted},
                 {"pp_counted", c.pp_counted},
                 {"dp_counted", c.dp_counted},
                 {"wire", c.wire()},
                 {"tp_wire_rank", c.tp_wire_rank},
                 {"pp_wire_rank", c.pp_wire_rank},
                 {"dp_wire_rank", c.dp_wire_rank}};
    if (r.backend == Backend::Gpu) {
      const StepTime& s = lp.time;
      t["time"] = {{"flops", s.flops},      {"compute_s", s.compute_s}, {"hbm_s", s.hbm_s},
                   {"tp_s", s.tp_s},        {"pp_s", s.pp_s},           {"dp_s", s.dp_s},
                   {"bubble", s.bubble},    {"step_s", s.step_s},       {"tokens_per_s", s.tokens_per_s},
                   {"stream_s", s.stream_s}};
    }
    t["best"] = {
        {"micro_batch", lp.best_micro_batch}, {"recompute", lp.best_recompute}, {"grad_accum", lp.best_grad_accum}};
    if (r.backend == Backend::Gpu && lp.best_micro_batch > 0)
      t["best"].update({{"step_s", lp.best_time.step_s}, {"tokens_per_s", lp.best_time.tokens_per_s}});
    if (r.layout) {  // one layout asked for: every rank of a replica (world rank order)
      json ranks = json::array();
      for (const TrainMemory& rm : train_memory_ranks(r.model, r.adapter, lp.layout, r.train, r.backend))
        ranks.push_back({{"tp", rm.tp_rank},
                         {"pp", rm.pp_rank},
                         {"device_total", rm.device_total()},
                         {"activations", rm.activations.total()},
                         {"checkpoint", rm.checkpoint}});
      t["ranks"] = ranks;
    }
    t["gen"] = {{"weights", lp.gen.weights},
                {"streamed_layers", lp.gen.streamed.layers},
                {"streamed_weights_host", lp.gen.streamed.host},
                {"kv_cache", lp.gen.kv_cache},
                {"kv_per_sequence", lp.gen.kv_per_sequence},
                {"activations", lp.gen.activations},
                {"attention_buffers", lp.gen.attention_buffers},
                {"libraries", lp.gen.libraries},
                {"operand_copies", lp.gen.operand_copies},
                {"device_total", lp.gen.device_total()},
                {"fits", lp.gen_fits},
                {"max_sequences", lp.gen_max_batch},
                {"decode_tokens_per_s", lp.decode.tokens_per_s}};
    t["recommended_train"] = static_cast<int>(i) == p.train_pick;
    t["recommended_gen"] = static_cast<int>(i) == p.gen_pick;
    layouts.push_back(t);
  }
  j["layouts"] = layouts;
  j["min_gpus_train"] = p.min_gpus_train;
  j["min_gpus_gen"] = p.min_gpus_gen;
  // When nothing fits with every layer on the GPU: the largest --weights-device-layers that would (-1: none).
  j["stream_train_layers"] = p.stream_train_layers;
  j["stream_gen_layers"] = p.stream_gen_layers;
  // GPU plans: the longest training sequence some layout holds at micro-batch 1 with recomputation.
  if (r.backend == Backend::Gpu) {
    j["longest_train_seq"] =
        p.longest_train_seq_layout >= 0
            ? json{{"tokens", p.longest_train_seq},
                   {"layout", p.layouts[static_cast<std::size_t>(p.longest_train_seq_layout)].layout.str()}}
            : json(nullptr);
  }
  j["weights_device_layers"] = r.train.weights_device_layers;
  return j.dump(2) + "\n";
}

}  // namespace adapt::plan
