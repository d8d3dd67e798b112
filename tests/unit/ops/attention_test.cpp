// attention_forward (tiled, online softmax) against the textbook formula: the full score matrix,
// causal mask and softmax in double. Shapes are not multiples of the kernel's tiles (64 keys, 64 query
// rows); the GQA mapping (query head h reads KV head h / n_rep) is checked on its own.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "ops/attention.h"
#include "ops/cpu/gemm_avx512.h"
#include "ops/cpu/gemm_avx512_bf16.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

namespace {

// Scores and weighted sums over up to ~200 keys in fp32 against double.
constexpr double kTol = 1e-5;

struct Ref {
  std::vector<double> out, lse;
};

// q (B, T, H, D); k, v (B, Hkv, S, D) of which keys 0 .. offset + t are visible to query t.
Ref naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, std::int64_t offset, double scale) {
  const std::int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), Hkv = k.dim(1), S = k.dim(2);
  const std::int64_t n_rep = H / Hkv;
  Ref r{std::vector<double>(static_cast<std::size_t>(q.numel())),
        std::vector<double>(static_cast<std::size_t>(B * H * T))};
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < T; ++t) {
        const std::int64_t g = h / n_rep, n_keys = offset + t + 1;
        const float* qr = q.data<float>() + ((b * T + t) * H + h) * D;
        std::vector<double> s(static_cast<std::size_t>(n_keys));
        double m = -INFINITY;
        for (std::int64_t j = 0; j < n_keys; ++j) {
          const float* kj = k.data<float>() + ((b * Hkv + g) * S + j) * D;
          double dot = 0;
          for (std::int64_t d = 0; d < D; ++d) dot += static_cast<double>(qr[d]) * kj[d];
          s[static_cast<std::size_t>(j)] = dot * scale;
          m = std::max(m, s[static_cast<std::size_t>(j)]);
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - m));
        for (std::int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (std::int64_t j = 0; j < n_keys; ++j)
            o += s[static_cast<std::size_t>(j)] * v.data<float>()[((b * Hkv + g) * S + j) * D + d];
          r.out[static_cast<std::size_t>(((b * T + t) * H + h) * D + d)] = o / sum;
        }
        r.lse[static_cast<std::size_t>((b * H + h) * T + t)] = m + std::log(sum);
      }
  return r;
}

void check_case(std::int64_t B, std::int64_t T, std::int64_t H, std::int64_t Hkv, std::int64_t D, std::int64_t offset,
                std::int64_t S, float q_std) {
  CAPTURE(B);
  CAPTURE(T);
  CAPTURE(H);
  CAPTURE(Hkv);
  CAPTURE(D);
  CAPTURE(offset);
  CAPTURE(S);
  const Tensor q = test::random_tensor({B, T, H, D}, 1, q_std, "q");
  const Tensor k = test::random_tensor({B, Hkv, S, D}, 2, 1.0f, "k");
  const Tensor v = test::random_tensor({B, Hkv, S, D}, 3, 1.0f, "v");
  Tensor out = test::filled({B, T, H, D}, 0.0f, "out");
  Tensor lse = test::filled({B, H, T}, 0.0f, "lse");
  ops::attention_forward(out, q, k, v, {.q_pos_offset = offset}, &lse);
  const Ref ref = naive_attention(q, k, v, offset, 1.0 / std::sqrt(static_cast<double>(D)));
  CHECK(test::max_rel_error(out, ref.out) < kTol);
  CHECK(test::max_rel_error(lse, ref.lse) < kTol);
}

}  // namespace

TEST_CASE("attention matches full-softmax attention: prefill, GQA ratios 1/2/4/3, odd lengths") {
  check_case(2, 67, 4, 4, 16, 0, 67, 1.0f);    // MHA, T just past one tile
  check_case(1, 130, 4, 2, 8, 0, 130, 1.0f);   // GQA 2, three key tiles
  check_case(2, 45, 8, 2, 24, 0, 45, 1.0f);    // GQA 4
  check_case(1, 21, 6, 2, 40, 0, 21, 1.0f);    // GQA 3 (no power of two)
  check_case(1, 200, 2, 1, 16, 0, 200, 4.0f);  // sharp softmax (large scores)
}

