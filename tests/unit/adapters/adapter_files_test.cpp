// PEFT and AdapterHub folders: exported names, shapes, metadata and config fields exactly as
// SPEC-llama.md §5.2–5.3 / §6.4 give them; export → import round trips (f32 bit-exact, bf16 rounded);
// load errors for a wrong base model and for features adapt does not implement.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;
using json = nlohmann::json;
using model::BlockSite;
using model::WeightKind;

namespace {

void randomize(AdapterSet& set, std::uint64_t stream) {
  for (AdapterParam& p : set.parameters()) test::fill_uniform(p.value, ++stream, -1.0, 1.0);
}

void check_same_params(const AdapterSet& a, const AdapterSet& b) {
  const std::vector<AdapterParam> pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(pa[i].name);
    CHECK(pa[i].name == pb[i].name);
    CHECK(test::bit_equal(pa[i].value, pb[i].value));
  }
}

std::map<std::string, Shape> tensor_shapes(const fs::path& file) {
  const io::SafetensorsFile f(file);
  std::map<std::string, Shape> shapes;
  for (const io::TensorInfo& t : f.tensors()) {
    shapes[t.name] = t.shape;
    CHECK(t.dtype_name == "F32");
  }
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  return shapes;
}

std::set<std::string> keys_of(const json& j) {
  std::set<std::string> k;
  for (const auto& [key, v] : j.items()) k.insert(key);
  return k;
}

AdapterConfig lora_cfg() {
  AdapterConfig c;
  c.kind = AdapterKind::Lora;
  c.lora.r = 4;
  c.lora.alpha = 8;
  c.lora.dropout = 0.05;
  c.lora.targets = {"v", "q", "down"};
  c.layers = {0, 2};
  return c;
}

AdapterConfig bn_cfg(BnPlacement placement, bool ln_before) {
  AdapterConfig c;
  c.kind = AdapterKind::Bottleneck;
  c.name = "code_bn";
  c.bottleneck.size = 6;
  c.bottleneck.placement = placement;
  c.bottleneck.activation = BnActivation::Gelu;
  c.bottleneck.scaling = 4.0;
  c.bottleneck.ln_before = ln_before;
  c.last_n = 2;
  return c;
}

}  // namespace

