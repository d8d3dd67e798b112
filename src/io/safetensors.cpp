// SafetensorsFile: open + validate (steps 1-3 here, 4-7 in safetensors_header.cpp) and range reads
// with pread, so a rank that needs a slice of a 140 GB model reads only that slice.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/strings.h"

namespace adapt::io {

namespace {

/// Conversions stream through a buffer of at most this size.
constexpr std::uint64_t kStagingBytes = 16u << 20;

std::string label(const fs::path& path) { return fmt::format("safetensors file '{}'", path.string()); }

/// What the first bytes of a file that is not safetensors look like, as a hint.
std::string not_safetensors_hint(std::string_view head) {
  if (head.starts_with("version https://git-lfs"))
    return "It is a Git LFS pointer, not the weights: run 'git lfs pull' in the model folder, or download the model "
           "with 'huggingface-cli download'.";
  if (head.starts_with("PK\x03\x04"))
    return "It is a zip archive (a PyTorch .bin/.pt checkpoint?): convert it to safetensors first.";
  if (!head.empty() && static_cast<unsigned char>(head[0]) == 0x80)
    return "It looks like a Python pickle (a PyTorch .bin checkpoint?): convert it to safetensors first.";
  if (head.starts_with("<") || head.starts_with("{"))
    return "It looks like text (an HTML error page or JSON saved under the wrong name?): re-download it.";
  return "It is not a safetensors file, or its first bytes are corrupted: re-download it.";
}

std::string shape_with(const Shape& s, int dim, std::int64_t n) {
  Shape r = s;
  r[dim] = n;
  return r.str();
}

}  // namespace

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    const int e = errno;
    ADAPT_REQUIRE(e != ENOENT, IoError,
                  "{} does not exist. Check the path; a model folder needs model.safetensors "
                  "or model.safetensors.index.json and its shards.",
                  label(path));
    ADAPT_THROW(IoError, "cannot open {}: {}. Check its permissions.", label(path), std::strerror(e));
  }
  try {
    struct stat st {};
    ADAPT_REQUIRE(::fstat(fd_, &st) == 0, IoError, "cannot stat {}: {}", label(path), std::strerror(errno));
    ADAPT_REQUIRE(S_ISREG(st.st_mode), IoError, "{} is not a regular file (a folder?)", label(path));
    file_size_ = static_cast<std::uint64_t>(st.st_size);

    // Step 1 (HeaderTooSmall).
    ADAPT_REQUIRE(file_size_ >= 8, IoError,
                  "{}: the file is {} bytes long, shorter than the 8-byte header length field. The file is empty or "
                  "truncated (an interrupted download or copy): re-download or re-copy it.",
                  label(path), file_size_);
    std::string head(static_cast<std::size_t>(std::min<std::uint64_t>(file_size_, 64)), '\0');
    pread_exact(0, head.data(), head.size());
    bytes_read_ = 0;  // header bytes are not tensor data
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(head[static_cast<std::size_t>(i)]);

    // Step 2 (HeaderTooLarge).
    ADAPT_REQUIRE(n <= kMaxHeaderBytes, IoError,
                  "{}: the header length field says {} bytes, above the format's limit of {} bytes. {}", label(path), n,
                  format_count(static_cast<std::int64_t>(kMaxHeaderBytes)), not_safetensors_hint(head));
    // Step 3 (InvalidHeaderLength).
    ADAPT_REQUIRE(8 + n <= file_size_, IoError,
                  "{}: the header length field says {} bytes, but only {} bytes follow it (file size {}). The file is "
                  "truncated (an interrupted download or copy): re-download or re-copy it.",
                  label(path), n, file_size_ - 8, file_size_);

    std::string header(static_cast<std::size_t>(n), '\0');
    pread_exact(8, header.data(), header.size());
    bytes_read_ = 0;
    SafetensorsHeader h = safetensors_header_parse(path, header, file_size_);  // steps 4-7
    data_offset_ = 8 + n;
    tensors_ = std::move(h.tensors);
    metadata_ = std::move(h.metadata);
    for (std::size_t i = 0; i < tensors_.size(); ++i) by_name_.emplace(tensors_[i].name, i);
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& t : tensors_) names.push_back(t.name);
  ADAPT_THROW(IoError,
              "tensor '{}' is not in {}{} (the file has {} tensors). Check the tensor name and that this is "
              "the right model file.",
              name, label(path_), did_you_mean(name, names), tensors_.size());
}

DType SafetensorsFile::readable_dtype(const TensorInfo& info) const {
  ADAPT_REQUIRE(info.dtype.has_value(), UnsupportedError,
                "tensor '{}' in {} has dtype {}, which adapt cannot read as numbers (it reads F32, BF16, F16, I32, "
                "I64, U8). Convert the checkpoint to BF16, F16 or F32 (e.g. with the safetensors Python package).",
                info.name, label(path_), info.dtype_name);
  return *info.dtype;
}

