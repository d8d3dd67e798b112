// inputs/cluster/: the example jobs for Llama 3.1 70B on one node of 8 × A100 80 GB parse with adapt_train's
// and adapt_gen's schemas, name a layout that the 70B shapes allow on 8 ranks, and fit: adapt_plan's memory
// for every rank of that layout (training: the job's micro-batch per replica, recomputation, offload and
// ZeRO-1 settings; generation: batch_size rows of Llama 3.1's whole context) is within the usable 90% of
// the GPU. The layouts are also the ones adapt_plan recommends for these jobs, as the files say.
#include <doctest/doctest.h>

#include "config/config_binder.h"
#include "config/gen_config_schema.h"
#include "config/train_config_schema.h"
#include "model/llama_config.h"
#include "plan/plan_report.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::plan;

namespace {

constexpr int kGpus = 8;

PlanRequest request_70b(const adapters::AdapterConfig& adapter) {
  PlanRequest req;
  req.model_name = "llama-3.1-70b";
  req.model = model::llama_config_preset("llama-3.1-70b");
  req.adapter = adapter;
  req.gpus = kGpus;
  req.cluster.gpu = gpu_preset("a100-80gb-sxm");
  req.cluster.network = network_preset("hdr");
  return req;
}

Layout layout_of(std::int64_t tp, std::int64_t pp) {
  REQUIRE(tp * pp > 0);
  REQUIRE(kGpus % (tp * pp) == 0);
  return {.tp = static_cast<int>(tp), .pp = static_cast<int>(pp), .dp = static_cast<int>(kGpus / (tp * pp))};
}

// The training job in `name`: its layout fits every rank and is the recommended one.
void check_train_example(const char* name) {
  CAPTURE(name);
  const train::TrainConfig c =
      config::load(test::source_dir() / "inputs/cluster" / name, config::train_config_schema(), {});
  CHECK(c.runtime.device == "cuda");
  const Layout lay = layout_of(c.parallel.tp, c.parallel.pp);
  REQUIRE(c.train.micro_batch % lay.dp == 0);  // adapt_train's rule: micro_batch counts every replica's sequences
  PlanRequest req = request_70b(c.adapter);
  req.train = {.seq = c.data.seq_len,
               .micro_batch = c.train.micro_batch / lay.dp,
               .grad_accum = c.train.grad_accum,
               .recompute = c.train.recompute,
               .shard_saved_inputs = c.train.shard_saved_inputs,
               .bf16_saved_inputs = c.train.saved_inputs_dtype == "bf16",
               .zero1 = c.parallel.zero1,
               .offload = c.optim.offload};
  req.gen = {.batch = 1, .context = c.data.seq_len};
  req.layout = lay;
  const PlanResult only = make_plan(req);
  REQUIRE(only.layouts.size() == 1);  // make_plan keeps the layout only when the 70B shapes allow it
  const LayoutPlan& p = only.layouts[0];
  MESSAGE("tp" << lay.tp << " x pp" << lay.pp << " x dp" << lay.dp << ": " << p.mem.device_total() / double(1 << 30)
               << " GiB on the busiest GPU of " << only.usable_bytes() / double(1 << 30) << " usable");
  CHECK(p.fits);
  for (const TrainMemory& r : train_memory_ranks(req.model, req.adapter, lay, req.train, Backend::Gpu)) {
    CAPTURE(r.tp_rank);
    CAPTURE(r.pp_rank);
    CHECK(r.device_total() <= only.usable_bytes());
  }
  // The recommendation over every layout of the 8 GPUs at this job.
  req.layout.reset();
  const PlanResult all = make_plan(req);
  REQUIRE(all.train_pick >= 0);
  const Layout pick = all.layouts[static_cast<std::size_t>(all.train_pick)].layout;
  CHECK(pick.str() == lay.str());
}

}  // namespace

TEST_CASE("inputs/cluster/train-llama-3.1-70b.toml: its layout fits 8 x A100 80 GB and is adapt_plan's pick") {
  check_train_example("train-llama-3.1-70b.toml");
}

TEST_CASE("inputs/cluster/train-llama-3.1-70b-long.toml: 65,536-token sequences fit at tp8; adapt_plan's pick") {
  check_train_example("train-llama-3.1-70b-long.toml");
}

