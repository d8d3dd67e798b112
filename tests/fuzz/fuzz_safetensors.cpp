// safetensors files (io/safetensors.h): the header's length, JSON, dtypes, shapes and offsets, then
// every tensor read whole, by rows and by columns, converted to f32 where adapt converts.
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "tests/fuzz/fuzz_target.h"

#include "core/file.h"

using namespace adapt;
namespace fs = std::filesystem;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  auto tensor = [](std::vector<std::int64_t> shape, DType dtype, const std::string& name) {
    Tensor t = Tensor::zeros(Shape(shape), dtype, name);
    auto* b = static_cast<std::uint8_t*>(t.raw());
    for (std::size_t i = 0; i < t.size_bytes(); ++i) b[i] = static_cast<std::uint8_t>(i * 37 + 11);
    return t;
  };
  std::vector<std::string> seeds;
  const std::vector<std::vector<Tensor>> files{
      {tensor({2, 3}, DType::F32, "model.layers.0.self_attn.q_proj.weight"), tensor({4}, DType::BF16, "norm"),
       tensor({3, 2}, DType::I32, "ids")},
      {tensor({5, 4}, DType::BF16, "lm_head.weight"), tensor({0, 4}, DType::F32, "empty")},
      {tensor({}, DType::F32, "scalar")}};
  for (const auto& ts : files) {
    std::vector<io::TensorSource> src;
    for (const Tensor& t : ts) src.push_back(io::tensor_source(t, t.name()));
    const fs::path p = fuzz::scratch_file("", "seed.safetensors");
    io::safetensors_write(p, src, {{"format", "pt"}});
    seeds.push_back(file_read_text(p));
  }
  return seeds;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path p = fuzz::scratch_file({reinterpret_cast<const char*>(data), size}, "in.safetensors");
  fuzz::refuse_ok([&] {
    const io::SafetensorsFile f(p);
    for (const io::TensorInfo& t : f.tensors()) {
      (void)f.read(t.name, DType::F32);
      if (t.shape.rank() >= 1 && t.shape[0] > 0) (void)f.read_rows(t.name, t.shape[0] - 1, 1, DType::F32);
      if (t.shape.rank() == 2 && t.shape[1] > 0) (void)f.read_cols(t.name, 0, 1, DType::F32);
    }
  });
  return 0;
}
