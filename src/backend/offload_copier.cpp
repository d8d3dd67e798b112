#include "backend/offload_copier.h"

#include <atomic>
#include <cstring>

#include "core/error.h"

namespace adapt::backend {

namespace {

class HostCopier final : public OffloadCopier {
 public:
  std::int64_t to_host(std::span<const HostCopy> copies, void*) override {
    for (const HostCopy& c : copies)
      if (c.n_bytes > 0) std::memcpy(c.host_dst, c.src, c.n_bytes);
    return ++tickets_;
  }
  void wait_host(std::int64_t) override {}
  void to_device(void* dst, const void* host_src, std::size_t n_bytes) override {
    if (n_bytes > 0) std::memcpy(dst, host_src, n_bytes);
  }
  void order_before(void*) override {}
  void order_after(void*) override {}
  void synchronize() override {}
  Allocator& host_allocator() override { return adapt::host_allocator(); }

 private:
  std::atomic<std::int64_t> tickets_{0};
};

}  // namespace

std::unique_ptr<OffloadCopier> offload_copier_host() { return std::make_unique<HostCopier>(); }

#if !ADAPT_HAVE_CUDA
std::unique_ptr<OffloadCopier> offload_copier_cuda(int device) {
  ADAPT_THROW(UnsupportedError,
              "copies between host RAM and cuda:{} (optimizer state or KV cache in host RAM) need CUDA, but this "
              "binary was built with ADAPT_CUDA=OFF; rebuild with -DADAPT_CUDA=ON or run on the CPU backend",
              device);
}
#endif

std::unique_ptr<OffloadCopier> offload_copier_for(Device device) {
  return device.kind == DeviceKind::Cuda ? offload_copier_cuda(device.index) : offload_copier_host();
}

}  // namespace adapt::backend
