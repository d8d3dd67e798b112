// Host-side planning of the CUDA attention kernels (kernels/attention_plan.h), on the CPU: which
// kernel runs for a dtype and head_dim, argument validation with its messages, grid sizes, the causal
// tile bounds, and the split-K plan of decode attention (coverage, chunk sizes, filling the GPU).
#include <doctest/doctest.h>

#include <cstdint>

#include "core/error.h"
#include "kernels/attention_plan.h"

using namespace adapt;
using namespace adapt::kernels;

namespace {

// Fake device pointers: validation only looks at their alignment.
void* fake(std::uintptr_t addr = 0x10000) { return reinterpret_cast<void*>(addr); }

AttentionForwardArgs forward_args(std::int64_t D = 128) {
  AttentionForwardArgs a;
  a.q = a.k = a.v = fake();
  a.out = fake();
  a.B = 2, a.T = 17, a.H = 8, a.Hkv = 2, a.D = D, a.S = 17 + 45, a.B_kv = 2;
  a.k_stride_b = a.v_stride_b = a.Hkv * a.S * D, a.k_stride_h = a.v_stride_h = a.S * D;
  a.k_stride_s = a.v_stride_s = D;
  a.q_pos_offset = 45;
  return a;
}

AttentionBackwardArgs backward_args() {
  AttentionBackwardArgs a;
  a.q = a.k = a.v = a.out = a.dout = fake();
  a.dq = a.dk = a.dv = fake();
  a.lse = static_cast<const float*>(fake());
  a.delta = static_cast<float*>(fake());
  a.B = 2, a.T = 33, a.H = 4, a.Hkv = 1, a.D = 64, a.S = 33;
  return a;
}

}  // namespace

TEST_CASE("attention plan: tensor cores for bf16 head_dim 64 and 128, the generic kernels otherwise") {
  CHECK(choose_attention_path(DType::BF16, 64) == AttentionPath::TensorCore);
  CHECK(choose_attention_path(DType::BF16, 128) == AttentionPath::TensorCore);
  CHECK(choose_attention_path(DType::BF16, 96) == AttentionPath::Generic);
  CHECK(choose_attention_path(DType::F32, 128) == AttentionPath::Generic);
  CHECK(choose_attention_path(DType::F16, 64) == AttentionPath::Generic);
  CHECK(attention_scale(0.0f, 64) == doctest::Approx(0.125f));
  CHECK(attention_scale(0.5f, 64) == 0.5f);
}

TEST_CASE("attention plan: forward validation accepts good arguments and names what is wrong") {
  CHECK_NOTHROW(validate_attention_forward(forward_args(), DType::BF16));
  CHECK_NOTHROW(validate_attention_forward(forward_args(96), DType::F32));
  SUBCASE("head dims") {
    CHECK_THROWS_WITH_AS(validate_attention_forward(forward_args(100), DType::BF16), doctest::Contains("head_dim 100"),
                         UnsupportedError);
    CHECK_THROWS_AS(validate_attention_forward(forward_args(512), DType::F32), UnsupportedError);
  }
  SUBCASE("dtype") {
    CHECK_THROWS_WITH_AS(validate_attention_forward(forward_args(), DType::I32), doctest::Contains("i32"),
                         UnsupportedError);
  }
  SUBCASE("GQA grouping") {
    AttentionForwardArgs a = forward_args();
    a.Hkv = 3;
    CHECK_THROWS_WITH_AS(validate_attention_forward(a, DType::BF16), doctest::Contains("not a multiple of 3 KV heads"),
                         ShapeError);
  }
  SUBCASE("the keys must cover offset + T") {
    AttentionForwardArgs a = forward_args();
    a.S = a.q_pos_offset + a.T - 1;
    CHECK_THROWS_WITH_AS(validate_attention_forward(a, DType::BF16), doctest::Contains("need 62 keys"), ShapeError);
  }
  SUBCASE("segment ids only for packed rows") {
    AttentionForwardArgs a = forward_args();
    a.segment_ids = static_cast<const std::int32_t*>(fake());
    CHECK_THROWS_WITH_AS(validate_attention_forward(a, DType::BF16), doctest::Contains("segment ids"),
                         UnsupportedError);
    a.q_pos_offset = 0, a.S = a.T;
    CHECK_NOTHROW(validate_attention_forward(a, DType::BF16));
  }
  SUBCASE("strides and alignment for 16-byte loads") {
    AttentionForwardArgs a = forward_args();
    a.k_stride_s = 132;  // 264 bytes of bf16
    CHECK_THROWS_WITH_AS(validate_attention_forward(a, DType::BF16), doctest::Contains("16 bytes"), UnsupportedError);
    CHECK_NOTHROW(validate_attention_forward(a, DType::F32));  // 528 bytes
    a = forward_args();
    a.k = fake(0x10008);
    CHECK_THROWS_WITH_AS(validate_attention_forward(a, DType::BF16), doctest::Contains("aligned"), UnsupportedError);
  }
  SUBCASE("B_kv needs kv_rows") {
    AttentionForwardArgs a = forward_args();
    a.B_kv = 3;
    CHECK_THROWS_AS(validate_attention_forward(a, DType::BF16), ShapeError);
    a.kv_rows = static_cast<const std::int64_t*>(fake());
    CHECK_NOTHROW(validate_attention_forward(a, DType::BF16));
  }
}

