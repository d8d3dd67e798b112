// The host side of the cuBLASLt GEMM (ops/cuda/gemm_cublaslt_layout.h), without a GPU: the row-major
// problem is mapped onto column-major operands, then a plain-loop model of what cuBLASLt computes for
// those descriptors (column-major storage, op per operand, leading dimensions, strided batches) is run
// on the row-major data and compared with a row-major product, exactly (small integer values). Also
// the validation messages, the operand alignments and the algorithm-cache key.
#include <doctest/doctest.h>

#include <array>
#include <random>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "ops/cuda/gemm_cublaslt_layout.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::ops::cuda;

namespace {

// cuBLASLt's contract for D = op(A) op(B) (+ C·beta), column-major, as documented for cublasLtMatmul:
// A stored rows x cols with ld (op N: m x k, op T: k x m), B (op N: k x n, op T: n x k), C/D m x n.
void lt_model(const LtGemm& g, const double* a, const double* b, double* d, double alpha, double beta) {
  REQUIRE(g.a.rows == static_cast<std::uint64_t>(g.transpose_a ? g.k : g.m));
  REQUIRE(g.a.cols == static_cast<std::uint64_t>(g.transpose_a ? g.m : g.k));
  REQUIRE(g.b.rows == static_cast<std::uint64_t>(g.transpose_b ? g.n : g.k));
  REQUIRE(g.b.cols == static_cast<std::uint64_t>(g.transpose_b ? g.k : g.n));
  REQUIRE(g.c.rows == static_cast<std::uint64_t>(g.m));
  REQUIRE(g.c.cols == static_cast<std::uint64_t>(g.n));
  REQUIRE(g.a.ld >= static_cast<std::int64_t>(g.a.rows));
  REQUIRE(g.b.ld >= static_cast<std::int64_t>(g.b.rows));
  REQUIRE(g.c.ld >= static_cast<std::int64_t>(g.c.rows));
  for (std::int32_t s = 0; s < g.batch; ++s) {
    const double* A = a + s * g.a.batch_stride;
    const double* B = b + s * g.b.batch_stride;
    double* D = d + s * g.c.batch_stride;
    for (std::int64_t i = 0; i < g.m; ++i) {
      for (std::int64_t j = 0; j < g.n; ++j) {
        double acc = 0;
        for (std::int64_t l = 0; l < g.k; ++l) {
          const double av = g.transpose_a ? A[l + i * g.a.ld] : A[i + l * g.a.ld];
          const double bv = g.transpose_b ? B[j + l * g.b.ld] : B[l + j * g.b.ld];
          acc += av * bv;
        }
        double& out = D[i + j * g.c.ld];
        out = alpha * acc + (beta == 0 ? 0.0 : beta * out);
      }
    }
  }
}

// The row-major product the caller asked for.
void row_major(const GemmProblem& p0, const double* a, const double* b, double* c, double alpha, double beta) {
  const GemmProblem p = with_packed_defaults(p0);
  for (std::int64_t s = 0; s < p.batch; ++s) {
    for (std::int64_t i = 0; i < p.m; ++i) {
      for (std::int64_t j = 0; j < p.n; ++j) {
        double acc = 0;
        for (std::int64_t l = 0; l < p.k; ++l) {
          const double av = p.transpose_a ? a[s * p.stride_a + l * p.lda + i] : a[s * p.stride_a + i * p.lda + l];
          const double bv = p.transpose_b ? b[s * p.stride_b + j * p.ldb + l] : b[s * p.stride_b + l * p.ldb + j];
          acc += av * bv;
        }
        double& out = c[s * p.stride_c + i * p.ldc + j];
        out = alpha * acc + (beta == 0 ? 0.0 : beta * out);
      }
    }
  }
}

std::size_t extent(std::int64_t rows, std::int64_t ld, std::int64_t batch, std::int64_t stride) {
  return static_cast<std::size_t>((batch - 1) * stride + rows * ld);
}

void check_mapping(GemmProblem p) {
  CAPTURE(p.str());
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed));
  const GemmProblem q = with_packed_defaults(p);
  std::vector<double> a(extent(q.transpose_a ? q.k : q.m, q.lda, q.batch, q.stride_a));
  std::vector<double> b(extent(q.transpose_b ? q.n : q.k, q.ldb, q.batch, q.stride_b));
  std::vector<double> c(extent(q.m, q.ldc, q.batch, q.stride_c));
  for (double& v : a) v = static_cast<double>(static_cast<int>(rng() % 7) - 3);
  for (double& v : b) v = static_cast<double>(static_cast<int>(rng() % 7) - 3);
  for (double& v : c) v = static_cast<double>(static_cast<int>(rng() % 5) - 2);
  std::vector<double> want = c, got = c;
  row_major(p, a.data(), b.data(), want.data(), 2.0, 0.5);
  const LtGemm g = lt_gemm_for(p);
  // cuBLASLt's A is our B, its B is our A; C is shared.
  lt_model(g, b.data(), a.data(), got.data(), 2.0, 0.5);
  CHECK(got == want);
}

}  // namespace