TEST_CASE("LoRA exports PEFT's names, shapes and config, and loads back bit for bit") {
  test::TempDir dir;
  const model::LlamaConfig tiny = test::tiny_llama();
  AdapterSet set(tiny, lora_cfg());
  randomize(set, 4000);
  adapter_export(set, dir.path(), {.base_model = "meta-llama/Llama-3.1-8B"});

  const std::map<std::string, Shape> shapes = tensor_shapes(dir / "adapter_model.safetensors");
  std::map<std::string, Shape> expected;
  for (const int l : {0, 2}) {
    const std::string p = "base_model.model.model.layers." + std::to_string(l);
    expected[p + ".self_attn.q_proj.lora_A.weight"] = Shape{4, 16};
    expected[p + ".self_attn.q_proj.lora_B.weight"] = Shape{16, 4};
    expected[p + ".self_attn.v_proj.lora_A.weight"] = Shape{4, 16};
    expected[p + ".self_attn.v_proj.lora_B.weight"] = Shape{8, 4};
    expected[p + ".mlp.down_proj.lora_A.weight"] = Shape{4, 24};
    expected[p + ".mlp.down_proj.lora_B.weight"] = Shape{16, 4};
  }
  CHECK(shapes == expected);
  CHECK(peft_tensor_name(3, WeightKind::WGate, 'B') == "base_model.model.model.layers.3.mlp.gate_proj.lora_B.weight");

  const std::string text = file_read_text(dir / "adapter_config.json");
  const json j = json::parse(text);
  CHECK(keys_of(j) == std::set<std::string>{"peft_type", "task_type", "base_model_name_or_path", "revision",
                                            "inference_mode", "r", "lora_alpha", "lora_dropout", "target_modules",
                                            "bias", "fan_in_fan_out", "use_rslora", "use_dora", "init_lora_weights",
                                            "modules_to_save", "layers_to_transform", "layers_pattern", "rank_pattern",
                                            "alpha_pattern"});
  CHECK(j["peft_type"] == "LORA");
  CHECK(j["task_type"] == "CAUSAL_LM");
  CHECK(j["base_model_name_or_path"] == "meta-llama/Llama-3.1-8B");
  CHECK(j["inference_mode"] == true);
  CHECK(j["r"] == 4);
  CHECK(j["lora_alpha"].is_number_integer());
  CHECK(j["lora_alpha"] == 8);
  CHECK(j["lora_dropout"] == 0.05);
  CHECK(j["target_modules"] == json::array({"q_proj", "v_proj", "down_proj"}));
  CHECK(j["bias"] == "none");
  CHECK(j["use_dora"] == false);
  CHECK(j["init_lora_weights"] == true);
  CHECK(j["modules_to_save"].is_null());
  CHECK(j["layers_to_transform"] == json::array({0, 2}));
  CHECK(j["rank_pattern"] == json::object());
  // json.dumps(indent=2, sort_keys=True) layout.
  CHECK(text.rfind("{\n  \"alpha_pattern\": {},\n  \"base_model_name_or_path\": \"meta-llama/Llama-3.1-8B\",\n", 0) ==
        0);

  const AdapterSet back = adapter_load(dir.path(), tiny);
  CHECK(adapter_format_detect(dir.path()) == AdapterFormat::Peft);
  CHECK(back.kind() == AdapterKind::Lora);
  CHECK(back.layers() == std::vector<int>{0, 2});
  CHECK(back.config().lora.r == 4);
  CHECK(back.config().lora.alpha == 8.0);
  CHECK(back.config().lora.dropout == 0.05);
  CHECK(back.config().lora.targets == std::vector<std::string>{"q", "v", "down"});
  check_same_params(set, back);

  // bf16 in the file: values come back rounded to bf16.
  test::TempDir bdir;
  adapter_export(set, bdir.path(), {.dtype = DType::BF16});
  CHECK(json::parse(file_read_text(bdir / "adapter_config.json"))["base_model_name_or_path"].is_null());
  const AdapterSet bback = adapter_load(bdir.path(), tiny);
  const std::vector<AdapterParam> pa = set.parameters(), pb = bback.parameters();
  for (std::size_t i = 0; i < pa.size(); ++i)
    CHECK(test::bit_equal(pa[i].value.to_host(DType::BF16).to_host(DType::F32), pb[i].value));

  // rsLoRA, gaussian init and all layers: written and read back.
  AdapterConfig rs = lora_cfg();
  rs.layers.clear();
  rs.lora.use_rslora = true;
  rs.lora.init = LoraInit::Gaussian;
  rs.lora.alpha = 2.5;
  AdapterSet rset(tiny, rs);
  randomize(rset, 4100);
  test::TempDir rdir;
  adapter_export(rset, rdir.path());
  const json rj = json::parse(file_read_text(rdir / "adapter_config.json"));
  CHECK(rj["use_rslora"] == true);
  CHECK(rj["init_lora_weights"] == "gaussian");
  CHECK(rj["lora_alpha"] == 2.5);
  CHECK(rj["layers_to_transform"].is_null());
  const AdapterSet rback = adapter_load(rdir.path(), tiny);
  CHECK(rback.config().lora.use_rslora);
  CHECK(rback.layers() == std::vector<int>{0, 1, 2});
  CHECK(rback.lora(1, WeightKind::Wq)->scaling() == doctest::Approx(2.5 / 2.0));
  check_same_params(rset, rback);
}

