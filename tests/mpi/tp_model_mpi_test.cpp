// Tensor parallelism inside the model under mpiexec, the world as the tp group (2 and 4 ranks): every
// rank writes the same tiny random Llama (GQA: 8 heads, 4 KV heads; an FFN width and a vocabulary that
// split unevenly over 4), loads it whole (the single-rank reference, computed on every rank) and as its
// tp slices (model::llama_model_load_tp), and compares:
//   * forward logits (plain, with unmerged LoRA on all 7 projections + Houlsby bottleneck adapters,
//     with LoRA merged into the rank's slices, with attention and MLP biases, with tied embeddings,
//     with bf16 weights kept as stored) against the whole model's;
//   * 32 greedy tokens decoded through the KV cache (holding only the rank's KV heads), and each
//     step's logits;
//   * a training step with lora+bottleneck (LoRA dropout on; plain rows, and packed rows with
//     restarting positions, segment masking and padding): loss, logits, the gradient entering the
//     embedding and every adapter gradient gathered whole; recomputation and chunked logits;
//   * 5 AdamW steps: the loss of each step and the final adapter weights gathered whole;
//   * the bytes each rank reads at load: its share only;
//   * AdapterSet::shard_for_tp then tp_gathered gives the whole set back bit for bit, which exports and
//     loads back (a sharded set refuses to export);
//   * the backward with the q/k/v and gate/up all-reduces overlapping the adapters' weight gradients
//     (AdapterSet's hook halves) against the same step with the halves unsplit: loss, the gradient
//     entering the embedding and every rank's adapter gradient bit for bit, the bytes counted equal.
// Tolerance: 1e-5 relative to the largest magnitude of each compared tensor (max |tp − one| / max |one|);
// the differences are f32 summation order (partial products summed over ranks), measured ≤ 1e-6.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "comm/mpi_communicator.h"
#include "model/kv_cache.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "model/model_folder.h"
#include "model/tensor_parallel.h"
#include "optim/adamw.h"
#include "parallel/llama_sharding.h"
#include "parallel/tp_ops.h"
#include "plan/plan.h"
#include "tests/mpi/tp_test_util.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::test::tp;

namespace {

// Random model biases (the folder's are 0): whole on one rank, the rank's rows of the column-parallel
// ones with tp, the o/down biases whole on every rank.
void set_biases(model::LlamaModel& m) {
  const model::TensorParallel& tp = m.tp;
  const model::LlamaConfig& c = m.config;
  for (std::size_t l = 0; l < m.weights.layers.size(); ++l) {
    model::LayerWeights& w = m.weights.layers[l];
    const std::uint64_t k = 900 + 10 * l;
    auto rows = [&](std::int64_t n, std::int64_t block) {
      return parallel::split_range(n, block, tp.size, tp.rank).begin;
    };
    fill(w.bq, k + 0, rows(c.n_heads * c.head_dim, c.head_dim), 0.2f);
    fill(w.bk, k + 1, rows(c.n_kv_heads * c.head_dim, c.head_dim), 0.2f);
    fill(w.bv, k + 2, rows(c.n_kv_heads * c.head_dim, c.head_dim), 0.2f);
    fill(w.bo, k + 3, 0, 0.2f);
    fill(w.b_gate, k + 4, rows(c.intermediate_size, 1), 0.2f);
    fill(w.b_up, k + 5, rows(c.intermediate_size, 1), 0.2f);
    fill(w.b_down, k + 6, 0, 0.2f);
  }
}

// The tiny model written by this rank into its own folder, loaded whole and as the rank's tp slices.
struct Models {
  test::TempDir dir{"adapt-tp-model"};
  std::unique_ptr<comm::Communicator> world;
  comm::GridComms comms;
  model::LlamaModel whole, part;
  model::LlamaLoadStats whole_stats, part_stats;

