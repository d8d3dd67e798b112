// SafetensorsFile: one .safetensors file, header validated on open (SPEC-llama.md §1.4); tensors,
// row ranges and column ranges read with pread into aligned host memory, converted on the way.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors_header.h"
#include "tensor/tensor.h"

namespace adapt::io {

class SafetensorsFile {
 public:
  /// Opens `path`, reads the 8-byte length and the header (nothing of the data) and validates them as
  /// the reference reader does. IoError naming the file (and tensor) on anything wrong.
  explicit SafetensorsFile(const fs::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const fs::path& path() const { return path_; }
  /// Every tensor, in offset order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  /// nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  /// IoError naming the file and the tensor (with a "did you mean") when absent.
  const TensorInfo& at(std::string_view name) const;
  /// `__metadata__` (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Absolute file offset of the data buffer: 8 + N.
  std::uint64_t data_offset() const { return data_offset_; }
  std::uint64_t file_size() const { return file_size_; }

  /// The whole tensor, converted to `as`, in host memory. One pread straight into the result when no
  /// conversion is needed; otherwise streamed through a bounded staging buffer.
  Tensor read(std::string_view name, DType as) const;
  /// Rows [row_begin, row_begin + n_rows) of dim 0 (any rank >= 1): one contiguous byte range.
  Tensor read_rows(std::string_view name, std::int64_t row_begin, std::int64_t n_rows, DType as) const;
  /// Columns [col_begin, col_begin + n_cols) of a 2-D tensor: reads only those bytes of each row.
  Tensor read_cols(std::string_view name, std::int64_t col_begin, std::int64_t n_cols, DType as) const;

  /// As read / read_rows / read_cols, into a caller-provided contiguous host-accessible tensor (e.g.
  /// pinned memory) whose shape is the result shape; converts to dst.dtype().
  void read_into(std::string_view name, Tensor& dst) const;
  void read_rows_into(std::string_view name, std::int64_t row_begin, Tensor& dst) const;
  void read_cols_into(std::string_view name, std::int64_t col_begin, Tensor& dst) const;

  /// Raw bytes [offset, offset + n_bytes) of a tensor's data, any dtype (also those adapt has no
  /// DType for). For checksums and pass-through copies.
  void read_bytes(std::string_view name, std::uint64_t offset, std::uint64_t n_bytes, void* dst) const;

  /// Tensor-data bytes read from disk through this object (headers excluded). Thread-safe.
  std::uint64_t bytes_read() const { return bytes_read_.load(std::memory_order_relaxed); }

 private:
  fs::path path_;
  int fd_ = -1;
  std::uint64_t file_size_ = 0;
  std::uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
  std::map<std::string, std::string> metadata_;
  mutable std::atomic<std::uint64_t> bytes_read_{0};

  DType readable_dtype(const TensorInfo& info) const;
  void pread_exact(std::uint64_t offset, void* dst, std::uint64_t n_bytes) const;
  /// Reads n_segs segments of seg_bytes, the i-th at tensor byte first + i * stride, into dst packed
  /// back to back, converting from the tensor's dtype to `as`.
  void read_segments(const TensorInfo& info, std::uint64_t first, std::uint64_t seg_bytes, std::uint64_t stride,
                     std::int64_t n_segs, void* dst, DType as) const;
};

}  // namespace adapt::io
