// The planner (src/plan) against the code it models: adapter parameter counts against
// adapters::AdapterSet (whole, and each tp rank's slices after shard_for_tp); the training-step
// activation bytes against the high-water marks llama_train_step's workspaces report (TrainResult::
// memory) for LoRA, bottleneck and both, with and without recomputation, chunked and whole logits, and
// a forward without backward; base weights per rank against the sum of the model's tensors; --adapter
// parsing and its errors; the layouts the planner considers against comm::ProcessGrid's rules.
#include "plan/plan.h"

#include <optional>
#include <doctest/doctest.h>

#include <numeric>

#include "adapters/adapter_set.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "model/llama_train.h"
#include "model/tensor_parallel.h"
#include "plan/plan_report.h"
#include "tests/support/rank_only_comm.h"
#include "tests/unit/model_train/train_test_util.h"

using namespace adapt;
using namespace adapt::plan;

namespace {

adapters::AdapterConfig spec(const std::string& s) { return parse_adapter_spec(s); }

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
  GenJob whole{.batch = 8, .context = 131072, .prefill_chunk = 0};
  GenJob pieces = whole;
  pieces.prefill_chunk = 512;
  const GenMemory gw = gen_memory(m, a, tp8, whole, Backend::Gpu), gp = gen_memory(m, a, tp8, pieces, Backend::Gpu);
  CHECK(gp.kv_cache == gw.kv_cache);
  CHECK(gp.kv_cache == 80ull << 30);  // 80 layers × 8 × 131072 × 1 KV head × 128 × 4 bytes
  GenJob bf16_cache = pieces;  // runtime.kv_cache_dtype = "bf16" (adapt_plan --kv-dtype bf16)
  bf16_cache.kv_bytes = 2;
  const GenMemory gb = gen_memory(m, a, tp8, bf16_cache, Backend::Gpu);
  CHECK(gb.kv_cache * 2 == gp.kv_cache);
  CHECK(gb.activations == gp.activations);  // the activations stay f32
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
  const std::uint64_t room = p.usable_bytes() - (gp.weights + gp.adapter + gp.activations);
  const std::int64_t on_gpu = static_cast<std::int64_t>(room / (1ull << 30)) - 2;  // 1 GiB per layer
  const std::string text = plan_text(p);
  CHECK_MESSAGE(text.find(fmt::format("runtime.kv_device_layers = {}: {} of 80 layers", on_gpu, on_gpu)) !=
                    std::string::npos,
                text);
  CHECK(text.find(fmt::format("{}.00 GiB per GPU in host RAM", 80 - on_gpu)) != std::string::npos);
  // A conversation kept with output.conversation_kv: 2 × 80 layers × 8 KV heads × 128 × 4 bytes a token.
  CHECK_MESSAGE(text.find("a conversation of 131072 tokens kept between jobs (adapt_gen's output.conversation_kv): "
                          "80.00 GiB on disk, 640.00 KiB a token") != std::string::npos,
                text);
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
