// checkpoint_load / checkpoint_verify: read the file whole and check its seal (length, CRC-32C;
// checkpoint_seal.h), open those bytes with HDF5 from memory, check /meta (completion marker, format
// version, fingerprint) before touching tensors, then walk every group and dataset in name order.
// Only hard links to groups and datasets are followed (no soft or external links).
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <variant>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_schema.h"
#include "checkpoint/checkpoint_seal.h"
#include "checkpoint/hdf5_call.h"

namespace adapt::checkpoint {

using namespace detail;

namespace {

using Scalar = std::variant<std::string, std::int64_t, double>;

struct Meta {
  std::int64_t format_version = 0;
  std::int64_t step = 0;
  std::int64_t n_tensors = 0;
  std::string created_by, base_model_fingerprint, world_layout, config_toml;
};

/// Rows of a dataset decoded at once by checkpoint_verify (bounds its buffer next to the file image).
constexpr std::size_t kVerifyBlockBytes = std::size_t{64} << 20;

/// File-image callbacks that let HDF5's core driver read the sealed bytes in place: every "copy"
/// the library asks for is the one buffer, and nothing is freed (the reader owns it). Read-only, so
/// the driver never grows it.
struct ImageSource {
  void* data = nullptr;
  std::size_t size_bytes = 0;

  static void* malloc_cb(std::size_t n, H5FD_file_image_op_t, void* udata) {
    auto* s = static_cast<ImageSource*>(udata);
    return n == s->size_bytes ? s->data : nullptr;
  }
  static void* memcpy_cb(void* dst, const void* src, std::size_t, H5FD_file_image_op_t, void*) {
    return dst == src ? dst : nullptr;  // only ever asked to copy the buffer onto itself
  }
  static void* realloc_cb(void*, std::size_t, H5FD_file_image_op_t, void*) { return nullptr; }
  static herr_t free_cb(void*, H5FD_file_image_op_t, void*) { return 0; }
  static void* udata_copy_cb(void* udata) { return udata; }
  static herr_t udata_free_cb(void*) { return 0; }
};

class H5Reader {
 public:
  /// Reads the file, checks its seal (length and CRC-32C; checkpoint_seal.h), and only then opens
  /// the checked bytes with HDF5, from memory.
  explicit H5Reader(const fs::path& path) : place_{path, /*writing=*/false}, sealed_(read_sealed(path)) {
    source_.data = sealed_.bytes.get();
    source_.size_bytes = sealed_.size_bytes;
    H5Id fapl = own(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate(file access)", "/");
    check(H5Pset_fapl_core(fapl, std::size_t{1} << 20, /*backing_store=*/0), "H5Pset_fapl_core", "/");
    H5FD_file_image_callbacks_t callbacks = {&ImageSource::malloc_cb,
                                             &ImageSource::memcpy_cb,
                                             &ImageSource::realloc_cb,
                                             &ImageSource::free_cb,
                                             &ImageSource::udata_copy_cb,
                                             &ImageSource::udata_free_cb,
                                             &source_};
    check(H5Pset_file_image_callbacks(fapl, &callbacks), "H5Pset_file_image_callbacks", "/");
    check(H5Pset_file_image(fapl, source_.data, source_.size_bytes), "H5Pset_file_image", "/");
    check(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG), "H5Pset_fclose_degree", "/");
    // The core driver refuses a file image under the name of a file that exists; the name is only
    // a label here, so it gets one that names no file.
    const std::string label = "adapt-checkpoint-image:" + path.string();
    file_ = own(H5Fopen(label.c_str(), H5F_ACC_RDONLY, fapl), "H5Fopen", "/");
  }

  const fs::path& path() const { return place_.file; }

