// The planner (src/plan) against the code it models: adapter parameter counts against
// adapters::AdapterSet (whole, and each tp rank's slices after shard_for_tp); the training-step
// activation bytes against the high-water marks llama_train_step's workspaces report (TrainResult::
// memory) for LoRA, bottleneck and both, with and without recomputation, chunked and whole logits, and
// a forward without backward; the generation activations against llama_forward's and the adapters'
// workspaces over a generation schedule (prefill pieces, ragged decode steps); base weights per rank
// against the sum of the model's tensors; --adapter parsing and its errors; the layouts the planner
// considers against comm::ProcessGrid's rules.
#include "plan/plan.h"

#include <doctest/doctest.h>
#include <optional>

#include <nlohmann/json.hpp>
#include <numeric>

#include "adapters/adapter_set.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "model/tensor_parallel.h"
#include "plan/plan_report.h"
#include "tests/support/rank_only_comm.h"
#include "tests/unit/model_train/train_test_util.h"

using namespace adapt;
using namespace adapt::plan;

namespace {

adapters::AdapterConfig spec(const std::string& s) { return parse_adapter_spec(s); }

Tensor ids_of(std::int64_t B, std::int64_t T, std::int64_t V) {
  Tensor ids = Tensor::empty({B, T}, DType::I32, host_allocator(), "ids");
  for (std::int64_t i = 0; i < B * T; ++i) ids.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 7 + 3) % V);
  return ids;
}

const char* const kSpecs[] = {
    "lora:r=2",  // q, v (adapt_train's default targets)
    "lora:r=3,targets=all",
    "lora:r=2,targets=k+o+down,dropout=0.25",
    "bottleneck:5",  // pfeiffer
    "bottleneck:4,placement=houlsby,ln",
    "bottleneck:3,placement=parallel",
    "lora:r=2,targets=all/bottleneck:4,placement=houlsby",
};

}  // namespace

TEST_CASE("adapter parameters equal adapters::AdapterSet's, whole and per tp rank") {
  for (const char* preset : {"tiny", "bench"}) {
    const model::LlamaConfig m = model::llama_config_preset(preset);
    for (const char* s : kSpecs) {
      CAPTURE(preset);
      CAPTURE(s);
      const adapters::AdapterConfig a = spec(s);
      adapters::AdapterSet whole(m, a);
      CHECK(adapter_params(m, a) == whole.n_parameters());
      for (const int tp : {2, 4}) {
        if (m.n_kv_heads % tp != 0) continue;
        for (int r = 0; r < tp; ++r) {
          adapters::AdapterSet set(m, a);
          test::RankOnly group(r, tp, "sharding an adapter must not communicate");
          set.shard_for_tp(model::TensorParallel::of(group));
          std::int64_t held = 0;
          for (const adapters::AdapterParam& p : set.parameters()) held += p.value.numel();
          CAPTURE(tp);
          CAPTURE(r);
          CHECK(adapter_params_on_rank(m, a, tp, r) == held);
        }
      }
    }
  }
}

TEST_CASE("training activation bytes equal llama_train_step's workspace high-water marks") {
  using namespace adapt::test::train;
  for (const std::int64_t kv : {4, 2}) {
    model::LlamaModel model = tiny_model(kv);
    const Batch batch = packed_batch(model.config.vocab_size);
    for (const char* s : kSpecs) {
      for (const bool recompute : {false, true}) {
        for (const std::int64_t chunk : {std::int64_t{0}, std::int64_t{5}}) {
          for (const bool backward : {true, false}) {
            CAPTURE(kv);
            CAPTURE(s);
            CAPTURE(recompute);
            CAPTURE(chunk);
            CAPTURE(backward);
            const adapters::AdapterConfig a = spec(s);
            adapters::AdapterSet set(model.config, a);
            model::TrainWorkspace ws;
            const model::TrainResult r = model::llama_train_step(
                model, inputs_of(batch, true), &set,
                {.recompute = recompute, .backward = backward, .logits_chunk_rows = chunk}, &ws);
            const ActivationBytes p =
                train_activation_bytes(model.config, a, Layout{}, 0, 0, batch.ids.dim(0), batch.ids.dim(1), recompute,
                                       backward, chunk, Backend::Cpu);
            CHECK(p.saved == r.memory.saved_bytes);
            CHECK(p.scratch == r.memory.scratch_bytes);
          }
        }
      }
    }
  }
}

