// Helpers shared by the checkpoint test files: bit-exact state comparison and stderr capture (to
// check log::warn lines).
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "checkpoint/checkpoint.h"
#include "core/file.h"
#include "tests/unit/checkpoint/checkpoint_samples.h"

namespace adapt::test {

/// Every field, every tensor's dtype, shape and raw bytes, every scalar's bits.
inline void check_same_state(const checkpoint::CheckpointState& got, const checkpoint::CheckpointState& want) {
  CHECK(got.step == want.step);
  CHECK(got.base_model_fingerprint == want.base_model_fingerprint);
  CHECK(got.world_layout == want.world_layout);
  CHECK(got.config_toml == want.config_toml);
  if (!want.created_by.empty()) CHECK(got.created_by == want.created_by);
  REQUIRE(got.tensors.size() == want.tensors.size());
  for (const auto& [name, w] : want.tensors) {
    INFO("tensor ", name);
    REQUIRE(got.tensors.count(name) == 1);
    const Tensor& g = got.tensors.at(name);
    CHECK(g.name() == name);
    CHECK(g.dtype() == w.dtype());
    CHECK(g.shape() == w.shape());
    const Tensor wc = w.to_host(w.dtype());  // contiguous copy of views
    REQUIRE(g.size_bytes() == wc.size_bytes());
    if (g.numel() > 0) CHECK(std::memcmp(g.raw(), wc.raw(), g.size_bytes()) == 0);
  }
  CHECK(got.strings == want.strings);
  CHECK(got.ints == want.ints);
  REQUIRE(got.floats.size() == want.floats.size());
  for (const auto& [key, v] : want.floats) {
    INFO("float ", key);
    REQUIRE(got.floats.count(key) == 1);
    CHECK(bits_of(got.floats.at(key)) == bits_of(v));
  }
}

/// Redirects stderr (fd 2) into a file until text() is called; log lines land there.
class StderrCapture {
 public:
  explicit StderrCapture(const fs::path& file) : file_(file) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrCapture() { restore(); }
  std::string text() {
    restore();
    return file_read_text(file_);
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  fs::path file_;
  int saved_ = -1;
};

}  // namespace adapt::test