  explicit Models(const Variant& v) {
    world = comm::MpiCommunicator::world({.timeout_s = 120});
    const model::LlamaConfig cfg = tiny_config(v);
    model::random_model_write(dir.path(), cfg, {.seed = 11, .dtype = cfg.torch_dtype, .max_shard_bytes = 20000});
    const model::LlamaLoadOptions load{.storage = v.bf16 ? model::WeightStorage::AsStored : model::WeightStorage::F32};
    const comm::ProcessGrid grid =
        comm::ProcessGrid::make(world->size(), world->size(), 1,
                                {.n_heads = cfg.n_heads, .n_kv_heads = cfg.n_kv_heads, .n_layers = cfg.n_layers});
    comms = comm::grid_comms_split(*world, grid);
    whole = model::llama_model_load(dir.path(), load, &whole_stats);
    part = model::llama_model_load_tp(dir.path(), grid, world->rank(), *comms.tp, load, &part_stats);
    if (v.biases) {
      set_biases(whole);
      set_biases(part);
    }
  }
  int size() const { return world->size(); }
};

}  // namespace

TEST_CASE("tp forward: the logits equal the whole model's, with and without adapters") {
  for (const Variant v :
       {Variant{}, Variant{.tied = true}, Variant{.biases = true}, Variant{.tied = true, .bf16 = true}}) {
    CAPTURE(v.tied);
    CAPTURE(v.biases);
    CAPTURE(v.bf16);
    Models m(v);
    REQUIRE(m.part.tp.size == m.size());
    CHECK(m.part.weights.layers[0].wq.dtype() == (v.bf16 ? DType::BF16 : DType::F32));
    const Tensor ids = ids_tensor(2, 9, m.whole.config.vocab_size, 3);
    const Tensor ref = model::llama_forward(m.whole, ids);
    const Tensor got = model::llama_forward(m.part, ids);
    const double d_plain = rel_diff(got, ref);
    CHECK(d_plain <= kTol);

    adapters::AdapterSet set_whole = adapter_set(m.whole.config, 0.0, nullptr);
    adapters::AdapterSet set_part = adapter_set(m.whole.config, 0.0, &m.part.tp);
    const Tensor ref_a = model::llama_forward(m.whole, ids, nullptr, {.hook = &set_whole});
    const Tensor got_a = model::llama_forward(m.part, ids, nullptr, {.hook = &set_part});
    const double d_adapted = rel_diff(got_a, ref_a);
    CHECK(d_adapted <= kTol);
    CHECK(rel_diff(ref_a, ref) > 1e-2);  // the adapters change the logits
    // LoRA merged into the rank's slices of the base weights (the bottleneck modules still run through
    // the hook): the same logits.
    if (!v.bf16) {  // merging needs f32 weights
      set_part.merge(m.part);
      const Tensor got_m = model::llama_forward(m.part, ids, nullptr, {.hook = &set_part});
      set_part.unmerge(m.part);
      CHECK(rel_diff(got_m, ref_a) <= kTol);
    }
    if (m.world->rank() == 0)
      std::printf("tp%d forward tied=%d biases=%d bf16=%d: max rel diff %.2e plain, %.2e with adapters\n", m.size(),
                  v.tied, v.biases, v.bf16, d_plain, d_adapted);
  }
}

