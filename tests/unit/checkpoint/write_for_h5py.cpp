// checkpoint_write_for_python <out_dir>: writes the sample checkpoint (every dtype, scalars, strings)
// with checkpoint_save, plus expected.json (dtype, shape, raw bytes and values of every tensor; the
// bits of every scalar) for scripts/check_checkpoint_h5py.py, which reads the file with h5py.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/file.h"
#include "tests/unit/checkpoint/checkpoint_samples.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

std::string hex(const void* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto b = static_cast<const unsigned char*>(p)[i];
    s += kHex[b >> 4];
    s += kHex[b & 0xf];
  }
  return s;
}

json value_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

/// numpy's name for the stored HDF5 type (bf16 is stored as its bit pattern).
const char* numpy_dtype(DType d) {
  switch (d) {
    case DType::F32: return "float32";
    case DType::BF16: return "uint16";
    case DType::F16: return "float16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::U8: return "uint8";
  }
  return "?";
}

json describe(const std::string& name, const Tensor& view) {
  const Tensor t = view.to_host(view.dtype());  // contiguous
  json j;
  j["dtype"] = std::string(dtype_name(t.dtype()));
  j["numpy_dtype"] = numpy_dtype(t.dtype());
  j["shape"] = t.shape().to_vector();
  j["chunked"] = t.rank() > 0 && t.numel() > 0;
  if (name == test::kArangeTensor) {
    j["arange_mod_1000_times_0_25"] = true;  // too big to list; the script recomputes it
    return j;
  }
  j["hex"] = hex(t.raw(), t.size_bytes());
  json values = json::array();
  if (t.dtype() == DType::I64) {
    for (std::int64_t i = 0; i < t.numel(); ++i) values.push_back(t.data<std::int64_t>()[i]);
  } else if (t.dtype() == DType::I32) {
    for (std::int64_t i = 0; i < t.numel(); ++i) values.push_back(t.data<std::int32_t>()[i]);
  } else {
    const Tensor f = t.to_host(DType::F32);
    for (std::int64_t i = 0; i < t.numel(); ++i) values.push_back(value_json(f.data<float>()[i]));
  }
  j["values"] = values;
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out_dir>\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    const checkpoint::CheckpointState s = test::sample_checkpoint_state(7);
    const fs::path file = checkpoint::checkpoint_save(out / "checkpoints", s);
    json exp;
    exp["file"] = fs::relative(file, out).string();
    exp["meta"] = {{"format_version", checkpoint::kFormatVersion},
                   {"step", s.step},
                   {"complete", 1},
                   {"created_by", s.created_by},
                   {"base_model_fingerprint", s.base_model_fingerprint},
                   {"world_layout", s.world_layout},
                   {"config_toml", s.config_toml},
                   {"n_tensors", s.tensors.size()}};
    for (const auto& [name, t] : s.tensors) exp["tensors"][name] = describe(name, t);
    exp["strings"] = s.strings;
    exp["ints"] = s.ints;
    for (const auto& [key, v] : s.floats)
      exp["floats"][key] = {{"bits", fmt::format("{:016x}", test::bits_of(v))}, {"value", value_json(v)}};
    file_write_atomic(out / "expected.json", exp.dump(1) + "\n");
    std::printf("wrote %s and expected.json\n", file.string().c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
