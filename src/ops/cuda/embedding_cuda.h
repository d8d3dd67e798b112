// CUDA glue for ops::embedding_forward / embedding_backward, and their vocab-parallel form: `table`
// (or `dtable`) holds the vocabulary rows [vocab_begin, vocab_begin + rows) of a vocabulary of
// vocab_size ids (−1: the table's own rows, one rank); ids outside the rows give zero rows / are
// skipped. Ids (i32 or i64, on the device) are range-checked on the host first (one copy).
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace adapt::ops::cuda {

/// out (ids' shape, C) f32, bf16 or f16 = table (rows, C) f32, bf16 or f16 [ids − vocab_begin].
void embedding_forward(Tensor& out, const Tensor& table, const Tensor& ids, std::int64_t vocab_begin = 0,
                       std::int64_t vocab_size = -1);

/// dtable (rows, C) f32 += scatter-add of dout (ids' shape, C) by ids; deterministic (no atomics).
void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids, std::int64_t vocab_begin = 0,
                        std::int64_t vocab_size = -1);

}  // namespace adapt::ops::cuda