TEST_CASE("generation activation bytes equal llama_forward's and the adapters' workspace high-water marks") {
  using namespace adapt::test::train;
  for (const std::int64_t kv : {4, 2}) {
    const model::LlamaModel model = tiny_model(kv);
    const model::LlamaConfig& c = model.config;
    const std::int64_t V = c.vocab_size;
    // The whole logits of a forward without a cache, as adapt_eval runs it.
    {
      ops::Workspace ws;
      model::llama_forward(model, ids_of(2, 9, V), nullptr, {}, &ws);
      const model::ForwardCall whole{.batch = 2, .tokens = 9, .cache = false, .last_position_only = false};
      CHECK(ws.high_water_bytes() == model::llama_forward_workspace_bytes(c, {}, {}, whole));
    }
    // kSpecs, and a bottleneck scaled by 0.5 (its bias is scaled in the workspace).
    std::vector<std::pair<std::string, adapters::AdapterConfig>> configs;
    for (const char* s : kSpecs) configs.emplace_back(s, spec(s));
    configs.emplace_back("bottleneck:4,ln, scaling 0.5", spec("bottleneck:4,ln"));
    configs.back().second.bottleneck.scaling = 0.5;
    for (const auto& [name, a] : configs) {
      for (const std::int64_t chunk : {0, 5}) {
        for (const std::int64_t rows : {1, 3, 16}) {
          CAPTURE(kv);
          CAPTURE(name);
          CAPTURE(chunk);
          CAPTURE(rows);
          adapters::AdapterSet set(c, a);  // inference: no dropout
          // As Generator::run_batch calls it: each row prefilled alone in pieces of `chunk` tokens (the
          // longest prompt 13), then decode steps of every row at its own position.
          model::KvCache cache(c, rows, 32);
          ops::Workspace ws;
          std::vector<std::int64_t> all(static_cast<std::size_t>(rows));
          for (std::int64_t r = 0; r < rows; ++r) {
            all[static_cast<std::size_t>(r)] = r;
            const std::int64_t n = r == 0 ? 13 : 2 + r * 5 % 11;
            for (std::int64_t at = 0; at<n; at += chunk> 0 ? chunk : n) {
              const std::int64_t piece = chunk > 0 ? std::min(chunk, n - at) : n;
              model::llama_forward(model, ids_of(1, piece, V), &cache,
                                   {.last_position_only = true, .cache_rows = {&r, 1}, .hook = &set}, &ws);
            }
          }
          for (int step = 0; step < 3; ++step)
            model::llama_forward(model, ids_of(rows, 1, V), &cache,
                                 {.last_position_only = true, .cache_rows = all, .hook = &set}, &ws);
          const GenMemory g = gen_memory(
              c, a, Layout{}, {.batch = rows, .context = 32, .prefill_chunk = chunk, .prompt = 13}, Backend::Cpu);
          CHECK(g.activations ==
                ws.high_water_bytes() + set.workspace_high_water_bytes() + static_cast<std::uint64_t>(rows * V) * 4);
        }
      }
    }
  }
}