TEST_CASE("attention plan: backward validation") {
  CHECK_NOTHROW(validate_attention_backward(backward_args(), DType::BF16));
  AttentionBackwardArgs a = backward_args();
  a.delta = nullptr;
  CHECK_THROWS_WITH_AS(validate_attention_backward(a, DType::BF16), doctest::Contains("delta"), ShapeError);
  a = backward_args();
  a.q_pos_offset = 1;
  CHECK_THROWS_AS(validate_attention_backward(a, DType::F32), ShapeError);  // S = T < offset + T
  a.S = 34;
  a.segment_ids = static_cast<const std::int32_t*>(fake());
  CHECK_THROWS_AS(validate_attention_backward(a, DType::F32), UnsupportedError);
  CHECK(attention_backward_workspace_bytes(2, 4, 33) == 2 * 4 * 33 * 4);
}

TEST_CASE("attention plan: grids cover every row, including sizes that are not multiples of the tiles") {
  for (std::int64_t T : {1, 17, 63, 64, 65, 128, 333}) {
    CAPTURE(T);
    const Grid3 g = attention_query_grid(AttentionPath::TensorCore, 2, T, 8);
    CHECK(g.x * kTcTileQ >= T);
    CHECK((g.x - 1) * kTcTileQ < T);
    CHECK(g.y == 8);
    CHECK(g.z == 2);
    const Grid3 gg = attention_query_grid(AttentionPath::Generic, 2, T, 8);
    CHECK(gg.x * kGenericRowsPerBlock >= T);
    CHECK((gg.x - 1) * kGenericRowsPerBlock < T);
    const Grid3 gk = attention_key_grid(AttentionPath::TensorCore, 3, T + 45, 2);
    CHECK(gk.x == (T + 45 + kTcTileK - 1) / kTcTileK);
    CHECK(gk.y == 2);
    CHECK(gk.z == 3);
  }
  CHECK(attention_query_grid(AttentionPath::TensorCore, 1, 333, 4).x == 6);
}

TEST_CASE("attention plan: causal bounds of a tile") {
  CHECK(causal_key_limit(0, 64, 333) == 64);     // first tile of a plain prefill
  CHECK(causal_key_limit(45, 17, 62) == 62);     // continuing a cache of 45
  CHECK(causal_key_limit(100, 64, 120) == 120);  // clipped by S
  CHECK(causal_first_query(0, 130) == 130);
  CHECK(causal_first_query(45, 10) == 0);
  CHECK(causal_first_query(45, 50) == 5);
}