TEST_CASE("bottleneck adapters export AdapterHub's layout and load back bit for bit") {
  const model::LlamaConfig tiny = test::tiny_llama();
  for (const auto& [pname, placement] : bn_placement_names())
    for (const bool ln : {false, true}) {
      CAPTURE(pname);
      CAPTURE(ln);
      test::TempDir dir;
      AdapterSet set(tiny, bn_cfg(placement, ln));
      randomize(set, 5000);
      adapter_export(set, dir.path(), {.base_model = "tiny"});

      std::map<std::string, Shape> expected;
      for (const int l : {1, 2})
        for (const BlockSite site : {BlockSite::Attention, BlockSite::Mlp}) {
          if (site == BlockSite::Attention && placement != BnPlacement::Houlsby) continue;
          const std::string p = adapterhub_tensor_prefix(l, site, "code_bn");
          CHECK(p == "model.layers." + std::to_string(l) +
                         (site == BlockSite::Attention ? ".attention_adapters" : ".output_adapters") +
                         ".adapters.code_bn.");
          const std::string lin = ln ? "adapter_down.1." : "adapter_down.0.";
          if (ln) {
            expected[p + "adapter_down.0.weight"] = Shape{16};
            expected[p + "adapter_down.0.bias"] = Shape{16};
            expected[p + "adapter_norm_before.weight"] = Shape{16};
            expected[p + "adapter_norm_before.bias"] = Shape{16};
          }
          expected[p + lin + "weight"] = Shape{6, 16};
          expected[p + lin + "bias"] = Shape{6};
          expected[p + "adapter_up.weight"] = Shape{16, 6};
          expected[p + "adapter_up.bias"] = Shape{16};
        }
      CHECK(tensor_shapes(dir / "adapter.safetensors") == expected);

      const json j = json::parse(file_read_text(dir / "adapter_config.json"));
      CHECK(keys_of(j) == std::set<std::string>{"config", "hidden_size", "model_class", "model_name", "model_type",
                                                "name", "version"});
      CHECK(j["hidden_size"] == 16);
      CHECK(j["model_class"] == "LlamaForCausalLM");
      CHECK(j["model_name"] == "tiny");
      CHECK(j["model_type"] == "llama");
      CHECK(j["name"] == "code_bn");
      CHECK(j["version"] == "adapters.1.2.0");
      const json& c = j["config"];
      CHECK(keys_of(c) == std::set<std::string>{"architecture",
                                                "mh_adapter",
                                                "output_adapter",
                                                "reduction_factor",
                                                "non_linearity",
                                                "original_ln_before",
                                                "original_ln_after",
                                                "ln_before",
                                                "ln_after",
                                                "init_weights",
                                                "init_weights_seed",
                                                "is_parallel",
                                                "scaling",
                                                "use_gating",
                                                "residual_before_ln",
                                                "adapter_residual_before_ln",
                                                "inv_adapter",
                                                "inv_adapter_reduction_factor",
                                                "cross_adapter",
                                                "leave_out",
                                                "dropout",
                                                "phm_layer",
                                                "phm_dim",
                                                "factorized_phm_W",
                                                "shared_W_phm",
                                                "shared_phm_rule",
                                                "factorized_phm_rule",
                                                "phm_c_init",
                                                "phm_init_range",
                                                "learn_phm",
                                                "hypercomplex_nonlinearity",
                                                "phm_rank",
                                                "phm_bias",
                                                "stochastic_depth"});
      CHECK(c["mh_adapter"] == (placement == BnPlacement::Houlsby));
      CHECK(c["output_adapter"] == true);
      CHECK(c["is_parallel"] == (placement == BnPlacement::Parallel));
      CHECK(c["original_ln_before"] == (placement == BnPlacement::Pfeiffer));
      CHECK(c["original_ln_after"] == true);
      CHECK(c["residual_before_ln"] == true);
      CHECK(c["ln_before"] == ln);
      CHECK(c["non_linearity"] == "gelu");
      CHECK(c["init_weights"] == "mam_adapter");
      CHECK(c["scaling"].is_number_float());
      CHECK(c["scaling"] == 4.0);
      CHECK(c["leave_out"] == json::array({0}));
      CHECK(python_floordiv(16.0, c["reduction_factor"].get<double>()) == 6.0);  // int(16 // rf) == m

      CHECK(adapter_format_detect(dir.path()) == AdapterFormat::AdapterHub);
      const AdapterSet back = adapter_load(dir.path(), tiny);
      CHECK(back.kind() == AdapterKind::Bottleneck);
      CHECK(back.config().name == "code_bn");
      CHECK(back.config().bottleneck.placement == placement);
      CHECK(back.config().bottleneck.activation == BnActivation::Gelu);
      CHECK(back.config().bottleneck.scaling == 4.0);
      CHECK(back.config().bottleneck.ln_before == ln);
      CHECK(back.layers() == std::vector<int>{1, 2});
      check_same_params(set, back);
    }
}

