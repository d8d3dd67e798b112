// Writing safetensors files the way the reference writer does (byte-identical headers), streaming one
// tensor at a time, atomically; and HF-style sharded model folders with model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dtype/dtype.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace adapt::io {

namespace fs = std::filesystem;

/// One tensor to write. fill(dst) writes numel * dtype_size bytes (little-endian, C order); it is
/// called once per tensor, in file order, so a huge model streams through one tensor-sized buffer.
struct TensorSource {
  std::string name;
  DType dtype;
  Shape shape;
  std::function<void(void* dst)> fill;
  std::uint64_t size_bytes() const { return static_cast<std::uint64_t>(shape.numel()) * dtype_size(dtype); }
};

/// A source that copies a host tensor (a strided view is made contiguous when written). The tensor's
/// storage is kept alive by the source. UnsupportedError when the tensor is not in host memory.
TensorSource tensor_source(const Tensor& t, std::string name);

/// The header JSON the reference writer produces for these tensors (before padding): `__metadata__`
/// first (omitted when empty), then tensors ordered by dtype alignment (descending) and name.
std::string safetensors_header_json(const std::vector<TensorSource>& tensors,
                                    const std::map<std::string, std::string>& metadata);

/// Writes one .safetensors file: 8-byte length, header padded with spaces to a multiple of 8, then
/// the tensors in header order. Atomic (file_write_atomic): on any failure, including a throwing
/// fill() or a full disk, nothing is left under `path` and a previous file there is untouched.
/// IoError on duplicate or reserved names, or a header above 100,000,000 bytes.
void safetensors_write(const fs::path& path, const std::vector<TensorSource>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

struct ShardedWriteResult {
  std::vector<fs::path> shards;        // in shard-number order
  std::uint64_t total_size_bytes = 0;  // sum of tensor data sizes (the index's metadata.total_size)
};

/// The greedy split of huggingface_hub's split_state_dict_into_shards_factory over tensor byte
/// sizes in the given order: a tensor larger than the limit is appended at once as its own shard
/// (so it can precede the shard being filled); a tensor that would tip the current shard over the
/// limit closes it. Returns the tensor indices of each shard.
std::vector<std::vector<std::size_t>> shard_split(const std::vector<std::uint64_t>& sizes,
                                                  std::uint64_t max_shard_bytes);

/// HF layout: one file "model.safetensors" (no index) when everything fits in max_shard_bytes, else
/// "model-00001-of-0000N.safetensors"... plus "model.safetensors.index.json"
/// ({"metadata":{"total_size":..},"weight_map":{..}}, formatted like transformers' save_pretrained).
/// Greedy split in the given order like huggingface_hub (a tensor larger than the limit gets its own
/// shard). Creates `dir` if needed; each file is written atomically and the index last. Afterwards,
/// stale files of an earlier save (model.safetensors, model-*-of-*.safetensors, the index) that are
/// not part of this one are removed, so a reader never mixes two saves.
ShardedWriteResult safetensors_write_sharded(const fs::path& dir, const std::vector<TensorSource>& tensors,
                                             std::uint64_t max_shard_bytes,
                                             const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace adapt::io