TEST_CASE("row-major problems map onto cuBLASLt's column-major operands") {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      for (auto [m, n, k] : {std::array<std::int64_t, 3>{1, 1, 1},
                             {5, 3, 7},
                             {17, 33, 9},
                             {3, 65, 130},
                             std::array<std::int64_t, 3>{64, 8, 1}}) {
        GemmProblem p;
        p.m = m, p.n = n, p.k = k, p.transpose_a = ta, p.transpose_b = tb;
        check_mapping(p);
      }
    }
  }
}

TEST_CASE("the mapping of the forward and backward of y = x · Wᵀ") {
  GemmProblem p;  // forward: x (T, in) · W (out, in)ᵀ
  p.m = 6, p.n = 4, p.k = 5, p.transpose_b = true;
  const LtGemm g = lt_gemm_for(p);
  CHECK(g.m == 4);  // cuBLASLt's m is our n
  CHECK(g.n == 6);
  CHECK(g.k == 5);
  CHECK(g.transpose_a);  // op of W (cuBLASLt's A)
  CHECK_FALSE(g.transpose_b);
  CHECK(g.a.rows == 5);  // W (4, 5) row-major = (5, 4) column-major, ld 5
  CHECK(g.a.cols == 4);
  CHECK(g.a.ld == 5);
  CHECK(g.b.rows == 5);  // x (6, 5) row-major = (5, 6) column-major
  CHECK(g.b.cols == 6);
  CHECK(g.b.ld == 5);
  CHECK(g.c.rows == 4);
  CHECK(g.c.cols == 6);
  CHECK(g.c.ld == 4);
  check_mapping(p);
  GemmProblem dw;  // dW (out, in) += gᵀ (out, T) · x (T, in)
  dw.m = 4, dw.n = 5, dw.k = 6, dw.transpose_a = true;
  check_mapping(dw);
}

TEST_CASE("padded leading dimensions and strided batches map too") {
  GemmProblem p;
  p.m = 7, p.n = 9, p.k = 11;
  p.lda = 16, p.ldb = 12, p.ldc = 10;
  check_mapping(p);
  p.transpose_a = true, p.lda = 8;   // A stored (11, 7)
  p.transpose_b = true, p.ldb = 13;  // B stored (9, 11)
  check_mapping(p);
  p.batch = 3;  // packed strides
  check_mapping(p);
  p.stride_a = 11 * 8 + 5, p.stride_b = 9 * 13 + 1, p.stride_c = 7 * 10 + 3;
  check_mapping(p);
  const LtGemm g = lt_gemm_for(p);
  CHECK(g.batch == 3);
  CHECK(g.a.batch_stride == p.stride_b);
  CHECK(g.b.batch_stride == p.stride_a);
  CHECK(g.c.batch_stride == p.stride_c);
}

TEST_CASE("packed defaults for leading dimensions and batch strides") {
  GemmProblem p;
  p.m = 3, p.n = 5, p.k = 7, p.batch = 2, p.transpose_b = true;
  const GemmProblem q = with_packed_defaults(p);
  CHECK(q.lda == 7);
  CHECK(q.ldb == 7);  // B stored (5, 7)
  CHECK(q.ldc == 5);
  CHECK(q.stride_a == 21);
  CHECK(q.stride_b == 35);
  CHECK(q.stride_c == 15);
  p.batch = 1;
  CHECK(with_packed_defaults(p).stride_a == 0);
}

TEST_CASE("invalid problems are refused with the problem in the message") {
  GemmProblem p;
  p.m = 4, p.n = 4, p.k = 8;
  p.lda = 6;  // A is (4, 8): lda must be >= 8
  CHECK_THROWS_WITH_AS(lt_gemm_for(p), doctest::Contains("lda must be at least the 8 columns"), ShapeError);
  p.lda = 0;
  p.ldc = 3;
  CHECK_THROWS_WITH_AS(lt_gemm_for(p), doctest::Contains("ldc must be at least n = 4"), ShapeError);
  p.ldc = 0;
  p.k = 0;
  CHECK_THROWS_WITH_AS(lt_gemm_for(p), doctest::Contains("gemm m=4 n=4 k=0"), ShapeError);
  p.k = 8;
  p.b_type = DType::F32;  // a is bf16
  CHECK_THROWS_WITH_AS(lt_gemm_for(p), doctest::Contains("same dtype"), UnsupportedError);
  p.b_type = DType::BF16;
  p.c_type = DType::F16;
  CHECK_THROWS_WITH_AS(lt_gemm_for(p), doctest::Contains("C must be f32 or the inputs' dtype (bf16)"),
                       UnsupportedError);
  p.c_type = DType::F32;
  p.allow_tf32 = true;
  CHECK_THROWS_WITH_AS(lt_gemm_for(p), doctest::Contains("TF32 applies to f32 inputs only"), UnsupportedError);
  p.allow_tf32 = false;
  p.a_type = p.b_type = DType::I32;
  CHECK_THROWS_AS(lt_gemm_for(p), UnsupportedError);
  p.a_type = p.b_type = DType::F16;
  p.batch = 2;
  p.stride_c = 10;  // < m * ldc = 16
  CHECK_THROWS_WITH_AS(lt_gemm_for(p), doctest::Contains("overlap"), ShapeError);
  p.stride_c = 0;
  CHECK_NOTHROW(lt_gemm_for(p));
  p.m = 0;  // an empty product is valid (nothing to do)
  CHECK_NOTHROW(lt_gemm_for(p));
}

