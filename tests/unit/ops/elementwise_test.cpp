// Elementwise ops and layout copies against plain loops: add (aliasing), axpy, scale, fill, copy,
// column_sum against a double sum (the same bits for 1 and 3 threads), the heads-major permutes as
// inverses, the KV-cache write, and the error messages.
#include <doctest/doctest.h>
#include <omp.h>

#include <cstring>

#include "core/error.h"
#include "dtype/dtype.h"
#include "ops/elementwise.h"
#include "tests/unit/ops/ops_test_util.h"

using namespace adapt;

TEST_CASE("add, axpy, scale, fill and copy match plain loops; add may alias its inputs") {
  const std::int64_t n = 70007;  // above the OpenMP threshold, not a multiple of any block
  const Tensor a = test::random_tensor({n}, 11, 1.0f, "a");
  const Tensor b = test::random_tensor({7, n / 7}, 12, 2.0f, "b");
  Tensor out = test::filled({n}, 0.0f, "out");
  ops::add(out, a, b);
  for (std::int64_t i = 0; i < n; ++i) REQUIRE(out.data<float>()[i] == a.data<float>()[i] + b.data<float>()[i]);

  Tensor alias = a.to_host(DType::F32);
  ops::add(alias, alias, b);
  CHECK(std::memcmp(alias.raw(), out.raw(), out.size_bytes()) == 0);

  Tensor y = a.to_host(DType::F32);
  ops::axpy(y, b, -0.375f);
  for (std::int64_t i = 0; i < n; ++i) REQUIRE(y.data<float>()[i] == a.data<float>()[i] + -0.375f * b.data<float>()[i]);

  Tensor s = a.to_host(DType::F32);
  ops::scale(s, 3.0f);
  for (std::int64_t i = 0; i < n; ++i) REQUIRE(s.data<float>()[i] == a.data<float>()[i] * 3.0f);

  ops::fill(s, 1.5f);
  for (std::int64_t i = 0; i < n; ++i) REQUIRE(s.data<float>()[i] == 1.5f);

  ops::copy(s, b);
  CHECK(std::memcmp(s.raw(), b.raw(), s.size_bytes()) == 0);

  Tensor short_out = test::filled({n - 1}, 0.0f, "short_out");
  CHECK_THROWS_WITH_AS(ops::add(short_out, a, b), doctest::Contains("short_out"), ShapeError);
  Tensor ints = Tensor::zeros({n}, DType::I32, "ints");
  CHECK_THROWS_WITH_AS(ops::copy(ints, a), doctest::Contains("ints"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::axpy(out, a.narrow(0, 0, n - 1), 1.0f), doctest::Contains("a"), ShapeError);
}

TEST_CASE("column_sum adds alpha times the double-precision column sums, the same bits for any thread count") {
  const std::int64_t N = 517, C = 131;  // columns: two whole blocks of 64 and a partial one
  const Tensor x = test::random_tensor({N / 11, 11, C}, 21, 1.0f, "x");
  const Tensor start = test::random_tensor({C}, 22, 1.0f, "db");
  const float alpha = 0.3f;
  std::vector<double> ref(static_cast<std::size_t>(C));
  for (std::int64_t j = 0; j < C; ++j) {
    double acc = 0;
    for (std::int64_t i = 0; i < N / 11 * 11; ++i) acc += x.data<float>()[i * C + j];
    ref[static_cast<std::size_t>(j)] = start.data<float>()[j] + static_cast<float>(static_cast<double>(alpha) * acc);
  }
  Tensor one = start.to_host(DType::F32), three = start.to_host(DType::F32);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  ops::column_sum(one, x, alpha);
  omp_set_num_threads(3);
  ops::column_sum(three, x, alpha);
  omp_set_num_threads(threads);
  for (std::int64_t j = 0; j < C; ++j)
    CHECK(one.data<float>()[j] == static_cast<float>(ref[static_cast<std::size_t>(j)]));
  CHECK(std::memcmp(one.raw(), three.raw(), one.size_bytes()) == 0);

  Tensor wrong = test::filled({C + 1}, 0.0f, "db_wrong");
  CHECK_THROWS_WITH_AS(ops::column_sum(wrong, x, 1.0f), doctest::Contains("db_wrong"), ShapeError);
}

TEST_CASE("to_heads_major permutes (B, T, G, D) to (B, G, T, D) and from_heads_major undoes it") {
  const std::int64_t B = 2, T = 37, G = 3, D = 8;
  const Tensor x = test::random_tensor({B, T, G, D}, 31, 1.0f, "k");
  Tensor hm = test::filled({B, G, T, D}, 0.0f, "k_all");
  ops::to_heads_major(hm, x);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t g = 0; g < G; ++g)
        for (std::int64_t d = 0; d < D; ++d)
          REQUIRE(hm.data<float>()[((b * G + g) * T + t) * D + d] == x.data<float>()[((b * T + t) * G + g) * D + d]);
  Tensor back = test::filled({B, T, G, D}, 0.0f, "k_back");
  ops::from_heads_major(back, hm);
  CHECK(std::memcmp(back.raw(), x.raw(), x.size_bytes()) == 0);
  CHECK_THROWS_WITH_AS(ops::to_heads_major(back, x), doctest::Contains("k_back"), ShapeError);
}

