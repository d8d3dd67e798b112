// merged_model_write: base + LoRA as a new HF model folder. W' = W + s·B·A against an f64 reference in
// the base's dtype (f32 and bf16), every other tensor and config.json byte for byte, the base's shards
// and index kept, only config and tokenizer files copied; refusals (non-empty output, bottleneck and
// lora+bottleneck adapters, a wrong base) leave no output and no temporary folder behind.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "adapters/adapter_files.h"
#include "adapters/adapter_merge.h"
#include "core/error.h"
#include "core/file.h"
#include "dtype/dtype.h"
#include "io/sharded.h"
#include "model/model_folder.h"
#include "model/weight_names.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;
using model::WeightKind;

namespace {

/// A random tiny base in `dir` (sharded when max_shard_bytes is small) with tokenizer files and a
/// file that is not part of a model folder.
model::LlamaConfig make_base(const fs::path& dir, DType dtype, std::uint64_t max_shard_bytes) {
  model::LlamaConfig cfg = test::tiny_llama();
  model::random_model_write(dir, cfg, {.seed = 3, .dtype = dtype, .max_shard_bytes = max_shard_bytes});
  file_write_atomic(dir / "tokenizer.json", "{\"model\": {}}");
  file_write_atomic(dir / "tokenizer_config.json", "{}");
  file_write_atomic(dir / "consolidated.00.pth", "not part of an HF model folder");
  return model::llama_config_load(dir);
}

AdapterConfig lora_cfg() {
  AdapterConfig c;
  c.kind = AdapterKind::Lora;
  c.lora.r = 3;
  c.lora.alpha = 6.0;
  c.lora.targets = {"q", "v", "down"};
  c.layers = {0, 2};
  return c;
}

/// A LoRA adapter with random A and B exported into `dir`.
AdapterSet make_adapter(const model::LlamaConfig& cfg, const fs::path& dir, AdapterConfig ac = lora_cfg()) {
  AdapterSet set(cfg, ac);
  std::uint64_t stream = 40;
  for (AdapterParam& p : set.parameters()) test::fill_uniform(p.value, ++stream, -0.5, 0.5);
  adapter_export(set, dir);
  return set;
}

std::set<std::string> file_names(const fs::path& dir) {
  std::set<std::string> n;
  for (const auto& e : fs::directory_iterator(dir)) n.insert(e.path().filename().string());
  return n;
}

std::string raw(const io::ShardedSafetensors& st, const std::string& name) {
  const io::TensorInfo& info = st.info(name);
  std::string b(info.size_bytes(), '\0');
  st.file_of(name).read_bytes(name, 0, info.size_bytes(), b.data());
  return b;
}

/// No output folder and no temporary folder next to it.
void check_nothing_written(const fs::path& parent, const std::string& out_name) {
  CHECK_FALSE(fs::exists(parent / out_name));
  CHECK_FALSE(fs::exists(parent / ("." + out_name + ".tmp")));
}

}  // namespace

