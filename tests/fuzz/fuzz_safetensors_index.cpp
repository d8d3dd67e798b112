// model.safetensors.index.json (io/sharded.h): its JSON shape, metadata.total_size, the weight_map's
// shard names (relative, no "..", .safetensors) and its agreement with the shards beside it (every
// listed tensor in its shard, none in two), then every tensor read through the opened folder. The
// shards are the valid ones of the seed; only the index is the input.
#include "core/file.h"
#include "io/safetensors_writer.h"
#include "io/sharded.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

constexpr const char* kIndex = "model.safetensors.index.json";

/// The folder of this process's shards (its scratch folder), written once: four tensors over three shards and the index
/// safetensors_write_sharded gives them.
const fs::path& shard_dir() {
  static const fs::path dir = [] {
    const fs::path d = fuzz::scratch_file("", "unused").parent_path();
    auto tensor = [](std::vector<std::int64_t> shape, DType dtype, const std::string& name) {
      Tensor t = Tensor::zeros(Shape(shape), dtype, name);
      auto* b = static_cast<std::uint8_t*>(t.raw());
      for (std::size_t i = 0; i < t.size_bytes(); ++i) b[i] = static_cast<std::uint8_t>(i * 29 + 5);
      return t;
    };
    const std::vector<Tensor> ts{tensor({8, 4}, DType::F32, "model.embed_tokens.weight"),
                                 tensor({4}, DType::BF16, "model.norm.weight"),
                                 tensor({4, 4}, DType::BF16, "model.layers.0.self_attn.q_proj.weight"),
                                 tensor({8, 4}, DType::F32, "lm_head.weight")};
    std::vector<io::TensorSource> src;
    for (const Tensor& t : ts) src.push_back(io::tensor_source(t, t.name()));
    const io::ShardedWriteResult r = io::safetensors_write_sharded(d, src, /*max_shard_bytes=*/128);
    ADAPT_CHECK(r.shards.size() >= 2, "the seed folder should be sharded, got {} file(s)", r.shards.size());
    return d;
  }();
  return dir;
}

}  // namespace

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  const std::string index = file_read_text(shard_dir() / kIndex);
  // Also as huggingface_hub writes it without metadata, and with the weight_map first.
  const std::size_t wm = index.find("\"weight_map\"");
  ADAPT_CHECK(wm != std::string::npos, "the seed index has no weight_map");
  std::string bare = "{";  // appended, not `+`: GCC 12 misreads that as an overlapping copy
  bare += index.substr(wm);
  return {index, bare};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)fuzz::scratch_file({reinterpret_cast<const char*>(data), size}, kIndex);
  fuzz::refuse_ok([&] {
    const io::ShardedSafetensors folder(shard_dir());
    for (const std::string& name : folder.tensor_names()) {
      const io::TensorInfo& info = folder.info(name);
      (void)folder.read(name, DType::F32);
      if (info.shape.rank() >= 1 && info.shape[0] > 0) (void)folder.read_rows(name, info.shape[0] - 1, 1, DType::F32);
    }
    (void)folder.index_total_size();
    (void)folder.total_size_bytes();
  });
  return 0;
}
