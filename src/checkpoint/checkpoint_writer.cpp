// checkpoint_save: the HDF5 file is built in memory (HDF5's core driver; its final image is taken
// over when the file closes), then written under a .tmp name with checked write(2) calls, fsynced
// and renamed, the folder fsynced, and `latest` rewritten atomically; rotation only after the
// commit. The image's first 512 bytes (HDF5's user block) get the seal: length and CRC-32C of the
// rest (checkpoint_seal.h), which readers check before HDF5 sees the file. Keeping disk I/O out of HDF5 matters: when
// H5Fclose fails on a full disk, HDF5 1.10 keeps a dangling file id and the process crashes at exit. /meta complete = 1
// is written last.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_schema.h"
#include "checkpoint/checkpoint_seal.h"
#include "checkpoint/hdf5_call.h"
#include "core/file.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"

#ifndef ADAPT_VERSION_STRING
#define ADAPT_VERSION_STRING "unknown"
#endif

namespace adapt::checkpoint {

using namespace detail;

std::string checkpoint_file_name(std::int64_t step) {
  ADAPT_REQUIRE(step >= 0, CheckpointError, "checkpoint step {} is negative; steps count from 0", step);
  return fmt::format("step_{:08d}.h5", step);
}

namespace {

/// A finished HDF5 file in memory: the core driver's buffer, taken over when the file closed.
struct FileImage {
  std::unique_ptr<char, decltype(&std::free)> data{nullptr, &std::free};
  std::size_t size_bytes = 0;
};

/// File-image callbacks for the core driver: plain malloc/realloc, except that the buffer freed at
/// file close is kept (it then holds the complete, closed file, superblock checksum included).
struct ImageSink {
  void* kept = nullptr;
  std::size_t kept_bytes = 0;
  std::size_t live_bytes = 0;  // size of the file's buffer (the core driver has one)
  ~ImageSink() { std::free(kept); }

