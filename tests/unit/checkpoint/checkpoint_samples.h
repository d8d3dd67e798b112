// Deterministic checkpoint contents for the checkpoint tests and for the h5py cross-check writer:
// every dtype with awkward bit patterns (NaN payloads, signalling NaNs, -0, subnormals, extremes),
// a rank-0 and an empty tensor, a strided view, a multi-chunk tensor, and scalars of every kind.
#pragma once

#include <cstdint>
#include <string>

#include "checkpoint/checkpoint_state.h"

namespace adapt::test {

/// The full sample (about 5 MB of tensors; a config_toml above HDF5's 64 KiB compact-attribute limit).
checkpoint::CheckpointState sample_checkpoint_state(std::int64_t step);

/// A small state (two f32 tensors filled from `seed`, a few scalars) for commit and rotation tests.
checkpoint::CheckpointState small_checkpoint_state(std::int64_t step, std::uint32_t seed = 1,
                                                   std::int64_t n_per_tensor = 256);

/// Bit pattern of a double / float (NaN payloads included).
std::uint64_t bits_of(double v);
std::uint32_t bits_of(float v);

/// Name of the multi-chunk tensor; its element i is float((i % 1000) * 0.25).
inline const std::string kArangeTensor = "optim/master/adapters/layers.0.mlp.up.lora_b";

}  // namespace adapt::test