TEST_CASE("tp load: each rank reads only its share of the bytes") {
  for (const Variant v : {Variant{}, Variant{.tied = true}}) {
    Models m(v);
    std::uint64_t held = 0;  // the f32 bytes of the rank's tensors (tied lm_head shares the embedding)
    const model::LlamaWeights& w = m.part.weights;
    held += w.embedding.size_bytes() + w.final_norm.size_bytes() + (v.tied ? 0 : w.lm_head.size_bytes());
    for (const model::LayerWeights& l : w.layers)
      for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down})
        held += t->size_bytes();
    CHECK(m.part_stats.bytes_read == m.part_stats.bytes_share);
    CHECK(m.part_stats.bytes_share == held);
    CHECK(m.part_stats.bytes_resident == held);
    CHECK(m.part_stats.bytes_read < m.whole_stats.bytes_read);
    // The replicated norms aside, the shares add up to the whole checkpoint.
    std::uint64_t norms =
        4 * static_cast<std::uint64_t>(m.whole.config.hidden_size * (2 * m.whole.config.n_layers + 1));
    auto sum = static_cast<std::int64_t>(m.part_stats.bytes_read - norms);
    m.world->all_reduce(std::span<std::int64_t>(&sum, 1), comm::ReduceOp::Sum);
    CHECK(static_cast<std::uint64_t>(sum) + norms == m.whole_stats.bytes_read);
    // Column-parallel tensors hold the rank's heads only.
    CHECK(w.layers[0].wk.dim(0) == m.whole.config.n_kv_heads / m.size() * m.whole.config.head_dim);
    CHECK(w.layers[0].wo.dim(1) == m.whole.config.n_heads / m.size() * m.whole.config.head_dim);
  }
}

TEST_CASE("tp generation: 32 greedy tokens through the KV cache equal one rank's") {
  for (const Variant v : {Variant{}, Variant{.tied = true}}) {
    CAPTURE(v.tied);
    Models m(v);
    const std::int64_t V = m.whole.config.vocab_size, n_new = 32;
    adapters::AdapterSet set_whole = adapter_set(m.whole.config, 0.0, nullptr);
    adapters::AdapterSet set_part = adapter_set(m.whole.config, 0.0, &m.part.tp);
    model::AdapterHook* hook_whole = v.tied ? &set_whole : nullptr;  // tied: with adapters
    model::AdapterHook* hook_part = v.tied ? &set_part : nullptr;
    model::KvCache cache_whole(m.whole.config, 1, 64);
    model::KvCache cache_part(m.part.config, 1, 64, m.part.tp.size);
    CHECK(cache_part.size_bytes() * static_cast<std::uint64_t>(m.size()) == cache_whole.size_bytes());
    Tensor prompt = ids_tensor(1, 6, V, 21);
    std::vector<std::int32_t> toks_whole, toks_part;
    double worst = 0;
    Tensor next_whole = prompt, next_part = prompt;
    for (std::int64_t i = 0; i < n_new; ++i) {
      const Tensor lw =
          model::llama_forward(m.whole, next_whole, &cache_whole, {.last_position_only = true, .hook = hook_whole});
      const Tensor lp =
          model::llama_forward(m.part, next_part, &cache_part, {.last_position_only = true, .hook = hook_part});
      worst = std::max(worst, rel_diff(lp, lw));
      toks_whole.push_back(argmax(lw.data<float>(), V));
      toks_part.push_back(argmax(lp.data<float>(), V));
      next_whole = Tensor::empty({1, 1}, DType::I32);
      next_part = Tensor::empty({1, 1}, DType::I32);
      next_whole.data<std::int32_t>()[0] = toks_whole.back();
      next_part.data<std::int32_t>()[0] = toks_part.back();
    }
    CHECK(toks_part == toks_whole);
    CHECK(worst <= kTol);
    CHECK(cache_part.n_past(0) == 6 + n_new - 1);
    // Not a degenerate sequence: the greedy path visits several tokens.
    std::vector<std::int32_t> distinct = toks_whole;
    std::sort(distinct.begin(), distinct.end());
    CHECK(std::unique(distinct.begin(), distinct.end()) - distinct.begin() >= 3);
    if (m.world->rank() == 0)
      std::printf("tp%d greedy tied=%d: %zu tokens equal, step logits max rel diff %.2e\n", m.size(), v.tied,
                  toks_part.size(), worst);
  }
}