  Meta read_meta() {
    const htri_t has_meta = check(H5Lexists(file_, kMetaGroup, H5P_DEFAULT), "H5Lexists", kMetaGroup);
    ADAPT_REQUIRE(has_meta > 0, CheckpointError,
                  "checkpoint '{}' has no /meta group, so it is not an adapt checkpoint (or its writer stopped "
                  "at once)",
                  path().string());
    H5Id g = own(H5Gopen2(file_, kMetaGroup, H5P_DEFAULT), "H5Gopen2", kMetaGroup);
    Meta m;
    const std::optional<Scalar> complete = read_attr_if(g, kMetaGroup, kAttrComplete);
    ADAPT_REQUIRE(complete && std::holds_alternative<std::int64_t>(*complete) && std::get<std::int64_t>(*complete) == 1,
                  CheckpointError,
                  "checkpoint '{}' is incomplete: /meta has no attribute complete = 1, so its writer did not "
                  "finish. Use an earlier checkpoint.",
                  path().string());
    m.format_version = meta_int(g, kAttrFormatVersion);
    ADAPT_REQUIRE(m.format_version == kFormatVersion, CheckpointError,
                  "checkpoint '{}' has format_version {}, but this build of adapt reads format_version {}. Resume "
                  "with the adapt version that wrote it{}.",
                  path().string(), m.format_version, kFormatVersion,
                  m.format_version > kFormatVersion ? " or a newer one" : "");
    m.step = meta_int(g, kAttrStep);
    m.n_tensors = meta_int(g, kAttrTensorCount);
    m.created_by = meta_string(g, kAttrCreatedBy);
    m.base_model_fingerprint = meta_string(g, kAttrFingerprint);
    m.world_layout = meta_string(g, kAttrWorldLayout);
    m.config_toml = meta_string(g, kAttrConfigToml);
    return m;
  }

  /// Visits every group below "/" (except /meta) with its attributes, and every dataset, in name
  /// order. `on_dataset(name, id)` gets the tensor name ("adapters/x") and the open dataset.
  void walk(const std::function<void(const std::string& key, Scalar value)>& on_scalar,
            const std::function<void(const std::string& name, hid_t dataset)>& on_dataset) {
    walk_group("/", on_scalar, on_dataset);
  }

  /// The dtype (from the `dtype` attribute, cross-checked with the stored HDF5 type) and the shape.
  std::pair<DType, Shape> inspect(hid_t ds, const std::string& path) {
    const std::optional<Scalar> attr = read_attr_if(ds, path, kAttrDtype);
    ADAPT_REQUIRE(attr && std::holds_alternative<std::string>(*attr), CheckpointError,
                  "checkpoint '{}': dataset '{}' has no string attribute 'dtype' (f32, bf16, f16, i32, i64, u8), "
                  "so its element type is unknown",
                  path_str(), path);
    const std::string& name = std::get<std::string>(*attr);
    std::optional<DType> dtype;
    for (DType d : {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8})
      if (dtype_name(d) == name) dtype = d;
    ADAPT_REQUIRE(dtype.has_value(), CheckpointError,
                  "checkpoint '{}': dataset '{}' has dtype '{}'; known dtypes are f32, bf16, f16, i32, i64, u8",
                  path_str(), path, name);
    H5Id stored = own(H5Dget_type(ds), "H5Dget_type", path);
    H5Id expected = h5_file_type(*dtype);
    ADAPT_REQUIRE(check(H5Tequal(stored, expected), "H5Tequal", path) > 0, CheckpointError,
                  "checkpoint '{}': dataset '{}' says dtype {} but is stored as {}; expected {}", path_str(), path,
                  name, describe_type(stored), describe_type(expected));
    H5Id space = own(H5Dget_space(ds), "H5Dget_space", path);
    const H5S_class_t kind = H5Sget_simple_extent_type(space);
    if (kind == H5S_NO_CLASS) h5_fail(place_, "H5Sget_simple_extent_type", path);
    ADAPT_REQUIRE(kind == H5S_SCALAR || kind == H5S_SIMPLE, CheckpointError,
                  "checkpoint '{}': dataset '{}' has no extent (a null dataspace)", path_str(), path);
    if (kind == H5S_SCALAR) return {*dtype, Shape{}};
    const int rank = check(H5Sget_simple_extent_ndims(space), "H5Sget_simple_extent_ndims", path);
    ADAPT_REQUIRE(rank <= Shape::kMaxDims, CheckpointError,
                  "checkpoint '{}': dataset '{}' has {} dimensions; adapt tensors have at most {}", path_str(), path,
                  rank, Shape::kMaxDims);
    std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
    check(H5Sget_simple_extent_dims(space, dims.data(), nullptr), "H5Sget_simple_extent_dims", path);
    std::vector<std::int64_t> d(dims.begin(), dims.end());
    return {*dtype, Shape(d)};
  }

