#include "ops/workspace.h"

#include <algorithm>

#include "core/error.h"

namespace adapt::ops {

namespace {
constexpr std::size_t kMinBlockBytes = 1 << 20;         // host
constexpr std::size_t kMinDeviceBlockBytes = 64 << 10;  // device: small tensors that start a block share it
}  // namespace

Workspace::Workspace(Allocator& alloc) : alloc_(&alloc) {}

Tensor Workspace::take(const Shape& shape, DType dtype, std::string name) {
  const std::size_t n_bytes = bytes_taken(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype));
  if (blocks_.empty() || blocks_.back().storage->size_bytes() - blocks_.back().used_bytes < n_bytes) {
    // On a device the allocator counts every byte a block holds, so a new block takes the size of the
    // tensor that needs it: the blocks of a first pass add up to little more than its high-water mark. On
    // the host only the pages touched count, and a new block as large as everything handed out so far
    // keeps the first pass to a few allocations (which malloc returns to the system when they go, where
    // many smaller ones would stay in its heap beside the merged block: a larger resident set).
    const std::size_t block_bytes = alloc_->device().host_accessible()
                                        ? std::max({n_bytes, kMinBlockBytes, used_bytes_})
                                        : std::max(n_bytes, kMinDeviceBlockBytes);
    blocks_.push_back(Block{Storage::allocate(*alloc_, block_bytes), 0});
    ++n_allocations_;
  }
  Block& b = blocks_.back();
  void* p = static_cast<char*>(b.storage->data()) + b.used_bytes;
  b.used_bytes += n_bytes;
  used_bytes_ += n_bytes;
  high_water_bytes_ = std::max(high_water_bytes_, used_bytes_);
  return Tensor::wrap(p, shape, dtype, b.storage->device(), b.storage, std::move(name));
}

void Workspace::reset() {
  if (blocks_.size() > 1 || capacity_bytes() < high_water_bytes_) {
    // Merge into one block that holds the largest pass seen, so the next pass needs no allocation (a
    // rewind may have returned the blocks the high-water mark was reached in).
    blocks_.clear();
    blocks_.push_back(Block{Storage::allocate(*alloc_, high_water_bytes_), 0});
    ++n_allocations_;
  }
  for (Block& b : blocks_) b.used_bytes = 0;
  used_bytes_ = 0;
}

Workspace::Mark Workspace::mark() const {
  return Mark{blocks_.size(), blocks_.empty() ? 0 : blocks_.back().used_bytes, used_bytes_};
}

void Workspace::rewind(const Mark& m) {
  ADAPT_CHECK(m.n_blocks <= blocks_.size() && m.used <= used_bytes_ &&
                  (m.n_blocks == 0 || m.block_used <= blocks_[m.n_blocks - 1].used_bytes),
              "Workspace::rewind: the mark ({} blocks, {} bytes used) is not one of this workspace's since its last "
              "reset ({} blocks, {} bytes used)",
              m.n_blocks, m.used, blocks_.size(), used_bytes_);
  blocks_.resize(m.n_blocks);  // blocks added since hold only released tensors
  if (m.n_blocks > 0) blocks_.back().used_bytes = m.block_used;
  used_bytes_ = m.used;
}

std::size_t Workspace::capacity_bytes() const {
  std::size_t n = 0;
  for (const Block& b : blocks_) n += b.storage->size_bytes();
  return n;
}

}  // namespace adapt::ops