TEST_CASE("tp training step: loss, logits and every adapter gradient equal one rank's") {
  for (const Variant v : {Variant{}, Variant{.tied = true, .biases = true}}) {
    CAPTURE(v.tied);
    CAPTURE(v.biases);
    Models m(v);
    const model::LlamaConfig& c = m.whole.config;
    const std::int64_t B = 2, T = 10;
    const Tensor ids = ids_tensor(B, T, c.vocab_size, 31);
    Tensor targets = ids_tensor(B, T, c.vocab_size, 32);
    targets.data<std::int32_t>()[3] = model::kIgnoreIndex;
    // The second variant packs row 1 with two documents (positions restart) and two padding tokens.
    model::TrainInputs in{.ids = ids, .targets = targets};
    Tensor positions = Tensor::empty({B, T}, DType::I32), segments = Tensor::empty({B, T}, DType::I32);
    for (std::int64_t t = 0; t < T; ++t) {
      positions.data<std::int32_t>()[t] = static_cast<std::int32_t>(t);
      segments.data<std::int32_t>()[t] = 0;
      const std::int32_t seg = t < 4 ? 0 : t < 8 ? 1 : -1;
      positions.data<std::int32_t>()[T + t] = seg < 0 ? 0 : static_cast<std::int32_t>(seg == 0 ? t : t - 4);
      segments.data<std::int32_t>()[T + t] = seg;
      if (seg < 0 || t == 3) targets.data<std::int32_t>()[T + t] = model::kIgnoreIndex;
    }
    if (v.biases) in.positions = positions, in.segment_ids = segments;
    adapters::AdapterSet set_whole = adapter_set(c, 0.1, nullptr);
    adapters::AdapterSet set_part = adapter_set(c, 0.1, &m.part.tp);
    for (adapters::AdapterSet* s : {&set_whole, &set_part}) {
      s->set_training(true);
      s->set_step(3, 1);
    }
    Tensor logits_whole = Tensor::empty({B, T, c.vocab_size}, DType::F32);
    Tensor logits_part = Tensor::empty({B, T, c.vocab_size}, DType::F32);
    Tensor demb_whole = Tensor::empty({B, T, c.hidden_size}, DType::F32);
    Tensor demb_part = Tensor::empty({B, T, c.hidden_size}, DType::F32);
    const model::TrainResult rw =
        model::llama_train_step(m.whole, in, &set_whole, {.logits = &logits_whole, .d_embedded = &demb_whole});
    const model::TrainResult rp =
        model::llama_train_step(m.part, in, &set_part, {.logits = &logits_part, .d_embedded = &demb_part});
    set_part.tp_reduce_gradients();
    CHECK(rp.n_loss_tokens == rw.n_loss_tokens);
    const double d_loss = std::abs(rp.loss_sum - rw.loss_sum) / std::abs(rw.loss_sum);
    CHECK(d_loss <= kTol);
    CHECK(rel_diff(logits_part, logits_whole) <= kTol);
    CHECK(rel_diff(demb_part, demb_whole) <= kTol);
    const std::vector<adapters::AdapterParam> pw = set_whole.parameters();
    for (const adapters::AdapterParam& p : pw) CHECK(max_abs(p.grad) > 0);  // every gradient is compared
    const double worst = gathered_rel_diff(set_part, set_whole, /*grads=*/true);
    // The norm for clipping, from the shards, equals the whole set's.
    std::vector<Tensor> grads;
    for (const adapters::AdapterParam& p : pw) grads.push_back(p.grad);
    const double norm_whole = optim::grad_global_norm(grads);
    CHECK(std::abs(set_part.tp_grad_norm() - norm_whole) <= kTol * norm_whole);
    if (m.world->rank() == 0)
      std::printf("tp%d train step tied=%d: loss rel diff %.2e, %zu gradients max rel diff %.2e\n", m.size(), v.tied,
                  d_loss, pw.size(), worst);

    // Recomputation and chunked logits on the sharded model: the same gradients (recomputation bit for bit).
    const std::vector<adapters::AdapterParam> pp = set_part.parameters();
    auto grad_copies = [&] {
      std::vector<Tensor> out;
      for (const adapters::AdapterParam& p : pp) {
        Tensor g = Tensor::empty(p.grad.shape(), DType::F32);
        g.copy_from(p.grad);
        out.push_back(g);
      }
      return out;
    };
    const std::vector<Tensor> first = grad_copies();
    set_part.zero_grad();
    const model::TrainResult rr = model::llama_train_step(m.part, in, &set_part, {.recompute = true});
    set_part.tp_reduce_gradients();
    CHECK(rr.loss_sum == rp.loss_sum);
    for (std::size_t i = 0; i < pp.size(); ++i) CHECK(rel_diff(pp[i].grad, first[i]) == 0.0);
    // Each rank keeping its rows of every layer's input (shard_saved_inputs), gathered before the
    // recomputation: the same bits, also when the rows do not split evenly (7 rows: the last rank's
    // shard padded, at tp4 2 | 2 | 2 | 1; 3 rows: at tp4 the last rank's shard is all padding). Per-token
    // positions, as adapt_train passes them (the planner counts per-token RoPE tables).
    auto with_positions = [](const Tensor& ids, const Tensor& targets) {
      Tensor pos = Tensor::empty(ids.shape(), DType::I32);
      for (std::int64_t i = 0; i < pos.numel(); ++i)
        pos.data<std::int32_t>()[i] = static_cast<std::int32_t>(i % ids.dim(1));
      return model::TrainInputs{.ids = ids, .targets = targets, .positions = pos};
    };
    const Tensor ids7 = ids_tensor(1, 7, c.vocab_size, 77), targets7 = ids_tensor(1, 7, c.vocab_size, 78);
    const Tensor ids3 = ids_tensor(1, 3, c.vocab_size, 79), targets3 = ids_tensor(1, 3, c.vocab_size, 80);
    for (const model::TrainInputs& x :
         {with_positions(in.ids, in.targets), with_positions(ids7, targets7), with_positions(ids3, targets3)}) {
      CAPTURE(x.ids.numel());
      set_part.zero_grad();
      const model::TrainResult plain = model::llama_train_step(m.part, x, &set_part, {.recompute = true});
      const std::vector<Tensor> expect = grad_copies();
      set_part.zero_grad();
      const std::int64_t gathers = m.comms.tp->stats()[comm::Collective::AllGather].calls;
      const model::TrainResult sharded =
          model::llama_train_step(m.part, x, &set_part, {.recompute = true, .shard_saved_inputs = true});
      // One all-gather per layer, and no other.
      CHECK(m.comms.tp->stats()[comm::Collective::AllGather].calls - gathers == (m.size() > 1 ? c.n_layers : 0));
      CHECK(sharded.loss_sum == plain.loss_sum);
      for (std::size_t i = 0; i < pp.size(); ++i) CHECK(rel_diff(pp[i].grad, expect[i]) == 0.0);
      // The planner's replay of the workspaces gives both high-water marks to the byte.
      for (const bool shard : {false, true}) {
        const model::TrainResult& r = shard ? sharded : plain;
        const plan::ActivationBytes b = plan::train_activation_bytes(
            c, adapter_config(0.1), {.tp = m.size()}, m.part.tp.rank, 0, x.ids.dim(0), x.ids.dim(1), true, true,
            model::TrainOptions{}.logits_chunk_rows, plan::Backend::Cpu, shard);
        CAPTURE(shard);
        CHECK(b.saved == r.memory.saved_bytes);
        CHECK(b.scratch == r.memory.scratch_bytes);
      }
      // Two layers: the inputs of both whole (and the output) against two whole, padded to tp shards,
      // plus a shard of each: less from tp4 on, where the padding does not outweigh (at 3 rows it does).
      if (m.size() >= 4 && x.ids.numel() >= m.size()) CHECK(sharded.memory.saved_bytes < plain.memory.saved_bytes);
      // Inputs kept in bf16 (saved_input_dtype), whole or sharded: the same loss (the forward is the f32
      // one), gradients at the rounded inputs, the same bits either way (each element rounds alike), near
      // the f32 gradients but not equal to them; the planner's bytes, to the byte.
      std::vector<Tensor> bf16_grads;
      for (const bool shard : {false, true}) {
        CAPTURE(shard);
        set_part.zero_grad();
        const std::int64_t before = m.comms.tp->stats()[comm::Collective::AllGather].calls;
        const model::TrainResult r = model::llama_train_step(
            m.part, x, &set_part, {.recompute = true, .shard_saved_inputs = shard, .saved_input_dtype = DType::BF16});
        CHECK(m.comms.tp->stats()[comm::Collective::AllGather].calls - before ==
              (shard && m.size() > 1 ? c.n_layers : 0));
        CHECK(r.loss_sum == plain.loss_sum);
        double most = 0.0;
        for (std::size_t i = 0; i < pp.size(); ++i) {
          if (shard) CHECK(rel_diff(pp[i].grad, bf16_grads[i]) == 0.0);
          most = std::max(most, rel_diff(pp[i].grad, expect[i]));
        }
        if (!shard) bf16_grads = grad_copies();
        MESSAGE("tp" << m.size() << ", " << x.ids.numel() << " rows, bf16 inputs"
                     << std::string(shard ? " sharded" : "") << ": gradients within " << most << " of the f32 ones");
        // max |Δ| / max |g| per tensor: 0.9-2.3% measured (bf16 rounds by 2^-9 relative; the tiny random
        // model amplifies it through its two layers).
        CHECK(most > 0.0);
        CHECK(most < 5e-2);
        const plan::ActivationBytes b = plan::train_activation_bytes(
            c, adapter_config(0.1), {.tp = m.size()}, m.part.tp.rank, 0, x.ids.dim(0), x.ids.dim(1), true, true,
            model::TrainOptions{}.logits_chunk_rows, plan::Backend::Cpu, shard, /*bf16_saved_inputs=*/true);
        CHECK(b.saved == r.memory.saved_bytes);
        CHECK(b.scratch == r.memory.scratch_bytes);
      }
    }
    set_part.zero_grad();
    const model::TrainResult rc = model::llama_train_step(m.part, in, &set_part, {.logits_chunk_rows = 7});
    set_part.tp_reduce_gradients();
    CHECK(std::abs(rc.loss_sum - rw.loss_sum) / std::abs(rw.loss_sum) <= kTol);
    for (std::size_t i = 0; i < pp.size(); ++i) CHECK(rel_diff(pp[i].grad, first[i]) <= kTol);
  }
}