TEST_CASE("sharded layer inputs pay where the stage's layers outweigh two whole hidden states") {
  // Whole: layers + 1 hidden states; sharded: 2 + layers / tp (the backward gathers into one of the two
  // and recomputes into the other).
  CHECK_FALSE(model::compact_saved_inputs_pays(1, 80));
  CHECK_FALSE(model::compact_saved_inputs_pays(2, 2));  // 3 against 2 + 1
  CHECK(model::compact_saved_inputs_pays(2, 3));        // 4 against 2 + 1.5
  CHECK_FALSE(model::compact_saved_inputs_pays(8, 1));
  CHECK(model::compact_saved_inputs_pays(8, 2));
  CHECK(model::compact_saved_inputs_pays(8, 80));
  // In bf16, whole inputs on one rank: 2 + layers / 2 against layers + 1.
  CHECK_FALSE(model::compact_saved_inputs_pays(1, 2, 2));
  CHECK(model::compact_saved_inputs_pays(1, 3, 2));
  CHECK(model::compact_saved_inputs_pays(2, 2, 2));  // 3 against 2 + 0.5
  // What adapt_train applies: what was asked where it pays, else whole f32 inputs.
  CHECK(model::saved_inputs_for(1, 80, true, DType::F32).shard == false);
  CHECK(model::saved_inputs_for(1, 80, true, DType::BF16).dtype == DType::BF16);
  CHECK(model::saved_inputs_for(8, 80, true, DType::BF16).shard);
  CHECK(model::saved_inputs_for(2, 2, true, DType::F32).shard == false);
  CHECK(model::saved_inputs_for(2, 2, true, DType::BF16).shard);
  // The plan follows it: at tp2 stages of one layer keep their inputs whole, of about 16 shard them.
  const model::LlamaConfig m = model::llama_config_preset("llama-3.1-8b");
  const adapters::AdapterConfig a = spec("lora:r=16");
  const TrainJob on{.seq = 1024, .micro_batch = 1, .recompute = true};
  TrainJob off = on;
  off.shard_saved_inputs = false;
  for (const auto& [pp, pays] : {std::pair{32, false}, std::pair{2, true}}) {  // 32 layers: 1 or about 16 a stage
    CAPTURE(pp);
    const Layout lay{2, pp, 1};
    const std::uint64_t sharded = train_memory(m, a, lay, on, Backend::Gpu).activations.saved;
    const std::uint64_t whole = train_memory(m, a, lay, off, Backend::Gpu).activations.saved;
    CHECK((sharded < whole) == pays);
    if (!pays) CHECK(sharded == whole);
    CHECK((train_comm_bytes(m, a, lay, on, Backend::Gpu).tp_counted >
           train_comm_bytes(m, a, lay, off, Backend::Gpu).tp_counted) == pays);
  }
  // bf16 shards: less memory, and half the bytes all-gathered.
  TrainJob bf16 = on;
  bf16.bf16_saved_inputs = true;
  const Layout lay{2, 2, 1};
  CHECK(train_memory(m, a, lay, bf16, Backend::Gpu).activations.saved <
        train_memory(m, a, lay, on, Backend::Gpu).activations.saved);
  auto gathered = [&](const TrainJob& j) {
    return train_comm_bytes(m, a, lay, j, Backend::Gpu).tp_counted -
           train_comm_bytes(m, a, lay, off, Backend::Gpu).tp_counted;
  };
  CHECK(gathered(on) > 0);
  CHECK(gathered(bf16) * 2 == gathered(on));
}

TEST_CASE("base weights per rank: the whole model on one rank, 1/tp of it plus the replicated norms") {
  const model::LlamaConfig m = model::llama_config_preset("llama-3.1-70b");
  const adapters::AdapterConfig a = spec("lora:r=16");
  const std::int64_t total = model::llama_param_counts(m).total;
  const std::int64_t norms = m.n_layers * 2 * m.hidden_size + m.hidden_size;  // replicated over tp
  for (const int tp : {2, 4, 8}) {
    CAPTURE(tp);
    // 70B: tp divides F and V, so every tp rank holds 1/tp of every matrix and every norm whole.
    const TrainMemory mem = train_memory(m, a, {tp, 1, 1}, {.seq = 128, .micro_batch = 1}, Backend::Cpu);
    CHECK(mem.base_params * tp == total + (tp - 1) * norms);
    CHECK(mem.weights == static_cast<std::uint64_t>(mem.base_params) * 4);
  }
  // pp: the busiest stage holds at least 1/pp of the model and less than the whole.
  const TrainMemory pp8 = train_memory(m, a, {1, 8, 1}, {.seq = 128, .micro_batch = 1}, Backend::Cpu);
  CHECK(pp8.base_params * 8 >= total);
  CHECK(pp8.base_params < total / 4);
  const TrainMemory one = train_memory(m, a, {1, 1, 1}, {.seq = 128, .micro_batch = 1}, Backend::Cpu);
  CHECK(one.base_params == total);
}