TEST_CASE("inputs/cluster/train-llama-3.1-70b-128k.toml: 131,072-token sequences fit at tp8 with bf16 inputs") {
  check_train_example("train-llama-3.1-70b-128k.toml");
}

TEST_CASE("adapt_plan's longest training sequence for Llama 3.1 70B on 8 x A100 80 GB: it fits, 1,024 more do not") {
  PlanRequest req = request_70b(parse_adapter_spec("lora:r=16,targets=all"));  // train-llama-3.1-70b-long.toml's
  req.train = {.seq = 8192, .micro_batch = 1, .recompute = true, .offload = true};
  req.gen = {.batch = 1, .context = 8192};
  const PlanResult p = make_plan(req);
  REQUIRE(p.longest_train_seq_layout >= 0);
  const Layout lay = p.layouts[static_cast<std::size_t>(p.longest_train_seq_layout)].layout;
  MESSAGE("longest: " << p.longest_train_seq << " tokens at " << lay.str());
  CHECK(p.longest_train_seq % PlanResult::kSeqStep == 0);
  CHECK(p.longest_train_seq >= 65536);  // the long example's sequences
  auto total = [&](const Layout& l, std::int64_t seq) {
    TrainJob j = req.train;
    j.seq = seq;
    j.grad_accum = std::max<std::int64_t>(j.grad_accum, l.pp);
    return train_memory(req.model, req.adapter, l, j, Backend::Gpu).device_total();
  };
  CHECK(total(lay, p.longest_train_seq) <= p.usable_bytes());
  for (const LayoutPlan& lp : p.layouts) {
    CAPTURE(lp.layout.str());
    CHECK(total(lp.layout, p.longest_train_seq + PlanResult::kSeqStep) > p.usable_bytes());
  }
  // Without sharded layer inputs the longest is far shorter (every tp rank keeps each layer's input whole).
  req.train.shard_saved_inputs = false;
  const PlanResult whole = make_plan(req);
  MESSAGE("with whole layer inputs: " << whole.longest_train_seq << " tokens");
  CHECK(whole.longest_train_seq < p.longest_train_seq / 2);
}

TEST_CASE("inputs/cluster/generate-llama-3.1-70b.toml: batch_size rows of the whole context fit; adapt_plan's pick") {
  const generate::GenJob j =
      config::load(test::source_dir() / "inputs/cluster/generate-llama-3.1-70b.toml", config::gen_job_schema(), {});
  CHECK(j.runtime.device == "cuda");
  CHECK(j.model.adapter.has_value());
  const model::LlamaConfig m = model::llama_config_preset("llama-3.1-70b");
  REQUIRE(j.defaults.max_new_tokens < m.max_position_embeddings);  // room for a prompt in Llama 3.1's context
  const Layout lay = layout_of(j.parallel.tp, j.parallel.pp);
  PlanRequest req = request_70b(parse_adapter_spec("lora:r=16,targets=all"));  // train-llama-3.1-70b.toml's
  req.train = {.seq = 8192, .micro_batch = 1, .recompute = true, .offload = true};
  req.gen = {
      .batch = j.runtime.batch_size, .context = m.max_position_embeddings, .prefill_chunk = j.runtime.prefill_chunk};
  req.layout = lay;
  const PlanResult only = make_plan(req);
  REQUIRE(only.layouts.size() == 1);
  const LayoutPlan& p = only.layouts[0];
  MESSAGE("tp" << lay.tp << " x pp" << lay.pp << " x dp" << lay.dp << ": " << p.gen.device_total() / double(1 << 30)
               << " GiB per GPU with " << j.runtime.batch_size << " rows of " << m.max_position_embeddings
               << " positions; up to " << p.gen_max_batch << " rows fit");
  CHECK(p.gen_fits);
  CHECK(p.gen_max_batch >= j.runtime.batch_size);
  req.layout.reset();
  const PlanResult all = make_plan(req);
  REQUIRE(all.gen_pick >= 0);
  CHECK(all.layouts[static_cast<std::size_t>(all.gen_pick)].layout.str() == lay.str());
}