TEST_CASE("adapter_load explains wrong base models, unsupported features and broken folders") {
  const model::LlamaConfig tiny = test::tiny_llama();
  test::TempDir dir;
  AdapterSet set(tiny, lora_cfg());
  adapter_export(set, dir.path());

  // Another base model: every shape differs; the message names the tensor, both shapes and the hint.
  const model::LlamaConfig wide = test::tiny_llama(32);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), wide),
                       doctest::Contains("'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape "
                                         "(4, 16) but the base model expects (4, 32) (hint: maybe wrong base model?)"),
                       ShapeError);
  model::LlamaConfig shallow = tiny;
  shallow.n_layers = 2;
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), shallow), doctest::Contains("maybe wrong base model"), ShapeError);
  // An adapter that names its base model: the message quotes it.
  test::TempDir named;
  adapter_export(set, named.path(), {.base_model = "meta-llama/Llama-3.1-8B"});
  CHECK_THROWS_WITH_AS(adapter_load(named.path(), wide),
                       doctest::Contains("(hint: maybe wrong base model?) The adapter names its base model "
                                         "'meta-llama/Llama-3.1-8B'."),
                       ShapeError);

  test::TempDir bdir;
  adapter_export(AdapterSet(tiny, bn_cfg(BnPlacement::Pfeiffer, false)), bdir.path());
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), wide),
                       doctest::Contains("hidden_size 16 but the base model has hidden_size 32 (hint: maybe wrong base "
                                         "model?)"),
                       ShapeError);

  // Edited configs.
  const json peft = json::parse(file_read_text(dir / "adapter_config.json"));
  auto with = [&](const fs::path& d, json j) { file_write_atomic(d / "adapter_config.json", j.dump()); };
  json j = peft;
  j["use_dora"] = true;
  with(dir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("use_dora"), UnsupportedError);
  j = peft;
  j["rank_pattern"] = {{"q_proj", 8}};
  with(dir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("rank_pattern"), UnsupportedError);
  j = peft;
  j["r"] = 8;
  with(dir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("r = 8"), IoError);
  j = peft;
  j["target_modules"] = {"q_proj", "k_proj"};
  with(dir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("target_modules"), IoError);
  j = peft;
  j["target_modules"] = "all-linear";  // a string: the tensors decide
  with(dir.path(), j);
  CHECK_NOTHROW(adapter_load(dir.path(), tiny));
  j = peft;
  j["peft_type"] = "IA3";
  with(dir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("IA3"), UnsupportedError);
  j = peft;
  j["r"] = "4";
  with(dir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("\"r\" must be an integer"), IoError);
  with(dir.path(), peft);

  const json hub = json::parse(file_read_text(bdir / "adapter_config.json"));
  j = hub;
  j["config"]["scaling"] = "learned";
  with(bdir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), tiny), doctest::Contains("learned"), UnsupportedError);
  j = hub;
  j["config"]["use_gating"] = true;
  with(bdir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), tiny), doctest::Contains("use_gating"), UnsupportedError);
  j = hub;
  j["config"]["original_ln_before"] = false;  // a sequential adapter after the MLP reading f only
  with(bdir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), tiny), doctest::Contains("placements adapt implements"),
                       UnsupportedError);
  j = hub;
  j["config"]["non_linearity"] = "tanh";
  with(bdir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), tiny), doctest::Contains("tanh"), UnsupportedError);
  j = hub;
  j["config"]["leave_out"] = json::array();  // claims layer 0 too, which has no tensors
  with(bdir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), tiny),
                       doctest::Contains("'model.layers.0.output_adapters.adapters.code_bn.adapter_down.0.weight' is "
                                         "missing"),
                       IoError);
  j = hub;
  j["config"]["leave_out"] = {0, 1};  // layer 1's tensors are then unexpected
  with(bdir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), tiny), doctest::Contains("unexpected tensor"), IoError);
  j = hub;
  j["config"]["reduction_factor"] = {{"default", hub["config"]["reduction_factor"]}, {"2", 4.0}};
  with(bdir.path(), j);
  CHECK_THROWS_WITH_AS(adapter_load(bdir.path(), tiny), doctest::Contains("different widths"), UnsupportedError);
  j = hub;
  j["config"]["reduction_factor"] = {{"default", hub["config"]["reduction_factor"]}};
  with(bdir.path(), j);
  CHECK(adapter_load(bdir.path(), tiny).bottleneck(2, BlockSite::Mlp)->width() == 6);

  // Folders: missing, no config, pickle only, neither format.
  CHECK_THROWS_WITH_AS(adapter_load(dir / "nope", tiny), doctest::Contains("does not exist"), IoError);
  test::TempDir empty;
  CHECK_THROWS_WITH_AS(adapter_load(empty.path(), tiny), doctest::Contains("no adapter_config.json"), IoError);
  file_write_atomic(empty / "adapter_config.json", peft.dump());
  file_write_atomic(empty / "adapter_model.bin", "pickle");
  CHECK_THROWS_WITH_AS(adapter_load(empty.path(), tiny), doctest::Contains("PyTorch pickle"), IoError);
  file_write_atomic(empty / "adapter_config.json", "{\"r\": 4}");
  CHECK_THROWS_WITH_AS(adapter_load(empty.path(), tiny), doctest::Contains("neither a PEFT"), IoError);
  file_write_atomic(empty / "adapter_config.json", "{\"r\": ");
  CHECK_THROWS_WITH_AS(adapter_load(empty.path(), tiny), doctest::Contains("not valid JSON"), IoError);

  // A stray tensor in a PEFT file.
  test::TempDir stray;
  std::vector<io::TensorSource> tensors;
  const io::SafetensorsFile good(dir / "adapter_model.safetensors");
  for (const io::TensorInfo& t : good.tensors())
    tensors.push_back(io::tensor_source(good.read(t.name, DType::F32), t.name));
  tensors.push_back(io::tensor_source(Tensor::zeros({16}, DType::F32), "base_model.model.model.norm.weight"));
  io::safetensors_write(stray / "adapter_model.safetensors", tensors);
  file_write_atomic(stray / "adapter_config.json", peft.dump());
  CHECK_THROWS_WITH_AS(adapter_load(stray.path(), tiny),
                       doctest::Contains("unexpected tensor 'base_model.model.model.norm.weight'"), IoError);

  // Merged adapters and integer dtypes are not exported.
  AdapterSet m(tiny, lora_cfg());
  CHECK_THROWS_AS(adapter_export(m, empty.path(), {.dtype = DType::I32}), UnsupportedError);
}
