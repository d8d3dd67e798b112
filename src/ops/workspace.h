// Workspace: a bump arena for the activations of a forward (later backward) pass, so that a pass
// allocates nothing per op or per layer. The first pass of a given size adds blocks as it needs them
// (on a device each the size of the tensor that did not fit, at least 64 KiB, so that they hold little
// more than the pass's high-water mark; on the host each as large as everything handed out so far);
// reset() then merges them into one block of the high-water size, so every later pass of that size or
// smaller runs without touching the allocator.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace adapt::ops {

class Workspace {
 public:
  /// Memory comes from `alloc` (host memory by default; a device allocator later).
  explicit Workspace(Allocator& alloc = host_allocator());
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  /// Uninitialised contiguous tensor, 64-byte aligned, valid until the next reset(). Not thread-safe:
  /// one Workspace per thread of control.
  Tensor take(const Shape& shape, DType dtype, std::string name = {});
  /// The bytes a take of n_bytes uses: n_bytes rounded up to the 64-byte alignment.
  static std::size_t bytes_taken(std::size_t n_bytes) { return (n_bytes + kAlign - 1) / kAlign * kAlign; }
  /// Makes all memory reusable. Tensors taken before must not be used afterwards: their memory is
  /// handed out again (it stays mapped, so a stale tensor reads garbage rather than crashing).
  void reset();

  /// A point of the arena: rewind(mark()) releases what was taken after it and keeps what came before,
  /// so temporaries that die within a pass can hand their memory to the next ones (a stack).
  struct Mark {
    std::size_t n_blocks = 0;    // blocks held when marked
    std::size_t block_used = 0;  // bytes used of the last of them
    std::size_t used = 0;        // used_bytes() when marked
  };
  Mark mark() const;
  /// Releases every tensor taken since `m` (as reset() does for all of them: they must not be used
  /// afterwards). Blocks added since go back to the allocator, so a first pass holds no more than its
  /// high-water mark either. The high-water mark stays. `m` must come from this workspace since its last
  /// reset, and rewinds must go back in order (a later mark is invalid once an earlier one is rewound to).
  void rewind(const Mark& m);

  std::size_t capacity_bytes() const;
  std::size_t used_bytes() const { return used_bytes_; }
  std::size_t high_water_bytes() const { return high_water_bytes_; }
  /// Blocks requested from the allocator since construction (tests check it stops growing).
  int n_allocations() const { return n_allocations_; }

 private:
  static constexpr std::size_t kAlign = 64;  // every take starts at a multiple of it
  struct Block {
    std::shared_ptr<Storage> storage;
    std::size_t used_bytes = 0;
  };
  Allocator* alloc_;
  std::vector<Block> blocks_;
  std::size_t used_bytes_ = 0;
  std::size_t high_water_bytes_ = 0;
  int n_allocations_ = 0;
};

}  // namespace adapt::ops
