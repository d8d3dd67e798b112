#include "backend/offload_copier.h"

#include <atomic>
#include <cstring>

#include "core/error.h"

namespace adapt::backend {

namespace {

void copy_rows(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch, std::size_t n_bytes,
               std::size_t rows) {
  if (n_bytes == 0) return;
  for (std::size_t i = 0; i < rows; ++i)
    std::memcpy(static_cast<char*>(dst) + i * dst_pitch, static_cast<const char*>(src) + i * src_pitch, n_bytes);
}

class HostCopier final : public OffloadCopier {
 public:
  std::int64_t to_host(std::span<const HostCopy> copies, void*) override {
    for (const HostCopy& c : copies) copy_rows(c.host_dst, c.dst_pitch, c.src, c.src_pitch, c.n_bytes, c.rows);
    return ++tickets_;
  }
  void wait_host(std::int64_t) override {}
  void to_device(void* dst, const void* host_src, std::size_t n_bytes) override {
    if (n_bytes > 0) std::memcpy(dst, host_src, n_bytes);
  }
  void to_device_rows(void* dst, std::size_t dst_pitch, const void* host_src, std::size_t src_pitch,
                      std::size_t n_bytes, std::size_t rows) override {
    copy_rows(dst, dst_pitch, host_src, src_pitch, n_bytes, rows);
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
