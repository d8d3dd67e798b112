// A conversation's stored KV cache (generate/kv_snapshot.h, output.conversation_kv): magic, header
// length, JSON header, per-layer payload, checksum. Every damaged file must be refused with a reason
// (kv_snapshot_load returns one) or, where it reads past the file, an adapt::Error; a file it loads
// gives at most the prompt's length minus one positions.
#include <cstdlib>

#include "core/file.h"
#include "generate/kv_snapshot.h"
#include "model/llama_config.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

model::LlamaConfig config() { return model::llama_config_preset("tiny"); }

// The prompt the stored tokens start: 12 of them, then 3 new ones.
std::vector<std::int32_t> prompt() {
  std::vector<std::int32_t> p;
  for (std::int32_t i = 0; i < 15; ++i) p.push_back(100 + 7 * i);
  return p;
}

}  // namespace

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  std::vector<std::string> seeds;
  for (const DType dtype : {DType::F32, DType::BF16}) {
    model::KvCache cache(config(), 1, 16, 1, host_allocator(), {.dtype = dtype});
    const std::vector<std::int32_t> p = prompt();
    std::vector<char> k(static_cast<std::size_t>(cache.n_kv_heads() * 12 * cache.head_dim()) * dtype_size(dtype));
    std::vector<char> v(k.size());
    for (std::size_t i = 0; i < k.size(); ++i) {
      k[i] = static_cast<char>(i * 7);
      v[i] = static_cast<char>(i * 13);
    }
    for (int layer = 0; layer < cache.layers().count; ++layer) cache.write_row(layer, 0, 12, k.data(), v.data());
    cache.advance(12, std::vector<std::int64_t>{0});
    const fs::path file = scratch_file("", "seed.kv");
    generate::kv_snapshot_save(file, cache, 0, std::span(p).first(12), "identity");
    seeds.push_back(file_read_text(file));
  }
  return seeds;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fs::path file = fuzz::scratch_file(std::string_view(reinterpret_cast<const char*>(data), size), "in.kv");
  const std::vector<std::int32_t> p = prompt();
  fuzz::refuse_ok([&] {
    for (const DType dtype : {DType::F32, DType::BF16}) {
      model::KvCache cache(config(), 1, 16, 1, host_allocator(), {.dtype = dtype});
      const generate::KvSnapshotLoad got = generate::kv_snapshot_load(file, cache, 0, p, "identity");
      if (got.positions < 0 || got.positions >= static_cast<std::int64_t>(p.size()) ||
          (got.positions > 0 && !got.why_not.empty())) {
        std::fprintf(stderr, "kv_snapshot_load gave %lld positions (reason '%s')\n",
                     static_cast<long long>(got.positions), got.why_not.c_str());
        std::abort();
      }
    }
  });
  return 0;
}