TEST_CASE("tp training: 5 AdamW steps give one rank's losses and adapter weights") {
  for (const Variant v : {Variant{}, Variant{.tied = true}}) {
    CAPTURE(v.tied);
    Models m(v);
    const model::LlamaConfig& c = m.whole.config;
    adapters::AdapterSet set_whole = adapter_set(c, 0.1, nullptr);
    adapters::AdapterSet set_part = adapter_set(c, 0.1, &m.part.tp);
    optim::AdamW adam_whole({.weight_decay = 0.01}), adam_part({.weight_decay = 0.01});
    for (const adapters::AdapterParam& p : set_whole.parameters()) adam_whole.add(p.name, p.value, p.grad, p.decay);
    for (const adapters::AdapterParam& p : set_part.parameters()) adam_part.add(p.name, p.value, p.grad, p.decay);
    set_whole.set_training(true);
    set_part.set_training(true);
    double worst_loss = 0;
    for (int step = 0; step < 5; ++step) {
      const Tensor ids = ids_tensor(2, 8, c.vocab_size, 100 + step);
      const Tensor targets = ids_tensor(2, 8, c.vocab_size, 200 + step);
      set_whole.set_step(step);
      set_part.set_step(step);
      set_whole.zero_grad();
      set_part.zero_grad();
      const double lw = model::llama_train_step(m.whole, {.ids = ids, .targets = targets}, &set_whole).loss();
      const double lp = model::llama_train_step(m.part, {.ids = ids, .targets = targets}, &set_part).loss();
      set_part.tp_reduce_gradients();
      adam_whole.step(2e-2);
      adam_part.step(2e-2);
      const double d = std::abs(lp - lw) / std::abs(lw);
      CAPTURE(step);
      CHECK(d <= kTol);
      worst_loss = std::max(worst_loss, d);
    }
    const double worst = gathered_rel_diff(set_part, set_whole, /*grads=*/false);
    if (m.world->rank() == 0)
      std::printf("tp%d 5 AdamW steps tied=%d: losses max rel diff %.2e, weights max rel diff %.2e\n", m.size(), v.tied,
                  worst_loss, worst);
  }
}

