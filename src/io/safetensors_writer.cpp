// safetensors writer (header byte-identical to the reference `prepare`/`serialize`), streaming
// through one reused tensor-sized buffer; sharded HF folders split like huggingface_hub.
#include "io/safetensors_writer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "core/strings.h"
#include "io/safetensors_header.h"

namespace adapt::io {

namespace {

/// Names must be unique and not the reserved "__metadata__" key.
void require_valid_names(const fs::path& path, const std::vector<TensorSource>& tensors) {
  std::set<std::string_view> seen;
  for (const auto& t : tensors) {
    ADAPT_REQUIRE(t.name != "__metadata__", IoError,
                  "cannot write '{}': '__metadata__' is reserved by the safetensors format and cannot name a tensor",
                  path.string());
    ADAPT_REQUIRE(seen.insert(t.name).second, IoError,
                  "cannot write '{}': tensor name '{}' is given twice; safetensors names must be unique", path.string(),
                  t.name);
    ADAPT_REQUIRE(static_cast<bool>(t.fill), IoError, "cannot write '{}': tensor '{}' has no fill function",
                  path.string(), t.name);
  }
}

/// Write order of the reference writer: dtype enum position descending, then name.
std::vector<std::size_t> write_order(const std::vector<TensorSource>& tensors) {
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const int oa = safetensors_dtype_order(tensors[a].dtype), ob = safetensors_dtype_order(tensors[b].dtype);
    if (oa != ob) return oa > ob;
    return tensors[a].name < tensors[b].name;
  });
  return order;
}

/// Frees a host_allocator() block.
struct HostBlock {
  void* p = nullptr;
  std::size_t n = 0;
  explicit HostBlock(std::size_t bytes) : p(host_allocator().allocate(bytes)), n(bytes) {}
  ~HostBlock() { host_allocator().deallocate(p, n); }
  HostBlock(const HostBlock&) = delete;
  HostBlock& operator=(const HostBlock&) = delete;
};

}  // namespace

TensorSource tensor_source(const Tensor& t, std::string name) {
  ADAPT_REQUIRE(t.defined(), ShapeError, "tensor_source: tensor '{}' is undefined", name);
  ADAPT_REQUIRE(t.device().host_accessible(), UnsupportedError,
                "tensor '{}' lives on {}; copy it to host memory before writing it to a safetensors file", name,
                t.device().str());
  Tensor keep = t;
  return TensorSource{std::move(name), t.dtype(), t.shape(), [keep](void* dst) {
                        if (keep.is_contiguous()) {
                          std::memcpy(dst, keep.raw(), keep.size_bytes());
                        } else {
                          Tensor out = Tensor::wrap(dst, keep.shape(), keep.dtype(), Device{}, nullptr);
                          out.copy_from(keep);
                        }
                      }};
}

std::string safetensors_header_json(const std::vector<TensorSource>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  std::string out = "{";
  if (!metadata.empty()) {
    out += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) out += ',';
      first = false;
      json_append_string(out, k);
      out += ':';
      json_append_string(out, v);
    }
    out += '}';
  }
  std::uint64_t offset = 0;
  bool first = metadata.empty();
  for (std::size_t i : write_order(tensors)) {
    const TensorSource& t = tensors[i];
    if (!first) out += ',';
    first = false;
    json_append_string(out, t.name);
    out += ":{\"dtype\":\"";
    out += safetensors_dtype_name(t.dtype);
    out += "\",\"shape\":[";
    for (int d = 0; d < t.shape.rank(); ++d) {
      if (d) out += ',';
      out += std::to_string(t.shape[d]);
    }
    const std::uint64_t end = offset + t.size_bytes();
    out += fmt::format("],\"data_offsets\":[{},{}]}}", offset, end);
    offset = end;
  }
  out += '}';
  return out;
}