  static void* malloc_cb(std::size_t n, H5FD_file_image_op_t, void* udata) {
    void* p = std::malloc(n);
    if (p) static_cast<ImageSink*>(udata)->live_bytes = n;
    return p;
  }
  static void* memcpy_cb(void* dst, const void* src, std::size_t n, H5FD_file_image_op_t, void*) {
    return std::memcpy(dst, src, n);
  }
  static void* realloc_cb(void* p, std::size_t n, H5FD_file_image_op_t, void* udata) {
    void* q = std::realloc(p, n);
    if (q) static_cast<ImageSink*>(udata)->live_bytes = n;
    return q;
  }
  static herr_t free_cb(void* p, H5FD_file_image_op_t op, void* udata) {
    auto* sink = static_cast<ImageSink*>(udata);
    if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE) {
      std::free(sink->kept);
      sink->kept = p;
      sink->kept_bytes = sink->live_bytes;
    } else {
      std::free(p);
    }
    return 0;
  }
  static void* udata_copy_cb(void* udata) { return udata; }  // shared; the writer owns it
  static herr_t udata_free_cb(void*) { return 0; }
};

/// Length of an HDF5 file image: the superblock's end-of-file address (format spec, superblock
/// versions 2 and 3: signature, version, offset/length sizes, flags, then base, extension, EOF
/// addresses). The core driver's buffer is larger (it grows in increments).
/// The superblock follows the user block (kSealBytes); its base address is the user block's size and
/// its end-of-file address counts from the start of the file (user block included).
std::size_t image_length(const char* image, std::size_t buffer_bytes) {
  static constexpr unsigned char kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  const char* sb = image + kSealBytes;
  ADAPT_CHECK(buffer_bytes >= kSealBytes + 48 && std::memcmp(sb, kSignature, 8) == 0,
              "HDF5 image has no superblock after its {}-byte user block", kSealBytes);
  const auto version = static_cast<unsigned char>(sb[8]);
  const auto offset_bytes = static_cast<unsigned char>(sb[9]);
  ADAPT_CHECK((version == 2 || version == 3) && offset_bytes == 8, "unexpected HDF5 superblock v{} ({}-byte offsets)",
              version, offset_bytes);
  std::uint64_t base = 0, eof = 0;
  std::memcpy(&base, sb + 12, 8);  // little-endian fields on a little-endian host
  std::memcpy(&eof, sb + 28, 8);
  ADAPT_CHECK(base == kSealBytes && eof > kSealBytes && eof <= buffer_bytes,
              "HDF5 image: base address {}, end-of-file address {}, buffer of {} bytes", base, eof, buffer_bytes);
  return static_cast<std::size_t>(eof);
}

/// Writes one checkpoint file into memory; every HDF5 call is checked and names its object.
class H5Writer {
 public:
  /// `expected_bytes` sizes the in-memory file (it grows past it if needed). `path` is for messages.
  H5Writer(const fs::path& path, std::size_t expected_bytes) : place_{path, /*writing=*/true} {
    H5Id fapl = own(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate(file access)", "/");
    check(H5Pset_fapl_core(fapl, expected_bytes, /*backing_store=*/0), "H5Pset_fapl_core", "/");
    H5FD_file_image_callbacks_t callbacks = {&ImageSink::malloc_cb,
                                             &ImageSink::memcpy_cb,
                                             &ImageSink::realloc_cb,
                                             &ImageSink::free_cb,
                                             &ImageSink::udata_copy_cb,
                                             &ImageSink::udata_free_cb,
                                             &sink_};
    check(H5Pset_file_image_callbacks(fapl, &callbacks), "H5Pset_file_image_callbacks", "/");
    // 1.8+ format: checksummed metadata, and dense storage for attributes above 64 KiB.
    check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110), "H5Pset_libver_bounds", "/");
    check(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG), "H5Pset_fclose_degree", "/");
    // No modification times in object headers: the same state gives the same bytes.
    H5Id fcpl = own(H5Pcreate(H5P_FILE_CREATE), "H5Pcreate(file create)", "/");
    check(H5Pset_obj_track_times(fcpl, 0), "H5Pset_obj_track_times", "/");
    // The user block holds adapt's seal (checkpoint_seal.h), written once the image is complete.
    check(H5Pset_userblock(fcpl, kSealBytes), "H5Pset_userblock", "/");
    gcpl_ = own(H5Pcreate(H5P_GROUP_CREATE), "H5Pcreate(group create)", "/");
    check(H5Pset_obj_track_times(gcpl_, 0), "H5Pset_obj_track_times", "/");
    file_ = own(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl, fapl), "H5Fcreate", "/");
    created_groups_.insert("/");
  }

  /// Creates `path` ("/a/b") and its parents unless they exist.
  void ensure_group(const std::string& path) {
    if (created_groups_.count(path)) return;
    const std::size_t slash = path.rfind('/');
    ensure_group(slash == 0 ? std::string("/") : path.substr(0, slash));
    H5Id g = own(H5Gcreate2(file_, path.c_str(), H5P_DEFAULT, gcpl_, H5P_DEFAULT), "H5Gcreate2", path);
    closed(g, "H5Gclose", path);
    created_groups_.insert(path);
  }

  void write_string(const std::string& group, const std::string& name, const std::string& value) {
    H5Id type = utf8_type(group);
    const char* p = value.c_str();
    write_attr(group, name, type, type, &p);
  }
  void write_int(const std::string& group, const std::string& name, std::int64_t value) {
    write_attr(group, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
  }
  void write_float(const std::string& group, const std::string& name, double value) {
    write_attr(group, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
  }

  /// One dataset at "/<name>": chunked with a Fletcher-32 checksum per chunk (contiguous when it
  /// has no elements or is a scalar, which HDF5 cannot chunk), plus its `dtype` attribute.
  void write_tensor(const std::string& name, const Tensor& tensor) {
    const std::string path = h5_path(name);
    const std::size_t slash = path.rfind('/');
    ensure_group(slash == 0 ? std::string("/") : path.substr(0, slash));
    const Tensor t = tensor.is_contiguous() ? tensor : tensor.to_host(tensor.dtype());
    const int rank = t.rank();
    std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
    for (int i = 0; i < rank; ++i) dims[static_cast<std::size_t>(i)] = static_cast<hsize_t>(t.dim(i));
    H5Id space = rank == 0 ? own(H5Screate(H5S_SCALAR), "H5Screate", path)
                           : own(H5Screate_simple(rank, dims.data(), nullptr), "H5Screate_simple", path);
    H5Id dcpl = own(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate(dataset create)", path);
    check(H5Pset_obj_track_times(dcpl, 0), "H5Pset_obj_track_times", path);
    if (rank > 0 && t.numel() > 0) {
      const std::vector<hsize_t> chunk = chunk_dims(dims, dtype_size(t.dtype()));
      check(H5Pset_chunk(dcpl, rank, chunk.data()), "H5Pset_chunk", path);
      check(H5Pset_fletcher32(dcpl), "H5Pset_fletcher32", path);
    }
    H5Id file_type = h5_file_type(t.dtype());
    H5Id mem_type = h5_mem_type(t.dtype());
    H5Id ds =
        own(H5Dcreate2(file_, path.c_str(), file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), "H5Dcreate2", path);
    if (t.numel() > 0) check(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()), "H5Dwrite", path);
    write_string_on(ds, path, kAttrDtype, std::string(dtype_name(t.dtype())));
    closed(ds, "H5Dclose", path);
  }

  /// Closes the file and hands over its image. (H5Fget_file_image is not used: in HDF5 1.10 it
  /// clears the superblock status flags without updating the superblock checksum.)
  FileImage finish() {
    gcpl_.reset();
    closed(file_, "H5Fclose", "/");
    ADAPT_CHECK(sink_.kept != nullptr, "the HDF5 core driver did not hand over the file image at close");
    FileImage image;
    image.data.reset(static_cast<char*>(std::exchange(sink_.kept, nullptr)));
    std::size_t buffer_bytes = 0;
    std::swap(buffer_bytes, sink_.kept_bytes);
    image.size_bytes = image_length(image.data.get(), buffer_bytes);
    return image;
  }

 private:
  H5Place place_;
  ImageSink sink_;  // declared before file_: outlives the file, which fills it when it closes
  H5Id file_;
  H5Id gcpl_;
  std::set<std::string> created_groups_;

  template <typename T>
  T check(T status, std::string_view call, std::string_view object) {
    return h5_check(status, place_, call, object);
  }
  H5Id own(hid_t id, std::string_view call, std::string_view object) { return h5_own(id, place_, call, object); }
  void closed(H5Id& id, std::string_view call, std::string_view object) {
    if (id.close() < 0) h5_fail(place_, call, object);
  }

  void write_attr(const std::string& group, const std::string& name, hid_t file_type, hid_t mem_type,
                  const void* value) {
    H5Id g = own(H5Gopen2(file_, group.c_str(), H5P_DEFAULT), "H5Gopen2", group);
    write_attr_on(g, attr_object(group, name), name, file_type, mem_type, value);
    closed(g, "H5Gclose", group);
  }
  void write_string_on(hid_t loc, const std::string& object, const std::string& name, const std::string& value) {
    const std::string where = attr_object(object, name);
    H5Id type = utf8_type(where);
    const char* p = value.c_str();
    write_attr_on(loc, where, name, type, type, &p);
  }
  /// Variable-length UTF-8 string: h5py reads it as str, and it has no length limit.
  H5Id utf8_type(const std::string& where) {
    H5Id type = own(H5Tcopy(H5T_C_S1), "H5Tcopy", where);
    check(H5Tset_size(type, H5T_VARIABLE), "H5Tset_size", where);
    check(H5Tset_cset(type, H5T_CSET_UTF8), "H5Tset_cset", where);
    return type;
  }
  void write_attr_on(hid_t loc, const std::string& where, const std::string& name, hid_t file_type, hid_t mem_type,
                     const void* value) {
    H5Id space = own(H5Screate(H5S_SCALAR), "H5Screate", where);
    H5Id a = own(H5Acreate2(loc, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2", where);
    check(H5Awrite(a, mem_type, value), "H5Awrite", where);
    closed(a, "H5Aclose", where);
  }
  static std::string attr_object(const std::string& group, const std::string& name) {
    return group + "@" + name;  // "/rng@cpu": attribute `cpu` of group /rng
  }

  /// Full extent in every dimension, halving the outermost ones until a chunk is at most
  /// kChunkTargetBytes (chunks span whole rows, so a row-range read touches few chunks).
  static std::vector<hsize_t> chunk_dims(const std::vector<hsize_t>& dims, std::size_t elem_bytes) {
    std::vector<hsize_t> c = dims;
    auto bytes = [&] {
      std::uint64_t n = elem_bytes;
      for (hsize_t d : c) n *= d;
      return n;
    };
    for (std::size_t i = 0; i < c.size() && bytes() > kChunkTargetBytes;) {
      if (c[i] > 1) {
        c[i] = (c[i] + 1) / 2;
      } else {
        ++i;
      }
    }
    return c;
  }
};

/// Bytes the file will take: the tensors plus room for metadata (groups, attributes, chunk indexes).
std::size_t expected_file_bytes(const CheckpointState& state) {
  std::size_t n = std::size_t{1} << 20;
  for (const auto& [name, t] : state.tensors) n += t.size_bytes() + 512 + name.size();
  for (const auto& [key, v] : state.strings) n += v.size() + 256;
  n += state.config_toml.size() + 256 * (state.ints.size() + state.floats.size());
  return n;
}

/// The HDF5 file for `state`, in memory.
FileImage build_image(const fs::path& tmp, const CheckpointState& state, const SaveOptions& options) {
  H5Writer w(tmp, expected_file_bytes(state));
  w.ensure_group(kMetaGroup);
  w.write_int(kMetaGroup, kAttrFormatVersion, kFormatVersion);
  w.write_string(kMetaGroup, kAttrCreatedBy,
                 state.created_by.empty() ? std::string("adapt " ADAPT_VERSION_STRING) : state.created_by);
  w.write_int(kMetaGroup, kAttrStep, state.step);
  w.write_string(kMetaGroup, kAttrFingerprint, state.base_model_fingerprint);
  w.write_string(kMetaGroup, kAttrWorldLayout, state.world_layout);
  w.write_string(kMetaGroup, kAttrConfigToml, state.config_toml);
  w.write_int(kMetaGroup, kAttrTensorCount, static_cast<std::int64_t>(state.tensors.size()));

  std::int64_t total_bytes = 0, done_bytes = 0;
  for (const auto& [name, t] : state.tensors) total_bytes += static_cast<std::int64_t>(t.size_bytes());
  for (const auto& [name, t] : state.tensors) {
    w.write_tensor(name, t);
    done_bytes += static_cast<std::int64_t>(t.size_bytes());
    if (options.on_dataset) options.on_dataset(name, done_bytes, total_bytes);
  }
  auto scalar_group = [&](const std::string& key) {
    auto loc = scalar_location(key);
    w.ensure_group(loc.first);
    return loc;
  };
  for (const auto& [key, value] : state.strings) {
    const auto [group, attr] = scalar_group(key);
    w.write_string(group, attr, value);
  }
  for (const auto& [key, value] : state.ints) {
    const auto [group, attr] = scalar_group(key);
    w.write_int(group, attr, value);
  }
  for (const auto& [key, value] : state.floats) {
    const auto [group, attr] = scalar_group(key);
    w.write_float(group, attr, value);
  }
  w.write_int(kMetaGroup, kAttrComplete, 1);  // last: a file without it was not finished
  FileImage image = w.finish();
  seal_image(image.data.get(), image.size_bytes);
  return image;
}

/// Writes `image` to `tmp` and fsyncs it. Throws CheckpointError (the caller removes `tmp`).
void write_and_fsync(const fs::path& tmp, const FileImage& image, std::int64_t step) {
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ADAPT_REQUIRE(fd >= 0, CheckpointError, "cannot create checkpoint '{}': {}. Check that the folder is writable.",
                tmp.string(), std::strerror(errno));
  try {
    fd_write_all(fd, image.data.get(), image.size_bytes, tmp);
  } catch (const IoError& e) {
    ::close(fd);
    ADAPT_THROW(CheckpointError, "checkpoint of step {} not saved: {} The previous checkpoint and 'latest' are kept.",
                step, e.what());
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  ADAPT_REQUIRE(rc == 0, CheckpointError,
                "checkpoint of step {} not saved: cannot fsync '{}': {}. Check free space and quota of the "
                "checkpoint folder; the previous checkpoint and 'latest' are kept.",
                step, tmp.string(), std::strerror(err));
}

void validate_for_save(const CheckpointState& state) {
  ADAPT_REQUIRE(state.step >= 0, CheckpointError, "checkpoint step {} is negative; steps count from 0", state.step);
  validate_state_names(state);
  for (const auto& [name, t] : state.tensors) {
    ADAPT_REQUIRE(t.defined(), CheckpointError, "checkpoint tensor '{}' is undefined (no storage)", name);
    ADAPT_REQUIRE(t.device().host_accessible(), CheckpointError,
                  "checkpoint tensor '{}' lives on {}; copy it to host memory before checkpoint_save (the "
                  "checkpoint module reads host memory only)",
                  name, t.device().str());
  }
}

void remove_quietly(const fs::path& p, std::string_view why) {
  std::error_code ec;
  if (fs::remove(p, ec)) {
    log::info0("checkpoint: removed '{}' ({})", p.string(), why);
  } else if (ec) {
    log::warn("checkpoint: cannot remove '{}' ({}): {}; remove it by hand", p.string(), why, ec.message());
  }
}

/// After a commit: drop .tmp files of crashed writers, then keep the file just written plus the
/// keep_last - 1 newest earlier ones.
void rotate(const fs::path& dir, std::int64_t written_step, int keep_last) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool h5_tmp = name.ends_with(".h5.tmp") && parse_checkpoint_file_name(name.substr(0, name.size() - 4));
    const bool latest_tmp = name.starts_with(std::string(kLatestFile) + ".tmp.");
    if (h5_tmp || latest_tmp) remove_quietly(entry.path(), "unfinished file of an interrupted save");
  }
  if (keep_last <= 0) return;
  std::vector<CheckpointFile> files = checkpoint_list(dir);
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  int kept = 1;  // the one just written
  for (const CheckpointFile& f : files) {
    if (f.step == written_step) continue;
    if (f.step > written_step) {
      remove_quietly(f.path, fmt::format("newer than step {}: left by a run that resumed from an earlier checkpoint",
                                         written_step));
    } else if (kept < keep_last) {
      ++kept;
    } else {
      remove_quietly(f.path, fmt::format("keep_last = {}", keep_last));
    }
  }
  dir_fsync(dir);
}

}  // namespace

fs::path checkpoint_save(const fs::path& dir, const CheckpointState& state, const SaveOptions& options) {
  const Timer timer;
  H5Session session;
  validate_for_save(state);
  std::error_code ec;
  fs::create_directories(dir, ec);
  ADAPT_REQUIRE(!ec && fs::is_directory(dir), CheckpointError,
                "cannot create checkpoint folder '{}': {}. Check the path and its permissions.", dir.string(),
                ec ? ec.message() : "exists but is not a folder");

  const std::string name = checkpoint_file_name(state.step);
  const fs::path final_path = dir / name;
  const fs::path tmp_path = dir / (name + ".tmp");
  try {
    write_and_fsync(tmp_path, build_image(tmp_path, state, options), state.step);
    ADAPT_REQUIRE(::rename(tmp_path.c_str(), final_path.c_str()) == 0, CheckpointError,
                  "cannot rename '{}' to '{}': {}", tmp_path.string(), final_path.string(), std::strerror(errno));
  } catch (...) {
    ::unlink(tmp_path.c_str());
    throw;
  }
  dir_fsync(dir);
  // Until this rename lands, readers still resolve the previous checkpoint.
  file_write_atomic(dir / kLatestFile, name + "\n");

  std::int64_t n_bytes = 0;
  for (const auto& [n, t] : state.tensors) n_bytes += static_cast<std::int64_t>(t.size_bytes());
  // One process writes a checkpoint (rank 0 of a job): its lines carry no rank tag, as rank 0's others.
  log::info0("checkpoint: wrote '{}' (step {}, {} tensors: {} of values, {} on disk) in {:.2f} s", final_path.string(),
             state.step, state.tensors.size(), format_bytes(static_cast<std::uint64_t>(n_bytes)),
             format_bytes(static_cast<std::uint64_t>(fs::file_size(final_path))), timer.seconds());
  rotate(dir, state.step, options.keep_last);
  return final_path;
}

}  // namespace adapt::checkpoint
