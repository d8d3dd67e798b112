// ShardedSafetensors: a Hugging Face model folder (model.safetensors, or shards listed by
// model.safetensors.index.json), validated on open, read tensor by tensor or by row/column range.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors.h"

namespace adapt::io {

class ShardedSafetensors {
 public:
  /// Opens `model_dir`: model.safetensors.index.json if present (validated: JSON shape, shard names
  /// relative without "..", ".safetensors" extension, every shard exists and is a valid safetensors
  /// file, every weight_map tensor is in its shard, no tensor in two shards), else
  /// model.safetensors. IoError naming the folder or file otherwise. Tensors present in a shard but
  /// absent from the weight_map are kept (transformers loads whole shards).
  explicit ShardedSafetensors(const fs::path& model_dir);

  const fs::path& dir() const { return dir_; }
  /// Every tensor name, sorted.
  std::vector<std::string> tensor_names() const;
  /// nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  /// IoError naming the folder and tensor (with a "did you mean") when absent.
  const TensorInfo& info(std::string_view name) const;
  const SafetensorsFile& file_of(std::string_view name) const;
  /// The opened files, in shard-name order (one entry for a single-file model).
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  /// metadata.total_size from the index, if there is an index and it has one.
  std::optional<std::uint64_t> index_total_size() const { return index_total_size_; }
  /// Sum of the data sizes of all tensors (comparable with index_total_size()).
  std::uint64_t total_size_bytes() const;

  Tensor read(std::string_view name, DType as) const { return file_of(name).read(name, as); }
  Tensor read_rows(std::string_view name, std::int64_t row_begin, std::int64_t n_rows, DType as) const {
    return file_of(name).read_rows(name, row_begin, n_rows, as);
  }
  Tensor read_cols(std::string_view name, std::int64_t col_begin, std::int64_t n_cols, DType as) const {
    return file_of(name).read_cols(name, col_begin, n_cols, as);
  }
  void read_into(std::string_view name, Tensor& dst) const { file_of(name).read_into(name, dst); }
  void read_rows_into(std::string_view name, std::int64_t row_begin, Tensor& dst) const {
    file_of(name).read_rows_into(name, row_begin, dst);
  }
  void read_cols_into(std::string_view name, std::int64_t col_begin, Tensor& dst) const {
    file_of(name).read_cols_into(name, col_begin, dst);
  }
  /// Tensor-data bytes read through all files.
  std::uint64_t bytes_read() const;

 private:
  struct Entry {
    std::size_t file;
    const TensorInfo* info;
  };
  fs::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> tensors_;
  std::optional<std::uint64_t> index_total_size_;

  void open_index(const fs::path& index_path);
  const Entry& entry(std::string_view name) const;
};

}  // namespace adapt::io