TEST_CASE("queries at an offset see the cached keys; a larger cache capacity is ignored") {
  check_case(2, 1, 4, 2, 16, 0, 1, 1.0f);      // first decode token
  check_case(2, 1, 4, 2, 16, 150, 300, 1.0f);  // one token after 150 cached, capacity 300
  check_case(1, 17, 8, 2, 16, 70, 100, 1.0f);  // a chunk of 17 after 70
  check_case(3, 5, 2, 2, 8, 63, 68, 1.0f);     // crossing a tile boundary
}

TEST_CASE("GQA: query head h reads KV head h / n_rep (HF repeat_kv)") {
  // Each KV head's values are the constant g + 1: the output of a query head is then exactly the
  // value of the KV head it reads, whatever the softmax weights.
  const std::int64_t B = 1, T = 9, H = 8, Hkv = 2, D = 4, S = 9;
  const Tensor q = test::random_tensor({B, T, H, D}, 4, 1.0f, "q");
  const Tensor k = test::random_tensor({B, Hkv, S, D}, 5, 1.0f, "k");
  Tensor v = test::filled({B, Hkv, S, D}, 0.0f, "v");
  for (std::int64_t g = 0; g < Hkv; ++g)
    for (std::int64_t i = 0; i < S * D; ++i) v.data<float>()[g * S * D + i] = static_cast<float>(g + 1);
  Tensor out = test::filled({B, T, H, D}, 0.0f);
  ops::attention_forward(out, q, k, v);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < H; ++h)
      CHECK(out.data<float>()[(t * H + h) * D] ==
            doctest::Approx(static_cast<double>(h / (H / Hkv) + 1)).epsilon(1e-6));
}

TEST_CASE("the first query attends to the first key only (causal)") {
  const Tensor q = test::random_tensor({1, 3, 1, 8}, 6, 1.0f, "q");
  const Tensor k = test::random_tensor({1, 1, 3, 8}, 7, 1.0f, "k");
  const Tensor v = test::random_tensor({1, 1, 3, 8}, 8, 1.0f, "v");
  Tensor out = test::filled({1, 3, 1, 8}, 0.0f);
  ops::attention_forward(out, q, k, v);
  for (int d = 0; d < 8; ++d) CHECK(out.data<float>()[d] == doctest::Approx(v.data<float>()[d]).epsilon(1e-6));
}

TEST_CASE("attention shape errors name the tensors and give the fix") {
  const Tensor q = test::filled({1, 4, 6, 8}, 0.0f, "q");
  const Tensor k = test::filled({1, 4, 4, 8}, 0.0f, "k4");
  Tensor out = test::filled({1, 4, 6, 8}, 0.0f, "out");
  CHECK_THROWS_WITH_AS(ops::attention_forward(out, q, k, k), doctest::Contains("not a multiple of 4 KV heads"),
                       ShapeError);
  const Tensor q4 = test::filled({1, 4, 4, 8}, 0.0f, "q");
  Tensor out4 = test::filled({1, 4, 4, 8}, 0.0f, "out");
  CHECK_THROWS_WITH_AS(ops::attention_forward(out4, q4, k, k, {.q_pos_offset = 1}),
                       doctest::Contains("the KV cache is too small"), ShapeError);
}

