// Helpers of the op parity tests (CUDA launchers against the CPU ops): device buffers from plain
// cudaMalloc, uploads and downloads in any float dtype through the host's own conversions, seeded
// random inputs, and the per-dtype comparison of gpu_tolerances.h. Only compiled with CUDA.
#pragma once

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dtype/dtype.h"
#include "tensor/tensor.h"
#include "tests/gpu/gpu_tolerances.h"
#include "tests/support/test_support.h"

namespace adapt::test {

#define ADAPT_TEST_CUDA(expr)                                                       \
  do {                                                                              \
    cudaError_t e_ = (expr);                                                        \
    REQUIRE_MESSAGE(e_ == cudaSuccess, #expr, " failed: ", cudaGetErrorString(e_)); \
  } while (0)

/// Owning device allocation (cudaMalloc/cudaFree), zero-filled.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes == 0) return;
    ADAPT_TEST_CUDA(cudaMalloc(&ptr_, bytes));
    ADAPT_TEST_CUDA(cudaMemset(ptr_, 0, bytes));
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  float* f32() const { return static_cast<float*>(ptr_); }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

/// n normal(0, stddev) values from `seed` (derived from kSeed by the caller's own salt).
inline std::vector<float> random_normal(std::int64_t n, std::uint64_t salt, float stddev = 1.0f) {
  std::mt19937_64 rng(kSeed ^ (salt * 0x9e3779b97f4a7c15ULL));
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

/// f32 values as stored in `dtype` (host conversion), as raw bytes.
inline std::vector<std::uint8_t> encode(const std::vector<float>& v, DType dtype) {
  std::vector<std::uint8_t> out(v.size() * dtype_size(dtype));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      const std::uint16_t b = dtype == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      std::memcpy(out.data() + 2 * i, &b, 2);
    }
  }
  return out;
}

inline std::vector<float> decode(const std::vector<std::uint8_t>& bytes, std::size_t n, DType dtype) {
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&out[i], bytes.data() + 4 * i, 4);
    } else {
      std::uint16_t b;
      std::memcpy(&b, bytes.data() + 2 * i, 2);
      out[i] = dtype == DType::BF16 ? bf16_to_f32(b) : f16_to_f32(b);
    }
  }
  return out;
}

/// v rounded to `dtype` and back: what the device sees, so the CPU reference starts from the same values.
inline std::vector<float> rounded(const std::vector<float>& v, DType dtype) {
  return decode(encode(v, dtype), v.size(), dtype);
}

inline DeviceBuffer upload(const std::vector<float>& v, DType dtype) {
  const std::vector<std::uint8_t> bytes = encode(v, dtype);
  DeviceBuffer d(bytes.size());
  if (!bytes.empty()) ADAPT_TEST_CUDA(cudaMemcpy(d.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
DeviceBuffer upload_raw(const std::vector<T>& v) {
  DeviceBuffer d(v.size() * sizeof(T));
  if (!v.empty()) ADAPT_TEST_CUDA(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

/// The first n elements of d (stored in `dtype`) as f32; synchronises the device first.
inline std::vector<float> download(const DeviceBuffer& d, std::size_t n, DType dtype) {
  ADAPT_TEST_CUDA(cudaDeviceSynchronize());
  std::vector<std::uint8_t> bytes(n * dtype_size(dtype));
  if (n) ADAPT_TEST_CUDA(cudaMemcpy(bytes.data(), d.get(), bytes.size(), cudaMemcpyDeviceToHost));
  return decode(bytes, n, dtype);
}

/// A contiguous host f32 tensor holding v.
inline Tensor host_f32(const Shape& shape, const std::vector<float>& v, const std::string& name) {
  Tensor t = Tensor::empty(shape, DType::F32, host_allocator(), name);
  REQUIRE(static_cast<std::size_t>(t.numel()) == v.size());
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * sizeof(float));
  return t;
}

inline std::vector<float> values(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

/// Token ids (i32 or i64 host tensor) from int64 values.
inline Tensor host_ids(const Shape& shape, const std::vector<std::int64_t>& ids, DType dtype, const std::string& name) {
  Tensor t = Tensor::empty(shape, dtype, host_allocator(), name);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (dtype == DType::I32) {
      t.data<std::int32_t>()[i] = static_cast<std::int32_t>(ids[i]);
    } else {
      t.data<std::int64_t>()[i] = ids[i];
    }
  }
  return t;
}

inline DeviceBuffer upload_ids(const std::vector<std::int64_t>& ids, DType dtype) {
  if (dtype == DType::I64) return upload_raw(ids);
  std::vector<std::int32_t> v(ids.begin(), ids.end());
  return upload_raw(v);
}

/// CHECK that got is within the tolerance of `dtype` of want (relative to want's largest magnitude, or to
/// `scale` when that is larger: the size of terms that cancel in the result, whose rounding the result
/// inherits).
inline void check_close(const std::vector<float>& got, const std::vector<float>& want, DType dtype,
                        const std::string& what, double scale = 0.0) {
  REQUIRE(got.size() == want.size());
  const Mismatch m = compare_relative(got.data(), want.data(), static_cast<std::int64_t>(got.size()), scale);
  const double tol = gpu_tolerance(dtype);
  INFO(what, " [", dtype_name(dtype), ", ", got.size(), " values]: ", m.str(), " (tolerance ", tol, ")");
  CHECK(m.rel <= tol);
}

}  // namespace adapt::test