  Tensor read_tensor(hid_t ds, const std::string& name) {
    const std::string path = h5_path(name);
    const auto [dtype, shape] = inspect(ds, path);
    Tensor t = Tensor::empty(shape, dtype, host_allocator(), name);
    H5Id mem_type = h5_mem_type(dtype);
    if (t.numel() > 0) check(H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()), "H5Dread", path);
    return t;
  }

  /// Reads every element (HDF5 checks each chunk's Fletcher-32 sum) in blocks of rows.
  void verify_dataset(hid_t ds, const std::string& name) {
    const std::string path = h5_path(name);
    const auto [dtype, shape] = inspect(ds, path);
    if (shape.numel() == 0) return;
    H5Id mem_type = h5_mem_type(dtype);
    const std::size_t row_bytes =
        static_cast<std::size_t>(shape.rank() == 0 ? 1 : shape.numel() / shape[0]) * dtype_size(dtype);
    if (shape.rank() == 0 || static_cast<std::size_t>(shape.numel()) * dtype_size(dtype) <= kVerifyBlockBytes) {
      std::vector<unsigned char> buf(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype));
      check(H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), "H5Dread", path);
      return;
    }
    const auto rows_per_block = static_cast<std::int64_t>(std::max<std::size_t>(1, kVerifyBlockBytes / row_bytes));
    std::vector<unsigned char> buf(static_cast<std::size_t>(rows_per_block) * row_bytes);
    H5Id file_space = own(H5Dget_space(ds), "H5Dget_space", path);
    for (std::int64_t row = 0; row < shape[0]; row += rows_per_block) {
      std::vector<hsize_t> start(static_cast<std::size_t>(shape.rank()), 0), count(start.size());
      for (int i = 0; i < shape.rank(); ++i) count[static_cast<std::size_t>(i)] = static_cast<hsize_t>(shape[i]);
      start[0] = static_cast<hsize_t>(row);
      count[0] = static_cast<hsize_t>(std::min(rows_per_block, shape[0] - row));
      check(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
            "H5Sselect_hyperslab", path);
      H5Id mem_space = own(H5Screate_simple(shape.rank(), count.data(), nullptr), "H5Screate_simple", path);
      check(H5Dread(ds, mem_type, mem_space, file_space, H5P_DEFAULT, buf.data()), "H5Dread", path);
    }
  }

  void close() {
    if (file_.close() < 0) h5_fail(place_, "H5Fclose", "/");
  }

 private:
  H5Place place_;
  SealedFile sealed_;  // the file's bytes; declared before file_, which reads them until it closes
  ImageSource source_;
  H5Id file_;

  std::string path_str() const { return place_.file.string(); }

  template <typename T>
  T check(T status, std::string_view call, std::string_view object) {
    return h5_check(status, place_, call, object);
  }
  H5Id own(hid_t id, std::string_view call, std::string_view object) { return h5_own(id, place_, call, object); }

  std::int64_t meta_int(hid_t g, const char* name) {
    const std::optional<Scalar> v = read_attr_if(g, kMetaGroup, name);
    ADAPT_REQUIRE(v && std::holds_alternative<std::int64_t>(*v), CheckpointError,
                  "checkpoint '{}': /meta has no integer attribute '{}'", path_str(), name);
    return std::get<std::int64_t>(*v);
  }
  std::string meta_string(hid_t g, const char* name) {
    const std::optional<Scalar> v = read_attr_if(g, kMetaGroup, name);
    ADAPT_REQUIRE(v && std::holds_alternative<std::string>(*v), CheckpointError,
                  "checkpoint '{}': /meta has no string attribute '{}'", path_str(), name);
    return std::get<std::string>(*v);
  }

  std::optional<Scalar> read_attr_if(hid_t loc, const std::string& object, const char* name) {
    const std::string where = object + "@" + name;
    if (check(H5Aexists(loc, name), "H5Aexists", where) <= 0) return std::nullopt;
    H5Id a = own(H5Aopen(loc, name, H5P_DEFAULT), "H5Aopen", where);
    return read_attr(a, where);
  }

  Scalar read_attr(hid_t a, const std::string& where) {
    H5Id space = own(H5Aget_space(a), "H5Aget_space", where);
    const hssize_t n = check(H5Sget_simple_extent_npoints(space), "H5Sget_simple_extent_npoints", where);
    ADAPT_REQUIRE(n == 1, CheckpointError,
                  "checkpoint '{}': attribute '{}' holds {} values; checkpoint scalars hold exactly one", path_str(),
                  where, n);
    H5Id type = own(H5Aget_type(a), "H5Aget_type", where);
    switch (H5Tget_class(type)) {
      case H5T_INTEGER: {
        std::int64_t v = 0;
        check(H5Aread(a, H5T_NATIVE_INT64, &v), "H5Aread", where);
        return v;
      }
      case H5T_FLOAT: {
        double v = 0;
        check(H5Aread(a, H5T_NATIVE_DOUBLE, &v), "H5Aread", where);
        return v;
      }
      case H5T_STRING: return read_string_attr(a, type, where);
      default: break;
    }
    ADAPT_THROW(CheckpointError,
                "checkpoint '{}': attribute '{}' has type {}; checkpoint scalars are strings, integers or floats",
                path_str(), where, describe_type(type));
  }

  std::string read_string_attr(hid_t a, hid_t file_type, const std::string& where) {
    const htri_t variable = check(H5Tis_variable_str(file_type), "H5Tis_variable_str", where);
    H5Id mem = own(H5Tcopy(H5T_C_S1), "H5Tcopy", where);
    check(H5Tset_cset(mem, H5Tget_cset(file_type)), "H5Tset_cset", where);
    if (variable > 0) {
      check(H5Tset_size(mem, H5T_VARIABLE), "H5Tset_size", where);
      char* p = nullptr;
      check(H5Aread(a, mem, &p), "H5Aread", where);
      std::string s = p ? p : "";
      if (p) H5free_memory(p);
      return s;
    }
    const std::size_t size = H5Tget_size(file_type);
    ADAPT_REQUIRE(size > 0, CheckpointError, "checkpoint '{}': string attribute '{}' has size 0", path_str(), where);
    check(H5Tset_size(mem, size + 1), "H5Tset_size", where);
    check(H5Tset_strpad(mem, H5T_STR_NULLTERM), "H5Tset_strpad", where);
    std::vector<char> buf(size + 1, '\0');
    check(H5Aread(a, mem, buf.data()), "H5Aread", where);
    return std::string(buf.data());
  }

  std::string describe_type(hid_t type) {
    const H5T_class_t cls = H5Tget_class(type);
    const std::size_t size = H5Tget_size(type);
    const char* kind = cls == H5T_INTEGER  ? (H5Tget_sign(type) == H5T_SGN_NONE ? "unsigned integer" : "integer")
                       : cls == H5T_FLOAT  ? "float"
                       : cls == H5T_STRING ? "string"
                                           : "non-numeric type";
    const char* order = H5Tget_order(type) == H5T_ORDER_BE ? " big-endian" : "";
    return fmt::format("{}-bit{} {}", size * 8, order, kind);
  }

  void walk_group(const std::string& path, const std::function<void(const std::string&, Scalar)>& on_scalar,
                  const std::function<void(const std::string&, hid_t)>& on_dataset) {
    H5Id g = own(H5Gopen2(file_, path.c_str(), H5P_DEFAULT), "H5Gopen2", path);
    const std::string prefix = path == "/" ? std::string() : path.substr(1) + "/";
    std::vector<std::string> attrs;
    hsize_t idx = 0;
    check(H5Aiterate2(
              g, H5_INDEX_NAME, H5_ITER_INC, &idx,
              [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
                static_cast<std::vector<std::string>*>(data)->emplace_back(name);
                return 0;
              },
              &attrs),
          "H5Aiterate2", path);
    for (const std::string& a : attrs) {
      const std::string where = path + "@" + a;
      H5Id attr = own(H5Aopen(g, a.c_str(), H5P_DEFAULT), "H5Aopen", where);
      on_scalar(prefix + a, read_attr(attr, where));
    }
    H5G_info_t info{};
    check(H5Gget_info(g, &info), "H5Gget_info", path);
    for (hsize_t i = 0; i < info.nlinks; ++i) {
      const ssize_t len = check(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT),
                                "H5Lget_name_by_idx", path);
      std::string name(static_cast<std::size_t>(len) + 1, '\0');
      check(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT),
            "H5Lget_name_by_idx", path);
      name.resize(static_cast<std::size_t>(len));
      const std::string child = path == "/" ? "/" + name : path + "/" + name;
      if (child == kMetaGroup) continue;
      H5L_info_t link{};
      check(H5Lget_info(g, name.c_str(), &link, H5P_DEFAULT), "H5Lget_info", child);
      ADAPT_REQUIRE(link.type == H5L_TYPE_HARD, CheckpointError,
                    "checkpoint '{}': '{}' is a soft or external link; adapt checkpoints hold only groups and "
                    "datasets",
                    path_str(), child);
      H5Id obj = own(H5Oopen(g, name.c_str(), H5P_DEFAULT), "H5Oopen", child);
      const H5I_type_t kind = H5Iget_type(obj);
      if (kind == H5I_BADID) h5_fail(place_, "H5Iget_type", child);
      switch (kind) {
        case H5I_GROUP: walk_group(child, on_scalar, on_dataset); break;
        case H5I_DATASET: on_dataset(child.substr(1), obj); break;
        default:
          ADAPT_THROW(CheckpointError,
                      "checkpoint '{}': '{}' is neither a group nor a dataset (a named datatype?); adapt "
                      "checkpoints hold only groups and datasets",
                      path_str(), child);
      }
    }
  }
};

