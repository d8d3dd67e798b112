// The CUDA OffloadCopier: cudaMemcpyAsync on a non-blocking copy stream of the parameters' device,
// ordered after the compute stream's work with an event, one event per device-to-host copy so the host
// can start on a bucket as soon as it has arrived. Built only with ADAPT_HAVE_CUDA. One lock serialises
// the calls (the training thread and the CPU AdamW's thread share the copier under optim.overlap).
#include <map>
#include <mutex>

#include "backend/backend.h"
#include "backend/cuda/cuda_runtime.h"
#include "backend/offload_copier.h"

namespace adapt::backend {

namespace {

using backend::cuda::DeviceGuard;
using backend::cuda::Event;
using backend::cuda::Stream;

class CudaCopier final : public OffloadCopier {
 public:
  explicit CudaCopier(int device) : device_(device), stream_(device) {
    DeviceGuard guard(device_);
    before_ = std::make_unique<Event>(/*timing=*/false);
  }
  ~CudaCopier() override {
    // The host buffers may be freed right after; never leave a copy running into them.
    cudaStreamSynchronize(stream_.get());
  }

  std::int64_t to_host(std::span<const HostCopy> copies, void* compute_stream) override {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    before_->record(static_cast<cudaStream_t>(compute_stream));
    before_->block(stream_.get());
    for (const HostCopy& c : copies) {
      if (c.n_bytes == 0 || c.rows == 0) continue;
      if (c.rows == 1) {
        ADAPT_CUDA_CHECK(cudaMemcpyAsync(c.host_dst, c.src, c.n_bytes, cudaMemcpyDeviceToHost, stream_.get()));
      } else {
        ADAPT_CUDA_CHECK(cudaMemcpy2DAsync(c.host_dst, c.dst_pitch, c.src, c.src_pitch, c.n_bytes, c.rows,
                                           cudaMemcpyDeviceToHost, stream_.get()));
      }
    }
    auto done = std::make_unique<Event>(/*timing=*/false);
    done->record(stream_.get());
    pending_[++tickets_] = std::move(done);
    return tickets_;
  }

  void wait_host(std::int64_t ticket) override {
    std::unique_lock lock(mutex_);
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return;  // already waited for
    // The stream is in order: once this copy is done the earlier ones are too. Wait without the lock,
    // so the other thread's copies are queued meanwhile.
    std::unique_ptr<Event> done = std::move(it->second);
    pending_.erase(pending_.begin(), std::next(it));
    lock.unlock();
    done->synchronize();
  }

  void to_device(void* dst, const void* host_src, std::size_t n_bytes) override {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (n_bytes > 0) ADAPT_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, n_bytes, cudaMemcpyHostToDevice, stream_.get()));
  }

  void to_device_rows(void* dst, std::size_t dst_pitch, const void* host_src, std::size_t src_pitch,
                      std::size_t n_bytes, std::size_t rows) override {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    if (n_bytes > 0 && rows > 0)
      ADAPT_CUDA_CHECK(
          cudaMemcpy2DAsync(dst, dst_pitch, host_src, src_pitch, n_bytes, rows, cudaMemcpyHostToDevice, stream_.get()));
  }

  void order_before(void* compute_stream) override {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    Event after(/*timing=*/false);
    after.record(stream_.get());
    after.block(static_cast<cudaStream_t>(compute_stream));
  }

  void order_after(void* compute_stream) override {
    std::lock_guard lock(mutex_);
    DeviceGuard guard(device_);
    before_->record(static_cast<cudaStream_t>(compute_stream));
    before_->block(stream_.get());
  }

  void synchronize() override {
    // Only the tickets queued before the wait are known done: another thread may queue one meanwhile.
    std::int64_t upto = 0;
    {
      std::lock_guard lock(mutex_);
      upto = tickets_;
    }
    stream_.synchronize();
    std::lock_guard lock(mutex_);
    pending_.erase(pending_.begin(), pending_.upper_bound(upto));
  }

  Allocator& host_allocator() override { return backend::pinned_host_allocator(); }
  void bind_thread() override { backend::cuda::set_device(device_); }

 private:
  int device_;
  Stream stream_;
  std::unique_ptr<Event> before_;
  std::map<std::int64_t, std::unique_ptr<Event>> pending_;
  std::int64_t tickets_ = 0;
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<OffloadCopier> offload_copier_cuda(int device) {
  backend::cuda::require_device(device);
  return std::make_unique<CudaCopier>(device);
}

}  // namespace adapt::backend