void SafetensorsFile::pread_exact(std::uint64_t offset, void* dst, std::uint64_t n_bytes) const {
  auto* p = static_cast<char*>(dst);
  std::uint64_t done = 0;
  while (done < n_bytes) {
    const ssize_t n =
        ::pread(fd_, p + done, static_cast<std::size_t>(n_bytes - done), static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ADAPT_THROW(IoError, "cannot read {} bytes at offset {} of {}: {}", n_bytes, offset, label(path_),
                  n < 0 ? std::strerror(errno)
                        : "unexpected end of file (was the file truncated or replaced while adapt was reading it?)");
    }
    done += static_cast<std::uint64_t>(n);
  }
  bytes_read_.fetch_add(n_bytes, std::memory_order_relaxed);
}

void SafetensorsFile::read_segments(const TensorInfo& info, std::uint64_t first, std::uint64_t seg_bytes,
                                    std::uint64_t stride, std::int64_t n_segs, void* dst, DType as) const {
  if (seg_bytes == 0 || n_segs <= 0) return;
  const DType src = *info.dtype;
  const std::uint64_t base = data_offset_ + info.begin + first;
  const auto segs = static_cast<std::uint64_t>(n_segs);
  auto* out = static_cast<std::uint8_t*>(dst);
  if (src == as) {  // straight into the destination
    if (segs == 1 || stride == seg_bytes) {
      pread_exact(base, out, seg_bytes * segs);
    } else {
      for (std::uint64_t i = 0; i < segs; ++i) pread_exact(base + i * stride, out + i * seg_bytes, seg_bytes);
    }
    return;
  }
  // Convert through a bounded staging buffer; small segments are batched before converting.
  const std::uint64_t src_size = dtype_size(src), dst_size = dtype_size(as);
  const std::uint64_t cap = std::min(seg_bytes * segs, kStagingBytes / src_size * src_size);
  std::unique_ptr<std::uint8_t[]> staging(new std::uint8_t[static_cast<std::size_t>(cap)]);
  std::uint64_t fill = 0;
  auto flush = [&] {
    const auto n = static_cast<std::int64_t>(fill / src_size);
    dtype_convert(out, as, staging.get(), src, n);
    out += static_cast<std::uint64_t>(n) * dst_size;
    fill = 0;
  };
  for (std::uint64_t i = 0; i < segs; ++i) {
    for (std::uint64_t pos = 0; pos < seg_bytes;) {
      const std::uint64_t take = std::min(seg_bytes - pos, cap - fill);
      pread_exact(base + i * stride + pos, staging.get() + fill, take);
      fill += take;
      pos += take;
      if (fill == cap) flush();
    }
  }
  if (fill > 0) flush();
}

static void require_destination(const Tensor& dst, const std::string& expected_shape, const Shape& shape,
                                const TensorInfo& info, const fs::path& path) {
  ADAPT_REQUIRE(dst.defined() && dst.shape() == shape, ShapeError,
                "reading tensor '{}' of {}: the destination has shape {}, expected {}", info.name, label(path),
                dst.defined() ? dst.shape().str() : std::string("(undefined)"), expected_shape);
  ADAPT_REQUIRE(dst.is_contiguous() && dst.device().host_accessible(), UnsupportedError,
                "reading tensor '{}' of {}: the destination must be a contiguous tensor in host memory (it is on {})",
                info.name, label(path), dst.device().str());
}

void SafetensorsFile::read_into(std::string_view name, Tensor& dst) const {
  const TensorInfo& info = at(name);
  readable_dtype(info);
  require_destination(dst, info.shape.str(), info.shape, info, path_);
  read_segments(info, 0, info.size_bytes(), info.size_bytes(), 1, dst.raw(), dst.dtype());
}

void SafetensorsFile::read_rows_into(std::string_view name, std::int64_t row_begin, Tensor& dst) const {
  const TensorInfo& info = at(name);
  const DType src = readable_dtype(info);
  ADAPT_REQUIRE(info.shape.rank() >= 1, ShapeError, "cannot read rows of tensor '{}' of {}: it is a scalar (shape ())",
                info.name, label(path_));
  const std::int64_t rows = info.shape[0];
  const std::int64_t n_rows = dst.defined() && dst.rank() >= 1 ? dst.dim(0) : 0;
  ADAPT_REQUIRE(row_begin >= 0 && row_begin <= rows && n_rows <= rows - row_begin, ShapeError,
                "cannot read rows [{}, {}) of tensor '{}' of {}: it has {} rows (shape {})", row_begin,
                row_begin + n_rows, info.name, label(path_), rows, info.shape.str());
  Shape expected = info.shape;
  expected[0] = n_rows;
  require_destination(dst, expected.str(), expected, info, path_);
  const std::uint64_t row_bytes =
      rows == 0 ? 0 : static_cast<std::uint64_t>(info.shape.numel() / rows) * dtype_size(src);
  const std::uint64_t n = row_bytes * static_cast<std::uint64_t>(n_rows);
  read_segments(info, static_cast<std::uint64_t>(row_begin) * row_bytes, n, n, 1, dst.raw(), dst.dtype());
}