TEST_CASE("AdapterSet: shard_for_tp keeps the rank's LoRA slices, tp_gathered gives the whole set back") {
  Models m(Variant{});
  const model::LlamaConfig& c = m.whole.config;
  const adapters::AdapterSet whole = adapter_set(c, 0.0, nullptr);
  adapters::AdapterSet part = adapter_set(c, 0.0, &m.part.tp);
  CHECK(part.tp().size == m.size());
  CHECK_THROWS_AS(part.shard_for_tp(m.part.tp), UnsupportedError);
  if (m.size() > 1) CHECK_THROWS_AS(adapters::adapter_export(part, m.dir / "adapter"), UnsupportedError);
  for (const int layer : part.layers()) {
    for (const model::WeightKind k : {model::WeightKind::Wq, model::WeightKind::Wo, model::WeightKind::WDown}) {
      const adapters::LoraAdapter* a = part.lora(layer, k);
      const parallel::LoraShard s = parallel::lora_shard(static_cast<parallel::LlamaTensor>(static_cast<int>(k)), 4,
                                                         model::llama_dims(c), m.size(), m.world->rank());
      CHECK(a->a.shape() == s.a.local_shape());
      CHECK(a->b.shape() == s.b.local_shape());
    }
  }
  // tp_param_slices: each parameter is its slice of the whole one, bit for bit.
  const std::vector<parallel::TensorSlice> slices = part.tp_param_slices();
  const std::vector<adapters::AdapterParam> pp = part.parameters(), pf = whole.parameters();
  REQUIRE(slices.size() == pp.size());
  int split = 0;
  for (std::size_t i = 0; i < pp.size(); ++i) {
    CAPTURE(pp[i].name);
    CHECK(slices[i].dim == (pp[i].tp_shard_dim == 0   ? parallel::ShardDim::Rows
                            : pp[i].tp_shard_dim == 1 ? parallel::ShardDim::Cols
                                                      : parallel::ShardDim::None));
    CHECK(rel_diff(pp[i].value, parallel::shard_take(pf[i].value, slices[i])) == 0.0);
    split += slices[i].dim != parallel::ShardDim::None;
  }
  CHECK(split == 7 * 2);  // one factor of each of 7 sites in 2 layers
  CHECK(gathered_rel_diff(part, whole, /*grads=*/false, /*tol=*/0.0) == 0.0);
  const adapters::AdapterSet back = part.tp_gathered();
  CHECK(back.tp().size == 1);
  // The gathered set exports (each rank into its own folder here) and loads back as the whole set.
  adapters::adapter_export(back, m.dir / "adapter");
  const adapters::AdapterSet loaded = adapters::adapter_load(m.dir / "adapter", c);
  CHECK(gathered_rel_diff(loaded, whole, /*grads=*/false, /*tol=*/0.0) == 0.0);
}