// A bf16 KV cache: each key and value is taken exactly (packed in place or widened), so attention over
// it gives the bits of attention over an f32 cache holding the same (bf16-representable) values, and
// both match the double-precision formula on those values. Ragged rows and offsets, prefill chunks and
// decode steps.
TEST_CASE("attention over a bf16 KV cache equals attention over the same values in f32") {
  const std::int64_t R = 3, Hkv = 2, S = 150, D = 24, H = 4;
  const Tensor k32 = test::random_tensor({R, Hkv, S, D}, 51, 1.0f, "k");
  const Tensor v32 = test::random_tensor({R, Hkv, S, D}, 52, 1.0f, "v");
  const Tensor kb = k32.to_host(DType::BF16), vb = v32.to_host(DType::BF16);
  const Tensor kw = kb.to_host(DType::F32), vw = vb.to_host(DType::F32);
  REQUIRE(kb.dtype() == DType::BF16);
  CHECK(test::max_rel_error(kw, std::vector<double>(k32.data<float>(), k32.data<float>() + k32.numel())) < 4e-3);
  struct Case {
    std::int64_t T;
    std::vector<std::int64_t> offsets, rows;
  };
  for (const Case& c : {Case{1, {149, 0}, {2, 0}}, Case{17, {70, 130}, {1, 2}}, Case{1, {5, 140, 63}, {0, 1, 2}}}) {
    const auto B = static_cast<std::int64_t>(c.rows.size());
    CAPTURE(B);
    CAPTURE(c.T);
    const Tensor q = test::random_tensor({B, c.T, H, D}, 53, 1.0f, "q");
    Tensor out_b = test::filled({B, c.T, H, D}, 0.0f, "out_b"), out_w = test::filled({B, c.T, H, D}, 0.0f, "out_w");
    const ops::AttentionOptions opts{.q_pos_offsets = c.offsets, .kv_rows = c.rows};
    ops::attention_forward(out_b, q, kb, vb, opts);
    ops::attention_forward(out_w, q, kw, vw, opts);
    CHECK(std::memcmp(out_b.raw(), out_w.raw(), out_b.size_bytes()) == 0);
    // Against the formula, one sequence at a time (its cache row, its offset).
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t r = c.rows[static_cast<std::size_t>(b)], off = c.offsets[static_cast<std::size_t>(b)];
      const Tensor qb = q.narrow(0, b, 1).to_host(DType::F32);
      const Ref ref =
          naive_attention(qb, kw.narrow(0, r, 1).to_host(DType::F32), vw.narrow(0, r, 1).to_host(DType::F32), off,
                          1.0 / std::sqrt(static_cast<double>(D)));
      CHECK(test::max_rel_error(out_b.narrow(0, b, 1).to_host(DType::F32), ref.out) < kTol);
    }
  }
  Tensor out = test::filled({1, 1, H, D}, 0.0f, "out");
  const Tensor q = test::random_tensor({1, 1, H, D}, 54, 1.0f, "q");
  CHECK_THROWS_WITH_AS(
      ops::attention_forward(out, q, kb, vw, {.q_pos_offset = 3, .kv_rows = std::vector<std::int64_t>{0}}),
      doctest::Contains("v"), ShapeError);
}

// Decoding at the head widths of Llama models (64, 128) takes ops/cpu/attention_decode_avx512.cpp on
// CPUs with AVX-512: key counts around its 16-key blocks and 128-key tiles, GQA 1, 3 and 8, ragged
// offsets and cache rows, f32 and bf16 caches (the same bits for the same values), and the lse.
TEST_CASE("decode attention at head dims 64 and 128: 16-key blocks, tiles, GQA, ragged rows, bf16") {
  for (const std::int64_t D : {64, 128}) {
    for (const std::int64_t offset : {0, 14, 15, 16, 127, 128, 129, 300}) check_case(2, 1, 6, 2, D, offset, 301, 1.0f);
    check_case(1, 1, 8, 1, D, 77, 78, 1.0f);      // GQA 8 (Llama 3 70B's ratio)
    check_case(1, 1, 4, 4, D, 40, 41, 4.0f);      // MHA, sharp softmax
    const std::int64_t H = 24, Hkv = 3, S = 200;  // GQA 8 over three KV heads
    const Tensor k32 = test::random_tensor({3, Hkv, S, D}, 61, 1.0f, "k");
    const Tensor v32 = test::random_tensor({3, Hkv, S, D}, 62, 1.0f, "v");
    const Tensor kw = k32.to_host(DType::BF16).to_host(DType::F32), vw = v32.to_host(DType::BF16).to_host(DType::F32);
    const Tensor kb = k32.to_host(DType::BF16), vb = v32.to_host(DType::BF16);
    const std::vector<std::int64_t> offsets{199, 16, 33}, rows{1, 2, 0};
    const Tensor q = test::random_tensor({3, 1, H, D}, 63, 1.0f, "q");
    Tensor out_b = test::filled({3, 1, H, D}, 0.0f, "out_b"), out_w = test::filled({3, 1, H, D}, 0.0f, "out_w");
    Tensor lse_b = test::filled({3, H, 1}, 0.0f, "lse_b"), lse_w = test::filled({3, H, 1}, 0.0f, "lse_w");
    const ops::AttentionOptions opts{.q_pos_offsets = offsets, .kv_rows = rows};
    ops::attention_forward(out_b, q, kb, vb, opts, &lse_b);
    ops::attention_forward(out_w, q, kw, vw, opts, &lse_w);
    CHECK(std::memcmp(out_b.raw(), out_w.raw(), out_b.size_bytes()) == 0);
    CHECK(std::memcmp(lse_b.raw(), lse_w.raw(), lse_b.size_bytes()) == 0);
    for (std::int64_t b = 0; b < 3; ++b) {
      CAPTURE(b);
      const std::int64_t r = rows[static_cast<std::size_t>(b)];
      const Ref ref = naive_attention(q.narrow(0, b, 1).to_host(DType::F32), kw.narrow(0, r, 1).to_host(DType::F32),
                                      vw.narrow(0, r, 1).to_host(DType::F32), offsets[static_cast<std::size_t>(b)],
                                      1.0 / std::sqrt(static_cast<double>(D)));
      CHECK(test::max_rel_error(out_b.narrow(0, b, 1).to_host(DType::F32), ref.out) < kTol);
      CHECK(test::max_rel_error(lse_b.narrow(0, b, 1).to_host(DType::F32), ref.lse) < kTol);
    }
  }
}