void SafetensorsFile::read_cols_into(std::string_view name, std::int64_t col_begin, Tensor& dst) const {
  const TensorInfo& info = at(name);
  const DType src = readable_dtype(info);
  ADAPT_REQUIRE(info.shape.rank() == 2, ShapeError,
                "cannot read columns of tensor '{}' of {}: it has shape {}; column ranges need a 2-D tensor", info.name,
                label(path_), info.shape.str());
  const std::int64_t rows = info.shape[0], cols = info.shape[1];
  const std::int64_t n_cols = dst.defined() && dst.rank() == 2 ? dst.dim(1) : 0;
  ADAPT_REQUIRE(col_begin >= 0 && col_begin <= cols && n_cols <= cols - col_begin, ShapeError,
                "cannot read columns [{}, {}) of tensor '{}' of {}: it has {} columns (shape {})", col_begin,
                col_begin + n_cols, info.name, label(path_), cols, info.shape.str());
  require_destination(dst, shape_with(info.shape, 1, n_cols), Shape{rows, n_cols}, info, path_);
  const std::uint64_t es = dtype_size(src);
  const std::uint64_t row_bytes = static_cast<std::uint64_t>(cols) * es;
  const std::uint64_t seg = static_cast<std::uint64_t>(n_cols) * es;
  read_segments(info, static_cast<std::uint64_t>(col_begin) * es, seg, row_bytes, rows, dst.raw(), dst.dtype());
}

Tensor SafetensorsFile::read(std::string_view name, DType as) const {
  const TensorInfo& info = at(name);
  readable_dtype(info);
  Tensor t = Tensor::empty(info.shape, as, host_allocator(), info.name);
  read_into(name, t);
  return t;
}

Tensor SafetensorsFile::read_rows(std::string_view name, std::int64_t row_begin, std::int64_t n_rows, DType as) const {
  const TensorInfo& info = at(name);
  readable_dtype(info);
  ADAPT_REQUIRE(info.shape.rank() >= 1, ShapeError, "cannot read rows of tensor '{}' of {}: it is a scalar (shape ())",
                info.name, label(path_));
  ADAPT_REQUIRE(n_rows >= 0 && row_begin >= 0 && row_begin <= info.shape[0] && n_rows <= info.shape[0] - row_begin,
                ShapeError, "cannot read rows [{}, {}) of tensor '{}' of {}: it has {} rows (shape {})", row_begin,
                row_begin + n_rows, info.name, label(path_), info.shape[0], info.shape.str());
  Shape s = info.shape;
  s[0] = n_rows;
  Tensor t = Tensor::empty(s, as, host_allocator(), info.name);
  read_rows_into(name, row_begin, t);
  return t;
}

Tensor SafetensorsFile::read_cols(std::string_view name, std::int64_t col_begin, std::int64_t n_cols, DType as) const {
  const TensorInfo& info = at(name);
  readable_dtype(info);
  ADAPT_REQUIRE(info.shape.rank() == 2, ShapeError,
                "cannot read columns of tensor '{}' of {}: it has shape {}; column ranges need a 2-D tensor", info.name,
                label(path_), info.shape.str());
  ADAPT_REQUIRE(n_cols >= 0 && col_begin >= 0 && col_begin <= info.shape[1] && n_cols <= info.shape[1] - col_begin,
                ShapeError, "cannot read columns [{}, {}) of tensor '{}' of {}: it has {} columns (shape {})",
                col_begin, col_begin + n_cols, info.name, label(path_), info.shape[1], info.shape.str());
  Tensor t = Tensor::empty(Shape{info.shape[0], n_cols}, as, host_allocator(), info.name);
  read_cols_into(name, col_begin, t);
  return t;
}

void SafetensorsFile::read_bytes(std::string_view name, std::uint64_t offset, std::uint64_t n_bytes, void* dst) const {
  const TensorInfo& info = at(name);
  ADAPT_REQUIRE(offset <= info.size_bytes() && n_bytes <= info.size_bytes() - offset, ShapeError,
                "cannot read bytes [{}, {}) of tensor '{}' of {}: it has {} bytes", offset, offset + n_bytes, info.name,
                label(path_), info.size_bytes());
  if (n_bytes > 0) pread_exact(data_offset_ + info.begin + offset, dst, n_bytes);
}

}  // namespace adapt::io