namespace {

/// `set` behind AdapterHook's default linear_backward halves (the whole linear_backward in the input
/// half, nothing in the weights half): the model's tp backward then runs each adapter's whole backward
/// before the all-reduce starts, the order before the all-reduce overlapped the parameter gradients.
class UnsplitHook final : public model::AdapterHook {
 public:
  explicit UnsplitHook(adapters::AdapterSet& set) : set_(set) {}
  bool has_linear(const model::LinearSite& site) const override { return set_.has_linear(site); }
  void linear_forward(const model::LinearSite& site, const Tensor& x, Tensor& y) override {
    set_.linear_forward(site, x, y);
  }
  void linear_backward(const model::LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) override {
    set_.linear_backward(site, x, dy, dx);
  }
  bool has_block(int layer, model::BlockSite site) const override { return set_.has_block(layer, site); }
  void block_forward(int layer, model::BlockSite site, const Tensor& h, const Tensor& f, Tensor& out) override {
    set_.block_forward(layer, site, h, f, out);
  }
  void block_backward(int layer, model::BlockSite site, const Tensor& h, const Tensor& f, const Tensor& dout,
                      Tensor& dh, Tensor& df) override {
    set_.block_backward(layer, site, h, f, dout, dh, df);
  }
  void layer_backward_done(int layer) override { static_cast<model::AdapterHook&>(set_).layer_backward_done(layer); }

