// HDF5 checkpoints (checkpoint/): the seal (length and CRC-32C of the file) is checked before HDF5
// reads a byte, so a changed file is refused by adapt's own parser; a file that passes is verified
// (completion marker, format version, every dataset's shape, dtype and Fletcher-32 checksums) and
// loaded. Mutations that keep the seal valid are as unlikely as a CRC-32C collision, which is the
// point: libhdf5 1.10 itself crashes on some malformed metadata, and none may reach it.
#include "checkpoint/checkpoint.h"
#include "core/file.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  checkpoint::CheckpointState s;
  s.step = 7;
  s.base_model_fingerprint = "tiny:1234";
  s.world_layout = "tp=1 pp=1 dp=1";
  s.config_toml = "[train]\nsteps = 7\n";
  Tensor a = Tensor::zeros({3, 4}, DType::F32, "a");
  for (int i = 0; i < 12; ++i) a.data<float>()[i] = 0.25f * static_cast<float>(i);
  s.tensors["adapter/lora/0/q/A"] = a;
  s.tensors["optim/step_count"] = Tensor::zeros({2}, DType::I64, "n");
  s.strings["rng"] = "state 1 2 3";
  s.ints["data/position"] = 42;
  s.floats["lr"] = 1e-3;
  const fs::path dir = fuzz::scratch_file("", "unused").parent_path() / "ckpt-seed";
  const fs::path file = checkpoint::checkpoint_save(dir, s);
  return {file_read_text(file)};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path p = fuzz::scratch_file({reinterpret_cast<const char*>(data), size}, "step_00000007.h5");
  fuzz::refuse_ok([&] {
    (void)checkpoint::checkpoint_verify(p);
    (void)checkpoint::checkpoint_load(p);
  });
  return 0;
}