// A long prefill on the packed AVX-512 kernels packs every key and value tile once, for all its query
// blocks to share (attention_cpu.cpp, PackedTiles); a call of one query block packs the tiles it reads
// itself. Rows are independent of how queries are split into calls when the splits fall on the kernel's
// query blocks (64 rows: 64 / n_rep positions), so the whole prefill must give the bits of the same
// queries one block per call: f32 and bf16 products, f32 and bf16 caches, head widths 64 and 128, ragged
// offsets and cache rows, last key tiles cut short.
TEST_CASE("a long prefill's key and value tiles packed once give the bits of one query block per call") {
  if (!ops::cpu::gemm_avx512_supported()) {
    MESSAGE("this CPU has no AVX-512: every prefill below packs its tiles per query block");
  } else if (!ops::cpu::gemm_avx512_bf16_supported()) {
    MESSAGE("this CPU has no AVX512_BF16: the bf16-products prefills below pack their tiles per query block");
  }
  const std::int64_t R = 2, Hkv = 2, H = 6, n_rep = H / Hkv, block = 64 / n_rep, S = 420, T = 300;
  const std::vector<std::int64_t> offsets = {0, 117}, rows = {1, 0};
  for (const std::int64_t D : {64, 128}) {
    const Tensor kw = test::random_tensor({R, Hkv, S, D}, 91, 1.0f, "k");
    const Tensor vw = test::random_tensor({R, Hkv, S, D}, 92, 1.0f, "v");
    const Tensor kb = kw.to_host(DType::BF16), vb = vw.to_host(DType::BF16);
    const Tensor q = test::random_tensor({2, T, H, D}, 93, 1.0f, "q");
    for (const bool bf16_cache : {false, true}) {
      for (const bool bf16_products : {false, true}) {
        CAPTURE(D);
        CAPTURE(bf16_cache);
        CAPTURE(bf16_products);
        const Tensor& k = bf16_cache ? kb : kw;
        const Tensor& v = bf16_cache ? vb : vw;
        Tensor whole = test::filled(q.shape(), NAN, "whole"), blocks = test::filled(q.shape(), NAN, "blocks");
        ops::attention_forward(whole, q, k, v,
                               {.q_pos_offsets = offsets, .kv_rows = rows, .bf16_products = bf16_products});
        for (std::int64_t t0 = 0; t0 < T; t0 += block) {
          const std::int64_t n = std::min(block, T - t0);
          Tensor qc = test::filled({2, n, H, D}, 0.0f, "q_chunk"), oc = test::filled({2, n, H, D}, NAN, "out_chunk");
          for (std::int64_t b = 0; b < 2; ++b)
            std::copy_n(q.data<float>() + (b * T + t0) * H * D, n * H * D, qc.data<float>() + b * n * H * D);
          const std::vector<std::int64_t> chunk_offsets = {offsets[0] + t0, offsets[1] + t0};
          ops::attention_forward(oc, qc, k, v,
                                 {.q_pos_offsets = chunk_offsets, .kv_rows = rows, .bf16_products = bf16_products});
          for (std::int64_t b = 0; b < 2; ++b)
            std::copy_n(oc.data<float>() + b * n * H * D, n * H * D, blocks.data<float>() + (b * T + t0) * H * D);
        }
        CHECK(test::bit_equal(whole, blocks));
      }
    }
  }
}