TEST_CASE("--adapter parsing") {
  const adapters::AdapterConfig l = spec("lora:r=16,alpha=32,targets=q+k+v");
  CHECK(l.kind == adapters::AdapterKind::Lora);
  CHECK(l.lora.r == 16);
  CHECK(l.lora.alpha == 32.0);
  CHECK(l.lora.targets == std::vector<std::string>{"q", "k", "v"});
  const adapters::AdapterConfig b = spec("bottleneck:64");
  CHECK(b.kind == adapters::AdapterKind::Bottleneck);
  CHECK(b.bottleneck.size == 64);
  CHECK(spec("lora:r=4/bottleneck:8").kind == adapters::AdapterKind::LoraBottleneck);
  for (const char* bad :
       {"", "lora", "lora:16", "lora:r=0", "lora:r=4,targets=q+x", "lora:r=4,rank=2", "bottleneck:", "bottleneck:-3",
        "bottleneck:8,placement=middle", "prefix:8", "lora:r=4/lora:r=8", "lora:r=4,dropout=1.5"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(spec(bad), doctest::Contains("--adapter"), ConfigError);
    CHECK_THROWS_WITH_AS(spec(bad), doctest::Contains("accepted forms"), ConfigError);
  }
  CHECK_THROWS_WITH_AS(spec("lora:r=4,targets=q+gat"), doctest::Contains("did you mean 'gate'"), ConfigError);
}

TEST_CASE("layouts are those comm::ProcessGrid accepts") {
  const model::LlamaConfig m70 = model::llama_config_preset("llama-3.1-70b");
  for (const int gpus : {1, 6, 8, 32}) {
    const std::vector<Layout> ls = valid_layouts(m70, gpus);
    REQUIRE(!ls.empty());
    for (const Layout& l : ls) {
      CHECK(l.world() == gpus);
      CHECK_NOTHROW(comm::ProcessGrid::make(
          gpus, l.tp, l.pp, {.n_heads = m70.n_heads, .n_kv_heads = m70.n_kv_heads, .n_layers = m70.n_layers}));
    }
  }
  // 70B has 8 KV heads: tp in {1, 2, 4, 8} on 8 GPUs, each with every pp dividing the rest.
  CHECK(valid_layouts(m70, 8).size() == 4 + 3 + 2 + 1);
  CHECK_THROWS_AS(valid_layouts(m70, 0), ConfigError);
}

TEST_CASE("unknown presets and bad job values name the flag") {
  CHECK_THROWS_WITH_AS(gpu_preset("a100"), doctest::Contains("--gpu a100"), ConfigError);
  CHECK_THROWS_WITH_AS(network_preset("hrd"), doctest::Contains("did you mean 'hdr'"), ConfigError);
  CHECK_THROWS_WITH_AS(link_preset_gbps("nvlink"), doctest::Contains("nvlink3"), ConfigError);
  PlanRequest req;
  req.model = model::llama_config_preset("tiny");
  req.adapter = spec("lora:r=2");
  req.cluster.gpu = gpu_preset("h100-sxm");
  req.train.seq = 0;
  CHECK_THROWS_WITH_AS(make_plan(req), doctest::Contains("--seq 0"), ConfigError);
  req.train.seq = 16;
  req.layout = Layout{3, 1, 1};
  CHECK_THROWS_WITH_AS(make_plan(req), doctest::Contains("layouts that work"), ConfigError);
}

// Generation: the activations are those of one prefill piece (adapt_gen's runtime.prefill_chunk), and
// where no layout holds the whole KV cache the plan says how many layers adapt_gen's spill keeps on the
// GPU: those that fit in the usable memory beside the weights, adapter and activations, less the two
// staging layers (generate::kv_device_layers_fit's rule).
TEST_CASE("generation memory: prefill pieces, and the KV cache's spill when it does not fit") {
  const model::LlamaConfig m = model::llama_config_preset("llama-3.1-70b");
  const adapters::AdapterConfig a = spec("lora:r=16");
  const Layout tp8{8, 1, 1};
  // An f32 cache (runtime.kv_cache_dtype = "f32", adapt_plan --kv-dtype f32), which does not fit.
  GenJob whole{.batch = 8, .context = 131072, .kv_bytes = 4, .prefill_chunk = 0};
  GenJob pieces = whole;
  pieces.prefill_chunk = 512;
  const GenMemory gw = gen_memory(m, a, tp8, whole, Backend::Gpu), gp = gen_memory(m, a, tp8, pieces, Backend::Gpu);
  CHECK(gp.kv_cache == gw.kv_cache);
  CHECK(gp.kv_cache == 80ull << 30);  // 80 layers × 8 × 131072 × 1 KV head × 128 × 4 bytes
  // The GPU default: bf16 (adapt_gen's "auto" with bf16 weights); the CPU keeps f32.
  GenJob default_cache = pieces;
  default_cache.kv_bytes = 0;
  const GenMemory gb = gen_memory(m, a, tp8, default_cache, Backend::Gpu);
  CHECK(gb.kv_cache * 2 == gp.kv_cache);
  CHECK(gen_memory(m, a, tp8, default_cache, Backend::Cpu).kv_cache == gp.kv_cache);
  CHECK(gb.activations == gp.activations);       // the activations stay f32
  CHECK(gp.activations * 100 < gw.activations);  // 512 of 131072 tokens

  PlanRequest req;
  req.model = m;
  req.adapter = a;
  req.cluster.gpu = gpu_preset("a100-80gb-sxm");
  req.gpus = 8;
  req.train.seq = 4096;
  req.train.micro_batch = 1;
  req.gen = pieces;
  req.layout = tp8;
  const PlanResult p = make_plan(req);
  CHECK(p.gen_pick < 0);
  const std::uint64_t room = p.usable_bytes() - gp.beside_kv();
  CHECK(gp.libraries == 32ull << 20);                                              // cuBLASLt's workspace
  const std::int64_t on_gpu = static_cast<std::int64_t>(room / (1ull << 30)) - 2;  // 1 GiB per layer
  const std::string text = plan_text(p);
  CHECK_MESSAGE(
      text.find(fmt::format("runtime.kv_device_layers = {}: {} of 80 layers", on_gpu, on_gpu)) != std::string::npos,
      text);
  CHECK(text.find(fmt::format("{}.00 GiB per GPU in host RAM", 80 - on_gpu)) != std::string::npos);
  // A conversation kept with output.conversation_kv: 2 × 80 layers × 8 KV heads × 128 × 4 bytes a token.
  CHECK_MESSAGE(text.find("a conversation of 131072 tokens kept between jobs (adapt_gen's output.conversation_kv): "
                          "80.00 GiB on disk, 640.00 KiB a token") != std::string::npos,
                text);
}

// bf16 copies of GEMM and attention operands: a GPU pass with f32 activations and bf16 weights casts them
// outside its workspaces; a bf16-activation pass and the CPU do not. They count in the device totals.
TEST_CASE("bf16 operand copies: counted for f32 activations on a GPU, in the totals; none with bf16 activations") {
  const model::LlamaConfig m = model::llama_config_preset("llama-3.1-8b");
  const adapters::AdapterConfig a = spec("lora:r=16,targets=all");
  const Layout one{1, 1, 1};
  const TrainJob f32_acts{.seq = 2048, .micro_batch = 1};
  TrainJob bf16_acts = f32_acts;
  bf16_acts.act_bytes = 2;
  const TrainMemory gpu = train_memory(m, a, one, f32_acts, Backend::Gpu);
  const std::uint64_t N = 2048, C = 4096, F = 14336, HD = 32 * 128, KVD = 8 * 128;
  // The casts of the normed input are released before down's input is cast, so here the attention
  // backward's bf16 dout, q, k, v, out, dq, dk and dv are the most alive at once.
  CHECK(gpu.operand_copies == 2 * 4 * (N * HD + N * KVD));
  CHECK(gpu.operand_copies > 2 * std::max(N * C, N * F));
  CHECK(gpu.operand_copies < gpu.activations.total() / 10);
  CHECK(train_memory(m, a, one, bf16_acts, Backend::Gpu).operand_copies == 0);
  CHECK(train_memory(m, a, one, f32_acts, Backend::Cpu).operand_copies == 0);
  TrainMemory without = gpu;
  without.operand_copies = 0;
  CHECK(gpu.device_total() == without.device_total() + gpu.operand_copies);
  const GenMemory g = gen_memory(m, a, one, {.batch = 1, .context = 4096, .prefill_chunk = 512}, Backend::Gpu);
  CHECK(g.operand_copies == 2 * 512 * F);  // a prefill piece's largest: down's input, cast alone
  GenMemory g0 = g;
  g0.operand_copies = 0;
  CHECK(g.beside_kv() == g0.beside_kv() + g.operand_copies);
  CHECK(gen_memory(m, a, one, {.batch = 1, .context = 4096, .act_bytes = 2}, Backend::Gpu).operand_copies == 0);
}

// runtime.weights_device_layers (adapt_plan --weights-device-layers): the streamed layers' weights
// leave the GPU for host RAM, two slots of one layer each stay; their copies bound the step from below;
// and where nothing fits with every layer on the GPU the plan finds the largest N that does.
TEST_CASE("streamed base weights: layers in host RAM, two slots on the GPU, the copies' time, the largest N") {
  const model::LlamaConfig m = model::llama_config_preset("llama-3.1-8b");
  const adapters::AdapterConfig a = spec("lora:r=16");
  const Layout one{1, 1, 1};
  // One layer of 8B in bf16: C·(2·H·D + 2·Hkv·D + 3·F) parameters and two f32 norms.
  const std::uint64_t layer = (4096ull * (2 * 4096 + 2 * 1024 + 3 * 14336)) * 2 + 2 * 4096 * 4;
  CHECK(streamed_weights(m, one, 0, parallel::kTrainSplit, -1, 2).layers == 0);
  CHECK(streamed_weights(m, one, 0, parallel::kTrainSplit, 32, 2).layers == 0);
  CHECK(streamed_weights(m, one, 0, parallel::kTrainSplit, 40, 2).host == 0);
  const StreamedWeights s9 = streamed_weights(m, one, 0, parallel::kTrainSplit, 9, 2);
  CHECK(s9.layers == 23);
  CHECK(s9.host == 23 * layer);
  CHECK(s9.slots == 2 * layer);
  CHECK(streamed_weights(m, one, 0, parallel::kTrainSplit, 31, 2).slots == layer);  // one streamed layer, one slot
  // tp2: each rank streams its half of the projections, the norms whole.
  CHECK(streamed_weights(m, {2, 1, 1}, 0, parallel::kTrainSplit, 0, 2).host ==
        32 * ((4096ull * (2 * 2048 + 2 * 512 + 3 * 7168)) * 2 + 2 * 4096 * 4));

  TrainJob job{.seq = 2048, .micro_batch = 1, .recompute = true, .offload = true};
  const TrainMemory whole = train_memory(m, a, one, job, Backend::Gpu);
  job.weights_device_layers = 9;
  const TrainMemory part = train_memory(m, a, one, job, Backend::Gpu);
  CHECK(part.weights == whole.weights - 23 * layer + 2 * layer);
  CHECK(part.host_total() == whole.host_total() + 23 * layer);
  CHECK(part.device_total() + 21 * layer == whole.device_total());
  // The CPU backend keeps its weights in host memory anyway: nothing streams.
  CHECK(train_memory(m, a, one, job, Backend::Cpu).streamed.layers == 0);

  Cluster cl;
  cl.gpu = gpu_preset("rtx3080-10gb");
  const StepTime t = train_step_time(m, a, one, job, cl);
  CHECK(t.stream_s == doctest::Approx(2.0 * 23 * layer / 25e9));  // a forward and a backward over PCIe 4
  CHECK(t.step_s >= t.stream_s);
  CHECK(t.step_s >= t.compute_s);
  CHECK(train_step_time(m, a, one, {.seq = 2048, .micro_batch = 1}, cl).stream_s == 0);

  PlanRequest req;
  req.model = m;
  req.model_name = "llama-3.1-8b";
  req.adapter = a;
  req.cluster = cl;
  req.gpus = 1;
  req.train = {.seq = 2048, .micro_batch = 1, .offload = true};
  req.gen = {.batch = 1, .context = 2048};
  const PlanResult p = make_plan(req);
  REQUIRE(p.train_pick < 0);  // 15 GiB of bf16 weights on a 10 GiB card
  REQUIRE(p.gen_pick < 0);
  REQUIRE(p.stream_train_layers > 0);
  REQUIRE(p.stream_gen_layers > 0);
  const std::string text = plan_text(p);
  CHECK_MESSAGE(text.find(fmt::format("adapt_plan --weights-device-layers {} shows it", p.stream_train_layers)) !=
                    std::string::npos,
                text);
  const nlohmann::json j = nlohmann::json::parse(plan_json(p));
  CHECK(j["stream_train_layers"] == p.stream_train_layers);
  CHECK(j["stream_gen_layers"] == p.stream_gen_layers);
  // The largest N: with it a layout fits, with one more layer none does.
  for (const bool train : {true, false}) {
    CAPTURE(train);
    const std::int64_t n = train ? p.stream_train_layers : p.stream_gen_layers;
    PlanRequest with = req;
    with.train.weights_device_layers = with.gen.weights_device_layers = n;
    const PlanResult ok = make_plan(with);
    CHECK((train ? ok.train_pick : ok.gen_pick) >= 0);
    with.train.weights_device_layers = with.gen.weights_device_layers = n + 1;
    const PlanResult over = make_plan(with);
    CHECK((train ? over.train_pick : over.gen_pick) < 0);
    if (train)
      CHECK_MESSAGE(plan_text(ok).find(fmt::format("[runtime] weights_device_layers = {}", n)) != std::string::npos,
                    plan_text(ok));
  }
}

// The GPU presets behind adapt_train's MFU, found from the names the CUDA driver gives.
TEST_CASE("gpu_preset_of_device: A100, H100, H200 and RTX 3080 names; nothing for other GPUs") {
  const auto peak = [](const std::string& name) {
    const std::optional<plan::GpuSpec> g = plan::gpu_preset_of_device(name);
    return g ? g->name : std::string("none");
  };
  CHECK(peak("NVIDIA A100-SXM4-80GB (sm_80, 79.3 GiB)") == "a100-80gb-sxm");
  CHECK(peak("NVIDIA A100-SXM4-40GB (sm_80, 39.4 GiB)") == "a100-40gb-sxm");
  CHECK(peak("NVIDIA A100 80GB PCIe (sm_80, 79.2 GiB)") == "a100-80gb-pcie");
  CHECK(peak("NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)") == "h100-sxm");
  CHECK(peak("NVIDIA H100 PCIe (sm_90, 79.1 GiB)") == "h100-pcie");
  CHECK(peak("NVIDIA H200 (sm_90, 139.8 GiB)") == "h200-sxm");
  CHECK(peak("NVIDIA GeForce RTX 3080 (sm_86, 9.8 GiB)") == "rtx3080-10gb");
  CHECK(peak("NVIDIA L40S (sm_89, 44.4 GiB)") == "none");
  CHECK(plan::gpu_preset_of_device("NVIDIA A100-SXM4-80GB")->bf16_tflops == 312);
}

// What the recommendation asks for is what the plan checked: with pp > 1 the fastest fit is sized at
// grad_accum = pp (the micro-batches the 1F1B schedule keeps in flight), so a recommended pipeline job
// fits as written, and its planned step is the one printed.
TEST_CASE("recommendation: a pipeline's fit at grad_accum >= pp; the printed step is the recommended setting's") {
  PlanRequest req;
  req.model = model::llama_config_preset("llama-3.1-70b");
  req.model_name = "llama-3.1-70b";
  req.adapter = spec("lora:r=16");
  req.gpus = 8;
  req.cluster.gpu = gpu_preset("a100-80gb-sxm");
  req.cluster.network = network_preset("hdr");
  req.train.seq = 8192;
  req.train.micro_batch = 1;
  req.gen.context = 8192;
  req.gen.batch = 1;
  const PlanResult p = make_plan(req);
  int pipelines = 0;
  for (const LayoutPlan& lp : p.layouts) {
    if (lp.best_micro_batch == 0) continue;
    CAPTURE(lp.layout.str());
    CHECK(lp.best_grad_accum == std::max<std::int64_t>(1, lp.layout.pp));
    TrainJob j = req.train;
    j.micro_batch = lp.best_micro_batch;
    j.recompute = lp.best_recompute;
    j.grad_accum = lp.best_grad_accum;
    CHECK(train_memory(req.model, req.adapter, lp.layout, j, Backend::Gpu).device_total() <= p.usable_bytes());
    CHECK(lp.best_time.step_s == train_step_time(req.model, req.adapter, lp.layout, j, req.cluster).step_s);
    pipelines += lp.layout.pp > 1 ? 1 : 0;
  }
  CHECK(pipelines > 0);
  REQUIRE(p.train_pick >= 0);
  const LayoutPlan& pick = p.layouts[static_cast<std::size_t>(p.train_pick)];
  const std::string text = plan_text(p);
  CHECK(text.find(fmt::format("{:.0f} tokens/s):", pick.best_time.tokens_per_s)) != std::string::npos);
  CHECK(nlohmann::json::parse(plan_json(p))["layouts"][p.train_pick]["best"]["step_s"].get<double>() ==
        pick.best_time.step_s);

  // Generation: the pick decodes within 5% of the fastest layout and holds the most sequences of those.
  REQUIRE(p.gen_pick >= 0);
  const LayoutPlan& g = p.layouts[static_cast<std::size_t>(p.gen_pick)];
  for (const LayoutPlan& lp : p.layouts) {
    if (!lp.gen_fits) continue;
    CAPTURE(lp.layout.str());
    CHECK(g.decode.tokens_per_s >= 0.95 * lp.decode.tokens_per_s);
    if (lp.decode.tokens_per_s >= 0.95 * g.decode.tokens_per_s)
      CHECK(g.gen_max_batch * g.layout.dp >= lp.gen_max_batch * lp.layout.dp);
  }
}

// The step-time terms: tp inside the bubble, attention's backward at 2.5× its forward (and 2× in MFU's
// model FLOPs), decoding's per-collective latency and f32 hidden states.
TEST_CASE("step and decode time: their terms") {
  const model::LlamaConfig m = model::llama_config_preset("llama-3.1-70b");
  const adapters::AdapterConfig a = spec("lora:r=16");
  Cluster cl;
  cl.gpu = gpu_preset("a100-80gb-sxm");
  cl.network = network_preset("hdr");
  TrainJob j;
  j.seq = 8192;
  j.micro_batch = 1;
  j.grad_accum = 4;
  const StepTime t = train_step_time(m, a, Layout{2, 4, 1}, j, cl);
  CHECK(t.bubble == doctest::Approx(7.0 / 4.0));
  CHECK(t.step_s == doctest::Approx((std::max(t.compute_s, t.stream_s) + t.tp_s) * t.bubble + t.pp_s + t.dp_s));
  // Attention's share of the FLOPs per token and layer: 2·H·D·T forward; MFU counts 2× that backward,
  // the step time 2.5×.
  const double attn = 2.0 * static_cast<double>(m.n_heads * m.head_dim * j.seq);
  const double per_token_short = train_model_flops_per_token(m, a, 1);
  CHECK(train_model_flops_per_token(m, a, j.seq) - per_token_short ==
        doctest::Approx(3.0 * attn * m.n_layers * (1.0 - 1.0 / static_cast<double>(j.seq))));
  const StepTime t1 = train_step_time(m, a, Layout{8, 1, 1}, j, cl);
  TrainJob shortj = j;
  shortj.seq = 1;
  shortj.micro_batch = j.seq;  // the same tokens, no attention span
  const StepTime t0 = train_step_time(m, a, Layout{8, 1, 1}, shortj, cl);
  CHECK(t1.flops - t0.flops == doctest::Approx(3.5 * attn * m.n_layers * (1.0 - 1.0 / static_cast<double>(j.seq)) *
                                               static_cast<double>(j.seq * j.grad_accum) / 8));

  GenJob g;
  g.batch = 4;
  g.context = 4096;
  const DecodeTime d1 = decode_step_time(m, Layout{8, 1, 1}, g, cl);
  Cluster slow = cl;
  slow.collective_latency_s += 10e-6;
  CHECK(decode_step_time(m, Layout{8, 1, 1}, g, slow).step_s - d1.step_s == doctest::Approx(2.0 * m.n_layers * 10e-6));
  CHECK(decode_step_time(m, Layout{1, 2, 4}, g, slow).step_s - decode_step_time(m, Layout{1, 2, 4}, g, cl).step_s ==
        doctest::Approx(10e-6));
}