TEST_CASE("operand alignment is the largest power of two dividing the address, at most 256") {
  CHECK(pointer_alignment(nullptr) == 256);
  CHECK(pointer_alignment(reinterpret_cast<void*>(0x10000)) == 256);
  CHECK(pointer_alignment(reinterpret_cast<void*>(0x10002)) == 2);
  CHECK(pointer_alignment(reinterpret_cast<void*>(0x10010)) == 16);
  CHECK(pointer_alignment(reinterpret_cast<void*>(0x10081)) == 1);
  CHECK(pointer_alignment(reinterpret_cast<void*>(0x10080)) == 128);
}

TEST_CASE("the algorithm-cache key tells apart everything the heuristic depends on") {
  GemmProblem p;
  p.m = 128, p.n = 256, p.k = 64, p.transpose_b = true;
  auto* base = reinterpret_cast<const void*>(std::uintptr_t{1} << 20);
  const GemmKey k0 = gemm_key(p, 0, base, base, base, nullptr);
  CHECK(k0 == gemm_key(p, 0, base, base, base, nullptr));
  CHECK(GemmKeyHash{}(k0) == GemmKeyHash{}(gemm_key(p, 0, base, base, base, nullptr)));
  CHECK(k0.lda == 64);  // packed defaults are part of the key
  CHECK(k0.ldb == 64);
  CHECK(k0.ldc == 256);
  CHECK(gemm_key(p, 0, base, base, base, nullptr).str().find("m=128 n=256 k=64") != std::string::npos);
  // A packed problem and the same problem with its leading dimensions spelled out are one entry.
  GemmProblem spelled = p;
  spelled.lda = 64, spelled.ldb = 64, spelled.ldc = 256;
  CHECK(gemm_key(spelled, 0, base, base, base, nullptr) == k0);

  std::vector<GemmKey> variants;
  auto add = [&](GemmProblem q, int device = 0, std::uintptr_t off_a = 0, std::uintptr_t off_b = 0,
                 std::uintptr_t off_c = 0) {
    auto* pa = reinterpret_cast<const void*>((std::uintptr_t{1} << 20) + off_a);
    auto* pb = reinterpret_cast<const void*>((std::uintptr_t{1} << 20) + off_b);
    auto* pc = reinterpret_cast<const void*>((std::uintptr_t{1} << 20) + off_c);
    variants.push_back(gemm_key(q, device, pa, pb, pc, q.bias ? pc : nullptr));
  };
  add(p);
  GemmProblem q = p;
  // One variant per line:
  // clang-format off
  q.m = 129; add(q);
  q = p; q.n = 255; add(q);
  q = p; q.k = 65; q.lda = 65; q.ldb = 65; add(q);
  q = p; q.transpose_a = true; q.lda = 128; add(q);
  q = p; q.transpose_b = false; q.ldb = 256; add(q);
  q = p; q.a_type = q.b_type = DType::F16; add(q);
  q = p; q.c_type = DType::BF16; add(q);
  q = p; q.a_type = q.b_type = q.c_type = DType::F32; add(q);
  q.allow_tf32 = true; add(q);
  q = p; q.bias = true; add(q);
  q = p; q.batch = 2; add(q);
  q = p; q.lda = 72; add(q);
  q = p; q.ldc = 264; add(q);
  // clang-format on
  add(p, 1);
  add(p, 0, 2);
  add(p, 0, 0, 16);
  add(p, 0, 0, 0, 8);
  std::unordered_set<std::size_t> hashes;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    CAPTURE(variants[i].str());
    for (std::size_t j = 0; j < i; ++j) CHECK_FALSE(variants[i] == variants[j]);
    hashes.insert(GemmKeyHash{}(variants[i]));
  }
  CHECK(hashes.size() == variants.size());
}
