// Checked HDF5 calls (internal to checkpoint/). HDF5's automatic error printing is switched off;
// when a call fails its error stack is collected into the CheckpointError, which names the file and
// the object. Ids are owned by H5Id, which closes them in reverse order of creation.
#pragma once

#include <hdf5.h>

#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace adapt::checkpoint::detail {

namespace fs = std::filesystem;

/// Locks the module-wide mutex and switches HDF5's error printing off (once). Every public entry
/// point holds one for its whole duration.
class H5Session {
 public:
  H5Session();

 private:
  std::lock_guard<std::recursive_mutex> lock_;
};

/// The HDF5 error stack of the calling thread as one line ("H5Dwrite(): can't write data <- ...");
/// clears it.
std::string h5_error_stack();

/// What a failure message needs: the file, whether it was being written, and a hint.
struct H5Place {
  fs::path file;
  bool writing = false;
};

/// Throws CheckpointError: "cannot read checkpoint '<file>': <call> failed on '<object>' (HDF5: <stack>). <hint>".
[[noreturn]] void h5_fail(const H5Place& place, std::string_view call, std::string_view object);

/// Throws when `status` is negative (herr_t, htri_t and hid_t all signal failure that way).
template <typename T>
T h5_check(T status, const H5Place& place, std::string_view call, std::string_view object) {
  if (status < 0) h5_fail(place, call, object);
  return status;
}

/// An owned HDF5 id (file, group, dataset, dataspace, datatype, attribute or property list).
/// close() reports failure (it matters for files: the final flush happens there); the destructor
/// closes quietly, for unwinding after an earlier error.
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  ~H5Id() { reset(); }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  H5Id(H5Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: passes straight into H5 calls

  /// Closes the id; returns the close function's status (negative on failure; the id is released
  /// either way).
  herr_t close();
  void reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

/// Checked id creation: throws on a negative id, otherwise takes ownership.
inline H5Id h5_own(hid_t id, const H5Place& place, std::string_view call, std::string_view object) {
  return H5Id(h5_check(id, place, call, object));
}

}  // namespace adapt::checkpoint::detail
