// The CUDA device adapt_gen (runtime.device) and adapt_eval (--device) run the model on: "cpu", "cuda"
// (comm::device_for_rank: the GPU of the rank's local rank) or "cuda:N". Resolved at startup, before
// any weights are read or anything is written, so a node without a usable GPU fails at once with the
// setting's name, the reason CUDA gave and the way back to the CPU.
#pragma once

#include <fmt/format.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "backend/backend.h"
#include "comm/launch_env.h"
#include "core/error.h"
#include "generate/gen_config.h"

namespace adapt::apps {

/// What an app says in device errors: the setting as the user wrote it, and how to run on the host.
struct DeviceSetting {
  std::string_view name;    // "runtime.device" (a job key) or "--device" (a flag)
  std::string_view to_cpu;  // "set runtime.device = \"cpu\"", "pass --device cpu"
};

/// The index of the CUDA device to run on for `text` ("cpu", "cuda", "cuda:N"), or nullopt for the
/// host; a device becomes the calling thread's current one (backend::cuda_use_device), so that the
/// rank's CUDA context lives on its own GPU only. `env` gives the local rank for "cuda". Errors name
/// `setting`:
///   ConfigError (exit 2): `text` is none of the three forms; "cuda:N" is not a visible device; the
///     node runs more ranks than it has visible GPUs (comm::device_for_rank).
///   UnsupportedError (exit 6): no CUDA device is usable (CPU-only build, no GPU, driver), with
///     backend::cuda_unavailable_reason().
inline std::optional<int> app_device_resolve(const std::string& text, const comm::LaunchEnv& env,
                                             const DeviceSetting& setting) {
  // As the user wrote it: runtime.device = "cuda" in a job file, --device cuda on the command line.
  const std::string said = setting.name.starts_with("--") ? fmt::format("{} {}", setting.name, text)
                                                          : fmt::format("{} = \"{}\"", setting.name, text);
  const std::optional<generate::GenDevice> d = generate::gen_device_parse(text);
  ADAPT_REQUIRE(d.has_value(), ConfigError, "{} must be \"cpu\", \"cuda\" or \"cuda:N\" (N = 0, 1, ...)", said);
  if (!d->cuda) return std::nullopt;
  const int n_visible = backend::cuda_device_count();
  ADAPT_REQUIRE(n_visible > 0, UnsupportedError, "{}, but {}. {}, or {} to run on the CPU", said,
                backend::cuda_unavailable_reason(),
                ADAPT_HAVE_CUDA ? "Run on a GPU node"
                                : "Use a build with CUDA (cmake -DADAPT_CUDA=ON on a machine with "
                                  "the CUDA toolkit, or the container of containers/)",
                setting.to_cpu);
  if (d->index) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    ADAPT_REQUIRE(*d->index < n_visible, ConfigError,
                  "{}, but this process sees {} CUDA device(s), cuda:0 .. cuda:{}{}. Choose one of those, "
                  "\"cuda\" (the GPU of the rank's local rank), or {} to run on the CPU",
                  said, n_visible, n_visible - 1,
                  visible != nullptr ? fmt::format(" (CUDA_VISIBLE_DEVICES={})", visible) : std::string{},
                  setting.to_cpu);
    backend::cuda_use_device(*d->index);
    return *d->index;
  }
  int index = 0;
  try {
    index = comm::device_for_rank(env, n_visible);
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", said, e.what()), e.where());
  }
  backend::cuda_use_device(index);
  return index;
}

}  // namespace adapt::apps