 private:
  adapters::AdapterSet& set_;
};

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

}  // namespace

TEST_CASE("tp training step: the all-reduce overlapped with the adapters' weight gradients changes no bit") {
  Models m(Variant{});
  const model::LlamaConfig& c = m.part.config;
  const std::int64_t B = 2, T = 9;
  const model::TrainInputs in{.ids = ids_tensor(B, T, c.vocab_size, 41), .targets = ids_tensor(B, T, c.vocab_size, 42)};
  for (const bool recompute : {false, true}) {
    CAPTURE(recompute);
    // The same sharded set twice (LoRA dropout on): one as the model's hook, one behind UnsplitHook.
    adapters::AdapterSet overlapped = adapter_set(c, 0.1, &m.part.tp);
    adapters::AdapterSet unsplit = adapter_set(c, 0.1, &m.part.tp);
    UnsplitHook unsplit_hook(unsplit);
    for (adapters::AdapterSet* s : {&overlapped, &unsplit}) {
      s->set_training(true);
      s->set_step(2, 0);
    }
    Tensor demb_o = Tensor::empty({B, T, c.hidden_size}, DType::F32);
    Tensor demb_u = Tensor::empty({B, T, c.hidden_size}, DType::F32);
    m.comms.tp->reset_stats();
    const model::TrainResult ro =
        model::llama_train_step(m.part, in, &overlapped, {.recompute = recompute, .d_embedded = &demb_o});
    const comm::CommStats stats_o = m.comms.tp->stats();
    m.comms.tp->reset_stats();
    const model::TrainResult ru =
        model::llama_train_step(m.part, in, &unsplit_hook, {.recompute = recompute, .d_embedded = &demb_u});
    const comm::CommStats stats_u = m.comms.tp->stats();
    CHECK(ro.loss_sum == ru.loss_sum);
    CHECK(bit_equal(demb_o, demb_u));
    // The rank's own gradients, before any tp reduction: every one of them, bit for bit.
    const std::vector<adapters::AdapterParam> po = overlapped.parameters(), pu = unsplit.parameters();
    REQUIRE(po.size() == pu.size());
    int differing = 0;
    for (std::size_t i = 0; i < po.size(); ++i) {
      CAPTURE(po[i].name);
      CHECK(max_abs(po[i].grad) > 0);
      differing += !bit_equal(po[i].grad, pu[i].grad);
    }
    CHECK(differing == 0);
    // The started all-reduces are counted as the blocking ones were.
    CHECK(stats_o[comm::Collective::AllReduce].calls == stats_u[comm::Collective::AllReduce].calls);
    CHECK(stats_o[comm::Collective::AllReduce].bytes == stats_u[comm::Collective::AllReduce].bytes);
    CHECK(stats_o.total_bytes() == stats_u.total_bytes());
  }
}