TEST_CASE("decode plan: split-K covers every key, keeps chunks large and fills the GPU") {
  SUBCASE("short contexts run in one split") {
    const DecodePlan p = plan_decode_attention(4, 32, 200, 132);
    CHECK(p.n_splits == 1);
    CHECK(p.keys_per_split == 200);
  }
  SUBCASE("a 100k-token context on one sequence uses the whole GPU") {
    const DecodePlan p = plan_decode_attention(1, 8, 100000, 132);
    CHECK(p.n_splits * 8 >= 2 * 132);
    CHECK(p.n_splits * p.keys_per_split >= 100000);
    CHECK((p.n_splits - 1) * p.keys_per_split < 100000);
  }
  SUBCASE("many sequences need no split") {
    const DecodePlan p = plan_decode_attention(64, 32, 100000, 132);
    CHECK(p.n_splits == 1);
  }
  SUBCASE("invariants over a sweep") {
    for (std::int64_t B : {1, 3, 16})
      for (std::int64_t H : {1, 8, 64})
        for (std::int64_t len : {0, 1, 255, 256, 257, 5000, 131072})
          for (int sms : {0, 1, 108, 132, 100000}) {
            CAPTURE(B);
            CAPTURE(H);
            CAPTURE(len);
            CAPTURE(sms);
            const DecodePlan p = plan_decode_attention(B, H, len, sms);
            CHECK(p.n_splits >= 1);
            CHECK(p.n_splits <= kDecodeMaxSplits);
            CHECK(p.n_splits * p.keys_per_split >= std::max<std::int64_t>(len, 1));
            CHECK((p.n_splits - 1) * p.keys_per_split < std::max<std::int64_t>(len, 1));  // no empty chunk
            if (p.n_splits > 1) CHECK(p.keys_per_split >= kDecodeMinKeysPerSplit);
          }
  }
  const DecodePlan p{3, 100};
  CHECK(decode_attention_workspace_bytes(p, 2, 8, 128) == 2 * 8 * 3 * 130 * 4);
}

TEST_CASE("decode plan: validation") {
  DecodeAttentionArgs a;
  a.q = a.k = a.v = fake();
  a.out = fake();
  a.seq_lens = static_cast<const std::int64_t*>(fake());
  a.workspace = static_cast<float*>(fake());
  a.B = 2, a.H = 8, a.Hkv = 2, a.D = 128, a.S_max = 4096, a.B_kv = 2, a.max_seq_len = 4096;
  a.k_stride_b = a.v_stride_b = 2 * 4096 * 128, a.k_stride_h = a.v_stride_h = 4096 * 128;
  a.k_stride_s = a.v_stride_s = 128;
  CHECK_NOTHROW(validate_decode_attention(a, DType::BF16));
  a.max_seq_len = 4097;
  CHECK_THROWS_WITH_AS(validate_decode_attention(a, DType::BF16), doctest::Contains("max_seq_len"), ShapeError);
  a.max_seq_len = 10;
  a.B_kv = 5;
  CHECK_THROWS_AS(validate_decode_attention(a, DType::BF16), ShapeError);
  a.kv_rows = static_cast<const std::int64_t*>(fake());
  CHECK_NOTHROW(validate_decode_attention(a, DType::BF16));
  a.D = 72 + 1;
  CHECK_THROWS_AS(validate_decode_attention(a, DType::F32), UnsupportedError);
}

TEST_CASE("decode blocks take 8, 4, 2 or 1 query heads of one KV head; the plan counts blocks, not heads") {
  CHECK(decode_heads_per_block(64, 8) == 8);  // Llama 3.1 70B
  CHECK(decode_heads_per_block(32, 8) == 4);  // Llama 3.1 8B
  CHECK(decode_heads_per_block(12, 4) == 1);  // 3 heads a KV head: none of 8, 4, 2 divides 3
  CHECK(decode_heads_per_block(24, 4) == 2);  // 6 heads a KV head
  CHECK(decode_heads_per_block(6, 3) == 2);
  CHECK(decode_heads_per_block(8, 8) == 1);
  CHECK(decode_heads_per_block(128, 1) == 8);
  // One sequence of 8 heads sharing a KV head, a long context: 8 heads a block need 8x the splits to
  // fill the same GPU.
  const DecodePlan per_head = plan_decode_attention(1, 8, 100000, 132);
  const DecodePlan per_group = plan_decode_attention(1, 8, 100000, 132, 8);
  CHECK(per_group.n_splits == 8 * per_head.n_splits);
}
