// Embedding lookup: rows of the (V, C) table gathered by token id. Out-of-range ids are an error
// naming the id and position, never a silent read past the table.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops {

/// out (B, T, C) = table (V, C)[ids (B, T)]; out f32, table f32 or bf16 (widened exactly); ids i32 or
/// i64 (any shape; out has ids' shape + C).
void embedding_forward(Tensor& out, const Tensor& table, const Tensor& ids);

/// dtable (V, C) f32 += scatter-add of dout (.., C) rows by ids (..): row i of dout adds to
/// dtable[ids[i]]. For tests and completeness: the base model's embeddings are frozen.
void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids);

}  // namespace adapt::ops