TEST_CASE("merged model: W + s·B·A in the base's dtype, the rest byte for byte, the base's shards and files") {
  for (const DType dtype : {DType::F32, DType::BF16}) {
    for (const std::uint64_t shard : {std::uint64_t{5'000'000'000}, std::uint64_t{3000}}) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(shard);
      test::TempDir tmp;
      const model::LlamaConfig cfg = make_base(tmp / "base", dtype, shard);
      const AdapterSet set = make_adapter(cfg, tmp / "adapter");
      const MergeReport r = merged_model_write(tmp / "base", tmp / "adapter", tmp / "merged");
      CHECK(r.n_sites == 6);
      CHECK_FALSE(fs::exists(tmp / ".merged.tmp"));

      // The same files, minus what is not part of a model folder.
      std::set<std::string> want = file_names(tmp / "base");
      want.erase("consolidated.00.pth");
      CHECK(file_names(tmp / "merged") == want);
      CHECK(want.count("model.safetensors.index.json") == (shard < 10000 ? 1u : 0u));
      CHECK(r.shards.size() == (shard < 10000 ? want.size() - 5 : 1u));  // shards + index + 4 copied files
      for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"})
        CHECK(file_read_text(tmp / "merged" / f) == file_read_text(tmp / "base" / f));

      const model::ModelCheckReport check = model::model_check(tmp / "merged");
      CHECK(check.dtypes == std::vector<std::string>{dtype == DType::F32 ? "F32" : "BF16"});
      CHECK(check.notes.empty());

      const io::ShardedSafetensors base(tmp / "base"), merged(tmp / "merged");
      CHECK(merged.tensor_names() == base.tensor_names());
      int changed = 0;
      for (const std::string& name : base.tensor_names()) {
        CAPTURE(name);
        CHECK(merged.info(name).dtype == base.info(name).dtype);
        CHECK(merged.file_of(name).path().filename() == base.file_of(name).path().filename());
        const LoraAdapter* ad = nullptr;
        for (const int layer : {0, 2})
          for (const WeightKind k : {WeightKind::Wq, WeightKind::Wv, WeightKind::WDown})
            if (name == model::weight_name(k, layer)) ad = set.lora(layer, k);
        if (!ad) {
          CHECK(raw(merged, name) == raw(base, name));
          continue;
        }
        const std::vector<double> W = test::to_f64(base.read(name, DType::F32));
        const std::vector<double> M = test::to_f64(merged.read(name, DType::F32));
        const std::vector<double> A = test::to_f64(ad->a), B = test::to_f64(ad->b);
        const std::int64_t out = ad->out(), in = ad->in(), rank = ad->rank();
        // The f32 product and sum round at 2^-24 relative to the magnitude of their terms (a few
        // roundings: 2^-21); bf16 storage then rounds the result to 8 significant bits (2^-9, taken as 2^-8).
        const double rel = dtype == DType::F32 ? 0.0 : 1.0 / 256;
        double worst = 0;
        for (std::int64_t o = 0; o < out; ++o)
          for (std::int64_t i = 0; i < in; ++i) {
            double d = 0, mag = 0;
            for (std::int64_t k = 0; k < rank; ++k) {
              d += B[o * rank + k] * A[k * in + i];
              mag += std::fabs(B[o * rank + k] * A[k * in + i]);
            }
            const double ref = W[o * in + i] + ad->scaling() * d;
            const double tol = std::ldexp(std::fabs(W[o * in + i]) + ad->scaling() * mag, -21) + rel * std::fabs(ref);
            worst = std::max(worst, std::fabs(M[o * in + i] - ref) - tol);
          }
        CHECK(worst <= 0.0);
        ++changed;
        CHECK(raw(merged, name) != raw(base, name));
      }
      CHECK(changed == 6);
    }
  }
}

TEST_CASE("merged model refusals leave nothing behind") {
  test::TempDir tmp;
  const model::LlamaConfig cfg = make_base(tmp / "base", DType::F32, 3000);
  make_adapter(cfg, tmp / "adapter");

  // An existing output folder: refused unless empty; an empty one is taken.
  fs::create_directories(tmp / "busy");
  file_write_atomic(tmp / "busy/keep.txt", "mine");
  CHECK_THROWS_WITH_AS(merged_model_write(tmp / "base", tmp / "adapter", tmp / "busy"), doctest::Contains("not empty"),
                       IoError);
  CHECK(file_names(tmp / "busy") == std::set<std::string>{"keep.txt"});
  CHECK_FALSE(fs::exists(tmp / ".busy.tmp"));
  fs::create_directories(tmp / "empty");
  CHECK(merged_model_write(tmp / "base", tmp / "adapter", tmp / "empty/").n_sites == 6);
  CHECK(fs::exists(tmp / "empty/config.json"));
  // replace: the run's own folder is replaced whole.
  CHECK(merged_model_write(tmp / "base", tmp / "adapter", tmp / "busy", {.replace = true}).n_sites == 6);
  CHECK_FALSE(fs::exists(tmp / "busy/keep.txt"));
  CHECK(fs::exists(tmp / "busy/model.safetensors.index.json"));
  CHECK_FALSE(fs::exists(tmp / ".busy.old"));
  CHECK_THROWS_WITH_AS(merged_model_write(tmp / "base", tmp / "adapter", tmp / "base"),
                       doctest::Contains("over its base"), IoError);

  // Bottleneck and lora+bottleneck adapters.
  AdapterConfig bn = lora_cfg();
  bn.kind = AdapterKind::Bottleneck;
  bn.bottleneck.size = 4;
  make_adapter(cfg, tmp / "bn", bn);
  CHECK_THROWS_WITH_AS(merged_model_write(tmp / "base", tmp / "bn", tmp / "out"), doctest::Contains("nonlinear"),
                       UnsupportedError);
  check_nothing_written(tmp.path(), "out");
  bn.kind = AdapterKind::LoraBottleneck;
  make_adapter(cfg, tmp / "both", bn);
  CHECK_THROWS_WITH_AS(merged_model_write(tmp / "base", tmp / "both", tmp / "out"),
                       doctest::Contains(("--adapter " + (tmp / "both/lora").string()).c_str()), UnsupportedError);
  check_nothing_written(tmp.path(), "out");
  CHECK(merged_model_write(tmp / "base", tmp / "both/lora", tmp / "out").n_sites == 6);  // the LoRA part alone

  // An adapter of another base model.
  test::TempDir other;
  make_adapter(test::tiny_llama(32), other / "adapter");
  CHECK_THROWS_WITH_AS(merged_model_write(tmp / "base", other / "adapter", tmp / "out2"),
                       doctest::Contains("maybe wrong base model"), ShapeError);
  check_nothing_written(tmp.path(), "out2");
  CHECK_THROWS_AS(merged_model_write(tmp / "nope", tmp / "adapter", tmp / "out2"), IoError);
  check_nothing_written(tmp.path(), "out2");
}
