// Host launchers of the embedding lookup on the device (src/ops/embedding.h), in the vocab-parallel
// form of src/parallel/tp_ops.h: a rank's table holds the vocabulary rows
// [vocab_begin, vocab_begin + vocab_count); ids outside that range give zero rows (forward) or are
// skipped (backward), so the ranks' outputs sum (all-reduce) to the whole lookup. One rank:
// vocab_begin = 0, vocab_count = V. Ids are global, i32 or i64; the host checks them against the
// vocabulary before the launch (the device does not throw).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"

namespace adapt::kernels {

/// out (n_ids, C) in out_dtype = table (vocab_count, C) in table_dtype [ids − vocab_begin], widened or
/// rounded through f32 (f32 → f32 and bf16 → f32 are exact). Dtypes f32, bf16, f16.
void launch_embedding_forward(void* out, DType out_dtype, const void* table, DType table_dtype, const void* ids,
                              DType ids_dtype, std::int64_t n_ids, std::int64_t C, std::int64_t vocab_begin,
                              std::int64_t vocab_count, cudaStream_t stream);

/// dtable (vocab_count, C) f32 += scatter-add of dout (n_ids, C) rows (f32, bf16 or f16) by ids. No
/// atomics: one thread per column walks the ids in order, so the sums are the CPU's, bit for bit, and
/// the same on every run. Slow for long inputs (C threads); the base embeddings are frozen, this is for
/// tests and completeness.
void launch_embedding_backward(float* dtable, const void* dout, DType dout_dtype, const void* ids, DType ids_dtype,
                               std::int64_t n_ids, std::int64_t C, std::int64_t vocab_begin, std::int64_t vocab_count,
                               cudaStream_t stream);

}  // namespace adapt::kernels
