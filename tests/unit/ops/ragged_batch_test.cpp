// Ragged batches (sequences at different lengths of one KV cache): attention with per-sequence offsets
// and cache rows, and RoPE with per-sequence tables, against the single-sequence path run once per
// sequence. The comparison is exact (memcmp): a sequence in a ragged batch goes through the same
// kernel calls with the same operands as when it runs alone, so the same bits are expected; any
// difference is a bug, not rounding. (The single-sequence path itself is checked against the textbook
// formula in attention_test.cpp and rows_test.cpp.)
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "ops/attention.h"
#include "ops/rope.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

namespace {

// Sequence b of x (B, ...) as a contiguous (1, ...) tensor.
Tensor row_copy(const Tensor& x, std::int64_t b) {
  Shape s = x.shape();
  s[0] = 1;
  Tensor out = Tensor::empty(s, DType::F32);
  out.copy_from(x.narrow(0, b, 1));
  return out;
}

bool same_bits(const float* a, const float* b, std::int64_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(float)) == 0;
}

void check_ragged_attention(std::int64_t T, std::int64_t H, std::int64_t Hkv, std::int64_t D,
                            const std::vector<std::int64_t>& offsets, const std::vector<std::int64_t>& kv_rows,
                            std::int64_t B_kv, std::int64_t S) {
  const auto B = static_cast<std::int64_t>(offsets.size());
  CAPTURE(T);
  CAPTURE(H);
  CAPTURE(Hkv);
  CAPTURE(B);
  const Tensor q = test::random_tensor({B, T, H, D}, 11, 1.0f, "q");
  const Tensor k = test::random_tensor({B_kv, Hkv, S, D}, 12, 1.0f, "k_cache");
  const Tensor v = test::random_tensor({B_kv, Hkv, S, D}, 13, 1.0f, "v_cache");
  Tensor out = test::filled({B, T, H, D}, 0.0f, "out");
  Tensor lse = test::filled({B, H, T}, 0.0f, "lse");
  ops::attention_forward(out, q, k, v, {.q_pos_offsets = offsets, .kv_rows = kv_rows}, &lse);
  for (std::int64_t b = 0; b < B; ++b) {
    CAPTURE(b);
    const std::size_t i = static_cast<std::size_t>(b);
    const Tensor qb = row_copy(q, b);
    const Tensor kb = k.narrow(0, kv_rows[i], 1), vb = v.narrow(0, kv_rows[i], 1);  // views into the cache
    Tensor ob = test::filled({1, T, H, D}, 0.0f, "out_b");
    Tensor lb = test::filled({1, H, T}, 0.0f, "lse_b");
    ops::attention_forward(ob, qb, kb, vb, {.q_pos_offset = offsets[i]}, &lb);
    CHECK(same_bits(out.data<float>() + b * T * H * D, ob.data<float>(), T * H * D));
    CHECK(same_bits(lse.data<float>() + b * H * T, lb.data<float>(), H * T));
  }
}

}  // namespace

TEST_CASE("ragged attention: each sequence reads its own cache row at its own offset, bit for bit as alone") {
  // Decode (T = 1): lengths on both sides of the 128-key tile, one empty row (offset 0), rows out of order.
  check_ragged_attention(1, 4, 2, 16, {150, 0, 63, 7}, {3, 0, 5, 1}, 6, 300);
  // GQA 4 and MHA, several tokens per sequence (a chunk at an offset), a row shared by no one.
  check_ragged_attention(5, 8, 2, 24, {0, 130, 17}, {2, 1, 0}, 4, 140);
  check_ragged_attention(3, 4, 4, 8, {250, 1}, {0, 1}, 2, 260);
  // One sequence in a big cache (prefill into one free row).
  check_ragged_attention(70, 6, 2, 16, {0}, {4}, 5, 80);
}

TEST_CASE("ragged attention argument errors name the sequence and the fix") {
  const Tensor q = test::filled({2, 1, 4, 8}, 0.0f, "q");
  const Tensor k = test::filled({3, 2, 10, 8}, 0.0f, "k_cache");
  Tensor out = test::filled({2, 1, 4, 8}, 0.0f, "out");
  const std::vector<std::int64_t> two_rows{0, 2}, one_row{0}, bad_row{0, 3}, offsets{1, 9}, too_far{1, 10};
  CHECK_NOTHROW(ops::attention_forward(out, q, k, k, {.q_pos_offsets = offsets, .kv_rows = two_rows}));
  CHECK_THROWS_WITH_AS(ops::attention_forward(out, q, k, k, {.kv_rows = one_row}),
                       doctest::Contains("kv_rows has 1 entries but q 'q' has B = 2"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::attention_forward(out, q, k, k, {.kv_rows = bad_row}),
                       doctest::Contains("kv_rows[1] = 3 is not a row of 'k_cache'"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::attention_forward(out, q, k, k, {.q_pos_offsets = one_row, .kv_rows = two_rows}),
                       doctest::Contains("q_pos_offsets has 1 entries"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::attention_forward(out, q, k, k, {.q_pos_offsets = too_far, .kv_rows = two_rows}),
                       doctest::Contains("(sequence 1) need 11 keys"), ShapeError);
  // Without kv_rows, k must have q's batch.
  CHECK_THROWS_AS(ops::attention_forward(out, q, k, k), ShapeError);
}

TEST_CASE("per-sequence RoPE tables hold the single-table values; rope_forward uses row b's table for sequence b") {
  const std::vector<float> inv_freq = {1.0f, 0.3f, 0.01f, 1e-4f};  // D = 8
  const std::int64_t T = 3, Hx = 2, D = 8, half = D / 2;
  const std::vector<std::int64_t> starts = {7, 0, 8000};
  const auto B = static_cast<std::int64_t>(starts.size());
  Tensor cos = test::filled({B, T, half}, 0.0f, "cos"), sin = test::filled({B, T, half}, 0.0f, "sin");
  ops::rope_table_fill(cos, sin, inv_freq, starts);
  const Tensor x0 = test::random_tensor({B, T, Hx, D}, 21, 1.0f, "x");
  Tensor x = x0.to_host(DType::F32);
  ops::rope_forward(x, cos, sin);
  for (std::int64_t b = 0; b < B; ++b) {
    CAPTURE(b);
    Tensor c1 = test::filled({T, half}, 0.0f, "cos1"), s1 = test::filled({T, half}, 0.0f, "sin1");
    ops::rope_table_fill(c1, s1, inv_freq, starts[static_cast<std::size_t>(b)]);
    CHECK(same_bits(cos.data<float>() + b * T * half, c1.data<float>(), T * half));
    CHECK(same_bits(sin.data<float>() + b * T * half, s1.data<float>(), T * half));
    Tensor xb = row_copy(x0, b);
    ops::rope_forward(xb, c1, s1);
    CHECK(same_bits(x.data<float>() + b * T * Hx * D, xb.data<float>(), T * Hx * D));
  }
  Tensor wrong = test::filled({B + 1, T, half}, 0.0f, "cos");
  CHECK_THROWS_WITH_AS(ops::rope_table_fill(wrong, wrong, inv_freq, starts),
                       doctest::Contains("(3, P, 4) was expected"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::rope_forward(x, wrong, wrong), doctest::Contains("one table per sequence"), ShapeError);
  const std::vector<std::int64_t> negative = {1, -1, 2};
  CHECK_THROWS_WITH_AS(ops::rope_table_fill(cos, sin, inv_freq, negative), doctest::Contains("pos_begin[1] = -1"),
                       ShapeError);
}