TEST_CASE("kv_cache_write puts sequence b at row rows[b] from position positions[b]; checks the ranges") {
  const std::int64_t R = 4, G = 2, S = 10, D = 4, B = 2, T = 3;
  Tensor cache = test::filled({R, G, S, D}, -1.0f, "kv_cache.k.0");
  const Tensor src = test::random_tensor({B, T, G, D}, 41, 1.0f, "k_new");
  const std::vector<std::int64_t> rows{3, 1}, pos{0, 7};
  ops::kv_cache_write(cache, src, rows, pos);
  std::int64_t written = 0;
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t d = 0; d < D; ++d) {
          const float got = cache.data<float>()[((r * G + g) * S + s) * D + d];
          float want = -1.0f;
          for (std::int64_t b = 0; b < B; ++b)
            if (rows[static_cast<std::size_t>(b)] == r && s >= pos[static_cast<std::size_t>(b)] &&
                s < pos[static_cast<std::size_t>(b)] + T) {
              want = src.data<float>()[((b * T + s - pos[static_cast<std::size_t>(b)]) * G + g) * D + d];
              ++written;
            }
          REQUIRE(got == want);
        }
  CHECK(written == src.numel());
  const std::vector<std::int64_t> full{0, 8};
  CHECK_THROWS_WITH_AS(ops::kv_cache_write(cache, src, rows, full), doctest::Contains("kv_cache.k.0"), ShapeError);
  const std::vector<std::int64_t> bad_row{4, 0};
  CHECK_THROWS_WITH_AS(ops::kv_cache_write(cache, src, bad_row, pos), doctest::Contains("row 4"), ShapeError);
}

TEST_CASE("kv_cache_write into a bf16 cache rounds each value to nearest even, as the dtype conversion does") {
  const std::int64_t R = 2, G = 2, S = 6, D = 8, B = 2, T = 2;
  Tensor cache = Tensor::zeros({R, G, S, D}, DType::BF16, "kv_cache.v.0");
  Tensor src = test::random_tensor({B, T, G, D}, 43, 3.0f, "v_new");
  src.data<float>()[0] = 1.0f + 1.0f / 256.0f;  // a tie: rounds to even (1.0)
  src.data<float>()[1] = 1.0f + 3.0f / 256.0f;  // a tie: rounds to even (1 + 4/256)
  const std::vector<std::int64_t> rows{1, 0}, pos{4, 1};
  ops::kv_cache_write(cache, src, rows, pos);
  const auto* c = static_cast<const std::uint16_t*>(cache.raw());
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t g = 0; g < G; ++g)
        for (std::int64_t d = 0; d < D; ++d) {
          const float x = src.data<float>()[((b * T + t) * G + g) * D + d];
          const std::int64_t at =
              ((rows[static_cast<std::size_t>(b)] * G + g) * S + pos[static_cast<std::size_t>(b)] + t) * D + d;
          REQUIRE(c[at] == f32_to_bf16(x));
        }
  CHECK(bf16_to_f32(c[((1 * G + 0) * S + 4) * D + 0]) == 1.0f);
  CHECK(bf16_to_f32(c[((1 * G + 0) * S + 4) * D + 1]) == 1.0f + 4.0f / 256.0f);
  Tensor f16_cache = Tensor::zeros({R, G, S, D}, DType::F16, "kv_cache.f16");
  CHECK_THROWS_WITH_AS(ops::kv_cache_write(f16_cache, src, rows, pos), doctest::Contains("a KV cache is f32 or bf16"),
                       ShapeError);
}