void safetensors_write(const fs::path& path, const std::vector<TensorSource>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  require_valid_names(path, tensors);
  std::string header = safetensors_header_json(tensors, metadata);
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-aligned, as the reference pads
  ADAPT_REQUIRE(header.size() <= kMaxHeaderBytes, IoError,
                "cannot write '{}': its header would be {} bytes, above the format's limit of {} bytes; split the "
                "tensors over several files",
                path.string(), header.size(), kMaxHeaderBytes);
  const std::vector<std::size_t> order = write_order(tensors);
  std::uint64_t largest = 0;
  for (const auto& t : tensors) largest = std::max(largest, t.size_bytes());

  file_write_atomic(path, [&](int fd) {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(header.size()) >> (8 * i));
    fd_write_all(fd, len, 8, path);
    fd_write_all(fd, header.data(), header.size(), path);
    HostBlock buffer(static_cast<std::size_t>(largest));  // one tensor at a time, reused
    for (std::size_t i : order) {
      const TensorSource& t = tensors[i];
      t.fill(buffer.p);
      fd_write_all(fd, buffer.p, static_cast<std::size_t>(t.size_bytes()), path);
    }
  });
}

std::vector<std::vector<std::size_t>> shard_split(const std::vector<std::uint64_t>& sizes,
                                                  std::uint64_t max_shard_bytes) {
  std::vector<std::vector<std::size_t>> shards;
  std::vector<std::size_t> current;
  std::uint64_t current_bytes = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] > max_shard_bytes) {  // its own shard, appended now
      shards.push_back({i});
      continue;
    }
    if (current_bytes + sizes[i] > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += sizes[i];
  }
  if (!current.empty()) shards.push_back(std::move(current));
  return shards;
}

ShardedWriteResult safetensors_write_sharded(const fs::path& dir, const std::vector<TensorSource>& tensors,
                                             std::uint64_t max_shard_bytes,
                                             const std::map<std::string, std::string>& metadata) {
  ADAPT_REQUIRE(max_shard_bytes > 0, ConfigError,
                "cannot write a model to '{}': the maximum shard size must be "
                "positive (got 0)",
                dir.string());
  require_valid_names(dir / "model.safetensors", tensors);
  std::error_code ec;
  fs::create_directories(dir, ec);
  ADAPT_REQUIRE(!ec, IoError, "cannot create the model folder '{}': {}", dir.string(), ec.message());

  ShardedWriteResult result;
  std::vector<std::uint64_t> sizes;
  for (const auto& t : tensors) {
    sizes.push_back(t.size_bytes());
    result.total_size_bytes += t.size_bytes();
  }
  const auto split = shard_split(sizes, max_shard_bytes);
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (split.size() <= 1) {
    result.shards.push_back(dir / "model.safetensors");
    safetensors_write(result.shards.back(), tensors, metadata);
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    for (std::size_t k = 0; k < split.size(); ++k) {
      const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, split.size());
      std::vector<TensorSource> shard;
      for (std::size_t i : split[k]) {
        shard.push_back(tensors[i]);
        weight_map[tensors[i].name] = name;
      }
      result.shards.push_back(dir / name);
      safetensors_write(result.shards.back(), shard, metadata);
    }
    nlohmann::json index = {{"metadata", {{"total_size", result.total_size_bytes}}}, {"weight_map", weight_map}};
    // transformers' save_pretrained: json.dumps(index, indent=2, sort_keys=True) + "\n".
    file_write_atomic(index_path, index.dump(2, ' ', true) + "\n");
  }

  // Remove what an earlier save left behind, so that a reader never mixes two saves.
  static const std::regex kOurs(R"(model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?)");
  std::set<fs::path> written(result.shards.begin(), result.shards.end());
  if (split.size() > 1) written.insert(index_path);
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string fname = entry.path().filename().string();
    if (!std::regex_match(fname, kOurs) || written.count(dir / fname)) continue;
    fs::remove(entry.path(), ec);
    ADAPT_REQUIRE(!ec, IoError,
                  "wrote the model to '{}', but cannot remove the stale '{}' from an earlier save: {}. "
                  "Remove it by hand, or readers may load the wrong weights.",
                  dir.string(), entry.path().string(), ec.message());
  }
  return result;
}

}  // namespace adapt::io