void check_fingerprint(const fs::path& path, const Meta& m, const LoadOptions& options) {
  if (!options.expected_base_model_fingerprint) return;
  const std::string& want = *options.expected_base_model_fingerprint;
  ADAPT_REQUIRE(m.base_model_fingerprint == want, CheckpointError,
                "checkpoint '{}' was written for base model fingerprint '{}', but this run's base model has "
                "fingerprint '{}'. Hint: point model.path at the base model used for training.",
                path.string(), m.base_model_fingerprint, want);
}

void check_tensor_count(const fs::path& path, const Meta& m, std::int64_t found) {
  ADAPT_REQUIRE(found == m.n_tensors, CheckpointError,
                "checkpoint '{}' holds {} datasets, but /meta n_tensors says {}; the file was modified after it "
                "was written",
                path.string(), found, m.n_tensors);
}

}  // namespace

CheckpointState checkpoint_load(const fs::path& path, const LoadOptions& options) {
  H5Session session;
  H5Reader r(path);
  const Meta m = r.read_meta();
  check_fingerprint(path, m, options);
  CheckpointState s;
  s.step = m.step;
  s.base_model_fingerprint = m.base_model_fingerprint;
  s.world_layout = m.world_layout;
  s.config_toml = m.config_toml;
  s.created_by = m.created_by;
  r.walk(
      [&](const std::string& key, Scalar v) {
        if (auto* str = std::get_if<std::string>(&v)) {
          s.strings.emplace(key, std::move(*str));
        } else if (auto* i = std::get_if<std::int64_t>(&v)) {
          s.ints.emplace(key, *i);
        } else {
          s.floats.emplace(key, std::get<double>(v));
        }
      },
      [&](const std::string& name, hid_t ds) { s.tensors.emplace(name, r.read_tensor(ds, name)); });
  check_tensor_count(path, m, static_cast<std::int64_t>(s.tensors.size()));
  r.close();
  return s;
}

std::int64_t checkpoint_verify(const fs::path& path) {
  H5Session session;
  H5Reader r(path);
  const Meta m = r.read_meta();
  std::int64_t n = 0;
  r.walk([](const std::string&, const Scalar&) {},
         [&](const std::string& name, hid_t ds) {
           r.verify_dataset(ds, name);
           ++n;
         });
  check_tensor_count(path, m, n);
  r.close();
  return m.step;
}

}  // namespace adapt::checkpoint
