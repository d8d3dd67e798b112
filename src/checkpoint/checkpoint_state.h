// What a checkpoint holds: the step, the run's identity (base-model fingerprint, world layout,
// resolved config), named tensors with their global shapes, and small named scalars. A plain value
// type: the trainer fills it, checkpoint_save writes it, checkpoint_load returns it. Names are
// '/'-separated paths that become HDF5 groups (README.md, "Schema").
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "tensor/tensor.h"

namespace adapt::checkpoint {

/// Everything one checkpoint file stores.
///
/// Names (keys of every map) are paths of components made of [A-Za-z0-9_.-], separated by '/',
/// e.g. "adapters/layers.3.attn.q.lora_a" or "rng/cpu". The first component may not be "meta"
/// (reserved for the fields below). A tensor name may not also be a group of another name (no
/// "optim/m" beside "optim/m/x"), and a scalar name may appear in only one of the three maps.
struct CheckpointState {
  std::int64_t step = 0;               // optimizer steps taken; names the file (step_00000400.h5)
  std::string base_model_fingerprint;  // identifies the frozen base model; checked on load
  std::string world_layout;            // layout that wrote the tensors, e.g. "tp=2 pp=1 dp=4"
  std::string config_toml;             // resolved config, verbatim
  std::string created_by;              // writer identity (version, git hash); "adapt <version>" when empty

  /// Tensors with their global (unsharded) shapes. Any DType; host-accessible memory (cpu or
  /// pinned); strided views are fine. The map key is the name; on load each Tensor's name() is
  /// set to its key.
  std::map<std::string, Tensor> tensors;
  /// Scalars: UTF-8 text without NUL bytes (binary state belongs in a u8 tensor), int64, double.
  std::map<std::string, std::string> strings;
  std::map<std::string, std::int64_t> ints;
  std::map<std::string, double> floats;
};

}  // namespace adapt::checkpoint
