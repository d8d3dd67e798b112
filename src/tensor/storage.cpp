#include "tensor/storage.h"

#include <fmt/format.h>

#include <cstdlib>
#include <new>

#include "core/error.h"
#include "core/strings.h"

namespace adapt {

std::string Device::str() const {
  switch (kind) {
    case DeviceKind::Cpu: return "cpu";
    case DeviceKind::PinnedHost: return "pinned";
    case DeviceKind::Cuda: return fmt::format("cuda:{}", index);
  }
  return "?";
}

namespace {

class HostAllocator final : public Allocator {
 public:
  void* allocate(std::size_t n_bytes) override {
    std::size_t rounded = (n_bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded ? rounded : 64);
    ADAPT_REQUIRE(p != nullptr, IoError, "out of host memory allocating {}", format_bytes(n_bytes));
    return p;
  }
  void deallocate(void* p, std::size_t) override { std::free(p); }
  Device device() const override { return Device{DeviceKind::Cpu, 0}; }
};

}  // namespace

Allocator& host_allocator() {
  static HostAllocator a;
  return a;
}

std::shared_ptr<Storage> Storage::allocate(Allocator& alloc, std::size_t n_bytes) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = alloc.allocate(n_bytes);
  s->size_bytes_ = n_bytes;
  s->device_ = alloc.device();
  s->alloc_ = &alloc;
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, std::size_t n_bytes, Device device,
                                       std::shared_ptr<const void> owner) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->size_bytes_ = n_bytes;
  s->device_ = device;
  s->owner_ = std::move(owner);
  return s;
}

Storage::~Storage() {
  if (alloc_ && data_) alloc_->deallocate(data_, size_bytes_);
}

}  // namespace adapt
