// Embedding gather (one thread per output element, grid-stride) and scatter-add (one thread per
// column, ids in order: deterministic without atomics).
#include "kernels/common/check.cuh"
#include "kernels/common/elem_io.cuh"
#include "kernels/embedding.h"
#include "kernels/launch_plan.h"

namespace adapt::kernels {
namespace {

constexpr int kThreads = 256;

template <typename TO, typename TT>
__global__ void embedding_forward_kernel(TO* out, const TT* table, const void* ids, bool ids64, int64_t n_ids,
                                         int64_t C, int64_t vocab_begin, int64_t vocab_count) {
  const int64_t n = n_ids * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / C, c = i % C;
    const int64_t local = load_id(ids, ids64, row) - vocab_begin;
    const float v = (local >= 0 && local < vocab_count) ? load_f32(table + local * C + c) : 0.0f;
    store_f32(out + i, v);
  }
}

template <typename T>
__global__ void embedding_backward_kernel(float* dtable, const T* dout, const void* ids, bool ids64, int64_t n_ids,
                                          int64_t C, int64_t vocab_begin, int64_t vocab_count) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  for (int64_t i = 0; i < n_ids; ++i) {
    const int64_t local = load_id(ids, ids64, i) - vocab_begin;
    if (local >= 0 && local < vocab_count) dtable[local * C + c] += load_f32(dout + i * C + c);
  }
}

}  // namespace

void launch_embedding_forward(void* out, DType out_dtype, const void* table, DType table_dtype, const void* ids,
                              DType ids_dtype, std::int64_t n_ids, std::int64_t C, std::int64_t vocab_begin,
                              std::int64_t vocab_count, cudaStream_t stream) {
  const bool ids64 = ids_are_64(ids_dtype, "embedding_forward");
  const std::int64_t n = n_ids * C;
  if (n <= 0) return;
  dispatch_float(out_dtype, "embedding_forward (output)", [&](auto out_tag) {
    using TO = decltype(out_tag);
    dispatch_float(table_dtype, "embedding_forward (table)", [&](auto table_tag) {
      using TT = decltype(table_tag);
      embedding_forward_kernel<TO, TT><<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(
          static_cast<TO*>(out), static_cast<const TT*>(table), ids, ids64, n_ids, C, vocab_begin, vocab_count);
    });
  });
  ADAPT_CUDA_LAUNCH_CHECK("embedding_forward");
}

void launch_embedding_backward(float* dtable, const void* dout, DType dout_dtype, const void* ids, DType ids_dtype,
                               std::int64_t n_ids, std::int64_t C, std::int64_t vocab_begin, std::int64_t vocab_count,
                               cudaStream_t stream) {
  const bool ids64 = ids_are_64(ids_dtype, "embedding_backward");
  if (n_ids <= 0 || C <= 0) return;
  dispatch_float(dout_dtype, "embedding_backward", [&](auto tag) {
    using T = decltype(tag);
    const auto blocks = static_cast<unsigned>((C + kThreads - 1) / kThreads);
    embedding_backward_kernel<T><<<blocks, kThreads, 0, stream>>>(dtable, static_cast<const T*>(dout), ids, ids64,
                                                                  n_ids, C, vocab_begin, vocab_count);
  });
  ADAPT_CUDA_LAUNCH_CHECK("embedding_backward");
}

}  // namespace adapt::kernels
