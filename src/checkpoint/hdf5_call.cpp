#include "checkpoint/hdf5_call.h"

#include <fmt/format.h>

#include <vector>

#include "checkpoint/checkpoint.h"

namespace adapt::checkpoint::detail {

namespace {

std::recursive_mutex& h5_mutex() {
  static std::recursive_mutex m;
  return m;
}

herr_t collect_frame(unsigned /*n*/, const H5E_error2_t* e, void* data) {
  auto* frames = static_cast<std::vector<std::string>*>(data);
  char minor[160] = "";
  if (H5Eget_msg(e->min_num, nullptr, minor, sizeof minor) < 0) minor[0] = '\0';
  std::string frame = fmt::format("{}(): {}", e->func_name ? e->func_name : "?", e->desc ? e->desc : "");
  if (minor[0] != '\0') frame += fmt::format(" [{}]", minor);
  frames->push_back(std::move(frame));
  return 0;
}

}  // namespace

H5Session::H5Session() : lock_(h5_mutex()) {
  static const bool silenced = [] {
    // Failures are reported through exceptions carrying the stack, not printed by the library.
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)silenced;
}

std::string h5_error_stack() {
  const hid_t stack = H5Eget_current_stack();  // copies and clears the thread's stack
  if (stack < 0) return "no HDF5 error stack";
  std::vector<std::string> frames;
  H5Ewalk2(stack, H5E_WALK_DOWNWARD, collect_frame, &frames);
  H5Eclose_stack(stack);
  if (frames.empty()) return "no HDF5 error details";
  // Outermost call first, innermost (usually the system error) last; long stacks keep both ends.
  std::vector<std::string> shown;
  if (frames.size() > 7) {
    shown.assign(frames.begin(), frames.begin() + 2);
    shown.push_back(fmt::format("({} more)", frames.size() - 6));
    shown.insert(shown.end(), frames.end() - 4, frames.end());
  } else {
    shown = frames;
  }
  return fmt::format("{}", fmt::join(shown, " <- "));
}

void h5_fail(const H5Place& place, std::string_view call, std::string_view object) {
  const std::string stack = h5_error_stack();
  if (place.writing)
    ADAPT_THROW(CheckpointError,
                "cannot build checkpoint '{}' (in memory, before writing it): {} failed on '{}' (HDF5: {}). "
                "Check the memory available to the process; the previous checkpoint and 'latest' are kept.",
                place.file.string(), call, object, stack);
  ADAPT_THROW(CheckpointError,
              "cannot read checkpoint '{}': {} failed on '{}' (HDF5: {}). The file is truncated, corrupt or "
              "not an HDF5 file.",
              place.file.string(), call, object, stack);
}

herr_t H5Id::close() {
  if (id_ < 0) return 0;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  switch (H5Iget_type(id)) {
    // Never retried: when H5Fclose fails, HDF5 1.10 has freed the file but keeps its id, and any
    // further use of the id is a use-after-free. Writers use the in-memory driver, whose close
    // cannot fail on I/O; readers open files read-only.
    case H5I_FILE: return H5Fclose(id);
    case H5I_GROUP: return H5Gclose(id);
    case H5I_DATASET: return H5Dclose(id);
    case H5I_DATASPACE: return H5Sclose(id);
    case H5I_DATATYPE: return H5Tclose(id);
    case H5I_ATTR: return H5Aclose(id);
    case H5I_GENPROP_LST: return H5Pclose(id);
    default: return H5Idec_ref(id) < 0 ? -1 : 0;
  }
}

void H5Id::reset() {
  if (id_ < 0) return;
  close();
  H5Eclear2(H5E_DEFAULT);
}

}  // namespace adapt::checkpoint::detail
