// Device-tagged storage. Memory comes from an Allocator (host, pinned host or CUDA device; backend/
// provides the latter two) or wraps external memory such as a read-only file map, kept alive by a
// shared owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace adapt {

enum class DeviceKind : std::uint8_t { Cpu, PinnedHost, Cuda };

struct Device {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;
  /// True when the CPU can dereference the memory (Cpu and PinnedHost).
  bool host_accessible() const { return kind != DeviceKind::Cuda; }
  std::string str() const;  // "cpu", "pinned", "cuda:0"
  friend bool operator==(const Device& a, const Device& b) { return a.kind == b.kind && a.index == b.index; }
};

/// Allocates and frees raw memory on one device. Implementations must be thread-safe.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(std::size_t n_bytes) = 0;
  virtual void deallocate(void* p, std::size_t n_bytes) = 0;
  virtual Device device() const = 0;
};

/// 64-byte aligned host memory (AVX-512 friendly).
Allocator& host_allocator();

/// A block of memory: owning (freed through its allocator) or borrowed (kept alive by `owner`).
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(Allocator& alloc, std::size_t n_bytes);
  static std::shared_ptr<Storage> wrap(void* data, std::size_t n_bytes, Device device,
                                       std::shared_ptr<const void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  std::size_t size_bytes() const { return size_bytes_; }
  Device device() const { return device_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  std::size_t size_bytes_ = 0;
  Device device_;
  Allocator* alloc_ = nullptr;
  std::shared_ptr<const void> owner_;
};

}  // namespace adapt
