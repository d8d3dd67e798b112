// Tensor copies between the host and cuda:0 for the GPU tests, through the backend's caching allocator.
#pragma once

#include "backend/backend.h"
#include "tensor/tensor.h"

namespace adapt::test {

/// A device copy of a host tensor (same shape, dtype and name).
inline Tensor to_device(const Tensor& host, int index = 0) {
  Tensor d = Tensor::empty(host.shape(), host.dtype(), backend::cuda_allocator(index), host.name());
  backend::copy(d, host);
  return d;
}

/// A host copy of a device tensor (same dtype).
inline Tensor to_cpu(const Tensor& dev) {
  Tensor h = Tensor::empty(dev.shape(), dev.dtype(), host_allocator(), dev.name());
  backend::copy(h, dev);
  return h;
}

}  // namespace adapt::test
